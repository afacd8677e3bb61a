"""Ingestion as it runs at scale (benchmarks/ingest_scale.py measures it): a line format's file is
streamed through views into the one table its validation builds, while a thread inspects the
file's bytes (sha256, a compressed stream decompressed to its end). A damaged file must still fail
the ingestion with the error that names the damage, before anything is committed; DuckDB's
memory limit and spill folder are settings (LLMREC_DUCKDB_MEMORY_LIMIT, LLMREC_DUCKDB_TEMP_DIR)
whose default is DuckDB's own.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import duckdb
import pytest

from conftest import write_config
from models.data import ingest as data_prep
from models.data import warehouse
from models.config import ConfigError, DatasetConfig, Settings, load_config
from assets._resources import ProjectResource

REVIEWS, META = "Books.json.gz", "meta_Books.json.gz"


def write_amazon2018(folder: Path, n: int = 20_000) -> None:
    """Gzipped files: reviews big enough that their damage lies past the first 64 KB (seen by the
    full pass only, after DuckDB read the file: it reads a truncated stream without a word), meta
    small enough that its damage is seen in the first bytes, before any file is read."""
    rnd = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    words = ["".join(rnd.choices("abcdefghij", k=6)) for _ in range(500)]
    reviews = [json.dumps({"overall": float(rnd.randint(1, 5)), "reviewerID": f"U{rnd.randint(0, 999)}",
                           "asin": f"I{rnd.randint(0, 199)}", "unixReviewTime": 1_500_000_000 + i,
                           "reviewText": " ".join(rnd.choices(words, k=20))}) for i in range(n)]
    reviews[7] = reviews[7][:-4]  # one malformed line: the quarantine has a row to keep
    meta = [json.dumps({"asin": f"I{i}", "title": f"Book {i}", "category": ["Books"]}) for i in range(200)]
    for name, lines in ((REVIEWS, reviews), (META, meta)):
        (folder / name).write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))


def dataset(tmp_path: Path, folder: Path, fmt: str = "amazon2018", **extra) -> DatasetConfig:
    name = f"d_{fmt}"
    spec = {"format": fmt, "source": {"path": str(folder)}, **extra}
    if fmt == "amazon2018":
        spec["files"] = {"interactions": REVIEWS, "items": META}
    return load_config(write_config(tmp_path / f"{name}.yaml", name, spec)).datasets[name]


def warehouse_rows(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return [con.execute(f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {t}").fetchone()
            for t in ("raw_interactions", "raw_items", "quarantine")]


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[:len(data) * 2 // 3])
    else:  # bytes flipped in the middle of the deflate stream
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 64]) + data[mid + 64:])


@pytest.mark.parametrize("how, found", [
    pytest.param("truncated", "found a gzip stream that ends early (the file is truncated)", id="truncated"),
    # DuckDB may read this one without an error too (garbage lines, quarantined); zlib's words vary
    pytest.param("corrupted", "found a gzip stream that does not decompress (zlib inflate failed: ", id="corrupted"),
])
@pytest.mark.parametrize("bad", [REVIEWS, META])
def test_a_damaged_file_fails_before_anything_is_committed(bad, how, found, tmp_path):
    folder = tmp_path / "source"
    write_amazon2018(folder)
    ds = dataset(tmp_path, folder)
    con = warehouse.connect(tmp_path / "warehouse.duckdb")
    try:
        rep = data_prep.ingest_dataset(con, ds)
        assert rep.interaction_rows_read == 20_000 and rep.quarantined == {"interaction:malformed_line": 1}
        assert set(rep.contents[str(folder / REVIEWS)]) == {"sha256", "kind", "compression"}
        before = warehouse_rows(con)

        damage(folder / bad, how)
        with pytest.raises(ConfigError) as err:
            data_prep.ingest_dataset(con, ds)
        said = str(err.value)
        assert said.startswith(f"{bad}: datasets.{ds.name} (format amazon2018) expects JSON lines (plain, gzip or "
                               f"zstd), {found}") and said.endswith("; fetch or copy it again"), said
        assert err.value.__cause__ is None and err.value.__suppress_context__  # no DuckDB error behind it
        assert warehouse_rows(con) == before  # the first ingestion's rows and quarantine, untouched
    finally:
        con.close()


def test_one_connection_reads_a_line_format_and_a_table_format_in_turn(tmp_path):
    """A line format's stage is a view, a table format's a table: each goes with its file, so one
    connection may ingest one dataset after another whatever their formats."""
    write_amazon2018(tmp_path / "amazon", n=50)
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "events.csv").write_text("user_id,item_id,rating,timestamp,title\nu1,i1,4,1,One\n")
    lines, table = dataset(tmp_path, tmp_path / "amazon"), dataset(tmp_path, tmp_path / "table" / "events.csv", "table")
    con = warehouse.connect()
    try:
        for ds in (lines, table, lines):
            data_prep.ingest_dataset(con, ds)
        assert con.execute("SELECT dataset, count(*) FROM raw_interactions GROUP BY 1 ORDER BY 1").fetchall() == [
            (lines.name, 49), (table.name, 1)]
        leftovers = con.execute("SELECT table_name FROM information_schema.tables WHERE table_name IN "
                                "('src', 'src_lines', 'stage_interactions', 'stage_items')").fetchall()
        assert leftovers == []
    finally:
        con.close()


def test_duckdb_memory_limit_and_spill_folder_are_settings(tmp_path, monkeypatch):
    def settings() -> Settings:
        return Settings.from_env()

    def current(con: duckdb.DuckDBPyConnection) -> tuple[str, str]:
        return con.execute("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchone()

    monkeypatch.delenv("LLMREC_DUCKDB_MEMORY_LIMIT", raising=False)
    monkeypatch.delenv("LLMREC_DUCKDB_TEMP_DIR", raising=False)
    monkeypatch.setenv("LLMREC_DATA_DIR", str(tmp_path / "default"))
    s = settings()
    assert (s.duckdb_memory_limit, s.duckdb_temp_dir) == (None, None)
    with ProjectResource.from_settings(s).connect() as con:  # DuckDB's defaults
        default = duckdb.connect().execute("SELECT current_setting('memory_limit')").fetchone()[0]
        assert current(con) == (default, str(s.warehouse_path) + ".tmp")

    monkeypatch.setenv("LLMREC_DATA_DIR", str(tmp_path / "set"))
    monkeypatch.setenv("LLMREC_DUCKDB_MEMORY_LIMIT", "1GiB")
    monkeypatch.setenv("LLMREC_DUCKDB_TEMP_DIR", str(tmp_path / "spill"))
    s = settings()
    assert (s.duckdb_memory_limit, s.duckdb_temp_dir) == ("1GiB", tmp_path / "spill")
    project = ProjectResource.from_settings(s)
    for read_only in (False, True, False):  # every connection, also once the database is open
        with project.connect(read_only=read_only) as con:
            assert current(con) == ("1.0 GiB", str(tmp_path / "spill"))

    monkeypatch.setenv("LLMREC_DUCKDB_MEMORY_LIMIT", "80%")
    with pytest.raises(ConfigError, match=r"^LLMREC_DUCKDB_MEMORY_LIMIT='80%': Unknown unit for memory: '%'"):
        settings()
