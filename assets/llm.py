"""LLM assets: the base spirit LoRA (union of the general domains), one ingredient LoRA per domain
(trained from the same base LLM, as in RecCocktail), their cocktail (the learned merge, one dense
model), CoLLM's CIE over a frozen backbone, and their scores on the test rows and candidate lists,
which the evaluation report reads."""

import hashlib
import json
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import torch

from assets import _metadata as meta
from assets.cf import domain_dir, read_split, split_sha256, write_scores
from models import collm, data_prep, lora_train, llm as llm_mod, merge, prompts as prompt_mod, scorer
from models.cf import CFModel
from models.config import PROJECT_ROOT, ProjectConfig
from orchestration.partitions import domain_partitions
from orchestration.profiles import profile
from orchestration.resources import ProjectResource

CODE_VERSION = meta.code_version(lora_train, scorer, prompt_mod, llm_mod, merge, collm)
# LLM steps share the `gpu` pool (one at a time by default); on Kubernetes (deploy/k8s) each such
# step's pod asks for one GPU through this tag, which dagster-k8s reads
GPU_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}


def _llm(project: ProjectResource) -> llm_mod.LoadedLLM:
    return llm_mod.load(llm_mod.resolve_model_path(profile(project.profile)["model"], project.root / "models"))


def _builder(llm: llm_mod.LoadedLLM, noun: str, max_tokens: int) -> prompt_mod.PromptBuilder:
    return prompt_mod.PromptBuilder(noun=noun, max_tokens=max_tokens,
                                    count_tokens=lambda text: len(llm.tokenizer.encode(text)))


def _titles(project: ProjectResource, domain: str) -> dict[str, str]:
    return dict(pl.read_parquet(domain_dir(project, domain) / "items.parquet").iter_rows())


PATH_KEYS = ("valid_auc_plot", "adapter")
JSON_KEYS = ("loss_and_auc",)


def train_adapter(project: ProjectResource, domains: list[str], out: Path, kind: str, log=print) -> dict:
    """Train one LoRA adapter (kind `base_spirit` or `ingredient`) on `domains` into `out`; returns
    its metadata as plain values. No Dagster here: the asset calls it in process, or
    orchestration/pipes_train.py calls it in a subprocess through Dagster Pipes."""
    prof = profile(project.profile)
    llm = _llm(project)
    train_p, train_y, valid_p, valid_y = [], [], [], []
    for d in domains:
        split, titles = read_split(project, d), _titles(project, d)
        build = _builder(llm, project.config.domains[d].item_noun, prof["max_prompt_tokens"])
        p, y, _ = prompt_mod.examples(split, titles, build, "train", prof["train_rows_per_domain"])
        train_p += p
        train_y += y.tolist()
        p, y, _ = prompt_mod.examples(split, titles, build, "valid",
                                      prof.get(f"{kind}_valid_rows", prof["valid_rows"]))
        valid_p += p
        valid_y += y.tolist()
    cfg = lora_train.TrainConfig(**{**prof["train"], **prof.get(f"{kind}_train", {})})
    log(f"training on {len(train_p)} prompts from {', '.join(domains)}; validating on {len(valid_p)}")
    result = lora_train.train(llm, train_p, np.array(train_y), valid_p, np.array(valid_y), out, cfg, log=log)
    from models.report import plot_curve

    curve = plot_curve([h["valid_auc"] for h in result.history], f"evaluation (every {cfg.eval_every} steps)",
                       "validation AUC", f"{out.name}: best {result.best_valid_auc:.4f} at step {result.best_step}",
                       out / "valid_auc.png")
    digest = data_prep.file_sha256(out / "adapter" / "adapter_model.safetensors")
    (out / "training.json").write_text(json.dumps({"domains": domains, "config": cfg.__dict__,
                                                   "result": result.__dict__}, indent=2, default=str))
    return {"domains": ", ".join(domains), "train_prompts": len(train_p), "valid_prompts": len(valid_p),
            "model": str(llm.path), "steps": result.steps, "stopped": result.stopped,
            "best_valid_auc": round(result.best_valid_auc, 4), "best_step": result.best_step,
            "tokens_per_s": round(result.tokens_per_s, 1), "loss_and_auc": result.history,
            "valid_auc_plot": str(curve), "adapter": str(out / "adapter"), "adapter_sha256": digest}


