"""LoRA training throughput on real ML-1M `movies` text-only prompts: our trainer against a plain
padded loop, and the achieved FLOP/s as a share of a matrix-multiply peak measured in the same run.

- Plain padded loop (the CoLLM/TALLRec way): shuffled batches tokenized every step and padded to
  the longest prompt, the full model forward with full-vocabulary logits at every position, the
  Yes logit read at the last prompt position, BCE, backward, AdamW.
- Ours: `models.llm.trainer.train` itself (prompts tokenized once, length-grouped batches, only the
  last position meets the output layer), same LoRA settings, same number of steps and batch size.
- Peak: the best of several large square matrix multiplies (dtype and threads of the model).
- Useful FLOPs count real (unpadded) tokens only: for LoRA with frozen weights a step costs the
  forward (2 x linear weights per token, plus causal attention 2 x T^2 x width per layer) and the
  backward for activations only (2 x the linear forward, 2 x the attention forward), plus the
  small LoRA matrices (forward, input and weight gradients). Padding, the output layer and
  elementwise work are not counted as useful.

How to read: `training_tokens_per_s_speedup: <N>x` (ours / plain loop) and
`training_flops_share_of_peak: <p>` (ours, useful FLOP/s / measured peak). Wall-clock on a shared
machine: compare within one run.

    python benchmarks/training.py [--model smollm2-135m-instruct] [--steps 12] [--batch 8] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import movies_split
from models.llm import loading as llm_mod
from models.llm import heads
from models import profiles
from models.llm import trainer as lora_train
from models.llm import prompts as prompt_mod
from models.config import Settings


def matmul_peak(device: torch.device, dtype: torch.dtype, sizes=(1024, 2048, 3072), reps: int = 5) -> float:
    """Best FLOP/s of square matrix multiplies on this device, dtype and thread count."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        for _ in range(reps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def useful_flops(model, lengths: np.ndarray, lora_r: int, targets: tuple[str, ...]) -> float:
    """Useful FLOPs of LoRA training steps over sequences of the given real lengths (see module doc)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    layers = base.model.layers
    linear = lora = 0
    for layer in layers:
        for name, mod in layer.named_modules():
            w = getattr(mod, "base_layer", mod)
            if isinstance(w, torch.nn.Linear) and "lora_" not in name and not name.endswith("base_layer"):
                linear += w.in_features * w.out_features
                if name.split(".")[-1] in targets:
                    lora += lora_r * (w.in_features + w.out_features)
    width = cfg.num_attention_heads * (cfg.hidden_size // cfg.num_attention_heads)
    tokens = float(lengths.sum())
    attn_fwd = 2.0 * float((lengths.astype(np.float64) ** 2).sum()) * width * len(layers)  # causal QK^T + AV
    linear_fwd = 2.0 * linear * tokens
    lora_fwd = 2.0 * lora * tokens
    return 2 * linear_fwd + 3 * attn_fwd + 3 * lora_fwd  # fwd + activation grads; LoRA also weight grads


def plain_loop(llm, prompts, labels, steps: int, batch: int, c: profiles.TrainConfig, seed: int):
    model = heads.add_lora(llm, c)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=c.lr)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(prompts))
    tokens, t0 = 0, time.perf_counter()
    for s in range(steps):
        idx = order[s * batch:(s + 1) * batch]
        enc = llm.tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(llm.device)
        logits = model(**enc).logits  # full vocabulary at every position
        last = enc["attention_mask"].sum(1) - 1
        yes = logits[torch.arange(len(idx), device=logits.device), last, llm.yes_id]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            yes.float(), torch.as_tensor(labels[idx], dtype=torch.float32, device=yes.device))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        tokens += int(enc["attention_mask"].sum())
    return tokens / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=llm_mod.EMBEDDED)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=1024)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    models_dir = Settings.from_env().data_dir / "models"
    path = llm_mod.resolve_model_path(args.model, models_dir)
    split, items = movies_split()
    titles = dict(items.iter_rows())
    llm = llm_mod.load(path, device=args.device)
    print(f"model {path.name} on {llm.device} ({llm.dtype}), threads {torch.get_num_threads()}")
    build = prompt_mod.PromptBuilder(noun="movie", max_tokens=512,
                                     count_tokens=lambda t: len(llm.tokenizer.encode(t)))
    prompts, labels, _ = prompt_mod.examples(split, titles, build, "train", args.prompts)
    valid, valid_y, _ = prompt_mod.examples(split, titles, build, "valid", 8)
    lengths = np.array([len(ids) for ids in llm.tokenizer(prompts)["input_ids"]])
    print(f"{len(prompts)} train prompts, {lengths.mean():.0f} tokens on average (max {lengths.max()}); "
          f"{args.steps} steps of batch {args.batch}")

    peak = matmul_peak(llm.device, llm.dtype)
    print(f"matrix-multiply peak: {peak / 1e9:.1f} GFLOP/s ({llm.dtype})")
    c = profiles.TrainConfig(batch_size=args.batch, max_steps=args.steps, eval_every=10 ** 9,
                               checkpoint_every=10 ** 9, warmup_steps=0)
    plain = plain_loop(llm, prompts, labels, args.steps, args.batch, c, seed=c.seed)
    print(f"plain padded loop: {plain:.0f} tokens/s")

    ours_llm = llm_mod.load(path, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        res = lora_train.train(ours_llm, prompts, labels, valid, valid_y, Path(tmp), c, log=lambda s: None)
    seen = lora_train.epoch_batches(lengths, args.batch, c.seed, 0, c.length_group)[:args.steps].ravel()
    flops = useful_flops(ours_llm.model, lengths[seen], c.lora_r, c.target_modules)
    seconds = lengths[seen].sum() / res.tokens_per_s
    achieved = flops / seconds
    print(f"ours: {res.tokens_per_s:.0f} tokens/s; useful {flops / lengths[seen].sum() / 1e6:.0f} MFLOP/token, "
          f"{achieved / 1e9:.1f} GFLOP/s")
    print(f"training_tokens_per_s_speedup: {res.tokens_per_s / plain:.2f}x")
    print(f"training_flops_share_of_peak: {achieved / peak:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
