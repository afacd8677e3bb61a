"""Runs killed with `kill -9` while they hold the duckdb_writer pool slot: the reaper fails them and
frees the slot, the next writer run finishes, and the warehouse shows no half-written ingestion."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import psutil
import pytest

from conftest import write_config
from models.config import PROJECT_ROOT
from orchestration import recovery

POOL = "duckdb_writer"
DATASET = "big"


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")  # pool limit 1
    return home


def _started_run(instance: dg.DagsterInstance, tags: dict[str, str], claimed: bool = True) -> str:
    """A STARTED run holding the duckdb_writer slot (or queued for it), as a killed run leaves it."""
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="ingest_dataset", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                   tags=tags))
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(POOL)
    assert storage.claim_concurrency_slot(POOL, run_id, "raw_data").is_claimed == claimed
    return run_id


def _holders(instance: dg.DagsterInstance) -> set[str]:
    info = instance.event_log_storage.get_concurrency_info(POOL)
    return {s.run_id for s in info.claimed_slots} | {p.run_id for p in info.pending_steps}


def test_reaper_fails_a_dead_run_frees_its_slot_and_leaves_live_ones(tmp_path):
    home = _home(tmp_path)
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    host = socket.gethostname()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        dead = _started_run(instance, {f"{recovery.PID_TAG_PREFIX}{exited.pid}": f"{host}:12345"})
        # a pid that exists now but started at another time is another process: the run's is gone;
        # this one waits for the slot (a pending step), which is freed too
        reused = _started_run(instance, {f"{recovery.PID_TAG_PREFIX}{os.getpid()}": f"{host}:1"}, claimed=False)
        live = str(uuid.uuid4())
        instance.add_run(dg.DagsterRun(job_name="ingest_dataset", run_id=live, status=dg.DagsterRunStatus.STARTED,
                                       tags=recovery.process_tags()))
        other_host = str(uuid.uuid4())
        instance.add_run(dg.DagsterRun(job_name="ingest_dataset", run_id=other_host,
                                       status=dg.DagsterRunStatus.STARTED,
                                       tags={f"{recovery.PID_TAG_PREFIX}{exited.pid}": "elsewhere:12345"}))
        untagged = str(uuid.uuid4())
        instance.add_run(dg.DagsterRun(job_name="ingest_dataset", run_id=untagged, status=dg.DagsterRunStatus.STARTED))

        # the sensor `make ui` runs every 15 s
        result = recovery.dead_run_reaper(dg.build_sensor_context(instance=instance))
        assert isinstance(result, dg.SkipReason) and dead in result.skip_message and reused in result.skip_message

        status = {r: instance.get_run_by_id(r).status for r in (dead, reused, live, other_host, untagged)}
        assert status == {dead: dg.DagsterRunStatus.FAILURE, reused: dg.DagsterRunStatus.FAILURE,
                          live: dg.DagsterRunStatus.STARTED, other_host: dg.DagsterRunStatus.STARTED,
                          untagged: dg.DagsterRunStatus.STARTED}
        assert _holders(instance) == set()
        (failure,) = instance.all_logs(dead, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert f"process {exited.pid} that ran this run is gone (killed?)" in failure.message
        assert "pool slots were freed" in failure.message
        # a second pass finds nothing more to do
        assert recovery.reap_dead_runs(instance) == []


def test_reaper_frees_slots_an_ended_run_still_holds(tmp_path, monkeypatch):
    home = _home(tmp_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_id = _started_run(instance, {})
        instance.report_run_failed(instance.get_run_by_id(run_id), "crashed elsewhere")
        assert _holders(instance) == {run_id}
        monkeypatch.setattr(recovery, "ENDED_GRACE_S", -1.0)
        assert recovery.reap_dead_runs(instance) == []  # nothing to fail, but the slot is freed
        assert _holders(instance) == set()


def test_resource_records_the_process_before_steps_run(tmp_path):
    """execute_in_process initialises resources once per run, before any step claims a slot."""
    from test_report import write_fixture
    from orchestration.definitions import build_definitions

    settings = write_fixture(tmp_path)
    defs = build_definitions(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("ingest_dataset").execute_in_process(
            partition_key="synthetic", instance=instance)
        tags = instance.get_run_by_id(result.run_id).tags
    mine = recovery.process_tags()
    assert {k: v for k, v in tags.items() if k.startswith(recovery.PID_TAG_PREFIX)} == mine
    assert list(mine) == [f"{recovery.PID_TAG_PREFIX}{os.getpid()}"]


# --- kill -9 of a real writer run while it holds the duckdb_writer slot -------------------------

ROWS = 1_500_000  # several seconds of ingestion on a 2-core machine: the kill lands mid-transaction
NEXT_RUN_TIMEOUT_S = 60

# the helper run of `make demo` and the tests; DAGSTER_HOME is set only after the code location is
# imported, so the reap this exercises is the one in orchestration/jobs.py, not the one at load
HELPER = """
import os, sys
import dagster as dg
from orchestration.definitions import build_definitions
from orchestration.jobs import materialize_dataset
os.environ["DAGSTER_HOME"] = os.environ.pop("TEST_DAGSTER_HOME")
with dg.DagsterInstance.get() as instance:
    sys.exit(0 if materialize_dataset(build_definitions(), sys.argv[1], instance).success else 1)
