"""The report's statistics: user-level (cluster) bootstrap intervals, paired comparisons of two
methods on the same rows, and DeLong's test for a difference of two correlated AUCs.

Why user level: test rows are not independent draws. On ML-1M a user contributes about 23 test
rows, and a user's rows share that user's taste, so resampling rows treats 7,331 correlated rows as
7,331 independent ones and every interval comes out too narrow. Here the unit of resampling is the
user: a bootstrap sample draws users with replacement and keeps all of each drawn user's rows
together (the cluster bootstrap); a user drawn twice counts as two users. For a metric that is a
mean of one value per user (UAUC, CoLLM's NDCG) this is the plain user bootstrap; for a mean over
rows or lists (HR@k, NDCG@k) it is a ratio of per-user sums, computed for all resamples at once.

Intervals are percentile intervals. We do not call `scipy.stats.bootstrap`: its resampling unit is
the observation, not a cluster of them; resamples in which a metric is undefined (one label class in
a small subset) must be dropped, while its percentile and BCa intervals turn NaN as soon as one
resample is NaN; and BCa's jackknife would cost one metric evaluation per user. The percentile rule
is the same as scipy's `method="percentile"`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import stats as sps

# stat(row indices, owner of each row): owner numbers the drawn users of a resample (a user drawn twice
# is two owners), so per-user metrics see each draw as its own user
Stat = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Clusters:
    """Rows grouped by user: `rows[starts[u]:starts[u] + sizes[u]]` are user u's row indices."""

    rows: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    codes: np.ndarray  # each row's user code

    @classmethod
    def of(cls, users: np.ndarray) -> "Clusters":
        _, codes = np.unique(np.asarray(users), return_inverse=True)
        codes = codes.ravel()
        order = np.argsort(codes, kind="stable")
        sizes = np.bincount(codes)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        return cls(order, starts, sizes, codes)

    @property
    def n(self) -> int:
        return int(self.sizes.size)

    def resample(self, drawn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row indices, owner) of the drawn users: all rows of each drawn user together, repeated as
        often as it was drawn; owner j marks the rows of the j-th draw."""
        sizes = self.sizes[drawn]
        owner = np.repeat(np.arange(drawn.size), sizes)
        within = np.arange(owner.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return self.rows[self.starts[drawn][owner] + within], owner


def draws(n_units: int, samples: int, seed: int) -> np.ndarray:
    """The bootstrap's unit draws, (samples, n_units). One seed gives every method the same draws."""
    return np.random.default_rng(seed).integers(0, max(n_units, 1), (samples, n_units))


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def resampled(stat: Stat, users: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """stat over `samples` user-level resamples (NaN where the statistic is undefined)."""
    clusters = Clusters.of(users)
    if clusters.n == 0 or samples <= 0:
        return np.empty(0)
    return np.array([stat(*clusters.resample(d)) for d in draws(clusters.n, samples, seed)], dtype=np.float64)


def user_bootstrap(stat: Stat, users: np.ndarray, samples: int = 1000, seed: int = 2023,
                   level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of `stat` with users resampled, all of a user's rows together."""
    return percentile_interval(resampled(stat, users, samples, seed), level)


def row_bootstrap(stat: Stat, n_rows: int, samples: int = 1000, seed: int = 2023,
                  level: float = 0.95) -> tuple[float, float]:
    """The same with every row its own unit (what the report did before this module; kept to show
    the difference in `tests/test_report_statistics.py`)."""
    return user_bootstrap(stat, np.arange(n_rows), samples, seed, level)


def _mean_draws(values: np.ndarray, users: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """The mean of per-row `values` over every user-level resample at once (sums per drawn user over
    counts per drawn user)."""
    clusters = Clusters.of(users)
    if clusters.n == 0 or samples <= 0:
        return np.empty(0)
    sums = np.bincount(clusters.codes, weights=np.asarray(values, dtype=np.float64), minlength=clusters.n)
    d = draws(clusters.n, samples, seed)
    return sums[d].sum(1) / clusters.sizes[d].sum(1)


def mean_bootstrap(values: np.ndarray, users: np.ndarray, samples: int = 1000, seed: int = 2023,
                   level: float = 0.95) -> tuple[float, float]:
    """Interval of the mean of per-row (or per-list) values, users resampled."""
    return percentile_interval(_mean_draws(values, users, samples, seed), level)


def _draw_counts(clusters: Clusters, d: np.ndarray) -> np.ndarray:
    """(resamples, users): how often each user was drawn in each resample of `d`."""
    n = clusters.n
    return np.bincount((d + n * np.arange(d.shape[0])[:, None]).ravel(), minlength=d.shape[0] * n).reshape(-1, n)


def auc_draws(labels: np.ndarray, scores: np.ndarray, users: np.ndarray, samples: int = 1000, seed: int = 2023,
              max_cells: int = 4_000_000) -> np.ndarray:
    """The whole-split AUC over every user-level resample at once (NaN where a resample holds one
    label class): the same numbers as computing the AUC on each resample's rows (`resampled` with
    `metrics._fast_auc`), same draws. A resample repeats each drawn user's rows as often as the user
    was drawn, so its AUC is the rank formula with those multiplicities as row weights: with rows
    sorted by score once, per resample sum(positive weight x (negative weight below + half the
    negative weight tied)) / (positive weight x negative weight). Resamples go in blocks of at most
    `max_cells` (resamples x rows) numbers. The demo's `movies` report (7,331 test rows, 18 methods)
    took 8.6 s with it, 26 s with the loop."""
    clusters = Clusters.of(users)
    if clusters.n == 0 or samples <= 0:
        return np.empty(0)
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # tie groups of the sorted rows
    pos, neg = y[order].astype(np.float64), (~y[order]).astype(np.float64)
    codes = clusters.codes[order]
    d = draws(clusters.n, samples, seed)
    block = max(1, max_cells // max(1, y.size))
    out = np.empty(samples)
    for b in range(0, samples, block):
        w = _draw_counts(clusters, d[b:b + block])[:, codes].astype(np.float64)  # (resamples, sorted rows)
        wpos = np.add.reduceat(w * pos, starts, axis=1)
        wneg = np.add.reduceat(w * neg, starts, axis=1)
        below = np.cumsum(wneg, axis=1) - wneg
        num = (wpos * (below + 0.5 * wneg)).sum(1)
        den = wpos.sum(1) * wneg.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[b:b + block] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out


@dataclass(frozen=True)
class Paired:
    """metric(a) - metric(b) on the same rows with its paired user-level bootstrap test.

    The test centres the bootstrap distribution of the difference on the observed difference, which
    is the distribution under the null shifted to the estimate: p is the share of resamples that
    deviate from the observed difference at least as far as the observed difference lies from the
    null value (0, or -margin for a non-inferiority claim), with the +1 correction, so p = 1 exactly
    when the observed difference equals the null value and p is never 0. The interval is the
    matching symmetric one, the difference +- the critical deviation, so that p <= 1 - level exactly
    when the interval excludes the null value. `se` is the resamples' standard deviation."""

    difference: float
    ci_low: float
    ci_high: float
    p: float
    n_users: int
    n_rows: int
    resamples: int
    se: float = float("nan")
    null: float = 0.0
    # the resampled differences, kept in memory (not in metrics.json) to test the same comparison
    # against another null value (`shifted`)
    draws: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {"difference": self.difference, "ci_low": self.ci_low, "ci_high": self.ci_high, "p": self.p,
                "n_users": self.n_users, "n_rows": self.n_rows, "resamples": self.resamples, "se": self.se,
                "null": self.null}


# below this a difference is a rounding error of two equal metrics, not a difference
ZERO = 1e-12


def centred_test(observed: float, d: np.ndarray, n_users: int, n_rows: int, level: float = 0.95,
                 null: float = 0.0) -> Paired:
    """`Paired` from the observed difference and its bootstrap resamples `d` (NaN resamples dropped)."""
    d = np.asarray(d, dtype=np.float64)
    d = d[~np.isnan(d)]
    nan = float("nan")
    if d.size == 0 or np.isnan(observed):
        return Paired(float(observed), nan, nan, nan, n_users, n_rows, int(d.size), nan, null)
    deviation = np.sort(np.abs(d - observed))
    distance = abs(observed - null)
    count = d.size if distance < ZERO else int((deviation >= distance - ZERO).sum())
    p = (1 + count) / (d.size + 1)
    # p <= alpha  <=>  count <= K  <=>  distance > deviation[B - K - 1] (0-based, ascending)
    k = int(np.floor((1 - level) * (d.size + 1) + ZERO)) - 1
    half = float(deviation[d.size - k - 1]) if 0 <= k < d.size else float("inf")
    return Paired(float(observed), float(observed) - half, float(observed) + half, float(p), n_users, n_rows,
                  int(d.size), float(d.std()), null, d)


def shifted(paired: Paired, null: float, level: float = 0.95) -> Paired:
    """The same comparison tested against another null value (a non-inferiority margin)."""
    draws = np.empty(0) if paired.draws is None else paired.draws
    return centred_test(paired.difference, draws, paired.n_users, paired.n_rows, level, null)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN: not a test, left out of the family
    and left NaN): sorted ascending, the i-th (from 0) of m is multiplied by m - i, then made
    non-decreasing and capped at 1. Controls the family-wise error rate under any dependence."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    running = 0.0
    for rank, i in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def minimum_detectable_effect(se: float, family_size: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true distance from the null that a two-sided test at Holm's strictest threshold
    (alpha / family size) finds with the given power, for a difference whose standard error is `se`
    (normal approximation): (z_{1 - alpha / 2m} + z_power) * se."""
    if np.isnan(se) or family_size < 1:
        return float("nan")
    return float((sps.norm.ppf(1 - alpha / (2 * family_size)) + sps.norm.ppf(power)) * se)


def paired_bootstrap(stat_a: Stat, stat_b: Stat, users: np.ndarray, samples: int = 1000, seed: int = 2023,
                     level: float = 0.95) -> Paired:
    """The paired user-level bootstrap of stat_a - stat_b: both see the same drawn users' rows in
    every resample, so what the users share cancels out of the difference."""
    users = np.asarray(users)
    every, codes = np.arange(users.size), Clusters.of(users).codes
    observed = stat_a(every, codes) - stat_b(every, codes)
    d = resampled(lambda idx, own: stat_a(idx, own) - stat_b(idx, own), users, samples, seed)
    return centred_test(observed, d, int(np.unique(users).size), int(users.size), level)


def paired_mean_bootstrap(values_a: np.ndarray, values_b: np.ndarray, users: np.ndarray, samples: int = 1000,
                          seed: int = 2023, level: float = 0.95) -> Paired:
    """The same for a metric that is a mean of per-row (per-list, per-user) values: all resamples at once."""
    diff = np.asarray(values_a, np.float64) - np.asarray(values_b, np.float64)
    observed = float(diff.mean()) if diff.size else float("nan")
    return centred_test(observed, _mean_draws(diff, users, samples, seed), int(np.unique(users).size), int(diff.size),
                        level)


@dataclass(frozen=True)
class DeLong:
    auc_a: float
    auc_b: float
    difference: float
    z: float
    p: float

    def as_dict(self) -> dict:
        return {"auc_a": self.auc_a, "auc_b": self.auc_b, "difference": self.difference, "z": self.z, "p": self.p}


def delong(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DeLong:
    """DeLong, DeLong & Clarke-Pearson (1988): the test of AUC(a) = AUC(b) for two scorers of the same
    rows, from the covariance of their placement values (computed by midranks, Sun & Xu 2014);
    two-sided normal p-value. It treats rows as independent: the paired user bootstrap is the test
    that respects users."""
    y = np.asarray(labels).astype(np.int64)
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    if m < 2 or n < 2:
        return DeLong(*(float("nan"),) * 5)
    s = np.vstack([np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)])
    x, z_neg = s[:, pos], s[:, neg]
    tx, ty = sps.rankdata(x, axis=1), sps.rankdata(z_neg, axis=1)
    tz = sps.rankdata(np.concatenate([x, z_neg], axis=1), axis=1)
    aucs = (tz[:, :m].sum(1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n  # each positive's share of negatives ranked below it
    v01 = 1.0 - (tz[:, m:] - ty) / m  # each negative's share of positives ranked above it
    cov = np.cov(v10) / m + np.cov(v01) / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = float(aucs[0] - aucs[1])
    if var <= 1e-15:  # the same ranking: nothing to test
        return DeLong(float(aucs[0]), float(aucs[1]), diff, 0.0, 1.0)
    z = diff / float(np.sqrt(var))
    return DeLong(float(aucs[0]), float(aucs[1]), diff, float(z), float(2 * sps.norm.sf(abs(z))))
