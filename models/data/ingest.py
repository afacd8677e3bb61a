"""Raw review files into DuckDB: the files of a dataset found and inspected by content, read by
their format's SQL, every row validated, bad rows quarantined with their reason, the committed rows
turned into labelled interactions; and the landing folder's files ingested once each. No Dagster
here."""

from __future__ import annotations

import ast
import concurrent.futures
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

import sql
from models.config import ConfigError, DatasetConfig, ProjectConfig
from models.registry.formats import FORMATS

from models.data.content import FileContent, inspect_file


QUARANTINE_REASONS = (
    "malformed_line",
    "missing_user",
    "missing_item",
    "non_numeric_rating",
    "rating_out_of_range",
    "unparseable_timestamp",
    "item_without_title",
)


LANDING_PREFIX = "landing/"  # source_file of rows that came in through the landing folder


# names of files a writer has not finished: left for a later sensor tick
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart", ".incomplete")


def _cannot_read(ds: DatasetConfig, path: Path, found: str) -> ConfigError:
    """The one line a file the format cannot read gives: the file, what was expected, what is in it."""
    fmt = FORMATS[ds.format]
    return ConfigError(f"{path.name}: datasets.{ds.name} (format {ds.format}) expects {fmt.expects}, "
                       f"found {found}".replace("\n", " "))


def _check_readable(ds: DatasetConfig, path: Path, content: FileContent) -> None:
    """Raise the one-line ConfigError when the dataset's format cannot read what the file holds."""
    table = FORMATS[ds.format].reader == "table"
    if not content.damage and (content.kind == "text" or
                               (table and content.kind == "parquet" and content.compression == "none")):
        return
    if content.damage:
        hint = "fetch or copy it again"
    elif content.kind == "parquet":
        hint = ("decompress it: Parquet compresses inside the file" if content.compression != "none" else
                f"Parquet is read by format table (set datasets.{ds.name}.format and fields)")
    elif content.kind == "zip":
        hint = f"unzip it and point datasets.{ds.name} at the file inside"
    elif content.kind in ("bzip2", "xz", "gzip", "zstd"):
        hint = "decompress it, or compress it once with gzip or zstd"
    else:
        hint = f"check that this is the right file and datasets.{ds.name}.encoding"
    raise _cannot_read(ds, path, f"{content.describe()}; {hint}")


# DuckDB's IO errors that the same bytes would repeat (matched with quoted file names removed);
# other IO errors (a lost mount, a full disk) stay transient and are retried
_CONTENT_IO_ERROR = re.compile(r"gzip|zstd|compress|parquet|magic|corrupt", re.IGNORECASE)


_QUOTED = re.compile(r""""[^"]*"|'[^']*'""")


