"""The config file's schema: every misspelled or misplaced key, wrong type and out-of-range value is
reported with the file, its dotted key path and the fix, all problems of a file in one error."""

import copy
from datetime import date
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import pytest
import yaml
from pydantic import Field

from models import config as cfgmod
from models.config import PROJECT_ROOT, ConfigError, SplitSpec, load_config
from models.core.strict import Strict, validate

SHIPPED = PROJECT_ROOT / "config" / "datasets.yaml"
BASE = yaml.safe_load(SHIPPED.read_text())
DELETE = object()


def edited(edits: dict) -> dict:
    """The shipped config with `dotted.path: value` set (DELETE removes the key)."""
    raw = copy.deepcopy(BASE)
    for dotted, value in edits.items():
        *parents, last = dotted.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(last)
        else:
            node[last] = value
    return raw


def problems(tmp_path: Path, raw: dict) -> ConfigError:
    path = tmp_path / "datasets.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    return err.value


def one_problem(tmp_path: Path, edits: dict) -> str:
    err = problems(tmp_path, edited(edits))
    assert len(err.problems) == 1, err
    return err.problems[0]


# (key written, the expected hint): each key is added to the shipped file, which is otherwise valid
UNKNOWN_KEYS = [
    # settings
    ("settings.quarantine_max_shar", "did you mean `quarantine_max_share`?"),
    ("settings.warm_treshold", "did you mean `warm_threshold`?"),
    ("settings.evaluaton", "did you mean `evaluation`?"),
    ("settings.label_threshold", "`label_threshold` is a key of `datasets.<name>`"),
    ("history_length", "`history_length` is a key of `settings`"),
    ("domain", "did you mean `domains`?"),
    # settings.cf.*
    ("settings.cf.mff", "did you mean `mf`?"),
    ("settings.cf.seeds", "did you mean `seed`?"),
    ("settings.cf.als.factor", "did you mean `factors`?"),
    ("settings.cf.bpr.learning_rte", "did you mean `learning_rate`?"),
    ("settings.cf.mf.patiense", "did you mean `patience`?"),
    ("settings.cf.mf.seed", "`seed` is a key of `settings.cf`, `settings.evaluation`"),
    # settings.evaluation
    ("settings.evaluation.ranking_negative", "did you mean `ranking_negatives`?"),
    ("settings.evaluation.bootstrap", "did you mean `bootstrap_samples`?"),
    ("settings.evaluation.warm_threshold", "`warm_threshold` is a key of `settings`"),
    # datasets.*
    ("datasets.ml1m.lable_threshold", "did you mean `label_threshold`?"),
    ("datasets.ml1m.warm_threshold", "`warm_threshold` is a key of `settings`"),
    ("datasets.ml1m.warm_treshold", "did you mean `warm_threshold` (a key of `settings`)?"),
    ("datasets.ml1m.encodng", "did you mean `encoding`?"),
    ("datasets.ml1m.item_noun", "`item_noun` is a key of `domains.<name>`"),
    ("datasets.ml1m.source.pakage", "did you mean `package`?"),
    ("datasets.ml1m.files.interaction", "did you mean `interactions`?"),
    ("datasets.ml1m.fields.titel", "did you mean `title`?"),
    # split, each protocol
    ("datasets.ml1m.split.train_slot", "did you mean `train_slots`?"),
    ("datasets.ml1m.split.start", "unknown key of protocol month_window; `start` belongs to protocol date_cutoff"),
    ("datasets.ml100k.split.min_user_record", "did you mean `min_user_records`?"),
    ("datasets.ml100k.split.train_slots", "`train_slots` belongs to protocol month_window"),
    # domains.*
    ("domains.movies.refrence", "did you mean `reference`?"),
    ("domains.horror.item_nuon", "did you mean `item_noun`?"),
    ("domains.movies.label_threshold", "`label_threshold` is a key of `datasets.<name>`"),
    ("domains.ml100k_comedy.filter.categroy", "did you mean `category`?"),
    ("domains.ml1m_loo.cf.mf.batch_sise", "did you mean `batch_size`?"),
    ("domains.ml1m_loo.cf.mff", "did you mean `mf`?"),
]


