"""What a user's terminal shows when something goes wrong: one line that says what and what to do,
never a traceback for a problem with their config, their data or the order of their commands.

- `user_message(exc)`: the one-line (or one-line-per-problem) message of an error a user can fix (a
  `ConfigError`, a missing upstream artifact, a failed Dagster step or blocking check, an unknown
  asset or partition); None for anything else, which keeps its traceback (a bug, to be reported).
- `install_excepthook()`: the dagster CLI (`dagster asset materialize -m orchestration.definitions
  ...`) imports the code location in its own process; an error of that kind which escapes the CLI
  prints as `error: <message>` and exits with status 1.
- `install_short_failures()`: a step that failed deterministically (our `Failure`, already one line
  with its fix; a failed blocking check) is logged to the console without Dagster's stack trace; the
  UI's event log keeps the full error either way. Other errors keep theirs.
- `guarded(main)`: the same for an entry point of ours (`make demo`)."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Callable

import dagster as dg

from models.config import ConfigError, Settings
from models.data.workspace import MissingArtifact


def user_message(exc: BaseException) -> str | None:
    """The message a user can act on, or None when `exc` is a bug (its traceback is worth having)."""
    if isinstance(exc, (ConfigError, MissingArtifact)):
        return str(exc)
    if isinstance(exc, dg.Failure):
        return exc.description or str(exc)
    name = type(exc).__name__
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    if name == "DagsterAssetCheckFailedError":
        return f"{' '.join(str(exc).split())} (the check's description is in the run log and on the asset's Checks tab)"
    if name in ("DagsterInvalidSubsetError", "DagsterUnknownPartitionError"):
        if "partition" not in first.lower():
            return first
        if not os.environ.get("DAGSTER_HOME"):
            return (f"{first} DAGSTER_HOME is not set, so the CLI ran on a temporary instance that knows no "
                    "domain: `export DAGSTER_HOME=$PWD/.dagster_home` (the instance of `make demo` and `make ui`) "
                    "and run it again.")
        return f"{first} The domains are the keys of `domains:` in {Settings.from_env().config_path}."
    if name == "DagsterRunNotFoundError" or name == "DagsterInvalidConfigError":
        return first
    return None


def install_excepthook() -> None:
    """Print the errors of `user_message` as one `error:` line (exit status 1); others as before."""
    previous = sys.excepthook
    if getattr(previous, "_llmrec", False):
        return

    def hook(kind, exc, tb):
        message = user_message(exc) if isinstance(exc, Exception) else None
        if message is None:
            return previous(kind, exc, tb)
        print(f"error: {message}", file=sys.stderr, flush=True)

    hook._llmrec = True
    sys.excepthook = hook


def guarded(main: Callable[..., int]) -> Callable[..., int]:
    """An entry point that prints a user's error as `error: <message>` and returns 1 instead of raising."""
    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except Exception as exc:
            message = user_message(exc)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr, flush=True)
            return 1
    return run


# the first line of a deterministic failure's error in Dagster's event message
_DETERMINISTIC_ERROR = re.compile(
    r"^dagster\._core\.(?:definitions\.events\.Failure|errors\.DagsterAssetCheckFailedError): ", re.M)


def short_failure(message: object) -> object:
    """An event message without the stack trace when its error is deterministic; others unchanged."""
    if isinstance(message, str) and "\nStack Trace:" in message and _DETERMINISTIC_ERROR.search(message):
        return message.split("\nStack Trace:", 1)[0].rstrip()
    return message


def install_short_failures() -> None:
    """Every log record of this process made from a deterministic failure's event loses its stack trace.

    A log record factory, because the CLI's runs log through Dagster's default console logger (a run
    config without `loggers` gets that one whatever the definitions say) and run workers log to the
    terminal of `make ui`; the event log keeps the structured error with its stack for the UI."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_llmrec", False):
        return

    def factory(name, level, fn, lno, msg, *args, **kwargs):
        return previous(name, level, fn, lno, short_failure(msg), *args, **kwargs)

    factory._llmrec = True
    logging.setLogRecordFactory(factory)
