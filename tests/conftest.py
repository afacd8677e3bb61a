"""Shared fixtures: run one dataset of a throw-away config through the real Dagster job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import dagster as dg
import pytest
import yaml

from models.data import warehouse
from models.config import Settings
from orchestration.definitions import build_definitions
from orchestration.jobs import materialize_dataset


@dataclass
class IngestRun:
    """The outcome of `materialize_dataset` for one dataset, and a way to look at the warehouse."""

    result: dg.ExecuteInJobResult
    data_dir: Path
    config_path: Path

    @property
    def warehouse(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    def metadata(self, asset: str) -> dict[str, Any]:
        """The plain values of the (single) materialization of `asset` in this run."""
        events = [e for e in self.result.get_asset_materialization_events()
                  if e.asset_key == dg.AssetKey(asset)]
        assert len(events) == 1, f"expected one materialization of {asset}, got {len(events)}"
        return {k: v.value for k, v in events[0].materialization.metadata.items()}

    def check(self, name: str = "quarantine_share_within_limit") -> dg.AssetCheckEvaluation:
        evals = [e for e in self.result.get_asset_check_evaluations() if e.check_name == name]
        assert len(evals) == 1, f"expected one evaluation of check {name}, got {len(evals)}"
        return evals[0]

    def query(self, sql_text: str, params: dict[str, Any] | None = None) -> list[tuple]:
        """Rows of a query against the warehouse, opened read-only after the run."""
        con = warehouse.connect(self.warehouse, read_only=True)
        try:
            return con.execute(sql_text, params).fetchall()
        finally:
            con.close()


def write_config(path: Path, name: str, dataset: dict[str, Any], quarantine_max_share: float = 0.9) -> Path:
    """A config file in the schema of config/datasets.yaml with one dataset and one domain."""
    dataset = {"split": {"protocol": "leave_one_out"}, **dataset}
    path.write_text(yaml.safe_dump({
        "settings": {"quarantine_max_share": quarantine_max_share},
        "datasets": {name: dataset},
        "domains": {f"{name}_all": {"dataset": name, "item_noun": "item"}},
    }, sort_keys=False))
    return path


@pytest.fixture
def ingest(tmp_path: Path) -> Callable[..., IngestRun]:
    """ingest(name, dataset_dict, quarantine_max_share=0.9, raise_on_error=True) -> IngestRun.

    Writes the config under tmp_path, builds the project's Definitions for it and materializes
    the dataset's partition of raw_interactions/raw_items/interactions (plus the blocking check)
    in an ephemeral Dagster instance; the warehouse is tmp_path/data/warehouse.duckdb."""

    def run(name: str, dataset: dict[str, Any], quarantine_max_share: float = 0.9,
            raise_on_error: bool = True) -> IngestRun:
        cfg = write_config(tmp_path / "datasets.yaml", name, dataset, quarantine_max_share)
        settings = Settings(data_dir=tmp_path / "data", config_path=cfg, profile="smoke")
        defs = build_definitions(settings)
        with dg.DagsterInstance.ephemeral() as instance:
            result = materialize_dataset(defs, name, instance, raise_on_error=raise_on_error)
        return IngestRun(result=result, data_dir=settings.data_dir, config_path=cfg)

    return run
