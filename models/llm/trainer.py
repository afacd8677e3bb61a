"""LoRA training (docs/protocols.md sections 3 and 7), readable top to bottom.

Two objectives share the trainer: BCE on the " Yes" logit at the last prompt position (CoLLM,
TALLRec: validation AUC), and the language-model loss on the answer tokens only (RecCocktail's
listwise task: validation loss, lower is better). Both: AdamW (no decay on biases and norms) with a
linear warm-up from `warmup_start_lr` then cosine to `min_lr`; gradient accumulation; validation
on a fixed subsample every `eval_every` optimiser steps (CoLLM's "epoch" of 50 iterations);
the best adapter kept; early stop after `patience` evaluations without improvement; a checkpoint
every `checkpoint_every` steps that a new process resumes from (also after `kill -9`) to the same
result; a non-finite loss stops training with a clear message and leaves the last good checkpoint.
Under torchrun each process takes its share of every batch and DDP averages the gradients.

Speed: prompts are tokenized once; each epoch's batches are grouped by length (a seeded shuffle, cut
into pools of `length_group` batches, each pool sorted by length, the batches shuffled again), so
little compute goes to padding; only the positions that are scored meet the output layer (the last
prompt position for the Yes logit, the answer positions for the answer loss).
`tokens_per_s` counts real (unpadded) tokens over the time spent in training steps.

Run as a module for torchrun or Dagster Pipes:
    torchrun --nproc_per_node 2 -m models.llm.trainer job.json
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from models.core import fingerprint
from models.core.files import fresh_dir, replace_dir
from models.core.progress import Progress
from models.llm import cards
from models.llm.heads import (ANSWER, YES, Objective, _pad, autocast, token_ids)
from models.llm.loading import LoadedLLM, load, pick_device
from models.profiles import TrainConfig


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class TrainResult:
    best_valid: float  # the best validation value of `valid_metric` (AUC: higher is better; loss: lower)
    best_step: int
    steps: int
    stopped: str
    tokens_per_s: float
    history: list[dict] = field(default_factory=list)
    world_size: int = 1  # processes that trained together (torchrun: one per GPU)
    steps_run: int = 0  # optimiser steps run by this call (0 when the finished adapter was reused)
    resumed_from: int | None = None  # the checkpoint step this call continued from
    reused: bool = False  # the finished adapter of an identical run was returned without training
    fingerprint: str = ""
    valid_metric: str = "valid_auc"
    untrained_valid: float | None = None  # the same validation before the first step (LoRA B = 0: the base LLM)


def lr_at(step: int, c: TrainConfig) -> float:
    """Linear warm-up from warmup_start_lr to lr, then cosine down to min_lr at max_steps."""
    if step < c.warmup_steps:
        return c.warmup_start_lr + (c.lr - c.warmup_start_lr) * step / max(1, c.warmup_steps)
    progress = (step - c.warmup_steps) / max(1, c.max_steps - c.warmup_steps)
    return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group: int) -> np.ndarray:
    """The epoch's batches (n // batch_size rows of indices; the remainder waits for the next epoch's
    shuffle), a function of (seed, epoch) only, so a resumed run sees the same batches. Batches are
    drawn from pools of `group` batches sorted by length, then shuffled, so each holds similar lengths."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    n_batches = len(lengths) // batch_size
    perm = perm[:n_batches * batch_size]
    pool = max(1, group) * batch_size
    if group > 1:
        perm = np.concatenate([chunk[np.argsort(lengths[chunk], kind="stable")]
                               for chunk in np.split(perm, range(pool, len(perm), pool))])
    batches = perm.reshape(n_batches, batch_size)
    return batches[rng.permutation(n_batches)]


def _trainable_state(head: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in head.named_parameters() if v.requires_grad}


def _rng_of_every_rank(distributed: bool) -> list[dict]:
    """Every process's torch random state (CPU, and CUDA where there is one), gathered on all ranks: a
    collective, so every rank calls it at the same step. Under DDP each rank draws its own dropout
    masks, so a resumed run continues exactly only when each rank gets its own state back."""
    mine = {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
    if not distributed:
        return [mine]
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    return every


def _save_checkpoint(path: Path, head: torch.nn.Module, opt, state: dict, fp: str,
                     ranks: list[dict] | None = None) -> None:
    """Everything a new process needs to continue exactly (under torchrun: every rank's random state),
    and the fingerprint of the run that may continue it; written beside, then renamed."""
    tmp = fresh_dir(path)
    torch.save({"trainable": _trainable_state(head), "optimizer": opt.state_dict(), "state": state,
                "fingerprint": fp,
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                        "ranks": ranks}},
               tmp / "checkpoint.pt")
    replace_dir(tmp, path)


