"""Split protocols, histories and warm/cold flags on small hand-made interaction tables."""

from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest

from models.data import splits
from models.data import warehouse
from models.config import SplitSpec


def ts(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp())


def load(rows):
    """rows: (user, item, day or unix seconds, label)."""
    con = warehouse.connect(":memory:")
    con.executemany(
        "INSERT INTO domain_interactions VALUES ('d', ?, ?, ?, ?, ?, ?)",
        [(u, i, 5.0 if y else 1.0, t if isinstance(t, int) else ts(t), y, f"T{i}") for u, i, t, y in rows])
    return con


def split(con, spec, tmp_path, origin=None, **kw):
    out = tmp_path / "split.parquet"
    splits.build_split(con, "d", spec, out, origin=origin, **kw)
    rows = pq.read_table(out).to_pylist()
    return {(r["user_id"], r["item_id"]): r for r in rows}


LOO = SplitSpec("leave_one_out", {"min_user_records": 3})


def test_history_is_strictly_earlier_positives_across_splits(tmp_path):
    con = load([
        ("u", "a", 100, 1), ("u", "b", 200, 1), ("u", "e", 200, 1), ("u", "c", 200, 0),
        ("u", "n", 250, 0), ("u", "d", 300, 1), ("u", "f", 400, 1),
    ])
    r = split(con, LOO, tmp_path)
    assert r[("u", "a")]["history_item_ids"] == []
    # same timestamp: b and e are not each other's history, and the negative c sees only a
    assert r[("u", "b")]["history_item_ids"] == ["a"]
    assert r[("u", "e")]["history_item_ids"] == ["a"]
    assert r[("u", "c")]["history_item_ids"] == ["a"]
    assert r[("u", "n")]["history_item_ids"] == ["a", "b", "e"]  # ties ordered by item id
    assert r[("u", "d")]["history_item_ids"] == ["a", "b", "e"]
    items = {r["item_id"]: r["title"] for r in pq.read_table(tmp_path / "items.parquet").to_pylist()}
    assert items["e"] == "Te" and len(items) == 7
    # leave-one-out: f is test, d valid; the test row's history reaches into valid
    assert (r[("u", "f")]["split"], r[("u", "d")]["split"]) == ("test", "valid")
    assert r[("u", "f")]["history_item_ids"] == ["a", "b", "e", "d"]


def test_history_keeps_the_last_n_oldest_first(tmp_path):
    con = load([("u", f"i{k:02d}", 100 + k, 1) for k in range(15)])
    r = split(con, LOO, tmp_path, history_length=10)
    assert r[("u", "i14")]["history_item_ids"] == [f"i{k:02d}" for k in range(4, 14)]
    r = split(con, LOO, tmp_path, history_length=3)
    assert r[("u", "i14")]["history_item_ids"] == ["i11", "i12", "i13"]


def test_leave_one_out_drops_short_users_and_flags_cold(tmp_path):
    con = load([
        ("u1", "a", 1, 1), ("u1", "b", 2, 1), ("u1", "c", 3, 1), ("u1", "z", 4, 0),
        ("u2", "a", 1, 1), ("u2", "b", 2, 0),  # two rows: fewer than min_user_records
    ])
    r = split(con, LOO, tmp_path)
    assert ("u2", "a") not in r
    assert [r[("u1", i)]["split"] for i in "abcz"] == ["train", "train", "valid", "test"]
    assert r[("u1", "z")]["not_cold"] is False  # item z never appears in train
    assert r[("u1", "b")]["not_cold"] is True


