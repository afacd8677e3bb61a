"""Ingestion at the scale of Amazon-Book: raw Amazon Reviews 2018 files of 1M, 4M and 10M reviews
through our ingestion (validation, quarantine, commit into a fresh warehouse), then the CoLLM
Amazon-Book split.

What is measured
    ingest  data_prep.ingest_dataset on a fresh file warehouse, as the `raw_data` asset runs it:
            each file is told by its first bytes, then read by DuckDB while a thread inspects it
            (sha256, gzip decompressed to its end; joined before the commit), every line streamed
            through the views of sql/read_lines.sql, sql/stage_json_reviews.sql and
            sql/stage_amazon2018_items.sql into the one table sql/validate_*.sql builds (reasons for
            the bad lines), committed with the quarantine (sql/commit_raw.sql), and the connection closed (DuckDB's checkpoint
            writes the rows to the file). rows/s is review lines read per second of this phase.
    split   what the assets after it run, each on its own connection as they do: build_interactions
            (labels, duplicates, titles), build_domain (the whole dataset) and build_split to
            Parquet, under the `date_cutoff` protocol of CoLLM's Amazon-Book: 2017 only
            (train before 2017-12-01, the rest halved into valid and test), users and items with
            more than 20 ratings in 2017 (min_user_records / min_item_records 21), label = 5 stars.
            rows/s is the reviews loaded (its input) per second of the three steps.
    Each size runs in a FRESH PROCESS (a subprocess of sys.executable), so one size's memory
    does not carry into the next. Inside it the phases are timed with perf_counter; for the
    profile lines each SQL statement is timed under the SQL file it comes from (sql.run is
    wrapped, and the connection) and the inspection thread's pass under its file (the pipeline
    code itself is not changed).

Memory
    peak GiB is the child's VmHWM (/proc/self/status: the kernel's high-water mark of its resident
    memory; exact, and per process), reset (/proc/self/clear_refs) before the ingestion, after the
    imports, and again before the split, so each phase has its own. The per-step peaks of the
    profile are psutil RSS samples every 10 ms (they can miss a spike shorter than that). The
    largest size DuckDB's spill folder reached is sampled alongside.

The synthetic files (numpy, seeded; cached)
    Books.json.gz and meta_Books.json.gz in the real Amazon Reviews 2018 layout (key order,
    "reviewTime" as "MM D, YYYY", day-granular "unixReviewTime", optional "vote" and "style").
    n reviews by n/3.5 users and n/15 items (Amazon Books 2018: 51M reviews, 15M users, 2.9M
    items), each drawn with lognormal(0, 1.8) weights: heavy-tailed, so the 2017 window with
    more than 20 ratings per user and per item keeps ~12 % of 2017's rows (CoLLM's Amazon-Book
    kept ~0.78M of several million). Days from 2014-01-01 to 2018-10-01, more in later years
    (~28 % in 2017). Ratings skewed to 5 stars (64 %). reviewText lognormal around 300
    characters (mean ~550; lines ~800 bytes on average, like Books), words of a Zipf vocabulary.
    0.30 % of the review lines are bad, one defect each, so the quarantine is known exactly:
    truncated JSON 0.08 %, no reviewerID 0.04 %, no asin 0.02 %, "overall" not a number 0.05 %,
    "overall" 0.0 (outside [1, 5]) 0.05 %, "unixReviewTime" not a number 0.06 %. In the meta
    file 0.2 % of the items have no line, 0.1 % an empty title, 0.02 % a truncated line, and
    0.1 % of the lines are exact duplicates. The script checks that the quarantine holds
    exactly the injected defects, by reason (and the reviews of untitled items at the
    interactions stage), and stops with an error otherwise.
    Written in 200,000-line chunks, one gzip stream per file, at gzip level 1 by default
    (`--gzip-level`; compressed in a thread while the next chunk is generated). The files are
    cached under --workdir (default /tmp/llmrec-ingest-scale) in a folder named by size, seed,
    gzip level and generator version; a rerun reuses them (generation is never timed).

DuckDB settings
    The pipeline's own: LLMREC_DUCKDB_MEMORY_LIMIT and LLMREC_DUCKDB_TEMP_DIR (models/config.py
    Settings) apply to every connection, as in the pipeline; unset, DuckDB's defaults (memory_limit
    80 % of the RAM, every core, spilling to <warehouse>.tmp). Each block prints the values in use.
    The child sets its own oom_score_adj to 1000: if memory runs out, the kernel ends the run,
    not another process of the machine.

Reading the output
    A block per size (the files, the quarantine by reason checked against the injected defects,
    what was loaded and split, a content digest of raw_interactions, raw_items and quarantine that
    stays equal when the code changes without changing the rows, and the profile of each phase),
    then the table: reviews, and for the ingestion and the split, rows, seconds, rows/s and peak
    GiB. Goal (10M reviews): ingest under 120 s with a peak under 6 GiB; a miss prints a FAIL
    line and the exit status is 1. The last line is `ingest_10m_rows_per_s: <N>` (or says that
    10M was not among --sizes).

Measured (2-core VM, 23 GiB RAM, DuckDB 1.5.6, DuckDB's default settings, 2026-12-03, load
average 1.6 during the run; 10M reviews = 3.1 GiB of gzip, 7.6 GiB of JSON lines):
       reviews |   ingest s    rows/s  peak GiB |   split s    rows/s  peak GiB
     1,000,000 |        7.2   139,385      0.71 |       2.9   347,956      0.94
     4,000,000 |       27.8   143,724      1.28 |      10.3   388,679      2.25
    10,000,000 |       67.8   147,532      2.41 |      34.4   289,877      4.87
The 10M ingest: the streamed read, parse and validation of the reviews 58 s, with the inspection
thread's pass over them (33 s) beside it; commit 7 s. The split's peak is build_interactions
(sql/interactions.sql: titles joined and duplicates collapsed over all 10M rows). Nothing
spilled. With LLMREC_DUCKDB_MEMORY_LIMIT=3GB: 10M ingest 66 s at 2.41 GiB, split 33 s at 3.33 GiB
(0.98 GiB spilled), the same digest. The same run while two other processes kept both cores busy
(load average 4-7): 10M ingest 205 s (48,672 rows/s), the goal missed on time only; the CPU time
printed per size shows when a run was starved. Before the streamed SQL (a table of every line,
staged and checked copies of every line, the inspection before the read), this script's earlier
version measured ingests of 14.0 / 64.5 / 233.6 s and peaks (of the whole child) of 3.0 / 9.2 /
18.4 GiB, 13.7 GiB spilled at 10M. The rows and the quarantine are unchanged (content digests 876e50faaa31e617,
27f6f5c773f7d9ac, 5e6ac129cf284ba3; at 1M and 4M the tables were also compared row by row with
the earlier code's).

Run from the project root:
    .venv/bin/python benchmarks/ingest_scale.py [--sizes 1000000,4000000,10000000] [--seed 2018]
        [--workdir /tmp/llmrec-ingest-scale] [--gzip-level 1] [--keep-run]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import sql
from models.data import ingest as data_prep
from models.data import content
from models.data import splits
from models.data import warehouse as warehouse_db
from models.config import Settings, load_config

GEN_VERSION = 1  # bump when the generator changes: cached files are keyed by it
DEFAULT_SIZES = "1000000,4000000,10000000"
DEFAULT_WORKDIR = Path("/tmp/llmrec-ingest-scale")
DATASET, DOMAIN = "amazon_books", "books"
GOAL_N, GOAL_S, GOAL_GIB = 10_000_000, 120.0, 6.0
CHUNK = 200_000
GIB = 1024 ** 3

# review defects, one per bad line: the reason validation must give -> share of all lines
DEFECTS = {"malformed_line": 0.0008, "missing_user": 0.0004, "missing_item": 0.0002,
           "non_numeric_rating": 0.0005, "rating_out_of_range": 0.0005, "unparseable_timestamp": 0.0006}
META_MISSING, META_UNTITLED, META_TRUNCATED, META_DUPLICATED = 0.002, 0.001, 0.0002, 0.001
USERS_PER_REVIEW, ITEMS_PER_REVIEW = 1 / 3.5, 1 / 15
SIGMA = 1.8  # lognormal activity / popularity weights
FIRST_DAY, LAST_DAY = dt.date(2014, 1, 1), dt.date(2018, 10, 1)
RATING_P = [0.04, 0.04, 0.08, 0.20, 0.64]

CONFIG = """\
datasets:
  {dataset}:
    format: amazon2018
    source: {source}
    files: {{interactions: Books.json.gz, items: meta_Books.json.gz}}
    rating_range: [1, 5]
    label_threshold: 5          # CoLLM Amazon-Book: 5 stars is positive
    split:                      # CoLLM Amazon-Book: 2017, more than 20 ratings per user and item
      protocol: date_cutoff
      start: 2017-01-01
      train_end: 2017-12-01
      end: 2018-01-01
      min_user_records: 21
      min_item_records: 21
