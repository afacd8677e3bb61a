"""Which LLM profile a run uses: `LLMREC_PROFILE` names one of config/profiles.yaml (plus the user's
file named by `LLMREC_PROFILES`), `LLMREC_MODEL` replaces its model, and the LLM assets take
per-run overrides from the Launchpad (`LLMRunConfig`), validated like the file. The schema and the
loader are in models/profiles.py."""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from models.profiles import Profile, get_profile


class LLMRunConfig(dg.Config):
    """Per-run changes to the profile, for this materialization only (Launchpad -> config)."""

    overrides: dict[str, Any] = Field(
        default={}, description="profile fields to change for this run, nested as in config/profiles.yaml, e.g. "
                                "{train: {lr: 0.0005, max_steps: 50}, test_users: 50}; checked against the profile "
                                "schema, recorded in the materialization's metadata (profile_overrides)")


def run_profile(name: str, config: LLMRunConfig | None = None, log=None) -> Profile:
    """The profile an LLM asset runs with: `name` (LLMREC_MODEL applied), then the run's overrides."""
    overrides = config.overrides if config is not None else {}
    prof = get_profile(name, overrides, source="the run config's `overrides` (Launchpad)")
    if overrides and log is not None:
        log.info(f"profile {name!r} with this run's overrides {overrides}")
    return prof
