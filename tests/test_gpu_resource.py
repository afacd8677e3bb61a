"""The `gpu` resource (assets/_gpus.py): what it plans on this machine, and LoRA training through
Dagster on two processes (`torchrun`, gloo on the CPU here; one process per GPU on a GPU node), each
rank a Dagster Pipes writer, rank 0 reporting. The same effective batch on 1 or 2 processes gives the
same adapter; a rank killed with `kill -9` fails the step once, naming the rank, and the next
materialization resumes from the checkpoint to the adapter of an uninterrupted run. Scoring in two
shards (`llm_scores`, `listwise_scores`) writes the file one process writes."""

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from assets._gpus import GPUResource, rank_failure
from models.config import Settings
from orchestration.definitions import build_definitions
from orchestration.jobs import evaluate_domain, materialize_dataset, materialize_domain, train_base_spirit
from test_reccocktail_dagster import prepared as prepared_listwise
from test_report import add_general_domain, prepare_llm_fixture, write_fixture

ADAPTER = Path("adapters") / "ingredient" / "shop" / "adapter" / "adapter_model.safetensors"
# without LoRA dropout (its masks depend on how rows are split over processes, as any seeded dropout does),
# one process and two see the same effective batch and compute the same step
EXACT = {"train": {"lora_dropout": 0.0}}
# a budget long enough to kill a rank mid-way: 40 steps, a checkpoint after each
LONG = {"train": {"max_steps": 40, "checkpoint_every": 1, "eval_every": 20}}


def test_the_plan_on_a_cpu_machine():
    assert torch.cuda.device_count() == 0  # this suite runs on CPU machines
    one = GPUResource(devices="auto", processes=0).plan()
    assert (one.devices, one.world_size, one.backend, one.launcher) == ((), 1, "gloo", "in_process")
    two = GPUResource(devices="cpu", processes=2).plan()
    assert (two.world_size, two.launcher) == (2, "torchrun") and two.env == {}
    assert two.metadata() == {"devices": "cpu", "world_size": 2, "backend": "gloo", "launcher": "torchrun"}
    with pytest.raises(ValueError, match="sees 0 CUDA device"):
        GPUResource(devices="0,1").plan()
    with pytest.raises(ValueError, match="runs one process"):
        GPUResource(processes=2, launcher="in_process").plan()
    with pytest.raises(ValueError, match="choose one of"):
        GPUResource(launcher="slurm").plan()


def test_torchruns_report_names_the_failed_rank():
    report = ("[E] failed (exitcode: -9) local_rank: 1 (pid: 4242) of binary\nRoot Cause (first observed failure):\n"
              "[0]:\n  time      : 2026-12-06\n  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 4242)\n")
    assert rank_failure(report, 2) == "rank 1 of 2 was killed by signal 9 (SIGKILL)"
    assert rank_failure("something else\nentirely", 2).startswith("exit without a rank report")


def _prepared(tmp_path: Path):
    tmp_path.mkdir(parents=True)
    settings = write_fixture(tmp_path)
    defs = build_definitions(Settings(settings.data_dir, settings.config_path, "smoke"))
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_dataset(defs, "synthetic", instance).success
    assert materialize_domain(defs, "shop", instance).success
    return settings, defs, instance


def _ingredient(defs, instance, processes: int, overrides: dict | None = None, raise_on_error: bool = True):
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        asset_selection=[dg.AssetKey("ingredient_lora")], partition_key="shop", instance=instance,
        raise_on_error=raise_on_error,
        run_config={"resources": {"gpu": {"config": {"processes": processes}}},
                    "ops": {"ingredient_lora": {"config": {"overrides": overrides or {}}}}})


