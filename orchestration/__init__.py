"""Dagster wiring (definitions, resources, partitions, jobs, sensors, profiles). Importing it quiets
the framework warnings and progress bars a user of `make demo` or `make ui` can do nothing about, so
what the console shows is progress and problems with their data or settings."""

import os
import warnings


def _quiet_framework_warnings() -> None:
    import dagster as dg

    # features of Dagster we use on purpose (pools, single-run backfill policies, Pipes); their
    # "is currently in beta / preview" notice is for the developers who chose them, not for users
    for category in (dg.BetaWarning, dg.PreviewWarning):
        warnings.filterwarnings("ignore", category=category)
    # a job that mixes the LLM assets' single-run policy with per-partition assets runs one
    # partition per run, which is what evaluate_domain_llm wants
    warnings.filterwarnings("ignore", message=r"Asset job .* materializes assets with varying BackfillPolicies")
    # transformers' notices about its own internals (peft calls is_gradient_checkpointing; the cache
    # keyword moves in 5.40, see the scorer); nothing a user's config can change
    warnings.filterwarnings("ignore", category=FutureWarning, message=r"`is_gradient_checkpointing` is deprecated")
    warnings.filterwarnings("ignore", category=FutureWarning, message=r"`past_key_values` is deprecated")


_quiet_framework_warnings()
# transformers draws a progress bar for every model load (dozens per run, a fraction of a second
# each); the stages log their own progress instead
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
