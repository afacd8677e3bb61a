"""RecCocktail's listwise next-item task as the authors' code has it (docs/protocols.md section 7): the
prompt in the backbone's chat template, the candidates, the answer, its loss mask, greedy generation
and its parser, the candidate-likelihood ranking (ours), and the merge's entropy objective. The
metrics are the report's (models/reporting/listwise.py).
No Dagster here."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import polars as pl
import torch

from models.llm.loading import cache_kwarg, decoder_of, output_cache
from models.data.candidates import sample_candidates
from models.llm.prompts import sample_rows

SYSTEM = "You are a helpful recommendation assistant."
SEP = "||"
USER_TEMPLATE = ("Given the following {history} of a user:[{items}]. Please select the top 5 most likely {products} "
                 "to be {purchased} by the user based on the user's {history}. And sort them from highest to lowest "
                 "likelihood of {purchasing}.Candidates: [{candidates}]. The top 5 most likely {products} to be "
                 "{purchased} by the user are:")


@dataclass(frozen=True)
class Words:
    """The domain's words in the prompt; the defaults are the authors' (Amazon)."""

    history: str = "purchase history"
    products: str = "products"
    purchased: str = "purchased"
    purchasing: str = "purchasing"


def user_message(history_titles: Sequence[str], candidate_titles: Sequence[str], words: Words = Words()) -> str:
    return USER_TEMPLATE.format(history=words.history, products=words.products, purchased=words.purchased,
                                purchasing=words.purchasing, items=SEP.join(history_titles),
                                candidates=SEP.join(candidate_titles))


def prompt_text(tokenizer, history_titles: Sequence[str], candidate_titles: Sequence[str],
                words: Words = Words()) -> str:
    """The authors' system and user messages in the backbone's chat template, ready for the answer."""
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": user_message(history_titles, candidate_titles, words)}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def answer_text(target_title: str, candidate_titles: Sequence[str], rng: np.random.Generator, n_items: int = 5) -> str:
    """The target title, then n_items - 1 other candidates drawn by `rng`, joined by `||`."""
    others = [c for c in candidate_titles if c != target_title]
    picked = rng.choice(len(others), min(n_items - 1, len(others)), replace=False)
    return SEP.join([target_title, *(others[i] for i in picked)])


@dataclass
class ListExample:
    user_id: str
    row: int  # position of the row within its split part (the split file's order)
    history: list[str]
    candidates: list[str]  # titles, shuffled
    target: int  # index of the target in `candidates`
    candidate_ids: list[str]
    prompt: str
    answer: str


def _histories(split: pl.DataFrame, history_length: int) -> dict[tuple[str, str, int], list[str]]:
    """(user, item, ts) -> the user's earlier item ids (all parts, (ts, item_id) order), the last N."""
    out = {}
    for user, items, times in split.sort("user_id", "ts", "item_id").group_by("user_id", maintain_order=True).agg(
            "item_id", "ts").iter_rows():
        for k, (item, ts) in enumerate(zip(items, times)):
            out[(user, item, ts)] = items[max(0, k - history_length):k]
    return out


def build_examples(split: pl.DataFrame, titles: dict[str, str], part: str, tokenizer, words: Words,
                   history_length: int, n_negatives: int = 29, seed: int = 2023, limit: int | float | None = None,
                   max_prompt_tokens: int | None = None, n_items: int = 5, by_user: bool = False,
                   candidate_lists: pl.DataFrame | None = None) -> list[ListExample]:
    """The listwise examples of a seeded sample of one split part (`models.llm.prompts.sample_rows`; with
    `by_user`, `limit` counts users): history = the user's earlier items, the last `history_length`;
    candidates = the target and `n_negatives` seeded items the user never interacted with, shuffled;
    the answer as published. `candidate_lists` (the `ranking_candidates` table: `row`, `candidates`
    with the target first) gives the lists instead of drawing them: the test lists every method of
    the report ranks, the CF models included."""

    chosen, positions = sample_rows(split, part, limit, seed, by_user)
    cands = candidate_lists if candidate_lists is not None else \
        sample_candidates(split, n_negatives, seed, part=part, positions=positions)
    lists = dict(zip(cands["row"].to_list(), cands["candidates"].to_list()))
    hist = _histories(split.filter(pl.col("user_id").is_in(chosen["user_id"].unique().implode())), history_length)
    out = []
    for pos, (user, item, ts) in zip(positions.tolist(), chosen.select("user_id", "item_id", "ts").iter_rows()):
        ids = list(lists[pos])  # target first
        order = np.random.default_rng([seed, pos]).permutation(len(ids))
        ids = [ids[i] for i in order]
        target = int(np.flatnonzero(order == 0)[0])
        cand_titles = [titles[i] for i in ids]
        history = [titles[i] for i in hist[(user, item, ts)]]
        prompt = prompt_text(tokenizer, history, cand_titles, words)
        while max_prompt_tokens and len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) > max_prompt_tokens:
            if not history:
                raise ValueError(f"a listwise prompt of user {user!r} needs more than {max_prompt_tokens} tokens "
                                 "without any history (30 candidate titles): raise listwise.max_prompt_tokens")
            history = history[1:]
            prompt = prompt_text(tokenizer, history, cand_titles, words)
        answer = answer_text(cand_titles[target], cand_titles, np.random.default_rng([seed, pos, 1]), n_items)
        out.append(ListExample(user, pos, history, cand_titles, target, ids, prompt, answer))
    return out


