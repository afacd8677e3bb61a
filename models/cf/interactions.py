"""A split as integer indices for the CF models: users and items of all three parts in one index
space, and each row's context (user, time) with the user's earlier positive items, for the
sequential models. No Dagster here."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp



@dataclass
class Interactions:
    """A split as integer indices: users and items of all three splits share one index space.

    Each row also has a context (user, timestamp) for sequential models: the user's positive items
    strictly earlier than the row (across split boundaries, as the prompts' history), oldest first."""

    user_ids: np.ndarray  # index -> original user id (str)
    item_ids: np.ndarray
    parts: dict[str, dict[str, np.ndarray]]  # split -> {"user", "item", "label", "ctx", "ts"} arrays
    context_keys: np.ndarray = field(default_factory=lambda: np.empty(0, str))  # ctx -> "user\tts"
    context_items: list[np.ndarray] = field(default_factory=list)  # ctx -> earlier positive item indices

    @classmethod
    def from_split(cls, df: pl.DataFrame) -> "Interactions":
        user_ids = np.sort(df["user_id"].unique().to_numpy()).astype(str)
        item_ids = np.sort(df["item_id"].unique().to_numpy()).astype(str)
        u_index = {u: k for k, u in enumerate(user_ids)}
        i_index = {i: k for k, i in enumerate(item_ids)}
        keys, seqs = _contexts(df, i_index)
        k_index = {k: j for j, k in enumerate(keys)}
        parts = {}
        for split in ("train", "valid", "test"):
            part = df.filter(pl.col("split") == split)
            parts[split] = {
                "user": np.fromiter((u_index[u] for u in part["user_id"]), np.int64, part.height),
                "item": np.fromiter((i_index[i] for i in part["item_id"]), np.int64, part.height),
                "label": part["label"].to_numpy().astype(np.float32),
                "ctx": np.fromiter((k_index[context_key(u, t)] for u, t in zip(part["user_id"], part["ts"])),
                                   np.int64, part.height),
                "ts": part["ts"].to_numpy().astype(np.int64),
            }
        return cls(user_ids, item_ids, parts, np.array(keys, dtype=str), seqs)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def train_positive_matrix(self) -> sp.csr_matrix:
        """users x items, 1 where a train interaction is positive (what implicit fits)."""
        t = self.parts["train"]
        pos = t["label"] > 0
        m = sp.csr_matrix((np.ones(pos.sum(), np.float32), (t["user"][pos], t["item"][pos])),
                          shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def in_train(self) -> tuple[np.ndarray, np.ndarray]:
        """Masks of users and items with any train row (what a BCE model trains)."""
        t = self.parts["train"]
        ku = np.zeros(self.n_users, bool)
        ki = np.zeros(self.n_items, bool)
        ku[t["user"]] = True
        ki[t["item"]] = True
        return ku, ki

    def with_positive_train_row(self) -> tuple[np.ndarray, np.ndarray]:
        """Masks of users and items with a positive train row (what ALS and BPR train)."""
        m = self.train_positive_matrix()
        return np.asarray(m.sum(axis=1)).ravel() > 0, np.asarray(m.sum(axis=0)).ravel() > 0

    def padded_contexts(self, maxlen: int) -> np.ndarray:
        """(contexts, maxlen) item indices + 1, left-padded with 0, the most recent item last."""
        out = np.zeros((len(self.context_items), maxlen), np.int64)
        for j, seq in enumerate(self.context_items):
            tail = seq[-maxlen:]
            if tail.size:
                out[j, maxlen - tail.size:] = tail + 1
        return out


def context_key(user_id, ts) -> str:
    """The key of a sequential model's "user": the user at a moment."""
    return f"{user_id}\t{int(ts)}"


def _contexts(df: pl.DataFrame, i_index: dict[str, int]) -> tuple[list[str], list[np.ndarray]]:
    """Every distinct (user, timestamp) of the split with the user's strictly earlier positive items."""
    rows = df.select("user_id", "ts", "item_id", "label").sort("user_id", "ts", "item_id")
    keys, seqs = [], []
    prev_user, prev_ts, positives, pending = None, None, [], []
    for user, ts, item, label in rows.iter_rows():
        if user != prev_user:
            prev_user, prev_ts, positives, pending = user, None, [], []
        if ts != prev_ts:
            positives += pending  # the previous moment's positives are now strictly earlier
            pending = []
            keys.append(context_key(user, ts))
            seqs.append(np.array(positives, np.int64))
            prev_ts = ts
        if label > 0:
            pending.append(i_index[item])
    return keys, seqs
