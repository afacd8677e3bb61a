"""Labelled interactions to a domain's split: the domain slice, the temporal split (CoLLM month
windows, date cut-offs, leave-one-out) with histories and warm/cold flags, and the split's summary
statistics. No Dagster here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb

import sql
from models.config import ConfigError, DomainConfig, SplitSpec



SPLITS = ("train", "valid", "test")


def build_domain(con: duckdb.DuckDBPyConnection, dom: DomainConfig) -> int:
    con.execute("BEGIN TRANSACTION")
    try:
        sql.run(con, "domain_interactions", domain=dom.name, dataset=dom.dataset, category=dom.category)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return con.execute("SELECT count(*) FROM domain_interactions WHERE domain = $d", {"d": dom.name}).fetchone()[0]


def origin_month(con: duckdb.DuckDBPyConnection, table: str, key: str, value: str, spec: SplitSpec) -> int:
    """Month index (year*12 + month-1) of slot 0: the config's `origin` or the data's first month."""
    if spec.params.get("origin"):
        year, month = (int(x) for x in str(spec.params["origin"]).split("-")[:2])
        return year * 12 + month - 1
    assert table in ("interactions", "domain_interactions") and key in ("dataset", "domain")
    # the month index never decreases with ts, so the first month is the month of min(ts)
    row = con.execute(
        f"SELECT year(make_timestamp(min(ts) * 1000000)) * 12 + month(make_timestamp(min(ts) * 1000000)) - 1 "
        f"FROM {table} WHERE {key} = $v", {"v": value}).fetchone()
    if row[0] is None:
        raise ValueError(f"no interactions for {key} {value!r}: nothing to split")
    return int(row[0])


def assign_split(con: duckdb.DuckDBPyConnection, domain: str, spec: SplitSpec, origin: int | None = None) -> None:
    """Fill temp table `assigned` with the domain's rows the protocol keeps and their split."""
    p = spec.params
    if spec.protocol == "month_window":
        sql.run(con, "split_month_window", domain=domain, origin_month=origin,
                train_lo=p["train_slots"][0], train_hi=p["train_slots"][1],
                valid_lo=p["valid_slots"][0], valid_hi=p["valid_slots"][1],
                test_lo=p["test_slots"][0], test_hi=p["test_slots"][1])
    elif spec.protocol == "date_cutoff":
        sql.run(con, "split_date_cutoff", domain=domain, start=str(p["start"]), end=str(p["end"]),
                train_end=str(p["train_end"]), min_user_records=int(p["min_user_records"]),
                min_item_records=int(p["min_item_records"]))
    else:
        sql.run(con, "split_leave_one_out", domain=domain, min_user_records=max(3, int(p["min_user_records"])))


SPLIT_ORDER = "CASE split WHEN 'train' THEN 0 WHEN 'valid' THEN 1 ELSE 2 END, user_id, ts, item_id"


def build_split(con: duckdb.DuckDBPyConnection, domain: str, spec: SplitSpec, out_path: Path,
                origin: int | None = None, warm_threshold: int = 3, history_length: int = 10) -> dict[str, Any]:
    """Split one domain, attach histories and flags, and write the rows to a Parquet file, with
    the domain's item titles (item_id, title) in items.parquet beside it.

    Each file is written next to its final name and renamed into place, so a reader never sees a
    half-written split. Returns per-split statistics."""
    if history_length < 1:
        raise ConfigError("settings.history_length must be at least 1")
    assign_split(con, domain, spec, origin)
    sql.run(con, "split_finish", warm_threshold=warm_threshold, history_length=history_length)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _copy_to_parquet(con, f"SELECT * FROM split_rows ORDER BY {SPLIT_ORDER}", out_path)
    _copy_to_parquet(con, "SELECT DISTINCT item_id, title FROM assigned ORDER BY item_id",
                     out_path.with_name("items.parquet"))
    return split_stats(con, out_path)


def _copy_to_parquet(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    """DuckDB writes the file itself (no Arrow copy of list columns in Python), beside its final
    name, then renames it into place. COPY cannot bind its target, so the path is quoted."""
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    target = str(tmp).replace("'", "''")
    con.execute(f"COPY ({query}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
    os.replace(tmp, path)


def split_stats(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, Any]:
    """Per-split statistics of a written split file (split_rows is a view: reading the file back
    is cheaper than computing the rows twice)."""
    rows = con.execute("""
        SELECT split, count(*), avg(label), count(DISTINCT user_id), count(DISTINCT item_id),
               sum(not_cold::INT), sum(warm::INT), min(ts), max(ts), avg(len(history_item_ids))
        FROM read_parquet($path) GROUP BY split""", {"path": str(path)}).fetchall()
    stats: dict[str, Any] = {}
    for split, n, pos, users, items, not_cold, warm, t0, t1, hist in rows:
        stats[split] = {"rows": n, "positive_rate": float(pos), "users": users, "items": items,
                        "not_cold": int(not_cold), "cold": n - int(not_cold), "warm": int(warm),
                        "ts_min": t0, "ts_max": t1, "mean_history_length": float(hist)}
    return {s: stats.get(s, {"rows": 0}) for s in SPLITS}


def split_label_counts(path: Path) -> dict[str, tuple[int, int]]:
    """split -> (negatives, positives) of a split file."""
    con = duckdb.connect()
    try:
        rows = con.execute("SELECT split, count(*) FILTER (WHERE label = 0), count(*) FILTER (WHERE label = 1) "
                           "FROM read_parquet($p) GROUP BY split", {"p": str(path)}).fetchall()
    finally:
        con.close()
    got = {r[0]: (int(r[1]), int(r[2])) for r in rows}
    return {s: got.get(s, (0, 0)) for s in SPLITS}
