"""The landing sensor and the domain refresh it leads to.

`landing` watches <landing>/<dataset>/ (LLMREC_LANDING_DIR, default <data dir>/landing) for new
interaction files in the dataset's format. A file is taken once its size and modification time
have not changed between two ticks and it is at least LLMREC_LANDING_SETTLE_S seconds old (a file
still being written waits; so do names ending in .tmp, .part, .partial, ... and hidden files). The
JSON cursor keeps the content hash of every file taken, so the same content dropped twice or under
a new name starts no second run (and the ingestion itself skips content already in landed_files).
Each tick also adds config domains the instance lacks as `domain` partitions.

`domain_refresh` follows each successful `ingest_landing` run and starts `prepare_domain` for the
domains the new rows touched (read from landed_interactions' metadata); the cheap assets below
them follow by their eager automation conditions."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import dagster as dg

from models.data import ingest as data_prep
from models.core.files import file_sha256
from models.config import ProjectConfig
from orchestration.jobs import ingest_landing_job, prepare_domain_job
from assets._partitions import DOMAIN_PARTITIONS, missing_domains

LANDING_INTERVAL_S = int(os.environ.get("LLMREC_LANDING_INTERVAL_S", "30"))
LANDING_SETTLE_S = float(os.environ.get("LLMREC_LANDING_SETTLE_S", "10"))


def landing_tick(cfg: ProjectConfig, landing: Path, cursor: dict, now: float | None = None,
                 settle_s: float = LANDING_SETTLE_S) -> tuple[list[dg.RunRequest], dict, list[str]]:
    """One look at the landing folder: (run requests, the new cursor, notes for the tick's log)."""
    now = time.time() if now is None else now
    seen: dict[str, str] = dict(cursor.get("seen", {}))
    pending: dict[str, list[int]] = dict(cursor.get("pending", {}))
    done: dict[str, list[int]] = dict(cursor.get("done", {}))  # files already decided on, as last seen
    notes, batches, present = [], {}, set()
    if landing.is_dir():
        for folder in sorted(p for p in landing.iterdir() if p.is_dir() and p.name not in cfg.datasets):
            notes.append(f"{folder.name}/ is not a dataset of the config ({', '.join(sorted(cfg.datasets))}); ignored")
    for ds in sorted(cfg.datasets):
        for path in data_prep.landing_candidates(landing, ds):
            key = f"{ds}/{path.name}"
            present.add(key)
            st = path.stat()
            sig = [st.st_size, st.st_mtime_ns]
            if done.get(key) == sig:
                continue
            if pending.get(key) != sig or now - st.st_mtime < settle_s:
                if key not in pending or pending[key] != sig:
                    notes.append(f"{key}: waiting until it stops changing")
                pending[key] = sig
                continue
            digest = file_sha256(path)
            pending.pop(key)
            done[key] = sig
            if digest in seen:
                notes.append(f"{key}: same content as {seen[digest]}, taken before; not ingested again")
                continue
            seen[digest] = key
            batches.setdefault(ds, []).append((path, digest))
    pending = {k: v for k, v in pending.items() if k in present}  # deleted before they settled
    done = {k: v for k, v in done.items() if k in present}
    requests = []
    for ds, files in batches.items():
        run_key = "landing-" + hashlib.sha256("".join(d for _, d in files).encode()).hexdigest()[:16]
        notes.append(f"{ds}: ingesting {', '.join(p.name for p, _ in files)}")
        requests.append(dg.RunRequest(
            run_key=run_key, partition_key=ds,
            run_config={"ops": {"landed_interactions": {"config": {
                "files": [str(p) for p, _ in files], "sha256": [d for _, d in files]}}}},
            tags={"llmrec/landing_files": ",".join(p.name for p, _ in files)[:200]}))
    return requests, {"seen": seen, "pending": pending, "done": done}, notes


def landing_sensors() -> list:
    @dg.sensor(job=ingest_landing_job, minimum_interval_seconds=LANDING_INTERVAL_S,
               default_status=dg.DefaultSensorStatus.RUNNING, required_resource_keys={"project"},
               description="Ingests new interaction files from the landing folder, each content once, and adds "
                           "new config domains as partitions.")
    def landing(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        project = context.resources.project
        cfg = project.config
        cursor = json.loads(context.cursor) if context.cursor else {}
        requests, new_cursor, notes = landing_tick(cfg, project.landing, cursor)
        for note in notes:
            context.log.info(note)
        new_domains = missing_domains(cfg, context.instance)
        return dg.SensorResult(
            run_requests=requests, cursor=json.dumps(new_cursor),
            dynamic_partitions_requests=[DOMAIN_PARTITIONS.build_add_request(new_domains)] if new_domains else [],
            skip_reason=None if requests or new_domains else
            dg.SkipReason(f"no new complete file in {project.landing}" + (f" ({'; '.join(notes)})" if notes else "")))

    @dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[ingest_landing_job],
                          request_job=prepare_domain_job, default_status=dg.DefaultSensorStatus.RUNNING,
                          name="domain_refresh", minimum_interval_seconds=LANDING_INTERVAL_S,
                          description="After an ingest_landing run, re-slices and re-splits only the domains "
                                      "its new rows touched.")
    def domain_refresh(context: dg.RunStatusSensorContext):
        return [dg.RunRequest(run_key=f"{context.dagster_run.run_id}:{d}", partition_key=d)
                for d in touched_domains(context.instance, context.dagster_run.run_id)]

    return [landing, domain_refresh]


def touched_domains(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The domains an ingest_landing run's new rows touched, from its landed_interactions metadata."""
    touched = set()
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        mat = entry.asset_materialization
        if mat is not None and mat.asset_key == dg.AssetKey("landed_interactions"):
            touched.update(mat.metadata["touched_domains"].value)
    return sorted(touched)