def _read_failure(ds: DatasetConfig, content: FileContent, exc: duckdb.Error) -> str:
    """What DuckDB's multi-line read error says about the file, in one line and without its internals."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reason = next((re.sub(r"^[A-Za-z ]*Error: ", "", ln) for ln in lines
                   if not re.search(r"Error on Line: \d+$|^Original Line:|^LINE \d+:", ln)), type(exc).__name__)
    on_line = re.search(r"Error on Line: (\d+)", text)
    where = f" on line {on_line.group(1)}" if on_line else ""
    if "Invalid unicode" in text:
        return (f"bytes that are not {_encoding(ds)} text{where}; set datasets.{ds.name}.encoding "
                f"(utf-8, latin-1 or utf-16)")
    if "Maximum line size" in text:
        return f"a line longer than 16 MiB{where}"
    if "Error when sniffing file" in text:
        delim = ds.delimiter or FORMATS[ds.format].delim
        return (f"{content.describe()} that does not split into {delim!r}-separated columns; "
                f"check datasets.{ds.name}.delimiter and encoding")
    if content.kind == "parquet":
        if "No magic bytes found at end of file" in text:
            return "a Parquet file without its footer (truncated); fetch or copy it again"
        return f"a damaged Parquet file ({reason[:200]})"
    return f"{content.describe()} it could not read ({reason[:200]}{where})"


@contextmanager
def _reading(ds: DatasetConfig, path: Path, content: FileContent) -> Iterator[None]:
    """Turn DuckDB's error for a file it cannot read into the one-line ConfigError (no traceback
    chained: the message says all there is). Bad lines of a readable file never get here: they
    are rows of src_rejects or src_lines, quarantined later. A line format's file is read when
    its validation runs (src_lines is a view), so that runs inside this too."""
    try:
        yield
    except (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.IOException) as exc:
        if isinstance(exc, duckdb.IOException) and not _CONTENT_IO_ERROR.search(_QUOTED.sub("", str(exc))):
            raise
        raise _cannot_read(ds, path, _read_failure(ds, content, exc)) from None


@dataclass
class SourceFiles:
    interactions: Path
    items: Path


def _resolve(location: Path, pattern: str, exclude_prefix: str | None, what: str, dataset: str) -> Path:
    if location.is_file():
        return location
    if not location.exists():
        raise ConfigError(f"datasets.{dataset}: source folder {location} does not exist")
    direct = location / pattern
    if direct.is_file():
        return direct
    matches = sorted(
        p for p in location.glob(pattern)
        if p.is_file() and not (exclude_prefix and p.name.startswith(exclude_prefix))
    )
    if len(matches) != 1:
        found = ", ".join(p.name for p in matches) or "none"
        raise ConfigError(
            f"datasets.{dataset}: expected one {what} file matching {pattern!r} in {location}, "
            f"found {found}; name it under datasets.{dataset}.files.{what}"
        )
    return matches[0]


def source_files(ds: DatasetConfig) -> SourceFiles:
    fmt = FORMATS[ds.format]
    names = {**fmt.files, **ds.files}
    if ds.location.is_file():  # one file holds the interactions and the item columns
        return SourceFiles(ds.location, ds.location)
    if "interactions" not in names:
        raise ConfigError(f"datasets.{ds.name}.files.interactions is required for format {ds.format}")
    inter = _resolve(ds.location, names["interactions"], fmt.meta_prefix, "interactions", ds.name)
    items_name = names.get("items")
    items = _resolve(ds.location, items_name, None, "items", ds.name) if items_name else inter
    return SourceFiles(inter, items)


def _fields(ds: DatasetConfig) -> dict[str, str | None]:
    return {**FORMATS[ds.format].fields, **ds.fields}


def _encoding(ds: DatasetConfig) -> str:
    return ds.encoding or FORMATS[ds.format].encoding


def _timestamp_unit(ds: DatasetConfig) -> str:
    return ds.timestamp_unit or FORMATS[ds.format].timestamp_unit


class _Inspection:
    """inspect_file of one source file in a thread of its own, beside DuckDB's read of the file.
    `head()` waits for what the first bytes tell (kind, compression; the sha256 is not known yet),
    which is enough to read the file; `content()` waits for the full pass (sha256, a compressed
    stream decompressed to its end). Either raises the ConfigError of a file the dataset's format
    cannot read, or the OSError of one that could not be read at all."""

    def __init__(self, ds: DatasetConfig, path: Path) -> None:
        self.ds, self.path = ds, path
        self._head: concurrent.futures.Future[FileContent] = concurrent.futures.Future()
        self._full: concurrent.futures.Future[FileContent] = concurrent.futures.Future()
        threading.Thread(target=self._run, name=f"inspect {path.name}", daemon=True).start()

    def _run(self) -> None:
        try:
            content = inspect_file(self.path, _encoding(self.ds), on_head=lambda kind, compression:
                                   self._head.set_result(FileContent(kind, compression, sha256="")))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            for f in (self._head, self._full):
                if not f.done():
                    f.set_exception(exc)
            return
        if not self._head.done():  # a stream damaged within its first bytes: the whole answer
            self._head.set_result(content)
        self._full.set_result(content)

    def head(self) -> FileContent:
        content = self._head.result()
        _check_readable(self.ds, self.path, content)
        return content

    def content(self) -> FileContent:
        content = self._full.result()
        _check_readable(self.ds, self.path, content)
        return content

    def error(self) -> Exception | None:
        """The file's own fault, once the full pass is done (None: it is readable)."""
        try:
            self.content()
        except Exception as exc:  # noqa: BLE001
            return exc
        return None


LITERAL_UDF = "py_literal_to_json"


def literal_to_json(line: str | None) -> str | None:
    """The JSON text of `line` when it is a Python dict literal, else None. ast.literal_eval only
    builds literals (strings, numbers, lists, dicts...): a call, a name or an attribute, which only
    `eval` would accept, is refused and never run. The JSON is ASCII (non-ASCII as \\u escapes), so a
    lone surrogate (`'\\ud800'`) makes JSON that DuckDB refuses rather than text Arrow cannot encode."""
    if line is None:
        return None
    try:
        value = ast.literal_eval(line)
        # json.dumps raises TypeError for what JSON cannot hold (a set, bytes, a tuple key)
        return json.dumps(value) if isinstance(value, dict) else None
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):  # what literal_eval raises
        return None


