"""RecCocktail's entropy-guided adaptive merge (docs/protocols.md section 7) and its baselines.

Every linear module that either adapter wraps gets its own learnable logit vector w over the
adapters (base spirit, ingredient), initialised equal; the mixing weights are a = softmax(w / T).
While the weights learn, the module computes `W0 x + sum_k a_k * s_k * B_k A_k x` (s_k = alpha/r);
only w trains (Adam), the model in eval mode, on unlabelled validation prompts, minimising an
entropy: as published for listwise adapters, the Shannon entropy of the next-token distribution at
the first tokens of each generated answer item (models/llm/listwise.py); for the Yes/No adapters, the
binary entropy of P(Yes) at the answer position (our pointwise adaptation, `yes_entropy`). Learning
rate and step count are chosen on a separate slice of validation rows with labels (AUC pointwise,
NDCG listwise); test rows never enter this module. Afterwards the merged delta
`sum_k a_k s_k B_k A_k` is added into W0: one dense model, saved as plain safetensors that
`AutoModelForCausalLM.from_pretrained` loads, costing what the base model costs.

Baselines with the same machinery: fixed equal weights, task arithmetic (W0 + lambda * sum_k s_k B_k A_k,
lambda chosen on validation labels), base spirit only, ingredient only; and TIES and DARE, combined
by PEFT's `add_weighted_adapter` into one adapter that is folded in the same way.

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
from safetensors.torch import load_file

from models.core import fingerprint
from models.core.files import fresh_dir, replace_dir
from models.core.progress import Progress
from models.llm.heads import yes_logit
from models.profiles import MergeSettings
from models.registry.merge import MERGE_METHODS, is_combination


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


def layer_shape(layer: torch.nn.Module) -> tuple[int, int] | None:
    """(in, out) features of a layer LoRA can wrap and the merge can fold: `nn.Linear` (weight [out, in])
    or transformers' `Conv1D` (GPT-2; weight [in, out]); None for anything else."""
    if isinstance(layer, torch.nn.Linear):
        return layer.in_features, layer.out_features
    if type(layer).__name__ == "Conv1D" and getattr(layer, "weight", None) is not None and layer.weight.ndim == 2:
        return layer.weight.shape[0], layer.weight.shape[1]
    return None


