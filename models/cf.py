"""Collaborative-filtering models for the baselines and as CIE sources: popularity, implicit's
ALS and BPR, and CoLLM's matrix factorisation trained with BCE (PROTOCOLS section 4)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import scipy.sparse as sp
import threadpoolctl
import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from models import metrics


@dataclass
class Interactions:
    """A split as integer indices: users and items of all three splits share one index space."""

    user_ids: np.ndarray  # index -> original user id (str)
    item_ids: np.ndarray
    parts: dict[str, dict[str, np.ndarray]]  # split -> {"user", "item", "label"} int arrays

    @classmethod
    def from_split(cls, df: pl.DataFrame) -> "Interactions":
        user_ids = np.sort(df["user_id"].unique().to_numpy()).astype(str)
        item_ids = np.sort(df["item_id"].unique().to_numpy()).astype(str)
        u_index = {u: k for k, u in enumerate(user_ids)}
        i_index = {i: k for k, i in enumerate(item_ids)}
        parts = {}
        for split in ("train", "valid", "test"):
            part = df.filter(pl.col("split") == split)
            parts[split] = {
                "user": np.fromiter((u_index[u] for u in part["user_id"]), np.int64, part.height),
                "item": np.fromiter((i_index[i] for i in part["item_id"]), np.int64, part.height),
                "label": part["label"].to_numpy().astype(np.float32),
            }
        return cls(user_ids, item_ids, parts)

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

    def known(self) -> tuple[np.ndarray, np.ndarray]:
        """Masks of users and items that appear in train (the others are cold for a CF model)."""
        t = self.parts["train"]
        ku = np.zeros(self.n_users, bool)
        ki = np.zeros(self.n_items, bool)
        ku[t["user"]] = True
        ki[t["item"]] = True
        return ku, ki


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

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", self.user_factors[users], self.item_factors[items])

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
    ku, ki = data.known()
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
    has_pos_u = np.asarray(m.sum(axis=1)).ravel() > 0
    has_pos_i = np.asarray(m.sum(axis=0)).ravel() > 0
    uf[~has_pos_u] = 0.0
    itf[~has_pos_i] = 0.0
    ku, ki = data.known()
    return CFModel(kind, data.user_ids, data.item_ids, uf, itf, ku, ki,
                   {"model": kind, "factors": factors, "regularization": regularization, "iterations": iterations,
                    "learning_rate": learning_rate, "seed": seed, "fit_s": fit_s})


class Params(BaseModel):
    """Hyper-parameters of one CF model as the config file gives them (`settings.cf.<model>`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


class MFParams(Params):
    """CoLLM's MF on ML-1M (PROTOCOLS section 4)."""

    dim: PositiveInt = Field(256, description="vector size d")
    lr: PositiveFloat = Field(1e-3, description="Adam learning rate")
    weight_decay: NonNegativeFloat = Field(1e-4, description="Adam weight decay on the whole tables")
    batch_size: PositiveInt = Field(1024, description="rows per step")
    max_epochs: PositiveInt = Field(5000, description="upper bound on epochs")
    patience: PositiveInt = Field(50, description="epochs without a better validation AUC before stopping")
    # The authors' code kept nn.Embedding's N(0, 1): with d=256 the logits saturate, validation AUC
    # sits at 0.5 for ~150 epochs and patience-50 early stopping usually ends training there.
    init_std: PositiveFloat = Field(0.1, description="std of the normal start (the authors' code: 1.0)")
    threads: NonNegativeInt = Field(0, description="torch threads; 0: torch's default")


class MFConfig(MFParams):
    seed: int = 2023


def train_mf_bce(data: Interactions, cfg: MFConfig = MFConfig(),
                 log: Callable[[str], None] | None = None) -> CFModel:
    """Matrix factorisation, score = dot(user, item) without bias, BCE on every labelled train row.

    As in the authors' code: Adam with weight decay on the whole
    tables, shuffled batches, validation AUC after every epoch, the best epoch's vectors kept,
    stop after `patience` epochs without improvement. Faster than the original because batches are
    tensor slices (no DataLoader), validation is one vectorised pass, and test is never evaluated
    during training (the original scored test every epoch; it only chose by validation)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    user = torch.nn.Embedding(data.n_users, cfg.dim)
    item = torch.nn.Embedding(data.n_items, cfg.dim)
    torch.nn.init.normal_(user.weight, std=cfg.init_std, generator=gen)
    torch.nn.init.normal_(item.weight, std=cfg.init_std, generator=gen)
    params = [user.weight, item.weight]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    tr = {k: torch.from_numpy(v) for k, v in data.parts["train"].items()}
    va = data.parts["valid"]
    va_u, va_i = torch.from_numpy(va["user"]), torch.from_numpy(va["item"])
    n = tr["user"].numel()
    best_auc, best_epoch, best_state, history = -1.0, -1, None, []
    t0 = time.perf_counter()
    for epoch in range(cfg.max_epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            logits = (user(tr["user"][idx]) * item(tr["item"][idx])).sum(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, tr["label"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            valid_scores = (user.weight[va_u] * item.weight[va_i]).sum(-1).numpy()
        valid_auc = metrics.auc(va["label"], valid_scores)
        history.append({"epoch": epoch, "valid_auc": valid_auc, "train_loss_last_batch": loss.item()})
        if valid_auc > best_auc:
            best_auc, best_epoch = valid_auc, epoch
            best_state = (user.weight.detach().clone(), item.weight.detach().clone())
        elif epoch - best_epoch >= cfg.patience:
            break
        if log and epoch % 50 == 0:
            log(f"MF epoch {epoch}: valid AUC {valid_auc:.4f} (best {best_auc:.4f} at {best_epoch}), "
                f"{time.perf_counter() - t0:.1f} s")
    assert best_state is not None
    ku, ki = data.known()
    uf, itf = best_state[0].numpy().copy(), best_state[1].numpy().copy()
    # rows never trained hold only the decayed remains of their random start: zero them, as for
    # ALS and BPR, so a cold user or item scores 0 (no signal) instead of noise
    uf[~ku] = 0.0
    itf[~ki] = 0.0
    info = {"model": "mf", **cfg.model_dump(), "best_epoch": best_epoch, "best_valid_auc": best_auc,
            "epochs_run": len(history), "fit_s": time.perf_counter() - t0, "valid_auc_curve": history}
    return CFModel("mf", data.user_ids, data.item_ids, uf, itf, ku, ki, info)


@dataclass(frozen=True)
class CFSpec:
    """One entry of the CF registry: its config schema and how to train it."""

    name: str
    description: str
    params: type[Params]
    train: Callable[..., CFModel]  # (data, params, seed, log) -> CFModel


# The CF models the `cf_embeddings` asset trains, in this order; each is a baseline row of the report
# and a possible CIE source. Adding one is one entry here (and its test).
CF_MODELS: dict[str, CFSpec] = {s.name: s for s in (
    CFSpec("popularity", "each item's positive train count (non-personalised)", PopularityParams,
           lambda data, p, seed, log: train_popularity(data)),
    CFSpec("als", "implicit's AlternatingLeastSquares on the positive train rows", ALSParams,
           lambda data, p, seed, log: train_implicit(data, "als", seed=seed, **p.model_dump())),
    CFSpec("bpr", "implicit's BayesianPersonalizedRanking on the positive train rows", BPRParams,
           lambda data, p, seed, log: train_implicit(data, "bpr", seed=seed, **p.model_dump())),
    CFSpec("mf", "CoLLM's matrix factorisation, BCE on every labelled train row", MFParams,
           lambda data, p, seed, log: train_mf_bce(data, MFConfig(**p.model_dump(), seed=seed), log=log)),
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
    test, valid = data.parts["test"], data.parts["valid"]
    rows, md, artifacts = [], {}, {}
    for name in CF_MODELS:
        model = train_model(name, data, settings.get(name), seed=seed, log=log)
        path = model.save(ws.cf_path(domain, name))
        artifacts[name] = {"path": str(path), "sha256": file_sha256(path)}
        test_scores = model.score(test["user"], test["item"])
        cand_scores = np.einsum("nd,nkd->nk", model.user_factors[test["user"]], model.item_factors[cand_idx])
        rows += [{"method": name, "row": r, "score": float(test_scores[r]), "candidate_scores": cand_scores[r].tolist()}
                 for r in range(len(test_scores))]
        md[f"{name}/valid_auc"] = round(metrics.auc(valid["label"], model.score(valid["user"], valid["item"])), 4)
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
