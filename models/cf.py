"""Collaborative-filtering models for the baselines and as CIE sources: popularity, implicit's
ALS and BPR, and CoLLM's three trained with BCE on every labelled train row (PROTOCOLS section 4):
matrix factorisation, LightGCN and SASRec.

"Known" has one meaning for every model: a user or item vector is known when training moved it
(the CIE gets it and the row its ID prompt); otherwise it is zero and the row falls back to the
text-only prompt. BCE models train every user and item of a train row; implicit's ALS and BPR
only those with a positive one. A sequential model (SASRec) has no user table: its "user" is the
context (user, time) of a row, whose vector encodes the user's earlier positive items; such a
context is known when that sequence holds at least one known item."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import polars as pl
import scipy.sparse as sp
import threadpoolctl
import torch
from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      model_validator)

from models import metrics


@dataclass
class Interactions:
    """A split as integer indices: users and items of all three splits share one index space.

    Each row also has a context (user, timestamp) for sequential models: the user's positive items
    strictly earlier than the row (across split boundaries, as the prompts' history), oldest first."""

    user_ids: np.ndarray  # index -> original user id (str)
    item_ids: np.ndarray
    parts: dict[str, dict[str, np.ndarray]]  # split -> {"user", "item", "label", "ctx"} int arrays
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

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", self.user_factors[users], self.item_factors[items])

    def score_split(self, data: Interactions, split: str) -> np.ndarray:
        return self.score(self.row_users(data, split), data.parts[split]["item"])

    def save(self, path: Path) -> Path:
        """npz with the vectors, the id maps and which ids were seen in train."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, user_ids=self.user_ids, item_ids=self.item_ids, user_factors=self.user_factors,
                 item_factors=self.item_factors, known_users=self.known_users, known_items=self.known_items,
                 info=np.array(json.dumps(self.info)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path, name: str | None = None) -> "CFModel":
        z = np.load(path, allow_pickle=False)
        info = json.loads(str(z["info"]))
        return cls(name or info.get("model", path.stem), z["user_ids"], z["item_ids"], z["user_factors"],
                   z["item_factors"], z["known_users"], z["known_items"], info)


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


class Params(BaseModel):
    """Hyper-parameters of one CF model as the config file gives them (`settings.cf.<model>`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="train it; false leaves it out of the domain's CF baselines and CIE "
                                            "sources (e.g. a model too slow for a big domain on a CPU)")


class PopularityParams(Params):
    """Popularity has no hyper-parameters: each item's number of positive train interactions."""


class ALSParams(Params):
    factors: PositiveInt = Field(64, description="vector size")
    regularization: NonNegativeFloat = Field(0.01, description="L2 weight")
    iterations: PositiveInt = Field(15, description="ALS sweeps")


class BPRParams(Params):
    factors: PositiveInt = Field(64, description="vector size")
    learning_rate: PositiveFloat = Field(0.01, description="SGD step size")
    regularization: NonNegativeFloat = Field(0.01, description="L2 weight")
    iterations: PositiveInt = Field(100, description="epochs over the positives")


class BCEParams(Params):
    """What every CF model trained with BCE on the labelled train rows shares (PROTOCOLS section 4)."""

    lr: PositiveFloat = Field(1e-3, description="Adam learning rate")
    weight_decay: NonNegativeFloat = Field(1e-4, description="Adam weight decay on every parameter")
    batch_size: PositiveInt = Field(1024, description="rows per step")
    max_epochs: PositiveInt = Field(5000, description="upper bound on epochs")
    patience: PositiveInt = Field(50, description="epochs without a better validation AUC before stopping")
    init_std: PositiveFloat = Field(0.1, description="std of the normal start of the embedding tables")
    threads: NonNegativeInt = Field(0, description="torch threads; 0: torch's default")


class MFParams(BCEParams):
    """CoLLM's MF on ML-1M (PROTOCOLS section 4)."""

    dim: PositiveInt = Field(256, description="vector size d")
    # The authors' code kept nn.Embedding's N(0, 1): with d=256 the logits saturate, validation AUC
    # sits at 0.5 for ~150 epochs and patience-50 early stopping usually ends training there.
    init_std: PositiveFloat = Field(0.1, description="std of the normal start (the authors' code: 1.0)")


class MFConfig(MFParams):
    seed: int = 2023


class LightGCNParams(BCEParams):
    """LightGCN as CoLLM trains it: propagation over the positive train edges, BCE on the labelled rows."""

    dim: PositiveInt = Field(256, description="vector size d")
    layers: PositiveInt = Field(2, description="propagation layers; the vector is the mean over layers 0..L")


class SASRecParams(BCEParams):
    """SASRec as CoLLM trains it: the sequence of earlier positive items, BCE on the labelled rows."""

    dim: PositiveInt = Field(64, description="vector size d")
    blocks: PositiveInt = Field(2, description="self-attention blocks")
    heads: PositiveInt = Field(1, description="attention heads")
    dropout: NonNegativeFloat = Field(0.2, le=0.9, description="dropout on embeddings, attention and feed-forward")
    maxlen: Optional[PositiveInt] = Field(None, description="sequence length; null: the average user's train "
                                                            "record count (PROTOCOLS section 4)")
    # the authors' released SASRec script: lr 1e-2, wd 1e-2, batch 2048 (its nn.Embedding N(0, 1) start
    # needs ~50 epochs on ML-1M; N(0, 0.1) reaches the same test AUC by epoch ~13)
    lr: PositiveFloat = Field(1e-2, description="Adam learning rate")
    weight_decay: NonNegativeFloat = Field(1e-2, description="Adam weight decay on every parameter")
    batch_size: PositiveInt = Field(2048, description="rows per step")
    patience: PositiveInt = Field(5, description="epochs without a better validation AUC before stopping")

    @model_validator(mode="after")
    def _heads_divide_dim(self):
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        return self


def _fit_bce(data: Interactions, cfg: BCEParams, seed: int, name: str, module: torch.nn.Module,
             logits: Callable[[dict, torch.Tensor], torch.Tensor], valid_scores: Callable[[], np.ndarray],
             gen: torch.Generator, log: Callable[[str], None] | None) -> dict:
    """BCE on every labelled train row in shuffled batches (Adam with weight decay on every
    parameter), validation AUC after every epoch, the best epoch's weights loaded back into `module`,
    stop after `patience` epochs without improvement: the authors' loop for all their CF models.
    Faster than the original: batches are tensor slices (no DataLoader), validation is one
    vectorised pass, and test is never evaluated during training (the original scored test every
    epoch; it only chose by validation). Returns the training record."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tr = {k: torch.from_numpy(v) for k, v in data.parts["train"].items()}
    va_label = data.parts["valid"]["label"]
    n = tr["user"].numel()
    best_auc, best_epoch, best_state, history = -1.0, -1, None, []
    t0 = time.perf_counter()
    for epoch in range(cfg.max_epochs):
        module.train()
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits(tr, idx), tr["label"][idx])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name}: the training loss became {loss.item()} in epoch {epoch}; lower "
                                         f"settings.cf.{name}.lr (now {cfg.lr:g}) or init_std")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        module.eval()
        with torch.no_grad():
            valid_auc = metrics.auc(va_label, valid_scores())
        history.append({"epoch": epoch, "valid_auc": valid_auc, "train_loss_last_batch": loss.item()})
        if valid_auc > best_auc:
            best_auc, best_epoch = valid_auc, epoch
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        elif epoch - best_epoch >= cfg.patience:
            break
        if log and epoch % 50 == 0:
            log(f"{name} epoch {epoch}: valid AUC {valid_auc:.4f} (best {best_auc:.4f} at {best_epoch}), "
                f"{time.perf_counter() - t0:.1f} s")
    assert best_state is not None
    module.load_state_dict(best_state)
    module.eval()
    return {"model": name, **cfg.model_dump(), "seed": seed, "best_epoch": best_epoch, "best_valid_auc": best_auc,
            "epochs_run": len(history), "fit_s": time.perf_counter() - t0, "valid_auc_curve": history}


def _tables(data: Interactions, n: int, dim: int, std: float, gen: torch.Generator) -> torch.nn.Embedding:
    table = torch.nn.Embedding(n, dim)
    torch.nn.init.normal_(table.weight, std=std, generator=gen)
    return table


def _bce_model(name: str, data: Interactions, uf: np.ndarray, itf: np.ndarray, info: dict) -> CFModel:
    """A user-table model trained by BCE: every user and item of a train row was trained (known);
    the others hold only the decayed remains of their random start and are zeroed, as for ALS and
    BPR, so a cold user or item scores 0 (no signal) instead of noise."""
    ku, ki = data.in_train()
    uf, itf = uf.copy(), itf.copy()
    uf[~ku] = 0.0
    itf[~ki] = 0.0
    return CFModel(name, data.user_ids, data.item_ids, uf, itf, ku, ki, info)


def train_mf_bce(data: Interactions, cfg: MFConfig = MFConfig(),
                 log: Callable[[str], None] | None = None) -> CFModel:
    """Matrix factorisation, score = dot(user, item) without bias, BCE on every labelled train row,
    in the authors' loop (`_fit_bce`)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    mf = torch.nn.ModuleDict({"user": _tables(data, data.n_users, cfg.dim, cfg.init_std, gen),
                              "item": _tables(data, data.n_items, cfg.dim, cfg.init_std, gen)})
    va = {k: torch.from_numpy(data.parts["valid"][k]) for k in ("user", "item")}
    info = _fit_bce(data, MFParams(**cfg.model_dump(exclude={"seed"})), cfg.seed, "mf", mf,
                    lambda tr, idx: (mf["user"](tr["user"][idx]) * mf["item"](tr["item"][idx])).sum(-1),
                    lambda: (mf["user"].weight[va["user"]] * mf["item"].weight[va["item"]]).sum(-1).numpy(), gen, log)
    return _bce_model("mf", data, mf["user"].weight.detach().numpy(), mf["item"].weight.detach().numpy(), info)


