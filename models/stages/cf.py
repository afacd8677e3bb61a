"""The CF stage of one domain: every registered CF model trained on the domain's split, its vectors
saved (the CIE sources), every test row and candidate list scored, the validation curves drawn; on a
next-item (leave-one-out) domain also each model's standing on every test item by the
next-item protocols (full ranking, 100 sampled negatives) with its top-k list and that list's
beyond-accuracy values (scores/next_item.parquet: no labels are read). No Dagster here."""

from __future__ import annotations

from typing import Callable

import numpy as np
import polars as pl

from models.cf import next_item as protocol
from models.cf.interactions import Interactions
from models.cf.model import CFModel
from models.cf.train import train_model
from models.core.files import file_sha256, write_parquet_atomic
from models.core.plots import plot_curve
from models.data.workspace import write_scores
from models.metrics import beyond
from models.metrics import ranking as metrics
from models.registry.cf import CF_MODELS


def fit_domain(ws, domain: str, settings: dict, log: Callable[[str], None] | None = None,
               next_item: dict | None = None) -> dict:
    """Train every registered CF model on a domain's split (`ws`: models.data.workspace.Workspace;
    `settings`: the config's `settings.cf`), save their vectors to cf/<model>.npz, score every test
    row and candidate list into scores/cf.parquet, and return the metadata (paths as Path).
    `next_item`: on a next-item domain, the config's evaluation settings (the next-item models train,
    and scores/next_item.parquet is written); None elsewhere."""
    seed = int(settings.get("seed", 2023))
    data = Interactions.from_split(ws.read_split(domain))
    cands = ws.candidates(domain)
    index = {it: k for k, it in enumerate(data.item_ids)}
    cand_idx = np.array([[index[i] for i in row] for row in cands["candidates"]], dtype=np.int64)
    valid = data.parts["valid"]
    rows, md, artifacts, standings = [], {}, {}, []
    lists = NextItemLists(data, next_item) if next_item else None
    for name, spec in CF_MODELS.items():
        params = spec.params(**(settings.get(name) or {}))
        skip = (f"settings.cf.{name}.enabled is false for {domain}" if not params.enabled else
                f"a next-item model: {domain} is not a leave-one-out domain" if spec.next_item_only and not next_item
                else None)
        if skip:
            md[f"{name}/skipped"] = skip
            ws.cf_path(domain, name).unlink(missing_ok=True)  # no stale vectors of an earlier run for the CIE
            if log:
                log(f"{name}: not trained on {domain} ({skip})")
            continue
        model = train_model(name, data, params, seed=seed, log=log)
        path = model.save(ws.cf_path(domain, name))
        artifacts[name] = {"path": str(path), "sha256": file_sha256(path)}
        test_scores = model.score_split(data, "test")
        cand_scores = np.einsum("nd,nkd->nk", model.user_factors[model.row_users(data, "test")],
                                model.item_factors[cand_idx])
        rows += [{"method": name, "row": r, "score": float(test_scores[r]), "candidate_scores": cand_scores[r].tolist()}
                 for r in range(len(test_scores))]
        md[f"{name}/valid_auc"] = round(metrics.auc(valid["label"], model.score_split(data, "valid")), 4)
        md[f"{name}/fit_s"] = round(model.info["fit_s"], 2)
        md[f"{name}/dim"] = int(model.user_factors.shape[1])
        if lists is not None:
            found = lists.evaluate(model, data)
            standings.append(found)
            md[f"{name}/valid_ndcg@10_100neg"] = round(found["valid_ndcg@10"], 4)
        if "valid_curve" in model.info:  # a next-item model trained by epochs with early stopping
            md.update({f"{name}/best_epoch": model.info["best_epoch"], f"{name}/epochs_run": model.info["epochs_run"],
                       f"{name}_valid_ndcg_plot": plot_curve(
                           [h["valid_ndcg@10"] for h in model.info["valid_curve"]], "check", "validation NDCG@10",
                           f"{name} on {domain}: best after epoch {model.info['best_epoch'] + 1}",
                           ws.domain(domain, "cf") / f"{name}_valid_ndcg.png")})
        if "valid_auc_curve" in model.info:  # a model trained by epochs with early stopping
            md.update({f"{name}/best_epoch": model.info["best_epoch"], f"{name}/epochs_run": model.info["epochs_run"],
                       f"{name}_valid_auc_plot": plot_curve(
                           [h["valid_auc"] for h in model.info["valid_auc_curve"]], "epoch", "validation AUC",
                           f"{name} on {domain}: best epoch {model.info['best_epoch']}",
                           ws.domain(domain, "cf") / f"{name}_valid_auc.png")})
    scores_path = ws.scores_path(domain, "cf")
    digest = write_scores(scores_path, rows, ws.split_sha256(domain))
    if lists is not None and standings:
        path = ws.scores_path(domain, NEXT_ITEM_FAMILY)
        table = pl.concat([s["table"] for s in standings]).with_columns(pl.lit(ws.split_sha256(domain))
                                                                       .alias("split_sha256"))
        md.update({"next_item_path": path, "next_item_sha256": write_parquet_atomic(table, path)})
    else:
        ws.scores_path(domain, NEXT_ITEM_FAMILY).unlink(missing_ok=True)
    return {**md, "users": data.n_users, "items": data.n_items, "artifacts": artifacts, "scores_path": scores_path,
            "scores_sha256": digest}


NEXT_ITEM_FAMILY = "next_item"


class NextItemLists:
    """What every model of a next-item domain is evaluated on: the 100 sampled negatives of each
    validation and test row (seeded, the same for every model), the top-k length, the tail."""

    def __init__(self, data: Interactions, ev: dict):
        self.seed = int(ev["seed"])
        n = int(ev["next_item_negatives"])
        self.negatives = {split: protocol.sampled_lists(data, split, n, self.seed + k)
                          for k, split in enumerate(("valid", "test"))}
        self.k = int(ev["top_k"])
        counts = np.bincount(data.parts["train"]["item"], minlength=data.n_items)
        self.popularity = counts
        self.tail = beyond.tail_items(counts, float(ev["tail_ratio"]))

    def evaluate(self, model: CFModel, data: Interactions) -> dict:
        """The model's standing on every test row, as a table (one row per test row), with its
        validation NDCG@10 among the sampled negatives (what the report picks the best traditional
        baseline by: the validation rows need no full ranking or top-k list)."""
        v = data.parts["valid"]
        valid_ndcg = protocol.sampled_ndcg(model.users_at("valid")[model.row_users(data, "valid")],
                                           model.item_factors, v["item"], self.negatives["valid"], 10)
        vectors = model.users_at("test")[model.row_users(data, "test")]
        st = protocol.standing(vectors, model.item_factors, data, "test", self.negatives["test"], self.k, self.seed)
        table = pl.DataFrame({
            "method": model.name, "split": "test", "row": np.arange(st.pool.size),
            "full_above": st.full.above, "full_tied": st.full.tied, "full_pool": st.pool,
            "sampled_above": st.sampled.above, "sampled_tied": st.sampled.tied,
            "sampled_negatives": self.negatives["test"].shape[1], "valid_ndcg@10": valid_ndcg,
            "popularity": beyond.popularity_per_user(st.top, self.popularity),
            "tail": beyond.tail_share_per_user(st.top, self.tail),
            "coverage": beyond.coverage(st.top, data.n_items), "gini": beyond.gini_index(st.top, data.n_items),
            "top": [list(r) for r in data.item_ids[st.top]]})
        return {"table": table, "valid_ndcg@10": valid_ndcg}
