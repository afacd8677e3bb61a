"""Files are known by their bytes, not their names, through the real Dagster job: Parquet named
anything, gzip and zstd text without a `.gz` name, plain text named `.gz`; and a file the format
cannot read fails its step once, not retried, with one line naming the file, what the format
expects and what the file holds.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_config
from models.data import warehouse
from models.config import ConfigError, Settings
from models.data.content import inspect_file
from models.registry.formats import FORMATS
from orchestration.definitions import build_definitions
from orchestration.jobs import materialize_dataset
from test_ingest_formats import (AMAZON2018, AMAZON2023, MOVIELENS_CSV, MOVIELENS_DAT, RECBOLE_ATOMIC, TABLE_CSV,
                                 TABLE_FIELDS, TABLE_PARQUET, Case, Source, assert_arrived_intact)


def text_bytes(source: Source) -> bytes:
    lines = ([source.header] if source.header is not None else []) + [content for content, _ in source.lines]
    return "".join(f"{line}\n" for line in lines).encode(source.encoding)


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
            f.write(data)
        return buf.getvalue()
    if how == "zstd":
        return pa.compress(data, codec="zstd", asbytes=True)
    assert how == "none"
    return data


def renamed(case: Case, names: dict[str, str], how: str, folder: Path) -> tuple[Case, dict[str, Any]]:
    """`case` with its files under other names, written as `how` (gzip, zstd, none, or a Parquet
    compression codec); returns the renamed case and its dataset config."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [replace(s, name=names[s.name]) for s in case.sources]
    for s in sources:
        if how in ("brotli", "snappy"):
            pq.write_table(pa.Table.from_pylist([content for content, _ in s.lines]), folder / s.name, compression=how)
        else:
            (folder / s.name).write_bytes(compress(text_bytes(s), how))
    config = dict(case.config)
    if "files" in config:
        config["files"] = {role: names[name] for role, name in config["files"].items()}
    new = replace(case, sources=sources, config=config)
    source = folder / sources[0].name if case.source_is_file else folder
    return new, {"format": case.format, "source": {"path": str(source)}, **config}


# --- readable files, whatever they are called ------------------------------------------------

@pytest.mark.parametrize("name", ["events.parquet.brotli", "events"])
def test_parquet_is_read_as_parquet_whatever_its_name(name, ingest, tmp_path):
    case, spec = renamed(TABLE_PARQUET, {"events.parquet": name}, "brotli", tmp_path / "source")
    assert (tmp_path / "source" / name).read_bytes()[:4] == b"PAR1"
    run = ingest("shop", spec)
    assert_arrived_intact(case, "shop", run)


COMPRESSED = {
    # case id -> (case, new names, how the files are written)
    "movielens_dat_gzip_no_gz_name": (MOVIELENS_DAT, {"ratings.dat.gz": "ratings.dat", "movies.dat.gz": "movies.dat"},
                                      "gzip"),
    "amazon2018_gzip_no_gz_name": (AMAZON2018, {"Books.json.gz": "Books.json", "meta_Books.json.gz": "meta_Books.json"},
                                   "gzip"),
    "table_csv_gzip_no_gz_name": (TABLE_CSV, {"events.csv.gz": "events.csv", "catalog.csv.gz": "catalog"}, "gzip"),
    "amazon2023_zstd": (AMAZON2023, {"All_Beauty.jsonl.gz": "All_Beauty.jsonl",
                                     "meta_All_Beauty.jsonl.gz": "meta_All_Beauty.jsonl"}, "zstd"),
    "recbole_atomic_zstd": (RECBOLE_ATOMIC, {"ml-toy.inter": "ml-toy.inter", "ml-toy.item": "ml-toy.item"}, "zstd"),
    # the name lies the other way: plain text called .gz
    "movielens_csv_plain_named_gz": (MOVIELENS_CSV, {"ratings.csv": "ratings.csv.gz", "movies.csv": "movies.csv.gz"},
                                     "none"),
}


@pytest.mark.parametrize("case_id", list(COMPRESSED))
def test_compressed_text_is_known_by_its_bytes(case_id, ingest, tmp_path):
    base, names, how = COMPRESSED[case_id]
    case, spec = renamed(base, names, how, tmp_path / "source")
    run = ingest(case_id, spec)
    assert_arrived_intact(case, case_id, run)


# --- files a format cannot read --------------------------------------------------------------

def zip_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, data)
    return buf.getvalue()


def parquet_bytes() -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"reviewerID": ["A1"], "asin": ["B1"], "overall": [4.0], "unixReviewTime": [1]}), buf)
    return buf.getvalue()


GOOD_CSV = b"uid,sku,stars,when,name\nu1,s1,4,2021-03-04,Widget\nu2,s1,5,2021-03-05,Widget\n"
GOOD_META = b'{"asin": "B1", "title": "A book", "category": []}\n'
GOOD_RATINGS = b"1::1193::5::978300760\n" * 3

