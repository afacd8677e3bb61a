"""RecCocktail's entropy-guided adaptive merge (PROTOCOLS section 7) and its baselines.

Every linear module that either adapter wraps gets its own learnable logit vector w over the
adapters (base spirit, ingredient), initialised equal; the mixing weights are a = softmax(w / T).
While the weights learn, the module computes `W0 x + sum_k a_k * s_k * B_k A_k x` (s_k = alpha/r);
only w trains (Adam), the model in eval mode, on unlabelled validation prompts, minimising the mean
binary entropy of P(Yes) = sigmoid(Yes logit) at the answer position (our Yes/No adaptation of the
paper's next-token entropy). Learning rate and step count are chosen by AUC on a separate slice of
validation rows with labels; test rows never enter this module. Afterwards the merged delta
`sum_k a_k s_k B_k A_k` is added into W0: one dense model, saved as plain safetensors that
`AutoModelForCausalLM.from_pretrained` loads, costing what the base model costs.

Baselines with the same machinery: fixed equal weights, task arithmetic (W0 + lambda * sum_k s_k B_k A_k,
lambda chosen on validation labels), base spirit only, ingredient only.

Adapters are read from their PEFT files (`adapter_config.json`, `adapter_model.safetensors`), so
any PEFT LoRA adapter for the same base model works.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from pydantic import Field, PositiveFloat, PositiveInt
from safetensors.torch import load_file

from models import fingerprint, metrics
from models.strict import Strict
from models.progress import Progress


class MergeError(ValueError):
    pass


@dataclass
class Adapter:
    """One LoRA adapter as plain tensors: module path -> (A [r, in], B [out, r]) and its scale."""

    name: str
    deltas: dict[str, tuple[torch.Tensor, torch.Tensor]]
    scale: float

    @classmethod
    def load(cls, name: str, folder: Path) -> "Adapter":
        folder = Path(folder)
        cfg_path, w_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
        if not cfg_path.exists() or not w_path.exists():
            raise MergeError(f"{folder} is not a PEFT LoRA adapter (needs adapter_config.json and "
                             f"adapter_model.safetensors)")
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("peft_type", "LORA") != "LORA":
            raise MergeError(f"{folder}: peft_type {cfg.get('peft_type')!r}, only LORA adapters can be merged")
        if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
            raise MergeError(f"{folder}: per-module rank_pattern/alpha_pattern adapters are not supported")
        if cfg.get("bias", "none") != "none" or cfg.get("modules_to_save") or cfg.get("use_dora"):
            raise MergeError(f"{folder}: adapters with trained biases, modules_to_save or DoRA are not supported "
                             f"(bias={cfg.get('bias')!r}, modules_to_save={cfg.get('modules_to_save')!r}, "
                             f"use_dora={cfg.get('use_dora')!r}); train with bias='none'")
        r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
        scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        weights = load_file(str(w_path))
        deltas: dict[str, list] = {}
        for key, t in weights.items():
            for part, pos in ((".lora_A.weight", 0), (".lora_B.weight", 1)):
                if key.endswith(part):
                    module = key[:-len(part)].removeprefix("base_model.model.")
                    deltas.setdefault(module, [None, None])[pos] = t.float()
        bad = [m for m, ab in deltas.items() if ab[0] is None or ab[1] is None]
        if not deltas or bad:
            raise MergeError(f"{folder}: no complete lora_A/lora_B pairs (incomplete: {bad[:3]})")
        return cls(name, {m: (a, b) for m, (a, b) in deltas.items()}, scale)


class MixLinear(torch.nn.Module):
    """W0 x + sum_k a_k s_k B_k A_k x with a = softmax(w / T) over the adapters that wrap this module."""

    def __init__(self, base: torch.nn.Linear, parts: list[tuple[torch.Tensor, torch.Tensor, float]],
                 temperature: float = 1.0):
        super().__init__()
        self.base = base
        self.temperature = temperature
        for i, (a, b, s) in enumerate(parts):
            self.register_buffer(f"A{i}", a.to(base.weight.device, base.weight.dtype))
            self.register_buffer(f"B{i}", (b * s).to(base.weight.device, base.weight.dtype))
        self.k = len(parts)
        self.logits = torch.nn.Parameter(torch.zeros(self.k, device=base.weight.device))
        self.fixed: torch.Tensor | None = None  # set to use given weights instead of softmax(logits)

    def weights(self) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed
        return torch.softmax(self.logits / self.temperature, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        a = self.weights().to(x.dtype)
        for i in range(self.k):
            out = out + a[i] * ((x @ getattr(self, f"A{i}").T) @ getattr(self, f"B{i}").T)
        return out

    def delta(self) -> torch.Tensor:
        a = self.weights().detach()
        return sum(a[i] * (getattr(self, f"B{i}") @ getattr(self, f"A{i}")) for i in range(self.k))


class Mixture:
    """A base causal LM with every adapted linear module replaced by a MixLinear (in place)."""

    def __init__(self, model: torch.nn.Module, adapters: Sequence[Adapter], temperature: float = 1.0):
        self.model = model
        self.names = [a.name for a in adapters]
        paths = sorted({m for a in adapters for m in a.deltas})
        self.modules: dict[str, MixLinear] = {}
        self.members: dict[str, list[str]] = {}
        for path in paths:
            parent_path, _, attr = path.rpartition(".")
            parent = model.get_submodule(parent_path)
            base = getattr(parent, attr)
            if not isinstance(base, torch.nn.Linear):
                raise MergeError(f"adapter module {path} is a {type(base).__name__}, not a Linear of the base model")
            present = [a for a in adapters if path in a.deltas]
            for a in present:
                A, B = a.deltas[path]
                if A.shape[1] != base.in_features or B.shape[0] != base.out_features:
                    raise MergeError(f"adapter {a.name} does not fit {path}: A {tuple(A.shape)}, B {tuple(B.shape)}, "
                                     f"layer {base.in_features}->{base.out_features}; was it trained on this model?")
            mix = MixLinear(base, [(*a.deltas[path], a.scale) for a in present], temperature)
            setattr(parent, attr, mix)
            self.modules[path] = mix
            self.members[path] = [a.name for a in present]
        for p in model.parameters():
            p.requires_grad_(False)
        for m in self.modules.values():
            m.logits.requires_grad_(True)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [m.logits for m in self.modules.values()]

    def set_fixed(self, weights: dict[str, float] | None) -> None:
        """Use the given weight per adapter everywhere (equal, task arithmetic, one adapter), or None
        to go back to the learned softmax(w / T)."""
        for path, m in self.modules.items():
            m.fixed = None if weights is None else torch.tensor(
                [weights.get(n, 0.0) for n in self.members[path]], device=m.logits.device)

    def reset(self) -> None:
        with torch.no_grad():
            for m in self.modules.values():
                m.logits.zero_()

    def weight_table(self) -> dict[str, dict[str, float]]:
        """module path -> adapter name -> mixing weight (as now used)."""
        return {p: dict(zip(self.members[p], m.weights().detach().cpu().tolist())) for p, m in self.modules.items()}

    def load_logits(self, logits: dict[str, list[float]]) -> None:
        with torch.no_grad():
            for p, m in self.modules.items():
                m.logits.copy_(torch.tensor(logits[p]))

    def logits_state(self) -> dict[str, list[float]]:
        return {p: m.logits.detach().cpu().tolist() for p, m in self.modules.items()}

    def to_dense(self) -> torch.nn.Module:
        """Add every merged delta into W0 and put the plain Linear back (in place); returns the model."""
        with torch.no_grad():
            for path, m in self.modules.items():
                m.base.weight += m.delta().to(m.base.weight.dtype)
                parent_path, _, attr = path.rpartition(".")
                setattr(self.model.get_submodule(parent_path), attr, m.base)
        self.modules = {}
        return self.model


def binary_entropy(logit: torch.Tensor) -> torch.Tensor:
    """H(sigmoid(z)) in nats, stable for large |z|."""
    p = torch.sigmoid(logit)
    return torch.nn.functional.softplus(-logit) * p + torch.nn.functional.softplus(logit) * (1 - p)


class MergeSettings(Strict):
    """The cocktail merge of one profile (its `merge` section): what the weights learn on, how they
    learn, and the baselines' grid."""

    learn_rows: PositiveInt = Field(200, description="unlabelled validation prompts the mixing weights learn on")
    select_rows: PositiveInt = Field(200, description="other validation rows whose labels pick the learning rate "
                                                       "and step (and the task-arithmetic lambda)")
    learning_rates: tuple[PositiveFloat, ...] = Field((0.01, 0.05), min_length=1,
                                                      description="Adam learning rates tried for the mixing logits")
    steps: PositiveInt = Field(20, description="weight-learning steps per learning rate")
    batch_size: PositiveInt = Field(8, description="prompts per weight-learning step")
    eval_every: PositiveInt = Field(5, description="steps between candidates scored on the selection rows")
    temperature: PositiveFloat = Field(1.0, description="softmax temperature T of the mixing weights")
    task_arithmetic_lambdas: tuple[PositiveFloat, ...] = Field((0.3, 0.5, 0.7, 1.0), min_length=1,
                                                               description="task-arithmetic lambdas tried")
    seed: int = Field(2023, description="seed of the validation slices and the prompt batches")


