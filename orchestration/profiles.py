"""Profiles: how big the LLM stages run. `LLMREC_PROFILE` picks one; `LLMREC_MODEL` overrides its model.

- smoke: the tiny random Llama, a few steps, small samples: the LLM assets in seconds, for tests.
- demo: SmolLM2-135M with a capped step budget and capped evaluation samples, so `make demo`
  finishes on a 2-core CPU; the numbers are real but from little training.
- extended: SmolLM2-135M for about an hour and a half on a 2-core CPU: a 600-step ingredient
  adapter (a 150-step base spirit), 1,000 test rows and 100 ranking lists; numbers you can compare.
- full: PROTOCOLS settings (batch 16, lr 1e-3, 200 warm-up steps, validation every 50 steps,
  patience 20, all test rows), for a GPU.
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
        "max_prompt_tokens": 512, "llm_domains": None,
    },
    "demo": {
        "model": llm.EMBEDDED,
        "train": {"max_steps": 60, "batch_size": 8, "eval_every": 30, "checkpoint_every": 10, "warmup_steps": 10,
                  "lr": 1e-3, "min_lr": 8e-5, "patience": 20},
        "train_rows_per_domain": 2000, "valid_rows": 100, "test_rows": 300, "ranking_users": 20,
        "max_prompt_tokens": 512, "llm_domains": ["movies"],
    },
    "extended": {
        "model": llm.EMBEDDED,
        "train": {"max_steps": 600, "batch_size": 8, "eval_every": 100, "checkpoint_every": 25, "warmup_steps": 30,
                  "lr": 1e-3, "min_lr": 8e-5, "patience": 20},
        "base_spirit_train": {"max_steps": 150, "eval_every": 75},
        "train_rows_per_domain": None, "valid_rows": 200, "test_rows": 1000, "ranking_users": 100,
        "max_prompt_tokens": 512, "llm_domains": ["movies"],
    },
    "full": {
        "model": llm.EMBEDDED,
        "train": {"max_steps": 20000, "batch_size": 16, "eval_every": 50, "checkpoint_every": 50,
                  "warmup_steps": 200, "lr": 1e-3, "min_lr": 8e-5, "patience": 20},
        "train_rows_per_domain": None, "valid_rows": 0.5, "test_rows": None, "ranking_users": None,
        "max_prompt_tokens": 1024, "llm_domains": None,
    },
}


def profile(name: str) -> dict[str, Any]:
    """The named profile; an adapter kind's `<kind>_train` entries override `train` for that kind."""
    p = dict(PROFILES[name])
    if os.environ.get("LLMREC_MODEL"):
        p["model"] = os.environ["LLMREC_MODEL"]
    return p