domains:
  {domain}:
    dataset: {dataset}
    item_noun: book
    role: target
"""


# ---------------------------------------------------------------------------------------------
# generating the files


def _strings(fixed: np.ndarray) -> pa.Array:
    """A string array from a (rows, width) uint8 array of ASCII characters."""
    rows, width = fixed.shape
    offsets = np.arange(0, (rows + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(fixed.tobytes())])


def _slices(pool: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> pa.Array:
    """Consecutive pieces of the text pool, one per length, from a random start (no copy)."""
    total = int(lengths.sum())
    if total > len(pool):
        pool = np.tile(pool, total // len(pool) + 1)
    start = int(rng.integers(0, len(pool) - total + 1))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(lengths),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(pool[start:start + total])])


def _text_pool(rng: np.random.Generator, size: int) -> np.ndarray:
    """`size` bytes of lowercase words from a Zipf vocabulary, single spaces, some punctuation."""
    n_words = 30_000
    lengths = np.clip(rng.poisson(4.5, n_words), 1, 14)
    freq = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0, 1.9,
                     1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1])  # English letter frequencies
    letters = rng.choice(np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", np.uint8), size=int(lengths.sum()),
                         p=freq / freq.sum())
    ends = np.cumsum(lengths)
    suffix = rng.choice([b" ", b". ", b", ", b"! "], size=n_words, p=[0.86, 0.09, 0.04, 0.01])
    blob = letters.tobytes()
    vocab = pa.array([blob[e - k:e] + s for e, k, s in zip(ends.tolist(), lengths.tolist(), suffix.tolist())],
                     pa.string())
    freq = 1.0 / np.arange(1, n_words + 1) ** 1.07
    cdf = np.cumsum(freq / freq.sum())
    idx = np.searchsorted(cdf, rng.random(size // 3 + 1), side="right").clip(0, n_words - 1)
    words = pc.take(vocab, pa.array(idx))
    data = np.frombuffer(words.buffers()[2], np.uint8)[:np.frombuffer(words.buffers()[1], np.int32)[-1]]
    assert len(data) >= size
    return data[:size].copy()


def _ids(rng: np.random.Generator, prefix: bytes, width: int, rows: int, alphabet: bytes) -> pa.Array:
    """`rows` ids: the prefix and `width` random characters of the alphabet (reviewerID style)."""
    chars = np.frombuffer(alphabet, np.uint8)
    body = chars[rng.integers(0, len(chars), size=(rows, width))]
    head = np.broadcast_to(np.frombuffer(prefix, np.uint8), (rows, len(prefix)))
    return _strings(np.concatenate([head, body], axis=1))


def _asins(rows: int, rng: np.random.Generator) -> pa.Array:
    """Unique 10-character ASINs: '0' (ISBN-like) or 'B' (Kindle) + 9 distinct digits per item."""
    assert rows < 10 ** 9
    code = (np.arange(rows, dtype=np.int64) * 7919 + 104_729) % 10 ** 9  # a bijection on [0, 1e9)
    digits = (code[:, None] // 10 ** np.arange(8, -1, -1, dtype=np.int64)) % 10 + ord("0")
    head = np.where(rng.random(rows) < 0.3, ord("B"), ord("0")).astype(np.uint8)[:, None]
    return _strings(np.concatenate([head, digits.astype(np.uint8)], axis=1))


def _cdf(rng: np.random.Generator, rows: int) -> np.ndarray:
    w = rng.lognormal(0.0, SIGMA, rows)
    cdf = np.cumsum(w)
    return cdf / cdf[-1]


def _draw(cdf: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    return np.searchsorted(cdf, rng.random(n), side="right").clip(0, len(cdf) - 1)


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*[pa.scalar(p) if isinstance(p, str) else p for p in parts], pa.scalar(""))


def _truncate(lines: pa.Array, mask: np.ndarray, rng: np.random.Generator) -> pa.Array:
    """Cut the masked lines short (a strict prefix of a JSON object is never valid JSON)."""
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return lines
    cut = []
    for line, r in zip(pc.take(lines, pa.array(idx)).to_pylist(), rng.random(len(idx)).tolist()):
        body = line.rstrip("\n")
        cut.append(body[:1 + int(r * (len(body) - 2))] + "\n")
    return pc.replace_with_mask(lines, pa.array(mask), pa.array(cut, pa.string()))


def _body(lines: pa.Array) -> memoryview:
    """The bytes of a string array's values, in order (its lines end with a newline)."""
    offsets = np.frombuffer(lines.buffers()[1], np.int32)[lines.offset:lines.offset + len(lines) + 1]
    return memoryview(lines.buffers()[2])[int(offsets[0]):int(offsets[-1])]