@dataclass(frozen=True)
class MergeMethod:
    """One way of combining the base spirit (a) and the ingredient (b): `weights(settings, a, b)`
    lists its candidate fixed weights (the best on the selection rows is kept), or None for the
    learned merge. `score_name` is its method name in scores/llm.parquet and the report."""

    name: str
    score_name: str
    description: str
    weights: Callable[[MergeSettings, str, str], list[dict[str, float]]] | None = None


# RecCocktail and its baselines, in the order merge.json lists them. Adding a baseline is one entry
# here (and its test); llm_scores scores every entry.
MERGE_METHODS: dict[str, MergeMethod] = {m.name: m for m in (
    MergeMethod("base_only", "base_spirit", "the base spirit alone (RecCocktail-G)", lambda s, a, b: [{a: 1.0, b: 0.0}]),
    MergeMethod("ingredient_only", "ingredient_tallrec", "the ingredient alone (TALLRec, CoLLM step 1)",
                lambda s, a, b: [{a: 0.0, b: 1.0}]),
    MergeMethod("equal_weights", "equal_weights", "W0 + (dA + dB) / 2", lambda s, a, b: [{a: 0.5, b: 0.5}]),
    MergeMethod("task_arithmetic", "task_arithmetic", "W0 + lambda (dA + dB), lambda picked on validation labels",
                lambda s, a, b: [{a: lam, b: lam} for lam in s.task_arithmetic_lambdas]),
    MergeMethod("reccocktail", "reccocktail", "RecCocktail: per-module weights learned by entropy minimisation on "
                "unlabelled validation prompts"),
)}


