"""Jobs per partition kind, and a helper that materializes a domain with its dataset upstream.

`make demo` and the tests run through these, so they record the same runs, materializations and
check results in the Dagster instance that the UI shows."""

from __future__ import annotations

import dagster as dg

DATASET_ASSETS = dg.AssetSelection.assets("raw_interactions", "raw_items", "interactions")
DOMAIN_ASSETS = dg.AssetSelection.assets("domain_interactions", "temporal_split")

ingest_dataset_job = dg.define_asset_job(
    "ingest_dataset", selection=DATASET_ASSETS,
    description="Raw files of one dataset into the warehouse, quarantine, labelled interactions.")
prepare_domain_job = dg.define_asset_job(
    "prepare_domain", selection=DOMAIN_ASSETS,
    description="One domain's slice and temporal split with histories and warm/cold flags.")

JOBS = [ingest_dataset_job, prepare_domain_job]


def _run(defs: dg.Definitions, job_name: str, partition: str, instance: dg.DagsterInstance | None,
         raise_on_error: bool) -> dg.ExecuteInJobResult:
    job = defs.resolve_job_def(job_name)
    return job.execute_in_process(partition_key=partition, instance=instance, raise_on_error=raise_on_error)


def materialize_dataset(defs: dg.Definitions, dataset: str, instance: dg.DagsterInstance | None = None,
                        raise_on_error: bool = True) -> dg.ExecuteInJobResult:
    return _run(defs, ingest_dataset_job.name, dataset, instance, raise_on_error)


def materialize_domain(defs: dg.Definitions, domain: str, instance: dg.DagsterInstance | None = None,
                       raise_on_error: bool = True) -> dg.ExecuteInJobResult:
    return _run(defs, prepare_domain_job.name, domain, instance, raise_on_error)
