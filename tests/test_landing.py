"""The landing folder: exactly-once ingestion, files still being written, crash safety, the domain
refresh it asks for, and new config domains as dynamic partitions. Real Dagster runs on a real
warehouse; the sensor is evaluated through Dagster's own sensor context."""

import json
import os
import time

import dagster as dg
import polars as pl
import pytest
import yaml

from models.data import ingest as data_prep
from models.data import warehouse
from models.config import Settings, load_config
from orchestration.definitions import build_definitions
from orchestration.jobs import materialize_dataset, materialize_domain
from assets._partitions import DOMAIN_PARTITIONS
from orchestration.sensors import landing_tick, touched_domains
from test_report import write_fixture


def genre_fixture(tmp_path):
    """The report fixture's shop data with a genre per item (even items 'a', odd 'b') and three
    domains: all items, genre a, genre b."""
    settings = write_fixture(tmp_path)
    events = pl.read_csv(tmp_path / "events.csv")
    events.with_columns(pl.when(pl.col("item").str.slice(1).cast(pl.Int64) % 2 == 0).then(pl.lit("a"))
                        .otherwise(pl.lit("b")).alias("genre")).write_csv(tmp_path / "events.csv")
    cfg = yaml.safe_load(settings.config_path.read_text())
    cfg["datasets"]["synthetic"]["fields"]["categories"] = "genre"
    cfg["domains"] = {"shop": {"dataset": "synthetic", "item_noun": "item", "role": "target"},
                      "shop_a": {"dataset": "synthetic", "item_noun": "item", "filter": {"category": "a"}},
                      "shop_b": {"dataset": "synthetic", "item_noun": "item", "filter": {"category": "b"}}}
    settings.config_path.write_text(yaml.safe_dump(cfg))
    return Settings(settings.data_dir, settings.config_path, "smoke", landing_dir=tmp_path / "landing")


def land(settings, name, rows):
    """A landing file in the dataset's own format (the same CSV columns as its source)."""
    folder = settings.landing_path / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pl.DataFrame(rows, schema=["user", "item", "stars", "when"], orient="row").write_csv(path)
    return path


def settle(path, seconds=60):
    t = time.time() - seconds
    os.utime(path, (t, t))


def count(settings, sql_text):
    con = warehouse.connect(settings.warehouse_path, read_only=True)
    try:
        return con.execute(sql_text).fetchone()[0]
    finally:
        con.close()


@pytest.fixture
def ingested(tmp_path):
    settings = genre_fixture(tmp_path)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_dataset(defs, "synthetic", instance).success
    return settings, defs, instance


def run_requests(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("landing")
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                  resources={"project": defs.resources["project"]})
    return sensor.evaluate_tick(ctx)


def test_a_file_dropped_twice_or_renamed_ingests_once(ingested):
    settings, defs, instance = ingested
    before = count(settings, "SELECT count(*) FROM raw_interactions")
    # new rows for even items (genre a) only, plus one bad row that goes to quarantine
    rows = [("u1", "i2", 5, 1_620_000_000), ("u2", "i4", 1, 1_620_000_100), ("u3", "i6", 4, 1_620_000_200),
            ("u4", "i8", "lots", 1_620_000_300)]
    path = land(settings, "batch1.csv", rows)
    settle(path)
    first = run_requests(defs, instance)  # the first sighting only records size and mtime
    assert not first.run_requests
    tick = run_requests(defs, instance, first.cursor)
    (req,) = tick.run_requests
    assert req.partition_key == "synthetic"
    result = defs.resolve_job_def("ingest_landing").execute_in_process(
        run_config=req.run_config, partition_key="synthetic", instance=instance, tags=req.tags)
    assert result.success
    (mat,) = [e.materialization for e in result.get_asset_materialization_events()
              if e.asset_key == dg.AssetKey("landed_interactions")]
    assert mat.metadata["rows_appended"].value == 3 and mat.metadata["rows_quarantined"].value == 1
    assert mat.metadata["touched_domains"].value == ["shop", "shop_a"]
    assert touched_domains(instance, result.run_id) == ["shop", "shop_a"]
    assert count(settings, "SELECT count(*) FROM raw_interactions") == before + 3
    assert count(settings, "SELECT count(*) FROM quarantine WHERE stage = 'landing'") == 1

    # the same content again, under its own name and renamed: the sensor starts nothing
    (settings.landing_path / "synthetic" / "batch1_copy.csv").write_bytes(path.read_bytes())
    settle(settings.landing_path / "synthetic" / "batch1_copy.csv")
    settle(path, 30)  # touched again: a new mtime
    cursor = tick.cursor
    for _ in range(2):
        tick = run_requests(defs, instance, cursor)
        assert not tick.run_requests
        cursor = tick.cursor
    # and the asset run by hand over the whole folder skips both by content hash
    again = defs.resolve_job_def("ingest_landing").execute_in_process(partition_key="synthetic", instance=instance)
    (mat,) = [e.materialization for e in again.get_asset_materialization_events()
              if e.asset_key == dg.AssetKey("landed_interactions")]
    assert mat.metadata["files_ingested"].value == 0 and mat.metadata["files_skipped_as_duplicates"].value == 2
    assert count(settings, "SELECT count(*) FROM raw_interactions") == before + 3
    assert count(settings, "SELECT count(*) FROM landed_files") == 1
    # re-ingesting the dataset's source keeps the landed rows
    assert materialize_dataset(defs, "synthetic", instance).success
    assert count(settings, "SELECT count(*) FROM raw_interactions") == before + 3


