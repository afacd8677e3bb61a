"""Every ingestion format, fed real files with corrupted lines, through the real Dagster job.

For each format the source files are written in that format (gzipped where the real releases
are), with good lines and corrupted lines side by side. Every line carries the outcome the
pipeline must give it: a good interaction must arrive in raw_interactions (and, when its item
has a title, in interactions) with exactly its values; a corrupted one must be in `quarantine`
with its reason, file and line; and the counts must be in the Dagster materialization metadata
and the blocking quarantine-share check.
"""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.config import ConfigError
from models.data.ingest import QUARANTINE_REASONS

INTERACTION_REASONS = QUARANTINE_REASONS[:-1]  # item_without_title is decided at the interactions stage
ITEM_REASONS = ("malformed_line", "missing_item", "item_without_title")


# --- what each line of a source file must become ----------------------------------------------

@dataclass(frozen=True)
class Ok:
    """A good interaction: arrives as (user, item, rating, ts) in raw_interactions."""
    user: str
    item: str
    rating: float
    ts: int


@dataclass(frozen=True)
class Untitled(Ok):
    """A good interaction whose item has no titled row: in raw_interactions, then quarantined
    as item_without_title by the `interactions` asset."""


@dataclass(frozen=True)
class Item:
    """A good item row: arrives as (item_id, title, categories) in raw_items."""
    item_id: str
    title: str
    categories: list[str] | None = None


@dataclass(frozen=True)
class DupItem:
    """A valid item row for an item listed earlier: collapsed (the first row wins), not quarantined."""
    item_id: str


@dataclass(frozen=True)
class Bad:
    """A corrupted row: quarantined at the raw stage with this reason (and detail containing `detail`)."""
    reason: str
    detail: str | None = None


@dataclass(frozen=True)
class Both:
    """A row of a single-file table source: read once as an interaction and once as an item."""
    interaction: Ok | Bad
    item: Item | DupItem | Bad


@dataclass
class Source:
    """One source file: its lines (text, or dicts for Parquet), each with its expected outcome."""
    name: str
    lines: list[tuple[Any, Any]]
    header: str | None = None
    encoding: str = "utf-8"
    role: str = "interactions"  # interactions | items | both

    @property
    def first_row(self) -> int:  # source_row is the line in the file; a header is line 1
        return 2 if self.header is not None else 1

    def rows(self, kind: str) -> list[tuple[int, Any, Any]]:
        """(source_row, content, expectation) of every row that is read as `kind`; blank lines skipped."""
        out = []
        for i, (content, expect) in enumerate(self.lines):
            if expect is None:  # a blank line: skipped by the reader, neither loaded nor quarantined
                continue
            if self.role == "both":
                expect = expect.interaction if kind == "interactions" else expect.item
            elif self.role != kind:
                continue
            out.append((self.first_row + i, content, expect))
        return out

    def write(self, folder: Path) -> Path:
        path = folder / self.name
        if self.name.endswith(".parquet"):
            pq.write_table(pa.Table.from_pylist([content for content, _ in self.lines]), path)
            return path
        text = "".join(f"{line}\n" for line in ([self.header] if self.header is not None else [])
                       + [content for content, _ in self.lines])
        data = text.encode(self.encoding)
        if self.name.endswith(".gz"):
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
                f.write(data)
            data = buf.getvalue()
        path.write_bytes(data)
        return path


@dataclass
class Case:
    format: str
    sources: list[Source]
    config: dict[str, Any] = field(default_factory=dict)  # beyond format and source
    source_is_file: bool = False  # source.path names the one file instead of the folder
    label_threshold: float = 4.0
    raw_is_the_line: bool = True  # quarantine.raw holds the line as written for every bad row

    def rows(self, kind: str) -> list[tuple[str, int, Any, Any]]:
        return [(s.name, row, content, expect)
                for s in self.sources for row, content, expect in s.rows(kind)]


def J(obj: Any) -> str:
    """One JSON line as the Amazon dumps write it (UTF-8, not ASCII-escaped)."""
    return json.dumps(obj, ensure_ascii=False)


# --- the cases: one per format (two for `table`: CSV and Parquet) ----------------------------