class _SymmetricSpMM(torch.autograd.Function):
    """graph @ x for a constant symmetric sparse graph in CSR: the gradient is graph @ grad (its own
    transpose), so autograd's generic sparse backward (a COO transpose and coalesce on every step) is
    not needed. Same maths as torch.sparse.mm on COO; an epoch 1.4x faster on ML-1M `movies`, 1.65x on
    `ml1m_loo`."""

    @staticmethod
    def forward(ctx, graph: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.graph = graph
        return graph @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.graph @ grad


class LightGCN(torch.nn.Module):
    """He et al. 2020: ego embeddings propagated over the symmetric-normalised user-item graph of
    positive train edges, the mean over layers 0..L as each vector."""

    def __init__(self, data: Interactions, p: LightGCNParams, gen: torch.Generator):
        super().__init__()
        self.n_users = data.n_users
        self.user = _tables(data, data.n_users, p.dim, p.init_std, gen)
        self.item = _tables(data, data.n_items, p.dim, p.init_std, gen)
        self.layers = p.layers
        r = data.train_positive_matrix()
        adj = sp.bmat([[None, r], [r.T, None]], format="csr").astype(np.float32)
        deg = np.asarray(adj.sum(axis=1)).ravel()
        inv = np.power(deg, -0.5, out=np.zeros_like(deg), where=deg > 0).astype(np.float32)
        norm = (sp.diags(inv) @ adj @ sp.diags(inv)).tocsr()
        norm.sort_indices()
        with warnings.catch_warnings():  # "sparse CSR support is in beta": sparse @ dense is all we use
            warnings.simplefilter("ignore", UserWarning)
            self.graph = torch.sparse_csr_tensor(norm.indptr.astype(np.int64), norm.indices.astype(np.int64),
                                                 norm.data, norm.shape, check_invariants=False)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.user.weight, self.item.weight])
        layers = [x]
        for _ in range(self.layers):
            x = _SymmetricSpMM.apply(self.graph, x)
            layers.append(x)
        out = torch.stack(layers).mean(0)
        return out[:self.n_users], out[self.n_users:]