def _checkpoint_fingerprint(path: Path) -> str | None:
    try:
        return torch.load(path / "checkpoint.pt", weights_only=False, map_location="cpu").get("fingerprint")
    except (FileNotFoundError, RuntimeError, EOFError):
        return None


def _load_checkpoint(path: Path, head: torch.nn.Module, opt) -> dict:
    ck = torch.load(path / "checkpoint.pt", weights_only=False)
    params = dict(head.named_parameters())
    with torch.no_grad():
        for k, v in ck["trainable"].items():
            params[k].copy_(v)
    opt.load_state_dict(ck["optimizer"])
    torch.set_rng_state(ck["rng"]["torch"])
    np.random.set_state(ck["rng"]["numpy"])
    random.setstate(ck["rng"]["python"])
    ranks, rank = ck["rng"].get("ranks"), dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if ranks and rank < len(ranks):  # this rank's own dropout stream (a checkpoint of as many processes)
        torch.set_rng_state(ranks[rank]["torch"])
        if ranks[rank]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(ranks[rank]["cuda"])
    return ck["state"]


FINISHED = "finished.json"  # beside the adapter: the fingerprint and result of the run that wrote it


def run_fingerprint(llm: LoadedLLM, c: TrainConfig, train_ids: Sequence[list[int]], train_labels,
                    valid_ids: Sequence[list[int]], valid_labels, identity: dict | None = None,
                    head: torch.nn.Module | None = None) -> str:
    """What decides the trained adapter: the model's weights (and whatever was folded into them), the
    training and validation prompts with their labels, every training setting, and the code (this
    module and the head's)."""
    code = [sys.modules[__name__]] + ([sys.modules[type(head).__module__]] if head is not None else [])
    return fingerprint.digest({
        "model": llm.identity, "head": identity or {"kind": "lora_yes_logit"}, "settings": c.model_dump(mode="json"),
        "train": fingerprint.data_digest(train_ids, train_labels),
        "valid": fingerprint.data_digest(valid_ids, valid_labels), "code": fingerprint.code_digest(*code)})


# the model card (models/llm/cards.py) is written beside the weights after training: not part of what reuse checks
CARD = ("README.md",)


def finished_result(out_dir: Path, fp: str) -> TrainResult | None:
    """The result of a finished run with this fingerprint whose adapter is still intact, else None."""
    record = fingerprint.read_json(Path(out_dir) / FINISHED)
    if not record or record.get("fingerprint") != fp:
        return None
    adapter = Path(out_dir) / "adapter"
    if not adapter.is_dir() or fingerprint.folder_digest(adapter, CARD) != record.get("adapter_digest"):
        return None
    return TrainResult(**{**record["result"], "steps_run": 0, "resumed_from": None, "reused": True, "fingerprint": fp})


def _open_checkpoint(ckpt: Path, fp: str, log: Callable[[str], None]) -> bool:
    """True when `ckpt` belongs to this run and can be resumed; any other is set aside."""
    if not ckpt.exists():
        return False
    theirs = _checkpoint_fingerprint(ckpt)
    if theirs == fp:
        return True
    aside = fingerprint.set_aside(ckpt)
    log(f"set aside {ckpt} as {aside.name}: it was written by a run with other inputs (fingerprint "
        f"{(theirs or 'none')[:12]}, this run {fp[:12]}: model, data, settings or code differ); training from step 0")
    return False