def end_text(tokenizer) -> str:
    """The chat template's end of turn (`<|im_end|>` for SmolLM2): the answer's last token."""
    return tokenizer.eos_token


def encode_example(tokenizer, prompt: str, answer: str) -> tuple[list[int], int]:
    """(token ids of prompt + answer + end of turn, index of the first answer token): the loss mask is
    every position from there on."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a = tokenizer(answer + end_text(tokenizer), add_special_tokens=False)["input_ids"]
    return p + a, len(p)


def answer_loss(causal_lm, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                answer_start: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer tokens only (right-padded batch). Only the
    positions that predict an answer token meet the output layer."""
    hidden = decoder_of(causal_lm)(input_ids=input_ids, attention_mask=attention_mask,
                                   use_cache=False).last_hidden_state
    pos = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
    # position t predicts token t + 1: keep the t with t + 1 an answer token
    take = (pos + 1 >= answer_start[:, None]) & (torch.roll(attention_mask, -1, dims=1) > 0) \
        & (pos + 1 < input_ids.shape[1])
    rows, cols = take.nonzero(as_tuple=True)
    logits = causal_lm.get_output_embeddings()(hidden[rows, cols]).float()
    return torch.nn.functional.cross_entropy(logits, input_ids[rows, cols + 1])


def parse_generation(text: str, candidate_titles: Sequence[str]) -> tuple[list[int], int]:
    """(candidate indices in generated order, first occurrence each; generated items naming no candidate)."""
    index = {t: k for k, t in enumerate(candidate_titles)}
    named, invalid = [], 0
    for item in (x.strip() for x in text.split(SEP)):
        if not item:
            continue
        if item in index:
            if index[item] not in named:
                named.append(index[item])
        else:
            invalid += 1
    return named, invalid


def _greedy_batches(llm, prompts: Sequence[str], max_new_tokens: int, batch_size: int):
    """transformers' greedy search on left-padded batches of similar length: yields (prompt indices,
    the batch's encoding, generate's output with its key/value cache)."""
    tok = llm.tokenizer
    side = tok.padding_side
    tok.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda k: len(prompts[k]))
    try:
        for i in range(0, len(order), batch_size):
            part = order[i:i + batch_size]
            enc = tok([prompts[k] for k in part], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(llm.device)
            gen = llm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, top_p=None, top_k=None,
                                     temperature=None, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                     return_dict_in_generate=True, use_cache=True)
            yield part, enc, gen
    finally:
        tok.padding_side = side


def _texts(tok, enc, gen) -> list[str]:
    return [tok.decode(seq, skip_special_tokens=True) for seq in gen.sequences[:, enc["input_ids"].shape[1]:]]


