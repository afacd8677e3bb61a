"""Metadata every materialization carries: counts, schema, time range, preview, versions."""

from __future__ import annotations

import errno
import functools
import hashlib
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
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
from models.data.warehouse import TableSummary


# transient failures (see `transient_reason`: a lock wait that timed out, a busy disk, a flaky
# network mount, a GPU out of memory because another job held it, a killed subprocess) are retried
# with exponential backoff; everything else is a failure the same inputs would repeat (bad config,
# empty split, a missing upstream file): `classify_failures` and `fail` stop those at the first try
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


# errno values of an OSError that say "not now" rather than "never": the same call can succeed later
TRANSIENT_ERRNOS = {
    errno.EBUSY: "device or resource busy (another process holds the file)",
    errno.EAGAIN: "resource temporarily unavailable (a lock or a non-blocking call that would block)",
    errno.ETIMEDOUT: "operation timed out (a network mount or socket)",
    errno.ESTALE: "stale file handle (a network mount that reconnected)",
    errno.ENOSPC: "disk full (other runs' temporary files, DuckDB spill and checkpoints, are freed when they end)",
}


def transient_reason(exc: BaseException) -> str | None:
    """Why `exc` is worth retrying unchanged, or None when the same inputs would fail the same way.

    The one list of transient kinds; everything not named here is deterministic."""
    if isinstance(exc, (dg.Failure, dg.RetryRequested)):
        # the asset body decided itself (allow_retries says whether the policy applies)
        return "raised as a Dagster Failure/RetryRequested"
    if isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower():
        # ProjectResource.connect waited lock_wait_s for another run's write lock and gave up;
        # that run will end, and the retry's backoff gives it time to
        return "DuckDB write lock still held by another process"
    if isinstance(exc, duckdb.TransactionException) and "conflict" in str(exc).lower():
        # two transactions touched the same rows; the retry sees the committed state
        return "DuckDB transaction conflict"
    if isinstance(exc, TimeoutError):
        # a lock, socket or subprocess wait that ran out; nothing about the inputs is wrong
        return "timed out"
    if isinstance(exc, ConnectionError):
        # includes BrokenPipeError and ConnectionResetError: the other end (a network mount, a
        # Pipes child, a DDP peer) went away; a new attempt opens a new connection
        return "connection lost"
    if isinstance(exc, InterruptedError):
        # a system call interrupted by a signal (EINTR)
        return "system call interrupted"
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return TRANSIENT_ERRNOS[exc.errno]
    torch = sys.modules.get("torch")  # only a run that imported torch can raise its errors
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        # usually another job on the same GPU held the memory; it frees it when it ends
        return "GPU out of memory"
    if isinstance(exc, subprocess.CalledProcessError) and exc.returncode is not None and exc.returncode < 0:
        # a child killed by a signal (the OOM killer, a preempted node) did not fail on its inputs
        return f"subprocess killed by signal {-exc.returncode}"
    if type(exc).__name__ == "DagsterPipesExecutionError":
        # the Pipes child (orchestration/pipes_train.py) was killed by a signal: negative exit code
        m = re.search(r"failed with code (-?\d+)", str(exc))
        if m and int(m.group(1)) < 0:
            return f"Pipes subprocess killed by signal {-int(m.group(1))}"
    return None


def _failure(name: str, args: tuple, exc: Exception) -> dg.Failure:
    """`exc` as a one-line, non-retried Failure naming the asset, its partition and the error."""
    where = name
    context = next((a for a in args if isinstance(a, dg.AssetExecutionContext)), None)
    try:
        if context is not None and context.has_partition_key:
            where = f"{name} [{context.partition_key}]"
    except Exception:  # a partition range has no single key; the name is enough
        pass
    message = " ".join(str(exc).split()) or "(no message)"
    if len(message) > 500:
        message = message[:497] + "..."
    return dg.Failure(
        description=f"{where} failed with {type(exc).__name__}: {message} "
                    "(deterministic: the same inputs would fail again, so it is not retried)",
        metadata={"error_type": type(exc).__name__, "error": dg.MetadataValue.text(str(exc))},
        allow_retries=False)


