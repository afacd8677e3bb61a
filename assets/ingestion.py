"""Dataset-level assets (Dagster wiring; the work is models/data/ and sql/): raw files into
the warehouse (with quarantine), then labelled interactions, and the quarantine gate."""


import dagster as dg

from assets import _metadata as meta
from models.data import ingest as data_prep
from models.data import warehouse
from models.registry import formats
from models.config import ProjectConfig
from assets._partitions import dataset_partitions
from assets._resources import ProjectResource

CODE_VERSION = meta.code_version(data_prep, formats)


def _raw_metadata(con, ds, rep: data_prep.IngestReport) -> tuple[dict, dict]:
    """(raw_interactions metadata, raw_items metadata) of one ingestion."""
    q_inter = {k.split(":", 1)[1]: v for k, v in rep.quarantined.items() if k.startswith("interaction:")}
    q_items = {k.split(":", 1)[1]: v for k, v in rep.quarantined.items() if k.startswith("item:")}
    # each source file with its sha256 and what its bytes say it is (format, compression)
    common = {"format": ds.format, "source_files": dg.MetadataValue.json(rep.contents)}
    inter = {
        **common, **meta.summary_metadata(warehouse.summarize(con, "raw_interactions", "dataset", ds.name)),
        "rows_read": rep.interaction_rows_read, "quarantined": rep.quarantined_interactions,
        **{f"quarantined/{r}": q_inter.get(r, 0) for r in data_prep.QUARANTINE_REASONS[:-1]},
        "dagster/column_schema": meta.table_schema(con, "raw_interactions"),
        "preview": meta.preview(con, "SELECT * FROM raw_interactions WHERE dataset = $d", {"d": ds.name})}
    items = {
        **common, "dagster/row_count": rep.items_loaded, "rows_read": rep.item_rows_read,
        "duplicate_items_collapsed": rep.duplicate_items_collapsed, "quarantined": sum(q_items.values()),
        **{f"quarantined/{r}": q_items.get(r, 0) for r in ("malformed_line", "missing_item", "item_without_title")},
        "dagster/column_schema": meta.table_schema(con, "raw_items"),
        "preview": meta.preview(con, "SELECT * FROM raw_items WHERE dataset = $d", {"d": ds.name})}
    return inter, items


@meta.classify_failures
def raw_data(context: dg.AssetExecutionContext, project: ProjectResource):
    ds = project.config.datasets[context.partition_key]
    context.log.info(f"ingesting {ds.name} ({ds.format}) from {ds.location}")
    with meta.deterministic(), project.connect() as con:
        rep = data_prep.ingest_dataset(con, ds)
        inter, items = _raw_metadata(con, ds, rep)
        yield dg.MaterializeResult(asset_key="raw_interactions", metadata=inter, data_version=dg.DataVersion(
            meta.table_data_version(con, "raw_interactions", "dataset", ds.name, "user_id, item_id, rating, ts")))
        yield dg.MaterializeResult(asset_key="raw_items", metadata=items, data_version=dg.DataVersion(
            meta.table_data_version(con, "raw_items", "dataset", ds.name, "item_id, title, categories")))


@meta.classify_failures
def interactions(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
    ds = project.config.datasets[context.partition_key]
    with project.connect() as con:
        stats = data_prep.build_interactions(con, ds)
        share, bad, total, by_reason = warehouse.quarantine_share(con, ds.name)
        return dg.MaterializeResult(
            metadata={
                **meta.summary_metadata(warehouse.summarize(con, "interactions", "dataset", ds.name)),
                "label_threshold": ds.label_threshold,
                "duplicates_collapsed": stats["duplicates_collapsed"],
                "quarantined/item_without_title": stats["item_without_title"],
                "quarantined_share_of_input": round(share, 6),
                "quarantined_by_reason": dg.MetadataValue.json(by_reason),
                "dagster/column_schema": meta.table_schema(con, "interactions"),
                "preview": meta.preview(con, "SELECT * FROM interactions WHERE dataset = $d", {"d": ds.name}),
            },
            data_version=dg.DataVersion(meta.table_data_version(
                con, "interactions", "dataset", ds.name, "user_id, item_id, rating, ts, label, title")),
        )


def _quarantine_message(project: ProjectResource, dataset: str, share: float, bad: int, total: int,
                        by_reason: dict, limit: float) -> str:
    if share <= limit:
        return f"{share:.2%} of {dataset}'s interaction rows quarantined ({bad} of {total}); limit {limit:.2%}."
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(by_reason.items(), key=lambda kv: -kv[1])) or "none"
    return (f"dataset {dataset}: {share:.2%} of its interaction rows were quarantined ({bad:,} of {total:,}), "
            f"above the limit of {limit:.2%} (settings.quarantine_max_share in {project.config_path}); rows by "
            f"reason: {reasons}. See them with "
            f"`SELECT reason, detail, source_file, source_row, raw FROM quarantine WHERE dataset = '{dataset}'` "
            f"in {project.root / 'warehouse.duckdb'}; then fix the source file or the dataset's settings "
            f"(fields, rating_range, timestamp_unit, encoding) and re-materialize, or raise the limit.")


def quarantine_share_within_limit(context: dg.AssetCheckExecutionContext,
                                  project: ProjectResource) -> dg.AssetCheckResult:
    op = context.op_execution_context
    dataset = op.partition_key if op.has_partition_key else None
    limit = project.config.quarantine_max_share
    with project.connect(read_only=False) as con:
        results = {d: warehouse.quarantine_share(con, d) for d in ([dataset] if dataset else sorted(project.config.datasets))}
    worst = max(results, key=lambda d: results[d][0])
    share, bad, total, by_reason = results[worst]
    return dg.AssetCheckResult(
        passed=share <= limit, severity=dg.AssetCheckSeverity.ERROR,
        description=_quarantine_message(project, worst, share, bad, total, by_reason, limit),
        metadata={"quarantined_share": round(share, 6), "limit": limit, "quarantined": bad,
                  "input_rows": total, "by_reason": dg.MetadataValue.json(by_reason)})


def build_ingestion_assets(cfg: ProjectConfig) -> list:
    common = dict(partitions_def=dataset_partitions(cfg), code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY,
                  pool="duckdb_writer")
    raw = dg.multi_asset(
        name="raw_data", **common,
        specs=[dg.AssetSpec("raw_interactions", description="Interaction rows that passed validation, one table for "
                            "every dataset (column `dataset`); bad rows are in `quarantine`.",
                            kinds={"duckdb"}, group_name="ingestion"),
               dg.AssetSpec("raw_items", description="Item rows (id, title, categories) that passed validation.",
                            kinds={"duckdb"}, group_name="ingestion")],
    )(raw_data)
    labelled = dg.asset(
        name="interactions", deps=["raw_interactions", "raw_items", "landed_interactions"], kinds={"duckdb"},
        group_name="ingestion", **common,
        description="Typed, de-duplicated (latest rating of a user-item pair wins), labelled "
                    "(rating >= the dataset's label_threshold) interactions with item titles.",
    )(interactions)
    gate = dg.asset_check(
        asset=labelled, blocking=True, name="quarantine_share_within_limit",
        description="Fails (and stops everything downstream) when too many input rows were quarantined: the source "
                    "or its config is probably wrong.",
    )(quarantine_share_within_limit)
    return [raw, labelled, gate]