MOVIELENS_DAT = Case(
    format="movielens_dat",
    sources=[
        Source("ratings.dat.gz", encoding="latin-1", lines=[
            ("1::1193::5::978300760", Ok("1", "1193", 5, 978300760)),
            ("1::29::3::978302109", Ok("1", "29", 3, 978302109)),
            ("2::1193::4::978298413", Ok("2", "1193", 4, 978298413)),
            ("2::29", Bad("malformed_line", "expected 4 fields separated by ::, found 2")),
            ("", None),
            ("::1193::4::978300275", Bad("missing_user", "no user id")),
            ("6::::3::978824291", Bad("missing_item", "no item id")),
            ("3::1193::five::978220179", Bad("non_numeric_rating", 'rating "five" is not a number')),
            ("3::29::6::978220179", Bad("rating_out_of_range", "rating 6 outside [1.0, 5.0]")),
            ("4::1193::4::2000-12-31", Bad("unparseable_timestamp", "is not a Unix time in seconds")),
            ("4::3000::4::978824291", Untitled("4", "3000", 4, 978824291)),  # its movies.dat title is empty
            ("5::9999::2::978824291", Untitled("5", "9999", 2, 978824291)),  # not in movies.dat at all
            ("5::1193::1::978824400", Ok("5", "1193", 1, 978824400)),
        ]),
        Source("movies.dat.gz", role="items", encoding="latin-1", lines=[
            ("1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
             Item("1193", "One Flew Over the Cuckoo's Nest (1975)", ["Drama"])),
            ("29::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi",
             Item("29", "Cité des enfants perdus, La (1995)", ["Adventure", "Sci-Fi"])),
            ("3000::::Drama", Bad("item_without_title", "item 3000 has an empty title")),
            ("3001::Two::Titles::Drama", Bad("malformed_line", "expected 3 fields separated by ::, found 4")),
            ("::Nameless (2000)::Drama", Bad("missing_item")),
        ]),
    ],
)

MOVIELENS_CSV = Case(
    format="movielens_csv",
    config={"rating_range": [0.5, 5]},
    raw_is_the_line=False,  # validated CSV rows are quarantined as their parsed fields
    sources=[
        Source("ratings.csv", header="userId,movieId,rating,timestamp", lines=[
            ("1,1,4.0,964982703", Ok("1", "1", 4.0, 964982703)),
            ("1,3,4.5,964981247", Ok("1", "3", 4.5, 964981247)),
            ("2,11,2.5,835355493", Ok("2", "11", 2.5, 835355493)),
            ("2,1,4.0", Bad("malformed_line", "Expected Number of Columns: 4")),
            ("2,3,4.0,835355681,extra", Bad("malformed_line", "Expected Number of Columns: 4")),
            ("3,1,abc,1306463578", Bad("non_numeric_rating", 'rating "abc" is not a number')),
            ("3,11,5.5,1306463578", Bad("rating_out_of_range", "outside [0.5, 5.0]")),
            (",1,3.0,1306463578", Bad("missing_user")),
            ("4,1,3.0,2011-05-27", Bad("unparseable_timestamp", 'timestamp "2011-05-27"')),
            ("4,5,3.0,1306463578", Untitled("4", "5", 3.0, 1306463578)),
            ("4,1,0.5,1306463600", Ok("4", "1", 0.5, 1306463600)),  # the range is inclusive
            ("4,2811,5.0,1306463700", Ok("4", "2811", 5.0, 1306463700)),
        ]),
        Source("movies.csv", role="items", header="movieId,title,genres", lines=[
            ("1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy",
             Item("1", "Toy Story (1995)", ["Adventure", "Animation", "Children", "Comedy", "Fantasy"])),
            ('3,"Cité des enfants perdus, La (1995)",Drama|Fantasy|Mystery|Sci-Fi',
             Item("3", "Cité des enfants perdus, La (1995)", ["Drama", "Fantasy", "Mystery", "Sci-Fi"])),
            ('11,"American President, The (1995)",Comedy|Drama|Romance',
             Item("11", "American President, The (1995)", ["Comedy", "Drama", "Romance"])),
            ('2811,"""Great Performances"" Cats (1998)",Musical',
             Item("2811", '"Great Performances" Cats (1998)', ["Musical"])),
            ("5,,Comedy", Bad("item_without_title", "item 5 has an empty title")),
            ("7,Sabrina (1995),Comedy,Romance", Bad("malformed_line", "Expected Number of Columns: 3")),
        ]),
    ],
)

