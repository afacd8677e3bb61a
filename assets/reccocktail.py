"""RecCocktail as published (PROTOCOLS section 7), Dagster wiring only: the listwise base spirit
(the general domains, without any user of a cocktail domain), one listwise ingredient per domain,
their entropy-guided cocktail and the scores of every merge method. The work is models/stages/reccocktail.py."""

import dagster as dg

from assets import _lineage, _metadata as meta
from assets.llm import GPU_TAGS, SINGLE_RUN, _each_domain, _with_settings
from models.stages import adapters
from models.data import base_spirit
from models.stages import cocktail
from models.llm import listwise
from models.stages import reccocktail
from models.config import ProjectConfig
from models.data.workspace import Workspace
from orchestration.partitions import domain_partitions
from orchestration.profiles import LLMRunConfig, run_profile
from orchestration.resources import ProjectResource


def _listwise_domain(project: ProjectResource, domain: str) -> None:
    dom = project.config.domains[domain]
    if not dom.listwise or dom.role == "general":
        raise meta.fail(f"domain {domain!r} (role {dom.role}, task {dom.task}) gets no listwise cocktail: the listwise "
                        "assets run on target and cold_start domains with `task: listwise` or `both`")


@meta.classify_failures
def listwise_base_spirit(context: dg.AssetExecutionContext, project: ProjectResource,
                         config: LLMRunConfig) -> dg.MaterializeResult:
    general = base_spirit.general_domains(project.config)
    if not general:
        raise meta.fail("no domain has role: general in the config; the base spirit needs at least one")
    prof = run_profile(project.profile, config, context.log)
    md = reccocktail.train_adapter(Workspace(project.root), project.config, general, "base_spirit", prof,
                                   log=context.log.info)
    return dg.MaterializeResult(metadata=_with_settings(md, prof, config, "listwise_base_spirit"),
                                data_version=dg.DataVersion(md["adapter_sha256"][:16]), check_results=[
        meta.beats_untrained("listwise_base_spirit", md, "best_valid_loss", "untrained_valid_loss", False)])


def _run(project: ProjectResource, work):
    """`work(ws, domain, prof, log) -> metadata` for a listwise domain, in `_each_domain`'s form, with the
    profile's listwise merge settings as its `merge`."""
    def run(ws, d, noun, prof, log):
        _listwise_domain(project, d)
        return work(ws, d, prof.for_listwise(), log)
    return run


@meta.classify_failures
def listwise_ingredient(context: dg.AssetExecutionContext, project: ProjectResource,
                        config: LLMRunConfig) -> dg.MaterializeResult:
    cfg = project.config
    work = _run(project, lambda ws, d, prof, log: reccocktail.train_adapter(ws, cfg, [d], "ingredient", prof, log))
    result = _each_domain(context, project, config, "listwise_ingredient", work, "adapter_sha256")
    return meta.with_checks(result, meta.beats_untrained("listwise_ingredient", result.metadata, "best_valid_loss",
                                                         "untrained_valid_loss", higher_is_better=False))


@meta.classify_failures
def listwise_cocktail(context: dg.AssetExecutionContext, project: ProjectResource,
                      config: LLMRunConfig) -> dg.MaterializeResult:
    cfg = project.config
    work = _run(project, lambda ws, d, prof, log: cocktail.make_cocktail(
        ws, d, cfg.domains[d].item_noun, prof, log, task="listwise", cfg=cfg))
    result = _each_domain(context, project, config, "listwise_cocktail", work, "model_sha256")
    return meta.with_checks(result, meta.beats_untrained("listwise_cocktail", result.metadata,
                                                         "select_score/reccocktail", "untrained_select_score"))


@meta.classify_failures
def listwise_scores(context: dg.AssetExecutionContext, project: ProjectResource,
                    config: LLMRunConfig) -> dg.MaterializeResult:
    cfg, base = project.config, {}

    def score(ws, d, prof, log):
        if "llm" not in base:  # the untrained LLM, loaded once for every domain of the run
            base["llm"] = adapters.load_base(ws, prof)
        return reccocktail.score_methods(ws, cfg, d, prof, base["llm"], log)

    return _each_domain(context, project, config, "listwise_scores", _run(project, score),
                        "scores_sha256")


def build_reccocktail_assets(cfg: ProjectConfig, lineage: _lineage.LLMLineage) -> list:
    common = dict(retry_policy=meta.TRANSIENT_RETRY, group_name="reccocktail", op_tags=GPU_TAGS, pool="gpu")
    domain = dict(partitions_def=domain_partitions(cfg), backfill_policy=SINGLE_RUN, **common)
    general = base_spirit.general_domains(cfg)
    base = dg.asset(
        name="listwise_base_spirit", check_specs=[dg.AssetCheckSpec(meta.BEATS_UNTRAINED, asset="listwise_base_spirit",
                                                    description=meta.BEATS_UNTRAINED_DOC)], deps=[dg.AssetDep("temporal_split", partition_mapping=dg.AllPartitionMapping())],
        code_version=lineage.code_version("listwise_base_spirit", reccocktail, listwise), kinds={"pytorch", "peft"},
        description=f"RecCocktail's base spirit as published: one LoRA on the listwise prompts of the general domains "
                    f"({', '.join(general) or 'none configured'}; each user's validation sample, without any user of "
                    "a cocktail domain), under adapters/listwise_base_spirit; metadata `overlap/<target>/...` says "
                    "what it shares with each target.", **common,
    )(listwise_base_spirit)
    ingredient = dg.asset(
        name="listwise_ingredient", check_specs=[dg.AssetCheckSpec(meta.BEATS_UNTRAINED, asset="listwise_ingredient",
                                                    description=meta.BEATS_UNTRAINED_DOC)], deps=["temporal_split"],
        code_version=lineage.code_version("listwise_ingredient", reccocktail, listwise), kinds={"pytorch", "peft"},
        description="The domain's listwise ingredient LoRA (train lists; a few-shot budget on a cold-start domain), "
                    "from the same base LLM, under adapters/listwise_ingredient/<domain>.", **domain,
    )(listwise_ingredient)
    mixed = dg.asset(
        name="listwise_cocktail", check_specs=[dg.AssetCheckSpec(meta.BEATS_UNTRAINED, asset="listwise_cocktail",
                                                    description=meta.BEATS_UNTRAINED_DOC)], deps=[base, ingredient, "temporal_split"],
        code_version=lineage.code_version("listwise_cocktail", cocktail, reccocktail, listwise),
        kinds={"pytorch", "safetensors"}, **domain,
        description="RecCocktail as published: per-module mixing weights learned by the Shannon entropy at the first "
                    "tokens of each generated answer item on unlabelled validation prompts, picked by NDCG@5 on "
                    "other validation lists (ours: the authors pick on test), folded into one dense model under "
                    "models/listwise_cocktail/<domain>/model, with every baseline (TIES, DARE by PEFT) in merge.json.",
    )(listwise_cocktail)
    scores = dg.asset(
        name="listwise_scores", deps=[base, ingredient, mixed, "temporal_split", "ranking_candidates"],
        code_version=lineage.code_version("listwise_scores", reccocktail, listwise), kinds={"pytorch"}, **domain,
        description="Every merge method and the raw LLM on the evaluation sample's test lists (seeded users, the "
                    "lists of `ranking_candidates`, which the CF models rank too): greedy generation parsed on `||` "
                    "(as published) and the candidate-likelihood ranking (ours): scores/listwise.parquet.",
    )(listwise_scores)
    return [base, ingredient, mixed, scores]
