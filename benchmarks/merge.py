"""What the cocktail merge costs: inference of the merged dense model against the base model alone
on the same real ML-1M `movies` prompts (and, for reference, the unmerged mixture forward), and the
time to learn the mixing weights.

Adapters: `--base-spirit` and `--ingredient` PEFT folders (e.g. data/adapters/base_spirit/adapter),
or by default two random LoRA adapters (r 8 on q/v, like the trainer's) saved to a temporary
folder: the cost does not depend on the adapters' values.

How to read: `merged_inference_cost_ratio: <r>` (merged / base, best of interleaved repeats; the
merged model has the base's shape, so r should be ~1) and `merge_learn_s_per_step: <s>`.

    python benchmarks/merge.py [--prompts 64] [--repeats 3] [--learn-steps 10] [--device auto]
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
from models.llm import merge
from models.llm import scorer
from models.config import Settings
from models.llm.prompts import PromptBuilder


def random_adapters(path: Path, out: Path) -> dict[str, Path]:
    from peft import LoraConfig, get_peft_model

    folders = {}
    for k, name in enumerate(("base_spirit", "ingredient")):
        torch.manual_seed(k)
        model = llm_mod.load(path, device="cpu").model
        peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                init_lora_weights=False))
        peft.save_pretrained(out / name)
        folders[name] = out / name
    return folders


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=llm_mod.EMBEDDED)
    ap.add_argument("--base-spirit", type=Path)
    ap.add_argument("--ingredient", type=Path)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--learn-steps", type=int, default=10)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    path = llm_mod.resolve_model_path(args.model, Settings.from_env().data_dir / "models")
    split, items = movies_split()
    titles = dict(items.iter_rows())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.base_spirit and args.ingredient:
            folders = {"base_spirit": args.base_spirit, "ingredient": args.ingredient}
        else:
            folders = random_adapters(path, tmp / "adapters")
        base = llm_mod.load(path, device=args.device)
        print(f"model {path.name} on {base.device} ({base.dtype}), threads {torch.get_num_threads()}; "
              f"adapters: {', '.join(str(f) for f in folders.values())}")
        build = PromptBuilder(noun="movie", max_tokens=512, count_tokens=lambda t: len(base.tokenizer.encode(t)))
        valid = split.filter(split["split"] == "valid").head(args.prompts + 32)
        prompts = [build([titles[i] for i in h], t) for h, t in valid.select("history_item_ids", "title").iter_rows()]
        score_p, learn_p = prompts[:args.prompts], prompts[args.prompts:]

        mixed = llm_mod.load(path, device=args.device)
        mix = merge.Mixture(mixed.model, [merge.Adapter.load(n, f) for n, f in folders.items()])
        encode = lambda ps: mixed.tokenizer(list(ps), return_tensors="pt", padding=True).to(mixed.device)  # noqa: E731
        t0 = time.perf_counter()
        merge.learn_weights(mix, merge.yes_entropy(encode, mixed.yes_id), learn_p, lr=0.05, steps=args.learn_steps,
                            batch_size=8, seed=0)
        learn_s = (time.perf_counter() - t0) / args.learn_steps
        mixture_scores = scorer.score(mixed, score_p)
        dense = llm_mod.load(merge.save_dense(mix, mixed.tokenizer, tmp / "dense"), device=args.device)

        times = {"base": [], "merged": []}
        for _ in range(args.repeats):  # interleaved, best of: the machine is shared
            for name, m in (("base", base), ("merged", dense)):
                t0 = time.perf_counter()
                out = scorer.score(m, score_p)
                times[name].append(time.perf_counter() - t0)
                if name == "merged":
                    diff = float(np.abs(out - mixture_scores).max())
        n_tok = sum(len(base.tokenizer.encode(p)) for p in score_p)
        best = {k: min(v) for k, v in times.items()}
        print(f"{len(score_p)} prompts, {n_tok} tokens: base {best['base']:.2f} s, merged {best['merged']:.2f} s "
              f"(merged vs mixture forward max |diff| {diff:.2e})")
        print(f"learning the weights: {learn_s:.2f} s per step of 8 prompts")
        if diff > 1e-3:
            print(f"FAIL: merged model differs from the mixture forward by {diff:.2e}")
            return 1
    print(f"merge_learn_s_per_step: {learn_s:.2f}")
    print(f"merged_inference_cost_ratio: {best['merged'] / best['base']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
