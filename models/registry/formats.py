"""The ingestion formats, one registry entry each: default file names, column names, encoding,
timestamp unit and how the files are read. Adding a format is one entry here (plus, for a
line-parsed format, its `sql/stage_<name>.sql` (or, for JSON review lines, their `review_paths`)
and `sql/stage_<name>_items.sql`) and its test in
tests/test_ingest_formats.py (amazon2014: tests/test_ingest_amazon2014.py). No Dagster here."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class IngestFormat:
    name: str
    description: str
    # default file names (or globs) inside the dataset's source folder: `interactions`, `items`
    files: dict[str, str] = field(default_factory=dict)
    # "lines": every line read as text and parsed in sql/stage_<name>.sql (a corrupted line becomes a
    # quarantined row); "table": a CSV or Parquet file (told apart by their first bytes, not their names)
    # mapped to the canonical columns by `fields`
    reader: str = "table"
    # canonical column -> the file's column name (table formats): user, item, rating, timestamp,
    # item_id, title, year, categories
    fields: dict[str, str] = field(default_factory=dict)
    delim: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    timestamp_unit: str = "s"
    # item files share the interaction files' glob; names with this prefix are not interaction files
    meta_prefix: str | None = None
    # RecBole writes typed headers ("rating:float"); the type suffix is dropped from column names
    typed_headers: bool = False
    # what the text files hold, in words, for the error that a file the format cannot read gives
    text: str = "CSV"
    # a JSON-lines format's paths of user, item, rating and time in a review line: its interactions
    # are staged by sql/stage_json_reviews.sql (its items by its own sql/stage_<name>_items.sql)
    review_paths: tuple[str, str, str, str] | None = None

    @property
    def interactions_sql(self) -> str:
        return "stage_json_reviews" if self.review_paths else f"stage_{self.name}"

    @property
    def stage_params(self) -> dict[str, object]:
        """The bound parameters of its interactions' staging SQL."""
        return {"paths": list(self.review_paths)} if self.review_paths else {}

    @property
    def items_sql(self) -> str:
        return f"stage_{self.name}_items"

    @property
    def expects(self) -> str:
        """What this format can read, in words: text (plain or compressed), and Parquet for a table reader."""
        text = f"{self.text} (plain, gzip or zstd)"
        return text if self.reader == "lines" else f"{text} or Parquet"


# JSON paths of user, item, rating and time in an Amazon Reviews 2018 (and 2014) review line
AMAZON2018_REVIEWS = ("$.reviewerID", "$.asin", "$.overall", "$.unixReviewTime")

FORMATS: dict[str, IngestFormat] = {f.name: f for f in (
    IngestFormat("movielens_dat", "MovieLens `ratings.dat` / `movies.dat`: `::`-separated, latin-1, genres split on `|`",
                 files={"interactions": "ratings.dat*", "items": "movies.dat*"}, reader="lines",
                 encoding="latin-1", text="'::'-separated lines"),
    IngestFormat("movielens_csv", "MovieLens `ratings.csv` / `movies.csv` (`userId,movieId,rating,timestamp`; "
                 "`movieId,title,genres`)",
                 files={"interactions": "ratings.csv*", "items": "movies.csv*"},
                 fields={"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp",
                         "item_id": "movieId", "title": "title", "categories": "genres"}),
    IngestFormat("recbole_atomic", "RecBole atomic files `<name>.inter` / `<name>.item`, tab-separated with typed "
                 "headers (`user_id:token`)",
                 files={"interactions": "*.inter*", "items": "*.item*"},
                 fields={"user": "user_id", "item": "item_id", "rating": "rating", "timestamp": "timestamp",
                         "item_id": "item_id", "title": "title"},
                 delim="\t", quote="", typed_headers=True, text="tab-separated text"),
    IngestFormat("amazon2014", "Amazon Reviews 2014 (RecCocktail's data): JSON lines `reviewerID, asin, overall, "
                 "unixReviewTime` in `reviews_<Category>_5.json`; meta `asin, title, categories` (lists of category "
                 "paths, flattened) in `meta_<Category>.json`, one Python dict literal a line (or JSON)",
                 files={"interactions": "reviews_*.json*", "items": "meta_*.json*"}, reader="lines",
                 text="JSON lines or Python dict literals", review_paths=AMAZON2018_REVIEWS),
    IngestFormat("amazon2018", "Amazon Reviews 2018: JSON lines `reviewerID, asin, overall, unixReviewTime`; "
                 "meta `asin, title, category`",
                 files={"interactions": "*.json*", "items": "meta_*.json*"}, reader="lines", meta_prefix="meta_",
                 text="JSON lines", review_paths=AMAZON2018_REVIEWS),
    IngestFormat("amazon2023", "Amazon Reviews 2023: JSON lines keyed by `parent_asin`, `timestamp` in ms; "
                 "meta `main_category` + `categories`",
                 files={"interactions": "*.jsonl*", "items": "meta_*.jsonl*"}, reader="lines", meta_prefix="meta_",
                 timestamp_unit="ms", text="JSON lines",
                 review_paths=("$.user_id", "$.parent_asin", "$.rating", "$.timestamp")),
    IngestFormat("table", "generic CSV or Parquet with a column mapping (`fields`); without `items` the titles come "
                 "from the interaction file; without `rating` every row is a positive",
                 fields={"user": "user_id", "item": "item_id", "rating": "rating", "timestamp": "timestamp",
                         "item_id": "item_id", "title": "title"}),
)}