@pytest.mark.parametrize("key, hint", UNKNOWN_KEYS, ids=[k for k, _ in UNKNOWN_KEYS])
def test_an_unknown_or_misplaced_key_names_its_path_and_the_fix(tmp_path, key, hint):
    message = one_problem(tmp_path, {key: 1})
    assert message.startswith(f"{key}: unknown key"), message
    assert hint in message


def test_a_date_cutoff_split_and_a_domain_split_are_checked_too(tmp_path):
    split = {"protocol": "date_cutoff", "start": date(2017, 1, 1), "train_ends": date(2017, 12, 1),
             "end": date(2018, 1, 1)}
    err = problems(tmp_path, edited({"datasets.ml100k.split": split,
                                     "domains.scifi.split": {"protocol": "leave_one_out", "min_users": 5}}))
    assert err.problems == [
        "datasets.ml100k.split.train_ends: unknown key of protocol date_cutoff; did you mean `train_end`?",
        "datasets.ml100k.split.train_end: required key missing; date_cutoff needs 'train_end' "
        "(the first day after train, e.g. 2017-12-01)",
        "domains.scifi.split.min_users: unknown key of protocol leave_one_out; did you mean `min_user_records`?",
    ]


# (key, value, what the message says after the key path; "..." skips text)
BAD_VALUES = [
    ("settings.quarantine_max_share", 1.5, ": must be <= 1"),
    ("settings.quarantine_max_share", -0.1, ": must be >= 0"),
    ("settings.warm_threshold", -1, ": must be >= 0 (got -1)"),
    ("settings.warm_threshold", "3", ": must be a valid integer (got '3')"),
    ("settings.warm_threshold", True, ": must be a valid integer (got True)"),
    ("settings.history_length", 0, ": must be >= 1 (got 0)"),
    ("settings.cf.mf.dim", 0, ": must be > 0 (got 0)"),
    ("settings.cf.seed", 1.5, ": must be a valid integer"),
    ("settings.cf.mf", 5, ": must be a mapping of keys (got 5)"),
    ("settings.evaluation.bootstrap_samples", 0, ": must be >= 1"),
    ("settings.evaluation.ranking_negatives", 0, ": must be >= 1"),
    ("settings.evaluation.min_subset_rows", 0, ": must be >= 1"),
    ("settings.evaluation.regression_tolerance", -0.01, ": must be >= 0"),
    ("settings.evaluation.ranking_k", [1, 0], "[1]: must be >= 1 (got 0)"),
    ("settings.evaluation.ranking_k", [1, 3, 50], "[2]=50: a list holds ranking_negatives + 1 = 30 candidates"),
    ("settings.evaluation.floors.movies.mf.auc", 1.5, ": must be <= 1"),
    ("settings.evaluation.floors.movies.mf.acu", 0.5, ": unknown metric; did you mean `auc`?"),
    ("settings.evaluation.floors.movies.mf.ndcg@10", 0.5, ": unknown metric; did you mean `ndcg@1`? "
                                                          "(with ranking_k [1, 3, 5]:"),
    ("settings.evaluation.floors.movies.mff", {"auc": 0.5}, ": unknown method; did you mean `mf`?"),
    ("settings.evaluation.floors.movies.collm_mf_cocktial", {"auc": 0.5},
     ": unknown method; did you mean `collm_mf_cocktail`?"),
    ("settings.evaluation.floors.movie", {"mf": {"auc": 0.5}}, ": not a domain of this file; did you mean `movies`?"),
    ("datasets.ml1m.format", "excel", "='excel': choose one of movielens_dat, movielens_csv, recbole_atomic"),
    ("datasets.ml1m.format", "recbole_atomc", "='recbole_atomc': choose one of ...; did you mean `recbole_atomic`?"),
    ("datasets.ml1m.label_threshold", 7, "=7: outside rating_range [1, 5]"),

    ("datasets.ml1m.rating_range", [5, 1], ": must be [low, high] with low < high"),
    ("datasets.ml1m.rating_range", [1, 3, 5], ": List should have at most 2 items"),
    ("datasets.ml1m.timestamp_unit", "sec", "='sec': choose one of s, ms, iso"),
    ("datasets.ml1m.source", {"package": "no_such_pkg", "path": "x"}, ".package: Python package 'no_such_pkg' "
                                                                      "is not installed"),
    ("datasets.ml1m.source.path", DELETE, ": required key missing; `datasets.ml1m.source` needs 'path'"),
    ("datasets.ml1m.format", DELETE, ": required key missing; `datasets.ml1m` needs 'format'"),
    ("datasets.ml1m.split.protocol", "random", "='random': choose one of month_window, date_cutoff, leave_one_out"),
    ("datasets.ml1m.split.protocol", "month_windows", "='month_windows': choose one of ...; "
                                                      "did you mean `month_window`?"),
    ("datasets.ml1m.split.protocol", DELETE, ": required key missing; choose one of month_window"),
    ("datasets.ml1m.split.train_slots", [23, 14], ": must be [first, last] with first <= last (got [23, 14])"),
    ("datasets.ml1m.split.train_slots", [14], ": List should have at least 2 items"),
    ("datasets.ml1m.split.valid_slots", [20, 28], ": [20, 28] must start after train_slots [14, 23] ends"),
    ("datasets.ml1m.split.test_slots", [25, 33], ": [25, 33] must start after valid_slots [24, 28] ends"),
    ("datasets.ml1m.split.origin", "2000-13", ": must be a month such as \"2000-04\""),
    ("datasets.ml100k.split.min_user_records", 2, ": must be >= 3 (got 2)"),
    ("domains.movies.role", "targt", "='targt': choose one of general, target, cold_start; did you mean `target`?"),
    ("domains.movies.reference", "collm_ml1", "='collm_ml1': choose one of collm_ml1m, collm_amazon_book, reccocktail_ml1m, "
                                              "reccocktail_beauty, reccocktail_toys, reccocktail_sports; "
                                              "did you mean `collm_ml1m`?"),
    ("domains.movies.dataset", "ml1mm", "='ml1mm': not a dataset in this file; did you mean `ml1m`?"),
    ("domains.movies.item_noun", 5, ": must be a valid string (got 5)"),
    ("domains.ml1m_loo.cf.mf.lr", -0.5, ": must be > 0.0 (got -0.5)"),
]


