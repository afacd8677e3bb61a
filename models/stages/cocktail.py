"""RecCocktail for one domain and task kind: the base spirit and the domain's ingredient mixed over a
fresh base LLM, the merge learned and selected on validation rows by the task's plan
(models/stages/task.py; the merge machinery is models/llm/merge.py), folded into one dense model, and
every candidate and baseline recorded in merge.json. No Dagster here."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from models.config import ProjectConfig
from models.core import fingerprint
from models.core.files import file_sha256
from models.core.plots import plot_curve, plot_heatmap
from models.data.workspace import Workspace
from models.llm import cards, merge, scorer
from models.profiles import Profile
from models.registry.tasks import ROLES
from models.stages.common import load_base
from models.stages.mixing import adapter_folders, cocktail_dir, combined_model, mixture
from models.stages.task import task as task_of

NO_BASE_SPIRIT = ("no domain has role: general in the config, so there is no base spirit: our pointwise cocktail "
                  "and its merge baselines are skipped; the untrained LLM, TALLRec (the ingredient alone) and CoLLM on "
                  "the ingredient still run")


def without_base_spirit(ws: Workspace, domain: str, task: str = "pointwise", log: Callable[[str], None] = print) -> dict:
    """The cocktail stage of a config without general domains (CoLLM alone, e.g. Amazon-Book): merge.json
    lists only the ingredient alone (TALLRec) and says why nothing was merged; a dense model left by an
    earlier config is removed so nothing scores it. Returns the metadata."""
    out = cocktail_dir(ws, domain, task)
    folder = adapter_folders(ws, domain, task, names=("ingredient",))["ingredient"]
    if (out / "model").exists():
        shutil.rmtree(out / "model")
    record = {"domain": domain, "task": task, "skipped": NO_BASE_SPIRIT,
              "adapters": {"ingredient": fingerprint.folder_digest(folder)},
              "results": [{"method": "ingredient_only", "weights": {n: float(n == "ingredient") for n in ROLES}}]}
    path = fingerprint.write_json(out / "merge.json", record)
    log(f"{domain}: {NO_BASE_SPIRIT}")
    return {"skipped": NO_BASE_SPIRIT, "merge_record": path, "merge_sha256": file_sha256(path)}


def weight_grid(table: dict[str, dict[str, float]]) -> tuple[np.ndarray, list[str], list[str]]:
    """The ingredient's mixing weight per layer (rows) and projection (columns), for the heat map."""
    cells = {(int(p.split(".layers.")[1].split(".")[0]), p.rsplit(".", 1)[1]): w.get("ingredient", np.nan)
             for p, w in table.items() if ".layers." in p}
    layers, projs = sorted({k[0] for k in cells}), sorted({k[1] for k in cells})
    grid = np.full((len(layers), len(projs)), np.nan)
    for (layer, proj), w in cells.items():
        grid[layers.index(layer), projs.index(proj)] = w
    return grid, [f"layer {i}" for i in layers], projs


def _reused(out: Path, fp: str) -> dict | None:
    """The finished cocktail of a merge with this fingerprint, if its dense model is intact."""
    record = fingerprint.read_json(out / "merge.json")
    model = out / "model" / "model.safetensors"
    if not record or record.get("fingerprint") != fp or not model.exists() \
            or file_sha256(model) != record.get("model_sha256"):
        return None
    return record


def make_cocktail(ws: Workspace, cfg: ProjectConfig, domain: str, task: str, prof: Profile,
                  log: Callable[[str], None] = print) -> dict:
    """Learn and select the merge of `task`'s adapters on validation rows (the task's plan), fold it
    into `<cocktail dir>/model`, and record every candidate and baseline in merge.json; returns the
    metadata."""
    impl = task_of(task)
    prof = impl.profile(prof)
    s = prof.merge
    loaded, mix, digests = mixture(ws, domain, prof, task)
    plan = impl.merge_plan(ws, cfg, domain, prof, loaded)
    out = cocktail_dir(ws, domain, task)
    fp = fingerprint.digest({"model": loaded.identity, "adapters": digests, **plan.data, "task": task,
                             "settings": s.model_dump(mode="json"),
                             "code": fingerprint.code_digest(merge, scorer, *plan.code)})
    record = _reused(out, fp)
    reused = record is not None
    if reused:
        log(f"reusing the cocktail in {out / 'model'}: a merge with the same model, adapters, validation prompts, "
            f"settings and code (fingerprint {fp[:12]}) made it")
    else:
        log(f"learning mixing weights of {len(mix.modules)} modules on {len(plan.learn)} unlabelled validation "
            f"prompts; selecting by {plan.metric} on {plan.select_rows} others")
        t0 = time.perf_counter()
        results = merge.select_merge(mix, plan.select_score, plan.objective, plan.learn, s, log=log,
                                     checkpoint=out / "merge_checkpoint.json", fingerprint_=fp,
                                     combine=lambda how: combined_model(ws, domain, prof, how, task))
        learn_s = time.perf_counter() - t0
        best = results[-1]
        untrained = plan.select_score(load_base(ws, prof))  # what the cocktail has to beat (its asset check)
        merge.apply(mix, best)
        table = mix.weight_table()
        grid, rows, cols = weight_grid(table)
        plot_heatmap(grid, rows, cols, f"{domain}: RecCocktail ingredient weight (lr {best.lr}, step {best.step})",
                     "ingredient weight", out / "weights.png")
        plot_curve(best.entropy_curves, "step", plan.entropy,
                   f"{domain}: weight learning on unlabelled validation prompts (per lr)", out / "entropy.png")
        model_dir = merge.save_dense(mix, loaded.tokenizer, out / "model")
        cards.write_merged_card(
            model_dir, title=f"RecCocktail {task} cocktail ({domain})", what=impl.cocktail_what,
            identity=cards.identity_of(loaded), adapters=digests, domains=[domain], cfg=cfg,
            settings={**s.model_dump(mode="json"), "selected_lr": best.lr, "selected_step": best.step},
            validation={**{f"selection {plan.metric} ({r.method})": round(r.select_score, 4) for r in results},
                        f"selection {plan.metric} (the untrained LLM)": untrained})
        record = {"domain": domain, "task": task, "fingerprint": fp, "settings": s.model_dump(mode="json"),
                  "learn_rows": len(plan.learn), "select_rows": plan.select_rows, "select_metric": plan.metric,
                  "learn_s": round(learn_s, 1), "model_identity": loaded.identity,
                  "adapters": digests, "results": [r.__dict__ for r in results], "weights": table,
                  "untrained_select_score": untrained,
                  "model_sha256": file_sha256(model_dir / "model.safetensors")}
        fingerprint.write_json(out / "merge.json", record)
    best = record["results"][-1]
    return {"task": task, "selected_lr": best["lr"], "selected_step": best["step"], "learn_s": record["learn_s"],
            "reused_finished_cocktail": reused, "select_metric": record["select_metric"],
            "select_rows": record["select_rows"],
            **{f"select_score/{r['method']}": round(r["select_score"], 4) for r in record["results"]},
            "chosen": {r["method"]: r["weights"] for r in record["results"] if r["weights"] is not None},
            "candidates": best["candidates"],
            "weights_per_module": [{"module": p, **w} for p, w in record["weights"].items()],
            "merge_settings": record["settings"], "fingerprint": fp,
            "weights_plot": out / "weights.png", "entropy_plot": out / "entropy.png", "model": out / "model",
            "model_sha256": record["model_sha256"], "untrained_select_score": record.get("untrained_select_score")}
