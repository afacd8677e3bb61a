"""Amazon Reviews 2014 (the data RecCocktail uses), fed files in the public layout through the real
Dagster job: `reviews_<Category>_5.json.gz` (strict JSON lines) and `meta_<Category>.json.gz`, whose
lines are Python dict literals written by `str(dict)` (single quotes, escaped quotes, `\\xe9`
escapes, `categories` as lists of category paths) or, in re-encoded mirrors, JSON.

The meta lines are parsed by ast.literal_eval, never eval: a line that only eval would accept (a
call) is quarantined with its reason, and what the call would have done (create a file) is not done.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from models.data import ingest as data_prep
from test_ingest_formats import J, Bad, Case, DupItem, Item, Ok, Source, Untitled, assert_arrived_intact, write_case

NOT_JSON = "not a JSON object"
NOT_A_DICT = "not a JSON object or Python dict literal"


def toys_case(compressed: bool, markers: Path) -> Case:
    """The Toys_and_Games files (gzipped as published, or plain); the meta lines that only eval would
    run create files in `markers` when run."""
    gz = ".gz" if compressed else ""
    opened, touched = markers / "opened_by_eval", markers / "touched_by_eval"
    return Case(format="amazon2014", sources=[
        Source(f"reviews_Toys_and_Games_5.json{gz}", lines=[
            (J({"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000031852", "reviewerName": "J. McDonald",
                "helpful": [2, 3], "reviewText": "My daughter \"loves\" it,\nreally.", "overall": 5.0,
                "summary": "Heavenly Highway Hymns", "unixReviewTime": 1252800000, "reviewTime": "09 13, 2009"}),
             Ok("A2SUAM1J3GNN3B", "0000031852", 5, 1252800000)),
            (J({"reviewerID": "A1", "asin": "0000031895", "helpful": [0, 0], "reviewText": "Fine.", "overall": 3.0,
                "summary": "ok", "unixReviewTime": 1262304000, "reviewTime": "01 1, 2010"}),
             Ok("A1", "0000031895", 3, 1262304000)),
            (J({"reviewerID": "A1", "asin": "B00004U9V2", "overall": 4.0, "unixReviewTime": 1262390400}),
             Ok("A1", "B00004U9V2", 4, 1262390400)),
            (J({"reviewerID": "A2", "asin": "B000CAFE01", "overall": 1.0, "unixReviewTime": 1262476800}),
             Ok("A2", "B000CAFE01", 1, 1262476800)),
            (J({"reviewerID": "A2", "asin": "B000BRULEE", "overall": 5.0, "unixReviewTime": 1262476801}),
             Ok("A2", "B000BRULEE", 5, 1262476801)),
            (J({"reviewerID": "A3", "asin": "B000JSON01", "overall": 2.0, "unixReviewTime": 1262476802}),
             Ok("A3", "B000JSON01", 2, 1262476802)),
            (J({"reviewerID": "A3", "asin": "B000NOCATS", "overall": 4.0, "unixReviewTime": 1262476803}),
             Ok("A3", "B000NOCATS", 4, 1262476803)),
            (J({"reviewerID": "A4", "asin": "B000NOTITL", "overall": 4.0, "unixReviewTime": 1262476804}),
             Untitled("A4", "B000NOTITL", 4, 1262476804)),  # its meta line has no title
            (J({"reviewerID": "A4", "asin": "B000EVIL01", "overall": 4.0, "unixReviewTime": 1262476805}),
             Untitled("A4", "B000EVIL01", 4, 1262476805)),  # its meta line is quarantined
            ('{"reviewerID": "A5", "asin": "0000031852", "overall": 4.0, "unixReviewTi',
             Bad("malformed_line", NOT_JSON)),
            ("{'reviewerID': 'A5', 'asin': '0000031852', 'overall': 4.0, 'unixReviewTime': 1262476806}",
             Bad("malformed_line", NOT_JSON)),  # review files are strict JSON: a dict literal is not read
            ("", None),
            (J({"reviewerID": "A5", "asin": "0000031852", "overall": "five", "unixReviewTime": 1262476806}),
             Bad("non_numeric_rating", 'rating "five" is not a number')),
            (J({"reviewerID": "A5", "asin": "0000031852", "overall": 0.0, "unixReviewTime": 1262476806}),
             Bad("rating_out_of_range", "rating 0.0 outside [1.0, 5.0]")),
            (J({"reviewerID": "A5", "asin": "0000031852", "overall": 4.0, "reviewTime": "01 2, 2010"}),
             Bad("unparseable_timestamp", "timestamp missing is not a Unix time in seconds")),
            (J({"reviewerName": "anon", "asin": "0000031852", "overall": 4.0, "unixReviewTime": 1262476806}),
             Bad("missing_user")),
            (J({"reviewerID": "A5", "overall": 4.0, "unixReviewTime": 1262476806}), Bad("missing_item")),
        ]),
        Source(f"meta_Toys_and_Games.json{gz}", role="items", lines=[
            ("{'asin': '0000031852', 'title': 'Girls Ballet Tutu Zebra Hot Pink', 'price': 3.17, "
             "'imUrl': 'http://ecx.images-amazon.com/images/I/51fAmVkTbyL._SY300_.jpg', "
             "'related': {'also_bought': ['B00JHONN1S', 'B002BZX8Z6'], 'bought_together': ['B002BZX8Z6']}, "
             "'salesRank': {'Toys & Games': 211836}, 'categories': [['Sports & Outdoors', 'Other Sports', 'Dance'], "
             "['Clothing, Shoes & Jewelry', 'Girls'], ['Sports & Outdoors', 'Dance']]}",
             Item("0000031852", "Girls Ballet Tutu Zebra Hot Pink",
                  ["Sports & Outdoors", "Other Sports", "Dance", "Clothing, Shoes & Jewelry", "Girls"])),
            # both quotes in the title: str() keeps single quotes and escapes the inner one
            ("{'asin': '0000031895', 'title': 'Say \"Don\\'t Stop\" Tutu', 'categories': [['Toys & Games']]}",
             Item("0000031895", "Say \"Don't Stop\" Tutu", ["Toys & Games"])),
            # a single quote only: str() writes the title in double quotes
            ("{'asin': 'B00004U9V2', 'title': \"Men's Shoe, Size 9\", 'salesRank': {}, "
             "'categories': [['Clothing, Shoes & Jewelry', 'Men', 'Shoes']]}",
             Item("B00004U9V2", "Men's Shoe, Size 9", ["Clothing, Shoes & Jewelry", "Men", "Shoes"])),
            ("{'asin': 'B000CAFE01', 'title': 'Caf\\xe9 au lait set \\u2013 4 cups', 'categories': [[]]}",
             Item("B000CAFE01", "Café au lait set – 4 cups", [])),
            ("{'asin': 'B000BRULEE', 'title': 'Crème brûlée torch 🔥', 'categories': [['Home & Kitchen'], "
             "['Home & Kitchen', 'Torches']]}",
             Item("B000BRULEE", "Crème brûlée torch 🔥", ["Home & Kitchen", "Torches"])),
            (J({"asin": "B000JSON01", "title": "Re-encoded \"as\" JSON", "categories": [["Toys & Games", "Puzzles"]]}),
             Item("B000JSON01", 'Re-encoded "as" JSON', ["Toys & Games", "Puzzles"])),
            ("{'asin': 'B000NOCATS', 'title': '  Spaces around  ', 'price': 12.0}",
             Item("B000NOCATS", "Spaces around", None)),  # no categories at all; titles are trimmed
            ("{'asin': 'B000NOTITL', 'price': 9.99, 'categories': [['Toys & Games']]}",
             Bad("item_without_title", "item B000NOTITL has an empty title")),
            ("{'asin': '0000031852', 'title': 'A later duplicate', 'categories': [['Toys & Games']]}",
             DupItem("0000031852")),
            ("", None),
            ("{'asin': 'B000TRUNC1', 'title': 'Cut of", Bad("malformed_line", NOT_A_DICT)),
            (f"{{'asin': 'B000EVIL01', 'title': open('{opened}', 'w').name}}", Bad("malformed_line", NOT_A_DICT)),
            (f"{{'asin': __import__('os').system('touch {touched}'), 'title': 'x'}}",
             Bad("malformed_line", NOT_A_DICT)),
            ("{'asin': len('abc'), 'title': 'Three'}", Bad("malformed_line", NOT_A_DICT)),
            ("['B000LIST01', 'a list, not a dict']", Bad("malformed_line", NOT_A_DICT)),
            ("{'title': 'No asin', 'categories': [['Toys & Games']]}", Bad("missing_item")),
        ]),
    ])


@pytest.mark.parametrize("compressed", [True, False], ids=["gzip", "plain"])
def test_amazon2014_rows_arrive_intact_and_bad_lines_are_quarantined(compressed, ingest, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    case = toys_case(compressed, markers)
    meta = case.sources[1]
    calls = [line for line, e in meta.lines if isinstance(e, Bad) and "(" in line]
    assert len(calls) == 3
    for line in calls:  # each is an expression that eval would run, not a syntax error
        compile(line, "<meta line>", "eval")
    spec = write_case(case, tmp_path / "source")
    assert ((tmp_path / "source" / meta.name).read_bytes()[:2] == b"\x1f\x8b") == compressed
    # the folder as downloaded may hold the ratings-only file too: neither glob takes it
    (tmp_path / "source" / "ratings_Toys_and_Games.csv").write_text("A1,0000031852,5.0,1252800000\n")

    run = ingest("toys", spec)

    assert_arrived_intact(case, "toys", run)
    assert list(markers.iterdir()) == [], "a meta line was executed"
    # the calls, the truncated line and the list: the reason in full
    assert run.query("SELECT detail, count(*) FROM quarantine WHERE dataset = 'toys' AND kind = 'item' "
                     "AND reason = 'malformed_line' GROUP BY 1") == [(NOT_A_DICT, len(calls) + 2)]


def test_py_literal_to_json_parses_literals_only(tmp_path):
    """The function alone: a dict literal becomes its JSON (non-ASCII escaped); a call, a
    comprehension, arithmetic, a name, what JSON cannot hold (a set, a tuple key), a non-dict, a
    nesting bomb, a truncated line and NULL give NULL."""
    con = duckdb.connect()
    data_prep.register_literal_udf(con)
    data_prep.register_literal_udf(con)  # a connection that has it keeps it

    def parse(line: str | None) -> str | None:
        return con.execute("SELECT py_literal_to_json($l)", {"l": line}).fetchone()[0]

    assert parse("{'a': 'Caf\\xe9', 'b': [1, 2.5, None, True], 'c': {'d': ()}, 1: u'x'}") == \
        '{"a": "Caf\\u00e9", "b": [1, 2.5, null, true], "c": {"d": []}, "1": "x"}'
    marker = tmp_path / "ran"
    for line in (f"{{'a': open('{marker}', 'w')}}", "{'a': [x for x in 'ab']}", "{'a': 1 + 1}", "{'a': b}",
                 "{'a': {1, 2}}", "{(1, 2): 'a'}", "['a']", "'a'", "{" * 10_000, "{'a': 1"):
        assert parse(line) is None, line
    assert parse(None) is None
    assert not marker.exists()
