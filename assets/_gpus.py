"""The accelerators an LLM step may use, as a Dagster resource (`gpu`), and how the step starts its
processes: in the step's own process (one device or the CPU), or `torchrun --nproc_per_node N` on this
node through Dagster Pipes (one process per device; on a CPU, N gloo processes). The LLM assets take
it; their materializations record the devices, world size, backend and launcher they ran with.

Set it per deployment with LLMREC_GPU_DEVICES / LLMREC_GPU_PROCESSES, or per run in the Launchpad:
`resources: {gpu: {config: {processes: 2}}}`. Every LLM step also claims the `gpu` pool (one step
at a time by default, `deploy/local/dagster.yaml`), so two GPU steps never share a node's devices."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets._metadata import fail

LAUNCHERS = ("auto", "in_process", "torchrun")


@dataclass(frozen=True)
class Launch:
    """What one LLM step runs on: the CUDA device ids (empty: the CPU), how many processes, the
    collective backend between them, and how they are started."""
    devices: tuple[int, ...]
    world_size: int
    backend: str
    launcher: str

    @property
    def env(self) -> dict[str, str]:
        """What the child processes need in their environment: only the chosen devices visible."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, self.devices))} if self.devices else {}

    def metadata(self) -> dict:
        return {"devices": ", ".join(f"cuda:{d}" for d in self.devices) or "cpu", "world_size": self.world_size,
                "backend": self.backend, "launcher": self.launcher}


class GPUResource(dg.ConfigurableResource):
    """Which devices an LLM step may use and how many processes it starts (README, docs/llm.md)."""

    devices: str = Field(
        default=os.environ.get("LLMREC_GPU_DEVICES", "auto"),
        description="`auto`: every CUDA device this process sees (none on a CPU machine); `cpu`: none; or CUDA "
                    "device ids, e.g. `0,1` (env LLMREC_GPU_DEVICES)")
    processes: int = Field(
        default=int(os.environ.get("LLMREC_GPU_PROCESSES", "0")), ge=0,
        description="0: one process per device (one on the CPU); N: N processes, one device each (on the CPU, N "
                    "gloo processes: for tests and debugging) (env LLMREC_GPU_PROCESSES)")
    launcher: str = Field(
        default="auto",
        description="`auto`: in process for one process, else torchrun; `in_process`; `torchrun` (through Dagster "
                    "Pipes, on this node)")

    def plan(self) -> Launch:
        """The launch this configuration asks for on this machine; a ValueError names what does not fit."""
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"gpu.launcher {self.launcher!r}: choose one of {', '.join(LAUNCHERS)}")
        visible = _visible_cuda_devices()
        spec = self.devices.strip().lower()
        if spec == "auto":
            devices = tuple(range(visible))
        elif spec in ("cpu", "none", ""):
            devices = ()
        else:
            try:
                devices = tuple(int(d) for d in spec.split(","))
            except ValueError:
                raise ValueError(f"gpu.devices {self.devices!r}: `auto`, `cpu` or CUDA device ids like `0,1`") from None
            missing = [d for d in devices if d >= visible]
            if missing:
                raise ValueError(f"gpu.devices {self.devices!r}: this machine sees {visible} CUDA device(s), "
                                 f"so {', '.join(map(str, missing))} do(es) not exist")
        world = self.processes or max(1, len(devices))
        if devices and world > len(devices):
            raise ValueError(f"gpu.processes {world} is more than the {len(devices)} device(s) of gpu.devices "
                             f"{self.devices!r}: one process per device")
        devices = devices[:world] if devices else ()
        launcher = self.launcher if self.launcher != "auto" else ("in_process" if world == 1 else "torchrun")
        if launcher == "in_process" and world > 1:
            raise ValueError(f"gpu.launcher in_process runs one process; {world} need `torchrun` (or `auto`)")
        return Launch(devices, world, "nccl" if devices else "gloo", launcher)


def _visible_cuda_devices() -> int:
    """How many CUDA devices this process sees, without importing torch on a machine that has none."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# the Pipes bootstrap variables of each rank, suffixed with the rank: torchrun gives every rank the same
# environment, and each picks its own writer's (orchestration/pipes_train.py, `pipes_env_of_rank`)
RANK_SUFFIX = "_RANK"


def run_torchrun(context: dg.AssetExecutionContext, launch: Launch, module: str, extras: dict,
                 cwd: str) -> dg.MaterializeResult:
    """`torchrun --standalone --nproc_per_node N -m <module>` on this node, every rank a Pipes writer
    of its own (its log lines reach the run's event log), rank 0 reporting the materialization.

    A rank that dies (killed, out of memory) makes torchrun stop the others; the step then fails once
    with the rank, its exit code or signal and what to do (rematerialize: the trainer resumes from its
    fingerprinted checkpoint). When it fails, torchrun's own report goes to the step's stderr (its compute
    log)."""
    reader = dg.PipesCompositeMessageReader([dg.PipesTempFileMessageReader() for _ in range(launch.world_size)])
    torchrun = str(Path(sys.executable).parent / "torchrun")
    command = [torchrun, "--standalone", "--nproc_per_node", str(launch.world_size), "-m", module]
    with dg.open_pipes_session(context=context, context_injector=dg.PipesTempFileContextInjector(),
                               message_reader=reader, extras=extras) as session:
        env = {**os.environ, **launch.env, "LLMREC_DIST_BACKEND": launch.backend}
        for rank, writer in enumerate(session.get_per_writer_bootstrap_env_vars()):
            env.update({f"{k}{RANK_SUFFIX}{rank}": v for k, v in writer.items()})
        context.log.info(f"starting {' '.join(command[1:])} ({launch.world_size} processes, backend "
                         f"{launch.backend}, devices {launch.metadata()['devices']})")
        with tempfile.TemporaryFile(mode="w+") as out:
            proc = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
            out.seek(0)
            output = out.read()
        if proc.returncode != 0:
            sys.stderr.write(output)  # the step's compute log keeps torchrun's whole report
            raise fail(f"torchrun failed: {rank_failure(output, launch.world_size)}. Rematerialize to resume "
                       "from the last checkpoint (the trainer picks it up by its fingerprint); if the same rank "
                       "fails again, see the step's stderr for its traceback.")
        results = session.get_results()
    reported = [r for r in results if isinstance(r, dg.MaterializeResult)]
    if len(reported) != 1:
        raise fail(f"torchrun ended without rank 0's materialization ({len(reported)} reported)")
    return reported[0]


def rank_failure(output: str, world: int) -> str:
    """Which rank failed and how, from torchrun's error report (`local_rank: 1 (pid: ..)` and
    `exitcode: -9 (pid: ..)`); the last lines when it has none."""
    ranks = re.findall(r"local_rank\s*:\s*(\d+)", output)
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", output)
    if ranks and codes:
        rank, code = int(ranks[0]), int(codes[0])
        how = (f"was killed by signal {-code} ({signal.Signals(-code).name})" if code < 0 and -code in
               signal.valid_signals() else f"exited with status {code}")
        return f"rank {rank} of {world} {how}"
    tail = " | ".join(line.strip() for line in output.strip().splitlines()[-3:])
    return f"exit without a rank report ({tail})"