def train(llm: LoadedLLM, train_prompts: Sequence[str] | Sequence[list[int]], train_labels: np.ndarray,
          valid_prompts: Sequence[str] | Sequence[list[int]], valid_labels: np.ndarray, out_dir: Path, c: TrainConfig,
          log: Callable[[str], None] = print, head: torch.nn.Module | None = None,
          identity: dict | None = None, objective: Objective = YES, untrained: bool = True) -> TrainResult:
    """Train a LoRA adapter on the objective (the Yes logit by default; `ANSWER`: the listwise answer's
    tokens, `train_labels`/`valid_labels` then being each sequence's answer start); the best one by
    validation (AUC, or loss) is saved in PEFT format under out_dir/adapter.

    `head` swaps in another trainable module with the same contract (forward(input_ids,
    attention_mask) -> Yes logits, save_pretrained(folder), its trainable parameters the ones with
    requires_grad): CoLLM's CIE uses this, and describes it in `identity`. Prompts may be text or
    token id lists.

    A checkpoint is resumed only by a run with the same fingerprint (`run_fingerprint`); any other
    is set aside. When a finished run with the same fingerprint left its adapter intact, it is
    returned as it is (`reused`) instead of training again.

    `untrained`: validate once before the first step too (`untrained_valid`, what training has to
    beat: the `beats_untrained` checks read it); False saves that pass where nothing reads it."""
    c = c.for_rows(len(train_prompts))
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    out_dir = Path(out_dir)
    n = len(train_prompts)
    if n < c.batch_size:
        raise ValueError(f"{n} training prompts are fewer than one batch of {c.batch_size}")
    micro = c.batch_size // (c.grad_accum * world)
    if micro < 1 or micro * c.grad_accum * world != c.batch_size:
        raise ValueError(f"batch_size {c.batch_size} must split evenly over grad_accum {c.grad_accum} x {world} processes")
    train_ids, valid_ids = token_ids(llm, train_prompts), token_ids(llm, valid_prompts)
    fp = run_fingerprint(llm, c, train_ids, train_labels, valid_ids, valid_labels,
                         identity or {"kind": f"lora_{objective.name}"}, head)
    done = finished_result(out_dir, fp)
    if done is not None:
        log(f"reusing the finished adapter in {out_dir / 'adapter'}: a run with the same model, data, settings "
            f"and code (fingerprint {fp[:12]}) trained it for {done.steps} steps")
        return done
    if rank == 0:
        (out_dir / FINISHED).unlink(missing_ok=True)
    torch.manual_seed(c.seed)
    random.seed(c.seed)
    np.random.seed(c.seed)
    if head is None:
        head = objective.make_head(llm, c)
    head.train()
    named = [(n_, p) for n_, p in head.named_parameters() if p.requires_grad]
    decay = [p for n_, p in named if p.ndim >= 2]
    no_decay = [p for n_, p in named if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=c.lr, betas=c.betas)
    net = torch.nn.parallel.DistributedDataParallel(head) if distributed else head
    ckpt = out_dir / "checkpoint"
    state = {"step": 0, "best": None, "best_step": -1, "bad_evals": 0, "history": [], "tokens": 0}
    resumed_from = None
    if _open_checkpoint(ckpt, fp, log if rank == 0 else (lambda s: None)):
        state = _load_checkpoint(ckpt, head, opt)
        resumed_from = state["step"]
        log(f"resumed from {ckpt} at step {state['step']} (same fingerprint {fp[:12]})")
    saved_step = state["step"] if resumed_from is not None else None
    if untrained and resumed_from is None and rank == 0:  # what training has to beat: the untrained validation
        state["untrained"] = objective.validate(head, llm, valid_ids, valid_labels)
    labels_t = torch.tensor(np.asarray(train_labels))
    lengths = np.array([len(t) for t in train_ids])
    per_epoch = n // c.batch_size
    stopped, tokens0, step0, train_s, batches, batches_epoch = "max_steps", state["tokens"], state["step"], 0.0, None, -1
    progress = Progress(f"training {out_dir.name}", c.max_steps, log, unit="steps", start=step0)
    while state["step"] < c.max_steps:
        step = state["step"]
        t_step = time.perf_counter()
        epoch, pos = divmod(step, per_epoch)
        if epoch != batches_epoch:
            batches, batches_epoch = epoch_batches(lengths, c.batch_size, c.seed, epoch, c.length_group), epoch
        idx = batches[pos]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, c)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for a in range(c.grad_accum):
            part = idx[(a * world + rank) * micro:(a * world + rank + 1) * micro]
            enc = _pad(llm, [train_ids[i] for i in part])
            with autocast(llm):
                loss = objective.loss(net, enc, labels_t[part])
            finite = torch.isfinite(loss.detach()).float().reshape(1).cpu()
            if distributed:  # every process stops together, whichever shard went bad
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if finite.item() < 1:
                kept = f"the last good checkpoint (step {saved_step}) is kept in {ckpt}" if saved_step else \
                    "no checkpoint had been written yet"
                raise NonFiniteLoss(
                    f"loss became {loss.item()} at step {step}: training stopped; {kept}. Lower the learning "
                    f"rate (now {opt.param_groups[0]['lr']:.2e}) or check the inputs.")
            ntok = int(enc["attention_mask"].sum())
            if not loss.requires_grad:  # nothing trainable reached this batch (e.g. CoLLM: only text-only
                # fallback rows): a zero gradient keeps every process's backward (and DDP's all-reduce) in step
                loss = loss + 0.0 * sum(p.sum() for _, p in named)
            (loss / c.grad_accum).backward()
            total += loss.item() / c.grad_accum
            state["tokens"] += ntok * world
        grad_norm = None
        if c.max_grad_norm is not None:  # after DDP's all-reduce: every process clips the same gradient
            grad_norm = float(torch.nn.utils.clip_grad_norm_([p for _, p in named], c.max_grad_norm))
        opt.step()
        train_s += time.perf_counter() - t_step
        state["step"] = step = step + 1
        rate = (state["tokens"] - tokens0) / max(1e-9, train_s)
        if rank == 0 and step % max(1, c.eval_every // 5) == 0:
            progress.update(step, f"loss {total:.4f}, lr {lr_at(step - 1, c):.2e}, {rate:.0f} tokens/s", force=True)
        if step % c.eval_every == 0 or step == c.max_steps:
            if rank == 0:
                value = objective.validate(head, llm, valid_ids, valid_labels)
                state["history"].append({"step": step, "loss": total, objective.metric: value,
                                         "lr": lr_at(step - 1, c), "tokens_per_s": rate,
                                         **({"grad_norm": grad_norm} if grad_norm is not None else {})})
                log(f"step {step}/{c.max_steps}: loss {total:.4f}, {objective.metric.replace('_', ' ')} {value:.4f}, "
                    f"{rate:.0f} tokens/s")
                if objective.better(value, state["best"]):
                    state.update(best=value, best_step=step, bad_evals=0)
                    tmp = fresh_dir(out_dir / "adapter")  # swapped in whole: a crash keeps the last best
                    head.save_pretrained(tmp)
                    cards.make_portable(tmp, cards.identity_of(llm))  # the base by name, not by this machine's path
                    replace_dir(tmp, out_dir / "adapter")
                else:
                    state["bad_evals"] += 1
            if distributed:
                flag = torch.tensor([state["bad_evals"]])
                dist.broadcast(flag, 0)
                state["bad_evals"] = int(flag)
            if state["bad_evals"] >= c.patience:
                stopped = "early_stop"
        if step % c.checkpoint_every == 0 or stopped == "early_stop":
            ranks = _rng_of_every_rank(distributed)  # every rank takes part; rank 0 writes
            if rank == 0:
                _save_checkpoint(ckpt, head, opt, state, fp, ranks)
            saved_step = step
        if stopped == "early_stop":
            break
    rate = (state["tokens"] - tokens0) / max(1e-9, train_s)
    result = TrainResult(state["best"], state["best_step"], state["step"], stopped, rate, state["history"],
                         world_size=world, steps_run=state["step"] - step0, resumed_from=resumed_from, fingerprint=fp,
                         valid_metric=objective.metric, untrained_valid=state.get("untrained"))
    if rank == 0:
        fingerprint.write_json(out_dir / FINISHED, {
            "fingerprint": fp, "adapter_digest": fingerprint.folder_digest(out_dir / "adapter", CARD),
            "result": {k: v for k, v in asdict(result).items()
                       if k not in ("steps_run", "resumed_from", "reused", "fingerprint")}})
    return result


def join_process_group(backend: str) -> str:
    """Under torchrun (WORLD_SIZE > 1): join the ranks' process group with `backend` (nccl on GPUs,
    gloo on CPUs); returns a line for the log. The trainer then trains with DDP."""
    dist.init_process_group(backend)
    return (f"joined the {dist.get_backend()} process group as rank {dist.get_rank()} of {dist.get_world_size()} "
            f"(local rank {os.environ.get('LOCAL_RANK')})")


def leave_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    """This process's rank in the torch.distributed process group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def main(argv: list[str]) -> int:
    """Entry point for torchrun / subprocesses: one JSON file describing the job."""
    job = json.loads(Path(argv[0]).read_text())
    # the job's device (`auto`: this process's GPU under torchrun, cuda:<LOCAL_RANK>; else the CPU)
    device, _ = pick_device(job.get("device", "auto"))
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        print(f"[rank {dist.get_rank()}/{dist.get_world_size()}] LOCAL_RANK {os.environ.get('LOCAL_RANK')}: "
              f"{device}, backend {dist.get_backend()}", flush=True)
    llm = load(Path(job["model_path"]), device=str(device), threads=int(job.get("threads", 0)))
    c = TrainConfig.model_validate(job["config"])
    data = json.loads(Path(job["data"]).read_text())
    result = train(llm, data["train_prompts"], np.array(data["train_labels"]), data["valid_prompts"],
                   np.array(data["valid_labels"]), Path(job["out_dir"]), c,
                   objective=ANSWER if job.get("objective") == "answer" else YES)
    if not dist.is_initialized() or dist.get_rank() == 0:
        (Path(job["out_dir"]) / "result.json").write_text(json.dumps(asdict(result), indent=2))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