"""


def _write_events(path: Path, rows: int) -> None:
    """`rows` clean interactions (every one lands in raw_interactions) in the `table` format."""
    rng = np.random.default_rng(rows)
    item = pl.Series(rng.integers(0, 5000, rows)).cast(pl.Utf8)
    pl.DataFrame({"user": "u" + pl.Series(rng.integers(0, 100_000, rows)).cast(pl.Utf8),
                  "item": "i" + item, "stars": rng.integers(1, 6, rows),
                  "when": 1_600_000_000 + rng.integers(0, 10**7, rows),
                  "name": "Item number " + item}).write_csv(path)


@pytest.fixture
def writer_env(tmp_path):
    home = _home(tmp_path)
    events = tmp_path / "events.csv"
    cfg = write_config(tmp_path / "datasets.yaml", DATASET, {
        "format": "table", "source": {"path": str(events)},
        "fields": {"user": "user", "item": "item", "rating": "stars", "timestamp": "when",
                   "item_id": "item", "title": "name"},
        "label_threshold": 4})
    env = {**os.environ, "LLMREC_DATA_DIR": str(tmp_path / "data"), "LLMREC_CONFIG": str(cfg),
           "LLMREC_PROFILE": "smoke", "HF_HUB_OFFLINE": "1"}
    return home, events, env


def _helper_cmd(env: dict, home: Path) -> tuple[list[str], dict]:
    return [sys.executable, "-c", HELPER, DATASET], {**env, "TEST_DAGSTER_HOME": str(home)}


def _cli_cmd(env: dict, home: Path) -> tuple[list[str], dict]:
    # raw_interactions alone is not a valid selection: it comes from one multi-asset with raw_items
    return ([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "orchestration.definitions",
             "--select", "raw_interactions,raw_items", "--partition", DATASET], {**env, "DAGSTER_HOME": str(home)})


def _start(cmd_env: tuple[list[str], dict], log: Path) -> subprocess.Popen:
    cmd, env = cmd_env
    # its own process group: kill -9 takes the run and any step processes it started
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """kill -9 the run's process group, and wait until none of its processes is left (a step
    process the kill finds inside a system call exits a moment later, still holding the lock)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while True:
        left = []
        for p in psutil.process_iter(["status"]):
            try:
                if os.getpgid(p.pid) == proc.pid and not _exited(p):
                    left.append(p.pid)
            except (ProcessLookupError, psutil.Error):
                pass
        if not left:
            return
        assert time.monotonic() < deadline, f"processes {left} survived kill -9"
        time.sleep(0.1)


def _exited(p: psutil.Process) -> bool:
    """All of the process's threads are gone. A multithreaded process whose main thread died shows as a
    zombie while another thread (DuckDB's, mid-write) is still being killed, holding the file lock."""
    if p.info["status"] != psutil.STATUS_ZOMBIE:
        return False
    try:
        return len(os.listdir(f"/proc/{p.pid}/task")) <= 1
    except FileNotFoundError:
        return True


