"""What refreshes by itself: declarative automation conditions and the two sensors that evaluate them.

- Cheap assets (ranking candidates, CF baselines and the CF rows of the report, the summary) are
  `eager`: they rerun as soon as an upstream partition changes, for that partition only. The
  `cheap_automation` sensor that evaluates them is on by default: it acts only after new data.
- LLM assets (LoRA training, merging, LLM and CoLLM scores) refresh on a schedule, never on every
  file: `on_cron` with `LLMREC_LLM_REFRESH_CRON` (default Saturdays 03:00 UTC), and only the
  partitions whose inputs changed since the last tick. Their `llm_automation` sensor is off by
  default (hours of CPU on a laptop); turn it on in the UI (Automation tab) on a machine with a GPU.
"""

from __future__ import annotations

import os

import dagster as dg

LLM_ASSETS = ("base_spirit_lora", "ingredient_lora", "cocktail_model", "llm_scores", "collm_cie")
# RecCocktail's listwise assets run on the domains with a listwise task only: launched by hand or
# `make demo`, never by the schedule (which would target every domain partition)
LISTWISE_ASSETS = ("listwise_base_spirit", "listwise_ingredient", "listwise_cocktail", "listwise_scores")
CHEAP_ASSETS = ("ranking_candidates", "cf_embeddings", "evaluation_report", "evaluation_summary")
LLM_REFRESH_CRON = os.environ.get("LLMREC_LLM_REFRESH_CRON", "0 3 * * 6")
AUTOMATION_INTERVAL_S = int(os.environ.get("LLMREC_AUTOMATION_INTERVAL_S", "30"))

EAGER = dg.AutomationCondition.eager()
# the report also reads LLM scores, but a domain without them (no LLM stage yet) must still refresh
REPORT_EAGER = (
    dg.AutomationCondition.in_latest_time_window()
    & (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.assets(*LLM_ASSETS, *LISTWISE_ASSETS))
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("eager (LLM score inputs optional)")
SCHEDULED = dg.AutomationCondition.on_cron(LLM_REFRESH_CRON)


def automation_sensors() -> list[dg.AutomationConditionSensorDefinition]:
    return [
        dg.AutomationConditionSensorDefinition(
            "cheap_automation", target=dg.AssetSelection.assets(*CHEAP_ASSETS),
            default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=AUTOMATION_INTERVAL_S,
            description="Reruns candidates, CF baselines, reports and the summary for the partitions whose "
                        "inputs changed (eager)."),
        dg.AutomationConditionSensorDefinition(
            "llm_automation", target=dg.AssetSelection.assets(*LLM_ASSETS),
            default_status=dg.DefaultSensorStatus.STOPPED, minimum_interval_seconds=60,
            description=f"Retrains and rescores the LLM stages on the cron {LLM_REFRESH_CRON!r} "
                        "(LLMREC_LLM_REFRESH_CRON) for partitions whose inputs changed. Off by default."),
    ]
