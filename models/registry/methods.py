"""The names of the methods a report can show, in one place: the untrained LLM, TALLRec (the
ingredient alone), the merge baselines, every scored method of the pointwise LLM stage, CoLLM's and
the CF models, and the report's ensembles. Light: names only."""

from __future__ import annotations

from models.registry import collm
from models.registry.cf import CF_MODELS
from models.registry.merge import MERGE_METHODS

UNTRAINED = "llm_untrained"  # the base LLM without any adapter
TALLREC = "ingredient_tallrec"  # the ingredient alone: TALLRec, CoLLM's step 1 and "w/o CIE"
# RecCocktail's merge baselines, as scored (models/registry/merge.py score names), that the cocktail is compared with
MERGE_BASELINES = ("ingredient_tallrec", "base_spirit", "equal_weights", "task_arithmetic", "ties", "dare")

# CoLLM's Table III ensembles, computed by the report from the two score sets on the rows both scored.
# The paper averages the two members' probabilities; with a Yes logit of 9 to 17 (an LLM that is not
# calibrated) sigmoid is 0.9999 and the LLM member only breaks the CF member's ties. Ours: each member's
# scores standardised (mean 0, standard deviation 1 on the rows both scored; no labels), then averaged.
ENSEMBLES = {"ensemble_mf_tallrec": ("mf", "ingredient_tallrec"), "ensemble_mf_collm_mf": ("mf", "collm_mf")}


ENSEMBLE_RULE = ("each member's scores standardised on the rows both scored (mean 0, standard deviation 1, no "
                 "labels), then averaged (ours; CoLLM's Table III averages probabilities, which is the same only when "
                 "both members are calibrated)")



def score_names() -> tuple[str, ...]:
    """The methods an LLM scoring stage scores, as the report names them: the untrained LLM and every
    merge method."""
    return (UNTRAINED, *(m.score_name for m in MERGE_METHODS.values()))


def method_names() -> tuple[str, ...]:
    """Every method name a report can show (and a floor can name), from the registries: the CF models,
    the LLM scores (the untrained LLM and every merge method), CoLLM on each CF model, backbone and
    variant, and the report's ensembles (CoLLM's Table III)."""
    return (*CF_MODELS, *score_names(), *collm.method_names(), *ENSEMBLES)
