"""DuckDB SQL files and the one helper that runs them with bound parameters (no Dagster here)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import duckdb

SQL_DIR = Path(__file__).resolve().parent
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


@lru_cache(maxsize=None)
def statements(name: str) -> tuple[str, ...]:
    """The statements of sql/<name>.sql, split on a ';' that ends a line."""
    text = (SQL_DIR / f"{name}.sql").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return tuple(s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip())


def run(con: duckdb.DuckDBPyConnection, name: str, **params: object) -> duckdb.DuckDBPyConnection:
    """Run every statement of sql/<name>.sql, binding to each the named parameters it uses."""
    for stmt in statements(name):
        used = set(_PARAM.findall(stmt))
        missing = used - params.keys()
        if missing:
            raise KeyError(f"sql/{name}.sql needs parameters {sorted(missing)}")
        con.execute(stmt, {k: params[k] for k in used} if used else None)
    return con


def quote_ident(name: str) -> str:
    """A column name from a user's file, quoted for DuckDB (identifiers cannot be bound)."""
    return '"' + name.replace('"', '""') + '"'


def source_hash() -> str:
    """Content hash of every SQL file: part of the code version of the assets that run them."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(SQL_DIR.glob("*.sql")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]