def _literals_to_json(lines: Any) -> Any:
    """literal_to_json over one vector of lines: DuckDB's arrow UDF makes one Python call per vector
    (2048 lines), not one per line."""
    import pyarrow as pa

    return pa.array([literal_to_json(line) for line in lines.to_pylist()], pa.string())


def register_literal_udf(con: duckdb.DuckDBPyConnection) -> None:
    """Make `py_literal_to_json(line)` (literal_to_json) callable from the staging SQL on `con`; a
    connection keeps its functions, so one that has it already is left as it is."""
    if not con.execute("SELECT 1 FROM duckdb_functions() WHERE function_name = $n", {"n": LITERAL_UDF}).fetchone():
        # "special": the function returns NULL itself (for a line that is not a dict literal)
        con.create_function(LITERAL_UDF, _literals_to_json, ["VARCHAR"], "VARCHAR", type="arrow",
                            null_handling="special")


def _read_table(con: duckdb.DuckDBPyConnection, ds: DatasetConfig, path: Path, content: FileContent) -> list[str]:
    """Load a tabular file into temp table `src` (all VARCHAR); return its column names."""
    with _reading(ds, path, content):
        if content.kind == "parquet":
            sql.run(con, "read_parquet_rows", path=str(path))
        else:
            fmt = FORMATS[ds.format]
            sql.run(con, "read_csv_rows", path=str(path), delim=ds.delimiter or fmt.delim,
                    quote=fmt.quote, encoding=_encoding(ds), compression=content.compression)
    cols = [r[0] for r in con.execute("DESCRIBE src").fetchall() if r[0] != "source_row"]
    if FORMATS[ds.format].typed_headers:  # RecBole headers are typed: "rating:float"
        for c in cols:
            con.execute(f"ALTER TABLE src RENAME {sql.quote_ident(c)} TO {sql.quote_ident(c.split(':')[0])}")
        cols = [c.split(":")[0] for c in cols]
    return cols


def _project(con: duckdb.DuckDBPyConnection, ds: DatasetConfig, path: Path,
             cols: list[str], wanted: dict[str, str | None], required: set[str]) -> None:
    """Replace `src` by the canonical columns; a mapped column missing from the file is an error."""
    parts = []
    for canonical, source in wanted.items():
        if source is None:
            if canonical in required:
                raise ConfigError(f"datasets.{ds.name}.fields: '{canonical}' must name a column of {path.name}")
            default = "'1'" if canonical == "rating" else "NULL"  # no rating column: implicit feedback
            parts.append(f"{default}::VARCHAR AS {canonical}")
        elif source not in cols:
            raise ConfigError(
                f"datasets.{ds.name}: {path.name} has no column {source!r} (for {canonical}); "
                f"its columns are {cols}. Set datasets.{ds.name}.fields."
            )
        else:
            parts.append(f"{sql.quote_ident(source)} AS {canonical}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE src AS SELECT {', '.join(parts)}, source_row FROM src")


def _check_lines(con: duckdb.DuckDBPyConnection, ds: DatasetConfig, path: Path, source_file: str,
                 content: FileContent, stage_sql: str, kind: str, stage_params: dict | None = None,
                 **params: object) -> None:
    """A line format's file (`kind` interactions or items) into temp table checked_<kind>. src_lines
    (sql/read_lines.sql) and stage_<kind> (sql/<stage_sql>.sql) are views: the file is read,
    numbered, parsed and checked in one streamed pass when sql/validate_<kind>.sql builds its
    table, the one copy of the rows."""
    with _reading(ds, path, content):
        try:
            sql.run(con, "read_lines", path=str(path), encoding=_encoding(ds), compression=content.compression,
                    source_file=source_file)
            sql.run(con, stage_sql, **(stage_params or {}))
            sql.run(con, f"validate_{kind}", **params)
        finally:  # the views read variables that the next file's read_lines sets: they go with their file
            con.execute(f"DROP VIEW IF EXISTS stage_{kind}; DROP VIEW IF EXISTS src_lines")


def _check_interactions(con: duckdb.DuckDBPyConnection, ds: DatasetConfig, path: Path, source_file: str,
                        content: FileContent) -> None:
    """Fill temp table checked_interactions from one interaction file in the dataset's format: its
    rows in canonical columns (stage_interactions), typed, with the reason of each bad one."""
    unit = _timestamp_unit(ds)
    checks = {"rating_min": ds.rating_range[0], "rating_max": ds.rating_range[1], "timestamp_unit": unit,
              "timestamp_unit_name": {"s": "Unix time in seconds",
                                      "ms": "Unix time in milliseconds"}.get(unit, "date-time")}
    fmt = FORMATS[ds.format]
    if fmt.reader == "lines":
        _check_lines(con, ds, path, source_file, content, fmt.interactions_sql, "interactions", fmt.stage_params,
                     **checks)
        return
    f = _fields(ds)
    cols = _read_table(con, ds, path, content)
    _project(con, ds, path, cols,
             {"user_id": f.get("user"), "item_id": f.get("item"), "rating": f.get("rating"),
              "ts": f.get("timestamp")}, required={"user_id", "item_id", "ts"})
    sql.run(con, "stage_table", source_file=source_file)
    sql.run(con, "validate_interactions", **checks)
    con.execute("DROP TABLE stage_interactions; DROP TABLE src")


