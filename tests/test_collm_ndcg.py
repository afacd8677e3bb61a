"""CoLLM's NDCG (Table II, PROTOCOLS section 5): the report's vectorised per-user NDCG equals
scikit-learn's `ndcg_score` computed user by user, ties included, and skips the users it says."""

import numpy as np
import polars as pl
from sklearn.metrics import ndcg_score

from models.metrics import frames
from models.metrics import ranking as metrics
from models.reporting import report


def test_user_ndcg_equals_sklearn_user_by_user():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 60, 900)
    labels = rng.integers(0, 2, 900)
    scores = np.round(rng.normal(size=900), 1)  # rounded: many ties inside a user's list
    values, codes = metrics.per_user_ndcg(users, labels, scores)
    expected, kept = [], []
    for k, u in enumerate(np.unique(users)):
        m = users == u
        if labels[m].min() == labels[m].max():
            continue  # one label class: skipped (as UAUC)
        expected.append(ndcg_score(labels[m][None, :], scores[m][None, :]))
        kept.append(k)
    assert codes.tolist() == kept and len(kept) > 40
    np.testing.assert_allclose(values, expected, atol=1e-12)
    assert metrics.user_ndcg(users, labels, scores) == np.mean(expected)
    # a perfect scorer is 1 for every user, a reversed one lower
    assert metrics.user_ndcg(users, labels, labels + 0.0) == 1.0
    assert metrics.user_ndcg(users, labels, -labels + 0.0) < 0.8


def test_every_pointwise_method_gets_ndcg_on_every_subset():
    rng = np.random.default_rng(1)
    n = 400
    test = pl.DataFrame({"user_id": [f"u{k % 40}" for k in range(n)], "label": rng.integers(0, 2, n),
                         "warm": rng.random(n) < 0.5, "not_cold": rng.random(n) < 0.7})
    good = report.MethodScores("good", test["label"].to_numpy() + rng.normal(scale=0.8, size=n))
    noise = report.MethodScores("noise", rng.normal(size=n))
    (frame,) = report.row_frames(test, [good, noise]).values()
    subsets = frames.subsets(frame, report.subset_masks(test), 20)
    res = report.evaluate_rows(frame, subsets, test, {"good": good, "noise": noise}, 50, 2023, 20, False)
    for m in ("good", "noise"):
        for s in frames.SUBSETS:
            est = res[m][s]["user_ndcg"]
            assert est["n"] > 0 and est["ci_low"] <= est["value"] <= est["ci_high"]
    assert res["good"]["all"]["user_ndcg"]["value"] > res["noise"]["all"]["user_ndcg"]["value"]
