"""New interaction files dropped in the landing folder, appended to their dataset exactly once."""

from pathlib import Path

import dagster as dg

from assets import _metadata as meta
from models.data import ingest as data_prep
from models.registry import formats
from models.config import ProjectConfig
from assets._partitions import dataset_partitions
from assets._resources import ProjectResource

CODE_VERSION = meta.code_version(data_prep, formats)


class LandingConfig(dg.Config):
    """The files to ingest (paths under `<landing>/<dataset>/`) with the sha256 the sensor saw;
    empty: every complete-looking file in the dataset's landing folder."""

    files: list[str] = []
    sha256: list[str] = []


@meta.classify_failures
def landed_interactions(context: dg.AssetExecutionContext, config: LandingConfig,
                        project: ProjectResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    if config.sha256 and len(config.sha256) != len(config.files):
        raise meta.fail("run config: `sha256` must have one entry per file (or be empty)")
    paths = ([Path(f) for f in config.files] if config.files
             else data_prep.landing_candidates(project.landing, dataset))
    if not paths:
        context.log.info(f"nothing in {project.landing / dataset}")
    reports = []
    with meta.deterministic(), project.connect() as con:
        for i, path in enumerate(paths):
            if not path.is_file():
                raise meta.fail(f"landing file {path} is gone; it was moved or deleted after the sensor saw it")
            rep = data_prep.ingest_landed(con, project.config, dataset, path,
                                          config.sha256[i] if config.sha256 else None)
            if rep.already_ingested_as:
                context.log.info(f"{path.name}: same content as {rep.already_ingested_as!r}, ingested before; skipped")
            else:
                context.log.info(f"{path.name}: {rep.rows_loaded} of {rep.rows_read} rows appended, "
                                 f"quarantined {rep.quarantined or 'none'}; touches {rep.touched_domains}")
            reports.append(rep)
        total = con.execute("SELECT count(*), coalesce(sum(rows_loaded), 0) FROM landed_files WHERE dataset = $d",
                            {"d": dataset}).fetchone()
    new = [r for r in reports if not r.already_ingested_as]
    touched = sorted({d for r in new for d in r.touched_domains})
    return dg.MaterializeResult(
        metadata={
            "files_ingested": len(new),
            "files_skipped_as_duplicates": len(reports) - len(new),
            "rows_appended": sum(r.rows_loaded for r in new),
            "rows_quarantined": sum(sum(r.quarantined.values()) for r in new),
            "touched_domains": dg.MetadataValue.json(touched),
            "files": dg.MetadataValue.json([
                {"file": r.file_name, "sha256": r.sha256, "rows_read": r.rows_read, "rows_loaded": r.rows_loaded,
                 "quarantined": r.quarantined, "duplicate_of": r.already_ingested_as} for r in reports]),
            "landed_files_total": total[0],
            "landed_rows_total": int(total[1]),
            "landing_folder": dg.MetadataValue.path(str(project.landing / dataset)),
        },
        data_version=dg.DataVersion(f"{total[0]}-{int(total[1])}"),
    )


def build_landing_assets(cfg: ProjectConfig) -> list:
    return [dg.asset(
        name="landed_interactions", partitions_def=dataset_partitions(cfg), code_version=CODE_VERSION,
        retry_policy=meta.TRANSIENT_RETRY, pool="duckdb_writer", kinds={"duckdb"}, group_name="ingestion",
        description="Interaction files dropped in `<landing>/<dataset>/` (any of the dataset's formats), "
                    "appended to raw_interactions once per content hash (table landed_files); bad rows go "
                    "to quarantine with stage 'landing'. The landing sensor launches it; its metadata lists "
                    "the domains the new rows touch, which the domain_refresh sensor then refreshes.",
    )(landed_interactions)]