def _raw_rows(tmp_path: Path) -> int:
    path = tmp_path / "data" / "warehouse.duckdb"
    if not path.exists():
        return 0
    con = duckdb.connect(str(path), read_only=True)
    try:
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'raw_interactions'"
                           ).fetchone()[0]:
            return 0
        return con.execute("SELECT count(*) FROM raw_interactions WHERE dataset = ?", [DATASET]).fetchone()[0]
    finally:
        con.close()


def _wait_until_writing(instance: dg.DagsterInstance, proc: subprocess.Popen, log: Path, known: set[str]) -> str:
    """The id of the new run once it holds the duckdb_writer slot and its ingestion has begun."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        holders = {s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots} - known
        for run_id in holders:
            if any("ingesting big" in (e.user_message or "") for e in instance.all_logs(run_id)):
                return run_id
        time.sleep(0.2)
    raise AssertionError(f"the writer run never held the {POOL} slot and started ingesting: {log.read_text()[-3000:]}")


def _kill_mid_write_then_rerun(tmp_path, home, events, make_cmd, previous_rows: int) -> tuple[float, dict]:
    _write_events(events, ROWS)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        known = {r.run_id for r in instance.get_runs()}
        first = _start(make_cmd(), tmp_path / "killed.log")
        killed = _wait_until_writing(instance, first, tmp_path / "killed.log", known)
        time.sleep(1.5)  # into the transaction that swaps the dataset's rows
        _kill_group(first)
        # what the bug left behind: a STARTED run holding the only slot, nothing of it committed
        assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.STARTED
        assert killed in {s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots}
        assert not instance.all_logs(killed, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION), \
            "the killed run finished its ingestion before the kill; make ROWS larger"
        assert _raw_rows(tmp_path) == previous_rows  # the previous good state, no partial rows

        t0 = time.monotonic()
        nxt = _start(make_cmd(), tmp_path / "next.log")
        try:
            rc = nxt.wait(timeout=NEXT_RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(nxt.pid, signal.SIGKILL)
            nxt.wait()
            pytest.fail(f"the next writer run did not finish within {NEXT_RUN_TIMEOUT_S} s: "
                        f"{(tmp_path / 'next.log').read_text()[-3000:]}")
        elapsed = time.monotonic() - t0
        assert rc == 0, (tmp_path / "next.log").read_text()[-3000:]
        (done,) = [r for r in instance.get_runs() if r.run_id not in known | {killed}]
        assert done.status == dg.DagsterRunStatus.SUCCESS
        run = instance.get_run_by_id(killed)
        assert run.status == dg.DagsterRunStatus.FAILURE
        (failure,) = instance.all_logs(killed, of_type=dg.DagsterEventType.RUN_FAILURE)
        pids = sorted(recovery.recorded_processes(run.tags))
        assert f"{', '.join(map(str, pids))} that ran this run {'is' if len(pids) == 1 else 'are'} gone (killed?)" \
            in failure.message and "pool slots were freed" in failure.message
        assert _holders(instance) == set()
    assert _raw_rows(tmp_path) == ROWS  # the whole file, once
    return elapsed, run.tags


@pytest.mark.slow
def test_helper_run_killed_holding_the_writer_slot(tmp_path, writer_env):
    home, events, env = writer_env
    _write_events(events, 1000)  # the previous good state of the dataset
    assert subprocess.run(_helper_cmd(env, home)[0], cwd=PROJECT_ROOT, env=_helper_cmd(env, home)[1],
                          capture_output=True, timeout=300).returncode == 0
    assert _raw_rows(tmp_path) == 1000
    elapsed, tags = _kill_mid_write_then_rerun(tmp_path, home, events, lambda: _helper_cmd(env, home),
                                               previous_rows=1000)
    assert len(recovery.recorded_processes(tags)) == 1  # in process: the run's one process
    print(f"next helper run finished {elapsed:.1f} s after it started")


@pytest.mark.slow
def test_cli_run_killed_holding_the_writer_slot(tmp_path, writer_env):
    home, events, env = writer_env
    elapsed, tags = _kill_mid_write_then_rerun(tmp_path, home, events, lambda: _cli_cmd(env, home), previous_rows=0)
    assert len(recovery.recorded_processes(tags)) == 2  # the CLI process and its step process
    print(f"next CLI run finished {elapsed:.1f} s after it started")