def _train_adapter(context, project: ProjectResource, domains: list[str], out: Path, kind: str) -> tuple[dict, str]:
    """(metadata, data version) of one adapter, trained in process or, with LLMREC_TRAIN_PIPES=1, by
    the same trainer in a subprocess whose progress and metadata come back over Dagster Pipes."""
    if project.train_pipes:
        extras = {"data_dir": project.data_dir, "config_path": project.config_path, "profile": project.profile,
                  "domains": domains, "out": str(out), "kind": kind}
        reported = dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT)).run(
            context=context, command=[sys.executable, "-m", "orchestration.pipes_train"], extras=extras,
        ).get_materialize_result()
        return dict(reported.metadata or {}), reported.data_version.value
    md = train_adapter(project, domains, out, kind, log=context.log.info)
    return ({k: dg.MetadataValue.path(v) if k in PATH_KEYS else dg.MetadataValue.json(v) if k in JSON_KEYS
             else v for k, v in md.items()}, md["adapter_sha256"][:16])


# A backfill of several domains runs as one run (one process, one set of imports, the untrained base
# LLM loaded once for scoring) instead of one run per domain; a single-partition run is unchanged.
SINGLE_RUN = dg.BackfillPolicy.single_run()


def per_domain(context: dg.AssetExecutionContext, work) -> dg.MaterializeResult:
    """Run `work(domain) -> (metadata, data version)` for every domain partition of the run. For one
    domain its metadata is the materialization's; for several (a single-run backfill) every key is
    prefixed with its domain and the data version covers all of them."""
    keys = list(context.partition_keys)
    done = {}
    for i, d in enumerate(keys, 1):
        if len(keys) > 1:
            context.log.info(f"domain {d} ({i} of {len(keys)} in this run)")
        done[d] = work(d)
    if len(keys) == 1:
        md, version = done[keys[0]]
        return dg.MaterializeResult(metadata=md, data_version=dg.DataVersion(version))
    md = {"domains": ", ".join(keys), **{f"{d}/{k}": v for d, (m, _) in done.items() for k, v in m.items()}}
    version = hashlib.sha256(":".join(v for _, v in done.values()).encode()).hexdigest()[:16]
    return dg.MaterializeResult(metadata=md, data_version=dg.DataVersion(version))


def _adapter_dirs(project: ProjectResource, domain: str) -> dict:
    return {"base_spirit": project.root / "adapters" / "base_spirit" / "adapter",
            "ingredient": project.root / "adapters" / "ingredient" / domain / "adapter"}


def _mixture(project: ProjectResource, domain: str) -> tuple[llm_mod.LoadedLLM, merge.Mixture]:
    """A fresh base LLM with the base spirit and the domain's ingredient mixed in every adapted module."""
    loaded = _llm(project)
    adapters = []
    for name, folder in _adapter_dirs(project, domain).items():
        if not folder.exists():
            raise meta.fail(f"{folder} is missing: materialize {name}_lora"
                             f"{'' if name == 'base_spirit' else f' for {domain!r}'} first")
        adapters.append(merge.Adapter.load(name, folder))
    return loaded, merge.Mixture(loaded.model, adapters)


def _ranking_rows(rows: np.ndarray, prof: dict) -> np.ndarray:
    """The seeded sample of scored test rows whose candidate lists are ranked (labels are not read)."""
    n_rank = len(rows) if prof["ranking_users"] is None else min(len(rows), int(prof["ranking_users"]))
    return np.sort(np.random.default_rng(2023).choice(rows, n_rank, replace=False))


