"""The next-item protocol of a leave-one-out domain, shared by the next-item models and the CF stage:
each user's items in time order, negatives drawn among the items a user never interacted with, and a
model's standing on each validation or test item by three protocols (docs/cf.md):

- **full ranking** (ours, as RecBole's `full` mode): the target among every item the user has not
  interacted with before it (train items for a validation row; train and valid items for a test row);
- **100 sampled negatives** (the SASRec paper's protocol): the target among 100 items drawn uniformly
  from those the user never interacted with, seeded, the same for every model;
- the **top-k list** of the full ranking (history left out, ties broken by one seeded order of the
  items), for the beyond-accuracy metrics (models/metrics/beyond.py).

Every standing is `above` / `tied` counts, so the report's one tie policy (random tie-breaking by its
expectation, models/metrics/ranking.py) applies. No torch, no Dagster."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from models.cf.interactions import Interactions
from models.metrics import ranking as metrics

HISTORY = {"valid": ("train",), "test": ("train", "valid")}  # what a row of each split has seen


def user_sequences(data: Interactions, splits: tuple[str, ...] = ("train",)) -> list[np.ndarray]:
    """Each user's items of `splits` in time order (ties by item, as the leave-one-out split orders
    them), whatever the rating: the implicit-feedback sequences of the next-item models."""
    parts = [data.parts[s] for s in splits]
    u = np.concatenate([p["user"] for p in parts])
    i = np.concatenate([p["item"] for p in parts])
    t = np.concatenate([p["ts"] for p in parts])
    order = np.lexsort((i, t, u))
    u, i = u[order], i[order]
    bounds = np.searchsorted(u, np.arange(data.n_users + 1))
    return [i[bounds[k]:bounds[k + 1]] for k in range(data.n_users)]


def interaction_matrix(data: Interactions, splits: tuple[str, ...]) -> sp.csr_matrix:
    """users x items, True where the user has a row of `splits` (whatever its rating)."""
    u = np.concatenate([data.parts[s]["user"] for s in splits])
    i = np.concatenate([data.parts[s]["item"] for s in splits])
    m = sp.csr_matrix((np.ones(u.size, bool), (u, i)), shape=(data.n_users, data.n_items))
    m.sum_duplicates()
    return m


def interaction_keys(data: Interactions, splits: tuple[str, ...] = ("train", "valid", "test")) -> np.ndarray:
    """Sorted `user * n_items + item` of every row of `splits`: membership tests by searchsorted."""
    keys = np.concatenate([data.parts[s]["user"] * data.n_items + data.parts[s]["item"] for s in splits])
    return np.unique(keys)


def is_interacted(users: np.ndarray, items: np.ndarray, keys: np.ndarray, n_items: int) -> np.ndarray:
    q = users * n_items + items
    pos = np.minimum(np.searchsorted(keys, q), keys.size - 1)
    return keys[pos] == q if keys.size else np.zeros(q.shape, bool)


def sample_negatives(users: np.ndarray, keys: np.ndarray, n_items: int, rng: np.random.Generator,
                     max_rounds: int = 1000) -> np.ndarray:
    """One item per entry of `users` (any shape) drawn uniformly from the items that user never
    interacted with (`keys`: `interaction_keys`): a negative is never one of the user's items."""
    neg = rng.integers(0, n_items, size=users.shape)
    bad = is_interacted(users, neg, keys, n_items)
    for _ in range(max_rounds):
        if not bad.any():
            return neg
        neg[bad] = rng.integers(0, n_items, size=int(bad.sum()))
        bad[bad] = is_interacted(users[bad], neg[bad], keys, n_items)
    raise ValueError("could not draw negatives: some user has interacted with (nearly) every item")


def sampled_lists(data: Interactions, split: str, n: int, seed: int) -> np.ndarray:
    """(rows of `split`, n) distinct items per row, drawn uniformly (seeded) from the items its user
    never interacted with in any split: the SASRec paper's negatives (n = 100). A catalogue too small
    for that (some user has fewer than n items left) gets fewer, the same number for every row: the
    width of the result says how many."""
    rng = np.random.default_rng(seed)
    seen = interaction_matrix(data, ("train", "valid", "test"))
    users = data.parts[split]["user"]
    left = data.n_items - np.diff(seen.indptr)[users] if users.size else np.array([n])
    n = int(min(n, left.min()))
    if n < 1:
        raise ValueError(f"some user of {split} has interacted with every item: no negative is left to sample")
    out = np.empty((users.size, n), np.int64)
    for r, u in enumerate(users):
        own = seen.indices[seen.indptr[u]:seen.indptr[u + 1]]
        got = np.empty(0, np.int64)
        while got.size < n:
            draw = rng.integers(0, data.n_items, size=2 * n)
            draw = draw[~np.isin(draw, own) & ~np.isin(draw, got)]
            _, first = np.unique(draw, return_index=True)
            got = np.concatenate([got, draw[np.sort(first)]])
        out[r] = got[:n]
    return out