def train_lightgcn(data: Interactions, p: LightGCNParams = LightGCNParams(), seed: int = 2023,
                   log: Callable[[str], None] | None = None) -> CFModel:
    """LightGCN with BCE on every labelled train row (CoLLM's `compute_bce_loss`), in `_fit_bce`."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = LightGCN(data, p, gen)
    va = {k: torch.from_numpy(data.parts["valid"][k]) for k in ("user", "item")}

    def logits(tr, idx):
        u, i = model.propagate()
        return (u[tr["user"][idx]] * i[tr["item"][idx]]).sum(-1)

    def valid():
        u, i = model.propagate()
        return (u[va["user"]] * i[va["item"]]).sum(-1).numpy()

    info = _fit_bce(data, p, seed, "lightgcn", model, logits, valid, gen, log)
    with torch.no_grad():
        u, i = model.propagate()
    return _bce_model("lightgcn", data, u.numpy(), i.numpy(), info)


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout as torch.nn.functional.dropout (each element zeroed with probability p, to
    2^-31, the rest scaled by 1 / (1 - p)), its mask drawn as uniform 31-bit integers and applied by
    one multiplication: forward and backward 2x faster than torch's bernoulli_ on CPU, where dropout
    took 40 % of a SASRec epoch."""
    if not training or p == 0:
        return x
    keep = torch.empty(x.shape, dtype=torch.int32, device=x.device).random_() >= round(p * 2 ** 31)
    return x * (keep * (1.0 / (1.0 - p)))