def test_month_window_drops_rows_outside_windows_even_from_history(tmp_path):
    spec = SplitSpec("month_window", {"train_slots": [1, 1], "valid_slots": [2, 2], "test_slots": [3, 3],
                                      "origin": None})
    con = load([
        ("u", "early", "2000-01-10", 1),    # slot 0: dropped, not history
        ("u", "tr", "2000-02-10", 1),        # slot 1: train
        ("u", "va", "2000-03-31T23:59:59", 0),  # slot 2: valid (UTC month boundary)
        ("u", "te", "2000-04-01", 1),        # slot 3: test
        ("u", "late", "2000-05-01", 1),      # slot 4: dropped
    ])
    origin = splits.origin_month(con, "domain_interactions", "domain", "d", spec)
    r = split(con, spec, tmp_path, origin=origin)
    assert set(r) == {("u", "tr"), ("u", "va"), ("u", "te")}
    assert [r[("u", i)]["split"] for i in ("tr", "va", "te")] == ["train", "valid", "test"]
    assert [r[("u", i)]["slot"] for i in ("tr", "va", "te")] == [1, 2, 3]
    assert r[("u", "te")]["history_item_ids"] == ["tr"]


def test_date_cutoff_filters_once_and_halves_the_holdout(tmp_path):
    spec = SplitSpec("date_cutoff", {"start": "2017-01-01", "train_end": "2017-12-01", "end": "2018-01-01",
                                     "min_user_records": 3, "min_item_records": 1})
    rows = [("u1", f"i{k}", f"2017-0{k + 1}-05", 1) for k in range(3)]
    rows += [("u1", "h1", "2017-12-02", 1), ("u1", "h2", "2017-12-03", 0),
             ("u1", "h3", "2017-12-04", 1), ("u1", "h4", "2017-12-05", 1)]
    rows += [("u2", "i0", "2017-03-01", 1), ("u2", "i1", "2017-12-09", 1)]  # u2 has 2 rows: filtered
    rows += [("u1", "old", "2016-12-31", 1), ("u1", "new", "2018-01-01", 1)]  # outside the window
    con = load(rows)
    r = split(con, spec, tmp_path)
    assert {k[0] for k in r} == {"u1"}
    assert ("u1", "old") not in r and ("u1", "new") not in r
    assert [r[("u1", f"h{k}")]["split"] for k in (1, 2, 3, 4)] == ["valid", "valid", "test", "test"]
    assert all(r[("u1", f"i{k}")]["split"] == "train" for k in range(3))


def test_warm_threshold_counts_train_records_of_user_and_item(tmp_path):
    # four users each rate item x in train (x has 4 train records); user u0 has 4 train rows
    rows = [(f"u{k}", "x", 10 + k, 1) for k in range(4)]
    rows += [("u0", f"y{k}", 20 + k, 1) for k in range(3)]
    rows += [(f"u{k}", "v", 40 + k, 1) for k in range(4)]  # valid rows
    rows += [(f"u{k}", "t", 50 + k, 1) for k in range(4)]  # test rows
    con = load(rows)
    out = tmp_path / "s.parquet"
    splits.build_split(con, "d", LOO, out, warm_threshold=3)
    train = [r for r in pq.read_table(out).to_pylist() if r["split"] == "train"]
    by = {(r["user_id"], r["item_id"]): r for r in train}
    assert by[("u0", "x")]["warm"] is True  # u0: 4 train records, x: 4
    assert by[("u1", "x")]["warm"] is False  # u1 has 1 train record
    splits.build_split(con, "d", LOO, out, warm_threshold=4)
    assert not any(r["warm"] for r in pq.read_table(out).to_pylist())


def test_split_file_is_replaced_atomically(tmp_path):
    con = load([("u", "a", 1, 1), ("u", "b", 2, 1), ("u", "c", 3, 1)])
    out = tmp_path / "split.parquet"
    splits.build_split(con, "d", LOO, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.parquet", "split.parquet"]


def test_bad_history_length_is_a_clear_error(tmp_path):
    con = load([("u", "a", 1, 1), ("u", "b", 2, 1), ("u", "c", 3, 1)])
    with pytest.raises(ValueError, match="history_length"):
        splits.build_split(con, "d", LOO, tmp_path / "s.parquet", history_length=0)