@pytest.mark.parametrize("key, value, says", BAD_VALUES, ids=[f"{k}={v!r}"[:60] for k, v, _ in BAD_VALUES])
def test_a_wrong_type_or_range_names_its_path_and_the_rule(tmp_path, key, value, says):
    message = one_problem(tmp_path, {key: value})
    first, *rest = (key + says).split("...")
    assert message.startswith(first) and all(part in message for part in rest), message


def test_a_label_threshold_outside_the_rating_range_is_reported_on_the_threshold(tmp_path):
    assert one_problem(tmp_path, {"datasets.ml1m.rating_range": [0, 1]}) == (
        "datasets.ml1m.label_threshold=4: outside rating_range [0, 1]: no rating could be labelled positive")
    assert one_problem(tmp_path, {"datasets.ml1m.rating_range": [5, 10], "datasets.ml1m.label_threshold": DELETE}) == (
        "datasets.ml1m.label_threshold: the default 4 is outside rating_range [5, 10]; set one inside")


def test_every_date_cutoff_date_parses_and_they_are_in_order(tmp_path):
    split = {"protocol": "date_cutoff", "start": "2018-01-01", "train_end": date(2017, 12, 1), "end": "2017-13-01",
             "min_user_records": -1}
    err = problems(tmp_path, edited({"datasets.ml100k.split": split}))
    assert err.problems == [
        "datasets.ml100k.split.train_end=2017-12-01: must be after start (2018-01-01): "
        "start < train_end < end",
        "datasets.ml100k.split.end: must be a date such as 2017-12-01 (got '2017-13-01')",
        "datasets.ml100k.split.min_user_records: must be >= 0 (got -1)",
    ]


