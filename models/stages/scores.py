"""Yes-logit scores of the untrained LLM and of every merge method (models/llm/merge.py MERGE_METHODS:
base spirit only, ingredient only = TALLRec, equal weights, task arithmetic, RecCocktail) on the
evaluation sample (seeded users, all of their test rows: models/metrics/frames.py) and the candidate lists of
`ranking_candidates`. Test labels are not read here. No Dagster here."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from models.llm import loading as llm_mod
from models.registry import merge as merge_registry
from models.llm import prompts as prompt_mod
from models.llm import scorer
from models.stages.adapters import builder
from models.stages.cocktail import dense_model, fixed_weights, skipped
from models.metrics.frames import sample_positions
from models.profiles import Profile
from models.core.progress import Progress
from models.data.workspace import Workspace, write_scores
from models.registry.methods import UNTRAINED


def ranking_rows(test_users: np.ndarray, rows: np.ndarray, ranking_users: int | None) -> np.ndarray:
    """The scored test rows whose candidate lists are also ranked: every row of the first
    `ranking_users` users of the evaluation sample's draw (`models.metrics.frames`; labels are not read).
    `test_users`: the user of each test row."""
    if ranking_users is None:
        return np.asarray(rows)
    return np.intersect1d(rows, sample_positions(test_users, int(ranking_users)))


def methods(ws: Workspace, domain: str) -> dict[str, dict | Path | None]:
    """Scored method -> how to get its dense model: None = the base LLM, a folder, or fixed weights."""
    fixed = fixed_weights(ws, domain)
    out: dict[str, dict | Path | None] = {UNTRAINED: None}
    if skipped(ws, domain):  # no base spirit (no general domain): the ingredient alone, TALLRec
        return {**out, merge_registry.MERGE_METHODS["ingredient_only"].score_name: fixed["ingredient_only"]}
    for m in merge_registry.MERGE_METHODS.values():
        out[m.score_name] = fixed[m.name] if m.weights is not None else ws.cocktail_dir(domain) / "model"
    return out


def score_methods(ws: Workspace, domain: str, noun: str, prof: Profile, base: llm_mod.LoadedLLM,
                  log: Callable[[str], None] = print) -> dict:
    """Score every method on the profile's test sample into scores/llm.parquet; returns the metadata.
    `base` is the untrained LLM, loaded once by the caller for every domain of a run."""
    split, titles, split_sha = ws.read_split(domain), ws.titles(domain), ws.split_sha256(domain)
    build = builder(base, noun, prof.max_prompt_tokens)
    point_p, _, rows = prompt_mod.examples(split, titles, build, "test", prof.test_users, with_labels=False,
                                           by_user=True)
    test = split.filter(pl.col("split") == "test")
    cands = ws.candidates(domain)
    hist = test["history_item_ids"].to_list()
    rank_rows = ranking_rows(test["user_id"].to_numpy(), rows, prof.ranking_users)
    groups = [[build([titles[i] for i in hist[r]], titles[c]) for c in cands["candidates"][int(r)]] for r in rank_rows]
    out_rows, md, done = [], {}, {}
    todo = methods(ws, domain)
    progress = Progress(f"{domain}: scoring {len(rows)} test rows and {len(rank_rows)} lists", len(todo), log,
                        unit="methods", every_s=0)
    for k, (method, how) in enumerate(todo.items(), 1):
        key = json.dumps(how, sort_keys=True, default=str)  # task arithmetic at 0.5 = equal weights: scored once
        if key not in done:
            model = base if how is None else dense_model(ws, domain, prof, how)
            t0 = time.perf_counter()
            done[key] = (scorer.score(model, point_p), dict(zip(rank_rows.tolist(), scorer.score_groups(model, groups))))
            md[f"{method}/score_s"] = round(time.perf_counter() - t0, 1)
        point, ranked = done[key]
        out_rows += [{"method": method, "row": int(r), "score": float(s),
                      "candidate_scores": ranked[int(r)].tolist() if int(r) in ranked else None}
                     for r, s in zip(rows, point)]
        progress.update(k, method)
    path = ws.scores_path(domain, "llm")
    digest = write_scores(path, out_rows, split_sha)
    return {**md, "test_users_scored": int(test[rows.tolist()]["user_id"].n_unique()), "test_rows_scored": len(rows),
            "ranking_lists_scored": len(rank_rows), "test_rows": test.height,
            "methods": list(todo), "scores_path": path, "scores_sha256": digest}
