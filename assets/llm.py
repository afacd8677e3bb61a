"""LLM assets, Dagster wiring only: the base spirit LoRA (union of the general domains), one
ingredient LoRA per domain, their cocktail (one dense model), the LLM scores of every merge method,
and CoLLM's CIE. The work is in models/ (adapters, cocktail, llm_scores, collm_train); each asset
reads its profile (with the run's Launchpad overrides), calls it, and returns the metadata."""

import hashlib
import sys

import dagster as dg

from assets import _lineage, _metadata as meta
from models.stages import adapters
from models.data import base_spirit
from models.stages import cocktail
from models.stages import collm as collm_train
from models.stages import scores as llm_scores
from models.config import PROJECT_ROOT, ProjectConfig
from models.profiles import Profile
from models.data.workspace import Workspace
from orchestration.partitions import domain_partitions
from orchestration.profiles import LLMRunConfig, run_profile
from orchestration.resources import ProjectResource

# LLM steps share the `gpu` pool (one at a time by default); on Kubernetes (deploy/k8s) each such
# step's pod asks for one GPU through this tag, which dagster-k8s reads
GPU_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}
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


def _noun(project: ProjectResource, domain: str) -> str:
    return project.config.domains[domain].item_noun


def _with_settings(md: dict, prof: Profile, config: LLMRunConfig, stage: str) -> dict:
    """The stage's metadata, plus the settings it ran with and the run's overrides (lineage)."""
    return meta.metadata_values({**md, "effective_settings": prof.reads(stage),
                                 "profile_overrides": config.overrides})


def _train(context, project: ProjectResource, prof: Profile, config: LLMRunConfig, domains: dict[str, str],
           kind: str) -> tuple[dict, str]:
    """(metadata, data version) of one adapter, trained in process or, with LLMREC_TRAIN_PIPES=1, by
    the same trainer in a subprocess whose progress and metadata come back over Dagster Pipes."""
    if project.train_pipes:
        extras = {"data_dir": project.data_dir, "config_path": project.config_path, "domains": domains, "kind": kind,
                  "profile": prof.model_dump(mode="json")}
        reported = dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT)).run(
            context=context, command=[sys.executable, "-m", "orchestration.pipes_train"], extras=extras,
        ).get_materialize_result()
        md = {**reported.metadata, **_with_settings({}, prof, config, kind)}
        return md, reported.data_version.value
    md = adapters.train_adapter(Workspace(project.root), domains, kind, prof, log=context.log.info, cfg=project.config)
    return _with_settings(md, prof, config, kind), md["adapter_sha256"][:16]


@meta.classify_failures
def base_spirit_lora(context: dg.AssetExecutionContext, project: ProjectResource,
                     config: LLMRunConfig) -> dg.MaterializeResult:
    general = {d.name: d.item_noun for d in sorted(project.config.domains.values(), key=lambda d: d.name)
               if d.role == "general"}
    if not general:  # a CoLLM-only config (e.g. config/examples/collm_amazon_book.yaml): nothing to train
        context.log.info(cocktail.NO_BASE_SPIRIT)
        return dg.MaterializeResult(metadata={"skipped": cocktail.NO_BASE_SPIRIT}, data_version=dg.DataVersion("none"),
                                    check_results=[meta.beats_untrained("base_spirit_lora", {}, "best_valid_auc",
                                                                        "untrained_valid_auc")])
    md, version = _train(context, project, run_profile(project.profile, config, context.log), config, general,
                         "base_spirit")
    return dg.MaterializeResult(metadata=md, data_version=dg.DataVersion(version), check_results=[
        meta.beats_untrained("base_spirit_lora", md, "best_valid_auc", "untrained_valid_auc")])


@meta.classify_failures
def ingredient_lora(context: dg.AssetExecutionContext, project: ProjectResource,
                    config: LLMRunConfig) -> dg.MaterializeResult:
    prof = run_profile(project.profile, config, context.log)
    result = per_domain(context, lambda d: _train(context, project, prof, config, {d: _noun(project, d)}, "ingredient"))
    return meta.with_checks(result, meta.beats_untrained("ingredient_lora", result.metadata, "best_valid_auc",
                                                         "untrained_valid_auc"))


def _each_domain(context, project: ProjectResource, config: LLMRunConfig, stage: str, run, version_key: str):
    """`run(workspace, domain, item noun, profile, log) -> metadata` for every domain of the run, with
    the profile (after the run's overrides) the stage read; the data version is `version_key`'s hash."""
    prof = run_profile(project.profile, config, context.log)
    ws = Workspace(project.root)

    def one(d: str) -> tuple[dict, str]:
        md = run(ws, d, _noun(project, d), prof, context.log.info)
        return _with_settings(md, prof, config, stage), md[version_key][:16]

    return per_domain(context, one)


