"""The evaluation report per domain and the summary across domains, with their audit gates.
The report is the only reader of test labels."""

import functools
import json
import math
import shutil
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import polars as pl

from assets import _metadata as meta
from assets.cf import domain_dir, read_split, split_sha256
from models import data_prep, report
from models.config import ProjectConfig
from orchestration.partitions import domain_partitions
from orchestration.profiles import profile
from orchestration.resources import ProjectResource

CODE_VERSION = meta.code_version(report)

# Assets that write method scores, and their file under domains/<d>/scores/. The LLM stages add theirs.
SCORE_SOURCES = {"cf_embeddings": "cf.parquet", "llm_scores": "llm.parquet", "collm_cie": "collm.parquet"}
REQUIRED_SOURCES = {"cf_embeddings"}  # the LLM rows join when llm_scores has run for the domain
CHECKS = ("report_complete", "metric_floors", "no_regression")


def latest_materialization(instance: dg.DagsterInstance, asset: str, partition: str | None, skip: int = 0):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=skip + 1).records
    return records[skip].asset_materialization if len(records) > skip else None


def load_methods(project: ProjectResource, domain: str, n_test: int,
                 log=None) -> tuple[list[report.MethodScores], list[dict]]:
    """Every score file's methods. A file written for an older split (its split_sha256 differs from
    the current split's) is left out with a warning, or fails the report if it is a required source."""
    methods, lineage = [], []
    current = split_sha256(project, domain)
    for asset, filename in SCORE_SOURCES.items():
        path = domain_dir(project, domain, "scores") / filename
        if not path.exists():
            if asset in REQUIRED_SOURCES:
                raise meta.fail(f"{path} is missing: materialize {asset} for domain {domain!r} first")
            continue
        df = pl.read_parquet(path)
        written_for = df["split_sha256"][0] if "split_sha256" in df.columns and df.height else None
        if written_for != current:
            text = (f"{path} was scored on an older split of {domain!r}; materialize {asset} for {domain!r} "
                    "again to bring its methods back into the report")
            if asset in REQUIRED_SOURCES:
                raise meta.fail(text)
            if log:
                log(text + "; left out of this report")
            continue
        lineage.append({"asset": asset, "path": str(path), "sha256": data_prep.file_sha256(path)})
        for name in df["method"].unique(maintain_order=True):
            part = df.filter(pl.col("method") == name).sort("row")
            point = np.full(n_test, np.nan)
            point[part["row"].to_numpy()] = part["score"].to_numpy()
            ranking = None
            listed = part.filter(pl.col("candidate_scores").is_not_null())
            if listed.height:
                width = listed["candidate_scores"].list.len().max()
                ranking = np.full((n_test, width), np.nan)
                ranking[listed["row"].to_numpy()] = np.array(listed["candidate_scores"].to_list(), dtype=np.float64)
            methods.append(report.MethodScores(name, point, ranking, {"asset": asset}))
    return methods, lineage


