"""Recompute a report's tables from the score files and the frames its metrics.json states, without
the report's code: every method of a frame scored every row (or ranked every list) of it, the LLM
and CF methods of a list frame ranked the very same lists, and the numbers match. Used by the tests
on the smoke pipeline, and by hand on a demo's data directory:

    python tests/report_check.py data movies ml1m_loo
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score


def _expected_hit(target: float, others: np.ndarray, k: int) -> float:
    """HR@k under random tie-breaking, by enumeration of the places a tied target can take."""
    above, tied = int((others > target).sum()), int((others == target).sum())
    return float(np.mean([above + u < k for u in range(tied + 1)]))


def _scores(data: Path, domain: str) -> dict[str, pl.DataFrame]:
    out = {}
    for family in ("cf", "llm", "collm"):
        path = data / "domains" / domain / "scores" / f"{family}.parquet"
        if path.exists():
            df = pl.read_parquet(path)
            out.update({m: df.filter(pl.col("method") == m) for m in df["method"].unique()})
    return out


def check(data: Path, domain: str, atol: float = 1e-9) -> dict[str, int]:
    """Assert that metrics.json's tables follow from the score files on the stated frames; returns
    how many numbers were recomputed per frame."""
    payload = json.loads((data / "reports" / domain / "metrics.json").read_text())
    test = pl.read_parquet(data / "domains" / domain / "split.parquet").filter(pl.col("split") == "test")
    labels = test["label"].to_numpy()
    scores = _scores(data, domain)
    cands = pl.read_parquet(data / "domains" / domain / "candidates.parquet").sort("row")
    checked = {}
    for name, frame in payload["frames"].items():
        rows = np.asarray(frame["positions"], dtype=np.int64)
        assert len(rows) == frame["rows"], name
        n = 0
        for method in frame["methods"]:
            if method.startswith("ensemble_"):
                continue  # computed by the report from its members (tests/test_report_frames.py)
            if frame["kind"] == "rows":
                df = scores[method]
                got = dict(zip(df["row"].to_list(), df["score"].to_list()))
                assert all(int(r) in got for r in rows), (name, method, "a frame row it did not score")
                s = np.array([got[int(r)] for r in rows])
                for subset, ests in payload["metrics"][name][method].items():
                    mask = _subset(test, subset)[rows]
                    est = ests["auc"]
                    if not est.get("not_applicable"):
                        assert abs(est["value"] - roc_auc_score(labels[rows][mask], s[mask])) < atol, (name, method)
                        assert est["n"] == int(mask.sum())
                        n += 1
            else:
                n += _check_lists(data, domain, name, frame, method, payload, test, scores, cands, rows, atol)
        checked[name] = n
    return checked


def _subset(test: pl.DataFrame, subset: str) -> np.ndarray:
    if subset == "all":
        return np.ones(test.height, bool)
    if subset == "warm":
        return test["warm"].to_numpy().astype(bool)
    return ~test["not_cold"].to_numpy().astype(bool)


def _check_lists(data, domain, name, frame, method, payload, test, scores, cands, rows, atol) -> int:
    """HR@1 by score (and generated, for a listwise LLM) of one method of a list frame, recomputed;
    its lists must be `ranking_candidates`' lists of those rows."""
    expected_lists = dict(zip(cands["row"].to_list(), cands["candidates"].to_list()))
    items = test["item_id"].to_list()
    lw_path = data / "domains" / domain / "scores" / "listwise.parquet"
    listwise = pl.read_parquet(lw_path) if lw_path.exists() else None
    hits, gen = [], []
    if name == "listwise" and listwise is not None and method in set(listwise["method"]):
        part = listwise.filter(pl.col("method") == method)
        by_row = {r: (ids, sc, g) for r, ids, sc, g in part.select("row", "candidate_ids", "candidate_scores",
                                                                     "generated").iter_rows()}
        for r in rows:
            ids, sc, g = by_row[int(r)]
            assert sorted(ids) == sorted(expected_lists[int(r)]), (name, method, int(r), "other candidates")
            t = ids.index(items[int(r)])
            s = np.asarray(sc)
            hits.append(_expected_hit(s[t], np.delete(s, t), 1))
            gen.append(float(len(g) > 0 and g[0] == t))
    else:
        df = scores[method]
        by_row = dict(zip(df["row"].to_list(), df["candidate_scores"].to_list()))
        for r in rows:
            s = np.asarray(by_row[int(r)])  # in ranking_candidates' order: the target first
            assert expected_lists[int(r)][0] == items[int(r)]
            hits.append(_expected_hit(s[0], s[1:], 1))
    ests = payload["metrics"][name][method]["all"]
    assert abs(ests["hr@1"]["value"] - np.mean(hits)) < atol, (name, method, ests["hr@1"]["value"], np.mean(hits))
    if gen:
        assert abs(ests["generated_hr@1"]["value"] - np.mean(gen)) < atol, (name, method)
    return 1 + bool(gen)


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for d in sys.argv[2:]:
        print(d, check(root, d))
