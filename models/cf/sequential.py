"""Next-item sequence models in the standard training form (docs/cf.md), for leave-one-out domains:
each user's train items (whatever the rating, in time order) are one causal sequence; at every
position the model predicts the next item, binary cross-entropy on it against one negative drawn
from the items the user never interacted with in train (Kang & McAuley 2018; pmixer/SASRec.pytorch).
About 6,000 sequences an epoch on ML-1M, where CoLLM's per-row SASRec (models/cf/neural.py) encodes
one sequence per labelled row (about 1,000,000).

- SASRec (`sasrec_next`): the encoder of models/cf/neural.py (shared with the per-row form), its
  weights started as pmixer does (Xavier normal), Adam with betas (0.9, 0.98); unlike pmixer (ours)
  no position attends to the left padding, so a sequence's vector does not depend on its padding
  and each batch is cut to its longest sequence (batches of similar lengths: `length_batches`);
- GRU4Rec (`gru4rec`, ours in this form): a GRU over the item embeddings.

A user's vector at validation time encodes the user's train items, at test time the train and valid
items (`CFModel.valid_user_factors`, `user_factors`). Early stopping on validation NDCG@10 among 100
sampled negatives (models/cf/next_item.py). No Dagster here."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from models.cf import next_item
from models.cf.interactions import Interactions
from models.cf.model import CFModel
from models.cf.neural import SASRec, _Dropout, optimizer_step
from models.registry.cf import GRU4RecParams, NextItemParams, SASRecNextParams, SASRecParams


def padded(seqs: list[np.ndarray], maxlen: int) -> np.ndarray:
    """(users, maxlen) of item index + 1, left-padded with 0, the last `maxlen` items, most recent last."""
    out = np.zeros((len(seqs), maxlen), np.int64)
    for u, s in enumerate(seqs):
        tail = s[-maxlen:]
        if tail.size:
            out[u, maxlen - tail.size:] = tail + 1
    return out


def training_pairs(seqs: list[np.ndarray], maxlen: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The users with at least two train items, each one's input (the sequence without its last item)
    and target (the sequence without its first item, so the target at position t is the item after
    the input's item at t), both left-padded to `maxlen` with 0 (items + 1)."""
    users = np.array([u for u, s in enumerate(seqs) if s.size >= 2], np.int64)
    inp = padded([seqs[u][:-1] for u in users], maxlen)
    pos = padded([seqs[u][1:] for u in users], maxlen)
    return users, inp, pos


def length_batches(lengths: torch.Tensor, batch_size: int, gen: torch.Generator, pool: int = 32) -> list[torch.Tensor]:
    """One epoch's batches: the users shuffled, then within each pool of `pool` batches sorted by
    sequence length, so a batch's sequences have similar lengths and it can be cut to its longest
    (most of a 200-wide batch is padding otherwise); the batches in random order."""
    order = torch.randperm(lengths.numel(), generator=gen)
    batches = []
    for start in range(0, order.numel(), batch_size * pool):
        chunk = order[start:start + batch_size * pool]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += list(chunk.split(batch_size))
    return [batches[k] for k in torch.randperm(len(batches), generator=gen).tolist()]


class GRU4Rec(torch.nn.Module):
    """A GRU over the item embeddings (Hidasi et al. 2016); the output at each position is the
    sequence's vector there. Left-padded input is run right-aligned, so padding never enters the state."""

    def __init__(self, n_items: int, p: GRU4RecParams, gen: torch.Generator):
        super().__init__()
        self.item = torch.nn.Embedding(n_items + 1, p.dim, padding_idx=0)
        self.gru = torch.nn.GRU(p.dim, p.dim, p.layers, batch_first=True)
        self.drop = _Dropout(p.dropout)
        _xavier(self, gen)

    def encode_all(self, seqs: torch.Tensor) -> torch.Tensor:
        n, length = seqs.shape
        shift = length - (seqs > 0).sum(1, keepdim=True)  # left padding of each row
        steps = torch.arange(length).unsqueeze(0)
        right = seqs.gather(1, (steps + shift) % length)  # items first, then the padding
        out, _ = self.gru(self.drop(self.item(right)))
        back = ((steps - shift) % length).unsqueeze(-1).expand(-1, -1, out.shape[-1])
        return out.gather(1, back)  # back to the input's positions (padded positions: unused)

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.encode_all(seqs)[:, -1]