class MixLinear(torch.nn.Module):
    """W0 x + sum_k a_k s_k B_k A_k x with a = softmax(w / T) over the adapters that wrap this module
    (a Linear or a GPT-2 Conv1D). The adapters' A and B stay fp32 whatever W0's dtype (bf16 on a GPU):
    the adapter branch runs in fp32 and the fold adds in fp32 before one cast."""

    def __init__(self, base: torch.nn.Module, parts: list[tuple[torch.Tensor, torch.Tensor, float]],
                 temperature: float = 1.0):
        super().__init__()
        self.base = base
        self.temperature = temperature
        self.transposed = not isinstance(base, torch.nn.Linear)  # Conv1D keeps W0 as [in, out]
        for i, (a, b, s) in enumerate(parts):
            self.register_buffer(f"A{i}", a.float().to(base.weight.device))
            self.register_buffer(f"B{i}", (b.float() * s).to(base.weight.device))
        self.k = len(parts)
        self.logits = torch.nn.Parameter(torch.zeros(self.k, device=base.weight.device))
        self.fixed: torch.Tensor | None = None  # set to use given weights instead of softmax(logits)

    def weights(self) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed
        return torch.softmax(self.logits / self.temperature, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        a = self.weights().float()
        xf = x.float()
        extra = sum(a[i] * ((xf @ getattr(self, f"A{i}").T) @ getattr(self, f"B{i}").T) for i in range(self.k))
        return out + extra.to(out.dtype)

    def delta(self) -> torch.Tensor:
        """The merged update in fp32, in the layout of W0 ([out, in] for Linear, [in, out] for Conv1D)."""
        a = self.weights().detach().float()
        d = sum(a[i] * (getattr(self, f"B{i}") @ getattr(self, f"A{i}")) for i in range(self.k))
        return d.T if self.transposed else d

    def fold(self) -> torch.nn.Module:
        """W0 + delta added in fp32, then cast once to W0's dtype (adding a bf16-rounded delta into bf16
        weights moved Yes logits by up to 0.31 on a GPU); returns the plain layer."""
        with torch.no_grad():
            w = self.base.weight
            w.copy_((w.float() + self.delta()).to(w.dtype))
        return self.base


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
            shape = layer_shape(base)
            if shape is None:
                raise MergeError(f"adapter module {path} is a {type(base).__name__}, not a Linear (or GPT-2 Conv1D) "
                                 "of the base model")
            present = [a for a in adapters if path in a.deltas]
            for a in present:
                A, B = a.deltas[path]
                if A.shape[1] != shape[0] or B.shape[0] != shape[1]:
                    raise MergeError(f"adapter {a.name} does not fit {path}: A {tuple(A.shape)}, B {tuple(B.shape)}, "
                                     f"layer {shape[0]}->{shape[1]}; was it trained on this model?")
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
        for path, m in self.modules.items():
            parent_path, _, attr = path.rpartition(".")
            setattr(self.model.get_submodule(parent_path), attr, m.fold())
        self.modules = {}
        return self.model


def binary_entropy(logit: torch.Tensor) -> torch.Tensor:
    """H(sigmoid(z)) in nats, stable for large |z|."""
    p = torch.sigmoid(logit)
    return torch.nn.functional.softplus(-logit) * p + torch.nn.functional.softplus(logit) * (1 - p)


def peft_combination(model: torch.nn.Module, folders: dict[str, Path], how: dict,
                     seed: int) -> tuple["Adapter", torch.nn.Module]:
    """The adapters combined by PEFT's own `add_weighted_adapter` (TIES, DARE; no copy of their code
    here) into one LoRA adapter, read back as plain tensors; returned with the base model PEFT
    wrapped, unwrapped again (its weights untouched). DARE's random drop is seeded."""
    from peft import PeftModel, get_peft_model_state_dict

    names = list(folders)
    peft_model = PeftModel.from_pretrained(model, str(folders[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(str(folders[name]), adapter_name=name)
    torch.manual_seed(seed)
    peft_model.add_weighted_adapter(names, list(how.get("weights", [1.0] * len(names))), "combined",
                                    combination_type=how["combination"], density=how["density"])
    cfg = peft_model.peft_config["combined"]
    # our LoRAs never resize the vocabulary: no Hub lookup to find out (a warning offline), see heads.save_adapter
    state = get_peft_model_state_dict(peft_model, adapter_name="combined", save_embedding_layers=False)
    deltas: dict[str, list] = {}
    for key, t in state.items():
        for part, pos in ((".lora_A.weight", 0), (".lora_B.weight", 1)):
            if key.endswith(part):
                deltas.setdefault(key[:-len(part)].removeprefix("base_model.model."), [None, None])[pos] = t.float()
    adapter = Adapter(how["combination"], {m: (a, b) for m, (a, b) in deltas.items()}, cfg.lora_alpha / cfg.r)
    return adapter, peft_model.unload()


@dataclass
class MergeResult:
    method: str
    weights: dict | None  # fixed weights or a PEFT combination, or None for learned
    logits: dict[str, list[float]] | None  # learned per-module logits
    select_score: float  # on the selection rows: AUC (pointwise) or NDCG (listwise)
    lr: float | None = None
    step: int | None = None
    candidates: list[dict] = field(default_factory=list)
    entropy_curves: dict[str, list[float]] = field(default_factory=dict)


Objective = Callable[[torch.nn.Module, Sequence], torch.Tensor]  # (model, a batch of learn prompts) -> loss


def yes_entropy(encode: Callable[[Sequence[str]], dict], yes_id: int) -> Objective:
    """Our pointwise objective (docs/protocols.md section 8): the mean binary entropy of P(Yes) at the answer position."""
    def loss(model: torch.nn.Module, batch: Sequence[str]) -> torch.Tensor:
        enc = encode(batch)
        return binary_entropy(yes_logit(model, enc["input_ids"], enc["attention_mask"], yes_id).float()).mean()

    return loss


def learn_weights(mixture: Mixture, objective: Objective, prompts: Sequence, lr: float, steps: int, batch_size: int,
                  seed: int, on_step: Callable[[int, float], None] | None = None,
                  log: Callable[[str], None] | None = None) -> list[float]:
    """Adam on the mixing logits only, model in eval mode, minimising `objective` (an entropy) on
    unlabelled prompts (no labels exist here). Returns the objective per step."""
    mixture.model.eval()
    mixture.set_fixed(None)
    opt = torch.optim.Adam(mixture.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    curve = []
    progress = Progress(f"learning mixing weights (lr {lr})", steps, log) if log else None
    for step in range(1, steps + 1):
        idx = rng.choice(len(prompts), min(batch_size, len(prompts)), replace=False)
        loss = objective(mixture.model, [prompts[i] for i in idx])
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


def select_merge(mixture: Mixture, select_score: Callable[[object], float], objective: Objective,
                 learn_prompts: Sequence, s: MergeSettings, log: Callable[[str], None] = print,
                 checkpoint: Path | None = None, fingerprint_: str = "",
                 combine: Callable[[dict], object] | None = None) -> list[MergeResult]:
    """Every method of MERGE_METHODS, each with its score on the selection slice: `select_score(None)`
    scores the mixture in its current state (`select_score(model)`: another dense model) on labelled validation rows (AUC pointwise, NDCG listwise;
    higher is better), `objective` is the entropy the learned merge minimises on `learn_prompts`
    (unlabelled validation prompts). A fixed method keeps its best candidate; the learned merge takes
    the (lr, step) with the best selection score; a PEFT combination (TIES, DARE) is built by
    `combine(weights)` into a dense model that `select_score` scores. Only validation data reaches
    this function; it has no way to see test rows. With `checkpoint`, every scored candidate and every finished learning rate
    is recorded there, and a rerun with the same `fingerprint_` continues where it stopped."""
    a_name, b_name = mixture.names
    state = _open_checkpoint(checkpoint, fingerprint_, log)

    def save() -> None:
        if checkpoint is not None:
            fingerprint.write_json(checkpoint, state)

    def fixed_score(weights: dict) -> float:
        key = json.dumps(sorted(weights.items()))  # task arithmetic at lambda 0.5 is the equal-weight merge
        if key not in state["fixed"]:
            if is_combination(weights):
                if combine is None:
                    raise MergeError(f"{weights['combination']} needs `combine` (a PEFT combination builder)")
                state["fixed"][key] = select_score(combine(weights))
            else:
                mixture.set_fixed(weights)
                state["fixed"][key] = select_score(None)
            save()
        return state["fixed"][key]

    results: list[MergeResult] = []
    for method in MERGE_METHODS.values():
        if method.weights is None:
            results.append(_learned(mixture, select_score, objective, learn_prompts, s, log, state, save))
            continue
        tried = [MergeResult(method.name, w, None, fixed_score(w)) for w in method.weights(s, a_name, b_name)]
        best = max(tried, key=lambda r: r.select_score)
        if len(tried) > 1:
            best.candidates = [{"weights": r.weights, "select_score": r.select_score} for r in tried]
        log(f"{method.name} {best.weights}: selection score {best.select_score:.4f}")
        results.append(best)
    return results


def _learned(mixture: Mixture, select_score, objective: Objective, learn_prompts, s: MergeSettings, log,
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

        curve = learn_weights(mixture, objective, learn_prompts, lr, s.steps, s.batch_size, s.seed, on_step=snap,
                              log=log)
        done = []
        for step, logits in snapshots:
            mixture.load_logits(logits)
            mixture.set_fixed(None)
            value = select_score(None)
            done.append({"step": step, "logits": logits, "select_score": value})
            log(f"learned merge lr {lr} step {step}: entropy {curve[step - 1]:.4f}, selection score {value:.4f}")
        state["learned"][str(lr)] = {"curve": curve, "snapshots": done}
        save()
    best: MergeResult | None = None
    candidates, curves = [], {}
    for lr in s.learning_rates:
        record = state["learned"][str(lr)]
        curves[str(lr)] = record["curve"]
        for snap_ in record["snapshots"]:
            candidates.append({"lr": lr, "step": snap_["step"], "select_score": snap_["select_score"],
                               "entropy": record["curve"][snap_["step"] - 1]})
            if best is None or snap_["select_score"] > best.select_score:
                best = MergeResult("reccocktail", None, snap_["logits"], snap_["select_score"], lr, snap_["step"])
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
