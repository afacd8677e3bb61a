"""CoLLM's cost over TALLRec as the paper measures it (CoLLM Table VI: +15.5 % training and +12.5 %
inference on 2x A100, averaged over its data sets), on real ML-1M `movies` rows.

- Training: TALLRec (LoRA on the text-only prompt, `models.llm.trainer.train`) and CoLLM-MF's step 2
  (the CIE's MLP on the ID prompt over the frozen LLM, the same trainer with `models.llm.collm.CoLLMHead`)
  run the same number of steps with the same batch size on the same train rows, with the same
  validation rows (one evaluation at the end). The CIE's backward still crosses the whole LLM to
  reach the slot embeddings, and the ID prompt is longer: that is CoLLM's overhead.
- Inference: both score the same test rows with our shared-prefix scorer (`models.llm.scorer.score` on the
  text prompts, `score_ids` with the CIE's embeddings on the ID prompts).
- The MF vectors are random in MF's real shape (d = 256, every user and item of the split known):
  the cost of the CIE does not depend on their values, and training MF (minutes) would only delay
  the measurement.
Each method runs `--repeats` times, alternating, and the fastest run of each counts (the machine is
shared). Ratios are CoLLM / TALLRec; the paper's are 1.155 and 1.125.

How to read: the last two lines are `collm_train_overhead_vs_tallrec: <ratio>` and
`collm_infer_overhead_vs_tallrec: <ratio>`. Wall-clock on a shared machine: compare within one run.

    python benchmarks/collm.py [--model smollm2-135m-instruct] [--steps 6] [--batch 8] [--rows 96] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from _common import movies_split
from models.llm import collm
from models import profiles
from models.llm import trainer as lora_train
from models.llm import scorer
from models.llm import loading as llm_mod
from models.llm import prompts as prompt_mod
from models.cf.model import CFModel
from models.config import Settings

PAPER_TRAIN, PAPER_INFER = 1.155, 1.125


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rows", type=int, default=96, help="test rows scored by each method")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    split, items = movies_split()
    titles = dict(zip(items["item_id"], items["title"]))
    model_path = llm_mod.resolve_model_path(args.model, Settings.from_env().data_dir / "models")
    base = llm_mod.load(model_path, device="cpu")  # its tokenizer counts prompt tokens
    dim = 256
    users = np.sort(split["user_id"].unique().to_numpy()).astype(str)
    item_ids = np.sort(split["item_id"].unique().to_numpy()).astype(str)
    rng = np.random.default_rng(0)
    cf = CFModel("mf", users, item_ids, rng.normal(scale=0.1, size=(len(users), dim)).astype(np.float32),
                 rng.normal(scale=0.1, size=(len(item_ids), dim)).astype(np.float32),
                 np.ones(len(users), bool), np.ones(len(item_ids), bool), {"model": "mf"})
    count = lambda text: len(base.tokenizer.encode(text))  # noqa: E731
    text_b = prompt_mod.PromptBuilder(noun="movie", max_tokens=512, count_tokens=count)
    ids_b = prompt_mod.PromptBuilder(noun="movie", with_ids=True, max_tokens=512, count_tokens=count)
    n_train = args.steps * args.batch
    train = split.filter(pl.col("split") == "train").sample(n_train, seed=2023)
    valid = split.filter(pl.col("split") == "valid").sample(16, seed=2023)
    test = split.filter(pl.col("split") == "test").sample(args.rows, seed=2023)

    def rows(df):
        return list(df.select("user_id", "item_id", "history_item_ids").iter_rows())

    def text_prompts(df):
        return [text_b([titles[i] for i in h], titles[it]) for _, it, h in rows(df)]

    cfg = profiles.TrainConfig(max_steps=args.steps, batch_size=args.batch, eval_every=args.steps,
                                 checkpoint_every=args.steps, warmup_steps=1, patience=100)
    timings: dict[str, list[float]] = {"tallrec_train": [], "collm_train": [], "tallrec_infer": [], "collm_infer": []}
    tokens = {}
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            # TALLRec: a fresh LoRA on the text-only prompts
            lm = llm_mod.load(model_path, device="cpu")
            t0 = time.perf_counter()
            lora_train.train(lm, text_prompts(train), train["label"].to_numpy(), text_prompts(valid),
                             valid["label"].to_numpy(), Path(tmp) / "tallrec", cfg, log=lambda s: None)
            timings["tallrec_train"].append(time.perf_counter() - t0)
            # CoLLM-MF step 2: the CIE over the frozen LLM on the ID prompts of the same rows
            lm2 = llm_mod.load(model_path, device="cpu")
            torch.manual_seed(0)
            head = collm.CoLLMHead(lm2.model, cf, lm2.yes_id, "two_step")
            tr_ids, used = collm.encode_rows(head, lm2.tokenizer, rows(train), titles, text_b, ids_b)
            va_ids, _ = collm.encode_rows(head, lm2.tokenizer, rows(valid), titles, text_b, ids_b)
            assert used.all()
            t0 = time.perf_counter()
            lora_train.train(lm2, tr_ids, train["label"].to_numpy(), va_ids, valid["label"].to_numpy(),
                             Path(tmp) / "collm", cfg, log=lambda s: None, head=head)
            timings["collm_train"].append(time.perf_counter() - t0)
        # inference on the same test rows, both in their deployed form: a dense model (TALLRec's LoRA
        # folded in costs what the dense base costs, so lm2's frozen dense weights stand for it), and
        # CoLLM the same dense model with the CIE's embeddings at the slots; prompts tokenized before
        te_text = [lm2.tokenizer.encode(p) for p in text_prompts(test)]
        te_ids, _ = collm.encode_rows(head, lm2.tokenizer, rows(test), titles, text_b, ids_b)
        tokens = {"text": float(np.mean([len(t) for t in te_text])), "ids": float(np.mean([len(t) for t in te_ids]))}
        head.eval()
        t0 = time.perf_counter()
        scorer.score_ids(lm2, te_text)
        timings["tallrec_infer"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.no_grad():
            scorer.score_ids(lm2, te_ids, embed=head.embed)
        timings["collm_infer"].append(time.perf_counter() - t0)
        print(f"repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in timings.items()), flush=True)
    best = {k: min(v) for k, v in timings.items()}
    print(f"model {args.model}, {args.steps} steps x batch {args.batch} ({n_train} train rows), {args.rows} test rows; "
          f"mean prompt tokens: text {tokens['text']:.0f}, ID {tokens['ids']:.0f}; torch threads {torch.get_num_threads()}")
    print("| stage | TALLRec s | CoLLM-MF s | ratio (ours) | ratio (paper, 2x A100) |")
    print("|---|---|---|---|---|")
    train_ratio = best["collm_train"] / best["tallrec_train"]
    infer_ratio = best["collm_infer"] / best["tallrec_infer"]
    print(f"| training ({args.steps} steps) | {best['tallrec_train']:.1f} | {best['collm_train']:.1f} | "
          f"{train_ratio:.3f} | {PAPER_TRAIN} |")
    print(f"| inference ({args.rows} rows) | {best['tallrec_infer']:.1f} | {best['collm_infer']:.1f} | "
          f"{infer_ratio:.3f} | {PAPER_INFER} |")
    print(f"collm_train_overhead_vs_tallrec: {train_ratio:.3f}")
    print(f"collm_infer_overhead_vs_tallrec: {infer_ratio:.3f}")


if __name__ == "__main__":
    main()
