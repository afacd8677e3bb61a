"""Jobs per partition kind, and a helper that materializes a domain with its dataset upstream.

`make demo` and the tests run through these, so they record the same runs, materializations and
check results in the Dagster instance that the UI shows."""

from __future__ import annotations

import dagster as dg

from assets._partitions import sync_domain_partitions
from orchestration.recovery import reap_dead_runs

DATASET_ASSETS = dg.AssetSelection.assets("raw_interactions", "raw_items", "interactions")
DOMAIN_ASSETS = dg.AssetSelection.assets("domain_interactions", "temporal_split")
EVALUATION_ASSETS = dg.AssetSelection.assets("ranking_candidates", "cf_embeddings", "evaluation_report")

ingest_dataset_job = dg.define_asset_job(
    "ingest_dataset", selection=DATASET_ASSETS,
    description="Raw files of one dataset into the warehouse, quarantine, labelled interactions.")
prepare_domain_job = dg.define_asset_job(
    "prepare_domain", selection=DOMAIN_ASSETS,
    description="One domain's slice and temporal split with histories and warm/cold flags.")

ingest_landing_job = dg.define_asset_job(
    "ingest_landing", selection=dg.AssetSelection.assets("landed_interactions", "interactions"),
    description="New files from the landing folder appended to one dataset, then its interactions rebuilt "
                "(launched by the landing sensor).")

evaluate_domain_job = dg.define_asset_job(
    "evaluate_domain", selection=EVALUATION_ASSETS,
    description="One domain's ranking candidates, CF baselines and evaluation report (with its gates).")
train_base_spirit_job = dg.define_asset_job(
    "train_base_spirit", selection=dg.AssetSelection.assets("base_spirit_lora"),
    description="The base spirit LoRA on the union of the general domains.")
evaluate_domain_llm_job = dg.define_asset_job(
    "evaluate_domain_llm",
    selection=EVALUATION_ASSETS | dg.AssetSelection.assets("ingredient_lora", "cocktail_model", "llm_scores",
                                                                "collm_cie"),
    description="As evaluate_domain, plus the domain's ingredient LoRA, its cocktail with the base spirit, "
                "CoLLM's CIE and the LLM rows of the report.")
train_listwise_base_spirit_job = dg.define_asset_job(
    "train_listwise_base_spirit", selection=dg.AssetSelection.assets("listwise_base_spirit"),
    description="RecCocktail's listwise base spirit (as published) on the general domains.")
evaluate_domain_listwise_job = dg.define_asset_job(
    "evaluate_domain_listwise",
    selection=EVALUATION_ASSETS | dg.AssetSelection.assets("listwise_ingredient", "listwise_cocktail",
                                                                "listwise_scores"),
    description="As evaluate_domain, plus RecCocktail as published: the domain's listwise ingredient, its "
                "cocktail with the listwise base spirit, every merge method's listwise scores and their report table.")
summarize_job = dg.define_asset_job(
    "summarize", selection=dg.AssetSelection.assets("evaluation_summary"),
    description="The cross-domain summary of every domain's report.")

JOBS = [ingest_dataset_job, ingest_landing_job, prepare_domain_job, evaluate_domain_job, train_base_spirit_job,
        evaluate_domain_llm_job, train_listwise_base_spirit_job, evaluate_domain_listwise_job, summarize_job]


# console log level of in-process runs; `make demo` sets INFO so progress shows without event noise
LOG_LEVEL = "DEBUG"


def _run_config() -> dict:
    return {"loggers": {"console": {"config": {"log_level": LOG_LEVEL}}}}


def _run(defs: dg.Definitions, job_name: str, partition: str, instance: dg.DagsterInstance | None,
         raise_on_error: bool) -> dg.ExecuteInJobResult:
    job = defs.resolve_job_def(job_name)
    if instance is None:
        with dg.DagsterInstance.ephemeral() as eph:
            return _run(defs, job_name, partition, eph, raise_on_error)
    sync_domain_partitions(defs.resources["project"].config, instance)
    # a killed earlier run would keep its pool slot and block this one forever
    reap_dead_runs(instance)
    return job.execute_in_process(partition_key=partition, instance=instance, raise_on_error=raise_on_error,
                                  run_config=_run_config())


def materialize_dataset(defs: dg.Definitions, dataset: str, instance: dg.DagsterInstance | None = None,
                        raise_on_error: bool = True) -> dg.ExecuteInJobResult:
    return _run(defs, ingest_dataset_job.name, dataset, instance, raise_on_error)


def materialize_domain(defs: dg.Definitions, domain: str, instance: dg.DagsterInstance | None = None,
                       raise_on_error: bool = True) -> dg.ExecuteInJobResult:
    return _run(defs, prepare_domain_job.name, domain, instance, raise_on_error)


def evaluate_domain(defs: dg.Definitions, domain: str, instance: dg.DagsterInstance | None = None,
                    raise_on_error: bool = True, with_llm: bool = False,
                    listwise: bool = False) -> dg.ExecuteInJobResult:
    job = evaluate_domain_listwise_job if listwise else evaluate_domain_llm_job if with_llm else evaluate_domain_job
    return _run(defs, job.name, domain, instance, raise_on_error)


def train_base_spirit(defs: dg.Definitions, instance: dg.DagsterInstance | None = None,
                      raise_on_error: bool = True, listwise: bool = False) -> dg.ExecuteInJobResult:
    if instance is not None:
        reap_dead_runs(instance)
    job = train_listwise_base_spirit_job if listwise else train_base_spirit_job
    return defs.resolve_job_def(job.name).execute_in_process(
        instance=instance, raise_on_error=raise_on_error, run_config=_run_config())


def summarize(defs: dg.Definitions, instance: dg.DagsterInstance | None = None,
              raise_on_error: bool = True) -> dg.ExecuteInJobResult:
    if instance is not None:
        reap_dead_runs(instance)
    return defs.resolve_job_def(summarize_job.name).execute_in_process(
        instance=instance, raise_on_error=raise_on_error, run_config=_run_config())
