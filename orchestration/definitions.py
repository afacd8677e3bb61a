"""The Dagster code location: `dagster dev` in the project root loads `defs` from here (named `llmrec`
by pyproject.toml's [tool.dagster]), and so does the dagster CLI (`-m orchestration.definitions`)."""

from __future__ import annotations

import os
import sys

import dagster as dg

from assets._lineage import LLMLineage
from assets.cf import build_cf_assets
from assets.ingestion import build_ingestion_assets
from assets.landing import build_landing_assets
from assets.llm import build_llm_assets
from assets.report import build_report_assets
from assets.splits import build_split_assets
from models.config import Settings, load_config
from orchestration import automation, recovery
from orchestration.console import install_excepthook, install_short_failures
from orchestration.jobs import JOBS
from orchestration.sensors import landing_sensors
from assets._resources import ProjectResource
from assets._gpus import GPUResource


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """Everything the config file declares, wired to one data directory."""
    settings = settings or Settings.from_env()
    cfg = load_config(settings.config_path)
    lineage = LLMLineage.from_settings(settings)
    assets_and_checks = [*build_ingestion_assets(cfg), *build_landing_assets(cfg), *build_split_assets(cfg),
                         *build_cf_assets(cfg), *build_llm_assets(cfg, lineage),
                         *build_report_assets(cfg)]
    assets = [a for a in assets_and_checks if not isinstance(a, dg.AssetChecksDefinition)]
    return dg.Definitions(
        assets=dg.map_asset_specs(_with_automation, assets),
        asset_checks=[a for a in assets_and_checks if isinstance(a, dg.AssetChecksDefinition)],
        jobs=JOBS,
        sensors=[*landing_sensors(), *automation.automation_sensors(), recovery.dead_run_reaper],
        resources={"project": ProjectResource.from_settings(settings), "gpu": GPUResource()},
    )


def _with_automation(spec: dg.AssetSpec) -> dg.AssetSpec:
    name = spec.key.to_user_string()
    condition = (automation.REPORT_EAGER if name == "evaluation_report" else
                 automation.EAGER if name in automation.CHEAP_ASSETS else
                 automation.SCHEDULED if name in automation.LLM_ASSETS else None)
    return spec if condition is None else spec.replace_attributes(automation_condition=condition)


if os.path.basename(sys.argv[0]) == "dagster":
    # the dagster CLI imports this module in its own process: a bad config, a missing upstream file or a
    # failed check reaches the terminal as one `error:` line, not a traceback (dagster dev's code server
    # reports load errors to the UI itself)
    install_excepthook()
install_short_failures()
defs = build_definitions()
# the domain partitions of the config, and no pool slot held by a killed run, for whatever loads this
recovery.at_load(defs.resources["project"])
