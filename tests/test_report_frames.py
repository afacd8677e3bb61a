"""The report's frames and tests on small fixtures whose answers are known: the evaluation sample is
whole users, ties are broken at random (by expectation), the paired test's p agrees with its
interval, Holm's adjustment, non-inferiority verdicts, degenerate comparisons, and the ensembles."""

import itertools

import numpy as np
import polars as pl
import pytest

from models.reporting import comparisons
from models.metrics import frames
from models.metrics import ranking as metrics
from models.reporting import report
from models.metrics import stats


def test_the_evaluation_sample_is_whole_users_and_nested():
    rng = np.random.default_rng(0)
    users = np.array([f"u{k}" for k in rng.integers(0, 40, 500)])
    chosen = frames.sample_users(users, 10, seed=3)
    assert len(chosen) == 10 and len(set(chosen)) == 10
    pos = frames.sample_positions(users, 10, seed=3)
    # every row of every sampled user, and no other row
    assert set(users[pos]) == set(chosen)
    assert sorted(pos) == [k for k in range(users.size) if users[k] in set(chosen)]
    # nested: the first 4 users of the same draw are among the first 10; the row order does not matter
    assert set(frames.sample_users(users, 4, seed=3)) <= set(chosen)
    shuffled = users[rng.permutation(users.size)]
    assert set(frames.sample_users(shuffled, 10, seed=3)) == set(chosen)
    assert set(frames.sample_users(users, 0.25, seed=3)) == set(chosen)  # 10 of 40 users
    assert frames.sample_positions(users, None).size == users.size


def test_prompts_sample_rows_by_user_keeps_each_users_rows():
    from models.llm.prompts import sample_rows

    split = pl.DataFrame({"user_id": ["a", "b", "a", "c", "b", "c", "c", "d"], "split": ["test"] * 7 + ["valid"],
                          "item_id": list("pqrstuvw")})
    rows, positions = sample_rows(split, "test", 2, seed=1, by_user=True)
    test = split.filter(pl.col("split") == "test")
    kept = set(rows["user_id"])
    assert len(kept) == 2
    assert positions.tolist() == [k for k, u in enumerate(test["user_id"]) if u in kept]


def _brute_force(scores: np.ndarray, target: int, metric: str, k: int) -> float:
    """The metric averaged over every order of the tied candidates (all permutations, stable sort)."""
    values = []
    for perm in itertools.permutations(range(scores.size)):
        order = sorted(perm, key=lambda i: -scores[i])  # a stable sort of a permutation: one tie order
        rank = order.index(target)
        hit = rank < k
        values.append((1.0 if metric == "hr" else 1 / np.log2(rank + 2)) if hit else 0.0)
    return float(np.mean(values))


@pytest.mark.parametrize("scores, target", [
    ([0.5, 0.5, 0.5, 0.5, 0.5], 0),  # a constant scorer: chance
    ([0.3, 0.9, 0.3, 0.3, 0.1], 0),  # one above, two tied
    ([0.7, 0.7, 0.2, 0.7, 0.9], 1),
    ([0.9, 0.1, 0.2, 0.3, 0.4], 0),  # no tie, first
    ([0.1, 0.1, 0.4, 0.4, 0.4], 0),
])
def test_random_tie_breaking_equals_the_average_over_all_tie_orders(scores, target):
    s = np.asarray(scores)
    r = metrics.target_ranks(s[[target]], np.delete(s, target)[None, :])
    for metric in ("hr", "ndcg"):
        for k in (1, 2, 3, 5):
            got = metrics.ranking_values(r, metric, k)[0]
            assert got == pytest.approx(_brute_force(s, target, metric, k), abs=1e-12), (metric, k)
    assert metrics.chance_level(5, "hr", 2) == pytest.approx(2 / 5)
    assert metrics.chance_level(5, "ndcg", 2) == pytest.approx((1 + 1 / np.log2(3)) / 5)