def test_a_half_written_file_waits(tmp_path):
    settings = genre_fixture(tmp_path)
    cfg = load_config(settings.config_path)
    path = land(settings, "big.csv", [("u1", "i2", 5, 1_620_000_000)])
    (settings.landing_path / "synthetic" / "upload.csv.part").write_text("user,item\nu1,")
    now = time.time()
    reqs, cursor, notes = landing_tick(cfg, settings.landing_path, {}, now=now + 60, settle_s=10)
    assert not reqs and any("big.csv: waiting" in n for n in notes)
    with path.open("a") as f:  # the writer is still appending
        f.write("u2,i4,4,1620000100\n")
    reqs, cursor, _ = landing_tick(cfg, settings.landing_path, cursor, now=now + 70, settle_s=10)
    assert not reqs
    reqs, cursor, _ = landing_tick(cfg, settings.landing_path, cursor, now=time.time() + 1, settle_s=10)
    assert not reqs  # unchanged since the last tick, but younger than the settle time
    reqs, cursor, _ = landing_tick(cfg, settings.landing_path, cursor, now=time.time() + 60, settle_s=10)
    (req,) = reqs
    assert req.run_config["ops"]["landed_interactions"]["config"]["files"] == [str(path)]
    assert "upload.csv.part" not in json.dumps(cursor)


def test_a_crash_mid_ingest_leaves_no_partial_rows(ingested, monkeypatch):
    settings, defs, instance = ingested
    path = land(settings, "batch.csv", [("u1", "i2", 5, 1_620_000_000), ("u2", "i3", 4, 1_620_000_100)])
    before = count(settings, "SELECT count(*) FROM raw_interactions")

    def crash(con, rep):  # the process dies after the rows went in, before the file is recorded
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(data_prep, "_record_landed", crash)
    result = defs.resolve_job_def("ingest_landing").execute_in_process(
        partition_key="synthetic", instance=instance, raise_on_error=False,
        run_config={"ops": {"landed_interactions": {"config": {"files": [str(path)]}}}})
    assert not result.success
    assert count(settings, "SELECT count(*) FROM raw_interactions") == before
    assert count(settings, "SELECT count(*) FROM landed_files") == 0
    assert count(settings, "SELECT count(*) FROM quarantine WHERE stage = 'landing'") == 0
    monkeypatch.undo()
    result = defs.resolve_job_def("ingest_landing").execute_in_process(
        partition_key="synthetic", instance=instance,
        run_config={"ops": {"landed_interactions": {"config": {"files": [str(path)]}}}})
    assert result.success
    assert count(settings, "SELECT count(*) FROM raw_interactions") == before + 2


def test_a_new_domain_becomes_a_partition(ingested):
    settings, defs, instance = ingested
    assert sorted(instance.get_dynamic_partitions(DOMAIN_PARTITIONS.name)) == ["shop", "shop_a", "shop_b"]
    instance.delete_dynamic_partition(DOMAIN_PARTITIONS.name, "shop_b")
    (add,) = run_requests(defs, instance).dynamic_partitions_requests
    assert add.partitions_def_name == DOMAIN_PARTITIONS.name and list(add.partition_keys) == ["shop_b"]
    instance.add_dynamic_partitions(DOMAIN_PARTITIONS.name, list(add.partition_keys))
    assert not run_requests(defs, instance).dynamic_partitions_requests
    cfg = yaml.safe_load(settings.config_path.read_text())
    cfg["domains"]["shop_late"] = {"dataset": "synthetic", "item_noun": "item", "filter": {"category": "b"}}
    settings.config_path.write_text(yaml.safe_dump(cfg))
    defs = build_definitions(settings)  # what a code-location reload does after the config changed
    (add,) = run_requests(defs, instance).dynamic_partitions_requests
    assert list(add.partition_keys) == ["shop_late"]
    result = materialize_domain(defs, "shop_late", instance)
    assert result.success
    assert "shop_late" in instance.get_dynamic_partitions(DOMAIN_PARTITIONS.name)
