"""CoLLM's variants and backbones (docs/protocols.md section 3) and the names of the CoLLM methods
they give: light, so the settings and the report can name them without torch."""

from __future__ import annotations

from models.registry.cf import CF_MODELS

VARIANTS = ("two_step", "t1", "t2", "t3")
TUNES_CF = ("t1", "t2")  # the variants that train the CF vectors
BACKBONES = ("ingredient", "cocktail")  # as published, and ours


def method_name(cf_name: str, backbone: str, variant: str = "two_step") -> str:
    """`collm_<cf>`, then `_cocktail` on our backbone, then `_<variant>` unless two-step: e.g.
    `collm_mf`, `collm_sasrec_t3`, `collm_mf_cocktail_t1`."""
    return (f"collm_{cf_name}" + ("" if backbone == "ingredient" else f"_{backbone}")
            + ("" if variant == "two_step" else f"_{variant}"))


def methods(backbones: tuple[str, ...], cf_models: tuple[str, ...], variants: tuple[str, ...]):
    """(method, backbone, CF model, variant) of each CoLLM method: t3 starts from the raw base LLM, so
    it runs once per CF model whatever the backbones; t1 and t2 tune vector tables, which a
    sequential CF model (SASRec) does not have, so they skip it (models/llm/collm.py)."""
    out = []
    for variant in variants:
        for backbone in (backbones[:1] if variant == "t3" else backbones):
            for cf in cf_models:
                if not (variant in TUNES_CF and CF_MODELS[cf].sequential):
                    out.append((method_name(cf, backbone, variant), backbone, cf, variant))
    return out


def method_names() -> tuple[str, ...]:
    """Every CoLLM method a profile can ask for: each registered CF model on each backbone and variant."""
    return tuple(m for m, *_ in methods(BACKBONES, tuple(CF_MODELS), VARIANTS))
