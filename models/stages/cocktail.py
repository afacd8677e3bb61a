"""RecCocktail for one domain: the base spirit and the domain's ingredient mixed over a fresh base
LLM, the merge learned and selected on validation rows (models/llm/merge.py), folded into one dense
model; and the dense models of every merge method for scoring. No Dagster here."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from models.llm import cards
from models.registry import merge as merge_registry
from models.core.files import file_sha256
from models.core import fingerprint
from models.llm import loading as llm_mod
from models.llm import merge
from models.metrics import ranking as metrics
from models.llm import scorer
from models.stages.adapters import builder, load_base
from models.profiles import Profile
from models.data.workspace import Workspace

ADAPTERS = ("base_spirit", "ingredient")  # the mixture's adapter names, in MergeMethod's (a, b) order


TASKS = ("pointwise", "listwise")  # pointwise: our Yes/No adaptation (PROTOCOLS 8); listwise: as published (7)


def kind_name(kind: str, task: str) -> str:
    """The adapter folder of `kind` for a task: base_spirit / listwise_base_spirit, and so on."""
    return kind if task == "pointwise" else f"listwise_{kind}"


def cocktail_dir(ws: Workspace, domain: str, task: str = "pointwise") -> Path:
    return ws.cocktail_dir(domain) if task == "pointwise" else ws.dir("models", "listwise_cocktail", domain)


def adapter_folders(ws: Workspace, domain: str, task: str = "pointwise",
                    names: tuple[str, ...] = ADAPTERS) -> dict[str, Path]:
    folders = {name: (ws.adapter_dir(kind_name(name, task)) if name == "base_spirit" else
                      ws.adapter_dir(kind_name(name, task), domain)) / "adapter" for name in names}
    for name, folder in folders.items():
        asset = f"{kind_name(name, task)}_lora" if task == "pointwise" else kind_name(name, task)
        ws.require(folder, asset, None if name == "base_spirit" else domain)
    return folders


def mixture(ws: Workspace, domain: str, prof: Profile, task: str = "pointwise", names: tuple[str, ...] = ADAPTERS
            ) -> tuple[llm_mod.LoadedLLM, merge.Mixture, dict]:
    """A fresh base LLM with the base spirit and the domain's ingredient (or only `names`) mixed in
    every adapted module; returns it with the adapters' folder digests."""
    loaded = load_base(ws, prof)
    folders = adapter_folders(ws, domain, task, names)
    adapters = [merge.Adapter.load(name, folders[name]) for name in names]
    return loaded, merge.Mixture(loaded.model, adapters, prof.merge.temperature), \
        {name: fingerprint.folder_digest(f) for name, f in folders.items()}


def fixed_weights(ws: Workspace, domain: str, task: str = "pointwise") -> dict[str, dict]:
    """merge method -> the fixed weights or PEFT combination it chose (the learned merge has none: it is the dense model)."""
    record = fingerprint.read_json(ws.require(cocktail_dir(ws, domain, task) / "merge.json",
                                              "cocktail_model" if task == "pointwise" else "listwise_cocktail", domain))
    return {r["method"]: r["weights"] for r in record["results"] if r["weights"] is not None}


def combined_model(ws: Workspace, domain: str, prof: Profile, how: dict, task: str = "pointwise") -> llm_mod.LoadedLLM:
    """The two adapters combined by PEFT (TIES, DARE: `how`) and folded into a fresh base model."""
    loaded = load_base(ws, prof)
    folders = adapter_folders(ws, domain, task)
    adapter, loaded.model = merge.peft_combination(loaded.model, folders, how, prof.merge.seed)
    mix = merge.Mixture(loaded.model, [adapter], prof.merge.temperature)
    mix.set_fixed({adapter.name: 1.0})
    mix.to_dense()
    loaded.model.eval()
    loaded.identity = {**loaded.identity, "adapters": {n: fingerprint.folder_digest(f) for n, f in folders.items()},
                       "combination": how}
    return loaded


def dense_model(ws: Workspace, domain: str, prof: Profile, how: dict | Path | None,
                task: str = "pointwise") -> llm_mod.LoadedLLM:
    """A dense model: None = the base LLM, a folder = that model, a dict = the two adapters mixed with
    these fixed weights (or combined by PEFT) and folded in. Its `identity` says which."""
    if how is None:
        return load_base(ws, prof)
    if merge_registry.is_combination(how):
        return combined_model(ws, domain, prof, how, task)
    if isinstance(how, dict):
        # an adapter at weight 0 adds exactly nothing to the fold: only the others are loaded (the ingredient
        # alone needs no base spirit, which a CoLLM-only config does not have)
        names = tuple(n for n in ADAPTERS if how.get(n))
        loaded, mix, digests = mixture(ws, domain, prof, task, names)
        mix.set_fixed({n: how[n] for n in names})
        mix.to_dense()
        loaded.model.eval()
        loaded.identity = {**loaded.identity, "adapters": digests, "fixed_weights": how}
        return loaded
    return llm_mod.load(Path(how))


NO_BASE_SPIRIT = ("no domain has role: general in the config, so there is no base spirit: our pointwise cocktail "
                  "and its merge baselines are skipped; the untrained LLM, TALLRec (the ingredient alone) and CoLLM on "
                  "the ingredient still run")