class _GzipWriter:
    """One gzip stream, compressed in a worker thread (zlib releases the GIL) while the caller
    builds the next chunk; at most one chunk waits."""

    def __init__(self, path: Path, level: int):
        self.f = open(path, "wb")
        self.z = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: gzip header and trailer
        self.pool = concurrent.futures.ThreadPoolExecutor(1)
        self.pending = None
        self.raw_bytes = 0

    def write(self, lines: pa.Array) -> None:
        if self.pending is not None:
            self.pending.result()
        data = _body(lines)
        self.raw_bytes += len(data)
        self.pending = self.pool.submit(lambda keep=lines, d=data: self.f.write(self.z.compress(d)))

    def close(self) -> None:
        if self.pending is not None:
            self.pending.result()
        self.f.write(self.z.flush())
        self.f.close()
        self.pool.shutdown()


def _day_strings() -> tuple[pa.Array, pa.Array]:
    """("reviewTime", "unixReviewTime") of every day from FIRST_DAY to LAST_DAY, as Amazon wrote them."""
    days = [FIRST_DAY + dt.timedelta(d) for d in range((LAST_DAY - FIRST_DAY).days + 1)]
    review_time = pa.array([f"{d.month:02d} {d.day}, {d.year}" for d in days])
    epoch = np.array([(d - dt.date(1970, 1, 1)).days * 86_400 for d in days], dtype=np.int64)
    return review_time, pc.cast(pa.array(epoch), pa.string())


