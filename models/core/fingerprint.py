"""Content fingerprints of what decides a result (model weights, data, settings, code), so a
checkpoint or a finished artifact is only ever resumed or reused by a run with the same inputs."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import numpy as np
from models.core.files import file_sha256


def digest(obj: Any) -> str:
    """sha256 of a JSON-able value in canonical form (sorted keys; tuples as lists)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def data_digest(rows: Sequence[Sequence[int]] | Sequence[str], labels: Sequence | np.ndarray | None = None) -> str:
    """sha256 of prompts (token id lists or text) and their labels, order included."""
    h = hashlib.sha256()
    rows = list(rows)
    if rows and isinstance(rows[0], str):
        for r in rows:
            h.update(r.encode())
            h.update(b"\0")
    else:
        h.update(np.array([len(r) for r in rows], dtype=np.int64).tobytes())
        if rows:
            h.update(np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]).tobytes())
    if labels is not None:
        h.update(b"labels")
        h.update(np.asarray(labels, dtype=np.float64).tobytes())
    return h.hexdigest()


def code_digest(*modules: ModuleType | type) -> str:
    """sha256 of the source of the modules (or classes) whose code decides the result."""
    h = hashlib.sha256()
    for m in modules:
        h.update(inspect.getsource(m).encode())
    return h.hexdigest()


def folder_digest(folder: Path, exclude: tuple[str, ...] = ()) -> str:
    """sha256 over every file of a folder (relative names and contents), but the relative names in
    `exclude`."""

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and str(p.relative_to(folder)) not in exclude)
    return digest([[str(p.relative_to(folder)), file_sha256(p)] for p in files])


def set_aside(path: Path) -> Path:
    """Move another run's checkpoint out of the way (to `<name>.set-aside`, replacing an older one),
    kept for inspection rather than deleted."""
    import shutil

    path = Path(path)
    aside = path.with_name(path.name + ".set-aside")
    if aside.is_dir():
        shutil.rmtree(aside)
    elif aside.exists():
        aside.unlink()
    path.rename(aside)
    return aside


def read_json(path: Path) -> dict | None:
    """A JSON record, or None when it is missing or unreadable (a half-written file counts as missing)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json(path: Path, payload: dict) -> Path:
    """Written beside, then renamed: a reader sees the old record or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)
    return path
