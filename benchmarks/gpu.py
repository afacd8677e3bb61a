"""A GPU check anyone can run: LoRA training and scoring throughput of the project's backbones, in
their real shapes with random weights (which cost the same as real ones), with nothing but torch,
transformers and peft (no Dagster, no DuckDB, no data, no downloads).

For each shape it prints, per line:
- `gpu_train_tokens_per_s[<shape>]`: tokens per second of LoRA training steps (r 16 on every linear
  projection, AdamW, LM loss on every token; bf16 autocast with fp32 LoRA weights on CUDA);
- `gpu_train_mfu[<shape>]`: the useful FLOP/s of those steps over this device's measured matrix-
  multiply peak in the same dtype (the useful FLOPs per token: the frozen weights' forward and
  activation gradients, 4 x non-embedding parameters, plus causal attention, plus LoRA's share);
- `gpu_score_tokens_per_s[<shape>]`: tokens per second of forward passes without gradients (scoring).
The peak is a square matrix multiply timed in the same run (`matmul_peak_tflops`), so the share is
of what this device actually reaches, not of a datasheet.

    python benchmarks/gpu.py                 # CUDA when present: SmolLM2-135M and Qwen2-1.5B shapes
    python benchmarks/gpu.py --device cpu    # here: the SmolLM2-135M shape, short sequences
"""

from __future__ import annotations

import argparse
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

SHAPES = {
    # HuggingFaceTB/SmolLM2-135M-Instruct's config
    "smollm2-135m": (LlamaForCausalLM, LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, tie_word_embeddings=True, rope_theta=100000.0)),
    # Qwen/Qwen2-1.5B-Instruct's config
    "qwen2-1.5b": (Qwen2ForCausalLM, Qwen2Config(
        vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1000000.0)),
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """FLOP/s of a square matrix multiply in `dtype`, the best of `repeats`."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def useful_flops_per_token(model: torch.nn.Module, cfg, seq: int, lora_params: int) -> float:
    """Training FLOPs per token of a LoRA step on a frozen base: the frozen matrices and the output
    layer forward (2N + 2dV) and their activation gradients (the same again; no weight gradients),
    causal attention (QK^T and AV over half the sequence on average: 2 L seq d forward, twice that
    backward), and the LoRA matrices' forward and both gradients (6 x their parameters)."""
    embed = model.get_input_embeddings().weight.numel()
    n = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name) - embed
    output = 2 * cfg.hidden_size * cfg.vocab_size
    attention = 2 * cfg.num_hidden_layers * seq * cfg.hidden_size
    return 2 * (2 * n + output) + 3 * attention + 6 * lora_params


def run_shape(name: str, device: torch.device, dtype: torch.dtype, batch: int, seq: int, steps: int) -> dict:
    cls, cfg = SHAPES[name]
    torch.manual_seed(0)
    model = cls(cfg).to(device)  # fp32 weights; bf16 through autocast (fp32 LoRA weights and optimiser state)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TARGETS,
                                             task_type="CAUSAL_LM"))
    lora_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step():
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    step()  # warm-up (kernels, allocator)
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    train_s = (time.perf_counter() - t) / steps
    model.eval()
    with torch.no_grad(), autocast:
        model(input_ids=ids)
        sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            model(input_ids=ids)
        sync(device)
    score_s = (time.perf_counter() - t) / steps
    tokens = batch * seq
    flops = useful_flops_per_token(model.get_base_model(), cfg, seq, lora_params) * tokens / train_s
    out = {"train_tokens_per_s": tokens / train_s, "train_tflops": flops / 1e12, "score_tokens_per_s": tokens / score_s,
           "lora_params": lora_params, "peak_memory_gib": (torch.cuda.max_memory_allocated(device) / 2 ** 30
                                                           if device.type == "cuda" else float("nan"))}
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cuda or cpu")
    ap.add_argument("--shapes", default=None, help="comma-separated of " + ", ".join(SHAPES)
                    + "; default: both on CUDA, smollm2-135m on CPU")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step; default 8 on CUDA, 2 on CPU")
    ap.add_argument("--seq", type=int, default=None, help="tokens per sequence; default 512 on CUDA, 64 on CPU")
    ap.add_argument("--steps", type=int, default=None, help="timed steps; default 10 on CUDA, 2 on CPU")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default=None, help="default bf16 on CUDA, fp32 on CPU")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    shapes = args.shapes.split(",") if args.shapes else (list(SHAPES) if gpu else ["smollm2-135m"])
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise SystemExit(f"unknown shape(s) {unknown}: choose from {', '.join(SHAPES)}")
    batch, seq, steps = args.batch or (8 if gpu else 2), args.seq or (512 if gpu else 64), args.steps or (10 if gpu else 2)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if gpu else "fp32")]
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    peak = matmul_peak(device, dtype)
    print(f"device {name}; dtype {dtype}; torch {torch.__version__}; batch {batch} x {seq} tokens; {steps} timed steps")
    print(f"matmul_peak_tflops: {peak / 1e12:.2f}")
    for shape in shapes:
        r = run_shape(shape, device, dtype, batch, seq, steps)
        print(f"{shape}: LoRA params {r['lora_params']:,}; training {r['train_tokens_per_s']:,.0f} tokens/s "
              f"({r['train_tflops']:.2f} useful TFLOP/s); scoring {r['score_tokens_per_s']:,.0f} tokens/s; "
              + (f"peak memory {r['peak_memory_gib']:.1f} GiB" if gpu else "peak memory: CUDA only"))
        print(f"gpu_train_tokens_per_s[{shape}]: {r['train_tokens_per_s']:.0f}")
        print(f"gpu_train_mfu[{shape}]: {r['train_tflops'] * 1e12 / peak:.3f}")
        print(f"gpu_score_tokens_per_s[{shape}]: {r['score_tokens_per_s']:.0f}")


if __name__ == "__main__":
    main()
