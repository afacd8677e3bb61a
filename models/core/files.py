"""File utilities every layer uses: content hashes, folders swapped into place whole, Parquet written
atomically. No Dagster, no torch."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import polars as pl


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fresh_dir(final: Path) -> Path:
    """An empty folder beside `final` to write into before `replace_dir` moves it into place."""

    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp: Path, final: Path) -> Path:
    """Swap a finished folder into place: the old one is renamed aside first and removed last, so a
    crash leaves either the old or the new folder (and the other beside it), never half of one."""

    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> str:
    """Write beside the final name, then rename: a reader never sees half a file. Returns sha256."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    df.write_parquet(tmp)
    tmp.replace(path)
    return file_sha256(path)