def _check_items(con: duckdb.DuckDBPyConnection, ds: DatasetConfig, files: SourceFiles,
                 contents: dict[Path, FileContent]) -> None:
    """Fill temp table checked_items from the dataset's item file (or its one file)."""
    fmt = FORMATS[ds.format]
    if fmt.reader == "lines":
        register_literal_udf(con)  # amazon2014's item SQL parses Python dict literals with it
        _check_lines(con, ds, files.items, files.items.name, contents[files.items], fmt.items_sql, "items")
        return
    f = _fields(ds)
    cols = _read_table(con, ds, files.items, contents[files.items])
    item_key = f.get("item_id") if files.items != files.interactions else f.get("item")
    _project(con, ds, files.items, cols,
             {"item_id": item_key, "title": f.get("title"), "year": f.get("year"),
              "categories": f.get("categories")}, required={"item_id", "title"})
    sql.run(con, "stage_table_items", source_file=files.items.name, separator=ds.categories_separator)
    sql.run(con, "validate_items")
    con.execute("DROP TABLE stage_items; DROP TABLE src")


@dataclass
class IngestReport:
    dataset: str
    interaction_rows_read: int
    item_rows_read: int
    interactions_loaded: int
    items_loaded: int
    quarantined: dict[str, int]  # "interaction:reason" / "item:reason" -> count
    duplicate_items_collapsed: int
    # path -> what its bytes were found to hold: {"sha256", "kind", "compression"} (FileContent)
    contents: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def quarantined_interactions(self) -> int:
        return sum(v for k, v in self.quarantined.items() if k.startswith("interaction:"))


def ingest_dataset(con: duckdb.DuckDBPyConnection, ds: DatasetConfig) -> IngestReport:
    """Read a dataset's raw files into raw_interactions / raw_items; bad rows go to quarantine.

    Parsing happens in temp tables (a line format's file is streamed into the one its validation
    builds: _check_lines); the swap of the dataset's rows is one transaction, so a crash at any
    point leaves the warehouse as it was.

    Each file is inspected by its bytes (sha256; a compressed stream decompressed to its end, the
    one way to notice a truncated one) in a thread while DuckDB reads it. What a file holds is told
    from its first bytes before any file is read, so a file the format cannot read fails before
    minutes of parsing; the full pass is waited for before anything is committed, so a damaged file
    fails the ingestion as it did when each file was inspected before any was read."""
    files = source_files(ds)
    inspections = {p: _Inspection(ds, p) for p in dict.fromkeys((files.interactions, files.items))}
    try:
        heads = {p: i.head() for p, i in inspections.items()}
        _check_interactions(con, ds, files.interactions, files.interactions.name, heads[files.interactions])
        _check_items(con, ds, files, heads)
        contents = {p: i.content() for p, i in inspections.items()}
    except Exception:
        # a file's own fault first, in file order, as if each file had been inspected before any
        # was read: DuckDB says less about a damaged stream, and nothing about a truncated one
        for inspection in inspections.values():
            if (fault := inspection.error()) is not None:
                raise fault from None
        raise
    con.execute("BEGIN TRANSACTION")
    try:
        sql.run(con, "commit_raw", dataset=ds.name)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    q = dict(con.execute(
        "SELECT kind || ':' || reason, count(*) FROM quarantine WHERE dataset = $d AND stage = 'raw' GROUP BY 1",
        {"d": ds.name}).fetchall())
    n_inter = con.execute("SELECT count(*) FROM checked_interactions").fetchone()[0]
    n_items = con.execute("SELECT count(*) FROM checked_items").fetchone()[0]
    good_items = con.execute("SELECT count(*) FROM checked_items WHERE reason IS NULL").fetchone()[0]
    loaded_i = con.execute("SELECT count(*) FROM raw_interactions WHERE dataset = $d", {"d": ds.name}).fetchone()[0]
    loaded_it = con.execute("SELECT count(*) FROM raw_items WHERE dataset = $d", {"d": ds.name}).fetchone()[0]
    return IngestReport(
        dataset=ds.name,
        interaction_rows_read=n_inter,
        item_rows_read=n_items,
        interactions_loaded=loaded_i,
        items_loaded=loaded_it,
        quarantined=q,
        duplicate_items_collapsed=good_items - loaded_it,
        contents={str(p): c.as_metadata() for p, c in contents.items()},
    )