@meta.classify_failures
def cocktail_model(context: dg.AssetExecutionContext, project: ProjectResource,
                   config: LLMRunConfig) -> dg.MaterializeResult:
    if not base_spirit.general_domains(project.config):  # TALLRec and CoLLM still run on the ingredient
        result = _each_domain(context, project, config, "cocktail",
                              lambda ws, d, noun, prof, log: cocktail.without_base_spirit(ws, d, log), "merge_sha256")
    else:
        result = _each_domain(context, project, config, "cocktail", cocktail.make_cocktail, "model_sha256")
    return meta.with_checks(result, meta.beats_untrained("cocktail_model", result.metadata, "select_score/reccocktail",
                                                         "untrained_select_score"))


@meta.classify_failures
def llm_scores_asset(context: dg.AssetExecutionContext, project: ProjectResource,
                     config: LLMRunConfig) -> dg.MaterializeResult:
    base: dict = {}

    def score(ws: Workspace, d: str, noun: str, prof: Profile, log) -> dict:
        if "llm" not in base:  # unchanged by scoring: loaded once for every domain of the run
            base["llm"] = adapters.load_base(ws, prof)
        return llm_scores.score_methods(ws, d, noun, prof, base["llm"], log)

    return _each_domain(context, project, config, "llm_scores", score, "scores_sha256")


@meta.classify_failures
def collm_cie(context: dg.AssetExecutionContext, project: ProjectResource,
              config: LLMRunConfig) -> dg.MaterializeResult:
    return _each_domain(context, project, config, "collm", collm_train.train_and_score, "scores_sha256")


def build_llm_assets(cfg: ProjectConfig, lineage: _lineage.LLMLineage) -> list:
    """The LLM assets; each code version covers its code, the model and the profile settings it reads."""
    general = sorted(d.name for d in cfg.domains.values() if d.role == "general")
    common = dict(retry_policy=meta.TRANSIENT_RETRY, group_name="llm", op_tags=GPU_TAGS, pool="gpu")
    domain = dict(partitions_def=domain_partitions(cfg), backfill_policy=SINGLE_RUN, **common)
    base = dg.asset(
        name="base_spirit_lora", check_specs=[dg.AssetCheckSpec(meta.BEATS_UNTRAINED, asset="base_spirit_lora",
                                                    description=meta.BEATS_UNTRAINED_DOC)], deps=[dg.AssetDep("temporal_split", partition_mapping=dg.AllPartitionMapping())],
        code_version=lineage.code_version("base_spirit", adapters), kinds={"pytorch", "peft"}, **common,
        description=f"One LoRA adapter trained on the train prompts of the general domains "
                    f"({', '.join(general) or 'none configured'}; without any user of a cocktail domain), in PEFT "
                    "format under adapters/base_spirit; metadata `overlap/<target>/...` says what its rows share "
                    "with each target (our pointwise adaptation of RecCocktail's base spirit).",
    )(base_spirit_lora)
    ingredient = dg.asset(
        name="ingredient_lora", check_specs=[dg.AssetCheckSpec(meta.BEATS_UNTRAINED, asset="ingredient_lora",
                                                    description=meta.BEATS_UNTRAINED_DOC)], deps=["temporal_split"], code_version=lineage.code_version("ingredient", adapters),
        kinds={"pytorch", "peft"}, **domain,
        description="The domain's ingredient LoRA, trained from the same base LLM on the domain's text-only "
                    "prompts (TALLRec / CoLLM step 1), in PEFT format under `adapters/ingredient/<domain>`.",
    )(ingredient_lora)
    mixed = dg.asset(
        name="cocktail_model", check_specs=[dg.AssetCheckSpec(meta.BEATS_UNTRAINED, asset="cocktail_model",
                                                    description=meta.BEATS_UNTRAINED_DOC)], deps=[base, ingredient, "temporal_split"],
        code_version=lineage.code_version("cocktail", cocktail), kinds={"pytorch", "safetensors"}, **domain,
        description="RecCocktail: the base spirit and the domain's ingredient mixed per layer and projection by "
                    "weights learned on unlabelled validation prompts (entropy of P(Yes), our pointwise form), the "
                    "learning rate and step picked on other validation rows, folded into one dense model under "
                    "`models/cocktail/<domain>/model`; merge.json holds every candidate and baseline.",
    )(cocktail_model)
    scores = dg.asset(
        name="llm_scores", deps=[base, ingredient, mixed, "ranking_candidates"],
        code_version=lineage.code_version("llm_scores", llm_scores), kinds={"pytorch"}, **domain,
        description="Yes-logit scores of the untrained LLM and of every merge method (base spirit only, "
                    "ingredient only = TALLRec, equal weights, task arithmetic, RecCocktail) on a seeded sample "
                    "of test rows and candidate lists: scores/llm.parquet.",
    )(llm_scores_asset)
    cie = dg.asset(
        name="collm_cie", deps=[ingredient, mixed, "cf_embeddings", "ranking_candidates"],
        code_version=lineage.code_version("collm", collm_train), kinds={"pytorch"}, **domain,
        description="CoLLM: the CIE MLP mapping CF vectors (the profile's CF models) into the token space, "
                    "trained on ID prompts on top of a frozen backbone (the ingredient, as published, and the "
                    "RecCocktail model, ours), then scored on the same test rows and lists as llm_scores: "
                    "scores/collm.parquet.",
    )(collm_cie)
    return [base, ingredient, mixed, scores, cie]