def _fixed_weights(project: ProjectResource, domain: str) -> dict[str, dict[str, float]]:
    cocktail = project.root / "models" / "cocktail" / domain
    if not (cocktail / "merge.json").exists():
        raise meta.fail(f"{cocktail / 'merge.json'} is missing: materialize cocktail_model for {domain!r} first")
    return {r["method"]: r["weights"] for r in json.loads((cocktail / "merge.json").read_text())["results"]
            if r["weights"] is not None}


def _dense(project: ProjectResource, domain: str, how) -> llm_mod.LoadedLLM:
    """A dense model: None = the base LLM, a folder = that model, a dict = the two adapters mixed
    with these fixed weights and folded in."""
    if how is None:
        return _llm(project)
    if isinstance(how, dict):
        loaded, mix = _mixture(project, domain)
        mix.set_fixed(how)
        mix.to_dense()
        loaded.model.eval()
        return loaded
    return llm_mod.load(how)


def _weight_plot(table: dict[str, dict[str, float]], title: str, path: Path) -> Path:
    """Heat map of the ingredient's mixing weight per layer (rows) and projection (columns)."""
    from models.report import plot_heatmap

    cells = {(int(p.split(".layers.")[1].split(".")[0]), p.rsplit(".", 1)[1]): w.get("ingredient", np.nan)
             for p, w in table.items() if ".layers." in p}
    layers, projs = sorted({k[0] for k in cells}), sorted({k[1] for k in cells})
    grid = np.full((len(layers), len(projs)), np.nan)
    for (layer, proj), w in cells.items():
        grid[layers.index(layer), projs.index(proj)] = w
    return plot_heatmap(grid, [f"layer {i}" for i in layers], projs, title, "ingredient weight", path)