def build_interactions(con: duckdb.DuckDBPyConnection, ds: DatasetConfig) -> dict[str, int]:
    """Label, de-duplicate and title one dataset's raw rows into `interactions` (one transaction)."""
    con.execute("BEGIN TRANSACTION")
    try:
        sql.run(con, "interactions", dataset=ds.name, label_threshold=ds.label_threshold)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    raw = con.execute("SELECT count(*) FROM raw_interactions WHERE dataset = $d", {"d": ds.name}).fetchone()[0]
    untitled = con.execute("SELECT count(*) FROM titled WHERE title IS NULL").fetchone()[0]
    kept = con.execute("SELECT count(*) FROM interactions WHERE dataset = $d", {"d": ds.name}).fetchone()[0]
    return {"raw_rows": raw, "item_without_title": untitled, "duplicates_collapsed": raw - untitled - kept,
            "rows": kept}


def landing_candidates(landing: Path, dataset: str) -> list[Path]:
    """Files in <landing>/<dataset>/ that may be complete: not hidden, not named like a partial write."""
    folder = landing / dataset
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith((".", "~")) and not p.name.endswith(PARTIAL_SUFFIXES))


@dataclass
class LandedReport:
    dataset: str
    file_name: str
    sha256: str
    already_ingested_as: str | None  # the file name it was first ingested under, when seen before
    rows_read: int = 0
    rows_loaded: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    touched_domains: list[str] = field(default_factory=list)
    content: dict[str, str] = field(default_factory=dict)  # FileContent.as_metadata()


def _record_landed(con: duckdb.DuckDBPyConnection, rep: LandedReport) -> None:
    con.execute("INSERT INTO landed_files VALUES ($sha, $ds, $name, $read, $loaded, now())",
                {"sha": rep.sha256, "ds": rep.dataset, "name": rep.file_name, "read": rep.rows_read,
                 "loaded": rep.rows_loaded})


def ingest_landed(con: duckdb.DuckDBPyConnection, cfg: ProjectConfig, dataset: str, path: Path,
                  sha256: str | None = None) -> LandedReport:
    """Append one landing file's interactions to `dataset`'s raw rows, exactly once per content.

    The file is parsed in the dataset's format (interaction rows only; their items must be in the
    dataset's item file). Bad rows go to quarantine (stage 'landing'). The rows, the quarantine
    and the landed_files record are one transaction: a crash leaves the warehouse as it was, and
    content seen before (the same file dropped twice, or renamed) is skipped."""
    ds = cfg.datasets[dataset]
    content = inspect_file(path, _encoding(ds))  # hashes the file too
    digest = content.sha256
    if sha256 is not None and digest != sha256:
        raise ConfigError(f"{path} changed since the sensor saw it (sha256 differs); it will be picked up again")
    seen = con.execute("SELECT file_name FROM landed_files WHERE sha256 = $h", {"h": digest}).fetchone()
    rep = LandedReport(dataset, path.name, digest, seen[0] if seen else None, content=content.as_metadata())
    if seen:
        return rep
    _check_readable(ds, path, content)
    _check_interactions(con, ds, path, LANDING_PREFIX + path.name, content)
    rep.rows_read = con.execute("SELECT count(*) FROM checked_interactions").fetchone()[0]
    rep.rows_loaded = con.execute("SELECT count(*) FROM checked_interactions WHERE reason IS NULL").fetchone()[0]
    rep.quarantined = dict(con.execute("SELECT reason, count(*) FROM checked_interactions WHERE reason IS NOT NULL "
                                       "GROUP BY 1 ORDER BY 1").fetchall())
    con.execute("BEGIN TRANSACTION")
    try:
        sql.run(con, "commit_landed", dataset=dataset)
        _record_landed(con, rep)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    cats = {r[0] for r in con.execute(
        "SELECT DISTINCT unnest(i.categories) FROM raw_items i JOIN checked_interactions c "
        "ON i.dataset = $ds AND i.item_id = trim(c.item_id) WHERE c.reason IS NULL", {"ds": dataset}).fetchall()}
    rep.touched_domains = sorted(d.name for d in cfg.domains_of(dataset)
                                 if rep.rows_loaded and (d.category is None or d.category in cats))
    return rep
