"""Train a registered CF model by name: its implementation ("module:function" in
models/registry/cf.py) imported when it trains. No Dagster here."""

from __future__ import annotations

import importlib
from typing import Callable

from models.cf.interactions import Interactions
from models.cf.model import CFModel
from models.registry.cf import CF_MODELS, Params


def implementation(name: str) -> Callable[..., CFModel]:
    module, function = CF_MODELS[name].implementation.split(":")
    return getattr(importlib.import_module(module), function)


def train_model(name: str, data: Interactions, params: Params | dict | None = None, seed: int = 2023,
                log: Callable[[str], None] | None = None) -> CFModel:
    """Train the registered CF model `name` with its (validated) hyper-parameters."""
    spec = CF_MODELS[name]
    p = params if isinstance(params, spec.params) else spec.params(**(params or {}))
    return implementation(name)(data, p, seed, log)
