"""Tiny files laid out like the papers' public downloads, for the example configs (config/examples/):
Amazon Reviews 2018 `Books_5.json.gz` + `meta_Books.json.gz` (CoLLM's Amazon-Book) and Amazon Reviews
2014 `reviews_<Category>_5.json.gz` + `meta_<Category>.json.gz` (RecCocktail). The lines carry the
real files' fields (and the 2014 metadata is written by `str(dict)`, as published), with a few bad
lines each. Each writer returns the good rows it wrote, so a test can compute the split the protocol
must give without the pipeline."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Review:
    user: str
    item: str
    rating: float
    ts: int


def _day(ts: int) -> str:
    d = datetime.fromtimestamp(ts, tz=timezone.utc)
    return f"{d.month:02d} {d.day}, {d.year}"


def _ts(year: int, rng: np.random.Generator, months: tuple[int, int] = (1, 12)) -> int:
    start = datetime(year, months[0], 1, tzinfo=timezone.utc).timestamp()
    end = datetime(year + (months[1] == 12), months[1] % 12 + 1, 1, tzinfo=timezone.utc).timestamp()
    return int(rng.integers(int(start), int(end)) // 86400 * 86400)  # day granular, as unixReviewTime is


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def write_amazon_book(folder: Path, seed: int = 0) -> list[Review]:
    """`Books_5.json.gz` and `meta_Books.json.gz` (Amazon Reviews 2018) for CoLLM's Amazon-Book protocol:
    90 readers who each rate 24 of 70 books in 2017 (about 31 ratings a book: most above the protocol's 20)
    and 5 more in 2016 or 2018 (outside the year), 8 readers with 6 ratings each of 6 other books (below it).
    One of those books has no title; 3 review lines and 1 meta line are bad."""
    rng = np.random.default_rng(seed)
    books = [f"{i:010d}" for i in range(1, 77)]
    taste_u, taste_i = rng.normal(size=(98, 3)), rng.normal(size=(76, 3))
    rows: list[Review] = []
    for u in range(98):
        user = f"A{u:03d}BOOKREADER"
        picks = rng.choice(70, 29, replace=False) if u < 90 else 70 + rng.choice(6, 6, replace=False)
        for n, i in enumerate(picks):
            like = taste_u[u] @ taste_i[i] + rng.normal(scale=0.5) > 0
            year = 2017 if n >= 5 or u >= 90 else (2016 if n < 3 else 2018)
            rows.append(Review(user, books[i], 5.0 if like else float(rng.integers(1, 5)), _ts(year, rng)))
    lines = []
    for r in rows:
        lines.append(json.dumps({"overall": r.rating, "verified": True, "reviewTime": _day(r.ts), "reviewerID": r.user,
                                 "asin": r.item, "style": {"Format:": " Paperback"}, "reviewerName": "A reader",
                                 "reviewText": "Read it in \"one\" sitting.", "summary": "Five Stars",
                                 "unixReviewTime": r.ts}))
    lines.insert(7, '{"overall": 5.0, "verified": true, "reviewerID": "A001BOOKREADER", "asin": "00000')  # cut
    lines.insert(50, json.dumps({"overall": "five", "reviewerID": "A002BOOKREADER", "asin": books[0],
                                 "unixReviewTime": 1500000000}))
    lines.insert(90, json.dumps({"overall": 4.0, "asin": books[1], "unixReviewTime": 1500000000}))  # no reviewerID
    _write(folder / "Books_5.json.gz", lines)
    meta = []
    for i, asin in enumerate(books):
        item = {"category": ["Books", "Literature & Fiction", "Genre Fiction"], "tech1": "", "description": ["A novel."],
                "fit": "", "title": f"The Book of Number {i} – a Novel" if i != 73 else "", "also_buy": [],
                "image": [], "tech2": "", "brand": "", "feature": [], "rank": f"{i * 1000 + 17:,} in Books (",
                "also_view": [], "main_cat": "Books", "similar_item": "", "date": "", "price": "$9.99", "asin": asin}
        meta.append(json.dumps(item, ensure_ascii=False))
    meta.insert(3, '{"category": ["Books"], "title": "Broken')
    _write(folder / "meta_Books.json.gz", meta)
    return [r for r in rows if r.item != books[73]]  # the untitled book's reviews go to quarantine


def amazon_book_split(rows: list[Review]) -> dict[str, int]:
    """CoLLM's Amazon-Book split of `rows` computed here, not by the pipeline: 2017, users and items with more
    than 20 ratings in 2017 (one pass), January-November train, December halved in time order."""
    lo, mid, hi = (int(datetime(*d, tzinfo=timezone.utc).timestamp()) for d in ((2017, 1, 1), (2017, 12, 1), (2018, 1, 1)))
    year = [r for r in rows if lo <= r.ts < hi]
    users = {u for u in {r.user for r in year} if sum(r.user == u for r in year) > 20}
    items = {i for i in {r.item for r in year} if sum(r.item == i for r in year) > 20}
    kept = [r for r in year if r.user in users and r.item in items]
    december = sum(r.ts >= mid for r in kept)
    return {"train": len(kept) - december, "valid": december // 2, "test": december - december // 2}


def write_amazon2014(folder: Path, category: str, users: list[str], n_items: int = 40, per_user: int = 7,
                     seed: int = 0) -> list[Review]:
    """`reviews_<category>_5.json.gz` (JSON lines) and `meta_<category>.json.gz` (Python dict literals, as
    published) of Amazon Reviews 2014: each user reviews `per_user` of `n_items` items (a 5-core file has
    at least 5 per user), one item has no title, one review and one meta line are bad."""
    rng = np.random.default_rng(seed)
    prefix = "".join(w[0] for w in category.split("_")).upper()
    items = [f"B0{prefix[:4]:0<4}{i:04d}" for i in range(n_items)]  # 10 characters, like an ASIN
    rows = [Review(u, items[i], float(rng.integers(1, 6)), _ts(2013, rng))
            for u in users for i in rng.choice(n_items - 1, per_user, replace=False)]
    lines = [json.dumps({"reviewerID": r.user, "asin": r.item, "reviewerName": "J. Doe", "helpful": [0, 0],
                         "reviewText": "Works as described.", "overall": r.rating, "summary": "Good",
                         "unixReviewTime": r.ts, "reviewTime": _day(r.ts)}) for r in rows]
    lines.insert(5, '{"reviewerID": "A0", "asin": "B00')
    _write(folder / f"reviews_{category}_5.json.gz", lines)
    meta = [str({"asin": asin, "imUrl": f"http://ecx.images-amazon.com/images/I/{asin}.jpg",
                 "related": {"also_bought": items[:3]}, "salesRank": {category.replace("_", " "): 1000 + i},
                 "categories": [[category.replace("_and_", " & ").replace("_", " "), "Sub-category"]],
                 # short titles keep 30-candidate prompts small; two carry quotes and unicode as real ones do
                 "title": {0: f"Kid's \"Best\" {prefix} Set", 1: f"Crème – {prefix} Deluxe"}.get(i, f"{prefix} item {i}"),
                 "price": 9.99})
            for i, asin in enumerate(items)]
    meta[-1] = str({"asin": items[-1], "categories": [["No title"]]})  # reviewed by nobody: no title, no harm
    meta.insert(2, "{'asin': 'B00BROKEN1', 'title': 'cut")
    _write(folder / f"meta_{category}.json.gz", meta)
    return rows
