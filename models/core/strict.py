"""Strict settings models: a file users write is read into pydantic models that refuse unknown keys,
and every problem of the file comes back in one error with its dotted key path and the likely fix
(the closest valid name, or where a misplaced key belongs). The config file (models/config.py) and
the LLM profiles (models/profiles.py) both use it, and their README tables are rendered from the
same models. No Dagster here."""

import difflib
import inspect
import types
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from functools import lru_cache
from typing import Annotated, Any, Iterable, Iterator, Literal, Mapping, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

class ConfigError(ValueError):
    """The config file says something we cannot run; the message names the key and the fix."""

    def __init__(self, message: str, problems: Iterable[str] = ()):
        super().__init__(message)
        self.problems = list(problems)


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


def partial_model(model: type[BaseModel], name: str, doc: str, base: type[BaseModel] = Strict) -> type[BaseModel]:
    """A model with every field of `model`, each optional (None: not changed) but keeping its
    constraints: the "changes to ..." sections (a profile's per-kind `train`, a domain's `cf`)."""
    from typing import Optional

    from pydantic import Field, create_model

    return create_model(name, __base__=base, __doc__=doc, __module__=model.__module__, **{
        k: (Optional[Annotated[(f.annotation, *f.metadata)]] if f.metadata else Optional[f.annotation],
            Field(None, description=f.description))
        for k, f in model.model_fields.items()})


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


def choices_text(choices: Iterable[Any]) -> str:
    return ", ".join(str(c) for c in choices)


def got_text(value: Any) -> str:
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
        return Problem(place.path[:-1], f"must hold at least {place.path[-1] + 1} items" + got_text(value))
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
            return Problem(place.path + (disc,), f"required key missing; choose one of {choices_text(tags)}")
        tag = ctx.get("tag")
        hint = closest(tag, tags)
        return Problem(place.path + (disc,), f"choose one of {choices_text(tags)}"
                       + (f"; did you mean `{hint}`?" if hint else ""), tag)
    if kind == "literal_error":
        tp, _, _ = _unwrap(place.node[1]) if place.node[0] == "leaf" else (None, None, None)
        choices = get_args(tp) if get_origin(tp) is Literal else ()
        hint = closest(value, choices) if choices else None
        text = f"choose one of {choices_text(choices)}" if choices else err["msg"]
        return Problem(place.path, text + (f"; did you mean `{hint}`?" if hint else ""), value)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        text = "must be a mapping of keys" + got_text(value)
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
        return Problem(place.path, f"must be {bounds[kind]} {limit}" + got_text(value))
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    msg = msg.replace("Input should be", "must be")
    if msg.startswith("choose one of"):  # a registry's membership check (`one_of`): as a Literal's error reads
        return Problem(place.path, msg, value)
    if not kind.startswith("value_error"):
        msg += got_text(value)
    return Problem(place.path, msg)


def one_of(registry: Mapping[str, Any], *more: str):
    """A validator for a name that must be one of a registry's keys (or `more`), checked when a file is
    read, so an entry registered after import counts; its error reads as a Literal's does."""
    def check(v: str) -> str:
        names = (*registry, *more)
        if v not in names:
            hint = closest(v, list(names))
            raise ValueError(f"choose one of {choices_text(names)}" + (f"; did you mean `{hint}`?" if hint else ""))
        return v
    return AfterValidator(check)


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


# --- the README's tables, rendered from the models -----------------------------------------------


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


def schema_markdown(root: type[BaseModel]) -> str:
    """Every key of a file of `root`, one table per mapping, from the models' fields."""
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
