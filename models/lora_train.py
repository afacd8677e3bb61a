"""LoRA training on the Yes logit (PROTOCOLS section 3), readable top to bottom.

BCE on the " Yes" logit at the last prompt position; AdamW (no decay on biases and norms) with a
linear warm-up from `warmup_start_lr` then cosine to `min_lr`; gradient accumulation; validation
AUC on a fixed subsample every `eval_every` optimiser steps (CoLLM's "epoch" of 50 iterations);
the best adapter kept; early stop after `patience` evaluations without improvement; a checkpoint
every `checkpoint_every` steps that a new process resumes from (also after `kill -9`) to the same
result; a non-finite loss stops training with a clear message and leaves the last good checkpoint.
Under torchrun each process takes its share of every batch and DDP averages the gradients.

Speed: prompts are tokenized once; each epoch's batches are grouped by length (a seeded shuffle, cut
into pools of `length_group` batches, each pool sorted by length, the batches shuffled again), so
little compute goes to padding; only the last position of each prompt meets the output layer.
`tokens_per_s` counts real (unpadded) tokens over the time spent in training steps.

Run as a module for torchrun or Dagster Pipes:
    torchrun --nproc_per_node 2 -m models.lora_train job.json
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

from models import data_prep, metrics
from models.llm import LoadedLLM, load


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class TrainConfig:
    lr: float = 1e-3
    warmup_steps: int = 200
    warmup_start_lr: float = 1e-5
    min_lr: float = 8e-5
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 16  # prompts per optimiser step (across processes and accumulation)
    grad_accum: int = 1
    max_steps: int = 1000
    eval_every: int = 50
    patience: int = 20  # evaluations without improvement
    checkpoint_every: int = 50
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    length_group: int = 32  # batches per length-sorted pool; 1 = plain shuffled batches
    seed: int = 2023


@dataclass
class TrainResult:
    best_valid_auc: float
    best_step: int
    steps: int
    stopped: str
    tokens_per_s: float
    history: list[dict] = field(default_factory=list)


def lr_at(step: int, c: TrainConfig) -> float:
    """Linear warm-up from warmup_start_lr to lr, then cosine down to min_lr at max_steps."""
    if step < c.warmup_steps:
        return c.warmup_start_lr + (c.lr - c.warmup_start_lr) * step / max(1, c.warmup_steps)
    progress = (step - c.warmup_steps) / max(1, c.max_steps - c.warmup_steps)
    return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def add_lora(llm: LoadedLLM, c: TrainConfig):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                     target_modules=list(c.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(llm.model, cfg)


class YesLogit(torch.nn.Module):
    """The LoRA-wrapped model reduced to what training needs: the Yes logit at each prompt's last
    token (only those rows meet the output layer). DDP wraps this module."""

    def __init__(self, peft_model, yes_id: int):
        super().__init__()
        self.peft = peft_model
        self.yes_id = yes_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return yes_logit(self.peft.get_base_model(), input_ids, attention_mask, self.yes_id)

    def save_pretrained(self, path: Path) -> None:
        self.peft.save_pretrained(path)


def yes_logit(causal_lm, input_ids: torch.Tensor | None, attention_mask: torch.Tensor, yes_id: int,
              inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable Yes logit at each right-padded prompt's last token; only those rows meet the
    output layer (one dot product each). Pass `inputs_embeds` instead of ids to feed vectors."""
    hidden = causal_lm.model(input_ids=input_ids, inputs_embeds=inputs_embeds,
                             attention_mask=attention_mask).last_hidden_state
    last = attention_mask.sum(1) - 1
    yes = causal_lm.get_output_embeddings().weight[yes_id]
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last] @ yes


def token_ids(llm: LoadedLLM, prompts: Sequence[str] | Sequence[list[int]]) -> list[list[int]]:
    """Prompts as token id lists: text is tokenized, id lists (e.g. CoLLM's, with slot ids) pass through."""
    prompts = list(prompts)
    if prompts and isinstance(prompts[0], str):
        return llm.tokenizer(prompts)["input_ids"]
    return [list(p) for p in prompts]


def _pad(llm: LoadedLLM, ids: Sequence[list[int]]) -> dict[str, torch.Tensor]:
    return llm.tokenizer.pad({"input_ids": list(ids)}, return_tensors="pt").to(llm.device)


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


@torch.no_grad()
def predict(head: torch.nn.Module, llm: LoadedLLM, ids: Sequence[list[int]], batch: int = 32) -> np.ndarray:
    """The head's Yes logits (eval mode), in batches of similar length, in the caller's order."""
    was_training = head.training
    head.eval()
    order = np.argsort([len(t) for t in ids], kind="stable")
    out = np.empty(len(ids), dtype=np.float64)
    for i in range(0, len(ids), batch):
        part = order[i:i + batch]
        enc = _pad(llm, [ids[j] for j in part])
        out[part] = head(enc["input_ids"], enc["attention_mask"]).float().cpu().numpy()
    head.train(was_training)
    return out


def evaluate(head: torch.nn.Module, llm: LoadedLLM, ids: Sequence[list[int]], labels: np.ndarray, batch: int = 32) -> float:
    return metrics.auc(labels, predict(head, llm, ids, batch))


def _trainable_state(head: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in head.named_parameters() if v.requires_grad}


