"""The base spirit and a domain's ingredient of one task kind, found in their folders and mixed over a
fresh base LLM; and the dense model of every merge method (fixed weights, a PEFT combination, or the
learned cocktail's folder), for scoring and for CoLLM's backbone. No Dagster here."""

from __future__ import annotations

from pathlib import Path

from models.core import fingerprint
from models.data.workspace import Workspace
from models.llm import loading as llm_mod
from models.llm import merge
from models.profiles import Profile
from models.registry import merge as merge_registry
from models.registry.methods import UNTRAINED
from models.registry.tasks import ROLES, TASKS
from models.stages.common import load_base


def cocktail_dir(ws: Workspace, domain: str, task: str = "pointwise") -> Path:
    """models/<the task's cocktail folder>/<domain>: merge.json and the dense model."""
    return ws.dir("models", TASKS[task].cocktail_folder, domain)


def adapter_dir(ws: Workspace, role: str, task: str = "pointwise", domain: str | None = None) -> Path:
    """The training folder of a task's base spirit (adapters/<folder>) or a domain's ingredient
    (adapters/<folder>/<domain>); the PEFT adapter is its `adapter/`."""
    folder = TASKS[task].adapter_folders[role]
    return ws.adapter_dir(folder) if role == "base_spirit" else ws.adapter_dir(folder, domain)


def adapter_folders(ws: Workspace, domain: str, task: str = "pointwise",
                    names: tuple[str, ...] = ROLES) -> dict[str, Path]:
    folders = {name: adapter_dir(ws, name, task, domain) / "adapter" for name in names}
    for name, folder in folders.items():
        ws.require(folder, TASKS[task].assets[name], None if name == "base_spirit" else domain)
    return folders


def mixture(ws: Workspace, domain: str, prof: Profile, task: str = "pointwise", names: tuple[str, ...] = ROLES
            ) -> tuple[llm_mod.LoadedLLM, merge.Mixture, dict]:
    """A fresh base LLM with the base spirit and the domain's ingredient (or only `names`) mixed in
    every adapted module; returns it with the adapters' folder digests."""
    loaded = load_base(ws, prof)
    folders = adapter_folders(ws, domain, task, names)
    adapters = [merge.Adapter.load(name, folders[name]) for name in names]
    return loaded, merge.Mixture(loaded.model, adapters, prof.merge.temperature), \
        {name: fingerprint.folder_digest(f) for name, f in folders.items()}


def fixed_weights(ws: Workspace, domain: str, task: str = "pointwise") -> dict[str, dict]:
    """merge method -> the fixed weights or PEFT combination it chose (the learned merge has none: it is the dense model)."""
    record = fingerprint.read_json(ws.require(cocktail_dir(ws, domain, task) / "merge.json",
                                              TASKS[task].assets["cocktail"], domain))
    return {r["method"]: r["weights"] for r in record["results"] if r["weights"] is not None}


def combined_model(ws: Workspace, domain: str, prof: Profile, how: dict, task: str = "pointwise") -> llm_mod.LoadedLLM:
    """The two adapters combined by PEFT (TIES, DARE: `how`) and folded into a fresh base model."""
    loaded = load_base(ws, prof)
    folders = adapter_folders(ws, domain, task)
    adapter, loaded.model = merge.peft_combination(loaded.model, folders, how, prof.merge.seed)
    mix = merge.Mixture(loaded.model, [adapter], prof.merge.temperature)
    mix.set_fixed({adapter.name: 1.0})
    mix.to_dense()
    loaded.model.eval()
    loaded.identity = {**loaded.identity, "adapters": {n: fingerprint.folder_digest(f) for n, f in folders.items()},
                       "combination": how}
    return loaded


def dense_model(ws: Workspace, domain: str, prof: Profile, how: dict | Path | None,
                task: str = "pointwise") -> llm_mod.LoadedLLM:
    """A dense model: None = the base LLM, a folder = that model, a dict = the two adapters mixed with
    these fixed weights (or combined by PEFT) and folded in. Its `identity` says which."""
    if how is None:
        return load_base(ws, prof)
    if merge_registry.is_combination(how):
        return combined_model(ws, domain, prof, how, task)
    if isinstance(how, dict):
        # an adapter at weight 0 adds exactly nothing to the fold: only the others are loaded (the ingredient
        # alone needs no base spirit, which a CoLLM-only config does not have)
        names = tuple(n for n in ROLES if how.get(n))
        loaded, mix, digests = mixture(ws, domain, prof, task, names)
        mix.set_fixed({n: how[n] for n in names})
        mix.to_dense()
        loaded.model.eval()
        loaded.identity = {**loaded.identity, "adapters": digests, "fixed_weights": how}
        return loaded
    return llm_mod.load(Path(how))


def methods(ws: Workspace, domain: str, task: str, without_base_spirit: bool = False) -> dict:
    """Scored method -> how to get its dense model: None = the base LLM, fixed weights, or the learned
    cocktail's folder; with no base spirit (no general domain) only the ingredient alone (TALLRec)."""
    fixed = fixed_weights(ws, domain, task)
    out: dict = {UNTRAINED: None}
    if without_base_spirit:
        ingredient = merge_registry.MERGE_METHODS["ingredient_only"]
        return {**out, ingredient.score_name: fixed[ingredient.name]}
    for m in merge_registry.MERGE_METHODS.values():
        out[m.score_name] = fixed[m.name] if m.weights is not None else cocktail_dir(ws, domain, task) / "model"
    return out


def skipped(ws: Workspace, domain: str, task: str = "pointwise") -> bool:
    """Whether the domain's cocktail of this task was skipped (no base spirit: models/stages/cocktail.py,
    `without_base_spirit`)."""
    return bool((fingerprint.read_json(cocktail_dir(ws, domain, task) / "merge.json") or {}).get("skipped"))