def test_the_paired_p_is_one_only_for_a_zero_difference_and_agrees_with_the_interval():
    rng = np.random.default_rng(11)
    users = np.repeat(np.arange(60), 3)
    base = rng.normal(size=users.size)
    same = stats.paired_mean_bootstrap(base, base.copy(), users, 2000, seed=1)
    assert same.difference == 0 and same.p == 1.0
    for shift in (0.0, 0.05, 0.15, 0.3, -0.3, 0.6):
        other = base + shift + rng.normal(0, 0.8, users.size)
        t = stats.paired_mean_bootstrap(other, base, users, 2000, seed=2)
        assert t.difference != 0 and t.p < 1.0
        excludes_zero = t.ci_low > 0 or t.ci_high < 0
        assert (t.p <= 0.05) == excludes_zero, t
        # and against a non-zero null value (a margin): the same agreement
        for null in (-0.1, 0.1):
            s = stats.shifted(t, null)
            assert (s.p <= 0.05) == (s.ci_low > null or s.ci_high < null), s
    # discrete per-list values with many exact zeros (the old test counted them in both tails: p = 1)
    hits_a = (rng.random(200) < 0.30).astype(float)
    hits_b = np.where(rng.random(200) < 0.8, hits_a, 0.0)
    t = stats.paired_mean_bootstrap(hits_a, hits_b, np.arange(200), 5000, seed=3)
    assert t.difference > 0 and t.p < 0.05 and t.ci_low > 0, t


def test_holm_equals_a_hand_computation():
    p = [0.01, 0.04, 0.03, float("nan"), 0.005]
    # m = 4 tests: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> max so far 0.06
    np.testing.assert_allclose(stats.holm(p), [0.03, 0.06, 0.06, np.nan, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])


def _claim_records(difference: float, n: int = 400, noise: float = 0.3, seed: int = 0) -> tuple[list[dict], dict]:
    """A listwise frame where a ("reccocktail") differs from b ("ingredient_tallrec") by `difference`
    on every list on average, one list per user; the records `compare_lists` makes of it."""
    rng = np.random.default_rng(seed)
    b = rng.random(n)
    a = b + difference + rng.normal(0, noise, n)

    class Values:
        def __init__(self, v):
            self.v = v

        def values(self, metric, rows):
            return self.v[rows] if metric == "generated_hr@1" else None

    mask = np.ones(n, bool)
    frame = frames.Frame("listwise", "lists", mask, ("reccocktail", "ingredient_tallrec"), "test frame", "test")
    subsets = [frames.Subset("all", mask, True, ""), frames.Subset("warm", mask, False, "")]
    records = comparisons.compare_lists(frame, subsets, np.arange(n), {"reccocktail": Values(a),
                                                                        "ingredient_tallrec": Values(b)},
                                        [("reccocktail", "ingredient_tallrec", "test")], ("generated_hr@1",),
                                        4000, 1, 20)
    return comparisons.adjust(records), {"listwise": frame}


@pytest.mark.parametrize("difference, verdict, without_margin", [
    (0.05, "reproduced", "reproduced"),       # better: no worse
    (-0.005, "reproduced", "inconclusive"),   # a little worse, well within the margin of 0.05: no worse
    (-0.15, "contradicted", "contradicted"),  # worse by more than the margin
])
def test_a_no_worse_claim_with_a_margin_reads_both_sides_of_the_margin(difference, verdict, without_margin):
    records, fr = _claim_records(difference)
    (claim,) = [c for c in comparisons.claims(records, fr, margin=0.05) if c["subset"] == "warm"]
    assert claim["relation"] == ">=" and claim["null"] == -0.05
    assert claim["verdict"] == verdict, claim
    # the same difference with no margin: a small loss is no longer shown to be "no worse"
    strict = comparisons.claims(records, fr, margin=0.0)
    assert [c for c in strict if c["subset"] == "warm"][0]["verdict"] == without_margin


