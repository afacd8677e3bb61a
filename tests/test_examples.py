"""The example configs (config/examples/): each validates against the config schema as shipped, and each
runs end to end through `make demo`'s command (orchestration.demo, real Dagster runs recorded in an
instance) on tiny files laid out like the public downloads (tests/example_fixtures.py), the config
file copied unchanged to where a user keeps it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from example_fixtures import amazon_book_split, write_amazon2014, write_amazon_book
from models.config import PROJECT_ROOT, load_config
from models.profiles import load_profiles, profile_files
from orchestration import demo

EXAMPLES = PROJECT_ROOT / "config" / "examples"
CONFIGS = sorted(p.name for p in EXAMPLES.glob("*.yaml") if p.name != "profiles.yaml")


def test_every_example_is_tested():
    assert CONFIGS == ["collm_amazon_book.yaml", "reccocktail_amazon2014.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_example_config_validates_as_shipped(name):
    cfg = load_config(EXAMPLES / name)
    assert cfg.domains and cfg.datasets


def test_example_profiles_validate(monkeypatch):
    monkeypatch.setenv("LLMREC_PROFILES", str(EXAMPLES / "profiles.yaml"))
    assert profile_files()[-1] == EXAMPLES / "profiles.yaml"
    book = load_profiles()["collm_amazon_book"]
    assert book.valid_rows == 0.25 and book.collm.backbones == ("ingredient",)
    assert book.train.batch_size == load_profiles()["full"].train.batch_size  # the rest is `full`'s


def _run_demo(tmp_path: Path, name: str, monkeypatch, capsys, listwise_domains: list[str] | None = None) -> Path:
    """The example config copied unchanged into <tmp>/config/examples/ (its relative source folder is then
    <tmp>/data/raw/...), run as `make demo` runs it with the smoke profile (RecCocktail's listwise stages on
    `listwise_domains` only; None: every listwise domain): every run succeeds and no gate
    (an ERROR check: quarantine share, report complete, floors, regression) fails. Returns the data folder."""
    config = tmp_path / "config" / "examples" / name
    config.parent.mkdir(parents=True)
    shutil.copy(EXAMPLES / name, config)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    # the smoke profile; RecCocktail's listwise stages (30-candidate lists, 8 methods, generation) on one target
    # only and on fewer lists, to keep the test short: the other targets still get their data, CF and report
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(yaml.safe_dump({"profiles": {"example_smoke": {
        "extends": "smoke", "description": "the smoke profile for the example configs' tests",
        "listwise": {"domains": listwise_domains, "test_users": 20,  # the report's minimum of lists
                     "merge": {"max_new_tokens": 16, "entropy_buffer": 6, "steps": 2}}}}}))
    for key, value in {"LLMREC_CONFIG": config, "LLMREC_DATA_DIR": tmp_path / "data", "LLMREC_PROFILES": profiles,
                       "LLMREC_PROFILE": "example_smoke", "DAGSTER_HOME": home}.items():
        monkeypatch.setenv(key, str(value))
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "gates failed: 0;" in out, out[-3000:]
    return tmp_path / "data"


def _latest(asset: str, partition: str | None = None) -> dict:
    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
            limit=1).records
        return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def test_collm_amazon_book_example_end_to_end(tmp_path, monkeypatch, capsys):
    rows = write_amazon_book(tmp_path / "data" / "raw" / "amazon2018")
    data = _run_demo(tmp_path, "collm_amazon_book.yaml", monkeypatch, capsys)

    raw = _latest("raw_interactions", "amazon_book")
    assert raw["quarantined/malformed_line"] == 1 and raw["quarantined/non_numeric_rating"] == 1
    assert raw["quarantined/missing_user"] == 1
    split = pl.read_parquet(data / "domains" / "amazon_book" / "split.parquet")
    assert dict(split["split"].value_counts().iter_rows()) == amazon_book_split(rows)
    assert set(split["label"].unique()) == {0, 1} and split.filter(pl.col("label") == 1)["rating"].min() == 5

    # no general domain: no base spirit and no cocktail, and CoLLM's own stages all ran
    assert "skipped" in _latest("base_spirit_lora")
    assert "skipped" in _latest("cocktail_model", "amazon_book")
    assert _latest("llm_scores", "amazon_book")["methods"] == ["llm_untrained", "ingredient_tallrec"]
    metrics = json.loads((data / "reports" / "amazon_book" / "metrics.json").read_text())
    methods = set(metrics["frames"]["sample"]["methods"])
    assert {"mf", "lightgcn", "sasrec", "llm_untrained", "ingredient_tallrec", "collm_mf"} <= methods
    assert not any("cocktail" in m or m in ("reccocktail", "base_spirit") for m in methods)
    report = (data / "reports" / "amazon_book" / "report.md").read_text()
    assert "0.8109" in report  # CoLLM-MF's published Amazon-Book AUC beside ours


def test_reccocktail_amazon2014_example_end_to_end(tmp_path, monkeypatch, capsys):
    cfg = load_config(EXAMPLES / "reccocktail_amazon2014.yaml")
    folder = tmp_path / "data" / "raw" / "amazon2014"
    shoppers = [f"A{u:04d}SHOPPER" for u in range(60)]
    written = {}
    for k, (name, ds) in enumerate(sorted(cfg.datasets.items())):
        category = ds.files["interactions"].removeprefix("reviews_").removesuffix("_5.json.gz")
        target = cfg.domains[name].role == "target"
        # 30 shoppers per target; each general category has 30 others and 4 of the targets' shoppers (Amazon's
        # reviewer ids are shared across categories; each category is its own dataset, as in the paper)
        users = shoppers[:30] if target else [f"G{k:02d}{u:03d}BUYER" for u in range(30)] + shoppers[:4]
        written[name] = write_amazon2014(folder, category, users, seed=k)
    data = _run_demo(tmp_path, "reccocktail_amazon2014.yaml", monkeypatch, capsys, ["beauty"])

    for name, rows in written.items():
        raw = _latest("raw_interactions", name)
        assert raw["quarantined/malformed_line"] == 1 and raw["dagster/row_count"] == len(rows)
        users = len({r.user for r in rows})
        split = pl.read_parquet(data / "domains" / name / "split.parquet")
        assert dict(split["split"].value_counts().iter_rows()) == {"train": len(rows) - 2 * users, "valid": users,
                                                                   "test": users}
    base = _latest("listwise_base_spirit")
    assert base["domains"] == ", ".join(sorted(d for d, c in cfg.domains.items() if c.role == "general"))
    for target in ("beauty", "sports", "toys"):
        assert base[f"overlap/{target}/users"] == 0 and base[f"overlap/{target}/items"] == 0
        assert (data / "reports" / target / "report.md").exists()
    beauty = json.loads((data / "reports" / "beauty" / "metrics.json").read_text())
    assert {"llm_untrained", "base_spirit", "ingredient_tallrec", "reccocktail", "mf"} <= set(
        beauty["frames"]["listwise"]["methods"])
    assert beauty["counts"]["listwise"]["reccocktail"]["all"]["lists"] == 20 == beauty["frames"]["listwise"]["users"]
    report = (data / "reports" / "beauty" / "report.md").read_text()
    assert "Published (paper v2, Amazon 2014 Beauty" in report and "0.4132" in report
