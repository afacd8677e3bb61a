"""Domain-level assets (Dagster wiring; the work is models/data/ and sql/): a domain's slice
of its dataset, then its temporal split with histories, and the gate that it can train a model."""


import dagster as dg
import pyarrow.parquet as pq

from assets import _metadata as meta
from models.data import ingest as data_prep
from models.core.files import file_sha256
from models.data import splits
from models.data import warehouse
from models.config import ProjectConfig
from models.data.workspace import Workspace
from assets._partitions import domain_partitions
from assets._resources import ProjectResource

CODE_VERSION = meta.code_version(data_prep)


@meta.classify_failures
def domain_interactions(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
    dom = project.config.domains[context.partition_key]
    with project.connect() as con:
        n = splits.build_domain(con, dom)
        if n == 0:
            raise meta.fail(
                f"domain {dom.name!r} selects no rows of dataset {dom.dataset!r} "
                f"(filter category={dom.category!r}); check domains.{dom.name}.filter in the config")
        return dg.MaterializeResult(
            metadata={
                "dataset": dom.dataset, "category": dom.category or "all", "role": dom.role,
                "item_noun": dom.item_noun,
                **meta.summary_metadata(warehouse.summarize(con, "domain_interactions", "domain", dom.name)),
                "dagster/column_schema": meta.table_schema(con, "domain_interactions"),
                "preview": meta.preview(con, "SELECT * FROM domain_interactions WHERE domain = $d", {"d": dom.name}),
            },
            data_version=dg.DataVersion(meta.table_data_version(
                con, "domain_interactions", "domain", dom.name, "user_id, item_id, rating, ts, label, title")),
        )


def _split_metadata(cfg: ProjectConfig, dom, stats: dict) -> dict:
    md = {"protocol": dom.split.protocol, "protocol_params": dg.MetadataValue.json(  # date_cutoff's days as ISO text
              {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in dom.split.params.items()}),
          "warm_threshold": cfg.warm_threshold,
          "warm_rule": f"user and item each have more than {cfg.warm_threshold} train records",
          "history_length": cfg.history_length,
          "dagster/row_count": sum(stats[s]["rows"] for s in splits.SPLITS)}
    for split in splits.SPLITS:
        s = stats[split]
        md.update({f"{split}/{key}": s[key] for key in ("rows", "users", "items", "not_cold", "cold", "warm")})
        md[f"{split}/positive_rate"] = round(s["positive_rate"], 4)
        md[f"{split}/time_range"] = f"{meta.iso(s['ts_min'])} .. {meta.iso(s['ts_max'])}"
    return md


@meta.classify_failures
def temporal_split(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
    cfg = project.config
    dom = cfg.domains[context.partition_key]
    out = Workspace(project.root).split_path(dom.name)
    with project.connect() as con:
        origin = None
        if dom.split.protocol == "month_window":
            origin = splits.origin_month(con, "interactions", "dataset", dom.dataset, dom.split)
        stats = splits.build_split(con, dom.name, dom.split, out, origin=origin,
                                      warm_threshold=cfg.warm_threshold, history_length=cfg.history_length)
        for split in splits.SPLITS:
            context.log.info(f"{dom.name} {split}: {stats[split]['rows']} rows")
        if any(stats[s]["rows"] == 0 for s in splits.SPLITS):
            raise meta.fail(f"domain {dom.name!r}: the {dom.split.protocol} protocol left an empty split "
                            f"({ {s: stats[s]['rows'] for s in splits.SPLITS} }); check its split settings")
        md = {**_split_metadata(cfg, dom, stats),
              "preview": meta.preview(con, "SELECT * FROM read_parquet($path)", {"path": str(out)})}
    digest = file_sha256(out)
    md.update({"path": dg.MetadataValue.path(str(out)), "size_bytes": out.stat().st_size, "sha256": digest,
               "dagster/column_schema": meta.arrow_schema(pq.read_schema(out))})
    return dg.MaterializeResult(metadata=md, data_version=dg.DataVersion(digest[:16]))


def split_trainable(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
    domain = context.op_execution_context.partition_key
    dom = project.config.domains[domain]
    stats = splits.split_label_counts(Workspace(project.root).split_path(domain))
    problems = [f"{s} has {stats[s][1]} positive and {stats[s][0]} negative rows"
                for s in ("train", "valid") if min(stats[s]) == 0]
    if sum(stats["test"]) == 0:
        problems.append("test has no rows")
    threshold = project.config.datasets[dom.dataset].label_threshold
    return dg.AssetCheckResult(
        passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
        description=(f"train, valid and test usable ({stats})" if not problems else
                     f"domain {domain!r} cannot be trained on: {'; '.join(problems)}. A label is "
                     f"rating >= {threshold} (datasets.{dom.dataset}.label_threshold): check that the "
                     f"ratings and the threshold match, and that the split settings give each part rows "
                     f"of both kinds; then materialize temporal_split again. Training downstream is skipped."),
        metadata={f"{s}/{k}": stats[s][i] for s in splits.SPLITS for i, k in enumerate(("negatives", "positives"))})


def build_split_assets(cfg: ProjectConfig) -> list:
    common = dict(partitions_def=domain_partitions(cfg), code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY,
                  pool="duckdb_writer", group_name="domains")
    sliced = dg.asset(
        name="domain_interactions", kinds={"duckdb"}, **common,
        # every dataset partition upstream: Dagster's static dataset->domain mapping cannot target the
        # dynamic domain partitions; the asset reads only its own dataset (metadata `dataset`)
        deps=[dg.AssetDep("interactions", partition_mapping=dg.AllPartitionMapping())],
        description="One domain's interactions: all of its dataset, or the items of one category.",
    )(domain_interactions)
    split = dg.asset(
        name="temporal_split", deps=[sliced], kinds={"duckdb", "parquet"}, **common,
        description="Train/valid/test rows by the domain's split protocol, each with the last `history_length` "
                    "earlier positive items, the not_cold and warm flags. Written to "
                    "`<data dir>/domains/<domain>/split.parquet`.",
    )(temporal_split)
    gate = dg.asset_check(
        asset=split, blocking=True, name="split_trainable",
        description="Blocks training and scoring downstream when the split cannot train or validate a model: "
                    "both label classes in train and valid, and test rows.",
    )(split_trainable)
    return [sliced, split, gate]
