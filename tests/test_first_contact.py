"""First contact, as a new user meets the project: the documented CLI commands work on a fresh Dagster
instance, and the entry points a user starts (`make demo`'s `python -m orchestration.demo`, the dagster
CLI, `python -m models.config --check`) end a bad config, a missing upstream artifact or a failed
blocking check with a short message and a non-zero exit status, never a traceback; `make demo` goes on
with whatever does not depend on the failure and closes with what failed and why."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from models.config import PROJECT_ROOT
from test_report import write_fixture

pytestmark = pytest.mark.slow
DEMO = [sys.executable, "-m", "orchestration.demo"]  # what `make demo` runs
OPERATIONS = PROJECT_ROOT / "docs" / "operations.md"
# docs/operations.md's commands for a dataset and a domain without the daemon, run below exactly as written
INGEST = ("dagster asset materialize -m orchestration.definitions --select raw_interactions,raw_items,interactions "
          "--partition ml1m")
SPLIT = "dagster asset materialize -m orchestration.definitions --select domain_interactions,temporal_split --partition horror"


def _fixture(tmp_path: Path, dataset: str = "synthetic", domain: str = "shop") -> tuple[Path, dict]:
    """The report tests' synthetic fixture with its dataset and domain renamed; returns (config, its dict)."""
    settings = write_fixture(tmp_path)
    cfg = yaml.safe_load(settings.config_path.read_text())
    cfg["datasets"] = {dataset: cfg["datasets"]["synthetic"]}
    cfg["domains"] = {domain: {**cfg["domains"]["shop"], "dataset": dataset}}
    cfg["settings"]["evaluation"]["floors"] = {}
    settings.config_path.write_text(yaml.safe_dump(cfg))
    return settings.config_path, cfg


def _env(tmp_path: Path, config: Path, home: Path) -> dict:
    return {**os.environ, "LLMREC_CONFIG": str(config), "LLMREC_DATA_DIR": str(tmp_path / "data"),
            "LLMREC_PROFILE": "smoke", "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # as after `activate`


def _run(command: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _no_traceback(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "Stack Trace" not in out, out[-4000:]
    return out


def test_a_misspelled_config_key_stops_make_demo_with_the_key_and_its_fix(tmp_path):
    config, _ = _fixture(tmp_path)
    config.write_text(config.read_text().replace("label_threshold", "label_treshold"))
    proc = _run(DEMO, _env(tmp_path, config, tmp_path / "home"))
    _no_traceback(proc)
    assert proc.returncode != 0
    assert "datasets.synthetic.label_treshold: unknown key; did you mean `label_threshold`?" in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    # the same file through the checker and the dagster CLI: the same message, no traceback
    check = _run([sys.executable, "-m", "models.config", "--check", str(config)], os.environ)
    assert check.returncode == 1 and "label_treshold" in _no_traceback(check)
    cli = _run(shlex.split(SPLIT), _env(tmp_path, config, tmp_path / "home"))
    assert cli.returncode != 0 and "error: " in cli.stderr and "label_treshold" in _no_traceback(cli)


def test_a_quarantine_over_the_cap_is_summarised_and_the_good_dataset_finishes(tmp_path):
    """Two datasets: `broken` (every third rating is not a number) and the good `synthetic`."""
    config, cfg = _fixture(tmp_path)
    events = pl.read_csv(tmp_path / "events.csv")
    events.with_columns(pl.when(pl.int_range(pl.len()) % 3 == 0).then(pl.lit("x"))
                        .otherwise(pl.col("stars").cast(pl.Utf8)).alias("stars")).write_csv(tmp_path / "broken.csv")
    bad_rows = (events.height + 2) // 3
    cfg["datasets"]["broken"] = {**cfg["datasets"]["synthetic"], "source": {"path": "broken.csv"}}
    cfg["domains"]["junk"] = {**cfg["domains"]["shop"], "dataset": "broken"}
    config.write_text(yaml.safe_dump(cfg))
    proc = _run([*DEMO, "--listwise-only"], _env(tmp_path, config, tmp_path / "home"))
    out = _no_traceback(proc)
    assert proc.returncode == 1, out[-3000:]
    summary = proc.stdout[proc.stdout.index("failed or skipped (everything else finished):"):]
    share = f"{bad_rows / events.height:.2%}"
    assert f"dataset broken: gate quarantine_share_within_limit: dataset broken: {share} of its interaction rows " \
           f"were quarantined ({bad_rows:,} of {events.height:,})" in summary, summary
    assert f"rows by reason: non_numeric_rating {bad_rows:,}" in summary, summary
    assert "domain junk: skipped: its dataset broken failed" in summary
    assert "shop" not in summary  # the good dataset's domain finished
    assert (tmp_path / "data" / "reports" / "shop" / "report.md").is_file()
    assert "[demo] domain shop: CF baselines and evaluation report" in out


def test_the_documented_cli_commands_work_on_a_fresh_instance(tmp_path):
    """docs/operations.md's `dagster asset materialize` commands with a DAGSTER_HOME nothing has
    touched (no dagster.yaml, no storage, no partitions): the code location's load adds the domain
    partitions. Then a missing upstream artifact ends the CLI with one failure line and exit status 1."""
    text = " ".join(OPERATIONS.read_text().split())
    assert INGEST in text and SPLIT in text
    config, _ = _fixture(tmp_path, dataset="ml1m", domain="horror")
    home = tmp_path / "fresh_home"
    home.mkdir()
    env = _env(tmp_path, config, home)
    for command in (INGEST, SPLIT):
        proc = _run(shlex.split(command), env)
        assert proc.returncode == 0, (command, (proc.stdout + proc.stderr)[-3000:])
    assert (tmp_path / "data" / "domains" / "horror" / "split.parquet").is_file()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions("domain") == ["horror"]
        assert instance.get_latest_materialization_event(dg.AssetKey("temporal_split")) is not None
    report = _run(shlex.split(SPLIT.replace("domain_interactions,temporal_split", "evaluation_report")), env)
    out = _no_traceback(report)
    assert report.returncode == 1
    assert "evaluation_report [horror] failed with MissingArtifact" in out and "materialize cf_embeddings" in out, \
        out[-3000:]
