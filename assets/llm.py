"""LLM assets, Dagster wiring only, for every task kind of the registry (models/registry/tasks.py:
pointwise, our Yes/No RecCocktail with TALLRec as its ingredient; listwise, RecCocktail as
published): the base spirit LoRA (union of the general domains), one ingredient LoRA per domain,
their cocktail (one dense model) and the scores of every merge method; and CoLLM's CIE on the
pointwise adapters. The work is in models/stages/; each asset reads its profile (with the run's
Launchpad overrides), calls it, and returns the metadata."""

import hashlib
from pathlib import Path
import importlib
import sys

import dagster as dg

from assets import _lineage, _metadata as meta
from models.config import PROJECT_ROOT, ProjectConfig
from models.data import base_spirit
from models.data.workspace import Workspace
from models.profiles import Profile
from models.registry.tasks import TASKS, TaskKind
from models.stages import adapters, cocktail, shards
from models.stages import collm as collm_train
from models.stages.common import load_base
from models.llm.loading import resolve_model_path
from models.stages.task import task as task_of
from assets._partitions import domain_partitions
from assets._run_config import LLMRunConfig, run_profile
from assets._resources import ProjectResource
from assets._gpus import GPUResource, Launch, run_torchrun

# LLM steps share the `gpu` pool (one at a time by default); on Kubernetes (deploy/k8s) each such
# step's pod asks through this tag, which dagster-k8s reads, for the GPUs the `gpu` resource's
# processes use (LLMREC_GPU_PROCESSES; one by default)
GPU_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {
    "nvidia.com/gpu": str(max(1, GPUResource().processes))}}}}}
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


def _with_settings(md: dict, prof: Profile, config: LLMRunConfig, stage: str) -> dict:
    """The stage's metadata, plus the settings it ran with and the run's overrides (lineage)."""
    return meta.metadata_values({**md, "effective_settings": prof.reads(stage),
                                 "profile_overrides": config.overrides})


def _each_domain(context, project: ProjectResource, config: LLMRunConfig, stage: str, run, version_key: str,
                 task: str | None = None, launch: Launch | None = None):
    """`run(workspace, domain, profile, log) -> metadata` for every domain of the run, with the profile
    (after the run's overrides, as `task`'s stages read it) the stage read and the `launch` it ran
    with; the domain must get the task; the data version is `version_key`'s hash."""
    impl = task_of(task) if task else None
    prof = run_profile(project.profile, config, context.log)
    prof = impl.profile(prof) if impl else prof
    ws = Workspace(project.root)

    def one(d: str) -> tuple[dict, str]:
        why = impl.why_not(project.config.domains[d]) if impl else None
        if why:
            raise meta.fail(why)
        md = run(ws, d, prof, context.log.info)
        return _with_settings({**(launch.metadata() if launch else {}), **md}, prof, config, stage), \
            md[version_key][:16]

    return per_domain(context, one)


def _train(context, project: ProjectResource, prof: Profile, config: LLMRunConfig, domains: list[str], role: str,
           kind: TaskKind, launch: Launch) -> tuple[dict, str]:
    """(metadata, data version) of one adapter: trained in process; or by the same trainer under
    `torchrun` on the `gpu` resource's processes (each rank a Dagster Pipes writer, rank 0 reporting);
    or, with LLMREC_TRAIN_PIPES=1, in one subprocess through Pipes. The metadata records the launch."""
    stage = kind.stages[role]
    extras = {"data_dir": project.data_dir, "config_path": project.config_path, "domains": domains, "kind": role,
              "task": kind.name, "profile": prof.model_dump(mode="json")}
    if launch.launcher == "torchrun":
        # the base model converted (the embedded one) or made (the smoke one) once, here, not by every rank
        resolve_model_path(prof.model, Workspace(project.root).models_dir)
        reported = run_torchrun(context, launch, "orchestration.pipes_train", extras, str(PROJECT_ROOT))
    elif project.train_pipes:
        reported = dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT), env=launch.env).run(
            context=context, command=[sys.executable, "-m", "orchestration.pipes_train"], extras=extras,
        ).get_materialize_result()
    else:
        reported = None
    if reported is not None:
        md = {**launch.metadata(), **reported.metadata, **_with_settings({}, prof, config, stage)}
        return md, reported.data_version.value
    md = adapters.train_adapter(Workspace(project.root), project.config, domains, role, kind.name, prof,
                                log=context.log.info)
    return _with_settings({**launch.metadata(), **md}, prof, config, stage), md["adapter_sha256"][:16]


def _in_process(launch: Launch) -> Launch:
    """A step that runs in the step's own process (merging; scoring and CoLLM's CIE on one process): on
    the planned launch's first device, one process."""
    return Launch(launch.devices[:1], 1, launch.backend, "in_process")