def test_one_error_lists_every_problem_of_the_file_in_file_order(tmp_path):
    raw = edited({
        "settings.evaluaton": {},
        "settings.history_length": 0,
        "settings.evaluation.floors.movie": {"mf": {"auc": 0.6}},
        "datasets.ml1m.lable_threshold": 3,
        "datasets.ml1m.rating_range": [5, 1],
        "datasets.ml1m.split.valid_slots": [20, 28],
        "domains.movies.dataset": "ml1mm",
        "domains.horror.role": "targt",
    })
    err = problems(tmp_path, raw)
    path = tmp_path / "datasets.yaml"
    assert str(err).splitlines() == [
        f"{path}: 8 problems:",
        "  - settings.history_length: must be >= 1 (got 0)",
        "  - settings.evaluation.floors.movie: not a domain of this file; did you mean `movies`?",
        "  - settings.evaluaton: unknown key; did you mean `evaluation`?",
        "  - datasets.ml1m.rating_range: must be [low, high] with low < high (got [5.0, 1.0])",
        "  - datasets.ml1m.split.valid_slots: [20, 28] must start after train_slots [14, 23] ends: "
        "train < valid < test, without overlap",
        "  - datasets.ml1m.lable_threshold: unknown key; did you mean `label_threshold`?",
        "  - domains.movies.dataset='ml1mm': not a dataset in this file; did you mean `ml1m`?",
        "  - domains.horror.role='targt': choose one of general, target, cold_start; did you mean `target`?",
    ]