def test_a_margin_straddled_by_the_interval_is_inconclusive():
    records, fr = _claim_records(-0.05, n=60, noise=0.5)
    (claim,) = [c for c in comparisons.claims(records, fr, margin=0.05) if c["subset"] == "warm"]
    assert claim["verdict"] == "inconclusive" and claim["ci_low"] < -0.05 < claim["ci_high"], claim
    assert claim["mde"] > 0


def _row_frame(n_users=40, rows=4, seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), rows)
    labels = (rng.random(users.size) < 0.5).astype(np.int64)
    labels[::rows] = 1
    labels[1::rows] = 0  # every user has both labels
    mask = np.ones(users.size, bool)
    return users, labels, mask, rng


def test_identical_or_constant_scorers_are_not_testable_degenerate():
    users, labels, mask, rng = _row_frame()
    good = labels + rng.normal(0, 1, labels.size)
    scores = {"collm_mf": good, "ingredient_tallrec": good.copy(), "mf": np.zeros(labels.size)}
    frame = frames.Frame("sample", "rows", mask, tuple(scores), "d", "d")
    subs = [frames.Subset("all", mask, True, "")]
    recs = comparisons.compare_rows(frame, subs, labels, users, scores,
                                    [("collm_mf", "ingredient_tallrec", "x"), ("collm_mf", "mf", "x")], 2000, 1, 20)
    by = {(r["b"], r["metric"]): r for r in recs}
    for metric in ("auc", "uauc", "user_ndcg"):
        assert by[("ingredient_tallrec", metric)]["not_applicable"] == "degenerate: identical scores"
        assert by[("mf", metric)]["not_applicable"] == "degenerate: mf is constant on these rows"
        assert "p" not in by[("mf", metric)]
    claims = comparisons.claims(comparisons.adjust(recs), {"sample": frame}, margin=0.02)
    verdicts = {c["claim"]: (c["verdict"], c.get("not_testable")) for c in claims}
    assert verdicts["CoLLM-MF > TALLRec (AUC)"] == ("not testable", "degenerate: identical scores")
    assert verdicts["CoLLM-MF > MF (AUC)"] == ("not testable", "degenerate: mf is constant on these rows")
    # lists where both name nothing: all-zero metrics are no test either
    zeros = np.zeros(30)
    assert comparisons._degenerate_values(zeros, zeros, "list") == "degenerate: both are 0 on every list"


def test_an_ensemble_of_a_scorer_with_itself_equals_it_and_of_two_differs_where_they_disagree():
    rng = np.random.default_rng(5)
    n = 300
    labels = (rng.random(n) < 0.5).astype(int)
    users = np.repeat(np.arange(60), 5)
    mf = labels + rng.normal(0, 1.2, n)
    llm = 12.0 + 0.3 * labels + rng.normal(0, 0.4, n)  # a Yes logit far from 0: sigmoid would be ~1
    test = pl.DataFrame({"user_id": users, "label": labels, "warm": np.ones(n, bool), "not_cold": np.ones(n, bool)})
    same = report.ensembles([report.MethodScores("mf", mf), report.MethodScores("ingredient_tallrec", mf.copy())])[0]
    np.testing.assert_allclose(same.pointwise, (mf - mf.mean()) / mf.std())  # itself, standardised: the same order
    assert metrics.auc(labels, same.pointwise) == pytest.approx(metrics.auc(labels, mf))
    both = report.ensembles([report.MethodScores("mf", mf), report.MethodScores("ingredient_tallrec", llm)])[0]
    # where the members order two rows differently, the ensemble differs from each of them in some such pair
    order = lambda s: np.sign(s[:, None] - s[None, :])  # noqa: E731
    disagree = order(mf) != order(llm)
    assert disagree.any()
    assert (order(both.pointwise)[disagree] != order(mf)[disagree]).any()
    assert (order(both.pointwise)[disagree] != order(llm)[disagree]).any()
    # the probability average of the paper would be MF's ranking broken by the LLM: ours is neither member
    a = [metrics.auc(labels, s) for s in (mf, llm, both.pointwise)]
    assert a[2] != a[0] and a[2] != a[1]
    assert test.height == n
