"""Shared by the benchmark scripts: the real ML-1M splits (`movies`, `ml1m_loo`), built in memory by our pipeline."""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl

from models.data import ingest as data_prep
from models.data import splits
from models.data import warehouse
from models.config import load_config


def domain_split(domain: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(split rows, items with titles) of a domain of the default config (`movies`, `ml1m_loo`, ...)."""
    cfg = load_config()
    con = warehouse.connect(":memory:")
    dom = cfg.domains[domain]
    ds = cfg.datasets[dom.dataset]
    data_prep.ingest_dataset(con, ds)
    data_prep.build_interactions(con, ds)
    splits.build_domain(con, dom)
    origin = splits.origin_month(con, "interactions", "dataset", dom.dataset, dom.split)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "split.parquet"
        splits.build_split(con, domain, dom.split, out, origin=origin)
        return pl.read_parquet(out), pl.read_parquet(out.with_name("items.parquet"))


def movies_split() -> tuple[pl.DataFrame, pl.DataFrame]:
    """(split rows, items with titles) of the `movies` domain of the default config."""
    return domain_split("movies")