def _metadata(result) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey("ingredient_lora")]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _same_adapter(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert set(ta) == set(tb) and ta
    for k in ta:  # gradients averaged over 2 ranks instead of summed in one process: float summation order only
        torch.testing.assert_close(ta[k], tb[k], rtol=1e-4, atol=1e-5)


def test_the_ingredient_on_two_gloo_processes_equals_one_process(tmp_path):
    s1, defs1, inst1 = _prepared(tmp_path / "one")
    one = _ingredient(defs1, inst1, processes=1, overrides=EXACT)
    assert _metadata(one)["world_size"] == 1 and _metadata(one)["launcher"] == "in_process"
    s2, defs2, inst2 = _prepared(tmp_path / "two")
    two = _ingredient(defs2, inst2, processes=2, overrides=EXACT)
    md = _metadata(two)
    assert (md["world_size"], md["devices"], md["backend"], md["launcher"]) == (2, "cpu", "gloo", "torchrun")
    assert md["steps"] == _metadata(one)["steps"] == 10
    # both ranks' log lines reached the run's event log, through their own Pipes writers
    logs = [e.message for e in inst2.all_logs(two.run_id) if e.message]
    for rank in (0, 1):
        assert any(m.startswith(f"[rank {rank}/2] joined the gloo process group") for m in logs), logs[-20:]
    _same_adapter(s1.data_dir / ADAPTER, s2.data_dir / ADAPTER)


def _kill_rank_when_checkpointed(checkpoint: Path, rank: int, killed: list) -> None:
    """Wait for the first checkpoint, then `kill -9` the trainer process of `rank`."""
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"orchestration.pipes_train" in cmd and f"RANK={rank}".encode() in env:
            os.kill(int(pid), signal.SIGKILL)
            killed.append(int(pid))
            return


def test_a_killed_rank_fails_once_and_the_next_run_resumes_to_the_same_adapter(tmp_path):
    s_full, defs_full, inst_full = _prepared(tmp_path / "full")
    assert _ingredient(defs_full, inst_full, processes=2, overrides=LONG).success
    settings, defs, instance = _prepared(tmp_path / "killed")
    checkpoint = settings.data_dir / "adapters" / "ingredient" / "shop" / "checkpoint" / "checkpoint.pt"
    killed: list[int] = []
    killer = threading.Thread(target=_kill_rank_when_checkpointed, args=(checkpoint, 1, killed))
    killer.start()
    failed = _ingredient(defs, instance, processes=2, overrides=LONG, raise_on_error=False)
    killer.join()
    assert killed, "no rank 1 process was found to kill"
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "rank 1 of 2 was killed by signal 9 (SIGKILL)" in message and "resume" in message, message
    assert failure.step_failure_data.user_failure_data is not None  # our Failure: not retried
    step = torch.load(checkpoint, weights_only=False)["state"]["step"]
    assert 0 < step < 40
    resumed = _ingredient(defs, instance, processes=2, overrides=LONG)
    md = _metadata(resumed)
    assert md["resumed_from_step"] == step and md["steps"] == 40 and md["world_size"] == 2
    _same_adapter(s_full.data_dir / ADAPTER, settings.data_dir / ADAPTER)


def _scores_on(defs, instance, asset: str, domain: str, processes: int) -> dict:
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(asset_selection=[dg.AssetKey(asset)], partition_key=domain, instance=instance,
                                    run_config={"resources": {"gpu": {"config": {"processes": processes}}}})
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _same_score_file(one: Path, two: Path) -> None:
    """The same rows in the same order with the same values, scores within float noise (a shard's batches
    hold other prompts beside each one, so other padding)."""
    a, b = pl.read_parquet(one), pl.read_parquet(two)
    assert a.columns == b.columns and a.height == b.height > 0
    for col in a.columns:
        if col == "score":
            assert (a[col] - b[col]).abs().max() < 1e-4
        elif col == "candidate_scores":
            for x, y in zip(a[col].to_list(), b[col].to_list()):
                assert (x is None) == (y is None)
                if x is not None:
                    torch.testing.assert_close(torch.tensor(x), torch.tensor(y), rtol=1e-4, atol=1e-4)
        else:
            assert a[col].to_list() == b[col].to_list(), col


def test_llm_scores_on_two_shards_write_the_file_of_one(tmp_path):
    settings = write_fixture(tmp_path)
    add_general_domain(settings)
    defs = build_definitions(Settings(settings.data_dir, settings.config_path, "smoke"))
    instance = dg.DagsterInstance.ephemeral()
    prepare_llm_fixture(defs, instance)
    assert evaluate_domain(defs, "shop", instance, with_llm=True).success  # llm_scores in one process
    path = settings.data_dir / "domains" / "shop" / "scores" / "llm.parquet"
    one = tmp_path / "one_shard.parquet"
    shutil.copy(path, one)
    md = _scores_on(defs, instance, "llm_scores", "shop", processes=2)
    assert (md["shards"], md["world_size"], md["launcher"], md["devices"]) == (2, 2, "shards", "cpu")
    _same_score_file(one, path)


def test_listwise_scores_on_two_shards_write_the_file_of_one(tmp_path):
    settings, defs, instance = prepared_listwise(tmp_path)
    assert train_base_spirit(defs, instance, listwise=True).success
    assert evaluate_domain(defs, "shop", instance, listwise=True).success  # listwise_scores in one process
    path = settings.data_dir / "domains" / "shop" / "scores" / "listwise.parquet"
    one = tmp_path / "one_shard.parquet"
    shutil.copy(path, one)
    md = _scores_on(defs, instance, "listwise_scores", "shop", processes=2)
    assert (md["shards"], md["world_size"], md["launcher"]) == (2, 2, "shards")
    assert md["test_lists_scored"] == 24
    _same_score_file(one, path)


def test_collms_cie_on_two_gloo_processes_equals_one_process(tmp_path):
    """CoLLM's CIE trained by 2 gloo processes (DDP, the same effective batch) equals the one-process CIE;
    rank 0 scores with it, so the score files agree too."""
    settings = write_fixture(tmp_path)
    add_general_domain(settings)
    defs = build_definitions(Settings(settings.data_dir, settings.config_path, "smoke"))
    instance = dg.DagsterInstance.ephemeral()
    prepare_llm_fixture(defs, instance)
    assert evaluate_domain(defs, "shop", instance, with_llm=True).success  # the CIE in one process
    collm_dir = settings.data_dir / "adapters" / "collm" / "shop"
    one = tmp_path / "one_process"
    shutil.copytree(collm_dir, one)
    shutil.copy(settings.data_dir / "domains" / "shop" / "scores" / "collm.parquet", one / "collm.parquet")
    shutil.rmtree(collm_dir)  # else the finished CIE (same fingerprint) would be reused, not trained again
    md = _scores_on(defs, instance, "collm_cie", "shop", processes=2)
    assert (md["world_size"], md["launcher"], md["backend"]) == (2, "torchrun", "gloo")
    assert md["collm_mf/steps_run"] == md["collm_mf/steps"] == 6 and not md["collm_mf/reused_finished_cie"]
    cies = sorted(one.glob("*/adapter/cie.safetensors"))
    assert cies
    for cie in cies:
        _same_adapter(cie, collm_dir / cie.relative_to(one))
    _same_score_file(one / "collm.parquet", settings.data_dir / "domains" / "shop" / "scores" / "collm.parquet")