def _save_checkpoint(path: Path, head: torch.nn.Module, opt, state: dict) -> None:
    """Everything a new process needs to continue exactly; written beside, then renamed."""
    tmp = data_prep.fresh_dir(path)
    torch.save({"trainable": _trainable_state(head), "optimizer": opt.state_dict(), "state": state,
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}},
               tmp / "checkpoint.pt")
    data_prep.replace_dir(tmp, path)


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
    return ck["state"]


def train(llm: LoadedLLM, train_prompts: Sequence[str] | Sequence[list[int]], train_labels: np.ndarray,
          valid_prompts: Sequence[str] | Sequence[list[int]], valid_labels: np.ndarray, out_dir: Path, c: TrainConfig,
          log: Callable[[str], None] = print, head: torch.nn.Module | None = None) -> TrainResult:
    """Train a LoRA adapter on the Yes logit; the best one is saved in PEFT format under out_dir/adapter.

    `head` swaps in another trainable module with the same contract (forward(input_ids,
    attention_mask) -> Yes logits, save_pretrained(folder), its trainable parameters the ones with
    requires_grad): CoLLM's CIE uses this. Prompts may be text or token id lists."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(c.seed)
    random.seed(c.seed)
    np.random.seed(c.seed)
    if head is None:
        head = YesLogit(add_lora(llm, c), llm.yes_id)
    head.train()
    named = [(n, p) for n, p in head.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if p.ndim >= 2]
    no_decay = [p for n, p in named if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=c.lr, betas=c.betas)
    net = torch.nn.parallel.DistributedDataParallel(head) if distributed else head
    ckpt = out_dir / "checkpoint"
    state = {"step": 0, "best_auc": -1.0, "best_step": -1, "bad_evals": 0, "history": [], "tokens": 0}
    if ckpt.exists():
        state = _load_checkpoint(ckpt, head, opt)
        log(f"resumed from {ckpt} at step {state['step']}")
    saved_step = state["step"] if ckpt.exists() else None
    labels_t = torch.tensor(np.asarray(train_labels, dtype=np.float32))
    n = len(train_prompts)
    if n < c.batch_size:
        raise ValueError(f"{n} training prompts are fewer than one batch of {c.batch_size}")
    train_ids, valid_ids = token_ids(llm, train_prompts), token_ids(llm, valid_prompts)
    lengths = np.array([len(t) for t in train_ids])
    per_epoch = n // c.batch_size
    micro = c.batch_size // (c.grad_accum * world)
    if micro < 1 or micro * c.grad_accum * world != c.batch_size:
        raise ValueError(f"batch_size {c.batch_size} must split evenly over grad_accum {c.grad_accum} x {world} processes")
    stopped, tokens0, train_s, batches, batches_epoch = "max_steps", state["tokens"], 0.0, None, -1
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
            logits = net(enc["input_ids"], enc["attention_mask"])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels_t[part].to(logits.device))
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
            (loss / c.grad_accum).backward()
            total += loss.item() / c.grad_accum
            state["tokens"] += ntok * world
        opt.step()
        train_s += time.perf_counter() - t_step
        state["step"] = step = step + 1
        if rank == 0 and step % max(1, c.eval_every // 5) == 0:
            rate = (state["tokens"] - tokens0) / max(1e-9, train_s)
            log(f"step {step}/{c.max_steps}: loss {total:.4f}, lr {lr_at(step - 1, c):.2e}, {rate:.0f} tokens/s")
        if step % c.eval_every == 0 or step == c.max_steps:
            if rank == 0:
                auc = evaluate(head, llm, valid_ids, np.asarray(valid_labels))
                rate = (state["tokens"] - tokens0) / max(1e-9, train_s)
                state["history"].append({"step": step, "loss": total, "valid_auc": auc, "lr": lr_at(step - 1, c),
                                         "tokens_per_s": rate})
                log(f"step {step}: loss {total:.4f}, valid AUC {auc:.4f}, {rate:.0f} tokens/s")
                if auc > state["best_auc"]:
                    state.update(best_auc=auc, best_step=step, bad_evals=0)
                    tmp = data_prep.fresh_dir(out_dir / "adapter")  # swapped in whole: a crash keeps the last best
                    head.save_pretrained(tmp)
                    data_prep.replace_dir(tmp, out_dir / "adapter")
                else:
                    state["bad_evals"] += 1
            if distributed:
                flag = torch.tensor([state["bad_evals"]])
                dist.broadcast(flag, 0)
                state["bad_evals"] = int(flag)
            if state["bad_evals"] >= c.patience:
                stopped = "early_stop"
        if rank == 0 and (step % c.checkpoint_every == 0 or stopped == "early_stop"):
            _save_checkpoint(ckpt, head, opt, state)
            saved_step = step
        if stopped == "early_stop":
            break
    rate = (state["tokens"] - tokens0) / max(1e-9, train_s)
    return TrainResult(state["best_auc"], state["best_step"], state["step"], stopped, rate, state["history"])


def main(argv: list[str]) -> int:
    """Entry point for torchrun / subprocesses: one JSON file describing the job."""
    job = json.loads(Path(argv[0]).read_text())
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        dist.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    llm = load(Path(job["model_path"]), device=job.get("device", "cpu"), threads=int(job.get("threads", 0)))
    c = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["config"].items()})
    data = json.loads(Path(job["data"]).read_text())
    result = train(llm, data["train_prompts"], np.array(data["train_labels"]), data["valid_prompts"],
                   np.array(data["valid_labels"]), Path(job["out_dir"]), c)
    if not dist.is_initialized() or dist.get_rank() == 0:
        (Path(job["out_dir"]) / "result.json").write_text(json.dumps(asdict(result), indent=2))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
