"""Raw review files to CoLLM/RecCocktail splits in DuckDB: ingestion (files known by their bytes,
not their names) with quarantine, labels, domain slices, temporal splits with histories and
warm/cold flags. No Dagster here."""

from __future__ import annotations

import ast
import concurrent.futures
import hashlib
import io
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

import sql
from models.config import ConfigError, DatasetConfig, DomainConfig, ProjectConfig, SplitSpec
from models.formats import FORMATS

QUARANTINE_REASONS = (
    "malformed_line",
    "missing_user",
    "missing_item",
    "non_numeric_rating",
    "rating_out_of_range",
    "unparseable_timestamp",
    "item_without_title",
)
SPLITS = ("train", "valid", "test")
LANDING_PREFIX = "landing/"  # source_file of rows that came in through the landing folder
# names of files a writer has not finished: left for a later sensor tick
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart", ".incomplete")


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


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- what a source file holds, told by its bytes: a name can lie (`ratings.parquet.brotli` is Parquet,
# `ratings.csv.gz` may be plain text) ----------------------------------------------------------

_HEAD = 1 << 16  # bytes looked at to tell text from binary data
_MAGIC = ((b"PAR1", "parquet"), (b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"),
          (b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"), (b"\xfd7zXZ\x00", "xz"))
_NOUNS = {"text": ("", "text"), "binary": ("", "binary data (not text)"), "parquet": ("a ", "Parquet file"),
          "zip": ("a ", "ZIP archive"), "bzip2": ("a ", "bzip2 archive"), "xz": ("an ", "xz archive"),
          "gzip": ("a ", "gzip stream"), "zstd": ("a ", "zstd stream")}


@dataclass(frozen=True)
class FileContent:
    """What a source file holds: `kind` of its (decompressed) bytes (text, parquet, zip, bzip2, xz,
    gzip, zstd or binary), the `compression` the reader must undo (none, gzip or zstd), its sha256,
    and what is wrong with a compressed stream that does not decompress to its end."""

    kind: str
    compression: str
    sha256: str
    damage: str | None = None

    def describe(self) -> str:
        if self.damage:
            return f"a {self.compression} stream that {self.damage}"
        article, noun = _NOUNS[self.kind]
        if self.compression == "none":
            return article + noun
        # the article now goes with the compression: "an xz archive", "a gzip-compressed xz archive"
        return f"{'a ' if article else ''}{self.compression}-compressed {noun}"

    def as_metadata(self) -> dict[str, str]:
        return {"sha256": self.sha256, "kind": self.kind, "compression": self.compression}


def _kind(head: bytes, encoding: str, parquet_footer: bool) -> str:
    for magic, kind in _MAGIC:
        # a CSV whose first column is named PAR1... stays text: real Parquet has its footer, or
        # (truncated) binary bytes after the magic
        if head.startswith(magic) and (kind != "parquet" or parquet_footer or b"\0" in head):
            return kind
    if head[:3] == b"BZh" and head[4:10] == b"1AY&SY":
        return "bzip2"
    # NUL bytes mean binary data, except in UTF-16, where every ASCII character has one
    if b"\0" in head and not encoding.lower().replace("_", "-").startswith("utf-16"):
        return "binary"
    return "text"


class _HashingReader(io.RawIOBase):
    """A file that hashes the bytes read from it, so one pass both decompresses and hashes it; it
    keeps its own OS errors (transient: retried) apart from the decompressor's (the bytes: not)."""

    def __init__(self, f: io.BufferedReader) -> None:
        self._f = f
        self.sha = hashlib.sha256()
        self.os_error: OSError | None = None

    def hash_rest(self) -> str:
        """The sha256 of the whole file, reading what the decompressor left (after an error)."""
        for block in iter(lambda: self._f.read(1 << 20), b""):
            self.sha.update(block)
        return self.sha.hexdigest()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            n = self._f.readinto(buffer)
        except OSError as exc:
            self.os_error = exc
            raise
        self.sha.update(memoryview(buffer)[:n])
        return n


def inspect_file(path: Path, encoding: str = "utf-8",
                 on_head: Callable[[str, str], None] | None = None) -> FileContent:
    """Tell what `path` holds from its bytes (never its name) and hash it. A gzip or zstd file is
    decompressed to its end in the same pass: DuckDB reads a truncated stream without a word, so
    only this pass notices that rows are missing. `on_head(kind, compression)` is called as soon as
    the first bytes tell them, before the long part of the pass (not for a stream that does not
    decompress that far: its FileContent tells the damage)."""
    with open(path, "rb") as f:
        head = f.read(_HEAD)
        f.seek(max(0, os.fstat(f.fileno()).st_size - 4))
        footer = f.read(4) == b"PAR1"
    outer = _kind(head, encoding, footer)
    if outer not in ("gzip", "zstd"):
        if on_head is not None:
            on_head(outer, "none")
        return FileContent(outer, "none", file_sha256(path))
    import pyarrow as pa  # only compressed files need it

    first, damage = b"", None
    with open(path, "rb") as f:
        reader = _HashingReader(f)
        try:
            with pa.CompressedInputStream(pa.PythonFile(reader, mode="r"), outer) as stream:
                first = stream.read(_HEAD)
                if on_head is not None:
                    on_head(_kind(first, encoding, False), outer)
                while stream.read(1 << 20):
                    pass
        except (OSError, pa.ArrowException) as exc:
            if reader.os_error is not None:
                raise reader.os_error from None
            damage = ("ends early (the file is truncated)" if "truncated" in str(exc).lower()
                      else f"does not decompress ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
        sha256 = reader.hash_rest()
    return FileContent(_kind(first, encoding, False), outer, sha256, damage)


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


def fresh_dir(final: Path) -> Path:
    """An empty folder beside `final` to write into before `replace_dir` moves it into place."""
    import shutil

    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp: Path, final: Path) -> Path:
    """Swap a finished folder into place: the old one is renamed aside first and removed last, so a
    crash leaves either the old or the new folder (and the other beside it), never half of one."""
    import shutil

    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


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


# --- Python dict literals: Amazon 2014 metadata is one `str(dict)` a line (single quotes), not JSON ---

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