@dataclass
class MergeResult:
    method: str
    weights: dict[str, float] | None  # fixed weights, or None for learned
    logits: dict[str, list[float]] | None  # learned per-module logits
    select_auc: float
    lr: float | None = None
    step: int | None = None
    candidates: list[dict] = field(default_factory=list)
    entropy_curves: dict[str, list[float]] = field(default_factory=dict)


def learn_weights(mixture: Mixture, encode: Callable[[Sequence[str]], dict], prompts: Sequence[str], yes_id: int,
                  lr: float, steps: int, batch_size: int, seed: int,
                  on_step: Callable[[int, float], None] | None = None,
                  log: Callable[[str], None] | None = None) -> list[float]:
    """Adam on the mixing logits only, model in eval mode, minimising the mean binary entropy of
    P(Yes) on unlabelled prompts (no labels exist here). Returns the entropy per step."""
    from models.lora_train import yes_logit

    mixture.model.eval()
    mixture.set_fixed(None)
    opt = torch.optim.Adam(mixture.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    curve = []
    progress = Progress(f"learning mixing weights (lr {lr})", steps, log) if log else None
    for step in range(1, steps + 1):
        idx = rng.choice(len(prompts), min(batch_size, len(prompts)), replace=False)
        enc = encode([prompts[i] for i in idx])
        loss = binary_entropy(yes_logit(mixture.model, enc["input_ids"], enc["attention_mask"], yes_id).float()).mean()
        if not torch.isfinite(loss):
            raise MergeError(f"entropy became {loss.item()} at step {step} with lr {lr}: lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(float(loss.detach()))
        if progress:
            progress.update(step, f"entropy {curve[-1]:.4f}")
        if on_step:
            on_step(step, curve[-1])
    return curve


def _open_checkpoint(path: Path | None, fp: str, log: Callable[[str], None]) -> dict:
    """The merge checkpoint of this very run (same fingerprint), or a fresh one; another run's is set aside."""
    fresh = {"fingerprint": fp, "fixed": {}, "learned": {}}
    if path is None or not path.exists():
        return fresh
    record = fingerprint.read_json(path)
    if record and record.get("fingerprint") == fp:
        log(f"resuming the merge from {path}: {len(record['fixed'])} fixed candidates and "
            f"{len(record['learned'])} learning rates already done")
        return record
    fingerprint.set_aside(path)
    log(f"set aside {path}: written by a merge with other inputs (model, adapters, prompts, settings or code); "
        "starting the merge from the beginning")
    return fresh


def select_merge(mixture: Mixture, score: Callable[[], np.ndarray], encode: Callable[[Sequence[str]], dict],
                 learn_prompts: Sequence[str], select_labels: np.ndarray, yes_id: int, s: MergeSettings,
                 log: Callable[[str], None] = print, checkpoint: Path | None = None,
                 fingerprint_: str = "") -> list[MergeResult]:
    """Every method of MERGE_METHODS, each with its AUC on the selection slice: `score()` returns the
    Yes logits of the selection prompts under the mixture's current weights, `select_labels` are
    their validation labels. A fixed method keeps its best candidate; the learned merge takes the
    (lr, step) with the best selection AUC. Only validation data reaches this function; it has no
    way to see test rows. With `checkpoint`, every scored candidate and every finished learning rate
    is recorded there, and a rerun with the same `fingerprint_` continues where it stopped."""
    a_name, b_name = mixture.names
    state = _open_checkpoint(checkpoint, fingerprint_, log)

    def save() -> None:
        if checkpoint is not None:
            fingerprint.write_json(checkpoint, state)

    def fixed_auc(weights: dict[str, float]) -> float:
        key = json.dumps(sorted(weights.items()))  # task arithmetic at lambda 0.5 is the equal-weight merge
        if key not in state["fixed"]:
            mixture.set_fixed(weights)
            state["fixed"][key] = metrics.auc(select_labels, score())
            save()
        return state["fixed"][key]

    results: list[MergeResult] = []
    for method in MERGE_METHODS.values():
        if method.weights is None:
            results.append(_learned(mixture, score, encode, learn_prompts, select_labels, yes_id, s, log, state, save))
            continue
        tried = [MergeResult(method.name, w, None, fixed_auc(w)) for w in method.weights(s, a_name, b_name)]
        best = max(tried, key=lambda r: r.select_auc)
        if len(tried) > 1:
            best.candidates = [{"weights": r.weights, "select_auc": r.select_auc} for r in tried]
        log(f"{method.name} {best.weights}: selection AUC {best.select_auc:.4f}")
        results.append(best)
    return results


def _learned(mixture: Mixture, score, encode, learn_prompts, select_labels, yes_id: int, s: MergeSettings, log,
             state: dict, save) -> MergeResult:
    """The learned merge: for each learning rate, learn the logits and score a snapshot every
    `eval_every` steps; the best snapshot on the selection rows wins."""
    for lr in s.learning_rates:
        if str(lr) in state["learned"]:
            continue
        mixture.reset()
        snapshots = []

        def snap(step: int, entropy: float) -> None:
            if step % s.eval_every == 0 or step == s.steps:
                snapshots.append((step, mixture.logits_state()))

        curve = learn_weights(mixture, encode, learn_prompts, yes_id, lr, s.steps, s.batch_size, s.seed, on_step=snap,
                              log=log)
        done = []
        for step, logits in snapshots:
            mixture.load_logits(logits)
            mixture.set_fixed(None)
            auc = metrics.auc(select_labels, score())
            done.append({"step": step, "logits": logits, "select_auc": auc})
            log(f"learned merge lr {lr} step {step}: entropy {curve[step - 1]:.4f}, selection AUC {auc:.4f}")
        state["learned"][str(lr)] = {"curve": curve, "snapshots": done}
        save()
    best: MergeResult | None = None
    candidates, curves = [], {}
    for lr in s.learning_rates:
        record = state["learned"][str(lr)]
        curves[str(lr)] = record["curve"]
        for snap_ in record["snapshots"]:
            candidates.append({"lr": lr, "step": snap_["step"], "select_auc": snap_["select_auc"],
                               "entropy": record["curve"][snap_["step"] - 1]})
            if best is None or snap_["select_auc"] > best.select_auc:
                best = MergeResult("reccocktail", None, snap_["logits"], snap_["select_auc"], lr, snap_["step"])
    assert best is not None
    best.candidates, best.entropy_curves = candidates, curves
    mixture.load_logits(best.logits)
    mixture.set_fixed(None)
    return best


def apply(mixture: Mixture, result: MergeResult) -> None:
    """Put the mixture in the state a merge result describes."""
    if result.logits is not None:
        mixture.load_logits(result.logits)
        mixture.set_fixed(None)
    else:
        mixture.set_fixed(result.weights)


def save_dense(mixture: Mixture, tokenizer, out: Path) -> Path:
    """Fold the current weights into W0 and save a plain Hugging Face model folder (safetensors),
    written beside `out` and swapped into place."""
    from models.data_prep import fresh_dir, replace_dir

    model = mixture.to_dense()
    tmp = fresh_dir(out)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    return replace_dir(tmp, out)


def validation_slices(split, titles: dict[str, str], build, n_learn: int, n_select: int, seed: int = 2023):
    """(learn prompts, selection prompts, selection labels) from the split's *valid* rows only, two
    disjoint seeded samples; the learn slice's labels are never read. Test rows are dropped first."""
    import polars as pl

    valid = split.filter(pl.col("split") == "valid").select("history_item_ids", "title", "label")
    if valid.height < 2:
        raise MergeError(f"the split has {valid.height} valid rows; the merge needs validation data")
    order = np.random.default_rng(seed).permutation(valid.height)
    n_select = min(n_select, valid.height // 2)
    n_learn = min(n_learn, valid.height - n_select)
    sel, learn = valid[np.sort(order[:n_select]).tolist()], valid[np.sort(order[n_select:n_select + n_learn]).tolist()]

    def prompts(rows):
        return [build([titles[i] for i in h], t) for h, t in rows.select("history_item_ids", "title").iter_rows()]

    return prompts(learn), prompts(sel), sel["label"].to_numpy()
