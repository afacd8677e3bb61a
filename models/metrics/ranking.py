"""Recommendation metrics as the papers compute them (docs/protocols.md section 5), with bootstrap intervals.

AUC is scikit-learn's. UAUC and the bootstrap need thousands of per-user AUCs, so they use a
vectorised rank formula (the Mann-Whitney statistic with tie-averaged ranks, which is what
`roc_auc_score` computes) instead of a Python loop over users; tests check both agree."""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
from sklearn.metrics import roc_auc_score

from models.metrics import stats


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC over the whole split; NaN when only one class is present."""
    labels = np.asarray(labels)
    if labels.size == 0 or labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def _dense_codes(values: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(values), return_inverse=True)[1].reshape(-1)


def per_user_auc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AUC of each user that has both classes, that user's code); users with one interaction or
    one label class are skipped, as in CoLLM's uAUC."""
    u = _dense_codes(users)
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n = u.size
    if n == 0:
        return np.empty(0), np.empty(0, dtype=np.int64)
    order = np.lexsort((s, u))
    u_sorted, s_sorted = u[order], s[order]
    pos = np.arange(n)
    new_user = np.r_[True, u_sorted[1:] != u_sorted[:-1]]
    user_start = np.maximum.accumulate(np.where(new_user, pos, 0))
    new_tie = new_user | np.r_[True, s_sorted[1:] != s_sorted[:-1]]
    tie_id = np.cumsum(new_tie) - 1
    tie_first = pos[new_tie]
    tie_last = np.r_[tie_first[1:] - 1, n - 1]
    avg_rank = (tie_first[tie_id] + tie_last[tie_id]) / 2.0 - user_start + 1.0  # 1-based within user
    n_users = int(u.max()) + 1
    y_sorted = y[order]
    n_pos = np.bincount(u_sorted, weights=y_sorted, minlength=n_users)
    n_all = np.bincount(u_sorted, minlength=n_users)
    n_neg = n_all - n_pos
    rank_sum = np.bincount(u_sorted, weights=np.where(y_sorted, avg_rank, 0.0), minlength=n_users)
    ok = (n_pos > 0) & (n_neg > 0)
    user_auc = (rank_sum[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2.0) / (n_pos[ok] * n_neg[ok])
    return user_auc, np.flatnonzero(ok)


def uauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Unweighted mean of per-user AUCs (docs/protocols.md section 5); NaN when no user qualifies."""
    per_user, _ = per_user_auc(users, labels, scores)
    return float(per_user.mean()) if per_user.size else float("nan")


def per_user_ndcg(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CoLLM's NDCG (Table II, "user-level ranking quality"): per user, the user's labelled rows
    ranked by score, NDCG over the whole list with the labels as relevance, tied scores sharing
    their positions' discounts (scikit-learn's `ndcg_score`, ignore_ties=False). Returns (NDCG of
    each user with both label classes, that user's code): users whose rows are all one class are
    skipped (all negative: no ideal ranking exists; all positive: every order scores 1), the same
    users UAUC skips."""
    u = _dense_codes(users)
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    n = u.size
    if n == 0:
        return np.empty(0), np.empty(0, dtype=np.int64)
    order = np.lexsort((-s, u))  # by user, then score descending
    u_s, s_s, y_s = u[order], s[order], y[order]
    pos = np.arange(n)
    new_user = np.r_[True, u_s[1:] != u_s[:-1]]
    start = np.maximum.accumulate(np.where(new_user, pos, 0))
    disc = 1.0 / np.log2(pos - start + 2.0)  # discount of each position within its user's list
    new_tie = new_user | np.r_[True, s_s[1:] != s_s[:-1]]
    tie = np.cumsum(new_tie) - 1
    tie_gain = np.bincount(tie, weights=y_s) / np.bincount(tie)  # ties share their mean gain
    n_users = int(u.max()) + 1
    dcg = np.bincount(u_s, weights=tie_gain[tie] * disc, minlength=n_users)
    n_pos = np.bincount(u_s, weights=y_s, minlength=n_users).astype(np.int64)
    n_all = np.bincount(u_s, minlength=n_users)
    ideal_prefix = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(max(int(n_all.max()), 1)) + 2.0))]
    ok = (n_pos > 0) & (n_pos < n_all)
    return dcg[ok] / ideal_prefix[n_pos[ok]], np.flatnonzero(ok)


