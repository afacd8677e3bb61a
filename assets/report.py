"""The evaluation report per domain and the summary across domains, with their audit gates
(Dagster wiring; the report itself is models/reporting/report.py). The report is the only reader of test labels."""

import json
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl

from assets import _lineage, _metadata as meta
from models.data import base_spirit
from models.core.files import file_sha256
from models.core import fingerprint
from models.reporting import listwise as listwise_report
from models.reporting import next_item as next_item_report
from models.reporting import report
from models.reporting import sanity
from models.config import PROJECT_ROOT, ProjectConfig
from models.data.workspace import Workspace
from assets._partitions import domain_partitions
from models.profiles import get_profile
from models.registry.tasks import TASKS
from assets._resources import ProjectResource

CODE_VERSION = meta.code_version(report, next_item_report)
CHECKS = ("report_complete", "metric_floors", "no_regression")  # gates (ERROR); the sanity guards WARN


def latest_materialization(instance: dg.DagsterInstance, asset: str, partition: str | None, skip: int = 0):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=skip + 1).records
    return records[skip].asset_materialization if len(records) > skip else None


def _value(result: dict, frame: str, method: str, subset: str, metric: str) -> float | None:
    return report.point(result.get(frame, {}).get(method, {}).get(subset, {}).get(metric))


def _same_frames(payload: dict, previous: dict) -> list[str]:
    """The frames of two reports that rest on the same rows (or lists): only they can be compared."""
    now, before = payload.get("frames", {}), previous.get("frames", {})
    return [f for f in now if f in before and now[f]["positions"] == before[f]["positions"]]


def gate_results(payload: dict, floors: dict, previous: dict | None, tolerance: float) -> list[dg.AssetCheckResult]:
    """The three audit gates on a finished report (pure function of its metrics.json `payload` and the
    previous report's)."""
    result = payload["metrics"]
    missing = report.missing_metrics(result, payload["frames"])
    complete = dg.AssetCheckResult(
        check_name="report_complete", passed=not missing,
        description="every method has every metric on every subset of its frames" if not missing else
        f"{len(missing)} metric(s) missing or NaN: {'; '.join(missing[:10])}. A subset with one label "
        "class or no scored rows gives NaN: check the split sizes and that every method scored the test rows.",
        metadata={"missing": dg.MetadataValue.json(missing)})
    below = []
    for method, per_metric in floors.items():
        for metric, floor in per_metric.items():
            frame = "all_lists" if "@" in metric else "all"
            v = _value(result, frame, method, "all", metric)
            if v is None or v < float(floor):
                info = payload["frames"].get(frame, {})
                n = info.get("lists") or info.get("rows")
                where = f"on the `{frame}` frame" + (f" ({n:,} {'lists' if info.get('lists') else 'rows'})" if n else "")
                below.append(f"{method}'s {metric} {where} is " + ("missing" if v is None else f"{v:.4f}")
                             + f", below its floor {floor}")
    floor_check = dg.AssetCheckResult(
        check_name="metric_floors", passed=not below,
        description=(f"all {sum(len(v) for v in floors.values())} configured floors hold" if not below else
                     "; ".join(below) + ". Floors live in settings.evaluation.floors; "
                     "a drop usually means a changed split or a training run that stopped early (see the "
                     "cf_embeddings metadata)."),
        metadata={"below": dg.MetadataValue.json(below), "floors": dg.MetadataValue.json(floors)})
    same = [] if previous is None else _same_frames(payload, previous)
    drops = [f"{frame}/{method}/{subset}/{metric}: {before:.4f} -> {now:.4f}"
             for frame in same for method, subsets in result[frame].items() for subset, ms in subsets.items()
             for metric in ms
             for now, before in [(_value(result, frame, method, subset, metric),
                                  _value(previous["metrics"], frame, method, subset, metric))]
             if now is not None and before is not None and now < before - tolerance]
    regression = dg.AssetCheckResult(
        check_name="no_regression", passed=not drops,
        description=("first materialization of this partition: nothing to compare" if previous is None else
                     "no frame rests on the previous report's rows: nothing to compare" if not same else
                     f"no metric dropped by more than {tolerance} (frames {', '.join(same)})" if not drops else
                     f"{len(drops)} metric(s) dropped by more than {tolerance} since the previous report: "
                     + "; ".join(drops[:10]) + ". Compare the lineage sections of the two reports to see "
                     "which input changed."),
        metadata={"drops": dg.MetadataValue.json(drops), "tolerance": tolerance})
    return [complete, floor_check, regression]