def generate(n: int, seed: int, folder: Path, level: int) -> dict:
    """Write folder/source/{Books,meta_Books}.json.gz and folder/manifest.json; return the manifest."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, n])
    n_users, n_items = max(int(n * USERS_PER_REVIEW), 1), max(int(n * ITEMS_PER_REVIEW), 1)
    pool = _text_pool(rng, 192 * 1024 * 1024)
    user_cdf, item_cdf = _cdf(rng, n_users), _cdf(rng, n_items)
    user_ids = _ids(rng, b"A", 13, n_users, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    asins = _asins(n_items, rng)

    # the items without a usable titled meta line: their good reviews are quarantined later
    item_state = rng.choice(4, size=n_items, p=[1 - META_MISSING - META_UNTITLED - META_TRUNCATED,
                                                 META_MISSING, META_UNTITLED, META_TRUNCATED])
    untitled = item_state != 0
    src = folder / "source"
    src.mkdir(parents=True, exist_ok=True)

    # ---- reviews
    review_time, unix_time = _day_strings()
    n_days = len(review_time)
    names = pa.array([f"{a} {b}." for a in ("Amazon Customer", "Kindle Customer", "Mary", "John", "Linda", "David",
                                              "Susan", "Robert", "Karen", "James", "Patricia", "Michael", "Book Lover",
                                              "Nancy", "Paul", "Barbara", "Mark", "Elizabeth", "Tom", "Jennifer")
                      for b in "ABCDEFGHIJKLMNOPRSTW"])
    ratings = pa.array(["1.0", "2.0", "3.0", "4.0", "5.0"])
    verified = pa.array(["true", "false"])
    styles = pa.array([""] + [f'"style": {{"Format:": " {f}"}}, ' for f in
                              ("Paperback", "Kindle Edition", "Hardcover", "Mass Market Paperback", "Audible Audiobook")])
    votes = pa.array([""] + [f'"vote": "{v}", ' for v in ("2", "3", "4", "5", "7", "12", "31", "1,024")])
    vote_p = [0.85] + [0.15 / (len(votes) - 1)] * (len(votes) - 1)
    reasons = list(DEFECTS)
    defect_p = [1 - sum(DEFECTS.values())] + [DEFECTS[r] for r in reasons]
    injected = dict.fromkeys(reasons, 0)
    untitled_reviews = 0
    out = _GzipWriter(src / "Books.json.gz.tmp", level)
    for lo in range(0, n, CHUNK):
        m = min(CHUNK, n - lo)
        u, i = _draw(user_cdf, rng, m), _draw(item_cdf, rng, m)
        day = ((n_days - 1) * rng.power(1.6, m)).astype(np.int64)
        defect = rng.choice(len(defect_p), size=m, p=defect_p)
        for k, r in enumerate(reasons, start=1):
            injected[r] += int((defect == k).sum())
        untitled_reviews += int((untitled[i] & (defect == 0)).sum())
        is_ = {r: pa.array(defect == k) for k, r in enumerate(reasons, start=1)}

        overall = pc.take(ratings, pa.array(rng.choice(5, size=m, p=RATING_P)))
        overall = pc.if_else(is_["non_numeric_rating"], pa.scalar('"five stars"'), overall)
        overall = pc.if_else(is_["rating_out_of_range"], pa.scalar("0.0"), overall)
        user = pc.if_else(is_["missing_user"], pa.scalar(""),
                          _join('"reviewerID": "', pc.take(user_ids, pa.array(u)), '", '))
        asin = pc.if_else(is_["missing_item"], pa.scalar(""), _join('"asin": "', pc.take(asins, pa.array(i)), '", '))
        ts = pc.if_else(is_["unparseable_timestamp"], pa.scalar('"n/a"'), pc.take(unix_time, pa.array(day)))
        text_len = np.clip(rng.lognormal(np.log(300), 1.1, m), 1, 20_000).astype(np.int64)
        summary_len = np.clip(rng.lognormal(np.log(25), 0.6, m), 1, 200).astype(np.int64)
        lines = _join(
            '{"overall": ', overall, ", ",
            pc.take(votes, pa.array(rng.choice(len(votes), size=m, p=vote_p))),
            '"verified": ', pc.take(verified, pa.array((rng.random(m) < 0.15).astype(np.int64))),
            ', "reviewTime": "', pc.take(review_time, pa.array(day)), '", ', user, asin,
            pc.take(styles, pa.array(rng.choice(len(styles), size=m, p=[0.3, 0.3, 0.2, 0.1, 0.05, 0.05]))),
            '"reviewerName": "', pc.take(names, pa.array(rng.integers(0, len(names), m))),
            '", "reviewText": "', _slices(pool, text_len, rng),
            '", "summary": "', _slices(pool, summary_len, rng),
            '", "unixReviewTime": ', ts, "}\n")
        out.write(_truncate(lines, defect == reasons.index("malformed_line") + 1, rng))
    out.close()
    review_bytes = out.raw_bytes

    # ---- meta: one line per item that has one, then exact duplicates of some good lines
    cats = pa.array([json.dumps(["Books"] + c.split("/")) for c in (
        "Literature & Fiction/Genre Fiction", "Literature & Fiction/Contemporary", "Mystery, Thriller & Suspense",
        "Romance/Contemporary", "Science Fiction & Fantasy/Fantasy", "Children's Books", "Teen & Young Adult",
        "Biographies & Memoirs", "History/Americas", "Christian Books & Bibles", "Business & Money",
        "Self-Help", "Cookbooks, Food & Wine", "Health, Fitness & Dieting", "Politics & Social Sciences")])
    listed = np.flatnonzero(item_state != 1)
    k = len(listed)
    title = pc.if_else(pa.array(item_state[listed] == 2), pa.scalar(""),
                       _slices(pool, rng.integers(8, 80, k), rng))
    meta = _join('{"category": ', pc.take(cats, pa.array(rng.integers(0, len(cats), k))),
                 ', "tech1": "", "description": ["', _slices(pool, rng.integers(40, 600, k), rng),
                 '"], "fit": "", "title": "', title,
                 '", "also_buy": [], "brand": "', pc.take(names, pa.array(rng.integers(0, len(names), k))),
                 '", "rank": "', pc.cast(pa.array(rng.integers(1, 9_000_000, k)), pa.string()),
                 ' in Books (", "also_view": [], "main_cat": "Books", "price": "$',
                 pc.cast(pa.array(rng.integers(99, 4999, k)), pa.string()),
                 '", "asin": "', pc.take(asins, pa.array(listed)), '"}\n')
    meta = _truncate(meta, item_state[listed] == 3, rng)
    good = np.flatnonzero(item_state[listed] == 0)
    dup = rng.choice(good, size=int(len(good) * META_DUPLICATED), replace=False) if len(good) else good
    meta_out = _GzipWriter(src / "meta_Books.json.gz.tmp", level)
    meta_out.write(meta)
    if len(dup):
        meta_out.write(pc.take(meta, pa.array(dup)))
    meta_out.close()

    for name in ("Books.json.gz", "meta_Books.json.gz"):
        os.replace(src / (name + ".tmp"), src / name)
    manifest = {
        "reviews": n, "users": n_users, "items": n_items, "seed": seed, "gzip_level": level,
        "generator_version": GEN_VERSION, "injected": injected, "meta_lines": k + len(dup),
        "meta": {"malformed_line": int((item_state == 3).sum()), "item_without_title": int((item_state == 2).sum()),
                 "no_line": int((item_state == 1).sum()), "duplicates": len(dup)},
        "untitled_item_reviews": untitled_reviews,
        "review_bytes": review_bytes, "review_gz_bytes": (src / "Books.json.gz").stat().st_size,
        "meta_gz_bytes": (src / "meta_Books.json.gz").stat().st_size,
        "generate_s": time.perf_counter() - t0}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def cached_files(n: int, seed: int, workdir: Path, level: int) -> tuple[Path, dict, bool]:
    """(folder, manifest, generated now): the cached files of (n, seed, level), written if missing."""
    folder = workdir / f"amazon2018-n{n}-seed{seed}-gz{level}-v{GEN_VERSION}"
    manifest = folder / "manifest.json"
    if manifest.exists():
        return folder, json.loads(manifest.read_text()), False
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted generation
    return folder, generate(n, seed, folder, level), True


# ---------------------------------------------------------------------------------------------
# the timed child


class Profile:
    """Wall time and sampled peak RSS per label; a thread samples RSS (and the spill folder)."""

    def __init__(self, interval: float = 0.01):
        import psutil

        self.proc, self.interval = psutil.Process(), interval
        self.times: dict[str, float] = {}
        self.peaks: dict[str, int] = {}
        self.labels: list[str] = []
        self.spill_dirs: set[str] = set()
        self.spill_peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _spill_bytes(self) -> int:
        total = 0
        for d in list(self.spill_dirs):
            try:
                with os.scandir(d) as it:
                    total += sum(e.stat().st_size for e in it if e.is_file())
            except OSError:
                pass
        return total

    def _run(self):
        tick = 0
        while not self._stop.is_set():
            rss = self.proc.memory_info().rss
            with self._lock:
                for label in self.labels:
                    self.peaks[label] = max(self.peaks.get(label, 0), rss)
            tick += 1
            if tick % 10 == 0 and self.spill_dirs:
                self.spill_peak = max(self.spill_peak, self._spill_bytes())
            self._stop.wait(self.interval)

    @contextlib.contextmanager
    def timed(self, label: str):
        rss = self.proc.memory_info().rss
        with self._lock:
            self.labels.append(label)
            self.peaks[label] = max(self.peaks.get(label, 0), rss)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            rss = self.proc.memory_info().rss
            with self._lock:
                self.times[label] = self.times.get(label, 0.0) + time.perf_counter() - t0
                self.peaks[label] = max(self.peaks[label], rss)
                self.labels.remove(label)

    def stop(self):
        self._stop.set()
        self._thread.join()


class TimedConnection:
    """Times every statement run through it under the SQL file it comes from (or its first
    words); everything else is the DuckDB connection's own."""

    def __init__(self, con, prof: Profile, phase: str):
        self._con, self._prof, self._phase = con, prof, phase
        self.sql_file: str | None = None

    def execute(self, query, parameters=None):
        label = f"{self._phase}/{self.sql_file or ' '.join(str(query).split()[:2])}"
        with self._prof.timed(label):
            return self._con.execute(query, parameters)

    def __getattr__(self, name):
        return getattr(self._con, name)