def user_ndcg(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean of `per_user_ndcg` over the users it keeps; NaN when none qualifies."""
    per_user, _ = per_user_ndcg(users, labels, scores)
    return float(per_user.mean()) if per_user.size else float("nan")


@dataclass(frozen=True)
class Ranks:
    """Where each list's target stands among its candidates: `above` candidates score strictly
    higher, `tied` score the same. The report's one tie policy is random tie-breaking, by its
    expectation: the target's 0-based rank is `above + U`, U uniform on 0..tied, and every ranking
    metric is the expected value over those orders (AUC's half credit for ties and CoLLM's NDCG with
    tied rows sharing their discounts are the same expectation). A constant scorer therefore gets
    exactly the chance level, never 0 (ties ranked last) nor 1 (ties ranked first)."""

    above: np.ndarray
    tied: np.ndarray

    @classmethod
    def exact(cls, ranks) -> "Ranks":
        """Ranks without ties (an ordered generation)."""
        r = np.asarray(ranks, dtype=np.int64)
        return cls(r, np.zeros_like(r))

    def __len__(self) -> int:
        return int(np.asarray(self.above).size)

    def __getitem__(self, index) -> "Ranks":
        return Ranks(np.asarray(self.above)[index], np.asarray(self.tied)[index])


def target_ranks(target_scores: np.ndarray, negative_scores: np.ndarray) -> Ranks:
    """Each target's standing among its list's other candidates (`Ranks`: higher and tied)."""
    t = np.asarray(target_scores, dtype=np.float64)[:, None]
    neg = np.asarray(negative_scores, dtype=np.float64)
    return Ranks((neg > t).sum(axis=1), (neg == t).sum(axis=1))


def _discount(metric: str, position: int) -> float:
    if metric == "hr":
        return 1.0
    if metric == "ndcg":
        return 1.0 / np.log2(position + 2.0)
    raise ValueError(f"unknown ranking metric {metric!r}: hr or ndcg")


def ranking_values(ranks: Ranks, metric: str, k: int) -> np.ndarray:
    """Each list's expected HR@k (the target in the top k) or NDCG@k (one relevant item per list:
    1/log2(rank + 2) in the top k) under random tie-breaking: the mean over the `tied + 1` equally
    likely positions `above .. above + tied`. The metrics are the means over lists."""
    above, tied = np.asarray(ranks.above, dtype=np.int64), np.asarray(ranks.tied, dtype=np.int64)
    total = np.zeros(above.shape, dtype=np.float64)
    for position in range(int(k)):
        total += ((above <= position) & (position <= above + tied)) * _discount(metric, position)
    return total / (tied + 1.0)


def reciprocal_ranks(ranks: Ranks) -> np.ndarray:
    """Each list's expected reciprocal rank 1 / (rank + 1) under random tie-breaking (the mean over
    the `tied + 1` places): MRR is their mean."""
    above, tied = np.asarray(ranks.above, dtype=np.int64), np.asarray(ranks.tied, dtype=np.int64)
    # sum_{r = above + 1}^{above + tied + 1} 1 / r, through the harmonic numbers
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, int((above + tied).max(initial=0)) + 2))])
    return (harmonic[above + tied + 1] - harmonic[above]) / (tied + 1.0)


def chance_level(n_candidates: int, metric: str, k: int) -> float:
    """HR@k or NDCG@k of a random ranking of `n_candidates` (a constant scorer under random tie-breaking)."""
    return float(ranking_values(Ranks(np.array([0]), np.array([n_candidates - 1])), metric, k)[0])


def hit_rate_at_k(ranks: Ranks, k: int) -> float:
    return float(ranking_values(ranks, "hr", k).mean()) if len(ranks) else float("nan")


def ndcg_at_k(ranks: Ranks, k: int) -> float:
    return float(ranking_values(ranks, "ndcg", k).mean()) if len(ranks) else float("nan")


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}


def auc_estimate(users, labels, scores, samples: int = 1000, seed: int = 2023) -> Estimate:
    """AUC over the rows with a user-level interval (users resampled, each with all its rows:
    `models.metrics.stats`)."""
    y, s = np.asarray(labels), np.asarray(scores)
    lo, hi = stats.percentile_interval(stats.auc_draws(y, s, users, samples, seed))
    return Estimate(auc(y, s), lo, hi, int(y.size))


def _per_user_estimate(per_user: np.ndarray, samples: int, seed: int) -> Estimate:
    """The mean of one value per user, with users resampled."""
    value = float(per_user.mean()) if per_user.size else float("nan")
    lo, hi = stats.mean_bootstrap(per_user, np.arange(per_user.size), samples, seed)
    return Estimate(value, lo, hi, int(per_user.size))


def uauc_estimate(users, labels, scores, samples: int = 1000, seed: int = 2023) -> Estimate:
    """UAUC with a user-bootstrap interval (users are resampled, their AUCs averaged)."""
    return _per_user_estimate(per_user_auc(users, labels, scores)[0], samples, seed)


def user_ndcg_estimate(users, labels, scores, samples: int = 1000, seed: int = 2023) -> Estimate:
    """CoLLM's NDCG with a user-bootstrap interval."""
    return _per_user_estimate(per_user_ndcg(users, labels, scores)[0], samples, seed)


def ranking_estimate(ranks: Ranks, metric: str, k: int, samples: int = 1000, seed: int = 2023,
                     users: np.ndarray | None = None) -> Estimate:
    """HR@k or NDCG@k over ranked lists, with users resampled (each with all its lists; `users`
    None: one list per user, as under leave-one-out)."""
    values = reciprocal_ranks(ranks) if metric == "mrr" else ranking_values(ranks, metric, k)
    owners = np.arange(values.size) if users is None else np.asarray(users)
    lo, hi = stats.mean_bootstrap(values, owners, samples, seed)
    return Estimate(float(values.mean()) if values.size else float("nan"), lo, hi, int(values.size))


def _fast_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Whole-split AUC by the rank formula (same value as roc_auc_score): the AUC of one resample's
    rows, what `stats.auc_draws` computes for all resamples at once (and is tested against)."""
    per_user, _ = per_user_auc(np.zeros(y.size, dtype=np.int64), y, s)
    return float(per_user[0]) if per_user.size else float("nan")


def paired_auc_bootstrap(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, users: np.ndarray,
                         samples: int = 1000, seed: int = 2023, level: float = 0.95) -> stats.Paired:
    """`paired_bootstrap` of AUC(a) - AUC(b) through `auc_draws` (same draws, all resamples at once)."""
    users = np.asarray(users)
    observed = auc(labels, scores_a) - auc(labels, scores_b)
    d = stats.auc_draws(labels, scores_a, users, samples, seed) - stats.auc_draws(labels, scores_b, users, samples,
                                                                                  seed)
    return stats.centred_test(observed, d, int(np.unique(users).size), int(users.size), level)