def _value(result: dict, method: str, subset: str, metric: str) -> float | None:
    est = result.get(method, {}).get(subset, {}).get(metric)
    v = None if est is None or est.get("not_applicable") else est["value"]
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def gate_results(result: dict, expected: list[str], floors: dict, previous: dict | None,
                 tolerance: float) -> list[dg.AssetCheckResult]:
    """The three audit gates on a finished report (pure function of its numbers)."""
    missing = report.missing_metrics(result, expected)
    complete = dg.AssetCheckResult(
        check_name="report_complete", passed=not missing,
        description="every method has every metric on every subset" if not missing else
        f"{len(missing)} metric(s) missing or NaN: {'; '.join(missing[:10])}. A subset with one label "
        "class or no scored rows gives NaN: check the split sizes and that every method scored the test rows.",
        metadata={"missing": dg.MetadataValue.json(missing)})
    below = []
    for method, per_metric in floors.items():
        for metric, floor in per_metric.items():
            v = _value(result, method, "all", metric)
            if v is None or v < float(floor):
                below.append(f"{method} {metric} = {v if v is None else round(v, 4)} < floor {floor}")
    floor_check = dg.AssetCheckResult(
        check_name="metric_floors", passed=not below,
        description=(f"all {sum(len(v) for v in floors.values())} configured floors hold" if not below else
                     "below the floor: " + "; ".join(below) + ". Floors live in settings.evaluation.floors; "
                     "a drop usually means a changed split or a training run that stopped early (see the "
                     "cf_embeddings metadata)."),
        metadata={"below": dg.MetadataValue.json(below), "floors": dg.MetadataValue.json(floors)})
    drops = []
    if previous is not None:
        for method, subsets in result.items():
            for subset, ms in subsets.items():
                for metric in ms:
                    now, before = _value(result, method, subset, metric), _value(previous, method, subset, metric)
                    if now is not None and before is not None and now < before - tolerance:
                        drops.append(f"{method}/{subset}/{metric}: {before:.4f} -> {now:.4f}")
    regression = dg.AssetCheckResult(
        check_name="no_regression", passed=not drops,
        description=("first materialization of this partition: nothing to compare" if previous is None else
                     f"no metric dropped by more than {tolerance}" if not drops else
                     f"{len(drops)} metric(s) dropped by more than {tolerance} since the previous report: "
                     + "; ".join(drops[:10]) + ". Compare the lineage sections of the two reports to see "
                     "which input changed."),
        metadata={"drops": dg.MetadataValue.json(drops), "tolerance": tolerance})
    return [complete, floor_check, regression]


