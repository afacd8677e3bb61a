"""Metadata every materialization carries: counts, schema, time range, preview, versions."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
import inspect
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa

import sql
from models.config import ConfigError
from models.data_prep import TableSummary


# transient failures (a lost file handle, a busy disk, a flaky network mount, a GPU out of memory
# because another job held it) are retried with exponential backoff; `fail` marks a failure that
# the same inputs would repeat (bad config, empty split), which is never retried
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def fail(description: str, **kwargs: Any) -> dg.Failure:
    """A deterministic failure: shown with its fix, never retried."""
    return dg.Failure(description, allow_retries=False, **kwargs)


@contextmanager
def deterministic() -> Iterator[None]:
    """Turn a ConfigError (the config or a file says something we cannot run) into `fail`."""
    try:
        yield
    except ConfigError as exc:
        raise fail(str(exc)) from exc


def code_version(*modules: ModuleType) -> str:
    """Hash of the Python modules and SQL files an asset runs: changes when its logic changes."""
    h = hashlib.sha256(sql.source_hash().encode())
    for m in modules:
        h.update(inspect.getsource(m).encode())
    return h.hexdigest()[:16]


def iso(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def table_schema(con: duckdb.DuckDBPyConnection, relation: str) -> dg.TableSchema:
    cols = con.execute(f"DESCRIBE {relation}").fetchall()
    return dg.TableSchema(columns=[dg.TableColumn(c[0], c[1]) for c in cols])


def arrow_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])


def preview(con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any], limit: int = 10) -> dg.MetadataValue:
    """The first rows of a query as a Markdown table (lists shortened so the table stays readable)."""
    cur = con.execute(f"SELECT * FROM ({query}) LIMIT {int(limit)}", params)
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()

    def cell(v: Any) -> str:
        if isinstance(v, list):
            v = "[" + ", ".join(map(str, v[-3:])) + ("" if len(v) <= 3 else f", … {len(v)} in all") + "]"
        return str(v).replace("|", "\\|").replace("\n", " ")[:80]

    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def summary_metadata(s: TableSummary) -> dict[str, Any]:
    md: dict[str, Any] = {
        "dagster/row_count": s.rows,
        "users": s.users,
        "items": s.items,
        "time_min": iso(s.ts_min) or "none",
        "time_max": iso(s.ts_max) or "none",
    }
    if s.positive_rate is not None:
        md["positive_rate"] = round(s.positive_rate, 4)
    return md


def table_data_version(con: duckdb.DuckDBPyConnection, table: str, key: str, value: str, cols: str) -> str:
    """Content hash of one dataset's or domain's rows, independent of row order."""
    r = con.execute(
        f"SELECT count(*), coalesce(sum(hash({cols})::HUGEINT), 0) FROM {table} WHERE {key} = $v",
        {"v": value}).fetchone()
    return hashlib.sha256(f"{r[0]}:{r[1]}".encode()).hexdigest()[:16]
