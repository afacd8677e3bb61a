"""LoRA (and CoLLM's CIE) training out of process, through Dagster Pipes: the LLM assets start this module with
PipesSubprocessClient when LLMREC_TRAIN_PIPES=1 (one process; PipesK8sClient on Kubernetes, see
docs/operations.md), and under `torchrun --nproc_per_node N` when the `gpu` resource asks for N > 1
processes (assets/_gpus.py). It runs the same trainer as in process (models.stages.adapters.train_adapter,
with the run's effective profile); under torchrun every rank joins one process group (DDP averages the
gradients; each rank takes its share of every batch, so the effective batch is the profile's), every
rank sends its log lines to the run, and rank 0 reports the adapter's materialization. It imports
models/ only."""

from __future__ import annotations

import os
from pathlib import Path

from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, DAGSTER_PIPES_MESSAGES_ENV_VAR, open_dagster_pipes

RANK_SUFFIX = "_RANK"  # as assets/_gpus.py writes each rank's Pipes variables


def _typed(v):
    """A metadata value as Dagster Pipes carries it."""
    if isinstance(v, Path):
        return {"raw_value": str(v), "type": "path"}
    if isinstance(v, (list, dict, tuple)):
        return {"raw_value": v, "type": "json"}
    if v is None:
        return {"raw_value": None, "type": "null"}
    return {"raw_value": v, "type": "__infer__"}


def pipes_env_of_rank(rank: int) -> None:
    """Under torchrun: this rank's own Pipes writer (each rank a writer of its own)."""
    for name in (DAGSTER_PIPES_CONTEXT_ENV_VAR, DAGSTER_PIPES_MESSAGES_ENV_VAR):
        mine = os.environ.get(f"{name}{RANK_SUFFIX}{rank}")
        if mine is not None:
            os.environ[name] = mine


def main() -> None:
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    pipes_env_of_rank(rank)
    with open_dagster_pipes() as pipes:
        from models.stages.adapters import train_adapter
        from models.config import load_config
        from models.profiles import Profile
        from models.data.workspace import Workspace

        ex = pipes.extras
        prefix = f"[rank {rank}/{world}] " if world > 1 else ""

        def log(message: str) -> None:
            pipes.log.info(prefix + message)

        from models.llm.trainer import join_process_group, leave_process_group

        if world > 1:
            log(join_process_group(os.environ.get("LLMREC_DIST_BACKEND", "gloo")))
        ws, prof = Workspace(Path(ex["data_dir"])), Profile.model_validate(ex["profile"])
        try:
            if ex.get("stage") == "collm":  # CoLLM's CIE of one domain, trained and scored
                from models.stages.collm import train_and_score

                log(f"pipes trainer: CoLLM's CIE on {ex['domain']}")
                md, version = train_and_score(ws, ex["domain"], ex["noun"], prof, log=log), "scores_sha256"
            else:
                log(f"pipes trainer: {ex['kind']} on {', '.join(ex['domains'])} ({ex['task']} task)")
                md = train_adapter(ws, load_config(Path(ex["config_path"])), list(ex["domains"]), ex["kind"],
                                   ex["task"], prof, log=log)
                version = "adapter_sha256"
            if rank == 0:
                pipes.report_asset_materialization(metadata={k: _typed(v) for k, v in md.items()},
                                                   data_version=md[version][:16])
        finally:
            leave_process_group()


if __name__ == "__main__":
    main()