def _check(kind: TaskKind, role: str, md: dict) -> dg.AssetCheckResult:
    """The `beats_untrained` check of an adapter (its best validation metric against the untrained LLM's,
    on the same validation rows) or of the cocktail (its selection score against the untrained LLM's, on
    the same selection rows)."""
    impl = task_of(kind.name)
    if role == "cocktail":
        metric = getattr(md.get("select_metric"), "value", md.get("select_metric")) or "score"
        return meta.beats_untrained(
            kind.assets[role], md, "select_score/reccocktail", "untrained_select_score",
            label=f"the selection {metric} of the entropy-guided merge", rows="select_rows", unit=impl.unit,
            advice="The merge only mixes what its adapters learned: check the base spirit's and the ingredient's "
                   "own beats_untrained checks first; with adapters that learned, more selection rows "
                   "(the profile's merge.select_rows) make the choice less noisy.")
    objective = impl.objective
    return meta.beats_untrained(
        kind.assets[role], md, f"best_{objective.metric}", f"untrained_{objective.metric}",
        objective.higher_is_better, label=f"best {impl.metric_label}", rows=f"valid_{impl.unit}", unit=impl.unit,
        advice=f"Look at the curve ({objective.metric}_plot in the metadata): when it is still improving, train "
               "longer (the profile's train.max_steps); when it is flat or noisy, try another train.lr. The smoke "
               "and demo profiles' budgets are too small to learn much: use extended or full for numbers.")


def _base_spirit_body(kind: TaskKind):
    impl = task_of(kind.name)

    @meta.classify_failures
    def base_spirit_asset(context: dg.AssetExecutionContext, project: ProjectResource,
                          config: LLMRunConfig, gpu: GPUResource) -> dg.MaterializeResult:
        names = base_spirit.general_domains(project.config)
        if not names:
            if impl.without_general == "fail":
                raise meta.fail("no domain has role: general in the config; the base spirit needs at least one")
            # a CoLLM-only config (e.g. config/examples/collm_amazon_book.yaml): nothing to train
            context.log.info(cocktail.NO_BASE_SPIRIT)
            return dg.MaterializeResult(metadata={"skipped": cocktail.NO_BASE_SPIRIT},
                                        data_version=dg.DataVersion("none"),
                                        check_results=[_check(kind, "base_spirit", {})])
        prof = impl.profile(run_profile(project.profile, config, context.log))
        md, version = _train(context, project, prof, config, names, "base_spirit", kind, gpu.plan())
        return dg.MaterializeResult(metadata=md, data_version=dg.DataVersion(version),
                                    check_results=[_check(kind, "base_spirit", md)])

    return base_spirit_asset


def _ingredient_body(kind: TaskKind):
    impl = task_of(kind.name)

    @meta.classify_failures
    def ingredient_asset(context: dg.AssetExecutionContext, project: ProjectResource,
                         config: LLMRunConfig, gpu: GPUResource) -> dg.MaterializeResult:
        prof = impl.profile(run_profile(project.profile, config, context.log))
        launch = gpu.plan()

        def one(d: str) -> tuple[dict, str]:
            why = impl.why_not(project.config.domains[d])
            if why:
                raise meta.fail(why)
            return _train(context, project, prof, config, [d], "ingredient", kind, launch)

        result = per_domain(context, one)
        return meta.with_checks(result, _check(kind, "ingredient", result.metadata))

    return ingredient_asset


def _cocktail_body(kind: TaskKind):
    impl = task_of(kind.name)

    @meta.classify_failures
    def cocktail_asset(context: dg.AssetExecutionContext, project: ProjectResource,
                       config: LLMRunConfig, gpu: GPUResource) -> dg.MaterializeResult:
        stage, pcfg = kind.stages["cocktail"], project.config
        if not base_spirit.general_domains(pcfg) and impl.without_general == "skip":  # the ingredient still scores
            result = _each_domain(context, project, config, stage,
                                  lambda ws, d, prof, log: cocktail.without_base_spirit(ws, d, kind.name, log),
                                  "merge_sha256", kind.name, _in_process(gpu.plan()))
        else:
            result = _each_domain(context, project, config, stage,
                                  lambda ws, d, prof, log: cocktail.make_cocktail(ws, pcfg, d, kind.name, prof, log),
                                  "model_sha256", kind.name, _in_process(gpu.plan()))
        return meta.with_checks(result, _check(kind, "cocktail", result.metadata))

    return cocktail_asset


def _scores_body(kind: TaskKind):
    impl = task_of(kind.name)

    @meta.classify_failures
    def scores_asset(context: dg.AssetExecutionContext, project: ProjectResource,
                     config: LLMRunConfig, gpu: GPUResource) -> dg.MaterializeResult:
        base: dict = {}
        launch = gpu.plan()
        if launch.world_size > 1:  # one process per device (or N CPU processes), each a shard of the rows
            launch = Launch(launch.devices, launch.world_size, launch.backend, "shards")
            return _each_domain(context, project, config, kind.stages["scores"],
                                lambda ws, d, prof, log: shards.score_in_shards(
                                    ws, Path(project.config_path), d, kind.name, prof, launch.devices,
                                    launch.world_size, log),
                                "scores_sha256", kind.name, launch)

        def score(ws: Workspace, d: str, prof: Profile, log) -> dict:
            if "llm" not in base:  # unchanged by scoring: loaded once for every domain of the run
                base["llm"] = load_base(ws, prof)
            return impl.score(ws, project.config, d, prof, base["llm"], log)

        return _each_domain(context, project, config, kind.stages["scores"], score, "scores_sha256", kind.name,
                            _in_process(launch))

    return scores_asset


