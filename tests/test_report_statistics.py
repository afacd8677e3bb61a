"""The report's statistics (`models/metrics/stats.py`) on data whose truth is known: user-level intervals
on clustered rows, the paired bootstrap, DeLong's test."""

import numpy as np
from scipy import stats as sps

from models.metrics import ranking as metrics
from models.metrics import stats


def clustered(rng, n_users=150, rows_per_user=20):
    """Rows clustered by user: each user has its own positive rate and its own score offset, tied
    to that rate, so a user's rows move the pooled AUC together."""
    p = rng.beta(2, 2, n_users)
    offset = 2.0 * (p - 0.5) + rng.normal(0, 1.0, n_users)
    users = np.repeat(np.arange(n_users), rows_per_user)
    labels = (rng.random(users.size) < p[users]).astype(np.int64)
    scores = 0.8 * labels + offset[users] + rng.normal(0, 1.0, users.size)
    return users, labels, scores


def test_clusters_resample_keeps_each_users_rows_together():
    users = np.array(["b", "a", "b", "c", "a", "b"])
    c = stats.Clusters.of(users)
    assert c.n == 3 and list(c.sizes) == [2, 3, 1]
    rows, owner = c.resample(np.array([1, 1, 0]))  # "b" twice, then "a"
    assert sorted(rows[:3]) == [0, 2, 5] and sorted(rows[3:6]) == [0, 2, 5] and sorted(rows[6:]) == [1, 4]
    assert list(owner) == [0, 0, 0, 1, 1, 1, 2, 2]  # a user drawn twice is two users of the resample


def test_the_vectorised_auc_bootstrap_equals_the_auc_of_each_resample():
    """auc_draws (weights per drawn user, one sort) against the AUC computed on each resample's rows:
    the same numbers, ties and one-class resamples (NaN) included, in blocks or not; and the paired
    AUC comparison the report makes equals the generic paired bootstrap."""
    rng = np.random.default_rng(7)
    users, labels, scores = clustered(rng, n_users=40, rows_per_user=6)
    scores = np.round(scores, 1)  # many ties
    auc = lambda s: (lambda idx, own: metrics._fast_auc(labels[idx], s[idx]))  # noqa: E731
    slow = stats.resampled(auc(scores), users, 300, seed=5)
    for cells in (4_000_000, 500):  # one block; blocks of 2 resamples
        fast = stats.auc_draws(labels, scores, users, 300, seed=5, max_cells=cells)
        np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)
    # two users: most resamples hold one label class
    few = np.isin(users, [0, 1]) & ~((users == 0) & (labels == 0)) & ~((users == 1) & (labels == 1))
    slow_few = stats.resampled(lambda idx, own: metrics._fast_auc(labels[few][idx], scores[few][idx]),
                               users[few], 50, seed=2)
    fast_few = stats.auc_draws(labels[few], scores[few], users[few], 50, seed=2)
    assert np.isnan(slow_few).any() and not np.isnan(slow_few).all()
    np.testing.assert_array_equal(np.isnan(fast_few), np.isnan(slow_few))
    np.testing.assert_allclose(fast_few[~np.isnan(fast_few)], slow_few[~np.isnan(slow_few)], atol=1e-12)
    other = scores + rng.normal(0, 0.5, scores.size)
    generic = stats.paired_bootstrap(auc(scores), auc(other), users, 300, seed=5)
    vector = metrics.paired_auc_bootstrap(labels, scores, other, users, 300, seed=5)
    for field in ("difference", "ci_low", "ci_high", "p"):
        assert abs(getattr(vector, field) - getattr(generic, field)) < 1e-12, field
    assert (vector.n_users, vector.n_rows, vector.resamples) == (generic.n_users, generic.n_rows, generic.resamples)


def test_the_vectorised_mean_paths_equal_the_generic_ones():
    users, labels, scores = clustered(np.random.default_rng(5))
    hits = (scores > 0.5).astype(float)
    mean = lambda v: (lambda idx, own: float(v[idx].mean()))  # noqa: E731
    assert np.allclose(stats.mean_bootstrap(hits, users, 200, seed=3),
                       stats.user_bootstrap(mean(hits), users, 200, seed=3))
    other = (scores > 0.9).astype(float)
    fast = stats.paired_mean_bootstrap(hits, other, users, 200, seed=3)
    slow = stats.paired_bootstrap(mean(hits), mean(other), users, 200, seed=3)
    assert np.allclose([fast.difference, fast.ci_low, fast.ci_high, fast.p],
                       [slow.difference, slow.ci_low, slow.ci_high, slow.p])