def classify_failures(fn: Callable) -> Callable:
    """Decorate an asset body: transient errors pass unchanged (the retry policy applies), any other
    exception becomes `Failure(allow_retries=False)` raised from it, so it fails at the first try.

    Dagster's own interruption (DagsterExecutionInterruptedError, a BaseException) and
    KeyboardInterrupt/SystemExit are not Exceptions and pass untouched. functools.wraps keeps the
    signature and annotations Dagster inspects for the context, config and resources."""
    name = fn.__name__
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_body(*args, **kwargs):
            try:
                return (yield from fn(*args, **kwargs))
            except Exception as exc:
                if transient_reason(exc) is not None:
                    raise
                raise _failure(name, args, exc) from exc
        return gen_body

    @functools.wraps(fn)
    def body(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if transient_reason(exc) is not None:
                raise
            raise _failure(name, args, exc) from exc
    return body


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


def png_data_uri(path) -> str:
    import base64
    from pathlib import Path

    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def embed_images(markdown: str, folder) -> str:
    """Markdown whose relative PNG links (`![roc](roc.png)`, as report.md writes them so that it reads
    well outside the UI) point at files in `folder`, with each image inlined as data: the asset page
    in the UI then shows the pictures."""
    import re
    from pathlib import Path

    def inline(m: re.Match) -> str:
        path = Path(folder) / m.group(2)
        return f"![{m.group(1)}]({png_data_uri(path)})" if path.is_file() else m.group(0)

    return re.sub(r"!\[([^\]]*)\]\(([^)/:]+\.png)\)", inline, markdown)


def metadata_values(md: dict[str, Any], show_plots: bool = True) -> dict[str, Any]:
    """Plain values from models/ as Dagster metadata: a Path as a path, a list or dict as JSON, None
    as null, the rest as it is. With `show_plots`, every PNG among them is also drawn in one Markdown
    entry, `plots`, which the asset page renders."""
    from pathlib import Path

    def one(v: Any) -> Any:
        if isinstance(v, Path):
            return dg.MetadataValue.path(str(v))
        if isinstance(v, (list, dict, tuple)):
            return dg.MetadataValue.json(v)
        if v is None:
            return dg.MetadataValue.null()
        return v

    out = {k: one(v) for k, v in md.items()}
    pngs = {k: v for k, v in md.items() if isinstance(v, Path) and v.suffix == ".png" and v.is_file()}
    if show_plots and pngs:
        out["plots"] = dg.MetadataValue.md("\n\n".join(f"**{k}** (`{v.name}`)\n\n![{k}]({png_data_uri(v)})"
                                                         for k, v in pngs.items()))
    return out


def table(rows: list[dict], columns: list[str], descriptions: dict[str, str] | None = None) -> dg.MetadataValue:
    """Rows of plain values as Dagster table metadata (the asset page shows it as a table): a column per
    name in `columns`, typed by its values (int, float, else string); None stays empty."""
    descriptions = descriptions or {}

    def kind(name: str) -> str:
        values = [r.get(name) for r in rows if r.get(name) is not None]
        if values and all(isinstance(v, bool) for v in values):
            return "bool"
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return "int"
        return "float" if values and all(isinstance(v, (int, float)) for v in values) else "string"

    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: r.get(c) for c in columns}) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, kind(c), description=descriptions.get(c)) for c in columns]))


BEATS_UNTRAINED = "beats_untrained"
BEATS_UNTRAINED_DOC = ("WARN when the trained model does not beat the untrained LLM on validation (the adapters: "
                       "their best validation AUC or loss against the same validation before the first step; a "
                       "cocktail: its selection score against the untrained LLM's on the same selection rows)")


def beats_untrained(asset: str, md: dict, trained: str, untrained: str, higher_is_better: bool = True,
                    label: str | None = None, rows: str | None = None, unit: str = "rows",
                    advice: str = "") -> dg.AssetCheckResult:
    """The `beats_untrained` check of a training asset from its metadata: `trained` and `untrained` are
    metadata keys (prefixed `<domain>/` when one run trained several domains), `label` names the metric
    and `rows` the metadata key of how many validation `unit` both were measured on. Severity WARN: a
    model no better than the untrained LLM is worth a look, not a stopped pipeline. The description
    says what was compared, on which rows, the two numbers, and (when it fails) what to do."""
    def plain(v: Any) -> Any:
        return getattr(v, "value", v)

    label = label or trained
    lines, worse, unmeasured = [], [], []
    for key, value in md.items():
        prefix = key[: -len(trained)] if key.endswith(trained) else None
        if prefix is None or not (prefix == "" or (prefix.endswith("/") and prefix.count("/") == 1)):
            continue
        where = f"{asset} [{prefix.rstrip('/')}]" if prefix else asset
        t, u = plain(value), plain(md.get(prefix + untrained))
        if t is None or u is None:
            unmeasured.append(where)
            continue
        n = plain(md.get(prefix + rows)) if rows else None
        on = f"the same {n:,} validation {unit}" if isinstance(n, int) else f"the same validation {unit}"
        gain = t - u if higher_is_better else u - t
        verdict = (f"{abs(gain):.4f} better" if gain > 0 else f"{abs(gain):.4f} worse" if gain < 0 else "no different")
        lines.append(f"{where}: {label} {t:.4f} after training against {u:.4f} for the untrained LLM on {on} "
                     f"({'higher' if higher_is_better else 'lower'} is better): {verdict}")
        if gain <= 0:
            worse.append(where)
    if unmeasured:
        lines.append(f"not measured for {', '.join(unmeasured)} (trained before this check existed: rematerialize)")
    text = "; ".join(lines) or "nothing to compare"
    if worse:
        text = (f"{', '.join(worse)} is no better than the untrained LLM on validation. {text}. "
                f"{advice or 'Look at the training curve in the metadata and train longer or at another learning rate.'}")
    return dg.AssetCheckResult(
        check_name=BEATS_UNTRAINED, asset_key=dg.AssetKey(asset), passed=not worse,
        severity=dg.AssetCheckSeverity.WARN, description=text,
        metadata={"no_better": ", ".join(worse) or "none"})


def with_checks(result: dg.MaterializeResult, *checks: dg.AssetCheckResult) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata=result.metadata, data_version=result.data_version, check_results=list(checks))