def sanity_results(findings: list[dict]) -> list[dg.AssetCheckResult]:
    """One WARN check per kind of sanity guard (models/reporting/sanity.py): what was found, in sentences."""
    out = []
    for check, passes in sanity.CHECKS.items():
        found = [f["text"] for f in findings if f["check"] == check]
        out.append(dg.AssetCheckResult(
            check_name=check, passed=not found, severity=dg.AssetCheckSeverity.WARN,
            description=passes if not found else
            f"{len(found)} finding(s): " + "; ".join(found[:6]) + ". The report's \"Sanity checks\" lists them; "
            "read these methods' numbers only after ruling out a bug.",
            metadata={"findings": dg.MetadataValue.json(found)}))
    return out


def _lineage_of_inputs(context, ws: Workspace, domain: str, scores_lineage: list[dict]) -> list[dict]:
    """Every input file of the report with its sha256 and the data version its asset recorded."""
    files = [{"asset": "ranking_candidates", "path": str(ws.domain(domain) / "candidates.parquet")},
             {"asset": "temporal_split", "path": str(ws.split_path(domain))}]
    lineage = [{**f, "sha256": file_sha256(f["path"])} for f in files] + scores_lineage
    for item in lineage:
        m = latest_materialization(context.instance, item["asset"], None if item.get("unpartitioned") else domain)
        item["data_version"] = (m.tags or {}).get("dagster/data_version", "") if m else ""
    return lineage


def _settings(context, project: ProjectResource, domain: str) -> dict:
    """The exact settings and environment the report records beside its numbers."""
    pcfg, ev = project.config, project.config.evaluation
    return {"domain": domain, "profile": project.profile, "llm": get_profile(project.profile).model,
            "warm_threshold": pcfg.warm_threshold, "history_length": pcfg.history_length,
            "split": pcfg.domains[domain].split.__dict__, "cf": pcfg.cf_for(domain),
            **{k: v for k, v in ev.items() if k != "floors"}, "code_version": CODE_VERSION,
            "environment": _lineage.environment(PROJECT_ROOT),
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "run_id": context.run_id}


def _previous_report(context, domain: str) -> dict | None:
    """The previous report's metrics.json (its snapshot), when it has this report's layout (frames)."""
    prev = latest_materialization(context.instance, "evaluation_report", domain)
    if not prev or "metrics_snapshot" not in prev.metadata:
        return None
    record = fingerprint.read_json(prev.metadata["metrics_snapshot"].value)
    if record is None:
        context.log.warning(f"previous report snapshot {prev.metadata['metrics_snapshot'].value} is gone; "
                            "regression gate skipped")
    return record if record is not None and "frames" in record else None


# each task kind's base spirit: its adapter folder -> the asset that trains it (its training_rows.parquet is the
# overlap's input)
def base_spirit_assets() -> dict[str, str]:
    return {t.adapter_folders["base_spirit"]: t.assets["base_spirit"] for t in TASKS.values()}


def list_tasks() -> list:
    """The task kinds whose scores are ranked lists (RecCocktail's)."""
    return [t for t in TASKS.values() if t.report_as == "lists"]


