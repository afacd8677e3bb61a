"""The project resource: where the data directory, the config file and the warehouse are."""

from __future__ import annotations

import time
from functools import cached_property
from pathlib import Path

import dagster as dg
import duckdb

from assets._processes import record_process
from models.data import warehouse
from models.config import ProjectConfig, Settings, load_config


class ProjectResource(dg.ConfigurableResource):
    """Settings every asset shares. Defaults come from LLMREC_* environment variables (README)."""

    data_dir: str
    config_path: str
    profile: str = "demo"
    landing_dir: str = ""  # empty: <data_dir>/landing
    train_pipes: bool = False
    # DuckDB's memory_limit and spill folder for the warehouse (LLMREC_DUCKDB_MEMORY_LIMIT,
    # LLMREC_DUCKDB_TEMP_DIR); empty: DuckDB's defaults (80 % of the RAM, <warehouse>.tmp)
    duckdb_memory_limit: str = ""
    duckdb_temp_dir: str = ""
    # another run may hold DuckDB's single-writer lock; wait this long for it before failing
    lock_wait_s: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "ProjectResource":
        s = settings or Settings.from_env()
        return cls(data_dir=str(s.data_dir), config_path=str(s.config_path), profile=s.profile,
                   landing_dir=str(s.landing_path), train_pipes=s.train_pipes,
                   duckdb_memory_limit=s.duckdb_memory_limit or "",
                   duckdb_temp_dir=str(s.duckdb_temp_dir) if s.duckdb_temp_dir else "")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # tag the run with the processes running it, so a run killed with `kill -9` can be told
        # from a live one and its pool slots freed (orchestration/recovery.py)
        record_process(context)

    @cached_property
    def config(self) -> ProjectConfig:
        return load_config(Path(self.config_path))

    @property
    def root(self) -> Path:
        return Path(self.data_dir)

    @property
    def landing(self) -> Path:
        return Path(self.landing_dir) if self.landing_dir else self.root / "landing"

    def connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """Open the warehouse, waiting (with backoff) while another process holds the write lock."""
        deadline = time.monotonic() + self.lock_wait_s
        delay = 0.2
        while True:
            try:
                return warehouse.connect(self.root / "warehouse.duckdb", read_only=read_only,
                                         memory_limit=self.duckdb_memory_limit or None,
                                         temp_directory=self.duckdb_temp_dir or None)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
