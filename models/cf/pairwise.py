"""MF and LightGCN trained for ranking (docs/cf.md), for leave-one-out domains: BPR (Rendle et al.
2009) over every train interaction (whatever the rating: implicit feedback) against one item the user
never interacted with in train, drawn afresh each epoch; L2 on the batch's ego vectors; Adam.
LightGCN's paper trains it so (3 layers, d = 64, lr 1e-3, L2 1e-4, batch 2048); CoLLM's BCE forms
(models/cf/neural.py) stay for the pointwise table. Early stopping on validation NDCG@10 among 100
sampled negatives (models/cf/next_item.py). No Dagster here."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from models.cf import next_item
from models.cf.interactions import Interactions
from models.cf.model import CFModel
from models.cf.neural import LightGCN, _tables, known_model, optimizer_step
from models.registry.cf import LightGCNParams, LightGCNPairwiseParams, PairwiseParams


def train_pairwise(data: Interactions, p: PairwiseParams, seed: int, name: str,
                   ego: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                   vectors: Callable[[], tuple[torch.Tensor, torch.Tensor]], module: torch.nn.Module,
                   log: Callable[[str], None] | None = None) -> CFModel:
    """BPR in shuffled batches of train interactions; `ego()`: the user and item tables the L2 term
    weighs, `vectors()`: the user and item vectors that score (the same for MF; propagated for LightGCN)."""
    if p.threads:
        torch.set_num_threads(p.threads)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    edges = next_item.interaction_matrix(data, ("train",)).tocoo()
    users, items = torch.from_numpy(edges.row.astype(np.int64)), torch.from_numpy(edges.col.astype(np.int64))
    keys = next_item.interaction_keys(data, ("train",))
    check = next_item.Validation.of(data, seed)
    opt = torch.optim.Adam(module.parameters(), lr=p.lr)

    def epoch(e: int) -> float:
        module.train()
        order = torch.randperm(users.numel(), generator=gen)
        total, batches = 0.0, 0
        for start in range(0, users.numel(), p.batch_size):
            idx = order[start:start + p.batch_size]
            u, i = users[idx], items[idx]
            j = torch.from_numpy(next_item.sample_negatives(u.numpy(), keys, data.n_items, rng))
            uv, iv = vectors()
            rows = torch.nn.functional.embedding  # its backward is a dense scatter, far faster than indexing's
            diff = (rows(u, uv) * (rows(i, iv) - rows(j, iv))).sum(-1)
            eu, ei = ego()
            l2 = (rows(u, eu).pow(2).sum() + rows(i, ei).pow(2).sum() + rows(j, ei).pow(2).sum()) / (2 * idx.numel())
            loss = -torch.nn.functional.logsigmoid(diff).mean() + p.reg * l2
            total, batches = total + optimizer_step(opt, loss, name, e, p.lr), batches + 1
        return total / max(1, batches)

    def current() -> tuple[np.ndarray, np.ndarray]:
        module.eval()
        with torch.no_grad():
            uv, iv = vectors()
        return uv.detach().numpy(), iv.detach().numpy()

    info = next_item.early_stopped(
        name, p.max_epochs, p.eval_every, p.patience, epoch, lambda: check.ndcg(*current()),
        lambda: {k: v.detach().clone() for k, v in module.state_dict().items()}, module.load_state_dict, log)
    uf, itf = current()
    return known_model(name, data, uf, itf, {**info, **p.model_dump(), "seed": seed, "interactions": int(users.numel())})


def fit_mf_bpr(data: Interactions, p: PairwiseParams, seed: int, log=None) -> CFModel:
    gen = torch.Generator().manual_seed(seed)
    mf = torch.nn.ModuleDict({"user": _tables(data, data.n_users, p.dim, 0.1, gen),
                              "item": _tables(data, data.n_items, p.dim, 0.1, gen)})
    tables = lambda: (mf["user"].weight, mf["item"].weight)  # noqa: E731
    return train_pairwise(data, p, seed, "mf_bpr", tables, tables, mf, log)


def fit_lightgcn_bpr(data: Interactions, p: LightGCNPairwiseParams, seed: int, log=None) -> CFModel:
    gen = torch.Generator().manual_seed(seed)
    # LightGCN's paper starts its tables at N(0, 0.1) and propagates over every train interaction
    model = LightGCN(data, LightGCNParams(dim=p.dim, layers=p.layers, init_std=0.1), gen,
                     edges=next_item.interaction_matrix(data, ("train",)))
    return train_pairwise(data, p, seed, "lightgcn_bpr", lambda: (model.user.weight, model.item.weight),
                          model.propagate, model, log)
