"""Scoring split across processes, one per device of the `gpu` resource (or N CPU processes): shard k
of n scores every n-th test row (pointwise) or list (listwise) from the k-th with every method, and the
parent gathers the shards' rows into the one score file a single process writes (the same rows in the
same order; each score computed from the same prompt by the same model, so equal up to the float
noise of a different batch). No Dagster here: assets/llm.py starts the shards and reports.

    python -m models.stages.shards job.json     # one shard (what `score_in_shards` starts)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from models.config import load_config
from models.data.workspace import Workspace
from models.profiles import Profile
from models.stages.common import load_base
from models.stages.task import task as task_of


def score_in_shards(ws: Workspace, cfg_path: Path, domain: str, task: str, prof: Profile, devices: tuple[int, ...],
                    shards: int, log: Callable[[str], None] = print) -> dict:
    """`task`'s scores of `domain` computed by `shards` processes (shard k on CUDA device `devices[k]`,
    or on the CPU when there are none) and written as one file; returns the score stage's metadata."""
    with tempfile.TemporaryDirectory(prefix="llmrec-shards-") as tmp:
        procs = []
        for k in range(shards):
            job = Path(tmp) / f"shard{k}.json"
            job.write_text(json.dumps({"data_dir": str(ws.root), "config_path": str(cfg_path), "domain": domain,
                                       "task": task, "profile": prof.model_dump(mode="json"), "shard": [k, shards],
                                       "out": str(Path(tmp) / f"rows{k}.json")}))
            env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // shards))}
            if devices:
                env["CUDA_VISIBLE_DEVICES"] = str(devices[k])
            log(f"{domain}: scoring shard {k + 1} of {shards} on " + (f"cuda:{devices[k]}" if devices else "the CPU"))
            procs.append(subprocess.Popen([sys.executable, "-m", "models.stages.shards", str(job)], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate()[0] for p in procs]
        failed = [(k, p.returncode, out) for k, (p, out) in enumerate(zip(procs, outputs)) if p.returncode != 0]
        if failed:
            k, code, out = failed[0]
            tail = " | ".join(line.strip() for line in out.strip().splitlines()[-3:])
            raise RuntimeError(f"scoring shard {k + 1} of {shards} exited with status {code}: {tail}")
        rows, md = [], {}
        for k in range(shards):
            part = json.loads((Path(tmp) / f"rows{k}.json").read_text())
            rows += part["rows"]
            for key, value in part["md"].items():  # seconds per method: the slowest shard's (they ran side by side)
                md[key] = max(md.get(key, value), value)
    return {**task_of(task).write_scores(ws, domain, rows, md), "shards": shards}


def run_shard(job: dict) -> None:
    ws, cfg = Workspace(Path(job["data_dir"])), load_config(Path(job["config_path"]))
    prof = Profile.model_validate(job["profile"])
    impl = task_of(job["task"])
    prof = impl.profile(prof)
    rows, md = impl.score_rows(ws, cfg, job["domain"], prof, load_base(ws, prof), log=print,
                               shard=tuple(job["shard"]))
    Path(job["out"]).write_text(json.dumps({"rows": rows, "md": md}))


if __name__ == "__main__":
    run_shard(json.loads(Path(sys.argv[1]).read_text()))
