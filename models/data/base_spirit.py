"""A base spirit that is really domain-general (RecCocktail, docs/protocols.md section 7): which domains it
learns from, the users it leaves out, the rows it trained on (kept beside the adapter), and what
those rows share with each domain that gets a cocktail. Both base spirits use it: the listwise one
(as published) and the pointwise one (our adaptation). No Dagster here."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from models.config import ProjectConfig
from models.data.workspace import Workspace

ROWS_FILE = "training_rows.parquet"  # beside the adapter folder: the rows the base spirit trained on
KEYS = ("dataset", "user_id", "item_id", "ts", "title")


def general_domains(cfg: ProjectConfig) -> list[str]:
    return sorted(d.name for d in cfg.domains.values() if d.role == "general")


def cocktail_domains(cfg: ProjectConfig) -> list[str]:
    """The domains that get a cocktail (listwise, or our pointwise one): targets and cold-start domains."""
    return sorted(d.name for d in cfg.domains.values() if d.role in ("target", "cold_start"))


def excluded_users(ws: Workspace, cfg: ProjectConfig, dataset: str) -> pl.Series:
    """The user ids of `dataset` that a domain getting a cocktail has (only domains of the same dataset
    can share a user); a cocktail domain whose split is not there yet is read once it is."""
    frames = [ws.read_split(d).select("user_id") for d in cocktail_domains(cfg)
              if cfg.domains[d].dataset == dataset and ws.split_path(d).exists()]
    return pl.concat(frames)["user_id"].unique() if frames else pl.Series("user_id", [], pl.Utf8)


def training_split(ws: Workspace, cfg: ProjectConfig, domain: str) -> tuple[pl.DataFrame, int]:
    """A general domain's split without the users of any cocktail domain of the same dataset (unless
    `settings.base_spirit_excludes_target_users` is false); returns it and the rows left out."""
    split = ws.read_split(domain)
    if not cfg.settings.get("base_spirit_excludes_target_users", True):
        return split, 0
    kept = split.filter(~pl.col("user_id").is_in(excluded_users(ws, cfg, cfg.domains[domain].dataset).implode()))
    if split.height and not kept.height:
        raise ValueError(
            f"every user of the general domain {domain!r} is also a user of a domain that gets a cocktail "
            f"(dataset {cfg.domains[domain].dataset!r}), so nothing is left for the base spirit: give it general "
            "domains of other users (another dataset), or set `settings.base_spirit_excludes_target_users: false` "
            "(the report then warns that the base spirit is not domain-general)")
    return kept, split.height - kept.height


def save_training_rows(out: Path, cfg: ProjectConfig, used: dict[str, pl.DataFrame]) -> Path:
    """Write the rows the base spirit trained on (general domain -> its rows) beside its adapter, so any
    target's overlap can be measured later, whenever the target's split is made."""
    frames = [rows.select(pl.lit(cfg.domains[d].dataset).alias("dataset"), "user_id", "item_id", "ts", "title")
              for d, rows in used.items()]
    df = pl.concat(frames) if frames else pl.DataFrame(schema={"dataset": pl.Utf8, "user_id": pl.Utf8,
                                                               "item_id": pl.Utf8, "ts": pl.Int64, "title": pl.Utf8})
    path = Path(out) / ROWS_FILE
    tmp = path.with_suffix(".tmp")
    df.unique().write_parquet(tmp)
    tmp.replace(path)
    return path


def overlap(base_rows: pl.DataFrame, target_split: pl.DataFrame, target_dataset: str) -> dict:
    """What the base spirit's training rows share with a target's split: rows (dataset, user, item,
    time), users (dataset, user) and items (by title, across datasets); each with the target's share."""
    tgt = target_split.select(pl.lit(target_dataset).alias("dataset"), "user_id", "item_id",
                              pl.col("ts").cast(base_rows.schema["ts"]), "title")
    out = {}
    for what, cols in (("rows", ["dataset", "user_id", "item_id", "ts"]), ("users", ["dataset", "user_id"]),
                       ("items", ["title"])):
        t = tgt.select(cols).unique()
        shared = t.join(base_rows.select(cols).unique(), on=cols, how="inner").height
        out[what] = shared
        out[f"{what}_share_of_target"] = round(shared / max(1, t.height), 4)
    return out


def overlap_of(ws: Workspace, cfg: ProjectConfig, kind: str, target: str) -> dict | None:
    """The overlap of the base spirit in adapters/<kind> (`base_spirit`, `listwise_base_spirit`) with
    `target`'s current split; None when that base spirit or the split is not there."""
    path = ws.adapter_dir(kind) / ROWS_FILE
    if not path.exists() or not ws.split_path(target).exists():
        return None
    return overlap(pl.read_parquet(path), ws.read_split(target), cfg.domains[target].dataset)


def overlaps(ws: Workspace, cfg: ProjectConfig, kind: str) -> dict[str, dict]:
    """target -> overlap, for every cocktail domain whose split exists."""
    found = {t: overlap_of(ws, cfg, kind, t) for t in cocktail_domains(cfg)}
    return {t: v for t, v in found.items() if v is not None}


def overlap_warning(stats: dict) -> str | None:
    if stats["rows"] or stats["users"]:
        return (f"the base spirit shares {stats['rows']} rows and {stats['users']} users with this domain: "
                "'base only' against the cocktail then says little about general against domain knowledge")
    return None


KIND_NAMES = {"base_spirit": "pointwise base spirit (ours)", "listwise_base_spirit": "listwise base spirit (as published)"}


def overlap_markdown(overlaps: dict[str, dict]) -> list[str]:
    """The report's statement of each base spirit's overlap with the domain (adapter kind -> stats),
    with a warning for each that shares rows or users; nothing when no base spirit was trained."""
    if not overlaps:
        return []
    lines = ["## The base spirits' training data against this domain", "",
             "A base spirit should be domain-general: no row and no user of this domain in its training data "
             "(`settings.base_spirit_excludes_target_users`). Shared items are counted by title, across datasets.",
             "", "| base spirit | rows shared | users shared | items shared (share of this domain's) |",
             "|---|---|---|---|"]
    lines += [f"| {KIND_NAMES.get(kind, kind)} | {s['rows']} | {s['users']} | {s['items']} "
              f"({s['items_share_of_target']:.1%}) |" for kind, s in overlaps.items()]
    lines.append("")
    for kind, stats in overlaps.items():
        warning = overlap_warning(stats)
        if warning:
            lines += [f"> **Warning** ({KIND_NAMES.get(kind, kind)}): {warning}.", ""]
    return lines


def overlap_metadata(stats_by_target: dict[str, dict], log=None) -> dict:
    """Flat `overlap/<target>/<what>` metadata, with `overlap/<target>/warning` for a target that shares
    rows or users (also sent to `log`)."""
    md = {}
    for t, stats in stats_by_target.items():
        md.update({f"overlap/{t}/{k}": v for k, v in stats.items()})
        warning = overlap_warning(stats)
        if warning:
            md[f"overlap/{t}/warning"] = warning
            if log:
                log(f"WARNING {t}: {warning}")
    return md
