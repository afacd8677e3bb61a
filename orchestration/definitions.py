"""The Dagster code location: `dagster dev` in the project root loads `defs` from here."""

from __future__ import annotations

import dagster as dg

from assets.cf import build_cf_assets
from assets.ingestion import build_ingestion_assets
from assets.llm import build_llm_assets
from assets.report import build_report_assets
from assets.splits import build_split_assets
from models.config import Settings, load_config
from orchestration.jobs import JOBS
from orchestration.resources import ProjectResource


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """Everything the config file declares, wired to one data directory."""
    settings = settings or Settings.from_env()
    cfg = load_config(settings.config_path)
    assets_and_checks = [*build_ingestion_assets(cfg), *build_split_assets(cfg), *build_cf_assets(cfg),
                         *build_llm_assets(cfg), *build_report_assets(cfg)]
    return dg.Definitions(
        assets=[a for a in assets_and_checks if not isinstance(a, dg.AssetChecksDefinition)],
        asset_checks=[a for a in assets_and_checks if isinstance(a, dg.AssetChecksDefinition)],
        jobs=JOBS,
        resources={"project": ProjectResource.from_settings(settings)},
    )


defs = build_definitions()
