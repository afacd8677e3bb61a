"""The CF registry: each model the `cf_embeddings` asset trains (a report baseline and a possible CIE
source), its config schema and where its training function lives ("module:function", imported only
when it trains). Light: no torch, implicit or numpy here, so the settings can validate
`settings.cf` without them. Adding a CF model is one entry here plus its training function and test
(docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      model_validator)


def _heads_divide_dim(m):
    """An attention model's vector splits evenly over its heads."""
    if m.dim % m.heads:
        raise ValueError(f"dim ({m.dim}) must be a multiple of heads ({m.heads})")
    return m


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
    """What every CF model trained with BCE on the labelled train rows shares (docs/protocols.md section 4)."""

    lr: PositiveFloat = Field(1e-3, description="Adam learning rate")
    weight_decay: NonNegativeFloat = Field(1e-4, description="Adam weight decay on every parameter")
    batch_size: PositiveInt = Field(1024, description="rows per step")
    max_epochs: PositiveInt = Field(5000, description="upper bound on epochs")
    patience: PositiveInt = Field(50, description="epochs without a better validation AUC before stopping")
    init_std: PositiveFloat = Field(0.1, description="std of the normal start of the embedding tables")
    threads: NonNegativeInt = Field(0, description="torch threads; 0: torch's default")


class MFParams(BCEParams):
    """CoLLM's MF on ML-1M (docs/protocols.md section 4)."""

    dim: PositiveInt = Field(256, description="vector size d")
    # The authors' code kept nn.Embedding's N(0, 1): with d=256 the logits saturate, validation AUC
    # sits at 0.5 for ~150 epochs and patience-50 early stopping usually ends training there.
    init_std: PositiveFloat = Field(0.1, description="std of the normal start (the authors' code: 1.0)")


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
                                                            "record count (docs/protocols.md section 4)")
    # the authors' released SASRec script: lr 1e-2, wd 1e-2, batch 2048 (its nn.Embedding N(0, 1) start
    # needs ~50 epochs on ML-1M; N(0, 0.1) reaches the same test AUC by epoch ~13)
    lr: PositiveFloat = Field(1e-2, description="Adam learning rate")
    weight_decay: NonNegativeFloat = Field(1e-2, description="Adam weight decay on every parameter")
    batch_size: PositiveInt = Field(2048, description="rows per step")
    patience: PositiveInt = Field(5, description="epochs without a better validation AUC before stopping")

    _heads = model_validator(mode="after")(_heads_divide_dim)


class NextItemParams(Params):
    """What every next-item model trained by epochs shares: Adam, early stopping on the validation
    items' NDCG@10 among 100 sampled negatives (the SASRec paper's protocol on valid), checked every
    `eval_every` epochs (docs/cf.md)."""

    lr: PositiveFloat = Field(1e-3, description="Adam learning rate")
    batch_size: PositiveInt = Field(128, description="users (sequence models) or interactions (pairwise) per step")
    max_epochs: PositiveInt = Field(200, description="upper bound on epochs")
    eval_every: PositiveInt = Field(20, description="epochs between validation checks")
    patience: PositiveInt = Field(3, description="validation checks without a better NDCG@10 before stopping")
    threads: NonNegativeInt = Field(0, description="torch threads; 0: torch's default")


class SASRecNextParams(NextItemParams):
    """SASRec as Kang & McAuley (ICDM 2018) and pmixer/SASRec.pytorch train it on ML-1M: one causal
    sequence per user, BCE on the next item against one sampled negative at every position."""

    dim: PositiveInt = Field(50, description="vector size d")
    blocks: PositiveInt = Field(2, description="self-attention blocks")
    heads: PositiveInt = Field(1, description="attention heads")
    dropout: NonNegativeFloat = Field(0.2, le=0.9, description="dropout on embeddings, attention and feed-forward")
    maxlen: PositiveInt = Field(200, description="the last `maxlen` items of each user's sequence")

    _heads = model_validator(mode="after")(_heads_divide_dim)


class GRU4RecParams(NextItemParams):
    """GRU4Rec (Hidasi et al., ICLR 2016) trained in SASRec's form (ours: one sequence per user, BCE on
    the next item against one sampled negative at every position; the original uses session-parallel
    mini-batches and its own ranking losses)."""

    dim: PositiveInt = Field(64, description="item vector and hidden state size")
    layers: PositiveInt = Field(1, description="GRU layers")
    dropout: NonNegativeFloat = Field(0.2, le=0.9, description="dropout on the item embeddings")
    maxlen: PositiveInt = Field(200, description="the last `maxlen` items of each user's sequence")


