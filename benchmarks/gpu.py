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
of what this device actually reaches, not of a datasheet. The model is built as the project loads it
on a GPU: bf16 weights, fp32 LoRA weights and optimizer state, bf16 autocast.

`--memory` prints the GPU memory a training step needs at the `full` profile's settings (CoLLM: micro-
batch 16 of the effective 32, LoRA r 8 on q/v; RecCocktail: micro-batch 8 of the effective 128, r 16
on every linear layer), for SmolLM2-135M, Qwen2-1.5B and the 7B backbones, with and without gradient
checkpointing: bf16 weights + LoRA weights, gradients and AdamW moments in fp32 + the activations
autograd keeps. The activations are measured, not guessed: the tensors autograd saves in a training
step of a 1- and a 2-layer model of the real width (on this machine, in bf16) give the bytes per token
per layer and the rest, scaled to the real depth and token count. Attention probabilities a math-path
kernel saves are left out (CUDA's flash / memory-efficient attention keeps none); add about 0.5-1 GiB
for the CUDA context.

    python benchmarks/gpu.py                 # CUDA when present: SmolLM2-135M and Qwen2-1.5B shapes
    python benchmarks/gpu.py --device cpu    # here: the SmolLM2-135M shape, short sequences
    python benchmarks/gpu.py --memory        # the memory table (CPU is enough; about a minute)
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

# transformers' notice about its own internals (peft calls it), as orchestration/__init__.py filters it
warnings.filterwarnings("ignore", category=FutureWarning, message=r"`is_gradient_checkpointing` is deprecated")

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
# the 7B backbones of the papers, for the memory table (never instantiated whole here)
MEMORY_SHAPES = {
    **SHAPES,
    # Qwen/Qwen2-7B-Instruct's config (RecCocktail)
    "qwen2-7b": (Qwen2ForCausalLM, Qwen2Config(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, max_position_embeddings=32768, tie_word_embeddings=False, rope_theta=1000000.0)),
    # lmsys/vicuna-7b-v1.3's config (CoLLM; Llama-7B's shape)
    "vicuna-7b": (LlamaForCausalLM, LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, max_position_embeddings=2048, tie_word_embeddings=False)),
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# the `full` profile's micro-batches (config/profiles.yaml) and typical sequence lengths: CoLLM's ML-1M
# prompts are 160-190 tokens; RecCocktail's listwise prompts (30 candidates) 500-700, plus the answer
MEMORY_TASKS = {
    "collm": {"micro_batch": 16, "seq": 256, "r": 8, "targets": ["q_proj", "v_proj"], "answer_tokens": 0},
    "reccocktail": {"micro_batch": 8, "seq": 1024, "r": 16, "targets": LORA_TARGETS, "answer_tokens": 64},
}


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
    model = cls(cfg).to(device, dtype)  # as the project loads it: bf16 weights on a GPU ...
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TARGETS,
                                             task_type="CAUSAL_LM"), autocast_adapter_dtype=True)  # ... fp32 LoRA
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
    model = opt = None  # frees the memory before the next shape (step() is not called again)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return out


def _saved_bytes(cls, cfg, layers: int, task: dict, tokens: int) -> tuple[float, int]:
    """(bytes autograd saves in one training step, LoRA parameters) of a `layers`-deep model of the
    shape: one sequence of `tokens`, bf16 weights, fp32 LoRA, the task's objective (the Yes logit at the
    last position, or the LM loss on the last `answer_tokens` positions). The weights themselves (saved
    for the backward pass, but already in memory) and attention probabilities ([..., tokens, tokens],
    saved by a math-path kernel only) are not counted."""
    cfg = copy.deepcopy(cfg)
    cfg.num_hidden_layers = layers
    torch.manual_seed(0)
    model = get_peft_model(cls(cfg).to(torch.bfloat16),
                           LoraConfig(r=task["r"], lora_alpha=2 * task["r"], target_modules=task["targets"],
                                      task_type="CAUSAL_LM"), autocast_adapter_dtype=True)
    model.train()
    seen: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}  # saved weights cost nothing extra

    def pack(t: torch.Tensor):
        if t.untyped_storage().data_ptr() not in weights and not (t.ndim >= 2 and t.shape[-1] == t.shape[-2] == tokens):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()  # shared storage counted once
        return t

    ids = torch.randint(0, cfg.vocab_size, (1, tokens))
    decoder, head = model.get_base_model().get_decoder(), model.get_base_model().get_output_embeddings()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = decoder(input_ids=ids, use_cache=False).last_hidden_state
        n = task["answer_tokens"]
        if n:
            loss = torch.nn.functional.cross_entropy(head(hidden[0, -n - 1:-1]).float(), ids[0, -n:])
        else:
            loss = (hidden[0, -1] @ head.weight[0]).float()
    loss.backward()
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return float(sum(seen.values())), lora