RECBOLE_ATOMIC = Case(
    format="recbole_atomic",
    config={"fields": {"title": "movie_title", "year": "release_year", "categories": "class"},
            "categories_separator": " "},
    raw_is_the_line=False,
    sources=[
        Source("ml-toy.inter", header="user_id:token\titem_id:token\trating:float\ttimestamp:float", lines=[
            ("196\t242\t3\t881250949", Ok("196", "242", 3, 881250949)),
            ("196\t1091\t5\t881250950.0", Ok("196", "1091", 5, 881250950)),
            ("186\t302\t3\t891717742", Ok("186", "302", 3, 891717742)),
            ("22\t377\t1", Bad("malformed_line", "Expected Number of Columns: 4")),
            ("244\t51\tbad\t880606923", Bad("non_numeric_rating", 'rating "bad" is not a number')),
            ("166\t346\t0\t886397596", Bad("rating_out_of_range", "rating 0 outside [1.0, 5.0]")),
            ("\t474\t4\t884182806", Bad("missing_user")),
            ("298\t\t4\t884182806", Bad("missing_item")),
            ("115\t265\t2\t", Bad("unparseable_timestamp", "timestamp missing")),
            ("253\t465\t5\t891628467", Untitled("253", "465", 5, 891628467)),
        ]),
        Source("ml-toy.item", role="items",
               header="item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq", lines=[
                   ("242\tKolya\t1996\tComedy", Item("242", "Kolya (1996)", ["Comedy"])),
                   ("1091\tCité des enfants perdus, La\t1995\tAdventure Sci-Fi",
                    Item("1091", "Cité des enfants perdus, La (1995)", ["Adventure", "Sci-Fi"])),
                   ('302\tL.A. "Confidential"\t1997\tCrime Film-Noir Mystery Thriller',
                    Item("302", 'L.A. "Confidential" (1997)', ["Crime", "Film-Noir", "Mystery", "Thriller"])),
                   ("465\t\t1994\tAdventure", Bad("item_without_title", "item 465 has an empty title")),
                   ("999\tToo\tmany\tcolumns\there", Bad("malformed_line")),
               ]),
    ],
)

AMAZON2018 = Case(
    format="amazon2018",
    sources=[
        Source("Books.json.gz", lines=[
            (J({"overall": 5.0, "verified": True, "reviewTime": "09 13, 2009", "reviewerID": "A1",
                "asin": "B001", "style": {"Format:": " Hardcover"}, "reviewerName": "Zoë",
                "reviewText": "Magnifique,\n\"vraiment\"", "summary": "Five Stars", "unixReviewTime": 1252800000}),
             Ok("A1", "B001", 5, 1252800000)),
            (J({"overall": 2.0, "reviewerID": "A2", "asin": "B002", "unixReviewTime": 1262304000}),
             Ok("A2", "B002", 2, 1262304000)),
            ('{"overall": 4.0, "reviewerID": "A3", "asin": "B001", "unixReviewTime": 12529',
             Bad("malformed_line", "not a JSON object")),
            ("[1, 2, 3]", Bad("malformed_line", "not a JSON object")),
            (J({"overall": "great", "reviewerID": "A3", "asin": "B001", "unixReviewTime": 1252800000}),
             Bad("non_numeric_rating", 'rating "great" is not a number')),
            (J({"overall": 6.0, "reviewerID": "A3", "asin": "B002", "unixReviewTime": 1252800000}),
             Bad("rating_out_of_range", "rating 6.0 outside [1.0, 5.0]")),
            (J({"overall": 4.0, "reviewerID": "A4", "asin": "B001", "reviewTime": "09 13, 2009",
                "unixReviewTime": "09 13, 2009"}),
             Bad("unparseable_timestamp", 'timestamp "09 13, 2009" is not a Unix time in seconds')),
            (J({"overall": 4.0, "asin": "B001", "unixReviewTime": 1252800000}), Bad("missing_user")),
            (J({"overall": 4.0, "reviewerID": "A5", "unixReviewTime": 1252800000}), Bad("missing_item")),
            (J({"overall": 3.0, "reviewerID": "A5", "asin": "B003", "unixReviewTime": 1252800000}),
             Untitled("A5", "B003", 3, 1252800000)),  # meta title ""
            (J({"overall": 4.0, "reviewerID": "A6", "asin": "B404", "unixReviewTime": 1252800000}),
             Untitled("A6", "B404", 4, 1252800000)),  # no meta line
            (J({"overall": 1.0, "reviewerID": "A2", "asin": "B001", "unixReviewTime": 1262390400}),
             Ok("A2", "B001", 1, 1262390400)),
        ]),
        Source("meta_Books.json.gz", role="items", lines=[
            (J({"asin": "B001", "title": "Cité des enfants perdus, La", "category": ["Books", "Literature & Fiction"],
                "price": "$9.99"}),
             Item("B001", "Cité des enfants perdus, La", ["Books", "Literature & Fiction"])),
            (J({"asin": "B002", "title": "The Hobbit, or There and Back Again", "category": []}),
             Item("B002", "The Hobbit, or There and Back Again", [])),
            (J({"asin": "B003", "title": "", "category": ["Books"]}),
             Bad("item_without_title", "item B003 has an empty title")),
            (J({"asin": "B001", "title": "A later duplicate", "category": ["Books"]}), DupItem("B001")),
            ('{"asin": "B005", "title": "Cut off', Bad("malformed_line", "not a JSON object")),
            (J({"title": "No asin", "category": ["Books"]}), Bad("missing_item")),
        ]),
    ],
)

