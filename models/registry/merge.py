"""The merge-method registry: RecCocktail and its baselines, each a way of combining the base spirit
(a) and the ingredient (b) and the name it is scored under. Light: the combinations' arithmetic is
models/llm/merge.py. Adding a merge method is one entry here plus its test (docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from models.profiles import MergeSettings


@dataclass(frozen=True)
class MergeMethod:
    """One way of combining the base spirit (a) and the ingredient (b): `weights(settings, a, b)`
    lists its candidates (the best on the selection rows is kept): fixed mixing weights, or a PEFT
    combination (`{"combination": ..., "density": ...}`, built by `peft_combination`); None for the
    learned merge. `score_name` is its method name in the score files and the report."""

    name: str
    score_name: str
    description: str
    weights: Callable[[MergeSettings, str, str], list[dict]] | None = None


def is_combination(weights) -> bool:
    return isinstance(weights, dict) and "combination" in weights


# RecCocktail and its baselines, in the order merge.json lists them. Adding a baseline is one entry
# here (and its test); llm_scores scores every entry.
MERGE_METHODS: dict[str, MergeMethod] = {m.name: m for m in (
    MergeMethod("base_only", "base_spirit", "the base spirit alone (RecCocktail-G)", lambda s, a, b: [{a: 1.0, b: 0.0}]),
    MergeMethod("ingredient_only", "ingredient_tallrec", "the ingredient alone (TALLRec, CoLLM step 1)",
                lambda s, a, b: [{a: 0.0, b: 1.0}]),
    MergeMethod("equal_weights", "equal_weights", "W0 + (dA + dB) / 2", lambda s, a, b: [{a: 0.5, b: 0.5}]),
    MergeMethod("task_arithmetic", "task_arithmetic", "W0 + lambda (dA + dB), lambda picked on validation labels",
                lambda s, a, b: [{a: lam, b: lam} for lam in s.task_arithmetic_lambdas]),
    MergeMethod("ties", "ties", "TIES (trim, elect sign, merge) by PEFT, density picked on validation labels",
                lambda s, a, b: [{"combination": "ties", "density": d, "weights": [1.0, 1.0]} for d in s.ties_densities]),
    MergeMethod("dare", "dare", "DARE (random drop and rescale, then task arithmetic) by PEFT, density picked on "
                "validation labels", lambda s, a, b: [{"combination": "dare_linear", "density": d, "weights": [1.0, 1.0]}
                                                      for d in s.dare_densities]),
    MergeMethod("reccocktail", "reccocktail", "RecCocktail: per-module weights learned by entropy minimisation on "
                "unlabelled validation prompts"),
)}


def register(method: MergeMethod) -> MergeMethod:
    """Add a merge method (before RecCocktail, which stays last: merge.json lists it last); returns it."""
    if method.name in MERGE_METHODS:
        raise ValueError(f"a merge method named {method.name!r} is registered already")
    learned = MERGE_METHODS.pop("reccocktail", None)
    MERGE_METHODS[method.name] = method
    if learned is not None:
        MERGE_METHODS[learned.name] = learned
    return method