def test_yaml_level_problems_are_listed_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("datasets:\n  d:\n    format: movielens_dat\n    source: .\n    label_threshold: 4\n"
                    "    label_threshold: 5\n    split: {protocol: leave_one_out}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == [
        "line 6: `label_threshold` is given twice in one mapping (YAML would keep the last silently)",
        "domains: no domains declared; declare at least one"]
    path.write_text("")
    with pytest.raises(ConfigError, match="datasets: no datasets declared"):
        load_config(path)
    path.write_text("datasets:\n  format: movielens_dat\n")
    with pytest.raises(ConfigError, match=r"datasets.format: must be a mapping of keys \(got 'movielens_dat'\); "
                                          r"`format` is a key of `datasets.<name>`: put it under a name"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping of keys, not list"):
        load_config(path)


def test_the_shipped_config_loads_with_todays_values():
    cfg = load_config(SHIPPED)
    assert cfg.path == SHIPPED
    assert list(cfg.datasets) == ["ml1m", "ml100k"]
    assert list(cfg.domains) == ["movies", "horror", "scifi", "ml1m_loo", "documentary", "ml100k", "ml100k_comedy",
                                 "ml100k_drama", "ml100k_action"]
    ml1m = cfg.datasets["ml1m"]
    assert ml1m.split == SplitSpec("month_window", {"train_slots": [14, 23], "valid_slots": [24, 28],
                                                    "test_slots": [29, 33], "origin": None})
    assert (ml1m.format, ml1m.rating_range, ml1m.label_threshold) == ("recbole_atomic", (1.0, 5.0), 4.0)
    assert ml1m.fields == {"title": "item_id", "categories": "genre"} and ml1m.files == {}
    assert (ml1m.categories_separator, ml1m.timestamp_unit, ml1m.encoding, ml1m.delimiter) == (" ", None, None, None)
    assert ml1m.location.is_dir() and ml1m.location.parts[-2:] == ("dataset_example", "ml-1m")
    assert cfg.datasets["ml100k"].split == SplitSpec("leave_one_out", {"min_user_records": 5})
    movies, horror, doc = cfg.domains["movies"], cfg.domains["horror"], cfg.domains["documentary"]
    assert (movies.dataset, movies.role, movies.category, movies.reference, movies.item_noun) == (
        "ml1m", "target", None, "collm_ml1m", "movie")
    assert (horror.category, horror.split, doc.role, doc.task) == ("Horror", ml1m.split, "cold_start", "listwise")
    assert doc.split == SplitSpec("leave_one_out", {"min_user_records": 5}) and horror.task == "pointwise"
    assert [d.name for d in cfg.domains_of("ml100k")] == ["ml100k", "ml100k_comedy", "ml100k_drama", "ml100k_action"]
    assert cfg.domains["ml1m_loo"].words["purchased"] == "watched" and cfg.listwise_history_length == 10
    assert (cfg.quarantine_max_share, cfg.warm_threshold, cfg.history_length) == (0.05, 3, 10)
    assert cfg.cf["seed"] == 2023 and cfg.cf["popularity"] == {"enabled": True}
    big = cfg.cf_for("ml1m_loo")["mf"]  # a million-row split: its own MF batch, the rest from settings.cf
    assert big["batch_size"] > cfg.cf["mf"]["batch_size"] and big["dim"] == cfg.cf["mf"]["dim"]
    assert cfg.cf_for("movies") == cfg.cf
    assert cfg.cf["als"] == {"factors": 64, "regularization": 0.01, "iterations": 15, "enabled": True}
    assert cfg.cf_for("ml1m_loo")["sasrec"]["enabled"] is False and cfg.cf["sasrec"]["enabled"] is True
    assert cfg.cf["mf"]["dim"] == 256 and cfg.cf["mf"]["threads"] == 0  # defaults filled in
    assert cfg.evaluation == {"ranking_negatives": 29, "ranking_k": [1, 3, 5], "bootstrap_samples": 1000, "seed": 2023,
                              "test_resamples": 10000, "noninferiority_margin": 0.02,
                              "regression_tolerance": 0.01, "min_subset_rows": 20,
                              "next_item_negatives": 100, "full_ranking_k": [10, 20], "top_k": 10, "tail_ratio": 0.2,
                              "floors": {"movies": {"mf": {"auc": 0.64, "uauc": 0.62}}}}
    # the next-item models: the papers' settings but the demo's epoch budgets
    assert cfg.cf["sasrec_next"]["maxlen"] == 200 and cfg.cf["sasrec_next"]["max_epochs"] < 200
    assert set(cfg.settings) == {"quarantine_max_share", "warm_threshold", "history_length", "cf", "evaluation",
                                 "base_spirit_excludes_target_users", "listwise_history_length"}


def test_defaults_fill_a_minimal_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("settings:\n  cf:\ndatasets:\n  d:\n    format: table\n    source: data.csv\n"
                    "    fields: {rating: null}\n    split: {protocol: date_cutoff, start: 2017-01-01, "
                    "train_end: '2017-12-01', end: 2018-01-01}\ndomains:\n  x: {dataset: d}\n")
    cfg = load_config(path)
    d = cfg.datasets["d"]
    assert d.location == tmp_path / "data.csv" and d.fields == {"rating": None}
    assert d.split == SplitSpec("date_cutoff", {"start": date(2017, 1, 1), "train_end": date(2017, 12, 1),
                                                "end": date(2018, 1, 1), "min_user_records": 0,
                                                "min_item_records": 0})
    x = cfg.domains["x"]
    assert (x.role, x.item_noun, x.category, x.reference, x.split) == ("target", "item", None, None, d.split)
    assert cfg.cf["mf"]["dim"] == 256 and cfg.evaluation["floors"] == {}


def test_validate_reports_every_problem_of_any_strict_model():
    class Inner(Strict):
        size: int = Field(1, ge=1)

    class A(Strict):
        kind: Literal["a"]
        alpha: float = 0.5

    class B(Strict):
        kind: Literal["b"]
        beta: int = 2

    class Outer(Strict):
        name: str
        inner: Optional[Inner] = None
        parts: dict[str, Inner] = {}
        choice: Annotated[Union[A, B], Field(discriminator="kind")] = A(kind="a")
        pair: tuple[float, float] = (0.9, 0.99)

    with pytest.raises(ConfigError) as err:
        validate(Outer, {"nme": "x", "inner": {"sise": 2}, "parts": {"p": {"size": 0}},
                         "choice": {"kind": "b", "alpha": 1}, "pair": [1]}, "profiles.yaml")
    assert str(err.value).splitlines()[0] == "profiles.yaml: 6 problems:"
    assert err.value.problems == [
        "nme: unknown key; did you mean `name`?",
        "inner.sise: unknown key; did you mean `size`?",
        "parts.p.size: must be >= 1 (got 0)",
        "choice.alpha: unknown key of kind b; `alpha` belongs to kind a",
        "pair: must hold at least 2 items (got [1])",
        "name: required key missing; the file needs 'name'",
    ]
    assert validate(Outer, {"name": "x", "pair": [1, 2]}, "p.yaml").pair == (1.0, 2.0)


def _generated(page: str, name: str) -> str:
    """The text between a page's `<!-- name:start -->` and `<!-- name:end -->` markers."""
    start_marker = f"<!-- {name}:start -->"
    return page[page.index(start_marker) + len(start_marker):page.index(f"<!-- {name}:end -->")]


def test_the_docs_show_the_generated_schema():
    page = (PROJECT_ROOT / "docs" / "reference" / "config-keys.md").read_text()
    assert _generated(page, "config-schema") == "\n" + cfgmod.schema_markdown(), (
        "docs/reference/config-keys.md's config tables are out of date: "
        "run `.venv/bin/python -m models.config --docs`")
    # every key of every section is in it
    for key in ("quarantine_max_share", "ranking_k", "init_std", "label_threshold", "train_slots", "train_end",
                "min_item_records", "categories", "interactions", "item_noun", "reference", "category"):
        assert f"| `{key}` |" in page


def test_markdown_command_prints_the_schema(capsys):
    assert cfgmod.main(["--markdown"]) == 0
    assert capsys.readouterr().out == cfgmod.schema_markdown()


# --- LLM profiles (config/profiles.yaml, and a user's file named by LLMREC_PROFILES) --------------

from models import profiles as profmod

SHIPPED_PROFILES = yaml.safe_load(profmod.PROFILES_FILE.read_text())


def profile_problems(tmp_path: Path, monkeypatch, user: dict) -> ConfigError:
    """The error of loading the shipped profiles plus a user's file holding `user` (name -> profile)."""
    path = tmp_path / "my_profiles.yaml"
    path.write_text(yaml.safe_dump({"profiles": user}, sort_keys=False))
    monkeypatch.setenv("LLMREC_PROFILES", str(path))
    with pytest.raises(ConfigError) as err:
        profmod.load_profiles()
    assert str(path) in str(err.value)
    return err.value


# (a user's profile extending `demo`, the expected key path, the expected hint)
PROFILE_PROBLEMS = [
    ({"trian": {"lr": 0.001}}, "profiles.mine.trian", "did you mean `train`?"),
    ({"train": {"lrr": 0.001}}, "profiles.mine.train.lrr", "did you mean `lr`?"),
    ({"train": {"batchsize": 8}}, "profiles.mine.train.batchsize", "did you mean `batch_size`?"),
    ({"lr": 0.001}, "profiles.mine.lr", "`lr` is a key of"),
    ({"modle": "x"}, "profiles.mine.modle", "did you mean `model`?"),
    ({"max_prompt_token": 400}, "profiles.mine.max_prompt_token", "did you mean `max_prompt_tokens`?"),
    ({"test_user": 10}, "profiles.mine.test_user", "did you mean `test_users`?"),
    ({"merge": {"learning_rate": [0.1]}}, "profiles.mine.merge.learning_rate", "did you mean `learning_rates`?"),
    ({"merge": {"lern_rows": 10}}, "profiles.mine.merge.lern_rows", "did you mean `learn_rows`?"),
    ({"train": {"learn_rows": 10}}, "profiles.mine.train.learn_rows", "`learn_rows` is a key of"),
    ({"collm": {"cf_model": ["mf"]}}, "profiles.mine.collm.cf_model", "did you mean `cf_models`?"),
    ({"collm": {"varient": ["t1"]}}, "profiles.mine.collm.varient", "did you mean `variants`?"),
    ({"base_spirit": {"valid_row": 5}}, "profiles.mine.base_spirit.valid_row", "did you mean `valid_rows`?"),
    ({"ingredient": {"trian": {"lr": 0.1}}}, "profiles.mine.ingredient.trian", "did you mean `train`?"),
    ({"ingredient": {"train": {"lora_rank": 4}}}, "profiles.mine.ingredient.train.lora_rank", "did you mean `lora_r`?"),
    # wrong types and out-of-range values
    ({"valid_rows": 2.5}, "profiles.mine.valid_rows", "fraction in (0, 1]"),
    ({"train": {"batch_size": -1}}, "profiles.mine.train.batch_size", "must be > 0 (got -1)"),
    ({"train": {"lr": 0.00001, "min_lr": 0.001}}, "profiles.mine.train", "min_lr 0.001 is above lr"),
    ({"merge": {"steps": 0}}, "profiles.mine.merge.steps", "must be > 0 (got 0)"),
    ({"collm": {"cf_models": ["mff"]}}, "profiles.mine.collm", "unknown CF model(s) ['mff']"),
    ({"collm": {"variants": ["t4"]}}, "profiles.mine.collm.variants", "two_step"),
    ({"collm": {"backbones": ["cocktial"]}}, "profiles.mine.collm.backbones", "cocktail"),
    ({"train": {"lora_dropout": 1.5}}, "profiles.mine.train.lora_dropout", "must be < 1.0 (got 1.5)"),
]


@pytest.mark.parametrize("change, path, hint", PROFILE_PROBLEMS, ids=[p for _, p, _ in PROFILE_PROBLEMS])
def test_a_profile_problem_names_its_path_and_the_fix(tmp_path, monkeypatch, change, path, hint):
    err = profile_problems(tmp_path, monkeypatch, {"mine": {"extends": "demo", **change}})
    assert len(err.problems) >= 1
    text = str(err)
    assert path in text and hint in text, text


def test_every_problem_of_a_profiles_file_is_listed_at_once(tmp_path, monkeypatch):
    err = profile_problems(tmp_path, monkeypatch, {
        "a": {"extends": "smoke", "trian": {}}, "b": {"extends": "smoke", "merge": {"stepss": 3}},
        "c": {"extends": "smoke", "test_users": -5}})
    text = str(err)
    for path in ("profiles.a.trian", "profiles.b.merge.stepss", "profiles.c.test_users"):
        assert path in text, text


def test_extends_names_an_existing_profile_without_a_loop(tmp_path, monkeypatch):
    assert "profiles.x.extends: no profile 'dmeo'" in str(profile_problems(tmp_path, monkeypatch,
                                                                           {"x": {"extends": "dmeo"}}))
    loop = profile_problems(tmp_path, monkeypatch, {"x": {"extends": "y"}, "y": {"extends": "x"}})
    assert "a loop" in str(loop)


def test_an_unknown_profile_name_suggests_the_closest(monkeypatch):
    monkeypatch.delenv("LLMREC_PROFILES", raising=False)
    with pytest.raises(ConfigError, match=r"choose one of smoke, demo, extended, full \(did you mean `demo`\?\)"):
        profmod.get_profile("dmeo")


def test_the_shipped_profiles_load_and_a_user_profile_extends_one(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMREC_PROFILES", raising=False)
    shipped = profmod.load_profiles()
    assert list(shipped) == list(SHIPPED_PROFILES["profiles"]) == ["smoke", "demo", "extended", "full"]
    assert shipped["demo"].adapter_train("base_spirit").eval_every == 16
    assert shipped["demo"].adapter_train("ingredient").eval_every == 8
    assert shipped["full"].valid_rows == 0.5
    # CoLLM's effective batch 32 (16 per GPU on 2 GPUs): micro-batches of 16, two per step on one process
    assert (shipped["full"].train.batch_size, shipped["full"].train.grad_accum) == (32, 2)
    assert (shipped["full"].collm_train().batch_size, shipped["full"].collm_train().grad_accum) == (32, 2)


def test_the_full_profile_has_reccocktails_published_settings():
    """PROTOCOLS section 7: r 16, alpha 32, dropout 0.05 on every linear layer, lr 2e-4 cosine with 5 %
    warm-up, 2 epochs base spirit / 4 ingredient, effective batch 128 by accumulation; the listwise merge
    has its own budget while the pointwise one keeps the profile's."""
    full = profmod.load_profiles()["full"]
    linear = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    for kind, epochs in (("base_spirit", 2), ("ingredient", 4)):
        c = full.listwise_train(kind)
        assert (c.lora_r, c.lora_alpha, c.lora_dropout, c.lr, c.warmup_ratio, c.epochs) == (16, 32, 0.05, 2e-4, 0.05,
                                                                                             epochs)
        assert tuple(c.target_modules) == linear and c.batch_size == 128 and c.grad_accum == 16
        steps = c.for_rows(1000)  # epochs and warm-up share resolved for a training set of 1,000 lists
        assert steps.max_steps == -(-epochs * 1000 // 128) and steps.warmup_steps == round(0.05 * steps.max_steps)
    assert full.adapter_train("ingredient").lora_r == 8  # CoLLM's pointwise adapters keep r 8 on q/v
    assert full.listwise_merge().learn_rows == 100 and full.listwise_merge().entropy_buffer == 60
    assert full.merge.learn_rows == 500 and full.for_listwise().merge == full.listwise_merge()


def test_a_user_profile_extends_a_shipped_one(tmp_path, monkeypatch):
    path = tmp_path / "my_profiles.yaml"
    path.write_text(yaml.safe_dump({"profiles": {"gpu": {"extends": "full", "model": "/models/qwen2",
                                                         "train": {"lr": 0.0002}}}}))
    monkeypatch.setenv("LLMREC_PROFILES", str(path))
    mine = profmod.get_profile("gpu")
    assert mine.model == "/models/qwen2" and mine.train.lr == 0.0002 and mine.train.batch_size == 32


def test_run_overrides_are_validated_like_the_file():
    demo = profmod.get_profile("demo")
    assert profmod.with_overrides(demo, {"train": {"max_steps": 5}}, "run").train.max_steps == 5
    with pytest.raises(ConfigError, match=r"merge\.stepz: unknown key; did you mean `steps`\?"):
        profmod.with_overrides(demo, {"merge": {"stepz": 5}}, "the run config's overrides")


def test_the_docs_show_the_generated_profiles():
    page = (PROJECT_ROOT / "docs" / "reference" / "profile-keys.md").read_text()
    assert _generated(page, "profile-schema") == "\n" + profmod.profiles_markdown(), (
        "docs/reference/profile-keys.md's profile tables are out of date: "
        "run `.venv/bin/python -m models.profiles --docs`")
    for key in ("max_prompt_tokens", "lora_r", "target_modules", "learn_rows", "task_arithmetic_lambdas",
                "cf_models", "backbones", "variants", "ranking_users"):
        assert f"| `{key}` |" in page
