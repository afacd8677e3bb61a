"""`make demo`: materialize every asset of the graph for every dataset and domain of the config,
recorded in the Dagster instance under $DAGSTER_HOME so `make ui` shows the runs afterwards."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import dagster as dg

from models.config import PROJECT_ROOT, Settings, load_config
from orchestration import jobs
from orchestration.console import guarded
from orchestration.jobs import (evaluate_domain, materialize_dataset, materialize_domain, summarize,
                                train_base_spirit)
from models.profiles import get_profile
from orchestration.recovery import reap_dead_runs


def listwise_domains(cfg, chosen) -> list[str]:
    """The domains the listwise stages run on: the profile's list, or every target and cold-start domain
    whose task includes listwise."""
    eligible = [d for d, dom in sorted(cfg.domains.items()) if dom.listwise and dom.role != "general"]
    return eligible if chosen is None else [d for d in chosen if d in eligible]


def report_checks(result, counts: dict[str, int]) -> None:
    """Print every check of a run that did not pass: a gate (ERROR severity: report complete, metric
    floors, no regression) as failed, a WARN check (a model that does not beat the untrained LLM on
    validation; a report's sanity guards) as a warning; `counts` adds them up for the closing line."""
    for check in result.get_asset_check_evaluations():
        if check.passed:
            continue
        if check.severity == dg.AssetCheckSeverity.WARN:
            counts["warnings"] += 1
            print(f"[demo]   warning ({check.check_name}): {check.description}", flush=True)
        else:
            counts["gates"] += 1
            print(f"[demo]   gate {check.check_name} failed: {check.description}", flush=True)


def failure_reason(result) -> str:
    """Why a run failed, in a user's words: its failed blocking checks (their descriptions say what was
    measured and what to do), else its failed steps' errors, first lines only."""
    gates = [f"gate {c.check_name}: {c.description}" for c in result.get_asset_check_evaluations()
             if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
    if gates:
        return "; ".join(gates)
    steps = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            message = event.step_failure_data.error.message.strip().splitlines()[0]
            steps.append(f"{event.step_key}: {message.split(': ', 1)[-1] if message.startswith('dagster.') else message}")
    return "; ".join(steps) or "the run failed (see it in `make ui`)"


def ensure_instance(home: Path) -> None:
    """$DAGSTER_HOME with the project's instance settings (pools, run queue) unless its dagster.yaml says
    something already: what the Makefile's `instance` target does, for `python -m orchestration.demo`."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.is_file() or not target.read_text().strip():
        shutil.copy(PROJECT_ROOT / "deploy" / "local" / "dagster.yaml", target)


@guarded
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orchestration.demo", description=__doc__)
    ap.add_argument("--listwise-only", action="store_true",
                    help="skip the pointwise LLM stages (CoLLM, TALLRec, our pointwise cocktail): data, CF baselines, "
                         "RecCocktail's listwise stages and the reports only")
    args = ap.parse_args(argv)
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))
    ensure_instance(Path(os.environ["DAGSTER_HOME"]))
    jobs.LOG_LEVEL = "INFO"
    settings = Settings.from_env()
    cfg = load_config(settings.config_path)
    prof = get_profile(settings.profile)
    from orchestration.definitions import build_definitions  # after the config is known to load

    defs = build_definitions(settings)
    t0 = time.perf_counter()
    failures: list[tuple[str, str]] = []  # (what, why), in the order they happened

    def failed(what: str, result) -> None:
        """Record a failed run for the closing summary; say so now unless its failed gate was just printed."""
        failures.append((what, failure_reason(result)))
        if not failures[-1][1].startswith("gate "):
            print(f"[demo]   {what} failed: {failures[-1][1]}", flush=True)

    with dg.DagsterInstance.get() as instance:
        # a demo killed last time (kill -9, a closed terminal) left runs STARTED with their pool slots
        # claimed; the job helpers reap before each run too, this says so up front
        reap_dead_runs(instance, log=lambda m: print(f"[demo] {m}", flush=True))
        bad_datasets, counts = set(), {"gates": 0, "warnings": 0}
        for ds in sorted(cfg.datasets):
            print(f"[demo] dataset {ds}: ingest", flush=True)
            result = materialize_dataset(defs, ds, instance, raise_on_error=False)
            report_checks(result, counts)
            if not result.success:
                bad_datasets.add(ds)
                failed(f"dataset {ds}", result)
        rows, ready = [], []
        for dom in sorted(cfg.domains):
            if cfg.domains[dom].dataset in bad_datasets:
                failures.append((f"domain {dom}", f"skipped: its dataset {cfg.domains[dom].dataset} failed"))
                print(f"[demo] domain {dom}: skipped (its dataset {cfg.domains[dom].dataset} failed)", flush=True)
                continue
            print(f"[demo] domain {dom}: split", flush=True)
            result = materialize_domain(defs, dom, instance, raise_on_error=False)
            report_checks(result, counts)
            if not result.success:
                failed(f"domain {dom} (split)", result)
                continue
            ready.append(dom)
            md = {e.asset_key.to_user_string(): e.materialization.metadata
                  for e in result.get_asset_materialization_events()}["temporal_split"]
            rows.append((dom, cfg.domains[dom].role, *(md[f"{s}/rows"].value for s in ("train", "valid", "test")),
                         md["test/not_cold"].value, md["test/warm"].value, md["path"].value))
        llm_domains = prof.llm_domains
        llm_domains = sorted(cfg.domains) if llm_domains is None else [d for d in llm_domains if d in cfg.domains]
        if args.listwise_only:
            llm_domains = []
        listwise = listwise_domains(cfg, prof.listwise.domains)
        # the base spirits train on the general domains: one that could not be split leaves them nothing
        # sound to train on, so the LLM stages wait for a fixed config instead of failing one by one
        general_missing = [d for d, dc in cfg.domains.items() if dc.role == "general" and d not in ready]
        if general_missing and (llm_domains or listwise):
            failures.append(("LLM stages", f"skipped: the general domain(s) {', '.join(sorted(general_missing))} "
                                           "the base spirits train on failed"))
            print(f"[demo] LLM stages skipped: general domain(s) {', '.join(sorted(general_missing))} failed",
                  flush=True)
            llm_domains, listwise = [], []
        # our pointwise base spirit serves the pointwise target domains only (none in a RecCocktail-only config)
        if any(cfg.domains[d].pointwise and cfg.domains[d].role != "general" for d in llm_domains):
            print(f"[demo] base spirit LoRA ({settings.profile} profile)", flush=True)
            result = train_base_spirit(defs, instance, raise_on_error=False)
            if not result.success:
                failed("base spirit LoRA", result)
            report_checks(result, counts)
        if listwise:
            print(f"[demo] listwise base spirit LoRA, RecCocktail as published ({settings.profile} profile)", flush=True)
            result = train_base_spirit(defs, instance, raise_on_error=False, listwise=True)
            if not result.success:
                failed("listwise base spirit LoRA", result)
            report_checks(result, counts)
        for dom in ready:
            with_llm = dom in llm_domains and cfg.domains[dom].pointwise
            what = (", listwise ingredient, cocktail and scores" if dom in listwise else
                    ", ingredient LoRA, LLM scores" if with_llm else "")
            print(f"[demo] domain {dom}: CF baselines{what} and evaluation report", flush=True)
            result = evaluate_domain(defs, dom, instance, raise_on_error=False, with_llm=with_llm,
                                     listwise=dom in listwise)
            if not result.success:
                failed(f"domain {dom} (evaluation)", result)
            report_checks(result, counts)
        if ready:
            result = summarize(defs, instance, raise_on_error=False)
            if not result.success:
                failed("summary", result)
    print(f"\n{'domain':<12} {'role':<10} {'train':>8} {'valid':>8} {'test':>8} {'test not_cold':>14} {'test warm':>10}")
    for r in rows:
        print(f"{r[0]:<12} {r[1]:<10} {r[2]:>8} {r[3]:>8} {r[4]:>8} {r[5]:>14} {r[6]:>10}")
    print(f"\n[demo] done in {time.perf_counter() - t0:.1f} s; gates failed: {counts['gates']}; warnings (WARN "
          f"checks: models not beating the untrained LLM, the reports' sanity guards): {counts['warnings']}; "
          f"warehouse: {settings.warehouse_path}")
    print(f"[demo] splits: {settings.data_dir / 'domains'}/<domain>/split.parquet")
    print(f"[demo] reports: {settings.data_dir / 'reports'}/<domain>/report.md; "
          f"summary: {settings.data_dir / 'reports' / 'summary.md'}")
    print("[demo] runs, metadata and checks: `make ui`, then http://127.0.0.1:3000")
    if failures:
        print(f"\n[demo] {len(failures)} failed or skipped (everything else finished):", flush=True)
        for what, why in failures:
            print(f"[demo]   {what}: {why}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