UNREADABLE = {
    # case id -> (format, config beyond format and source, {file name: bytes}, the bad file, what must be found)
    "zip_to_table": ("table", {"files": {"interactions": "ratings.bin"}},
                     {"ratings.bin": zip_of("ratings.csv", GOOD_CSV)}, "ratings.bin", "found a ZIP archive"),
    "random_bytes_to_table": ("table", {"files": {"interactions": "events"}},
                              {"events": random.Random(0).randbytes(4096)}, "events", "found binary data (not text)"),
    "parquet_to_amazon2018": ("amazon2018", {}, {"Books.json": parquet_bytes(), "meta_Books.json": GOOD_META},
                              "Books.json", "found a Parquet file"),
    "truncated_gzip_to_movielens_dat": ("movielens_dat", {},
                                        {"ratings.dat": compress(GOOD_RATINGS * 2000, "gzip")[:-20],
                                         "movies.dat": b"1193::Cuckoo::Drama\n"},
                                        "ratings.dat", "found a gzip stream that ends early (the file is truncated)"),
    "zip_items_file": ("movielens_dat", {}, {"ratings.dat": GOOD_RATINGS,
                                             "movies.dat": zip_of("movies.dat", b"1193::Cuckoo::Drama\n")},
                       "movies.dat", "found a ZIP archive"),
    "gzipped_parquet_to_table": ("table", {"files": {"interactions": "events.parquet.gz"}},
                                 {"events.parquet.gz": compress(parquet_bytes(), "gzip")}, "events.parquet.gz",
                                 "found a gzip-compressed Parquet file"),
    # DuckDB's own read errors, in one line: the CSV sniffer finds no columns; bytes not in the encoding
    "text_that_is_not_csv_to_table": ("table", {"files": {"interactions": "events.csv"}},
                                      {"events.csv": b"a\n" + b'x"y,z"\n"' * 50}, "events.csv",
                                      "found text that does not split into ','-separated columns"),
    "invalid_utf8_to_amazon2023": ("amazon2023", {},
                                   {"All_Beauty.jsonl": b'{"rating": 5.0, "parent_asin": "P\xff1"}\n',
                                    "meta_All_Beauty.jsonl": b'{"parent_asin": "P1", "title": "x"}\n'},
                                   "All_Beauty.jsonl", "found bytes that are not utf-8 text on line 1"),
}


def step_events(result: dg.ExecuteInJobResult, step_key: str) -> list[dg.DagsterEventType]:
    return [e.event_type for e in result.all_events if e.step_key == step_key]


def assert_failed_once_in_one_line(result: dg.ExecuteInJobResult, step_key: str, starts: str, found: str) -> str:
    """The step failed deterministically, ran exactly once, and said why in one line; returns it."""
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert failure.step_key == step_key
    data = failure.step_failure_data
    description = data.user_failure_data.description
    assert description.startswith(starts) and found in description, description
    assert "\n" not in description and "duckdb" not in description.lower() and "Traceback" not in description
    assert data.error.cls_name == "Failure"
    # the ConfigError is the only cause: no DuckDB error chained behind it
    assert data.error.cause.cls_name == "ConfigError" and data.error.cause.message.strip().endswith(description)
    assert data.error.cause.cause is None and data.error.cause.context is None
    # ran once: no retry, although the step has a retry policy for transient failures
    events = step_events(result, step_key)
    assert events.count(dg.DagsterEventType.STEP_START) == 1, events
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in events and dg.DagsterEventType.STEP_RESTARTED not in events
    return description


@pytest.mark.parametrize("case_id", list(UNREADABLE))
def test_a_file_the_format_cannot_read_fails_once_in_one_line(case_id, ingest, tmp_path):
    fmt, config, files, bad, found = UNREADABLE[case_id]
    src = tmp_path / "source"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    spec = {"format": fmt, "source": {"path": str(src)}, "fields": TABLE_FIELDS, "timestamp_unit": "iso",
            **config} if fmt == "table" else {"format": fmt, "source": {"path": str(src)}, **config}
    run = ingest("shop", spec, raise_on_error=False)
    description = assert_failed_once_in_one_line(
        run.result, "raw_data", f"{bad}: datasets.shop (format {fmt}) expects {FORMATS[fmt].expects}, ", found)
    assert not run.result.get_asset_materialization_events()  # nothing half-ingested
    # and the same ConfigError straight from the job, as a deterministic Failure
    if case_id == "zip_to_table":
        assert description.endswith("; unzip it and point datasets.shop at the file inside")
        with pytest.raises(dg.Failure) as err:
            ingest("shop", spec)
        assert err.value.allow_retries is False and isinstance(err.value.__cause__, ConfigError)
        assert err.value.description == description


# --- the landing folder goes through the same checks -----------------------------------------