def peak_rss(reset: bool = False) -> int:
    """This process's peak RSS (VmHWM, Linux) since exec or the last reset; `reset` then starts a
    new high-water mark (writing 5 to /proc/self/clear_refs)."""
    peak = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    return peak


def cpu_s() -> float:
    """CPU seconds of this process so far, user and system, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(n: int, source: Path, run_dir: Path) -> None:
    """One size in this fresh process: ingest into a fresh warehouse, then the split; RESULT json."""
    try:  # if memory runs out, the kernel should end this run, not another process of the machine
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        pass
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "datasets.yaml"
    config.write_text(CONFIG.format(dataset=DATASET, domain=DOMAIN, source=source))
    cfg = load_config(config)
    ds, dom = cfg.datasets[DATASET], cfg.domains[DOMAIN]
    env = Settings.from_env()  # LLMREC_DUCKDB_MEMORY_LIMIT / LLMREC_DUCKDB_TEMP_DIR, as the pipeline reads them
    warehouse = run_dir / "warehouse.duckdb"
    for p in run_dir.glob("warehouse.duckdb*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    prof = Profile()

    # profiling only: each statement is timed under its SQL file, the inspection thread's pass under its file
    real_run, real_inspect_file = sql.run, content.inspect_file

    def run(con, name, **params):
        if not isinstance(con, TimedConnection):
            return real_run(con, name, **params)
        con.sql_file = name
        try:
            return real_run(con, name, **params)
        finally:
            con.sql_file = None

    def inspect_file(path, *args, **kwargs):
        with prof.timed(f"ingest/inspect {Path(path).name} (thread)"):
            return real_inspect_file(path, *args, **kwargs)

    sql.run, content.inspect_file = run, inspect_file
    settings = None

    def phase(name: str, work):
        nonlocal settings
        with prof.timed(name):
            con = TimedConnection(warehouse_db.connect(warehouse, memory_limit=env.duckdb_memory_limit,
                                                    temp_directory=env.duckdb_temp_dir), prof, name)
            if settings is None:
                settings = dict(zip(("memory_limit", "temp_directory", "threads"), con.execute(
                    "SELECT current_setting('memory_limit'), current_setting('temp_directory'), "
                    "current_setting('threads')").fetchone()))
                prof.spill_dirs.add(settings["temp_directory"])
            try:
                out = work(con)
            finally:
                with prof.timed(f"{name}/close (checkpoint)"):
                    con.close()
        return out

    load = [os.getloadavg()[0]]
    cpu = [cpu_s()]
    peak_rss(reset=True)  # the imports are not ingestion
    rep = phase("ingest", lambda con: data_prep.ingest_dataset(con, ds))
    ingest_peak = peak_rss(reset=True)
    cpu.append(cpu_s())
    inter = phase("interactions", lambda con: data_prep.build_interactions(con, ds))
    phase("domain", lambda con: splits.build_domain(con, dom))
    split_path = run_dir / "split.parquet"
    stats = phase("split", lambda con: splits.build_split(con, dom.name, dom.split, split_path,
                                                             warm_threshold=cfg.warm_threshold,
                                                             history_length=cfg.history_length))
    split_peak = peak_rss()
    cpu.append(cpu_s())
    load.append(os.getloadavg()[0])
    prof.stop()
    con = warehouse_db.connect(warehouse, read_only=True)
    by_stage = {f"{s}:{k}:{r}": c for s, k, r, c in con.execute(
        "SELECT stage, kind, reason, count(*) FROM quarantine GROUP BY ALL").fetchall()}
    # an order-free digest of what ingestion wrote: equal digests, equal rows (to compare versions of the code)
    digest = hashlib.sha256(repr([con.execute(q).fetchone() for q in (
        "SELECT count(*), sum(hash(dataset, user_id, item_id, rating, ts, source_file, source_row)) FROM raw_interactions",
        "SELECT count(*), sum(hash(dataset, item_id, title, categories, source_file, source_row)) FROM raw_items",
        "SELECT count(*), sum(hash(dataset, stage, kind, source_file, source_row, reason, detail, raw)) FROM quarantine",
    )]).encode()).hexdigest()[:16]
    con.close()
    print("RESULT " + json.dumps({
        "n": n, "settings": settings, "read": rep.interaction_rows_read, "loaded": rep.interactions_loaded,
        "items_read": rep.item_rows_read, "items_loaded": rep.items_loaded,
        "duplicate_items": rep.duplicate_items_collapsed, "quarantine": by_stage,
        "interactions": inter, "split_rows": {s: stats[s]["rows"] for s in splits.SPLITS},
        "split_users": stats["train"].get("users", 0), "split_items": stats["train"].get("items", 0),
        "times": prof.times, "peaks": prof.peaks, "ingest_peak": ingest_peak, "split_peak": split_peak,
        "spill_peak": prof.spill_peak, "digest": digest, "ingest_cpu": cpu[1] - cpu[0], "split_cpu": cpu[2] - cpu[1],
        "load": load, "warehouse_bytes": warehouse.stat().st_size}), flush=True)


# ---------------------------------------------------------------------------------------------
# the parent: one fresh process per size, a block per size, then the table


def _check_quarantine(r: dict, m: dict) -> list[str]:
    """Differences between the quarantine and the injected defects (empty: identical)."""
    q = r["quarantine"]
    want = {f"raw:interaction:{k}": v for k, v in m["injected"].items() if v}
    want.update({f"raw:item:{k}": m["meta"][k] for k in ("malformed_line", "item_without_title") if m["meta"][k]})
    if m["untitled_item_reviews"]:
        want["interactions:interaction:item_without_title"] = m["untitled_item_reviews"]
    return [f"{k}: quarantined {q.get(k, 0):,}, injected {want.get(k, 0):,}"
            for k in sorted(set(q) | set(want)) if q.get(k, 0) != want.get(k, 0)]


def _profile_line(r: dict, phase: str) -> str:
    times, peaks = r["times"], r["peaks"]
    parts = sorted(((k.split("/", 1)[1], t, peaks.get(k, 0)) for k, t in times.items()
                    if k.startswith(phase + "/")), key=lambda x: -x[1])
    shown = [f"{name} {t:.1f} s ({p / GIB:.1f} GiB)" for name, t, p in parts if t >= 0.05]
    return f"  {phase} {times[phase]:.1f} s: " + (", ".join(shown) or "no step of 0.05 s or more")


def _split_s(r: dict) -> float:
    return r["times"]["interactions"] + r["times"]["domain"] + r["times"]["split"]


def report_size(r: dict, m: dict, gen_note: str) -> None:
    """Print one size's block: the files, what was quarantined (checked against what was injected),
    what was loaded and split, and the profile of each phase."""
    n = r["n"]
    inter_q = {k.split(":")[2]: v for k, v in r["quarantine"].items() if k.startswith("raw:interaction:")}
    quarantined = sum(inter_q.values())
    print(f"\n== {n:,} reviews: Books.json.gz {m['review_gz_bytes'] / GIB:.2f} GiB (gzip level {m['gzip_level']}; "
          f"{m['review_bytes'] / GIB:.2f} GiB of JSON lines, {m['review_bytes'] / n:.0f} bytes a line), "
          f"meta {m['meta_gz_bytes'] / 1024 ** 2:.0f} MiB; {m['users']:,} users, {m['items']:,} items; {gen_note}")
    s = r["settings"]
    print(f"DuckDB: memory_limit {s['memory_limit']}, temp_directory {s['temp_directory']}, threads {s['threads']}; "
          f"spill folder peak {r['spill_peak'] / GIB:.2f} GiB")
    print(f"CPU time (user + system, all threads): ingest {r['ingest_cpu']:.1f} s in {r['times']['ingest']:.1f} s, "
          f"split {r['split_cpu']:.1f} s in {_split_s(r):.1f} s; load average {r['load'][0]:.1f} at the start, "
          f"{r['load'][1]:.1f} at the end (on {os.cpu_count()} cores: above that, other processes took CPU time)")
    print("quarantined by reason: " + ", ".join(f"{k} {v:,}" for k, v in sorted(inter_q.items())) +
          f" ({quarantined / r['read']:.2%} of the lines); items: " +
          ", ".join(f"{k.split(':')[2]} {v:,}" for k, v in sorted(r["quarantine"].items()) if k.startswith("raw:item:")) +
          f"; at the interactions stage, reviews of untitled items: "
          f"{r['quarantine'].get('interactions:interaction:item_without_title', 0):,}")
    bad = _check_quarantine(r, m)
    if bad:
        raise SystemExit(f"quarantine differs from the injected defects ({n:,} reviews): " + "; ".join(bad))
    print(f"quarantine = the injected defects, by reason. Loaded {r['loaded']:,} reviews and {r['items_loaded']:,} "
          f"items ({r['duplicate_items']:,} duplicate meta lines collapsed); {r['interactions']['rows']:,} "
          f"interactions after {r['interactions']['duplicates_collapsed']:,} duplicates; split "
          + ", ".join(f"{s} {r['split_rows'][s]:,}" for s in splits.SPLITS)
          + f" ({r['split_users']:,} train users, {r['split_items']:,} train items); warehouse "
          f"{r['warehouse_bytes'] / GIB:.2f} GiB, content digest {r['digest']}")
    print("profile (time, sampled peak RSS while it ran; the inspection thread runs beside the reads):")
    for ph in ("ingest", "interactions", "domain", "split"):
        print(_profile_line(r, ph))


def print_table(results: list[dict]) -> list[str]:
    """The table of every size; returns the FAIL lines of the goal (10M: ingest < 120 s, peak < 6 GiB)."""
    print(f"\n{'':>11} | {'ingest':^44} | {'split (labels + domain + split)':^44}")
    print(f"{'reviews':>11} | {'rows read':>11} {'s':>7} {'rows/s':>10} {'peak GiB':>11} | "
          f"{'rows in':>11} {'s':>7} {'rows/s':>10} {'peak GiB':>11}")
    fails = []
    for r in results:
        n, ingest_s, split_s = r["n"], r["times"]["ingest"], _split_s(r)
        print(f"{n:>11,} | {r['read']:>11,} {ingest_s:>7.1f} {r['read'] / ingest_s:>10,.0f} "
              f"{r['ingest_peak'] / GIB:>11.2f} | {r['loaded']:>11,} {split_s:>7.1f} "
              f"{r['loaded'] / split_s:>10,.0f} {r['split_peak'] / GIB:>11.2f}")
        if n == GOAL_N and (ingest_s >= GOAL_S or r["ingest_peak"] >= GOAL_GIB * GIB):
            fails.append(f"FAIL: {n:,} reviews: ingest {ingest_s:.1f} s (goal < {GOAL_S:.0f} s), "
                         f"peak {r['ingest_peak'] / GIB:.2f} GiB (goal < {GOAL_GIB:.0f} GiB)")
    print("rows read: review lines (quarantined ones included); rows in: the reviews loaded. peak GiB: the "
          "process's peak resident memory during the phase (VmHWM)")
    return fails


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help=f"reviews per run, comma-separated (default {DEFAULT_SIZES})")
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                    help="generated files (kept between runs) and the runs' warehouses (removed)")
    ap.add_argument("--gzip-level", type=int, default=1, choices=range(1, 10), help="of the generated files (default 1)")
    ap.add_argument("--keep-run", action="store_true", help="keep each run's warehouse and split")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args.child, args.source, args.run_dir)
        return

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    root = Path(__file__).resolve().parent.parent
    fails, results = [], []
    for n in sizes:
        t0 = time.perf_counter()
        folder, manifest, fresh = cached_files(n, args.seed, args.workdir, args.gzip_level)
        note = (f"generated in {time.perf_counter() - t0:.0f} s" if fresh
                else f"cached in {folder} (generated in {manifest['generate_s']:.0f} s)")
        run_dir = args.workdir / f"run-{n}-{os.getpid()}"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), "--source", str(folder / "source"),
               "--run-dir", str(run_dir)]
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=root)
        finally:
            if not args.keep_run:
                shutil.rmtree(run_dir, ignore_errors=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(proc.stdout)
            why = " (killed: out of memory?)" if proc.returncode in (-9, 137) else ""
            fails.append(f"FAIL: {n:,} reviews: the run exited with status {proc.returncode}{why}")
            continue
        results.append(json.loads(lines[-1][len("RESULT "):]))
        report_size(results[-1], manifest, note)
        sys.stdout.flush()
    fails = (print_table(results) if results else []) + fails
    for line in fails:
        print(line)
    at_goal = [r for r in results if r["n"] == GOAL_N]
    if at_goal:
        print(f"ingest_10m_rows_per_s: {at_goal[0]['read'] / at_goal[0]['times']['ingest']:.0f}")
    else:
        print(f"ingest_10m_rows_per_s: not measured (10,000,000 was not among --sizes {args.sizes})")
    if fails:
        sys.exit(1)


if __name__ == "__main__":
    main()