def task_assets(cfg: ProjectConfig, lineage: _lineage.LLMLineage, kind: TaskKind) -> list:
    """The four assets of one task kind (base spirit, ingredient, cocktail, scores); each code version
    covers its code, the model and the profile settings it reads."""
    code = importlib.import_module(kind.implementation.split(":")[0])
    general = ", ".join(base_spirit.general_domains(cfg)) or "none configured"
    common = dict(retry_policy=meta.TRANSIENT_RETRY, group_name=kind.group, op_tags=GPU_TAGS, pool="gpu")
    domain = dict(partitions_def=domain_partitions(cfg), backfill_policy=SINGLE_RUN, **common)

    def spec(role: str, deps: list, modules: tuple, kinds: set, **more) -> dict:
        default = f"{kind.name}: the {role.replace('_', ' ')} ({kind.description})"
        return dict(name=kind.assets[role], deps=deps, kinds=kinds,
                    code_version=lineage.code_version(kind.stages[role], *modules, code),
                    description=kind.descriptions.get(role, default).format(general=general), **more)

    checked = lambda role: [dg.AssetCheckSpec(meta.BEATS_UNTRAINED, asset=kind.assets[role],  # noqa: E731
                                              description=meta.BEATS_UNTRAINED_DOC)]
    base = dg.asset(**spec("base_spirit", [dg.AssetDep("temporal_split", partition_mapping=dg.AllPartitionMapping())],
                           (adapters,), {"pytorch", "peft"}, check_specs=checked("base_spirit"), **common),
                    )(_base_spirit_body(kind))
    ingredient = dg.asset(**spec("ingredient", ["temporal_split"], (adapters,), {"pytorch", "peft"},
                                 check_specs=checked("ingredient"), **domain))(_ingredient_body(kind))
    mixed = dg.asset(**spec("cocktail", [base, ingredient, "temporal_split"], (cocktail,), {"pytorch", "safetensors"},
                            check_specs=checked("cocktail"), **domain))(_cocktail_body(kind))
    scores = dg.asset(**spec("scores", [base, ingredient, mixed, "temporal_split", "ranking_candidates"], (),
                             {"pytorch"}, **domain))(_scores_body(kind))
    return [base, ingredient, mixed, scores]


@meta.classify_failures
def collm_cie(context: dg.AssetExecutionContext, project: ProjectResource,
              config: LLMRunConfig, gpu: GPUResource) -> dg.MaterializeResult:
    launch = gpu.plan()

    def run(ws: Workspace, d: str, prof: Profile, log) -> dict:
        noun = project.config.domains[d].item_noun
        if launch.launcher != "torchrun":
            return collm_train.train_and_score(ws, d, noun, prof, log)
        # every rank trains the CIE (DDP), rank 0 scores and reports, as for the adapters
        resolve_model_path(prof.model, ws.models_dir)
        reported = run_torchrun(context, launch, "orchestration.pipes_train",
                                {"stage": "collm", "data_dir": project.data_dir, "domain": d, "noun": noun,
                                 "profile": prof.model_dump(mode="json")}, str(PROJECT_ROOT))
        return {k: v.value for k, v in reported.metadata.items()}

    return _each_domain(context, project, config, "collm", run, "scores_sha256",
                        launch=launch if launch.launcher == "torchrun" else _in_process(launch))


def build_llm_assets(cfg: ProjectConfig, lineage: _lineage.LLMLineage) -> list:
    """Every registered task kind's assets, and CoLLM's CIE on the pointwise ones."""
    out = [a for kind in TASKS.values() for a in task_assets(cfg, lineage, kind)]
    pointwise = TASKS["pointwise"].assets
    cie = dg.asset(
        name="collm_cie", deps=[pointwise["ingredient"], pointwise["cocktail"], "cf_embeddings", "ranking_candidates"],
        code_version=lineage.code_version("collm", collm_train), kinds={"pytorch"}, retry_policy=meta.TRANSIENT_RETRY,
        group_name=TASKS["pointwise"].group, op_tags=GPU_TAGS, pool="gpu", partitions_def=domain_partitions(cfg),
        backfill_policy=SINGLE_RUN,
        description="CoLLM: the CIE MLP mapping CF vectors (the profile's CF models) into the token space, "
                    "trained on ID prompts on top of a frozen backbone (the ingredient, as published, and the "
                    "RecCocktail model, ours), then scored on the same test rows and lists as llm_scores: "
                    "scores/collm.parquet.",
    )(collm_cie)
    return out + [cie]
