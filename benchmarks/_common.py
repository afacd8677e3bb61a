"""Shared by the benchmark scripts: the real ML-1M `movies` split, built in memory by our pipeline."""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl

from models import data_prep
from models.config import load_config


def movies_split() -> tuple[pl.DataFrame, pl.DataFrame]:
    """(split rows, items with titles) of the `movies` domain of the default config."""
    cfg = load_config()
    con = data_prep.connect(":memory:")
    ds, dom = cfg.datasets["ml1m"], cfg.domains["movies"]
    data_prep.ingest_dataset(con, ds)
    data_prep.build_interactions(con, ds)
    data_prep.build_domain(con, dom)
    origin = data_prep.origin_month(con, "interactions", "dataset", "ml1m", dom.split)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "split.parquet"
        data_prep.build_split(con, "movies", dom.split, out, origin=origin)
        return pl.read_parquet(out), pl.read_parquet(out.with_name("items.parquet"))