def build_llm_assets(cfg: ProjectConfig) -> list:
    partitions = domain_partitions(cfg)
    general = sorted(d.name for d in cfg.domains.values() if d.role == "general")

    @dg.asset(deps=[dg.AssetDep("temporal_split", partition_mapping=dg.AllPartitionMapping())],
              code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY, kinds={"pytorch", "peft"}, group_name="llm", op_tags=GPU_TAGS, pool="gpu",
              description=f"One LoRA adapter trained on the train prompts of the general domains "
                          f"({', '.join(general) or 'none configured'}), in PEFT format under adapters/base_spirit.")
    def base_spirit_lora(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
        if not general:
            raise meta.fail("no domain has role: general in the config; the base spirit needs at least one")
        md, version = _train_adapter(context, project, general, project.artifact_dir("adapters", "base_spirit"),
                                     "base_spirit")
        return dg.MaterializeResult(metadata=md, data_version=dg.DataVersion(version))

    @dg.asset(deps=["temporal_split"], partitions_def=partitions, code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY,
              kinds={"pytorch", "peft"}, group_name="llm", op_tags=GPU_TAGS, pool="gpu", backfill_policy=SINGLE_RUN,
              description="The domain's ingredient LoRA, trained from the same base LLM on the domain's text-only "
                          "prompts (TALLRec / CoLLM step 1), in PEFT format under `adapters/ingredient/<domain>`.")
    def ingredient_lora(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
        return per_domain(context, lambda d: _train_adapter(
            context, project, [d], project.artifact_dir("adapters", "ingredient", d), "ingredient"))

    @dg.asset(deps=[base_spirit_lora, ingredient_lora, "temporal_split"], partitions_def=partitions,
              code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY, kinds={"pytorch", "safetensors"}, group_name="llm", op_tags=GPU_TAGS, pool="gpu", backfill_policy=SINGLE_RUN,
              description="RecCocktail: the base spirit and the domain's ingredient mixed per layer and projection "
                          "by weights learned on unlabelled validation prompts (entropy of P(Yes)), the learning "
                          "rate and step picked on other validation rows, folded into one dense model under "
                          "`models/cocktail/<domain>/model`; merge.json holds every candidate and baseline.")
    def cocktail_model(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
        from models.report import plot_curve

        def one(d: str) -> tuple[dict, str]:
            prof = profile(project.profile)
            ms = dict(prof["merge"])
            learn_rows, select_rows = ms.pop("learn_rows"), ms.pop("select_rows")
            settings = merge.MergeSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in ms.items()})
            split, titles = read_split(project, d), _titles(project, d)
            loaded, mix = _mixture(project, d)
            build = _builder(loaded, project.config.domains[d].item_noun, prof["max_prompt_tokens"])
            # validation rows only: the test part is dropped before anything else reads the split
            learn, select, labels = merge.validation_slices(split, titles, build, learn_rows, select_rows, settings.seed)
            context.log.info(f"learning mixing weights of {len(mix.modules)} modules on {len(learn)} unlabelled "
                             f"validation prompts; selecting on {len(select)} others")
            encode = lambda ps: loaded.tokenizer(list(ps), return_tensors="pt", padding=True).to(loaded.device)  # noqa: E731
            t0 = time.perf_counter()
            results = merge.select_merge(mix, lambda: scorer.score(loaded, select), encode, learn, labels,
                                         loaded.yes_id, settings, log=context.log.info)
            learn_s = time.perf_counter() - t0
            best = results[-1]
            merge.apply(mix, best)
            table = mix.weight_table()
            out = project.artifact_dir("models", "cocktail", d)
            heat = _weight_plot(table, f"{d}: RecCocktail ingredient weight (lr {best.lr}, step {best.step})",
                                out / "weights.png")
            curve = plot_curve(best.entropy_curves, "step", "mean binary entropy of P(Yes)",
                               f"{d}: weight learning on unlabelled validation prompts (per lr)", out / "entropy.png")
            (out / "merge.json").write_text(json.dumps(
                {"domain": d, "settings": settings.__dict__, "learn_rows": len(learn), "select_rows": len(select),
                 "results": [r.__dict__ for r in results], "weights": table}, indent=2, default=str))
            model_dir = merge.save_dense(mix, loaded.tokenizer, out / "model")
            digest = data_prep.file_sha256(model_dir / "model.safetensors")
            per_module = [{"module": p, **w} for p, w in table.items()]
            return ({"selected_lr": best.lr, "selected_step": best.step, "learn_s": round(learn_s, 1),
                     **{f"select_auc/{r.method}": round(r.select_auc, 4) for r in results},
                     "task_arithmetic_lambda": next(r.weights["base_spirit"] for r in results
                                                    if r.method == "task_arithmetic"),
                     "candidates": dg.MetadataValue.json(best.candidates),
                     "weights_per_module": dg.MetadataValue.json(per_module),
                     "weights_plot": dg.MetadataValue.path(str(heat)),
                     "entropy_plot": dg.MetadataValue.path(str(curve)),
                     "model": dg.MetadataValue.path(str(model_dir)), "model_sha256": digest}, digest[:16])

        return per_domain(context, one)

    @dg.asset(deps=[base_spirit_lora, ingredient_lora, cocktail_model, "ranking_candidates"], partitions_def=partitions,
              code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY, kinds={"pytorch"}, group_name="llm", op_tags=GPU_TAGS, pool="gpu", backfill_policy=SINGLE_RUN,
              description="Yes-logit scores of the untrained LLM, the base spirit only, the ingredient only "
                          "(TALLRec), RecCocktail, the equal-weight merge and task arithmetic on a seeded sample "
                          "of test rows and candidate lists: scores/llm.parquet.")
    def llm_scores(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
        prof = profile(project.profile)
        base = _llm(project)  # unchanged by scoring: loaded once for every domain of the run

        def one(d: str) -> tuple[dict, str]:
            split, titles, split_sha = read_split(project, d), _titles(project, d), split_sha256(project, d)
            build = _builder(base, project.config.domains[d].item_noun, prof["max_prompt_tokens"])
            point_p, _, rows = prompt_mod.examples(split, titles, build, "test", prof["test_rows"], with_labels=False)
            test = split.filter(pl.col("split") == "test")
            cands = pl.read_parquet(domain_dir(project, d) / "candidates.parquet").sort("row")
            hist = test["history_item_ids"].to_list()
            rank_rows = _ranking_rows(rows, prof)
            groups = [[build([titles[i] for i in hist[r]], titles[c]) for c in cands["candidates"][int(r)]] for r in rank_rows]
            fixed = _fixed_weights(project, d)
            # method -> how to get its dense model: None = the base LLM, a folder, or fixed mixing weights
            methods = {"llm_untrained": None, "base_spirit": fixed["base_only"], "ingredient_tallrec": fixed["ingredient_only"],
                       "reccocktail": project.root / "models" / "cocktail" / d / "model", "equal_weights": fixed["equal_weights"],
                       "task_arithmetic": fixed["task_arithmetic"]}
            out_rows, md, done = [], {}, {}
            for method, how in methods.items():
                key = json.dumps(how, sort_keys=True, default=str)  # task arithmetic at 0.5 = equal weights
                if key not in done:
                    model = base if how is None else _dense(project, d, how)
                    t0 = time.perf_counter()
                    done[key] = (scorer.score(model, point_p),
                                 dict(zip(rank_rows.tolist(), scorer.score_groups(model, groups))))
                    md[f"{method}/score_s"] = round(time.perf_counter() - t0, 1)
                point, ranked = done[key]
                out_rows += [{"method": method, "row": int(r), "score": float(s),
                              "candidate_scores": ranked[int(r)].tolist() if int(r) in ranked else None}
                             for r, s in zip(rows, point)]
            path = domain_dir(project, d, "scores") / "llm.parquet"
            digest = write_scores(path, out_rows, split_sha)
            return ({**md, "test_rows_scored": len(rows), "ranking_lists_scored": len(rank_rows),
                     "test_rows": test.height, "scores_path": dg.MetadataValue.path(str(path)),
                     "scores_sha256": digest}, digest[:16])

        return per_domain(context, one)

    @dg.asset(deps=[ingredient_lora, cocktail_model, "cf_embeddings", "ranking_candidates"], partitions_def=partitions,
              code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY, kinds={"pytorch"}, group_name="llm", op_tags=GPU_TAGS, pool="gpu", backfill_policy=SINGLE_RUN,
              description="CoLLM: the CIE MLP mapping CF vectors (the profile's CF models) into the token space, "
                          "trained on ID prompts on top of a frozen backbone (the ingredient, as published, and "
                          "the RecCocktail model), then scored on the same test rows and lists as llm_scores: "
                          "scores/collm.parquet.")
    def collm_cie(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
        from models.report import plot_curve

        def one(d: str) -> tuple[dict, str]:
            prof = profile(project.profile)
            cp = prof["collm"]
            split, titles, split_sha = read_split(project, d), _titles(project, d), split_sha256(project, d)
            test = split.filter(pl.col("split") == "test")
            cands = pl.read_parquet(domain_dir(project, d) / "candidates.parquet").sort("row")
            noun = project.config.domains[d].item_noun
            backbones = {"ingredient": _fixed_weights(project, d)["ingredient_only"],
                         "cocktail": project.root / "models" / "cocktail" / d / "model"}
            out_rows, md, curves = [], {}, {}
            for backbone in cp["backbones"]:
                for cf_name in cp["cf_models"]:
                    method = f"collm_{cf_name}" + ("" if backbone == "ingredient" else f"_{backbone}")
                    lm = _dense(project, d, backbones[backbone])
                    cf_path = domain_dir(project, d, "cf") / f"{cf_name}.npz"
                    if not cf_path.exists():
                        raise meta.fail(f"{cf_path} is missing: materialize cf_embeddings for {d!r} first")
                    peft = lora_train.add_lora(lm, lora_train.TrainConfig()) if cp["variant"] == "t3" else None
                    cfg = lora_train.TrainConfig(**{**prof["train"], **cp["train"]})
                    torch.manual_seed(cfg.seed)
                    head = collm.CoLLMHead(lm.model, CFModel.load(cf_path, cf_name), lm.yes_id, cp["variant"], peft)
                    text = _builder(lm, noun, prof["max_prompt_tokens"])
                    ids = prompt_mod.PromptBuilder(noun=noun, with_ids=True, max_tokens=prof["max_prompt_tokens"],
                                                   count_tokens=text.count_tokens)
                    tr, ty, _, tr_used = collm.examples(head, lm.tokenizer, split, titles, text, ids, "train",
                                                        prof["train_rows_per_domain"])
                    va, vy, _, _ = collm.examples(head, lm.tokenizer, split, titles, text, ids, "valid", prof["valid_rows"])
                    out = project.artifact_dir("adapters", "collm", d, method)
                    context.log.info(f"{method}: training the CIE ({cp['variant']}) on {len(tr)} prompts "
                                     f"({tr_used.mean():.0%} with IDs), validating on {len(va)}")
                    res = lora_train.train(lm, tr, ty, va, vy, out, cfg, log=context.log.info, head=head)
                    head.load_trained(out / "adapter")
                    if peft is not None:
                        from peft import set_peft_model_state_dict
                        from safetensors.torch import load_file

                        set_peft_model_state_dict(peft, load_file(str(out / "adapter" / "lora" / "adapter_model.safetensors")))
                    te, _, rows, used = collm.examples(head, lm.tokenizer, split, titles, text, ids, "test",
                                                       prof["test_rows"], with_labels=False)
                    t0 = time.perf_counter()
                    head.eval()
                    point = scorer.score_ids(lm, te, embed=head.embed)
                    rank_rows = _ranking_rows(rows, prof)
                    groups = [collm.candidate_tokens(head, lm.tokenizer, test["user_id"][r], test["history_item_ids"][r],
                                                     cands["candidates"][r], titles, text, ids) for r in rank_rows.tolist()]
                    ranked = dict(zip(rank_rows.tolist(), (g.numpy() for g in
                                                           scorer.score_id_groups(lm, groups, embed=head.embed))))
                    md.update({f"{method}/best_valid_auc": round(res.best_valid_auc, 4), f"{method}/steps": res.steps,
                               f"{method}/tokens_per_s": round(res.tokens_per_s, 1),
                               f"{method}/test_id_prompt_share": round(float(used.mean()), 4),
                               f"{method}/score_s": round(time.perf_counter() - t0, 1)})
                    curves[method] = [h["valid_auc"] for h in res.history]
                    out_rows += [{"method": method, "row": int(r), "score": float(s),
                                  "candidate_scores": ranked[int(r)].tolist() if int(r) in ranked else None}
                                 for r, s in zip(rows, point)]
            plot = plot_curve(curves, "evaluation", "validation AUC", f"{d}: CoLLM CIE ({cp['variant']})",
                              project.artifact_dir("adapters", "collm", d) / "valid_auc.png")
            path = domain_dir(project, d, "scores") / "collm.parquet"
            digest = write_scores(path, out_rows, split_sha)
            return ({**md, "variant": cp["variant"], "valid_auc_plot": dg.MetadataValue.path(str(plot)),
                     "scores_path": dg.MetadataValue.path(str(path)), "scores_sha256": digest}, digest[:16])

        return per_domain(context, one)

    return [base_spirit_lora, ingredient_lora, cocktail_model, llm_scores, collm_cie]