def without_base_spirit(ws: Workspace, domain: str, log: Callable[[str], None] = print) -> dict:
    """The pointwise cocktail stage of a config without general domains (CoLLM alone, e.g. Amazon-Book):
    merge.json lists only the ingredient alone (TALLRec) and says why nothing was merged; a dense model
    left by an earlier config is removed so nothing scores it. Returns the metadata."""
    out = cocktail_dir(ws, domain)
    folder = adapter_folders(ws, domain, names=("ingredient",))["ingredient"]
    if (out / "model").exists():
        shutil.rmtree(out / "model")
    record = {"domain": domain, "task": "pointwise", "skipped": NO_BASE_SPIRIT,
              "adapters": {"ingredient": fingerprint.folder_digest(folder)},
              "results": [{"method": "ingredient_only", "weights": {n: float(n == "ingredient") for n in ADAPTERS}}]}
    path = fingerprint.write_json(out / "merge.json", record)
    log(f"{domain}: {NO_BASE_SPIRIT}")
    return {"skipped": NO_BASE_SPIRIT, "merge_record": path, "merge_sha256": file_sha256(path)}


def skipped(ws: Workspace, domain: str) -> bool:
    """Whether the domain's pointwise cocktail was skipped (no base spirit; `without_base_spirit`)."""
    return bool((fingerprint.read_json(cocktail_dir(ws, domain) / "merge.json") or {}).get("skipped"))


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


@dataclass
class MergePlan:
    """What one task's merge learns on and is selected by (validation rows only)."""

    learn: list  # unlabelled validation prompts (text, or token ids)
    select_score: Callable[[llm_mod.LoadedLLM | None], float]  # None: the mixture as it stands
    objective: merge.Objective
    data: dict  # digests of the learn and selection data, for the fingerprint
    select_rows: int
    metric: str  # the selection metric, as the report names it
    entropy: str  # the objective, for the plot
    code: tuple = ()  # the modules that define the plan beyond merge and scorer (part of the fingerprint)


def pointwise_plan(ws: Workspace, domain: str, noun: str, prof: Profile, loaded: llm_mod.LoadedLLM) -> MergePlan:
    """Ours (PROTOCOLS section 8): binary entropy of P(Yes) on unlabelled validation prompts; AUC on others."""
    s = prof.merge
    build = builder(loaded, noun, prof.max_prompt_tokens)
    # validation rows only: the test part is dropped before anything else reads the split
    learn, select, labels = merge.validation_slices(ws.read_split(domain), ws.titles(domain), build, s.learn_rows,
                                                    s.select_rows, s.seed)
    encode = lambda ps: loaded.tokenizer.pad(  # noqa: E731
        {"input_ids": [llm_mod.prompt_ids(loaded.tokenizer, p) for p in ps]}, return_tensors="pt").to(loaded.device)
    return MergePlan(learn, lambda m: metrics.auc(labels, scorer.score(m or loaded, select)),
                     merge.yes_entropy(encode, loaded.yes_id),
                     {"learn": fingerprint.data_digest(learn), "select": fingerprint.data_digest(select, labels)},
                     len(select), "AUC", "mean binary entropy of P(Yes)")


def make_cocktail(ws: Workspace, domain: str, noun: str, prof: Profile, log: Callable[[str], None] = print,
                  task: str = "pointwise", cfg=None) -> dict:
    """Learn and select the merge on validation rows, fold it into `<cocktail dir>/model`, and record
    every candidate and baseline in merge.json; returns the metadata. `task` is `pointwise` (ours)
    or `listwise` (as published, models/stages/reccocktail.py, which reads the project config `cfg`)."""
    from models.core.plots import plot_curve, plot_heatmap

    s = prof.merge
    loaded, mix, digests = mixture(ws, domain, prof, task)
    if task == "pointwise":
        plan = pointwise_plan(ws, domain, noun, prof, loaded)
    else:
        from models.stages import reccocktail

        plan = reccocktail.listwise_plan(ws, cfg, domain, prof, loaded)
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
            model_dir, title=f"RecCocktail {task} cocktail ({domain})",
            what=("RecCocktail as published: the listwise base spirit and the domain's listwise ingredient merged per "
                  "module by weights learned with the entropy of generated answers." if task == "listwise" else
                  "Our pointwise adaptation of RecCocktail (PROTOCOLS section 8): the Yes/No base spirit and ingredient "
                  "merged per module by weights learned with the binary entropy of P(Yes); not the paper's method."),
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
            **{f"select_score/{r['method']}": round(r["select_score"], 4) for r in record["results"]},
            "chosen": {r["method"]: r["weights"] for r in record["results"] if r["weights"] is not None},
            "candidates": best["candidates"],
            "weights_per_module": [{"module": p, **w} for p, w in record["weights"].items()],
            "merge_settings": record["settings"], "fingerprint": fp,
            "weights_plot": out / "weights.png", "entropy_plot": out / "entropy.png", "model": out / "model",
            "model_sha256": record["model_sha256"], "untrained_select_score": record.get("untrained_select_score")}