@torch.no_grad()
def generate(llm, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy answers (new tokens only, special tokens skipped), left-padded batches of similar length."""
    out: list[str] = [""] * len(prompts)
    for part, enc, gen in _greedy_batches(llm, prompts, max_new_tokens, batch_size):
        for k, text in zip(part, _texts(llm.tokenizer, enc, gen)):
            out[k] = text
    return out


@torch.no_grad()
def generate_and_rank(llm, prompts: Sequence[str], candidate_lists: Sequence[Sequence[str]], max_new_tokens: int,
                      batch_size: int = 8, max_batch_tokens: int = 4096) -> tuple[list[str], list[np.ndarray], float]:
    """`generate` and `rank_candidates` on the same prompts from one encoding of each: the greedy
    search's own key/value cache, cut back to each prompt's tokens (its left padding, the prompt's
    last token and the answer dropped; that token is run again for the raw logits of each
    candidate's first token), takes the packed candidate continuations. The same numbers as the two
    apart (up to float rounding: the prompt was encoded in a padded batch); a cache that is not one
    full-length tensor per layer (sliding-window layers) falls back to encoding the prompt again.
    Returns (answers, likelihoods in candidate order, seconds spent on the likelihoods after
    generation). About 1.4x faster than the two apart on SmolLM2-135M (benchmarks/scoring.py)."""
    from transformers import DynamicCache

    tok = llm.tokenizer
    texts: list[str] = [""] * len(prompts)
    liks: list[np.ndarray] = [np.empty(0)] * len(prompts)
    lik_s = 0.0
    for part, enc, gen in _greedy_batches(llm, prompts, max_new_tokens, batch_size):
        t0 = time.perf_counter()
        width = enc["input_ids"].shape[1]
        cache = output_cache(gen)
        layers = getattr(cache, "layers", None)
        full = bool(layers) and all(getattr(layer, "keys", None) is not None and layer.keys.shape[-2] >= width
                                    and not getattr(layer, "is_sliding", False) for layer in layers)
        for row, (k, text) in enumerate(zip(part, _texts(tok, enc, gen))):
            texts[k] = text
            n = int(enc["attention_mask"][row].sum())
            conts = [continuation_ids(tok, t) for t in candidate_lists[k]]
            if not full:
                liks[k] = candidate_loglik(llm, enc["input_ids"][row, width - n:].tolist(), conts, max_batch_tokens)
                continue
            # the prompt but its last token from generate's cache; that token again, for the raw logits of
            # each candidate's first token (generate's own are after the model's logits processors)
            own = DynamicCache(ddp_cache_data=[(layer.keys[row:row + 1, :, width - n:width - 1],
                                                layer.values[row:row + 1, :, width - n:width - 1]) for layer in layers])
            next_logits = _next_logits(llm, own, enc["input_ids"][row:row + 1, -1:], n - 1)
            liks[k] = _loglik_after(llm, own, n, next_logits, conts, max_batch_tokens)
        lik_s += time.perf_counter() - t0
    return texts, liks, lik_s


def continuation_ids(tokenizer, title: str) -> list[int]:
    """A candidate as the first answer item: its title and the separator, tokenized as in the answer."""
    return tokenizer(title + SEP, add_special_tokens=False)["input_ids"]


def _sum_logprobs(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None])[..., 0]
    return (logp * mask).sum(-1)


def _packed_mask(n_prefix: int, lengths: Sequence[int], device) -> torch.Tensor:
    """(1, 1, total, n_prefix + total) boolean mask of continuations packed after a cached prefix: each
    token sees the whole prefix and the earlier tokens of its own continuation, nothing else."""
    total = int(sum(lengths))
    seg = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(list(lengths)))
    pos = torch.arange(total)
    own = (seg[:, None] == seg[None, :]) & (pos[None, :] <= pos[:, None])
    return torch.cat([torch.ones(total, n_prefix, dtype=torch.bool), own], dim=1)[None, None].to(device)


def _next_logits(llm, cache, ids: torch.Tensor, start: int) -> torch.Tensor:
    """Run `ids` (1, m) at positions start.. into `cache` (which holds the `start` tokens before
    them); the logits of the token after the last."""
    decoder = decoder_of(llm.model)
    positions = torch.arange(start, start + ids.shape[1], device=llm.device)[None]
    last = decoder(input_ids=ids, position_ids=positions, use_cache=True,
                   **{cache_kwarg(decoder): cache}).last_hidden_state
    return llm.model.get_output_embeddings()(last[0, -1])


def _loglik_after(llm, cache, n: int, next_logits: torch.Tensor, continuations: Sequence[list[int]],
                  max_batch_tokens: int) -> np.ndarray:
    """Each continuation's summed log-probability after an `n`-token prompt held in `cache` (batch 1,
    cropped back to the prompt after each chunk); `next_logits`: the prompt's last position's."""
    model, dev = llm.model, llm.device
    decoder, head = decoder_of(model), model.get_output_embeddings()
    key = cache_kwarg(decoder)
    first = torch.log_softmax(next_logits.float(), dim=-1)  # the prompt's last position: each first token
    out = np.empty(len(continuations))
    start = 0
    while start < len(continuations):
        end, width = start + 1, len(continuations[start])
        while end < len(continuations) and width + len(continuations[end]) <= max_batch_tokens:
            width += len(continuations[end])
            end += 1
        chunk = [list(c) for c in continuations[start:end]]
        lengths = [len(c) for c in chunk]
        ids = torch.tensor([[t for c in chunk for t in c]], device=dev)
        positions = torch.tensor([[n + j for c in chunk for j in range(len(c))]], device=dev)
        hidden = decoder(input_ids=ids, position_ids=positions, attention_mask=_packed_mask(n, lengths, dev),
                         use_cache=True, **{key: cache}).last_hidden_state[0]
        cache.crop(-width)  # back to the prompt (a negative count: the tokens to remove)
        # within a continuation, token j + 1 is predicted at token j; its first token at the prompt's end
        ends = np.cumsum(lengths)
        inner = [k for k in range(width) if k + 1 not in ends]
        logp = torch.log_softmax(head(hidden[inner]).float(), dim=-1).gather(-1, ids[0, [k + 1 for k in inner]][:, None])
        per_token = torch.zeros(width, device=dev)
        per_token[[k + 1 for k in inner]] = logp[:, 0]
        per_token[ends - lengths] = first[ids[0, ends - lengths]]
        sums = torch.zeros(len(chunk), device=dev).index_add_(
            0, torch.repeat_interleave(torch.arange(len(chunk), device=dev), torch.tensor(lengths, device=dev)),
            per_token)
        out[start:end] = sums.cpu().numpy()
        start = end
    return out


@torch.no_grad()
def candidate_loglik(llm, prompt_ids: list[int], continuations: Sequence[list[int]],
                     max_batch_tokens: int = 4096) -> np.ndarray:
    """Sum of log-probabilities of each continuation after the prompt. The prompt is encoded once into
    a key/value cache; the continuations are packed side by side into one sequence after it (each
    sees the prompt's cached keys and values and its own earlier tokens, through a 4-D mask, with
    positions restarting where the prompt ends), so nothing is copied per candidate. Chunks of at most
    `max_batch_tokens` continuation tokens; the cache is cropped back to the prompt after each."""
    from transformers import DynamicCache

    cache = DynamicCache()
    next_logits = _next_logits(llm, cache, torch.tensor([prompt_ids], device=llm.device), 0)
    return _loglik_after(llm, cache, len(prompt_ids), next_logits, continuations, max_batch_tokens)


@torch.no_grad()
def candidate_loglik_reference(llm, prompt_ids: list[int], continuations: Sequence[list[int]]) -> np.ndarray:
    """The same numbers from one plain full forward per continuation (no cache): the test baseline."""
    out = []
    for c in continuations:
        ids = torch.tensor([prompt_ids + list(c)], device=llm.device)
        logits = llm.model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1]
        out.append(float(_sum_logprobs(logits, ids[0, len(prompt_ids):], torch.ones(len(c), device=llm.device))))
    return np.array(out)


def rank_candidates(llm, prompt: str, candidate_titles: Sequence[str]) -> np.ndarray:
    """Each candidate's log-likelihood as the first answer item, in candidate order (ours, deterministic)."""
    tok = llm.tokenizer
    return candidate_loglik(llm, tok(prompt, add_special_tokens=False)["input_ids"],
                            [continuation_ids(tok, t) for t in candidate_titles])


def shannon_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) over the last dimension."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def item_start_positions(tokenizer, generated_ids: Sequence[int], first_tokens: int) -> list[int]:
    """Indices of the first `first_tokens` tokens of each generated answer item: a token whose text
    completes a `||` ends an item (SmolLM2 writes `)||` as one token), the next one starts the next.
    Stops at the end of turn."""
    out, item_pos, seps = [], 0, 0
    for j, t in enumerate(generated_ids):
        if t == tokenizer.eos_token_id:
            break
        if item_pos < first_tokens:
            out.append(j)
        now = tokenizer.decode(list(generated_ids[:j + 1])).count(SEP)
        if now > seps:
            seps, item_pos = now, 0
        else:
            item_pos += 1
    return out


