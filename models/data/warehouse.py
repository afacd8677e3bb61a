"""The DuckDB warehouse: connections (with the memory and spill settings) and table summaries
(row counts, quarantine shares). No Dagster here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

import sql



def connect(path: Path | str = ":memory:", read_only: bool = False, memory_limit: str | None = None,
            temp_directory: Path | str | None = None) -> duckdb.DuckDBPyConnection:
    """A warehouse connection with the tables in place and UTC as the session time zone.

    `memory_limit` ("4GB") and `temp_directory` (where DuckDB spills what does not fit) are DuckDB's
    settings of those names, for the whole database (Settings: LLMREC_DUCKDB_MEMORY_LIMIT and
    LLMREC_DUCKDB_TEMP_DIR); None keeps DuckDB's defaults: 80 % of the RAM, `<warehouse>.tmp`."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    con.execute("SET TimeZone = 'UTC'")
    if memory_limit is not None:
        con.execute("SET memory_limit = $v", {"v": memory_limit})
    # DuckDB refuses to switch its spill folder once it was used, even to the same one: set it only when it differs
    if temp_directory is not None and str(temp_directory) != con.execute(
            "SELECT current_setting('temp_directory')").fetchone()[0]:
        con.execute("SET temp_directory = $v", {"v": str(temp_directory)})
    if not read_only:
        sql.run(con, "schema")
    return con


def quarantine_share(con: duckdb.DuckDBPyConnection, dataset: str) -> tuple[float, int, int, dict[str, int]]:
    """(share, quarantined, input rows, counts by reason) over a dataset's interaction rows."""
    by_reason = dict(con.execute(
        "SELECT reason, count(*) FROM quarantine WHERE dataset = $d AND kind = 'interaction' GROUP BY 1 ORDER BY 1",
        {"d": dataset}).fetchall())
    bad = sum(by_reason.values())
    good = con.execute("SELECT count(*) FROM raw_interactions WHERE dataset = $d", {"d": dataset}).fetchone()[0]
    untitled = by_reason.get("item_without_title", 0)  # counted in raw_interactions already
    total = good + bad - untitled
    return (bad / total if total else 0.0), bad, total, by_reason


@dataclass
class TableSummary:
    rows: int
    users: int
    items: int
    positive_rate: float | None
    ts_min: int | None
    ts_max: int | None
    extra: dict[str, Any] = field(default_factory=dict)


def summarize(con: duckdb.DuckDBPyConnection, table: str, key: str, value: str) -> TableSummary:
    """Row, user and item counts, positive rate and time range of one dataset's or domain's rows."""
    assert table in ("raw_interactions", "interactions", "domain_interactions") and key in ("dataset", "domain")
    has_label = table != "raw_interactions"
    r = con.execute(
        f"SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id), "
        f"{'avg(label)' if has_label else 'NULL'}, min(ts), max(ts) FROM {table} WHERE {key} = $v",
        {"v": value}).fetchone()
    return TableSummary(r[0], r[1], r[2], None if r[3] is None else float(r[3]), r[4], r[5])