def test_user_level_intervals_are_wider_and_cover_at_the_nominal_rate():
    truth_users, truth_labels, truth_scores = clustered(np.random.default_rng(123), n_users=40_000, rows_per_user=20)
    truth = metrics.auc(truth_labels, truth_scores)  # the population AUC, to 3 decimals
    covered = {"user": 0, "row": 0}
    widths = {"user": [], "row": []}
    reps = 80
    for r in range(reps):
        users, labels, scores = clustered(np.random.default_rng(r))
        # the AUC of every resample at once (equal to the per-resample loop: the test above); rows as their own
        # users is the row bootstrap (`stats.row_bootstrap`)
        for kind, owners in {"user": users, "row": np.arange(users.size)}.items():
            lo, hi = stats.percentile_interval(stats.auc_draws(labels, scores, owners, 300, seed=r))
            covered[kind] += lo <= truth <= hi
            widths[kind].append(hi - lo)
    assert np.mean(widths["user"]) > 1.3 * np.mean(widths["row"]), widths
    # the user-level interval covers at about 95 % (80 draws: 0.85..1 holds with margin); the row-level
    # one, too narrow for clustered rows, falls well short
    assert covered["user"] / reps >= 0.85, covered
    assert covered["row"] / reps < 0.85, covered


def test_paired_bootstrap_finds_a_planted_difference_and_not_a_missing_one():
    rng = np.random.default_rng(7)
    users, labels, _ = clustered(rng)
    noise = rng.normal(0, 1.0, labels.size)
    good, worse = 1.0 * labels + noise, 0.6 * labels + noise + rng.normal(0, 0.5, labels.size)
    auc = lambda s: (lambda idx, own: metrics._fast_auc(labels[idx], s[idx]))  # noqa: E731
    planted = stats.paired_bootstrap(auc(good), auc(worse), users, 500, seed=1)
    assert planted.difference > 0 and planted.ci_low > 0 and planted.p < 0.05, planted
    same = stats.paired_bootstrap(auc(good), auc(good.copy()), users, 500, seed=1)
    assert same.difference == 0 and same.p > 0.9 and same.ci_low == same.ci_high == 0, same
    # a per-user metric: each drawn user its own (owner), so a user drawn twice weighs twice
    uauc = lambda s: (lambda idx, own: metrics.uauc(own, labels[idx], s[idx]))  # noqa: E731
    per_user = stats.paired_bootstrap(uauc(good), uauc(worse), users, 300, seed=1)
    assert per_user.difference > 0 and per_user.p < 0.05, per_user
    d = stats.delong(labels, good, worse)
    assert d.difference > 0 and d.p < 0.05, d
    assert stats.delong(labels, good, good).p == 1.0


def test_delong_agrees_with_the_direct_computation():
    """The midrank shortcut against DeLong's definition: placement values by all pairwise comparisons
    (ties count one half), their covariances, the z statistic."""
    rng = np.random.default_rng(3)
    labels = np.array([1] * 9 + [0] * 8)
    a = np.round(rng.normal(labels * 0.9, 1.0), 1)  # rounded: ties within and across classes
    b = np.round(rng.normal(labels * 0.3, 1.0), 1)
    got = stats.delong(labels, a, b)

    def components(s):
        x, y = s[labels == 1], s[labels == 0]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        return psi.mean(), psi.mean(1), psi.mean(0)

    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = components(a), components(b)
    m, n = v10a.size, v01a.size
    s10, s01 = np.cov(np.vstack([v10a, v10b])), np.cov(np.vstack([v01a, v01b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    z = (auc_a - auc_b) / np.sqrt(var)
    assert np.isclose(got.auc_a, auc_a) and np.isclose(got.auc_b, auc_b)
    assert np.isclose(got.auc_a, metrics.auc(labels, a))
    assert np.isclose(got.z, z) and np.isclose(got.p, 2 * sps.norm.sf(abs(z)))