AMAZON2023 = Case(
    format="amazon2023",
    sources=[
        Source("All_Beauty.jsonl.gz", lines=[
            (J({"rating": 5.0, "title": "Such a lovely scent", "text": "Smells great.<br />", "images": [],
                "asin": "B00YQ6X8EO", "parent_asin": "P1", "user_id": "U1", "timestamp": 1588687728923,
                "helpful_vote": 0, "verified_purchase": True}),
             Ok("U1", "P1", 5, 1588687728)),  # milliseconds, floored to seconds
            (J({"rating": 1.0, "asin": "B0X", "parent_asin": "P2", "user_id": "U2", "timestamp": 1588687729999}),
             Ok("U2", "P2", 1, 1588687729)),
            (J({"rating": 1.0, "parent_asin": "P2", "user_id": "U3", "timestamp": "2020-05-05"}),
             Bad("unparseable_timestamp", 'timestamp "2020-05-05" is not a Unix time in milliseconds')),
            ("this is not json", Bad("malformed_line", "not a JSON object")),
            (J({"rating": None, "parent_asin": "P2", "user_id": "U3", "timestamp": 1588687729999}),
             Bad("non_numeric_rating", "rating missing is not a number")),
            (J({"rating": 0.5, "parent_asin": "P2", "user_id": "U3", "timestamp": 1588687729999}),
             Bad("rating_out_of_range", "outside [1.0, 5.0]")),
            (J({"rating": 4.0, "parent_asin": "P1", "user_id": "", "timestamp": 1588687729999}),
             Bad("missing_user")),
            (J({"rating": 4.0, "asin": "B0Y", "user_id": "U4", "timestamp": 1588687729999}), Bad("missing_item")),
            (J({"rating": 4.0, "parent_asin": "P9", "user_id": "U4", "timestamp": 1600000000000}),
             Untitled("U4", "P9", 4, 1600000000)),
            (J({"rating": 4.0, "parent_asin": "P1", "user_id": "U4", "timestamp": 1600000000500}),
             Ok("U4", "P1", 4, 1600000000)),
        ]),
        Source("meta_All_Beauty.jsonl.gz", role="items", lines=[
            (J({"main_category": "All Beauty", "title": "Crème brûlée torch", "average_rating": 4.8,
                "rating_number": 10, "features": [], "categories": [], "parent_asin": "P1"}),
             Item("P1", "Crème brûlée torch", ["All Beauty"])),
            (J({"main_category": "All Beauty", "title": "Brush, round", "categories": ["Tools & Accessories", "Brushes"],
                "parent_asin": "P2"}),
             Item("P2", "Brush, round", ["All Beauty", "Tools & Accessories", "Brushes"])),
            (J({"main_category": None, "title": None, "categories": [], "parent_asin": "P9"}),
             Bad("item_without_title", "item P9 has an empty title")),
            ('{"parent_asin": "P3", "title": "x"', Bad("malformed_line", "not a JSON object")),
        ]),
    ],
)

