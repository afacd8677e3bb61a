"""Profiles: how big the LLM stages run. `LLMREC_PROFILE` picks one; `LLMREC_MODEL` overrides its model.

- smoke: the tiny random Llama, a few steps, small samples: the LLM assets in seconds, for tests.
- demo: SmolLM2-135M with a capped step budget and capped evaluation samples, so `make demo`
  finishes on a 2-core CPU; the numbers are real but from little training.
- extended: SmolLM2-135M for about an hour and a half on a 2-core CPU: a 600-step ingredient
  adapter (a 150-step base spirit), 1,000 test rows and 100 ranking lists; numbers you can compare.
- full: PROTOCOLS settings (batch 16, lr 1e-3, 200 warm-up steps, validation every 50 steps,
  patience 20, all test rows), for a GPU.

`merge` sets the cocktail merge: `learn_rows` unlabelled validation prompts to learn the mixing
weights on, `select_rows` other validation rows whose labels pick the learning rate and step, and
the `MergeSettings` fields (learning_rates, steps, batch_size, eval_every, task_arithmetic_lambdas).
`<kind>_train` and `<kind>_valid_rows` (kind `base_spirit` or `ingredient`) override `train` and
`valid_rows` (per domain) for that adapter. `collm` sets CoLLM's CIE: which CF models feed it,
which frozen backbones it trains on (the ingredient, as published, and the cocktail), the variant
(two_step, t1, t3) and `train` overrides.
"""

from __future__ import annotations

import os
from typing import Any

from models import llm

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "model": llm.SMOKE,
        "train": {"max_steps": 10, "batch_size": 8, "eval_every": 5, "checkpoint_every": 5, "warmup_steps": 2,
                  "lr": 5e-3, "min_lr": 1e-4, "patience": 20},
        "train_rows_per_domain": 200, "valid_rows": 64, "test_rows": 200, "ranking_users": 10,
        "merge": {"learn_rows": 16, "select_rows": 32, "learning_rates": [0.1], "steps": 4, "batch_size": 4,
                  "eval_every": 2, "task_arithmetic_lambdas": [0.5, 1.0]},
        "collm": {"cf_models": ["mf"], "backbones": ["ingredient", "cocktail"], "variant": "two_step",
                  "train": {"max_steps": 6, "eval_every": 3}},
        "max_prompt_tokens": 512, "llm_domains": None,
    },
    "demo": {
        "model": llm.EMBEDDED,
        "train": {"max_steps": 24, "batch_size": 8, "eval_every": 12, "checkpoint_every": 12, "warmup_steps": 3,
                  "lr": 1e-3, "min_lr": 8e-5, "patience": 20},
        "base_spirit_train": {"eval_every": 24}, "base_spirit_valid_rows": 16,
        # 8 lists would leave about 4 positive ones, below evaluation.min_subset_rows: the LLM ranks none
        "train_rows_per_domain": 2000, "valid_rows": 64, "test_rows": 100, "ranking_users": 0,
        "merge": {"learn_rows": 24, "select_rows": 32, "learning_rates": [0.05], "steps": 6, "batch_size": 8,
                  "eval_every": 3, "task_arithmetic_lambdas": [0.5, 1.0]},
        "collm": {"cf_models": ["mf"], "backbones": ["ingredient"], "variant": "two_step",
                  "train": {"max_steps": 12, "eval_every": 6, "warmup_steps": 2, "lr": 5e-3}},
        "max_prompt_tokens": 512, "llm_domains": ["movies", "scifi"],
    },
    "extended": {
        "model": llm.EMBEDDED,
        "train": {"max_steps": 600, "batch_size": 8, "eval_every": 100, "checkpoint_every": 25, "warmup_steps": 30,
                  "lr": 1e-3, "min_lr": 8e-5, "patience": 20},
        "base_spirit_train": {"max_steps": 150, "eval_every": 75},
        "train_rows_per_domain": None, "valid_rows": 200, "test_rows": 1000, "ranking_users": 100,
        "merge": {"learn_rows": 200, "select_rows": 200, "learning_rates": [0.01, 0.05, 0.2], "steps": 30,
                  "batch_size": 8, "eval_every": 10},
        "collm": {"cf_models": ["mf", "als"], "backbones": ["ingredient", "cocktail"], "variant": "two_step",
                  "train": {"max_steps": 200, "eval_every": 50, "lr": 5e-3}},
        "max_prompt_tokens": 512, "llm_domains": ["movies"],
    },
    "full": {
        "model": llm.EMBEDDED,
        "train": {"max_steps": 20000, "batch_size": 16, "eval_every": 50, "checkpoint_every": 50,
                  "warmup_steps": 200, "lr": 1e-3, "min_lr": 8e-5, "patience": 20},
        "train_rows_per_domain": None, "valid_rows": 0.5, "test_rows": None, "ranking_users": None,
        "merge": {"learn_rows": 500, "select_rows": 1000, "learning_rates": [0.001, 0.01, 0.05, 0.2], "steps": 100,
                  "batch_size": 16, "eval_every": 20},
        "collm": {"cf_models": ["mf", "als", "bpr"], "backbones": ["ingredient", "cocktail"], "variant": "two_step",
                  "train": {}},
        "max_prompt_tokens": 1024, "llm_domains": None,
    },
}


def profile(name: str) -> dict[str, Any]:
    """The named profile; an adapter kind's `<kind>_train` entries override `train` for that kind."""
    p = dict(PROFILES[name])
    if os.environ.get("LLMREC_MODEL"):
        p["model"] = os.environ["LLMREC_MODEL"]
    return p
