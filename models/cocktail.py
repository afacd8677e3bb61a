"""RecCocktail for one domain: the base spirit and the domain's ingredient mixed over a fresh base
LLM, the merge learned and selected on validation rows (models/merge.py), folded into one dense
model; and the dense models of every merge method for scoring. No Dagster here."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from models import data_prep, fingerprint, llm as llm_mod, merge, scorer
from models.adapters import builder, load_base
from models.profiles import Profile
from models.workspace import Workspace

ADAPTERS = ("base_spirit", "ingredient")  # the mixture's adapter names, in MergeMethod's (a, b) order


def adapter_folders(ws: Workspace, domain: str) -> dict[str, Path]:
    folders = {"base_spirit": ws.adapter_dir("base_spirit") / "adapter",
               "ingredient": ws.adapter_dir("ingredient", domain) / "adapter"}
    for name, folder in folders.items():
        ws.require(folder, f"{name}_lora", None if name == "base_spirit" else domain)
    return folders


def mixture(ws: Workspace, domain: str, prof: Profile) -> tuple[llm_mod.LoadedLLM, merge.Mixture, dict]:
    """A fresh base LLM with the base spirit and the domain's ingredient mixed in every adapted
    module; returns it with the adapters' folder digests."""
    loaded = load_base(ws, prof)
    folders = adapter_folders(ws, domain)
    adapters = [merge.Adapter.load(name, folders[name]) for name in ADAPTERS]
    return loaded, merge.Mixture(loaded.model, adapters, prof.merge.temperature), \
        {name: fingerprint.folder_digest(f) for name, f in folders.items()}


def fixed_weights(ws: Workspace, domain: str) -> dict[str, dict[str, float]]:
    """merge method -> the fixed weights it chose (the learned merge has none: it is the dense model)."""
    record = fingerprint.read_json(ws.require(ws.cocktail_dir(domain) / "merge.json", "cocktail_model", domain))
    return {r["method"]: r["weights"] for r in record["results"] if r["weights"] is not None}


def dense_model(ws: Workspace, domain: str, prof: Profile, how: dict | Path | None) -> llm_mod.LoadedLLM:
    """A dense model: None = the base LLM, a folder = that model, a dict = the two adapters mixed with
    these fixed weights and folded in. Its `identity` says which."""
    if how is None:
        return load_base(ws, prof)
    if isinstance(how, dict):
        loaded, mix, digests = mixture(ws, domain, prof)
        mix.set_fixed(how)
        mix.to_dense()
        loaded.model.eval()
        loaded.identity = {**loaded.identity, "adapters": digests, "fixed_weights": how}
        return loaded
    return llm_mod.load(Path(how))


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
            or data_prep.file_sha256(model) != record.get("model_sha256"):
        return None
    return record


def make_cocktail(ws: Workspace, domain: str, noun: str, prof: Profile, log: Callable[[str], None] = print) -> dict:
    """Learn and select the merge on validation rows, fold it into `models/cocktail/<domain>/model`,
    and record every candidate and baseline in merge.json; returns the metadata."""
    from models.report import plot_curve, plot_heatmap

    s = prof.merge
    split, titles = ws.read_split(domain), ws.titles(domain)
    loaded, mix, digests = mixture(ws, domain, prof)
    build = builder(loaded, noun, prof.max_prompt_tokens)
    # validation rows only: the test part is dropped before anything else reads the split
    learn, select, labels = merge.validation_slices(split, titles, build, s.learn_rows, s.select_rows, s.seed)
    out = ws.cocktail_dir(domain)
    fp = fingerprint.digest({"model": loaded.identity, "adapters": digests, "learn": fingerprint.data_digest(learn),
                             "select": fingerprint.data_digest(select, labels), "settings": s.model_dump(mode="json"),
                             "code": fingerprint.code_digest(merge, scorer)})
    record = _reused(out, fp)
    reused = record is not None
    if reused:
        log(f"reusing the cocktail in {out / 'model'}: a merge with the same model, adapters, validation prompts, "
            f"settings and code (fingerprint {fp[:12]}) made it")
    else:
        log(f"learning mixing weights of {len(mix.modules)} modules on {len(learn)} unlabelled validation prompts; "
            f"selecting on {len(select)} others")
        encode = lambda ps: loaded.tokenizer(list(ps), return_tensors="pt", padding=True).to(loaded.device)  # noqa: E731
        t0 = time.perf_counter()
        results = merge.select_merge(mix, lambda: scorer.score(loaded, select), encode, learn, labels, loaded.yes_id,
                                     s, log=log, checkpoint=out / "merge_checkpoint.json", fingerprint_=fp)
        learn_s = time.perf_counter() - t0
        best = results[-1]
        merge.apply(mix, best)
        table = mix.weight_table()
        grid, rows, cols = weight_grid(table)
        plot_heatmap(grid, rows, cols, f"{domain}: RecCocktail ingredient weight (lr {best.lr}, step {best.step})",
                     "ingredient weight", out / "weights.png")
        plot_curve(best.entropy_curves, "step", "mean binary entropy of P(Yes)",
                   f"{domain}: weight learning on unlabelled validation prompts (per lr)", out / "entropy.png")
        model_dir = merge.save_dense(mix, loaded.tokenizer, out / "model")
        record = {"domain": domain, "fingerprint": fp, "settings": s.model_dump(mode="json"), "learn_rows": len(learn),
                  "select_rows": len(select), "learn_s": round(learn_s, 1), "model_identity": loaded.identity,
                  "adapters": digests, "results": [r.__dict__ for r in results], "weights": table,
                  "model_sha256": data_prep.file_sha256(model_dir / "model.safetensors")}
        fingerprint.write_json(out / "merge.json", record)
    best = record["results"][-1]
    return {"selected_lr": best["lr"], "selected_step": best["step"], "learn_s": record["learn_s"],
            "reused_finished_cocktail": reused,
            **{f"select_auc/{r['method']}": round(r["select_auc"], 4) for r in record["results"]},
            "task_arithmetic_lambda": next(r["weights"]["base_spirit"] for r in record["results"]
                                           if r["method"] == "task_arithmetic"),
            "candidates": best["candidates"],
            "weights_per_module": [{"module": p, **w} for p, w in record["weights"].items()],
            "merge_settings": record["settings"], "fingerprint": fp,
            "weights_plot": out / "weights.png", "entropy_plot": out / "entropy.png", "model": out / "model",
            "model_sha256": record["model_sha256"]}
