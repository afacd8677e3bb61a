"""Files known by their bytes, not their names: what a file holds (text, gzip, zstd, Parquet,
binary), its encoding, and its sha256 read in one pass. No Dagster here."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


from models.core.files import file_sha256


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
