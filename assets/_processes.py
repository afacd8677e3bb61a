"""Which processes run a Dagster run: every run records them as run tags (`llmrec/pid/<pid> =
<host>:<start time>`, from `ProjectResource.setup_for_execution`), so a run whose processes died
(`kill -9`, the OOM killer) can be told from a live one; orchestration/recovery.py fails such runs
and frees their pool slots."""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

_LOG = logging.getLogger("llmrec.recovery")


PID_TAG_PREFIX = "llmrec/pid/"


def _threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), None when no such live process.

    A zombie (killed, not yet waited for by its parent) counts as gone once all its threads are: it
    runs nothing and holds no lock. Without /proc (macOS) the start time is "?" and only the pid's existence is checked."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return _exists_without_proc(pid)
    # the command name (field 2) is in parentheses and may itself contain spaces or ')'
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X") and _threads(pid) <= 1:
        # the main thread of a multithreaded process shows Z while another thread is still being
        # killed (and may still hold a file lock); gone once no thread is left
        return None
    return fields[19]  # field 22 of proc(5): starttime


def _exists_without_proc(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # another user's process: it exists
        pass
    return "?"


def process_tags(pid: int | None = None) -> dict[str, str]:
    """`llmrec/pid/<pid> = <host>:<start time>` for this process and, when it is a multiprocess step
    process, for the parent that orchestrates the run (it lives between steps, when no step
    process does; an in-process run's parent is a shell or pytest, which says nothing about it)."""
    pids = [pid or os.getpid()]
    parent = multiprocessing.parent_process()
    if pid is None and parent is not None and parent.pid:
        pids.append(parent.pid)
    host = socket.gethostname()
    tags = {}
    for p in pids:
        start = process_start_time(p)
        if start is not None:
            tags[f"{PID_TAG_PREFIX}{p}"] = f"{host}:{start}"
    return tags


def record_process(context: dg.InitResourceContext) -> None:
    """Tag the run this resource is initialised for with the processes running it.

    Called once per run by an in-process run (before any step claims a slot) and once per step
    process by a multiprocess run. Outside a run (a sensor, a test building the resource) it does
    nothing; a failure to tag is logged, never fails the run."""
    run, instance = context.dagster_run, context.instance
    if run is None or instance is None:
        return
    try:
        tags = process_tags()
        for _ in range(3):
            # add_run_tags rewrites the run's stored tags from what it read: two step processes
            # tagging at once can drop one another's tag, so read back and add again
            instance.add_run_tags(run.run_id, tags)
            stored = (instance.get_run_by_id(run.run_id) or run).tags
            if all(stored.get(k) == v for k, v in tags.items()):
                return
            time.sleep(0.05)
        _LOG.warning("run %s: could not record processes %s", run.run_id, tags)
    except Exception as exc:  # bookkeeping for crash recovery must not fail a healthy run
        (context.log or _LOG).warning(f"could not record this run's process for crash recovery: {exc}")


def recorded_processes(tags: Mapping[str, str]) -> dict[int, tuple[str, str]]:
    """pid -> (host, start time) from a run's tags."""
    out = {}
    for key, value in tags.items():
        if key.startswith(PID_TAG_PREFIX) and ":" in value:
            try:
                pid = int(key[len(PID_TAG_PREFIX):])
            except ValueError:
                continue
            host, start = value.rsplit(":", 1)
            out[pid] = (host, start)
    return out


def _alive(pid: int, start: str) -> bool:
    now = process_start_time(pid)
    return now is not None and (start == "?" or now == "?" or now == start)


def dead_processes(tags: Mapping[str, str], host: str | None = None) -> list[int] | None:
    """The recorded pids when every process the run recorded is on this host and gone; else None
    (no record, another host's process, or one still alive: leave the run alone)."""
    host = host or socket.gethostname()
    procs = recorded_processes(tags)
    if not procs or any(h != host for h, _ in procs.values()):
        return None
    if any(_alive(pid, start) for pid, (_, start) in procs.items()):
        return None
    return sorted(procs)

