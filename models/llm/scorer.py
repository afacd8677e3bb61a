"""Yes/No scoring: the logit of the answer token " Yes" at the last prompt position (docs/protocols.md
section 3), computed without the waste of the reference implementations.

- Only the last real position of each prompt goes through the output layer, and only its " Yes"
  row: one dot product per prompt instead of full-vocabulary logits at every position.
- Prompts are sorted by length and cut into batches under a token budget, so padding stays small.
- The prefix a group of prompts shares (the template's opening for pointwise scoring; a user's
  whole history for that user's ranking candidates) is encoded once, and its key/value cache is
  reused by every prompt of the group.

`score_reference` is the plain forward pass the others are checked against. The `*_ids` functions
take token id lists and an optional `embed` (ids -> input embeddings): CoLLM's head passes its own,
which puts CF vectors at the slot positions; everything else is the same."""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch

from models.llm.loading import LoadedLLM, answer_row, cache_kwarg, decoder_of, output_cache, prompt_ids


def _yes_row(llm: LoadedLLM) -> tuple[torch.Tensor, torch.Tensor | None]:
    return answer_row(llm.model, llm.yes_id)


@torch.no_grad()
def score_reference(llm: LoadedLLM, prompts: Sequence[str], batch_size: int = 8) -> np.ndarray:
    """CoLLM-style: padded batches in input order, full logits at every position, then the Yes
    logit at each prompt's last real token."""
    tok = llm.tokenizer
    out = []
    for start in range(0, len(prompts), batch_size):
        ids = [prompt_ids(tok, p) for p in prompts[start:start + batch_size]]
        enc = tok.pad({"input_ids": ids}, return_tensors="pt").to(llm.device)
        logits = llm.model(**enc).logits  # (B, S, vocab)
        last = enc["attention_mask"].sum(1) - 1
        out.append(logits[torch.arange(len(last)), last, llm.yes_id].float().cpu())
    return torch.cat(out).numpy() if out else np.empty(0)


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all sequences share, leaving at least one token in each."""
    shortest = min(len(s) for s in seqs)
    n = 0
    while n < shortest - 1 and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n


def _inputs(ids: torch.Tensor, embed: Callable[[torch.Tensor], torch.Tensor] | None) -> dict:
    return {"input_ids": ids} if embed is None else {"inputs_embeds": embed(ids)}


@torch.no_grad()
def _encode_prefix(llm: LoadedLLM, prefix: list[int], embed=None):
    if not prefix:
        return None
    ids = torch.tensor([prefix], device=llm.device)
    return output_cache(decoder_of(llm.model)(**_inputs(ids, embed), use_cache=True))


@torch.no_grad()
def _score_suffixes(llm: LoadedLLM, cache, prefix_len: int, suffixes: list[list[int]], yes: tuple,
                    embed=None) -> torch.Tensor:
    """Yes logits of prompts = shared prefix (already in `cache`) + each suffix, in one batch."""
    b = len(suffixes)
    width = max(len(s) for s in suffixes)
    pad = llm.tokenizer.pad_token_id
    ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros((b, prefix_len + width), dtype=torch.long)
    mask[:, :prefix_len] = 1
    for k, s in enumerate(suffixes):
        ids[k, :len(s)] = torch.tensor(s)
        mask[k, prefix_len:prefix_len + len(s)] = 1
    positions = (prefix_len + torch.arange(width)).expand(b, width)
    past = None
    if cache is not None:
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(b)
    decoder = decoder_of(llm.model)
    hidden = decoder(**_inputs(ids.to(llm.device), embed), attention_mask=mask.to(llm.device),
                     position_ids=positions.to(llm.device), use_cache=cache is not None,
                     **({cache_kwarg(decoder): past} if past is not None else {})).last_hidden_state
    last = torch.tensor([len(s) - 1 for s in suffixes], device=llm.device)
    row, bias = yes
    logit = hidden[torch.arange(b, device=llm.device), last] @ row
    return (logit if bias is None else logit + bias).float().cpu()


@torch.no_grad()
def score_id_groups(llm: LoadedLLM, groups: Sequence[Sequence[list[int]]], max_batch_tokens: int = 4096,
                    embed=None) -> list[torch.Tensor]:
    """As `score_groups`, on token id lists (with `embed` for ids past the vocabulary)."""
    yes = _yes_row(llm)
    results = []
    for seqs in groups:
        n = _common_prefix(seqs) if len(seqs) > 1 else 0
        cache = _encode_prefix(llm, list(seqs[0][:n]), embed)
        order = sorted(range(len(seqs)), key=lambda k: len(seqs[k]))
        scores = torch.empty(len(seqs))
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * (len(seqs[order[end]]) - n) <= max_batch_tokens:
                end += 1
            batch = order[start:end]
            scores[batch] = _score_suffixes(llm, cache, n, [list(seqs[k][n:]) for k in batch], yes, embed)
            start = end
        results.append(scores)
    return results


@torch.no_grad()
def score_groups(llm: LoadedLLM, groups: Sequence[Sequence[str]], max_batch_tokens: int = 4096) -> list[np.ndarray]:
    """Yes logits for groups of prompts (e.g. one user's ranking candidates); each group's shared
    prefix is encoded once. Within a group, suffixes are sorted by length and batched under
    `max_batch_tokens` (suffix tokens, padding included); results come back in the caller's order."""
    tokenized = [[prompt_ids(llm.tokenizer, p) for p in group] for group in groups]
    return [s.numpy() for s in score_id_groups(llm, tokenized, max_batch_tokens)]


@torch.no_grad()
def score(llm: LoadedLLM, prompts: Sequence[str], max_batch_tokens: int = 4096, min_shared_tokens: int = 48,
          max_group: int = 64) -> np.ndarray:
    """Pointwise Yes logits. Prompts are sorted by their tokens; runs of neighbours that share at
    least `min_shared_tokens` (typically one user's rows with the same history) form groups that
    reuse one encoded prefix; the rest are scored together, reusing the template's opening."""
    return score_ids(llm, [prompt_ids(llm.tokenizer, p) for p in prompts], max_batch_tokens, min_shared_tokens,
                     max_group)


@torch.no_grad()
def score_ids(llm: LoadedLLM, seqs: Sequence[list[int]], max_batch_tokens: int = 4096, min_shared_tokens: int = 48,
              max_group: int = 64, embed=None) -> np.ndarray:
    """As `score`, on token id lists (with `embed` for ids past the vocabulary)."""
    if not seqs:
        return np.empty(0)
    order = sorted(range(len(seqs)), key=lambda k: seqs[k])
    groups: list[list[int]] = []
    loose: list[int] = []
    run = [order[0]]
    for k in order[1:]:
        if len(run) < max_group and _common_prefix([seqs[run[0]], seqs[k]]) >= min_shared_tokens:
            run.append(k)
        else:
            (groups.append(run) if len(run) > 1 else loose.extend(run))
            run = [k]
    (groups.append(run) if len(run) > 1 else loose.extend(run))
    if loose:
        groups.append(loose)
    out = np.empty(len(seqs), dtype=np.float32)
    for members, scores in zip(groups, score_id_groups(llm, [[seqs[k] for k in g] for g in groups], max_batch_tokens,
                                                       embed)):
        out[members] = scores.numpy()
    return out