@dataclass
class Standing:
    """Each row's target standing by the three protocols, and its top-k list."""

    full: metrics.Ranks  # among every item the user has not interacted with before the row
    pool: np.ndarray  # how many items that ranking holds (the target included)
    sampled: metrics.Ranks  # among the sampled negatives
    top: np.ndarray  # (rows, k) item indices, best first


def standing(user_vectors: np.ndarray, item_vectors: np.ndarray, data: Interactions, split: str,
             negatives: np.ndarray, k: int, seed: int) -> Standing:
    """The standing of every `split` row's item (the next item: every row is a target) for a model
    whose row vectors are `user_vectors` (one per row) and score = dot(user, item)."""
    part = data.parts[split]
    users, targets = part["user"], part["item"]
    history = interaction_matrix(data, HISTORY[split])
    priority = np.random.default_rng(seed).permutation(data.n_items)  # the tie order of the top-k lists
    n = users.size
    chunk = max(1, 2 ** 22 // max(1, data.n_items))  # rows scored at once: ~16 MB of scores
    above, tied, pool = (np.zeros(n, np.int64) for _ in range(3))
    top = np.zeros((n, min(k, data.n_items)), np.int64)
    items = np.asarray(item_vectors, np.float32)
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        rows = np.arange(sl.stop - sl.start)
        s = np.asarray(user_vectors[sl], np.float32) @ items.T
        seen = history[users[sl]].toarray()
        seen[rows, targets[sl]] = False  # an item consumed again is still its own target
        t = s[rows, targets[sl]]
        other = ~seen
        other[rows, targets[sl]] = False
        above[sl] = ((s > t[:, None]) & other).sum(1)
        tied[sl] = ((s == t[:, None]) & other).sum(1)
        pool[sl] = other.sum(1) + 1
        masked = np.where(seen, -np.inf, s)
        order = np.lexsort((np.broadcast_to(priority, masked.shape), -masked), axis=-1)
        top[sl] = order[:, :top.shape[1]]
    t_scores = np.einsum("nd,nd->n", np.asarray(user_vectors, np.float32), items[targets])
    neg_scores = np.einsum("nd,nkd->nk", np.asarray(user_vectors, np.float32), items[negatives])
    return Standing(metrics.Ranks(above, tied), pool, metrics.target_ranks(t_scores, neg_scores), top)


def sampled_ndcg(user_vectors: np.ndarray, item_vectors: np.ndarray, targets: np.ndarray, negatives: np.ndarray,
                 k: int = 10) -> float:
    """NDCG@k of the targets among their sampled negatives (what the next-item models stop on)."""
    t = np.einsum("nd,nd->n", user_vectors, item_vectors[targets])
    neg = np.einsum("nd,nkd->nk", user_vectors, item_vectors[negatives])
    return metrics.ndcg_at_k(metrics.target_ranks(t, neg), k)


@dataclass
class Validation:
    """The validation check of a next-item model: each user's valid item among 100 sampled negatives."""

    users: np.ndarray
    targets: np.ndarray
    negatives: np.ndarray

    @classmethod
    def of(cls, data: Interactions, seed: int, n: int = 100) -> "Validation":
        v = data.parts["valid"]
        return cls(v["user"], v["item"], sampled_lists(data, "valid", n, seed))

    def ndcg(self, user_vectors: np.ndarray, item_vectors: np.ndarray, k: int = 10) -> float:
        """NDCG@k; `user_vectors` has one vector per user (index = user)."""
        return sampled_ndcg(np.asarray(user_vectors)[self.users], np.asarray(item_vectors), self.targets,
                            self.negatives, k)


def early_stopped(name: str, max_epochs: int, eval_every: int, patience: int, epoch: Callable[[int], float],
                  check: Callable[[], float], snapshot: Callable[[], Any], restore: Callable[[Any], None],
                  log: Callable[[str], None] | None = None) -> dict:
    """The next-item models' loop: `epoch(e)` trains one epoch (returns its mean loss), `check()` is
    the validation NDCG@10 every `eval_every` epochs (and after the last); the best check's weights are
    restored (`snapshot` / `restore`), and training stops after `patience` checks without a better
    one. Returns the training record."""
    best, best_epoch, state, history = -1.0, -1, None, []
    t0 = time.perf_counter()
    waited = 0
    for e in range(max_epochs):
        loss = epoch(e)
        if (e + 1) % eval_every and e + 1 < max_epochs:
            continue
        ndcg = check()
        history.append({"epoch": e, "valid_ndcg@10": ndcg, "train_loss": loss})
        if ndcg > best:
            best, best_epoch, state, waited = ndcg, e, snapshot(), 0
        else:
            waited += 1
        if log:
            log(f"{name} epoch {e + 1}/{max_epochs}: loss {loss:.4f}, valid NDCG@10 (100 negatives) {ndcg:.4f} "
                f"(best {best:.4f} after epoch {best_epoch + 1}), {time.perf_counter() - t0:.1f} s")
        if waited >= patience:
            break
    restore(state)
    return {"model": name, "best_epoch": best_epoch, "best_valid_ndcg@10": best, "epochs_run": e + 1,
            "fit_s": time.perf_counter() - t0, "valid_curve": history}