class _Dropout(torch.nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _dropout(x, self.p, self.training)


class SASRec(torch.nn.Module):
    """Kang & McAuley 2018 as in CoLLM's code: item and position embeddings, causal self-attention
    blocks (pre-norm query, point-wise feed-forward), the last position's output as the sequence's
    vector; score = dot(sequence vector, item vector). Index 0 pads (sequences are left-padded)."""

    def __init__(self, n_items: int, p: SASRecParams, maxlen: int, gen: torch.Generator):
        super().__init__()
        self.item = torch.nn.Embedding(n_items + 1, p.dim, padding_idx=0)
        torch.nn.init.normal_(self.item.weight, std=p.init_std, generator=gen)
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.pos = torch.nn.Embedding(maxlen, p.dim)
        torch.nn.init.normal_(self.pos.weight, std=p.init_std, generator=gen)
        self.drop = _Dropout(p.dropout)
        block = lambda: torch.nn.ModuleDict({  # noqa: E731
            "attn_norm": torch.nn.LayerNorm(p.dim, eps=1e-8),
            "qkv": torch.nn.Linear(p.dim, 3 * p.dim), "out": torch.nn.Linear(p.dim, p.dim),
            "ffn_norm": torch.nn.LayerNorm(p.dim, eps=1e-8),
            "ffn": torch.nn.Sequential(torch.nn.Linear(p.dim, p.dim), torch.nn.ReLU(), _Dropout(p.dropout),
                                       torch.nn.Linear(p.dim, p.dim), _Dropout(p.dropout))})
        self.blocks = torch.nn.ModuleList(block() for _ in range(p.blocks))
        self.last_norm = torch.nn.LayerNorm(p.dim, eps=1e-8)
        self.heads, self.attn_dropout = p.heads, p.dropout

    def attend(self, b: torch.nn.ModuleDict, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Causal multi-head attention of queries `q` over `x` (nn.MultiheadAttention's maths through
        scaled_dot_product_attention: 1.7x faster per block on CPU)."""
        n, length, dim = x.shape
        w, bias = b["qkv"].weight, b["qkv"].bias
        heads = lambda t: t.view(n, length, self.heads, dim // self.heads).transpose(1, 2)  # noqa: E731
        qh = heads(torch.nn.functional.linear(q, w[:dim], bias[:dim]))
        kh, vh = (heads(t) for t in torch.nn.functional.linear(x, w[dim:], bias[dim:]).chunk(2, -1))
        h = torch.nn.functional.scaled_dot_product_attention(
            qh, kh, vh, is_causal=True, dropout_p=self.attn_dropout if self.training else 0.0)
        return b["out"](h.transpose(1, 2).reshape(n, length, dim))

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        keep = (seqs > 0).unsqueeze(-1)
        x = self.item(seqs) * self.item.embedding_dim ** 0.5 + self.pos.weight[:seqs.shape[1]]
        x = self.drop(x) * keep
        for b in self.blocks:
            q = b["attn_norm"](x)
            h = self.attend(b, q, x)
            x = b["ffn_norm"](q + h)
            x = (x + b["ffn"](x)) * keep
        return self.last_norm(x)[:, -1]

    def encode_rows(self, seqs: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """The vectors of rows whose contexts are `ctx` (indices into `seqs`): each distinct context
        encoded once (a third of ML-1M's train rows share their context with another row)."""
        uniq, inv = torch.unique(ctx, return_inverse=True)
        return self.encode(seqs[uniq])[inv]


def train_sasrec(data: Interactions, p: SASRecParams = SASRecParams(), seed: int = 2023,
                 log: Callable[[str], None] | None = None) -> CFModel:
    """SASRec with BCE on every labelled train row: the row's sequence (the user's earlier positive
    items, across split boundaries like the prompts' history, up to `maxlen`, items never in train
    left out as they have no trained vector) against the row's item. Its "users" are the split's
    contexts (user, timestamp): the vector of each is the encoded sequence, and it is known when
    that sequence holds at least one item of train."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    t = data.parts["train"]
    maxlen = p.maxlen or max(1, round(t["user"].size / max(1, np.unique(t["user"]).size)))
    _, ki = data.in_train()
    filtered = Interactions(data.user_ids, data.item_ids, data.parts, data.context_keys,
                            [seq[ki[seq]] for seq in data.context_items])
    seqs = torch.from_numpy(filtered.padded_contexts(maxlen))
    model = SASRec(data.n_items, p, maxlen, gen)
    va = {k: torch.from_numpy(data.parts["valid"][k]) for k in ("ctx", "item")}
    info = _fit_bce(data, p, seed, "sasrec", model,
                    lambda tr, idx: (model.encode_rows(seqs, tr["ctx"][idx]) * model.item(tr["item"][idx] + 1)).sum(-1),
                    lambda: (model.encode_rows(seqs, va["ctx"]) * model.item(va["item"] + 1)).sum(-1).numpy(), gen, log)
    with torch.no_grad():
        ctx = torch.cat([model.encode(seqs[k:k + 4096]) for k in range(0, len(seqs), 4096)]).numpy()
        itf = model.item.weight[1:].numpy().copy()
    known_ctx = (seqs > 0).any(1).numpy()
    ctx[~known_ctx] = 0.0
    itf[~ki] = 0.0
    return CFModel("sasrec", data.context_keys, data.item_ids, ctx, itf, known_ctx, ki,
                   {**info, "maxlen": maxlen, "sequential": True})


@dataclass(frozen=True)
class CFSpec:
    """One entry of the CF registry: its config schema and how to train it."""

    name: str
    description: str
    params: type[Params]
    train: Callable[..., CFModel]  # (data, params, seed, log) -> CFModel
    sequential: bool = False  # its "users" are (user, moment) contexts encoded from earlier items


# The CF models the `cf_embeddings` asset trains, in this order; each is a baseline row of the report
# and a possible CIE source. Adding one is one entry here (and its test).
CF_MODELS: dict[str, CFSpec] = {s.name: s for s in (
    CFSpec("popularity", "each item's positive train count (non-personalised)", PopularityParams,
           lambda data, p, seed, log: train_popularity(data)),
    CFSpec("als", "implicit's AlternatingLeastSquares on the positive train rows", ALSParams,
           lambda data, p, seed, log: train_implicit(data, "als", seed=seed, **p.model_dump(exclude={"enabled"}))),
    # one thread: implicit's BPR is Hogwild SGD, whose threads race, so only one thread gives the same vectors for
    # the same seed (ml1m_loo: 12.8 s against 10.8 s on two); ALS solves each user apart and is the same on any number
    CFSpec("bpr", "implicit's BayesianPersonalizedRanking on the positive train rows", BPRParams,
           lambda data, p, seed, log: train_implicit(data, "bpr", seed=seed, threads=1,
                                                     **p.model_dump(exclude={"enabled"}))),
    CFSpec("mf", "CoLLM's matrix factorisation, BCE on every labelled train row", MFParams,
           lambda data, p, seed, log: train_mf_bce(data, MFConfig(**p.model_dump(), seed=seed), log=log)),
    CFSpec("lightgcn", "LightGCN over the positive train edges, BCE on every labelled train row", LightGCNParams,
           lambda data, p, seed, log: train_lightgcn(data, p, seed, log)),
    CFSpec("sasrec", "SASRec over each row's earlier positive items, BCE on every labelled train row",
           SASRecParams, lambda data, p, seed, log: train_sasrec(data, p, seed, log), sequential=True),
)}


def train_model(name: str, data: Interactions, params: Params | dict | None = None, seed: int = 2023,
                log: Callable[[str], None] | None = None) -> CFModel:
    """Train the registered CF model `name` with its (validated) hyper-parameters."""
    spec = CF_MODELS[name]
    p = params if isinstance(params, spec.params) else spec.params(**(params or {}))
    return spec.train(data, p, seed, log)


def fit_domain(ws, domain: str, settings: dict, log: Callable[[str], None] | None = None) -> dict:
    """Train every registered CF model on a domain's split (`ws`: models.workspace.Workspace;
    `settings`: the config's `settings.cf`), save their vectors to cf/<model>.npz, score every test
    row and candidate list into scores/cf.parquet, and return the metadata (paths as Path)."""
    from models.data_prep import file_sha256
    from models.workspace import write_scores

    seed = int(settings.get("seed", 2023))
    data = Interactions.from_split(ws.read_split(domain))
    cands = ws.candidates(domain)
    index = {it: k for k, it in enumerate(data.item_ids)}
    cand_idx = np.array([[index[i] for i in row] for row in cands["candidates"]], dtype=np.int64)
    valid = data.parts["valid"]
    rows, md, artifacts = [], {}, {}
    for name, spec in CF_MODELS.items():
        params = spec.params(**(settings.get(name) or {}))
        if not params.enabled:
            md[f"{name}/skipped"] = f"settings.cf.{name}.enabled is false for {domain}"
            ws.cf_path(domain, name).unlink(missing_ok=True)  # no stale vectors of an earlier run for the CIE
            if log:
                log(f"{name}: not trained on {domain} (enabled: false)")
            continue
        model = train_model(name, data, params, seed=seed, log=log)
        path = model.save(ws.cf_path(domain, name))
        artifacts[name] = {"path": str(path), "sha256": file_sha256(path)}
        test_scores = model.score_split(data, "test")
        cand_scores = np.einsum("nd,nkd->nk", model.user_factors[model.row_users(data, "test")],
                                model.item_factors[cand_idx])
        rows += [{"method": name, "row": r, "score": float(test_scores[r]), "candidate_scores": cand_scores[r].tolist()}
                 for r in range(len(test_scores))]
        md[f"{name}/valid_auc"] = round(metrics.auc(valid["label"], model.score_split(data, "valid")), 4)
        md[f"{name}/fit_s"] = round(model.info["fit_s"], 2)
        md[f"{name}/dim"] = int(model.user_factors.shape[1])
        if "valid_auc_curve" in model.info:  # a model trained by epochs with early stopping
            from models.report import plot_curve

            md.update({f"{name}/best_epoch": model.info["best_epoch"], f"{name}/epochs_run": model.info["epochs_run"],
                       f"{name}_valid_auc_plot": plot_curve(
                           [h["valid_auc"] for h in model.info["valid_auc_curve"]], "epoch", "validation AUC",
                           f"{name} on {domain}: best epoch {model.info['best_epoch']}",
                           ws.domain(domain, "cf") / f"{name}_valid_auc.png")})
    scores_path = ws.scores_path(domain, "cf")
    digest = write_scores(scores_path, rows, ws.split_sha256(domain))
    return {**md, "users": data.n_users, "items": data.n_items, "artifacts": artifacts, "scores_path": scores_path,
            "scores_sha256": digest}
