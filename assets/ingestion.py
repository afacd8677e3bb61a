"""Dataset-level assets: raw files into the warehouse (with quarantine), then labelled interactions."""


import dagster as dg

from assets import _metadata as meta
from models import data_prep
from models.config import ProjectConfig
from orchestration.partitions import dataset_partitions
from orchestration.resources import ProjectResource

CODE_VERSION = meta.code_version(data_prep)


def build_ingestion_assets(cfg: ProjectConfig) -> list:
    partitions = dataset_partitions(cfg)

    @dg.multi_asset(
        specs=[
            dg.AssetSpec("raw_interactions", description="Interaction rows that passed validation, "
                         "one table for every dataset (column `dataset`); bad rows are in `quarantine`.",
                         kinds={"duckdb"}, group_name="ingestion"),
            dg.AssetSpec("raw_items", description="Item rows (id, title, categories) that passed validation.",
                         kinds={"duckdb"}, group_name="ingestion"),
        ],
        partitions_def=partitions,
        code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY,
        pool="duckdb_writer",
    )
    def raw_data(context: dg.AssetExecutionContext, project: ProjectResource):
        ds = project.config.datasets[context.partition_key]
        context.log.info(f"ingesting {ds.name} ({ds.format}) from {ds.location}")
        with meta.deterministic(), project.connect() as con:
            rep = data_prep.ingest_dataset(con, ds)
            q_inter = {k.split(":", 1)[1]: v for k, v in rep.quarantined.items() if k.startswith("interaction:")}
            q_items = {k.split(":", 1)[1]: v for k, v in rep.quarantined.items() if k.startswith("item:")}
            files = {p: {"sha256": h} for p, h in rep.files.items()}
            common = {"format": ds.format, "source_files": dg.MetadataValue.json(files)}
            summary = data_prep.summarize(con, "raw_interactions", "dataset", ds.name)
            yield dg.MaterializeResult(
                asset_key="raw_interactions",
                metadata={
                    **common,
                    **meta.summary_metadata(summary),
                    "rows_read": rep.interaction_rows_read,
                    "quarantined": rep.quarantined_interactions,
                    **{f"quarantined/{r}": q_inter.get(r, 0) for r in data_prep.QUARANTINE_REASONS[:-1]},
                    "dagster/column_schema": meta.table_schema(con, "raw_interactions"),
                    "preview": meta.preview(con, "SELECT * FROM raw_interactions WHERE dataset = $d", {"d": ds.name}),
                },
                data_version=dg.DataVersion(meta.table_data_version(
                    con, "raw_interactions", "dataset", ds.name, "user_id, item_id, rating, ts")),
            )
            yield dg.MaterializeResult(
                asset_key="raw_items",
                metadata={
                    **common,
                    "dagster/row_count": rep.items_loaded,
                    "rows_read": rep.item_rows_read,
                    "duplicate_items_collapsed": rep.duplicate_items_collapsed,
                    "quarantined": sum(q_items.values()),
                    **{f"quarantined/{r}": q_items.get(r, 0)
                       for r in ("malformed_line", "missing_item", "item_without_title")},
                    "dagster/column_schema": meta.table_schema(con, "raw_items"),
                    "preview": meta.preview(con, "SELECT * FROM raw_items WHERE dataset = $d", {"d": ds.name}),
                },
                data_version=dg.DataVersion(meta.table_data_version(
                    con, "raw_items", "dataset", ds.name, "item_id, title, categories")),
            )

    @dg.asset(
        deps=["raw_interactions", "raw_items", "landed_interactions"],
        partitions_def=partitions,
        code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY,
        pool="duckdb_writer",
        kinds={"duckdb"},
        group_name="ingestion",
        description="Typed, de-duplicated (latest rating of a user-item pair wins), labelled "
                    "(rating >= the dataset's label_threshold) interactions with item titles.",
    )
    def interactions(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
        ds = project.config.datasets[context.partition_key]
        with project.connect() as con:
            stats = data_prep.build_interactions(con, ds)
            share, bad, total, by_reason = data_prep.quarantine_share(con, ds.name)
            return dg.MaterializeResult(
                metadata={
                    **meta.summary_metadata(data_prep.summarize(con, "interactions", "dataset", ds.name)),
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

    @dg.asset_check(asset=interactions, blocking=True, name="quarantine_share_within_limit",
                    description="Fails (and stops everything downstream) when too many input rows were "
                                "quarantined: the source or its config is probably wrong.")
    def quarantine_share_within_limit(context: dg.AssetCheckExecutionContext,
                                      project: ProjectResource) -> dg.AssetCheckResult:
        dataset = context.op_execution_context.partition_key if context.op_execution_context.has_partition_key else None
        limit = project.config.quarantine_max_share
        with project.connect(read_only=False) as con:
            datasets = [dataset] if dataset else sorted(project.config.datasets)
            results = {d: data_prep.quarantine_share(con, d) for d in datasets}
        worst = max(results, key=lambda d: results[d][0])
        share, bad, total, by_reason = results[worst]
        passed = share <= limit
        top = max(by_reason.items(), key=lambda kv: kv[1]) if by_reason else ("none", 0)
        if passed:
            text = f"{share:.2%} of {worst}'s interaction rows quarantined ({bad} of {total}); limit {limit:.2%}."
        else:
            text = (
                f"{share:.2%} of dataset {worst!r}'s interaction rows were quarantined ({bad} of {total}), "
                f"above the limit of {limit:.2%} (settings.quarantine_max_share in {project.config_path}). "
                f"Most common reason: {top[0]} ({top[1]} rows). See them with "
                f"`SELECT reason, detail, source_file, source_row, raw FROM quarantine WHERE dataset = '{worst}'` "
                f"in {project.root / 'warehouse.duckdb'}; then fix the source file or the dataset's settings "
                f"(fields, rating_range, timestamp_unit, encoding) and re-materialize, or raise the limit."
            )
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=text,
            metadata={"quarantined_share": round(share, 6), "limit": limit, "quarantined": bad,
                      "input_rows": total, "by_reason": dg.MetadataValue.json(by_reason)},
        )

    return [raw_data, interactions, quarantine_share_within_limit]