TABLE_FIELDS = {"user": "uid", "item": "sku", "rating": "stars", "timestamp": "when",
                "item_id": "sku", "title": "name"}

TABLE_CSV = Case(
    format="table",
    config={"files": {"interactions": "events.csv.gz", "items": "catalog.csv.gz"},
            "fields": {**TABLE_FIELDS, "categories": "cats"}, "delimiter": ";",
            "timestamp_unit": "iso", "rating_range": [1, 10], "label_threshold": 7},
    label_threshold=7,
    raw_is_the_line=False,
    sources=[
        Source("events.csv.gz", header="uid;sku;stars;when;channel", lines=[
            ("u1;s1;8;2021-03-04T05:06:07Z;web", Ok("u1", "s1", 8, 1614834367)),
            ("u1;s2;3;2021-03-05T00:00:00+02:00;app", Ok("u1", "s2", 3, 1614895200)),  # offset honoured
            ("u2;s1;nine;2021-03-04;web", Bad("non_numeric_rating", 'rating "nine" is not a number')),
            ("u2;s2;7;last tuesday;web", Bad("unparseable_timestamp", 'timestamp "last tuesday" is not a date-time')),
            (";s1;4;2021-03-04;web", Bad("missing_user")),
            ("u3;s1;11;2021-03-04;web", Bad("rating_out_of_range", "rating 11 outside [1.0, 10.0]")),
            ("u3;s2", Bad("malformed_line", "Expected Number of Columns: 5")),
            ("u4;s3;5;2021-03-06;web", Untitled("u4", "s3", 5, 1614988800)),
            ("u4;s1;10;2021-03-06 12:00:00;app", Ok("u4", "s1", 10, 1615032000)),
        ]),
        Source("catalog.csv.gz", role="items", header="sku;name;cats", lines=[
            ('s1;"Widget; large";tools|home', Item("s1", "Widget; large", ["tools", "home"])),
            ("s2;Gadget;tools", Item("s2", "Gadget", ["tools"])),
            ("s3;;misc", Bad("item_without_title", "item s3 has an empty title")),
            ("s4;Thing;a;b", Bad("malformed_line", "Expected Number of Columns: 3")),
        ]),
    ],
)

# One Parquet file holds interactions and titles (source.path names the file). Parquet has no
# "lines", so there is no malformed_line case; every other reason is covered.
TABLE_PARQUET = Case(
    format="table",
    source_is_file=True,
    config={"fields": TABLE_FIELDS, "timestamp_unit": "iso"},
    raw_is_the_line=False,
    sources=[
        Source("events.parquet", role="both", lines=[
            ({"uid": "u1", "sku": "s1", "stars": "4", "when": "2021-03-04T05:06:07", "name": "Widget"},
             Both(Ok("u1", "s1", 4, 1614834367), Item("s1", "Widget"))),
            ({"uid": "u1", "sku": "s2", "stars": "3", "when": "2021-03-05", "name": "Gadget"},
             Both(Ok("u1", "s2", 3, 1614902400), Item("s2", "Gadget"))),
            ({"uid": "u2", "sku": "s1", "stars": "abc", "when": "2021-03-04", "name": "Widget"},
             Both(Bad("non_numeric_rating", 'rating "abc" is not a number'), DupItem("s1"))),
            ({"uid": None, "sku": "s1", "stars": "4", "when": "2021-03-04", "name": "Widget"},
             Both(Bad("missing_user"), DupItem("s1"))),
            ({"uid": "u3", "sku": "s2", "stars": "0", "when": "2021-03-04", "name": "Gadget"},
             Both(Bad("rating_out_of_range", "rating 0 outside [1.0, 5.0]"), DupItem("s2"))),
            ({"uid": "u4", "sku": "s3", "stars": "2", "when": "2021-03-04", "name": ""},
             Both(Untitled("u4", "s3", 2, 1614816000), Bad("item_without_title"))),
            ({"uid": "u4", "sku": "s1", "stars": "5", "when": "2021-02-30", "name": "Widget"},
             Both(Bad("unparseable_timestamp", 'timestamp "2021-02-30" is not a date-time'), DupItem("s1"))),
            ({"uid": "u5", "sku": None, "stars": "4", "when": "2021-03-04", "name": None},
             Both(Bad("missing_item"), Bad("missing_item"))),
            ({"uid": "u5", "sku": "s2", "stars": "5", "when": "2021-03-06T23:59:59.900", "name": "Gadget"},
             Both(Ok("u5", "s2", 5, 1615075199), DupItem("s2"))),  # fractions of a second are floored
        ]),
    ],
)

