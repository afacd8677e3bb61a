"""Shared by the benchmark scripts: the real ML-1M `movies` split, built in memory by our pipeline."""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl

from models.data import ingest as data_prep
from models.data import splits
from models.data import warehouse
from models.config import load_config


def movies_split() -> tuple[pl.DataFrame, pl.DataFrame]:
    """(split rows, items with titles) of the `movies` domain of the default config."""
    cfg = load_config()
    con = warehouse.connect(":memory:")
    ds, dom = cfg.datasets["ml1m"], cfg.domains["movies"]
    data_prep.ingest_dataset(con, ds)
    data_prep.build_interactions(con, ds)
    splits.build_domain(con, dom)
    origin = splits.origin_month(con, "interactions", "dataset", "ml1m", dom.split)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "split.parquet"
        splits.build_split(con, "movies", dom.split, out, origin=origin)
        return pl.read_parquet(out), pl.read_parquet(out.with_name("items.parquet"))