def _xavier(module: torch.nn.Module, gen: torch.Generator) -> None:
    """pmixer's start: Xavier normal on every weight matrix (embeddings included), the padding row zero."""
    for name, param in module.named_parameters():
        if param.dim() > 1:
            torch.nn.init.xavier_normal_(param.data, generator=gen)
    with torch.no_grad():
        module.item.weight[0].zero_()


def _sasrec(n_items: int, p: SASRecNextParams, gen: torch.Generator) -> SASRec:
    model = SASRec(n_items, SASRecParams(dim=p.dim, blocks=p.blocks, heads=p.heads, dropout=p.dropout), p.maxlen, gen)
    model.mask_padding = True
    _xavier(model, gen)
    return model


def train_sequence_model(data: Interactions, p: NextItemParams, seed: int, name: str,
                         build: Callable[[torch.Generator], torch.nn.Module],
                         log: Callable[[str], None] | None = None) -> CFModel:
    """Train a sequence model (`build(gen)` -> a module with `item`, `encode_all`, `encode`) in the
    standard next-item form, early-stopped on validation (models/cf/next_item.py)."""
    if p.threads:
        torch.set_num_threads(p.threads)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build(gen)
    maxlen = int(p.maxlen)
    train_seqs = next_item.user_sequences(data, ("train",))
    users, inp, pos = training_pairs(train_seqs, maxlen)
    if users.size == 0:
        raise ValueError(f"{name}: no user has two train items, so there is no next item to learn")
    keys = next_item.interaction_keys(data, ("train",))
    inp_t, pos_t = torch.from_numpy(inp), torch.from_numpy(pos)
    valid_in = torch.from_numpy(padded(train_seqs, maxlen))
    check = next_item.Validation.of(data, seed)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr, betas=(0.9, 0.98))

    lengths = torch.from_numpy((pos > 0).sum(1))

    def epoch(e: int) -> float:
        model.train()
        total, batches = 0.0, 0
        for idx in length_batches(lengths, p.batch_size, gen):
            width = int(lengths[idx].max())  # the batch cut to its longest sequence (left padding only)
            x, y = inp_t[idx, -width:], pos_t[idx, -width:]
            mask = y > 0
            neg = np.zeros(y.shape, np.int64)
            rows = np.broadcast_to(users[idx.numpy()][:, None], y.shape)[mask.numpy()]
            neg[mask.numpy()] = next_item.sample_negatives(rows, keys, data.n_items, rng) + 1
            h = model.encode_all(x)[mask]
            pos_logit = (h * model.item(y[mask])).sum(-1)
            neg_logit = (h * model.item(torch.from_numpy(neg)[mask])).sum(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                torch.cat([pos_logit, neg_logit]), torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit)]))
            total, batches = total + optimizer_step(opt, loss, name, e, p.lr), batches + 1
        return total / max(1, batches)

    def vectors(seqs: torch.Tensor) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            out = torch.cat([model.encode(seqs[k:k + 1024]) for k in range(0, len(seqs), 1024)]).numpy()
        out[~(seqs > 0).any(1).numpy()] = 0.0  # no train item: no signal
        return out

    def items() -> np.ndarray:
        return model.item.weight[1:].detach().numpy()

    info = next_item.early_stopped(
        name, p.max_epochs, p.eval_every, p.patience, epoch, lambda: check.ndcg(vectors(valid_in), items()),
        lambda: {k: v.detach().clone() for k, v in model.state_dict().items()}, model.load_state_dict, log)
    test_in = torch.from_numpy(padded(next_item.user_sequences(data, ("train", "valid")), maxlen))
    _, ki = data.in_train()
    itf = items().copy()
    itf[~ki] = 0.0
    known_users = np.array([s.size > 0 for s in train_seqs])
    return CFModel(name, data.user_ids, data.item_ids, vectors(test_in), itf, known_users, ki,
                   {**info, **p.model_dump(), "seed": seed, "sequences": int(users.size)},
                   valid_user_factors=vectors(valid_in))


def fit_sasrec_next(data: Interactions, p: SASRecNextParams, seed: int, log=None) -> CFModel:
    return train_sequence_model(data, p, seed, "sasrec_next", lambda gen: _sasrec(data.n_items, p, gen), log)


def fit_gru4rec(data: Interactions, p: GRU4RecParams, seed: int, log=None) -> CFModel:
    return train_sequence_model(data, p, seed, "gru4rec", lambda gen: GRU4Rec(data.n_items, p, gen), log)