CASES = {
    "movielens_dat": MOVIELENS_DAT,
    "movielens_csv": MOVIELENS_CSV,
    "recbole_atomic": RECBOLE_ATOMIC,
    "amazon2018": AMAZON2018,
    "amazon2023": AMAZON2023,
    "table_csv": TABLE_CSV,
    "table_parquet": TABLE_PARQUET,
}


# --- what the warehouse and the metadata must then hold ---------------------------------------

@dataclass
class Expected:
    raw_interactions: list[tuple]  # (user, item, rating, ts, source_file, source_row)
    raw_items: list[tuple]  # (item_id, title, categories)
    quarantine: list[tuple]  # (stage, kind, source_file, source_row, reason)
    details: dict[tuple, str]  # (kind, source_file, source_row) -> text the detail must contain
    raw_lines: dict[tuple, str]  # (kind, source_file, source_row) -> the line, for raw
    interactions: list[tuple]  # (user, item, rating, ts, label, title, categories)
    rows_read: dict[str, int]  # interactions / items -> rows read (blank lines excluded)
    duplicate_items: int


def expected(case: Case) -> Expected:
    raw_inter, raw_items, quarantine, details, raw_lines = [], {}, [], {}, {}
    dups, titled_rows = 0, []
    inter_rows, item_rows = case.rows("interactions"), case.rows("items")
    for file, row, content, e in item_rows:
        if isinstance(e, Item):
            assert e.item_id not in raw_items, f"test data: item {e.item_id} listed twice as Item"
            raw_items[e.item_id] = (e.item_id, e.title, e.categories)
        elif isinstance(e, DupItem):
            dups += 1
        else:
            quarantine.append(("raw", "item", file, row, e.reason))
            if e.detail:
                details[("item", file, row)] = e.detail
            if case.raw_is_the_line or e.reason == "malformed_line":
                raw_lines[("item", file, row)] = content
    for file, row, content, e in inter_rows:
        if isinstance(e, Ok):
            raw_inter.append((e.user, e.item, float(e.rating), e.ts, file, row))
            titled = e.item in raw_items
            assert titled != isinstance(e, Untitled), f"test data: line {row} of {file} is mislabelled"
            if not titled:
                quarantine.append(("interactions", "interaction", file, row, "item_without_title"))
            else:
                titled_rows.append(e)
        else:
            quarantine.append(("raw", "interaction", file, row, e.reason))
            if e.detail:
                details[("interaction", file, row)] = e.detail
            if case.raw_is_the_line or e.reason == "malformed_line":
                raw_lines[("interaction", file, row)] = content
    kept = [(e.user, e.item, float(e.rating), e.ts, int(e.rating >= case.label_threshold),
             raw_items[e.item][1], raw_items[e.item][2]) for e in titled_rows]
    assert len({(k[0], k[1]) for k in kept}) == len(kept), "test data: no repeated (user, item) pairs"
    return Expected(
        raw_interactions=sorted(raw_inter),
        raw_items=sorted(raw_items.values()),
        quarantine=sorted(quarantine),
        details=details,
        raw_lines=raw_lines,
        interactions=sorted(kept),
        rows_read={"interactions": len(inter_rows), "items": len(item_rows)},
        duplicate_items=dups,
    )