def test_landing_files_are_known_by_content_and_an_unreadable_one_fails_once(tmp_path):
    src = tmp_path / "source"
    src.mkdir()
    (src / "events.csv").write_bytes(GOOD_CSV)
    cfg = write_config(tmp_path / "datasets.yaml", "shop", {
        "format": "table", "source": {"path": str(src / "events.csv")}, "fields": TABLE_FIELDS,
        "timestamp_unit": "iso"})
    settings = Settings(data_dir=tmp_path / "data", config_path=cfg, profile="smoke", landing_dir=tmp_path / "landing")
    defs = build_definitions(settings)
    landing = tmp_path / "landing" / "shop"
    landing.mkdir(parents=True)
    job = defs.resolve_job_def("ingest_landing")

    def land(instance: dg.DagsterInstance, name: str, data: bytes) -> dg.ExecuteInJobResult:
        (landing / name).write_bytes(data)
        return job.execute_in_process(
            run_config={"ops": {"landed_interactions": {"config": {"files": [str(landing / name)]}}}},
            partition_key="shop", instance=instance, raise_on_error=False)

    buf = io.BytesIO()
    pq.write_table(pa.table({"uid": ["u5"], "sku": ["s1"], "stars": ["5"], "when": ["2021-04-03"]}), buf)
    with dg.DagsterInstance.ephemeral() as instance:
        assert materialize_dataset(defs, "shop", instance).success
        # gzip CSV without a .gz name, and a Parquet file without an extension
        gz = land(instance, "batch1", compress(b"uid,sku,stars,when\nu3,s1,4,2021-04-01\nu4,s1,2,2021-04-02\n", "gzip"))
        parquet = land(instance, "batch2", buf.getvalue())
        for result, rows in ((gz, 2), (parquet, 1)):
            assert result.success
            [mat] = [e.materialization for e in result.get_asset_materialization_events()
                     if e.asset_key == dg.AssetKey("landed_interactions")]
            assert mat.metadata["rows_appended"].value == rows

        bad = land(instance, "batch3.csv", zip_of("batch3.csv", GOOD_CSV))
        assert_failed_once_in_one_line(
            bad, "landed_interactions",
            f"batch3.csv: datasets.shop (format table) expects {FORMATS['table'].expects}, ", "found a ZIP archive")

    con = warehouse.connect(settings.warehouse_path, read_only=True)
    try:
        assert con.execute("SELECT file_name, rows_loaded FROM landed_files ORDER BY file_name").fetchall() == [
            ("batch1", 2), ("batch2", 1)]
        assert con.execute("SELECT count(*) FROM raw_interactions WHERE source_file LIKE 'landing/%'").fetchone() == (3,)
    finally:
        con.close()


# --- what the bytes say, without a pipeline --------------------------------------------------

@pytest.mark.parametrize("data, encoding, kind, compression, said", [
    (b"user,item\nu1,i1\n", "utf-8", "text", "none", "text"),
    (b"PAR1,PAR2\n1,2\n", "utf-8", "text", "none", "text"),  # a column named PAR1 is not Parquet
    (parquet_bytes(), "utf-8", "parquet", "none", "a Parquet file"),
    (compress(b"a,b\n1,2\n", "gzip"), "utf-8", "text", "gzip", "gzip-compressed text"),
    (compress(b"a,b\n1,2\n", "zstd"), "utf-8", "text", "zstd", "zstd-compressed text"),
    (compress(parquet_bytes(), "zstd"), "utf-8", "parquet", "zstd", "a zstd-compressed Parquet file"),
    (zip_of("a.csv", b"a,b\n"), "utf-8", "zip", "none", "a ZIP archive"),
    (b"BZh91AY&SY" + bytes(20), "utf-8", "bzip2", "none", "a bzip2 archive"),
    (b"\xfd7zXZ\x00" + bytes(20), "utf-8", "xz", "none", "an xz archive"),
    (b"a\x00b\n", "utf-8", "binary", "none", "binary data (not text)"),
    ("a,b\n".encode("utf-16"), "utf-16", "text", "none", "text"),  # UTF-16 has NUL bytes, and is text
    (b"", "utf-8", "text", "none", "text"),
])
def test_inspect_file_tells_kinds_by_bytes(data, encoding, kind, compression, said, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(data)
    content = inspect_file(path, encoding)
    assert (content.kind, content.compression, content.damage, content.describe()) == (kind, compression, None, said)
    assert content.sha256 == hashlib.sha256(data).hexdigest()


def test_a_truncated_zstd_stream_is_damaged_and_still_hashed(tmp_path):
    rng = random.Random(1)
    data = compress(b"".join(b"u%d,i%d\n" % (rng.randrange(10**6), rng.randrange(10**6)) for _ in range(10000)),
                    "zstd")[:-30]
    path = tmp_path / "f"
    path.write_bytes(data)
    content = inspect_file(path)
    assert content.compression == "zstd" and content.damage == "ends early (the file is truncated)"
    assert content.sha256 == hashlib.sha256(data).hexdigest()
