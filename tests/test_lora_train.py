"""The LoRA trainer on the tiny smoke model: PEFT-format adapters, resume after kill -9 to the
same result, a 2-process gloo DDP run, and the non-finite-loss guard; resume and DDP for both
objectives (the Yes logit, and RecCocktail's listwise answer tokens)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models.llm import loading as llm
from models.llm.heads import ANSWER, YES
from models.llm.trainer import NonFiniteLoss, lr_at, train
from models.profiles import TrainConfig
from models.llm.prompts import PromptBuilder


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return llm.resolve_model_path(llm.SMOKE, tmp_path_factory.mktemp("models"))


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    build = PromptBuilder(noun="movie")
    labels = rng.integers(0, 2, n)
    prompts = [build([f"Film {k}" for k in rng.choice(50, 5)], f"{'Great' if y else 'Awful'} film {i}")
               for i, y in enumerate(labels)]
    return prompts, labels


def _answer_data(model_path: Path, n: int, seed: int) -> tuple[list[list[int]], np.ndarray]:
    """Listwise sequences (the authors' prompt in the chat template, then the answer) as token ids, and
    each one's answer start: the trainer's `answer` objective."""
    from transformers import AutoTokenizer

    from models.llm import listwise

    tok = AutoTokenizer.from_pretrained(model_path)
    rng = np.random.default_rng(seed)
    ids, starts = [], []
    for _ in range(n):
        cands = [f"Film {k}" for k in rng.choice(50, 6, replace=False)]
        prompt = listwise.prompt_text(tok, [f"Film {k}" for k in rng.choice(50, 3)], cands)
        seq, start = listwise.encode_example(tok, prompt, listwise.answer_text(cands[0], cands, rng, 3))
        ids.append(seq)
        starts.append(start)
    return ids, np.array(starts)


def _job(tmp: Path, model_path: Path, out: Path, objective: str = "yes", **config) -> Path:
    data = _data if objective == "yes" else lambda n, seed: _answer_data(model_path, n, seed)
    tp, tl = data(96, 0)
    vp, vl = data(32, 1)
    (tmp / "data.json").write_text(json.dumps({"train_prompts": tp, "train_labels": tl.tolist(),
                                               "valid_prompts": vp, "valid_labels": vl.tolist()}))
    cfg = {**TrainConfig().model_dump(mode="json"), "warmup_steps": 2, "lr": 5e-3, "batch_size": 8, "eval_every": 10,
           "checkpoint_every": 5, "max_steps": 40, **config}
    job = tmp / f"job-{out.name}.json"
    job.write_text(json.dumps({"model_path": str(model_path), "data": str(tmp / "data.json"), "out_dir": str(out),
                               "config": cfg, "threads": 1, "objective": objective}))
    return job


def _run(job: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "models.llm.trainer", str(job)], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).resolve().parent.parent)


def test_schedule_warms_up_then_decays_to_the_floor():
    c = TrainConfig(lr=1e-3, warmup_steps=200, warmup_start_lr=1e-5, min_lr=8e-5, max_steps=1000)
    assert lr_at(0, c) == pytest.approx(1e-5)
    assert lr_at(200, c) == pytest.approx(1e-3)
    assert lr_at(1000, c) == pytest.approx(8e-5)
    assert lr_at(100, c) < lr_at(150, c) and lr_at(400, c) > lr_at(800, c)


def test_training_saves_an_adapter_peft_loads(model_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tp, tl = _data(64, 0)
    vp, vl = _data(32, 1)
    loaded = llm.load(model_path, device="cpu")
    res = train(loaded, tp, tl, vp, vl, tmp_path, TrainConfig(warmup_steps=2, lr=5e-3, batch_size=8, eval_every=5,
                                                               checkpoint_every=5, max_steps=20), log=lambda s: None)
    assert res.steps == 20 and res.best_step > 0 and res.tokens_per_s > 0
    assert [h["step"] for h in res.history] == [5, 10, 15, 20]
    base = AutoModelForCausalLM.from_pretrained(model_path)
    peft = PeftModel.from_pretrained(base, tmp_path / "adapter")
    assert any("lora_A" in n for n, _ in peft.named_parameters())


@pytest.mark.parametrize("objective", ["yes", "answer"])
def test_resume_after_kill_9_ends_with_the_same_adapter(model_path, tmp_path, objective):
    full = tmp_path / "full"
    assert _run(_job(tmp_path, model_path, full, objective)).returncode == 0
    killed = tmp_path / "killed"
    job = _job(tmp_path, model_path, killed, objective)
    proc = subprocess.Popen([sys.executable, "-m", "models.llm.trainer", str(job)], cwd=Path(__file__).parent.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoint" / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists(), "the run finished before it could be killed"
    first = torch.load(killed / "checkpoint" / "checkpoint.pt", weights_only=False)["state"]["step"]
    assert 0 < first < 40
    resumed = _run(job)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = torch.load(full / "checkpoint" / "checkpoint.pt", weights_only=False)
    b = torch.load(killed / "checkpoint" / "checkpoint.pt", weights_only=False)
    assert a["state"]["step"] == b["state"]["step"] == 40
    assert len(a["trainable"]) == 8  # LoRA A and B of q and v in both layers
    for k in a["trainable"]:
        torch.testing.assert_close(a["trainable"][k], b["trainable"][k], rtol=1e-5, atol=1e-6)
    assert a["state"]["best_step"] == b["state"]["best_step"]


@pytest.mark.parametrize("objective", ["yes", "answer"])
def test_two_process_gloo_ddp_trains(model_path, tmp_path, objective):
    out = tmp_path / "ddp"
    job = _job(tmp_path, model_path, out, objective, max_steps=10, eval_every=5)
    torchrun = Path(sys.executable).parent / "torchrun"
    res = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "models.llm.trainer", str(job)],
                         capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent.parent,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    # each process found its device through LOCAL_RANK (the CPU here; cuda:<LOCAL_RANK> on GPUs) and gloo
    for rank in (0, 1):
        assert f"[rank {rank}/2] LOCAL_RANK {rank}: cpu, backend gloo" in res.stdout + res.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2
    assert result["steps"] == 10 and len(result["history"]) == 2
    assert result["valid_metric"] == ("valid_auc" if objective == "yes" else "valid_loss")
    assert all(objective == "yes" or h["valid_loss"] > 0 for h in result["history"])
    assert (out / "adapter" / "adapter_config.json").exists()


@pytest.mark.parametrize("objective", ["yes", "answer"])
def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(model_path, tmp_path, objective):
    tp, tl = _data(32, 0) if objective == "yes" else _answer_data(model_path, 32, 0)
    loaded = llm.load(model_path, device="cpu")
    cfg = TrainConfig(warmup_steps=0, lr=1e12, min_lr=1e12, batch_size=8, eval_every=100, checkpoint_every=1,
                      max_steps=50)
    with pytest.raises(NonFiniteLoss, match="Lower the learning rate") as err:
        train(loaded, tp, tl, tp, tl, tmp_path, cfg, log=lambda s: None, objective=ANSWER if objective == "answer"
              else YES)
    ck = torch.load(tmp_path / "checkpoint" / "checkpoint.pt", weights_only=False)
    assert f"step {ck['state']['step']}" in str(err.value)
    assert all(torch.isfinite(v).all() for v in ck["trainable"].values())