def write_case(case: Case, folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [s.write(folder) for s in case.sources]
    source = paths[0] if case.source_is_file else folder
    return {"format": case.format, "source": {"path": str(source)}, **case.config}


# --- the tests --------------------------------------------------------------------------------

@pytest.mark.parametrize("case_id", list(CASES))
def test_corrupted_lines_are_quarantined_and_good_rows_arrive_intact(case_id, ingest, tmp_path):
    case = CASES[case_id]
    reasons = {e.reason for *_, e in case.rows("interactions") if isinstance(e, Bad)}
    must_cover = {"malformed_line", "non_numeric_rating", "rating_out_of_range", "unparseable_timestamp",
                  "missing_user"} - ({"malformed_line"} if case.sources[0].name.endswith(".parquet") else set())
    assert must_cover <= reasons, f"test data for {case_id} misses {must_cover - reasons}"
    run = ingest(case_id, write_case(case, tmp_path / "source"))
    assert_arrived_intact(case, case_id, run)


def assert_arrived_intact(case: Case, case_id: str, run) -> None:
    """Every line of `case` became what it must in the run of dataset `case_id`: good rows in the
    warehouse with their values, bad rows in quarantine with their reasons, counts in the metadata
    and the check (also used by tests/test_ingest_by_content.py for the same data in other files)."""
    exp = expected(case)
    assert run.result.success

    # good rows, exactly, with the file and line they came from
    assert sorted(run.query(
        "SELECT user_id, item_id, rating, ts, source_file, source_row FROM raw_interactions "
        "WHERE dataset = $d", {"d": case_id})) == exp.raw_interactions
    assert sorted(run.query(
        "SELECT item_id, title, categories FROM raw_items WHERE dataset = $d", {"d": case_id})) == exp.raw_items
    assert sorted(run.query(
        "SELECT user_id, item_id, rating, ts, label, title, categories FROM interactions WHERE dataset = $d",
        {"d": case_id})) == exp.interactions

    # bad rows, each with its reason, at the file and line it came from
    quarantined = run.query(
        "SELECT stage, kind, source_file, source_row, reason, detail, raw FROM quarantine WHERE dataset = $d",
        {"d": case_id})
    assert sorted(q[:5] for q in quarantined) == exp.quarantine
    by_place = {(kind, file, row): (detail, raw) for _, kind, file, row, _, detail, raw in quarantined}
    for place, text in exp.details.items():
        assert text in by_place[place][0], f"{place}: detail {by_place[place][0]!r} lacks {text!r}"
    for place, line in exp.raw_lines.items():
        assert by_place[place][1].strip() == line, f"{place}: raw {by_place[place][1]!r} is not the line"

    # the counts in the materialization metadata
    raw_q = Counter(q[4] for q in exp.quarantine if q[:2] == ("raw", "interaction"))
    item_q = Counter(q[4] for q in exp.quarantine if q[1] == "item")
    all_q = Counter(q[4] for q in exp.quarantine if q[1] == "interaction")
    md = run.metadata("raw_interactions")
    assert md["format"] == case.format
    assert md["dagster/row_count"] == len(exp.raw_interactions)
    assert md["rows_read"] == exp.rows_read["interactions"]
    assert md["quarantined"] == sum(raw_q.values())
    assert {r: md[f"quarantined/{r}"] for r in INTERACTION_REASONS} == {r: raw_q[r] for r in INTERACTION_REASONS}

    md = run.metadata("raw_items")
    assert md["dagster/row_count"] == len(exp.raw_items)
    assert md["rows_read"] == exp.rows_read["items"]
    assert md["duplicate_items_collapsed"] == exp.duplicate_items
    assert md["quarantined"] == sum(item_q.values())
    assert {r: md[f"quarantined/{r}"] for r in ITEM_REASONS} == {r: item_q[r] for r in ITEM_REASONS}

    md = run.metadata("interactions")
    total = len(exp.raw_interactions) + sum(raw_q.values())
    assert md["dagster/row_count"] == len(exp.interactions)
    assert md["quarantined/item_without_title"] == all_q["item_without_title"] > 0
    assert md["quarantined_by_reason"] == dict(all_q)
    assert md["quarantined_share_of_input"] == round(sum(all_q.values()) / total, 6)

    check = run.check()
    assert check.passed
    assert check.metadata["quarantined"].value == sum(all_q.values())
    assert check.metadata["input_rows"].value == total


def test_movielens_dat_is_read_as_latin1(ingest, tmp_path):
    """The title's é is one latin-1 byte (0xE9) in the gzipped file and arrives as 'é'."""
    spec = write_case(MOVIELENS_DAT, tmp_path / "source")
    raw = gzip.decompress((tmp_path / "source" / "movies.dat.gz").read_bytes())
    assert b"29::Cit\xe9 des enfants perdus, La (1995)::" in raw
    run = ingest("ml", spec)
    assert run.query("SELECT title FROM interactions WHERE item_id = '29'") == [
        ("Cité des enfants perdus, La (1995)",)]


def test_reingesting_replaces_rows_instead_of_adding(ingest, tmp_path):
    spec = write_case(AMAZON2023, tmp_path / "source")
    counts = "SELECT (SELECT count(*) FROM raw_interactions), (SELECT count(*) FROM quarantine), " \
             "(SELECT count(*) FROM interactions)"
    first = ingest("beauty", spec).query(counts)
    assert ingest("beauty", spec).query(counts) == first


def test_quarantine_share_above_limit_fails_the_blocking_check(ingest, tmp_path):
    spec = write_case(MOVIELENS_DAT, tmp_path / "source")
    exp = expected(MOVIELENS_DAT)
    bad = sum(1 for q in exp.quarantine if q[1] == "interaction")
    total = len(exp.raw_interactions) + sum(1 for q in exp.quarantine if q[:2] == ("raw", "interaction"))
    share = bad / total

    with pytest.raises(dg.DagsterError, match="blocking asset check failed"):
        ingest("ml", spec, quarantine_max_share=0.05)

    run = ingest("ml", spec, quarantine_max_share=0.05, raise_on_error=False)
    assert not run.result.success
    check = run.check()
    assert check.asset_key == dg.AssetKey("interactions")
    assert check.passed is False
    assert check.severity == dg.AssetCheckSeverity.ERROR
    text = check.description
    assert f"{share:.2%}" in text and f"({bad} of {total})" in text
    assert "limit of 5.00%" in text and "quarantine_max_share" in text and str(run.config_path) in text
    assert check.metadata["quarantined_share"].value == round(share, 6)
    assert check.metadata["limit"].value == 0.05
    assert [e.step_key for e in run.result.get_step_failure_events()] == [
        "interactions_quarantine_share_within_limit"]
    # the rows are still in the warehouse for inspection
    assert run.query("SELECT count(*) FROM quarantine WHERE dataset = 'ml'") == [(len(exp.quarantine),)]


def test_missing_column_is_a_config_error_naming_the_column(ingest, tmp_path):
    src = tmp_path / "source"
    src.mkdir()
    (src / "events.csv").write_text("uid,sku,score,when\nu1,s1,4,2021-03-04\n")
    (src / "catalog.csv").write_text("sku,name\ns1,Widget\n")
    spec = {"format": "table", "source": {"path": str(src)},
            "files": {"interactions": "events.csv", "items": "catalog.csv"},
            "fields": TABLE_FIELDS, "timestamp_unit": "iso"}  # maps rating to 'stars', the file has 'score'

    with pytest.raises(dg.Failure) as err:  # a deterministic failure: never retried
        ingest("shop", spec)
    assert err.value.allow_retries is False and isinstance(err.value.__cause__, ConfigError)
    message = err.value.description
    assert "events.csv has no column 'stars' (for rating)" in message
    assert "['uid', 'sku', 'score', 'when']" in message and "datasets.shop.fields" in message

    run = ingest("shop", spec, raise_on_error=False)
    [failure] = run.result.get_step_failure_events()
    assert failure.step_key == "raw_data"
    assert failure.step_failure_data.error.cls_name == "Failure"
    assert "has no column 'stars'" in failure.step_failure_data.error.message
    cause = failure.step_failure_data.error.cause
    assert cause.cls_name == "ConfigError" and "has no column 'stars'" in cause.message
    assert "duckdb" not in cause.message.lower() and "Binder Error" not in cause.message
