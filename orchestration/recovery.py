"""Runs whose process was killed (`kill -9`, the OOM killer, a closed laptop): found by the processes
they recorded, reported failed and their pool slots freed, so the next run of that pool can start.

Dagster frees a step's pool slot when the step ends, and its daemon frees slots of runs that already
ENDED (`run_monitoring.free_slots_after_run_end_seconds`); but the DefaultRunLauncher cannot check a
run worker's health, so a run whose process died stays STARTED forever and keeps its slot, and
every later run of that pool waits ("Step blocked by limit for pool duckdb_writer").

So every run records which processes run it: `ProjectResource.setup_for_execution` calls
`record_process`, which adds the run tag `llmrec/pid/<pid> = <host>:<start time>` for its own
process and, in a multiprocess step process, for the orchestrating parent (one tag per process, so
parallel steps do not overwrite each other; the start time from /proc/<pid>/stat tells a reused
pid from the process that ran the run). `reap_dead_runs` fails the in-flight runs whose recorded
processes on this host are all gone and frees their slots. It runs from the `dead_run_reaper`
sensor (`make ui`), before every run the job helpers in orchestration/jobs.py start (`make demo`,
the tests), and when a process loads orchestration/definitions.py (`at_load`)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from assets._processes import PID_TAG_PREFIX, dead_processes, process_tags, record_process, recorded_processes  # noqa: F401

# runs that may hold or wait for pool slots. NOT_STARTED and QUEUED runs are not here: no step has
# run, so no slot is claimed and no process was recorded (run monitoring fails NOT_STARTED runs
# after its start timeout)
IN_FLIGHT = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
# a run that ended frees its own slots as its steps end; only slots still held this long after the
# end are leftovers (the daemon does the same with run_monitoring.free_slots_after_run_end_seconds,
# but `make demo` and CLI runs have no daemon)
ENDED_GRACE_S = 10.0
REAPER_INTERVAL_S = 15

_LOG = logging.getLogger("llmrec.recovery")


def _message(pids: list[int]) -> str:
    if len(pids) == 1:
        return (f"process {pids[0]} that ran this run is gone (killed?); this run is marked failed and "
                "its pool slots were freed")
    return (f"processes {', '.join(map(str, pids))} that ran this run are gone (killed?); this run is marked "
            "failed and its pool slots were freed")


def reap_dead_runs(instance: dg.DagsterInstance, log: Callable[[str], Any] | None = None) -> list[str]:
    """Report every in-flight run whose recorded processes on this host are all gone as failed (a
    CANCELING one as canceled), free its pool slots and pending steps, and free the slots that
    ended runs still hold. Returns the ids of the runs reported."""
    log = log or _LOG.warning
    reaped = []
    host = socket.gethostname()
    for record in instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT)):
        run = record.dagster_run
        pids = dead_processes(run.tags, host)
        if pids is None:
            continue
        # the run may have ended between the query and here; a finished run is not ours to touch
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status not in IN_FLIGHT:
            continue
        message = _message(pids)
        if current.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(current, message.replace("marked failed", "marked canceled"))
        else:
            instance.report_run_failed(current, message)
        _free_slots(instance, run.run_id)
        log(f"run {run.run_id} ({run.job_name}): {message}")
        reaped.append(run.run_id)
    _free_slots_of_ended_runs(instance, log)
    return reaped


def _free_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        # the claimed slots and the run's steps still queued for one (pending steps), in one call
        storage.free_concurrency_slots_for_run(run_id)


def _free_slots_of_ended_runs(instance: dg.DagsterInstance, log: Callable[[str], Any]) -> None:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    holders = set(storage.get_concurrency_run_ids())  # runs with pending steps
    for info in storage.get_concurrency_infos(list(storage.get_concurrency_keys())).values():
        holders.update(slot.run_id for slot in info.claimed_slots)
    if not holders:
        return
    now = time.time()
    for record in instance.get_run_records(dg.RunsFilter(run_ids=sorted(holders))):
        run = record.dagster_run
        if run.is_finished and record.end_time is not None and now - record.end_time > ENDED_GRACE_S:
            storage.free_concurrency_slots_for_run(run.run_id)
            log(f"run {run.run_id} ({run.job_name}) ended ({run.status.value}) but still held pool slots; "
                "freed them")


@dg.sensor(name="dead_run_reaper", minimum_interval_seconds=REAPER_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Marks runs whose process is gone (killed with kill -9, the OOM killer) as failed "
                       "and frees their pool slots, so the next run of that pool starts.")
def dead_run_reaper(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    reaped = reap_dead_runs(context.instance, log=context.log.warning)
    if reaped:
        return dg.SkipReason(f"reported {len(reaped)} run(s) whose process was gone as failed: {', '.join(reaped)}")
    return dg.SkipReason("every in-flight run's process is alive")


def at_load(project) -> None:
    """What loading the code location does to the instance at DAGSTER_HOME: add the config's domains
    it lacks as `domain` partitions (so the CLI, `dagster dev` and a Kubernetes code server can run a
    domain asset on an instance no sensor tick or `make demo` has touched yet), and free the pool
    slots of runs killed earlier (a CLI run would wait for them forever).

    Quiet, and never fails the load (a broken instance shows up when a run is created, with its own
    error). Only with DAGSTER_HOME set to a folder, and not in a multiprocess step process (its parent
    orchestrates a live run and did this already). `project` is the ProjectResource: its config is read
    only past those checks."""
    from assets._partitions import sync_domain_partitions

    home = os.environ.get("DAGSTER_HOME")
    if not home or not Path(home).is_dir() or multiprocessing.parent_process() is not None:
        return
    try:
        with dg.DagsterInstance.get() as instance:
            added = sync_domain_partitions(project.config, instance)
            if added:
                _LOG.info("added domain partitions %s", ", ".join(added))
            reap_dead_runs(instance)
    except Exception as exc:
        _LOG.debug("instance preparation at load skipped: %s", exc)
