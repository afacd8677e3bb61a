"""The CF stage of one domain: every registered CF model trained on the domain's split, its vectors
saved (the CIE sources), every test row and candidate list scored, the validation curves drawn.
No Dagster here."""

from __future__ import annotations

from typing import Callable

import numpy as np

from models.cf.interactions import Interactions
from models.cf.train import train_model
from models.core.files import file_sha256
from models.core.plots import plot_curve
from models.data.workspace import write_scores
from models.metrics import ranking as metrics
from models.registry.cf import CF_MODELS


def fit_domain(ws, domain: str, settings: dict, log: Callable[[str], None] | None = None) -> dict:
    """Train every registered CF model on a domain's split (`ws`: models.data.workspace.Workspace;
    `settings`: the config's `settings.cf`), save their vectors to cf/<model>.npz, score every test
    row and candidate list into scores/cf.parquet, and return the metadata (paths as Path)."""
    seed = int(settings.get("seed", 2023))
    data = Interactions.from_split(ws.read_split(domain))
    cands = ws.candidates(domain)
    index = {it: k for k, it in enumerate(data.item_ids)}
    cand_idx = np.array([[index[i] for i in row] for row in cands["candidates"]], dtype=np.int64)
    valid = data.parts["valid"]
    rows, md, artifacts = [], {}, {}
    for name, spec in CF_MODELS.items():
        params = spec.params(**(settings.get(name) or {}))
        if not params.enabled:
            md[f"{name}/skipped"] = f"settings.cf.{name}.enabled is false for {domain}"
            ws.cf_path(domain, name).unlink(missing_ok=True)  # no stale vectors of an earlier run for the CIE
            if log:
                log(f"{name}: not trained on {domain} (enabled: false)")
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
        if "valid_auc_curve" in model.info:  # a model trained by epochs with early stopping
            md.update({f"{name}/best_epoch": model.info["best_epoch"], f"{name}/epochs_run": model.info["epochs_run"],
                       f"{name}_valid_auc_plot": plot_curve(
                           [h["valid_auc"] for h in model.info["valid_auc_curve"]], "epoch", "validation AUC",
                           f"{name} on {domain}: best epoch {model.info['best_epoch']}",
                           ws.domain(domain, "cf") / f"{name}_valid_auc.png")})
    scores_path = ws.scores_path(domain, "cf")
    digest = write_scores(scores_path, rows, ws.split_sha256(domain))
    return {**md, "users": data.n_users, "items": data.n_items, "artifacts": artifacts, "scores_path": scores_path,
            "scores_sha256": digest}
