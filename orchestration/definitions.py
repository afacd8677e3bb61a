"""The Dagster code location: `dagster dev` in the project root loads `defs` from here."""

from __future__ import annotations

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
from orchestration.jobs import JOBS
from orchestration.sensors import landing_sensors
from assets._resources import ProjectResource


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
        resources={"project": ProjectResource.from_settings(settings)},
    )


def _with_automation(spec: dg.AssetSpec) -> dg.AssetSpec:
    name = spec.key.to_user_string()
    condition = (automation.REPORT_EAGER if name == "evaluation_report" else
                 automation.EAGER if name in automation.CHEAP_ASSETS else
                 automation.SCHEDULED if name in automation.LLM_ASSETS else None)
    return spec if condition is None else spec.replace_attributes(automation_condition=condition)


defs = build_definitions()
# a CLI run (`dagster asset materialize -m orchestration.definitions`) loads this before it creates
# its run: free the pool slots of runs killed earlier, or it would wait for them forever
recovery.reap_at_load()
