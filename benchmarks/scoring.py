"""Yes-logit scoring on real ML-1M `movies` prompts: our scorer against the CoLLM-style forward
(padded batches, full-vocabulary logits at every position) and the TALLRec-style generate (greedy
generation, reading the first step's scores), same prompts, same model.

- Pointwise: the first N test rows' text-only prompts (history = their last 10 positives).
- Ranking: M users, each with one test row's 30 candidates (target + 29 negatives, seeded); our
  scorer encodes each user's prompt prefix (template + history) once for all 30 candidates.
Scores must agree within 1e-3 (max abs difference) or the script exits non-zero.

- Listwise (RecCocktail as published): L users' listwise prompts (history 10, 30 candidates, the
  authors' format in the chat template); our candidate-likelihood ranking (prompt encoded once, its
  cache shared by the 30 continuations) against 30 independent full forwards per list (the
  log-likelihoods must agree within 1e-3) and against greedy generation of the answer.

How to read: the lines `scoring_pointwise_speedup: <N>x` and `scoring_ranking30_speedup: <N>x`
(CoLLM-style time / ours), `listwise_ranking_speedup_vs_independent: <N>x` and
`listwise_ranking_speedup_vs_generate: <N>x` (their time / ours), `listwise_one_encoding_speedup: <N>x`
(answer and ranking apart / both from the greedy search's cache, as `listwise_scores` runs them).
Wall-clock on a shared machine: compare ratios.

    python benchmarks/scoring.py [--model smollm2-135m-instruct] [--pointwise 64] [--users 8]
                                 [--generate-prompts 8] [--max-new-tokens 128] [--lists 4]
                                 [--answer-tokens 80] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import polars as pl
import torch

from _common import movies_split
from models.llm import loading as llm_mod
from models.llm import listwise
from models.llm import scorer
from models.data.candidates import sample_candidates
from models.config import Settings
from models.llm.prompts import PromptBuilder


def prompts_for(split: pl.DataFrame, titles: dict[str, str], n_point: int, n_users: int):
    build = PromptBuilder(noun="movie")
    test = split.filter(pl.col("split") == "test").with_row_index("row")
    point = [build([titles[i] for i in h], t) for h, t in test.head(n_point).select("history_item_ids", "title").iter_rows()]
    cands = sample_candidates(split, 29, 2023)
    first_per_user = test.group_by("user_id", maintain_order=True).first().head(n_users)
    groups = []
    for row, hist in first_per_user.select("row", "history_item_ids").iter_rows():
        items = cands.filter(pl.col("row") == row)["candidates"][0]
        groups.append([build([titles[i] for i in hist], titles[c]) for c in items])
    return point, groups


@torch.no_grad()
def generate_first_step(llm, prompts, max_new_tokens: int) -> np.ndarray:
    """TALLRec-style: generate (greedy, up to max_new_tokens), keep the first step's Yes logit."""
    out = []
    for p in prompts:
        enc = llm.tokenizer(p, return_tensors="pt").to(llm.device)
        gen = llm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, output_scores=True,
                                 return_dict_in_generate=True, pad_token_id=llm.tokenizer.pad_token_id,
                                 min_new_tokens=max_new_tokens)
        out.append(float(gen.scores[0][0, llm.yes_id]))
    return np.array(out)


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=llm_mod.EMBEDDED)
    ap.add_argument("--pointwise", type=int, default=64)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--generate-prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--lists", type=int, default=4)
    ap.add_argument("--answer-tokens", type=int, default=80)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    models_dir = Settings.from_env().data_dir / "models"
    llm = llm_mod.load(llm_mod.resolve_model_path(args.model, models_dir), device=args.device)
    print(f"model {llm.path.name} on {llm.device} ({llm.dtype}), threads {torch.get_num_threads()}")
    split, items = movies_split()
    titles = dict(items.iter_rows())
    point, groups = prompts_for(split, titles, args.pointwise, args.users)
    n_tokens = sum(len(llm.tokenizer.encode(p)) for p in point)
    print(f"pointwise: {len(point)} prompts, {n_tokens} tokens; ranking: {len(groups)} users x "
          f"{len(groups[0])} candidates")

    scorer.score(llm, point[:4])  # warm-up (first-call allocations)
    ref, ref_s = timed(lambda: scorer.score_reference(llm, point))
    ours, ours_s = timed(lambda: scorer.score(llm, point))
    diff = float(np.abs(ref - ours).max())
    print(f"pointwise: CoLLM-style {ref_s:.2f} s ({n_tokens / ref_s:.0f} tokens/s), ours {ours_s:.2f} s; "
          f"max |diff| {diff:.2e}")
    gen_n = min(args.generate_prompts, len(point))
    gen, gen_s = timed(lambda: generate_first_step(llm, point[:gen_n], args.max_new_tokens))
    gen_diff = float(np.abs(gen - ours[:gen_n]).max())
    print(f"TALLRec-style generate ({args.max_new_tokens} new tokens) on {gen_n} prompts: {gen_s:.2f} s "
          f"({gen_s / gen_n:.2f} s/prompt vs ours {ours_s / len(point):.3f} s/prompt, "
          f"{(gen_s / gen_n) / (ours_s / len(point)):.1f}x); max |diff| {gen_diff:.2e}")

    flat = [p for g in groups for p in g]
    rref, rref_s = timed(lambda: scorer.score_reference(llm, flat))
    rours, rours_s = timed(lambda: np.concatenate(scorer.score_groups(llm, groups)))
    rdiff = float(np.abs(rref - rours).max())
    print(f"ranking: CoLLM-style {rref_s:.2f} s, ours {rours_s:.2f} s; max |diff| {rdiff:.2e}")
    lw = listwise.build_examples(split, titles, "test", llm.tokenizer, listwise.Words("watching history", "movies",
                                 "watched", "watching"), 10, 29, 2023, args.lists)
    prompt_ids = [llm.tokenizer(e.prompt, add_special_tokens=False)["input_ids"] for e in lw]
    conts = [[listwise.continuation_ids(llm.tokenizer, t) for t in e.candidates] for e in lw]
    print(f"listwise: {len(lw)} lists, {np.mean([len(p) for p in prompt_ids]):.0f} prompt tokens each, 30 candidates")
    lik, lik_s = timed(lambda: [listwise.candidate_loglik(llm, p, c) for p, c in zip(prompt_ids, conts)])
    ind, ind_s = timed(lambda: [listwise.candidate_loglik_reference(llm, p, c) for p, c in zip(prompt_ids, conts)])
    ldiff = float(max(np.abs(a - b).max() for a, b in zip(lik, ind)))
    _, gen_lw_s = timed(lambda: listwise.generate(llm, [e.prompt for e in lw], args.answer_tokens))
    print(f"listwise: shared-cache ranking {lik_s:.2f} s, 30 independent forwards {ind_s:.2f} s, greedy answer "
          f"({args.answer_tokens} new tokens at most) {gen_lw_s:.2f} s; max |diff| {ldiff:.2e}")
    # what listwise_scores runs: the ranking from the greedy search's own cache (one encoding a prompt)
    texts = listwise.generate(llm, [e.prompt for e in lw], args.answer_tokens)
    (both_texts, both_lik, _), both_s = timed(lambda: listwise.generate_and_rank(
        llm, [e.prompt for e in lw], [e.candidates for e in lw], args.answer_tokens))
    bdiff = float(max(np.abs(a - b).max() for a, b in zip(lik, both_lik)))
    print(f"listwise: answer + ranking from one encoding of each prompt {both_s:.2f} s against "
          f"{lik_s + gen_lw_s:.2f} s apart; max |diff| {bdiff:.2e}; the same answers: {both_texts == texts}")
    ldiff = max(ldiff, bdiff)
    if max(diff, gen_diff, rdiff, ldiff) > 1e-3:
        print(f"FAIL: scores differ by more than 1e-3 ({diff:.2e}, {gen_diff:.2e}, {rdiff:.2e}, {ldiff:.2e})")
        return 1
    print(f"scoring_pointwise_speedup: {ref_s / ours_s:.2f}x")
    print(f"scoring_ranking30_speedup: {rref_s / rours_s:.2f}x")
    print(f"listwise_ranking_speedup_vs_independent: {ind_s / lik_s:.2f}x")
    print(f"listwise_ranking_speedup_vs_generate: {gen_lw_s / lik_s:.2f}x")
    print(f"listwise_one_encoding_speedup: {(lik_s + gen_lw_s) / both_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
