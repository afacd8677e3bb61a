"""Trained CF models as vectors (`CFModel`: score, save, load) and the ones that are not neural:
popularity and `implicit`'s ALS and BPR; CoLLM's BCE models are models/cf/neural.py
(docs/protocols.md section 4).

"Known" has one meaning for every model: a user or item vector is known when training moved it
(the CIE gets it and the row its ID prompt); otherwise it is zero and the row falls back to the
text-only prompt. BCE models train every user and item of a train row; implicit's ALS and BPR
only those with a positive one. A sequential model (SASRec) has no user table: its "user" is the
context (user, time) of a row, whose vector encodes the user's earlier positive items; such a
context is known when that sequence holds at least one known item."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import threadpoolctl

from models.cf.interactions import Interactions, context_key
from models.registry.cf import ALSParams, BPRParams, PopularityParams


@dataclass
class CFModel:
    """User and item vectors with their id maps; score = dot(user, item)."""

    name: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    known_users: np.ndarray
    known_items: np.ndarray
    info: dict = field(default_factory=dict)
    # a next-item model's user vectors at validation time (the user's train items only; `user_factors`
    # encode the train and valid items, what a test row sees): None for every other model
    valid_user_factors: np.ndarray | None = None

    @property
    def sequential(self) -> bool:
        """True when a "user" is a context (user, timestamp) whose vector encodes earlier items."""
        return bool(self.info.get("sequential"))

    def user_key(self, user_id, ts=None) -> str:
        """The key of the user vector a row needs: the user, or for a sequential model the user at `ts`."""
        if self.sequential:
            if ts is None:
                raise ValueError(f"{self.name} is sequential: a row's user vector needs its timestamp")
            return context_key(user_id, ts)
        return str(user_id)

    def row_users(self, data: Interactions, split: str) -> np.ndarray:
        """Index of each row's user vector (a user, or a context for a sequential model)."""
        return data.parts[split]["ctx" if self.sequential else "user"]

    def users_at(self, split: str) -> np.ndarray:
        """The user vectors a row of `split` sees (a next-item model's differ at validation time)."""
        return self.valid_user_factors if split == "valid" and self.valid_user_factors is not None \
            else self.user_factors

    def score(self, users: np.ndarray, items: np.ndarray, split: str = "test") -> np.ndarray:
        return np.einsum("ij,ij->i", self.users_at(split)[users], self.item_factors[items])

    def score_split(self, data: Interactions, split: str) -> np.ndarray:
        return self.score(self.row_users(data, split), data.parts[split]["item"], split)

    def save(self, path: Path) -> Path:
        """npz with the vectors, the id maps and which ids were seen in train."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        extra = {} if self.valid_user_factors is None else {"valid_user_factors": self.valid_user_factors}
        np.savez(tmp, user_ids=self.user_ids, item_ids=self.item_ids, user_factors=self.user_factors,
                 item_factors=self.item_factors, known_users=self.known_users, known_items=self.known_items,
                 info=np.array(json.dumps(self.info)), **extra)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path, name: str | None = None) -> "CFModel":
        z = np.load(path, allow_pickle=False)
        info = json.loads(str(z["info"]))
        return cls(name or info.get("model", path.stem), z["user_ids"], z["item_ids"], z["user_factors"],
                   z["item_factors"], z["known_users"], z["known_items"], info,
                   z["valid_user_factors"] if "valid_user_factors" in z.files else None)


def popularity_counts(data: Interactions) -> np.ndarray:
    """Each item's number of positive train interactions: the popularity baseline's score."""
    t = data.parts["train"]
    return np.bincount(t["item"], weights=t["label"], minlength=data.n_items)


def train_popularity(data: Interactions) -> CFModel:
    """Popularity as vectors: every user's vector is [1], every item's is [its positive train
    count], so dot(user, item) is the count and popularity scores like any other CF model."""
    ku, ki = data.in_train()
    return CFModel("popularity", data.user_ids, data.item_ids, np.ones((data.n_users, 1), np.float32),
                   popularity_counts(data).astype(np.float32)[:, None], ku, ki, {"model": "popularity", "fit_s": 0.0})


def _implicit_model(kind: str, factors: int, regularization: float, iterations: int, seed: int,
                    learning_rate: float, threads: int):
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    if kind == "als":
        return AlternatingLeastSquares(factors=factors, regularization=regularization, iterations=iterations,
                                       random_state=seed, num_threads=threads, calculate_training_loss=False)
    return BayesianPersonalizedRanking(factors=factors, learning_rate=learning_rate, regularization=regularization,
                                       iterations=iterations, random_state=seed, num_threads=threads,
                                       verify_negative_samples=True)


def train_implicit(data: Interactions, kind: str, factors: int = 64, regularization: float = 0.01,
                   iterations: int = 15, learning_rate: float = 0.01, seed: int = 2023,
                   threads: int = 0) -> CFModel:
    """ALS or BPR from the `implicit` library on the positive train interactions.

    Users or items without a positive train interaction keep zero vectors (score 0): implicit
    would otherwise leave them at their random initialisation."""
    if kind not in ("als", "bpr"):
        raise ValueError(f"kind must be 'als' or 'bpr', not {kind!r}")
    m = data.train_positive_matrix()
    t0 = time.perf_counter()
    # implicit parallelises itself; a second BLAS thread pool underneath only slows it down
    with threadpoolctl.threadpool_limits(1, "blas"):
        model = _implicit_model(kind, factors, regularization, iterations, seed, learning_rate, threads)
        model.fit(m, show_progress=False)
    fit_s = time.perf_counter() - t0
    uf = np.asarray(model.user_factors, dtype=np.float32).copy()
    itf = np.asarray(model.item_factors, dtype=np.float32).copy()
    # known = trained: ALS and BPR move only the users and items of a positive train row
    ku, ki = data.with_positive_train_row()
    uf[~ku] = 0.0
    itf[~ki] = 0.0
    return CFModel(kind, data.user_ids, data.item_ids, uf, itf, ku, ki,
                   {"model": kind, "factors": factors, "regularization": regularization, "iterations": iterations,
                    "learning_rate": learning_rate, "seed": seed, "fit_s": fit_s})



def fit_popularity(data: Interactions, p: PopularityParams, seed: int, log=None) -> CFModel:
    return train_popularity(data)


def fit_als(data: Interactions, p: ALSParams, seed: int, log=None) -> CFModel:
    return train_implicit(data, "als", seed=seed, **p.model_dump(exclude={"enabled"}))


def fit_bpr(data: Interactions, p: BPRParams, seed: int, log=None) -> CFModel:
    # one thread: implicit's BPR is Hogwild SGD, whose threads race, so only one thread gives the same vectors for
    # the same seed (ml1m_loo: 12.8 s against 10.8 s on two); ALS solves each user apart and is the same on any number
    return train_implicit(data, "bpr", seed=seed, threads=1, **p.model_dump(exclude={"enabled"}))
