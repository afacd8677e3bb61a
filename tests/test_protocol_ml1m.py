"""The CoLLM ML-1M protocol on the real embedded MovieLens-1M, materialized through Dagster."""

import dagster as dg
import polars as pl
import pytest

from models.config import PROJECT_ROOT, Settings
from orchestration.definitions import build_definitions
from orchestration.jobs import materialize_dataset, materialize_domain


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    settings = Settings(data_dir=data_dir, config_path=PROJECT_ROOT / "config" / "datasets.yaml", profile="smoke")
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_dataset(defs, "ml1m", instance).success
    result = materialize_domain(defs, "movies", instance)
    assert result.success
    md = {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
          for e in result.get_asset_materialization_events()}
    return (md["temporal_split"], pl.read_parquet(data_dir / "domains" / "movies" / "split.parquet"),
            pl.read_parquet(data_dir / "domains" / "movies" / "items.parquet"))


def test_split_sizes_match_the_paper(movies):
    md, df, _ = movies
    sizes = {s: df.filter(pl.col("split") == s).height for s in ("train", "valid", "test")}
    assert sizes == {"train": 33_891, "valid": 10_401, "test": 7_331}
    assert {s: md[f"{s}/rows"] for s in sizes} == sizes


def test_cold_and_warm_test_rows(movies):
    md, df, _ = movies
    test = df.filter(pl.col("split") == "test")
    assert test["not_cold"].sum() == 4_153
    assert test.height - test["not_cold"].sum() == 3_178
    assert test["warm"].sum() == 3_522
    assert (md["test/not_cold"], md["test/warm"]) == (4_153, 3_522)


def test_positive_rates_users_and_items(movies):
    md, df, _ = movies
    assert md["train/positive_rate"] == pytest.approx(0.537, abs=5e-4)
    assert md["valid/positive_rate"] == pytest.approx(0.528, abs=5e-4)
    assert md["test/positive_rate"] == pytest.approx(0.545, abs=5e-4)
    assert (md["train/users"], md["train/items"]) == (740, 3_087)


def test_histories_are_earlier_positives(movies):
    _, df, items = movies
    assert df["history_item_ids"].list.len().max() == 10
    # every history item has its title in items.parquet (the embedded ML-1M's ids are its titles)
    history = df["history_item_ids"].explode().drop_nulls().unique()
    titles = dict(items.iter_rows())
    assert all(titles[i] == i for i in history)
    assert items.height == df["item_id"].n_unique()
    first = df.sort("ts").group_by("user_id", maintain_order=True).first()
    assert first["history_item_ids"].list.len().max() == 0