@meta.classify_failures
def evaluation_report(context: dg.AssetExecutionContext, project: ProjectResource):
    domain, pcfg = context.partition_key, project.config
    ev, ws, dom = pcfg.evaluation, Workspace(project.root), pcfg.domains[domain]
    test = ws.read_split(domain).filter(pl.col("split") == "test")
    methods, scores_lineage = report.load_scores(ws, domain, test.height, log=context.log.warning)
    overlaps = {kind: base_spirit.overlap_of(ws, pcfg, kind, domain)
                for kind in base_spirit_assets() if dom.role != "general"}
    loaded = {t.name: listwise_report.load(ws, domain, test, t.scores_family, t.assets["scores"], log=context.log.warning)
              for t in list_tasks()}
    lists = {name: ls for name, (ls, _) in loaded.items() if ls}
    lw_lineage = [entry for _, entry in loaded.values() if entry]
    standings, ni_lineage = next_item_report.load(ws, domain, test.height, ev, log=context.log.warning)
    lw_lineage += [ni_lineage] if ni_lineage else []
    extra = {"base_spirit_overlap": {k: v for k, v in overlaps.items() if v is not None}}
    rows_files = [{"asset": base_spirit_assets()[kind], "path": str(p), "sha256": file_sha256(p),
                   "unpartitioned": True}
                  for kind in extra["base_spirit_overlap"] if (p := ws.adapter_dir(kind) / base_spirit.ROWS_FILE)]
    lineage = _lineage_of_inputs(context, ws, domain,
                                 scores_lineage + lw_lineage + rows_files)
    sections = (base_spirit.overlap_markdown(extra["base_spirit_overlap"])
                + report.pointwise_cocktail_note([m.name for m in methods]))
    backbone = get_profile(project.profile).model
    written = report.write_report(ws.reports_dir(domain), domain, test, methods, _settings(context, project, domain),
                                  lineage, dom.reference, ev, dom.split.protocol == "leave_one_out", context.run_id,
                                  sections=sections, extra=extra, lists=lists,
                                  next_item=any(dom.has_task(t.name) for t in list_tasks()),
                                  list_labels=listwise_report.LABELS,
                                  published={"listwise": listwise_report.published_markdown(dom.reference, backbone)},
                                  standings=standings)
    payload = written.payload
    checks = gate_results(payload, (ev.get("floors") or {}).get(domain, {}), _previous_report(context, domain),
                          float(ev["regression_tolerance"])) + sanity_results(payload["sanity"])
    metric_columns, metric_rows = report.metrics_table(payload)
    claims = report.claims_table(payload)
    # what a user looks for first: the report, every estimate as one table, the claims, a few numbers to
    # plot over time; the rest (intervals, counts, comparisons) is in metrics.json, linked below
    yield dg.MaterializeResult(
        metadata={"report": dg.MetadataValue.md(meta.embed_images(written.markdown, written.report_path.parent)),
                  "metrics": meta.table(metric_rows, ["frame", "method", "subset", "n", *metric_columns],
                                        {"n": "rows (or lists) of the frame's subset",
                                         "frame": "see `frames` below and the report's opening"}),
                  **({"claims": meta.table(claims, list(claims[0]))} if claims else {}),
                  **report.headline_numbers(payload),
                  **{f"{kind}_overlap/{k}": v for kind, stats in extra["base_spirit_overlap"].items()
                     for k, v in stats.items()},
                  "methods": len(methods), "test_rows": test.height,
                  "frames": dg.MetadataValue.json({n: f["short"] for n, f in payload["frames"].items()}),
                  **meta.metadata_values({"report_path": written.report_path, "metrics_json": written.metrics_path,
                                          "metrics_snapshot": written.history_path,
                                          **{f"{k}_png": Path(v) for k, v in written.plots.items()},
                                          "lineage": lineage},
                                         show_plots=False)},  # the report's Markdown shows them
        check_results=checks, data_version=dg.DataVersion(file_sha256(written.metrics_path)[:16]))


@meta.classify_failures
def evaluation_summary(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
    ws = Workspace(project.root)
    reports = {d: r for d in sorted(project.config.domains)
               if (r := fingerprint.read_json(ws.reports_dir(d) / "metrics.json")) is not None}
    if not reports:
        raise meta.fail("no evaluation_report has been materialized yet; materialize it for some domains first")
    out = ws.reports_dir()
    text, table = report.summary_markdown(reports)
    png = report.plot_summary(table, out / "summary.png")
    text += f"\n![summary]({png.name})\n"
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(table, indent=2))
    missing = sorted(set(project.config.domains) - set(reports))
    return dg.MaterializeResult(metadata={
        "summary": dg.MetadataValue.md(meta.embed_images(text, out)), "domains": len(reports),
        "domains_without_report": ", ".join(missing) or "none",
        **meta.metadata_values({"summary_path": out / "summary.md", "summary_png": png}, show_plots=False)})


def build_report_assets(cfg: ProjectConfig) -> list:
    common = dict(code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY, kinds={"markdown"},
                  group_name="evaluation")
    domain_report = dg.asset(
        name="evaluation_report", deps=["temporal_split", "ranking_candidates", *report.score_sources(),
                                        *(t.assets["scores"] for t in list_tasks()), *base_spirit_assets().values()],
        partitions_def=domain_partitions(cfg), **common,
        check_specs=[dg.AssetCheckSpec(name, asset="evaluation_report") for name in CHECKS]
        + [dg.AssetCheckSpec(name, asset="evaluation_report", description=text)
           for name, text in sanity.CHECKS.items()],
        description="Every method on one frame per domain (the evaluation sample: seeded users with all their rows, "
                    "every method; all rows and all lists for the CF models; RecCocktail's lists, ranked by the LLM "
                    "and the CF models alike): AUC, UAUC, NDCG, HR@k and NDCG@k with chance levels and 95 % "
                    "user-level intervals; the papers' claims as Holm-adjusted paired tests with their verdicts, "
                    "the paired comparisons, sanity guards (WARN checks); ROC, metric and paired plots; report.md and "
                    "metrics.json in `reports/<domain>/` with the lineage of every input, the exact settings and the "
                    "environment (libraries, device, dtype, git commit).",
    )(evaluation_report)
    summary = dg.asset(
        name="evaluation_summary", deps=[domain_report], **common,
        description="Every domain's report on its comparison frame (named per row): AUC, UAUC and NDCG per "
                    "method, the list metrics where lists were ranked, and every domain's claims with their verdicts; "
                    "reports/summary.md, summary.json and summary.png.",
    )(evaluation_summary)
    return [domain_report, summary]