def memory_estimate(name: str, task_name: str, probe_tokens: int = 128) -> dict:
    """GiB a training step of the shape needs at the task's `full`-profile settings (module docstring)."""
    cls, cfg = MEMORY_SHAPES[name]
    task = dict(MEMORY_TASKS[task_name])
    # the probe keeps the answer's share of the sequence (its logits are vocabulary-wide)
    task["answer_tokens"] = max(1, round(task["answer_tokens"] * probe_tokens / task["seq"])) if task["answer_tokens"] else 0
    one, lora1 = _saved_bytes(cls, cfg, 1, task, probe_tokens)
    two, lora2 = _saved_bytes(cls, cfg, 2, task, probe_tokens)
    per_layer, rest = (two - one) / probe_tokens, (2 * one - two) / probe_tokens  # bytes per token
    layers, tokens = cfg.num_hidden_layers, task["micro_batch"] * task["seq"]
    with torch.device("meta"):
        params = sum(p.numel() for p in cls(cfg).parameters())
    lora = lora1 + (lora2 - lora1) * (layers - 1)
    fixed = params * 2 + lora * 16  # bf16 weights; fp32 LoRA weights, gradients, AdamW's two moments
    plain = per_layer * layers * tokens + rest * tokens
    # checkpointing keeps each layer's input (bf16) and recomputes one layer at a time in the backward pass
    ckpt = cfg.hidden_size * 2 * layers * tokens + per_layer * tokens + rest * tokens
    gib = 2 ** 30
    return {"params": params, "lora": lora, "tokens": tokens, "weights_gib": params * 2 / gib,
            "per_layer_token_kib": per_layer / 1024, "total_gib": (fixed + plain) / gib,
            "total_ckpt_gib": (fixed + ckpt) / gib}


def print_memory_table(shapes: list[str]) -> None:
    print("| backbone | task (full profile) | micro-batch x tokens | weights (bf16) | LoRA params | activations per "
          "token per layer | step memory | with gradient checkpointing |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        for task_name, task in MEMORY_TASKS.items():
            r = memory_estimate(shape, task_name)
            print(f"| {shape} | {task_name} (r {task['r']}, {len(task['targets'])} targets) | {task['micro_batch']} x "
                  f"{task['seq']} | {r['weights_gib']:.2f} GiB | {r['lora'] / 1e6:.1f} M | "
                  f"{r['per_layer_token_kib']:.1f} KiB | {r['total_gib']:.1f} GiB | {r['total_ckpt_gib']:.1f} GiB |",
                  flush=True)
            print(f"gpu_memory_gib[{shape},{task_name}]: {r['total_gib']:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cuda or cpu")
    ap.add_argument("--shapes", default=None, help="comma-separated of " + ", ".join(SHAPES)
                    + "; default: both on CUDA, smollm2-135m on CPU")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step; default 8 on CUDA, 2 on CPU")
    ap.add_argument("--seq", type=int, default=None, help="tokens per sequence; default 512 on CUDA, 64 on CPU")
    ap.add_argument("--steps", type=int, default=None, help="timed steps; default 10 on CUDA, 2 on CPU")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default=None, help="default bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--memory", action="store_true", help="print the memory table of the `full` profile's settings "
                    "(" + ", ".join(MEMORY_SHAPES) + ") instead of timing")
    args = ap.parse_args()
    if args.memory:
        print_memory_table(args.shapes.split(",") if args.shapes else list(MEMORY_SHAPES))
        return
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