def entropy_objective(causal_lm, tokenizer, prompt_ids_list: Sequence[list[int]], max_new_tokens: int,
                      first_tokens: int, device) -> tuple[torch.Tensor, int]:
    """The published merge objective: greedy answers (no gradient), then one forward with gradient
    over prompt + answer; the Shannon entropy of the full next-token distribution that produced each of
    the first `first_tokens` tokens of every answer item. Returns (mean over those positions, their count)."""
    seqs, picks = [], []
    with torch.no_grad():
        for p in prompt_ids_list:
            gen = causal_lm.generate(input_ids=torch.tensor([p], device=device), max_new_tokens=max_new_tokens,
                                     do_sample=False, top_p=None, top_k=None, temperature=None,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            new = gen[0, len(p):].tolist()
            seqs.append(p + new)
            picks.append([len(p) + j - 1 for j in item_start_positions(tokenizer, new, first_tokens)])
    if not any(picks):
        return torch.zeros((), device=device, requires_grad=True), 0
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for k, s in enumerate(seqs):
        ids[k, :len(s)] = torch.tensor(s)
        mask[k, :len(s)] = 1
    hidden = decoder_of(causal_lm)(input_ids=ids.to(device), attention_mask=mask.to(device),
                                   use_cache=False).last_hidden_state
    rows = torch.tensor([k for k, ps in enumerate(picks) for _ in ps], device=device)
    cols = torch.tensor([c for ps in picks for c in ps], device=device)
    ent = shannon_entropy(causal_lm.get_output_embeddings()(hidden[rows, cols]))
    return ent.mean(), int(ent.numel())