class PairwiseParams(NextItemParams):
    """A model trained for ranking with BPR (Rendle et al. 2009): every train interaction against one
    item the user never interacted with, -log sigmoid(s_pos - s_neg)."""

    dim: PositiveInt = Field(64, description="vector size d")
    reg: NonNegativeFloat = Field(1e-4, description="L2 weight on the batch's user and item vectors")
    batch_size: PositiveInt = Field(2048, description="interactions per step")
    eval_every: PositiveInt = Field(5, description="epochs between validation checks")


class LightGCNPairwiseParams(PairwiseParams):
    """LightGCN as its paper trains it (He et al., SIGIR 2020): BPR, 3 layers, d = 64, lr 1e-3, L2 1e-4."""

    layers: PositiveInt = Field(3, description="propagation layers; the vector is the mean over layers 0..L")


@dataclass(frozen=True)
class CFSpec:
    """One entry of the CF registry: its config schema and how to train it."""

    name: str
    description: str
    params: type[Params]
    # "module:function", (data, params, seed, log) -> models.cf.model.CFModel, resolved lazily
    implementation: str
    sequential: bool = False  # its "users" are (user, moment) contexts encoded from earlier items
    objective: str = ""  # what it is trained on, as the report names it beside each of its rows
    # trained only on next-item (leave-one-out) domains: a model of the next-item protocol, whose user
    # vector at test time encodes the train and valid items (pointwise domains keep CoLLM's forms)
    next_item_only: bool = False


# The CF models the `cf_embeddings` asset trains, in this order; each is a baseline row of the report
# and a possible CIE source. Adding one is one entry here (and its test).
CF_MODELS: dict[str, CFSpec] = {s.name: s for s in (
    CFSpec("popularity", "each item's positive train count (non-personalised)", PopularityParams,
           "models.cf.model:fit_popularity", objective="positive train counts"),
    CFSpec("als", "implicit's AlternatingLeastSquares on the positive train rows", ALSParams, "models.cf.model:fit_als",
           objective="ALS on positive rows"),
    CFSpec("bpr", "implicit's BayesianPersonalizedRanking on the positive train rows", BPRParams,
           "models.cf.model:fit_bpr", objective="BPR on positive rows"),
    CFSpec("mf", "CoLLM's matrix factorisation, BCE on every labelled train row", MFParams, "models.cf.neural:fit_mf",
           objective="BCE on labelled rows (CoLLM)"),
    CFSpec("lightgcn", "LightGCN over the positive train edges, BCE on every labelled train row", LightGCNParams,
           "models.cf.neural:fit_lightgcn", objective="BCE on labelled rows (CoLLM)"),
    CFSpec("sasrec", "SASRec over each row's earlier positive items, BCE on every labelled train row (CoLLM's "
           "per-row form)", SASRecParams, "models.cf.neural:fit_sasrec", sequential=True,
           objective="BCE on labelled rows, per row (CoLLM)"),
    CFSpec("sasrec_next", "SASRec in its standard form: one causal sequence per user, the next item against one "
           "sampled negative at every position (Kang & McAuley 2018)", SASRecNextParams,
           "models.cf.sequential:fit_sasrec_next", objective="next item vs 1 negative per position",
           next_item_only=True),
    CFSpec("gru4rec", "GRU4Rec trained in SASRec's form (ours): the next item against one sampled negative at "
           "every position", GRU4RecParams, "models.cf.sequential:fit_gru4rec",
           objective="next item vs 1 negative per position", next_item_only=True),
    CFSpec("mf_bpr", "matrix factorisation trained for ranking: BPR over every train interaction against items the "
           "user never interacted with", PairwiseParams, "models.cf.pairwise:fit_mf_bpr",
           objective="BPR on all interactions", next_item_only=True),
    CFSpec("lightgcn_bpr", "LightGCN as its paper trains it: BPR over every train interaction, 3 layers",
           LightGCNPairwiseParams, "models.cf.pairwise:fit_lightgcn_bpr", objective="BPR on all interactions",
           next_item_only=True),
)}


def register(spec: CFSpec) -> CFSpec:
    """Add a CF model to the registry (its name must be new); returns it."""
    if spec.name in CF_MODELS:
        raise ValueError(f"a CF model named {spec.name!r} is registered already")
    CF_MODELS[spec.name] = spec
    return spec