def build_report_assets(cfg: ProjectConfig) -> list:
    partitions = domain_partitions(cfg)

    @dg.asset(
        deps=["temporal_split", "ranking_candidates", *SCORE_SOURCES],
        partitions_def=partitions,
        code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY,
        kinds={"markdown"},
        group_name="evaluation",
        check_specs=[dg.AssetCheckSpec(name, asset="evaluation_report") for name in CHECKS],
        description="Every method by AUC, UAUC, HR@k and NDCG@k on all / warm / cold test rows with "
                    "95 % bootstrap intervals; ROC and metric plots; report.md and metrics.json in "
                    "`reports/<domain>/` with the lineage of every input and the exact settings.",
    )
    def evaluation_report(context: dg.AssetExecutionContext, project: ProjectResource):
        domain = context.partition_key
        pcfg = project.config
        ev = pcfg.evaluation
        split = read_split(project, domain)
        test = split.filter(pl.col("split") == "test")
        methods, lineage = load_methods(project, domain, test.height, log=context.log.warning)
        for name in ("temporal_split", "ranking_candidates"):
            path = domain_dir(project, domain) / ("split.parquet" if name == "temporal_split" else "candidates.parquet")
            lineage.insert(0, {"asset": name, "path": str(path), "sha256": data_prep.file_sha256(path)})
        for item in lineage:
            m = latest_materialization(context.instance, item["asset"], domain)
            item["data_version"] = (m.tags or {}).get("dagster/data_version", "") if m else ""
        evaluate = functools.partial(report.evaluate, test, ks=tuple(int(k) for k in ev["ranking_k"]),
                                     bootstrap_samples=int(ev["bootstrap_samples"]), seed=int(ev["seed"]),
                                     min_subset_rows=int(ev["min_subset_rows"]),
                                     one_row_per_user=pcfg.domains[domain].split.protocol == "leave_one_out")
        result = evaluate(methods)
        common = report.on_common_rows(methods)
        same_rows = None if common is None else (evaluate(common[0]), common[1])
        out = project.artifact_dir("reports", domain)
        plots = {"roc": str(report.plot_roc(test, methods, out / "roc.png")),
                 "metrics": str(report.plot_metrics(result, out / "metrics.png"))}
        settings = {"domain": domain, "profile": project.profile, "llm": profile(project.profile)["model"],
                    "warm_threshold": pcfg.warm_threshold,
                    "history_length": pcfg.history_length, "split": pcfg.domains[domain].split.__dict__,
                    "cf": pcfg.cf, **{k: v for k, v in ev.items() if k != "floors"},
                    "code_version": CODE_VERSION,
                    "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "run_id": context.run_id}
        md_text = report.markdown(domain, test, result, settings, lineage, pcfg.domains[domain].reference, plots,
                                  same_rows)
        (out / "report.md").write_text(md_text)
        payload = {"domain": domain, "metrics": result, "settings": settings, "lineage": lineage,
                   "test_rows": test.height}
        if same_rows is not None:
            payload["same_rows"] = {"rows": same_rows[1], "metrics": same_rows[0]}
        (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=str))
        history = project.artifact_dir("reports", domain, "history") / f"{context.run_id}.json"
        shutil.copyfile(out / "metrics.json", history)

        prev_event = latest_materialization(context.instance, "evaluation_report", domain)
        previous = None
        if prev_event and "metrics_snapshot" in prev_event.metadata:
            prev_path = prev_event.metadata["metrics_snapshot"].value
            try:
                previous = json.loads(open(prev_path).read())["metrics"]
            except FileNotFoundError:
                context.log.warning(f"previous report snapshot {prev_path} is gone; regression gate skipped")
        floors = (ev.get("floors") or {}).get(domain, {})
        checks = gate_results(result, [m.name for m in methods], floors, previous,
                              float(ev["regression_tolerance"]))
        numbers = {f"{m}/{s}/{k}": round(result[m][s][k]["value"], 4)
                   for m in result for s in report.SUBSETS for k in ("auc", "uauc")
                   if not result[m][s][k].get("not_applicable") and result[m][s][k]["value"] is not None
                   and not math.isnan(result[m][s][k]["value"])}
        yield dg.MaterializeResult(
            metadata={
                "report": dg.MetadataValue.md(md_text),
                **numbers,
                "methods": len(methods),
                "test_rows": test.height,
                "report_path": dg.MetadataValue.path(str(out / "report.md")),
                "metrics_json": dg.MetadataValue.path(str(out / "metrics.json")),
                "metrics_snapshot": dg.MetadataValue.path(str(history)),
                "roc_png": dg.MetadataValue.path(plots["roc"]),
                "metrics_png": dg.MetadataValue.path(plots["metrics"]),
                "lineage": dg.MetadataValue.json(lineage),
            },
            check_results=checks,
            data_version=dg.DataVersion(data_prep.file_sha256(out / "metrics.json")[:16]),
        )

    @dg.asset(
        deps=[evaluation_report],
        code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY,
        kinds={"markdown"},
        group_name="evaluation",
        description="One table of every domain's report: AUC and UAUC per method on all / warm / cold "
                    "rows; reports/summary.md, summary.json and summary.png.",
    )
    def evaluation_summary(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
        reports = {}
        for domain in sorted(project.config.domains):
            path = project.root / "reports" / domain / "metrics.json"
            if path.exists():
                reports[domain] = json.loads(path.read_text())
        if not reports:
            raise meta.fail("no evaluation_report has been materialized yet; materialize it for some domains first")
        out = project.artifact_dir("reports")
        text, table = report.summary_markdown(reports)
        png = report.plot_summary(table, out / "summary.png")
        (out / "summary.md").write_text(text)
        (out / "summary.json").write_text(json.dumps(table, indent=2))
        missing = sorted(set(project.config.domains) - set(reports))
        return dg.MaterializeResult(metadata={
            "summary": dg.MetadataValue.md(text),
            "domains": len(reports),
            "domains_without_report": ", ".join(missing) or "none",
            "summary_path": dg.MetadataValue.path(str(out / "summary.md")),
            "summary_png": dg.MetadataValue.path(str(png)),
        })

    return [evaluation_report, evaluation_summary]
