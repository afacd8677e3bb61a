"""The evaluation report: every method on one frame per domain, with user-level intervals, the
papers' claims as corrected paired tests, chance levels and sanity guards; Markdown for people, JSON
for machines. No Dagster here; test labels are read here only.

A frame (models/metrics/frames.py) is the set of test rows, or of candidate lists, a table rests on, and the
methods that scored all of it: the evaluation sample (seeded users, all of their rows) where every
method is; all test rows (or lists) where only the methods cheap enough to score them all are; and
RecCocktail's listwise lists, ranked by the LLM methods and, on the very same lists, by the CF
models. No table mixes frames, and every table says which frame it is and how many rows, users and
lists it has.

One tie policy for every ranking metric: random tie-breaking, by its expectation
(`models.metrics.ranking.Ranks`): a constant scorer gets the chance level, which every ranking and AUC table
prints as its `chance` row.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.reporting import comparisons as comparisons_mod
from models.reporting import next_item as next_item_report
from models.metrics import frames as frames_mod
from models.metrics import ranking as metrics
from models.reporting import sanity
from models.metrics import stats
from models.metrics.frames import Frame, Subset
from models.registry.methods import ENSEMBLE_RULE, ENSEMBLES
from models.registry.published import PAPER_NAMES, PUBLISHED
from models.registry.tasks import TASKS
from models.core.files import file_sha256

TIE_POLICY = ("random tie-breaking, by its expectation: a target tied with t candidates is at each of those t + 1 "
              "places with equal chance, and HR@k / NDCG@k are the means over them (AUC counts a tie as half, CoLLM's "
              "NDCG lets tied rows share their discounts: the same expectation); a constant scorer gets the chance "
              "level")
# the frames of lists every report may have; any other frame of lists is a task kind's own (RecCocktail's: `listwise`)
LIST_FRAMES = ("sample_lists", "all_lists")
LIST_INTRO = ("The LLM methods and the CF models rank the same lists (the target and its seeded negatives of "
              "`ranking_candidates`). **score**: the candidates ranked by score: the CF model's, or the LLM's.")
# a task kind's section heading and introduction (others get LIST_INTRO under a heading of their name)
LIST_SECTIONS = {"listwise": (
    "RecCocktail as published: next-item selection among 30 candidates",
    "The LLM methods and the CF models rank the same lists (the target and its seeded negatives of "
    "`ranking_candidates`; the LLM sees them shuffled in the authors' prompt). **gen** (as published): greedy "
    "generation split on `||`, exact title match, a target not named is a miss. **score**: the candidates ranked by "
    "score: the CF model's, or the log-likelihood of each title as the first answer item for the LLM (ours, "
    "deterministic). Base spirit, ingredients and the merge are trained and selected on validation data only.")}


def task_list_frames(frames: dict) -> list[str]:
    """The frames of lists that belong to a task kind (RecCocktail's `listwise`, or a new one's)."""
    return [n for n, f in frames.items() if getattr(f, "kind", None) == "lists" and n not in LIST_FRAMES]


GENERATED = (("hr", 1), ("hr", 3), ("ndcg", 3), ("ndcg", 5))  # RecCocktail's generated metrics (NDCG@1 = HR@1)


# the pointwise rows of the cocktail stage that are our adaptation of RecCocktail (docs/protocols.md section 8):
# every merge method on the Yes/No adapters but the ingredient alone, which is TALLRec as published
POINTWISE_COCKTAIL_ROWS = ("base_spirit", "equal_weights", "task_arithmetic", "ties", "dare", "reccocktail",
                           "collm_mf_cocktail")


def pointwise_cocktail_note(method_names: list[str]) -> list[str]:
    """The report's statement that the pointwise cocktail rows are ours; nothing when it has none of them."""
    ours = [m for m in method_names if m in POINTWISE_COCKTAIL_ROWS or m.endswith("_cocktail")]
    if not ours:
        return []
    lines = ["## Our pointwise adaptation of RecCocktail", "",
             f"The rows {', '.join(f'`{m}`' for m in ours)} come from **our adaptation** of RecCocktail to CoLLM's "
             "Yes/No task (docs/protocols.md section 8): the base spirit and the ingredient are Yes/No adapters, and the "
             "merge minimises the binary entropy of P(Yes). It is not the paper's method; RecCocktail as published "
             "is the listwise task (its own section, where the domain has `task: listwise` or `both`).", ""]
    return lines


@dataclass
class MethodScores:
    """One method's scores on the test rows (NaN where the method did not score a row) and,
    optionally, on every test row's candidate list (target first)."""

    name: str
    pointwise: np.ndarray
    ranking: np.ndarray | None = None  # (test rows, 1 + negatives)
    source: dict[str, Any] = field(default_factory=dict)  # lineage: asset, path, sha256, data version


@dataclass
class ListScores:
    """One method's ranked candidate lists: the test row of each list, the target's standing by the
    method's scores (the candidate likelihood for a listwise LLM) and, for a listwise LLM, by its
    greedy generation (a target it does not name is never a hit), with the lists whose generation
    named no candidate and the generated items that name none."""

    name: str
    rows: np.ndarray
    by_score: metrics.Ranks
    n_candidates: int
    generated: metrics.Ranks | None = None
    named_none: np.ndarray | None = None
    invalid_items: np.ndarray | None = None
    source: str = ""

    def positions(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.rows, rows)

    def values(self, metric: str, rows: np.ndarray) -> np.ndarray | None:
        """Each of `rows`' lists' expected `hr@k` / `ndcg@k` (by score) or `generated_hr@k` / ... ;
        None when the method has no generation."""
        name, k = metric.split("@")
        ranks = self.by_score
        if name.startswith("own_"):  # the method's own answer: its generation if it generates, else its scores
            name = name.replace("own_", "generated_" if self.generated is not None else "")
        if name.startswith("generated_"):
            if self.generated is None:
                return None
            ranks, name = self.generated, name.removeprefix("generated_")
        return metrics.ranking_values(ranks[self.positions(rows)], name, int(k))


def list_scores(m: MethodScores, targets: np.ndarray) -> ListScores | None:
    """The lists a pointwise scorer ranked (its `ranking`, target first) at the target rows."""
    if m.ranking is None:
        return None
    rows = np.flatnonzero(~np.isnan(m.ranking).any(axis=1) & targets)
    ranks = metrics.target_ranks(m.ranking[rows, 0], m.ranking[rows, 1:])
    return ListScores(m.name, rows, ranks, int(m.ranking.shape[1]), source=str(m.source.get("asset", "")))


def subset_masks(test: pl.DataFrame) -> dict[str, np.ndarray]:
    warm = test["warm"].to_numpy().astype(bool)
    not_cold = test["not_cold"].to_numpy().astype(bool)
    return {"all": np.ones(test.height, bool), "warm": warm, "cold": ~not_cold}


# what an estimate's n counts, per metric
UNITS = {"auc": "rows", "uauc": "users with both labels", "user_ndcg": "users with both labels"}
# the pointwise metrics of every method (docs/protocols.md section 5): `user_ndcg` is CoLLM's NDCG column
POINTWISE_METRICS = ("auc", "uauc", "user_ndcg")
METRIC_LABELS = {"auc": "AUC", "uauc": "UAUC", "user_ndcg": "NDCG"}


def list_metric_names(ks: tuple[int, ...], generated: bool) -> list[str]:
    """HR@k and NDCG@k by score (no NDCG@1: it equals HR@1), then the generated metrics."""
    out = [f"{m}@{k}" for k in ks for m in ("hr", "ndcg") if not (m == "ndcg" and k == 1)]
    return out + ([f"generated_{m}@{k}" for m, k in GENERATED] if generated else [])


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric) or metric.replace("generated_", "gen ").upper()


def _column(metric: str, subset: str) -> str:
    return METRIC_LABELS[metric] + ("" if subset == "all" else f" {subset}")


# ---------------------------------------------------------------------------------------------------
# frames


def _users_text(n_users: int, total_users: int) -> str:
    if n_users < total_users:
        return f"{n_users:,} of the {total_users:,} test users"
    return f"all {total_users:,} test users"


def row_frames(test: pl.DataFrame, methods: list[MethodScores]) -> dict[str, Frame]:
    """The pointwise frames: the evaluation sample (the rows the sampled methods scored, with every
    method) and all test rows (the methods that scored every row). The sample comes first: it is
    where the methods are compared."""
    users = test["user_id"].to_numpy()
    total = int(np.unique(users).size)
    scored = {m.name: ~np.isnan(m.pointwise) for m in methods}
    everything = [n for n, s in scored.items() if s.all()]
    partial = [n for n, s in scored.items() if s.any() and not s.all()]
    out: dict[str, Frame] = {}
    if partial:
        mask = np.logical_and.reduce([scored[n] for n in partial])
        f = Frame("sample", "rows", mask, tuple(everything + partial), "", "")
        more = [n for n in partial if scored[n].sum() > mask.sum()]
        extra = (f" ({', '.join(more)} scored more rows; only the rows every method scored are used)" if more else "")
        out["sample"] = Frame("sample", "rows", mask, f.methods,
                              f"Evaluation sample: {_users_text(f.users(users), total)} (seeded draw), all of their "
                              f"{f.n:,} test rows; every method scored them{extra}",
                              f"sample: {f.users(users):,} users, {f.n:,} rows")
    if everything:
        out["all"] = Frame("all", "rows", np.ones(test.height, bool), tuple(everything),
                           f"All test rows: {test.height:,} rows of {total:,} users; the methods that scored every row "
                           f"({', '.join(everything)})", f"all rows: {total:,} users, {test.height:,} rows")
    return out


def list_frames(test: pl.DataFrame, lists: dict[str, ListScores], targets: np.ndarray, rule: str, n_negatives: int,
                prefix: str = "", what: str = "") -> dict[str, tuple[Frame, dict[str, ListScores]]]:
    """Frames of candidate lists (one per target row) from the methods' ranked lists: all target
    lists (the methods that ranked them all) and the sample's lists (the lists every other method
    ranked, with every method)."""
    users = test["user_id"].to_numpy()
    total = int(np.unique(users[targets]).size)
    covered = {n: np.isin(np.flatnonzero(targets), ls.rows).all() for n, ls in lists.items()}
    everything = [n for n, c in covered.items() if c]
    partial = [n for n, c in covered.items() if not c and lists[n].rows.size]
    out: dict[str, tuple[Frame, dict[str, ListScores]]] = {}
    lists_of = f"lists of {1 + n_negatives} candidates"
    if partial:
        mask = np.zeros(test.height, bool)
        mask[lists[partial[0]].rows] = True
        for n in partial[1:]:
            inner = np.zeros(test.height, bool)
            inner[lists[n].rows] = True
            mask &= inner
        mask &= targets
        names = tuple(everything + partial)
        f = Frame(prefix + "sample_lists", "lists", mask, names, "", "")
        out[f.name] = (Frame(f.name, "lists", mask, names,
                             f"{what}Evaluation sample's lists: the {f.n:,} {lists_of} of "
                             f"{_users_text(f.users(users), total)} (seeded draw; {rule}); every method ranked these "
                             "same lists",
                             f"sample: {f.users(users):,} users, {f.n:,} lists"), {n: lists[n] for n in names})
    if everything:
        names = tuple(everything)
        f = Frame(prefix + "all_lists", "lists", targets.copy(), names, "", "")
        out[f.name] = (Frame(f.name, "lists", f.mask, names,
                             f"{what}All lists: the {f.n:,} {lists_of} of {total:,} users ({rule}); the methods "
                             f"that ranked every list ({', '.join(names)})", f"all lists: {total:,} users, {f.n:,} lists"),
                       {n: lists[n] for n in names})
    return out


# ---------------------------------------------------------------------------------------------------
# evaluation


def _estimate(est: metrics.Estimate, n_users: int, min_units: int, unit: str) -> dict:
    """An estimate as metrics.json keeps it: no estimate below `min_units` of its unit; no interval
    from fewer than `min_units` users (a bootstrap over a handful of clusters is no interval)."""
    out = est.as_dict()
    out["users"] = n_users
    if est.n < min_units:
        out["not_applicable"] = f"only {est.n} {unit} (< evaluation.min_subset_rows = {min_units})"
    elif n_users < min_units:
        out["no_interval"] = f"{n_users} users (an interval needs evaluation.min_subset_rows = {min_units})"
        out["ci_low"] = out["ci_high"] = float("nan")
    return out


def evaluate_rows(frame: Frame, frame_subsets: list[Subset], test: pl.DataFrame, methods: dict[str, MethodScores],
                  samples: int, seed: int, min_units: int, one_row_per_user: bool) -> dict:
    """metrics[method][subset][metric] of a frame of rows, for its shown subsets: AUC (n rows), and
    UAUC and CoLLM's NDCG (n users with both labels) unless every user has one row."""
    labels = test["label"].to_numpy().astype(np.int64)
    users = test["user_id"].to_numpy()
    out: dict[str, dict] = {}
    for name in frame.methods:
        s = methods[name].pointwise
        out[name] = {}
        for sub in frame_subsets:
            if not sub.shown:
                continue
            sel = sub.mask
            y, u, x = labels[sel], users[sel], s[sel]
            n_users = int(np.unique(u).size)
            res = {"auc": _estimate(metrics.auc_estimate(u, y, x, samples, seed), n_users, min_units, "rows")}
            if len(np.unique(y)) < 2:
                res["auc"]["not_applicable"] = f"one label class on these {int(sel.sum())} rows"
            if not one_row_per_user:
                for key, fn in (("uauc", metrics.uauc_estimate), ("user_ndcg", metrics.user_ndcg_estimate)):
                    est = fn(u, y, x, samples, seed)
                    res[key] = _estimate(est, est.n, min_units, UNITS[key])
            out[name][sub.name] = res
    return out


def evaluate_lists(frame: Frame, frame_subsets: list[Subset], users: np.ndarray, lists: dict[str, ListScores],
                   ks: tuple[int, ...], samples: int, seed: int, min_units: int) -> tuple[dict, dict]:
    """(metrics[method][subset][metric], counts[method][subset]) of a frame of lists: HR@k and
    NDCG@k by score, and the generated ones where the method generates (with the lists whose
    generation named no candidate and the generated items that named none)."""
    out, counts = {}, {}
    for name in frame.methods:
        ls = lists[name]
        out[name], counts[name] = {}, {}
        for sub in frame_subsets:
            if not sub.shown:
                continue
            rows = np.flatnonzero(sub.mask)
            u = users[rows]
            n_users = int(np.unique(u).size)
            res = {}
            for metric in list_metric_names(ks, ls.generated is not None):
                values = ls.values(metric, rows)
                est = metrics.Estimate(float(values.mean()) if values.size else float("nan"),
                                       *stats.mean_bootstrap(values, u, samples, seed), int(values.size))
                res[metric] = _estimate(est, n_users, min_units, "lists")
            out[name][sub.name] = res
            if ls.generated is not None:
                at = ls.positions(rows)
                counts[name][sub.name] = {"lists": int(rows.size), "no_candidate_named": int(ls.named_none[at].sum()),
                                          "invalid_items": int(ls.invalid_items[at].sum())}
    return out, counts


def chance_rows(frame_subsets: list[Subset], test: pl.DataFrame, one_row_per_user: bool) -> dict:
    """The chance level of each pointwise metric per shown subset: what a constant scorer gets under
    the report's tie policy (AUC and UAUC 0.5; CoLLM's NDCG depends on each user's labels)."""
    labels = test["label"].to_numpy()
    users = test["user_id"].to_numpy()
    out = {}
    for sub in frame_subsets:
        if sub.shown:
            out[sub.name] = {"auc": 0.5}
            if not one_row_per_user:
                out[sub.name].update({"uauc": 0.5, "user_ndcg": metrics.user_ndcg(
                    users[sub.mask], labels[sub.mask], np.zeros(int(sub.mask.sum())))})
    return out


def chance_lists(frame_subsets: list[Subset], n_candidates: int, ks: tuple[int, ...], generated: bool) -> dict:
    """The chance level of each list metric: a random order of `n_candidates` (the same for every subset)."""
    values = {}
    for metric in list_metric_names(ks, generated):
        name, k = metric.removeprefix("generated_").split("@")
        values[metric] = metrics.chance_level(n_candidates, name, int(k))
    return {sub.name: dict(values) for sub in frame_subsets if sub.shown}


def missing_metrics(result: dict, frames: dict[str, dict]) -> list[str]:
    """Every (frame, method, subset, metric) that is absent or NaN without a reason (`not_applicable`):
    what the completeness gate reports. `frames`: metrics.json's frames (their methods)."""
    problems = []
    for frame, info in frames.items():
        got = result.get(frame, {})
        for m in info["methods"]:
            if m not in got:
                problems.append(f"{frame}/{m}: missing")
                continue
            for subset, ests in got[m].items():
                for metric, est in ests.items():
                    if est.get("not_applicable"):
                        continue
                    if est["value"] is None or (isinstance(est["value"], float) and math.isnan(est["value"])):
                        problems.append(f"{frame}/{m}/{subset}/{metric}: NaN (n={est['n']})")
    return problems


# ---------------------------------------------------------------------------------------------------
# Markdown


def _fmt(est: dict | None) -> str:
    if est is None:
        return "–"
    if est.get("not_applicable"):
        return "n/a†"
    v, lo, hi = est["value"], est["ci_low"], est["ci_high"]
    if v is None or math.isnan(v):
        return "n/a"
    if est.get("no_interval"):
        return f"{v:.4f}‡"
    if lo is None or math.isnan(lo):
        return f"{v:.4f}"
    return f"{v:.4f} [{lo:.3f}, {hi:.3f}]"


def _footnotes(results: list[dict]) -> list[str]:
    """The † (not applicable) and ‡ (no interval) reasons of the estimates in `results`
    (method -> subset -> metric -> estimate), each once."""
    ests = [e for r in results for subsets in r.values() for ms in subsets.values() for e in ms.values()]
    na = list(dict.fromkeys(e["not_applicable"] for e in ests if e.get("not_applicable")))
    ni = list(dict.fromkeys(e["no_interval"] for e in ests if e.get("no_interval") and not e.get("not_applicable")))
    lines = []
    if na:
        lines.append("† not applicable: " + "; ".join(na) + ".")
    if ni:
        lines.append("‡ no interval: the estimate rests on " + "; ".join(ni) + ".")
    return lines + ([""] if lines else [])


def _subset_lines(frame_subsets: list[Subset]) -> list[str]:
    hidden = [s.note for s in frame_subsets if not s.shown]
    return ([f"Subsets not shown: {'; '.join(hidden)}.", ""] if hidden else [])


def _n_line(frame: Frame, frame_subsets: list[Subset], test: pl.DataFrame, one_row_per_user: bool) -> str:
    users = test["user_id"].to_numpy()
    labels = test["label"].to_numpy()
    parts = []
    for s in frame_subsets:
        if not s.shown:
            continue
        u = users[s.mask]
        text = f"{s.name}: {int(s.mask.sum()):,} {frame.unit()}, {np.unique(u).size:,} users"
        if frame.kind == "rows" and not one_row_per_user:
            both = metrics.per_user_auc(u, labels[s.mask], np.zeros(u.size))[0].size
            text += f" ({both:,} with both labels)"
        parts.append(text)
    return "n: " + "; ".join(parts) + "."


def rows_table(frame: Frame, frame_subsets: list[Subset], result: dict, chance: dict, test: pl.DataFrame,
               one_row_per_user: bool) -> list[str]:
    """A frame's pointwise table; a column that no method of the frame has (not applicable for
    every one, e.g. UAUC on a sample with too few users with both labels) is left out, its reason in
    the footnote."""
    shown = [s.name for s in frame_subsets if s.shown]
    keys = ("auc",) if one_row_per_user else POINTWISE_METRICS
    cols = [(k, s) for s in shown for k in keys
            if not all(result[m][s][k].get("not_applicable") for m in frame.methods)]
    lines = [f"### {frame.description}", "", _n_line(frame, frame_subsets, test, one_row_per_user), "",
             "| method | n rows | " + " | ".join(_column(k, s) for k, s in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    n_all = frame.n
    for m in frame.methods:
        lines.append(f"| {m} | {n_all:,} | " + " | ".join(_fmt(result[m][s].get(k)) for k, s in cols) + " |")
    lines.append("| *chance* | | " + " | ".join(f"*{chance[s][k]:.4f}*" for k, s in cols) + " |")
    dropped = [_column(k, s) for s in shown for k in keys if (k, s) not in cols]
    lines += [""] + _footnotes([result])
    if dropped:
        lines += [f"Left out, as no method of this frame has them (†): {', '.join(dropped)}.", ""]
    lines += _subset_lines(frame_subsets)
    if one_row_per_user:
        lines += ["UAUC and CoLLM's NDCG rank each user's own rows: with one test row per user (leave-one-out) they do "
                  "not exist, and the table leaves them out.", ""]
    return lines


def lists_table(frame: Frame, frame_subsets: list[Subset], result: dict, counts: dict, chance: dict,
                ks: tuple[int, ...], test: pl.DataFrame, labels: dict[str, str] | None = None) -> list[str]:
    labels = labels or {}
    generated = any(counts.get(m) for m in frame.methods)
    names = list_metric_names(ks, generated)
    lines = [f"### {frame.description}", "", _n_line(frame, frame_subsets, test, True), ""]
    for sub in frame_subsets:
        if not sub.shown:
            continue
        head = "| method | n lists | " + " | ".join(("" if m.startswith("generated_") else "score ") + metric_label(m)
                                                   for m in names)
        head += " | lists naming no candidate |" if generated else " |"
        lines += ([f"**{sub.name}**", ""] if len(frame_subsets) > 1 and any(s.shown for s in frame_subsets[1:]) else [])
        lines += [head, "|---|---|" + "---|" * (len(names) + (1 if generated else 0))]
        for m in frame.methods:
            cells = [_fmt(result[m][sub.name].get(k)) for k in names]
            c = counts.get(m, {}).get(sub.name)
            tail = (f" | {c['no_candidate_named']} of {c['lists']} |" if c else " | – |") if generated else " |"
            lines.append(f"| {labels.get(m, m)} | {int(sub.mask.sum()):,} | " + " | ".join(cells) + tail)
        lines.append("| *chance* | | " + " | ".join(f"*{chance[sub.name][k]:.4f}*" for k in names)
                     + (" | |" if generated else " |"))
        lines.append("")
    return lines + _footnotes([result]) + _subset_lines(frame_subsets)


def best_per_metric(blocks: list[tuple[Frame, dict, dict, list[str]]]) -> list[str]:
    """The headline's best method per metric: (frame, metrics, chance, metric names) of each frame
    where methods are compared; the highest point estimate on all of the frame's rows or lists."""
    lines = ["**Best per metric** (highest point estimate on all of the frame; whether it beats the others is the "
             "paired comparisons' question):", "", "| metric | frame | best | value [95 % CI] | chance |",
             "|---|---|---|---|---|"]
    found = False
    for frame, result, chance, names in blocks:
        for metric in names:
            cands = [(m, result[m]["all"][metric]) for m in frame.methods if metric in result[m].get("all", {})
                     and not result[m]["all"][metric].get("not_applicable")
                     and not math.isnan(result[m]["all"][metric]["value"])]
            if not cands:
                continue
            m, est = max(cands, key=lambda c: c[1]["value"])
            ties = [n for n, e in cands if e["value"] == est["value"]]
            who = m if len(ties) == 1 else f"{len(ties)} tied: {', '.join(ties)}"
            lines.append(f"| {metric_label(metric)} | {frame.short} | {who} | {_fmt(est)} | "
                         f"{chance['all'][metric]:.4f} |")
            found = True
    return lines + [""] if found else []


def _published_collm(reference: str, settings: dict, frame: Frame, result: dict) -> list[str]:
    num = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines = ["## Published numbers for this protocol (the papers' test sets, all their rows)", "",
             "| method | backbone | AUC | UAUC | NDCG |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {b} | {num(a)} | {num(u)} | {num(n)} |" for m, b, a, u, n in PUBLISHED[reference]]
    backbone = settings.get("llm") or "?"
    lines += ["", f"Ours on the same protocol, on one frame ({frame.short}; LLM backbone `{backbone}`, profile "
              f"`{settings.get('profile', '?')}`). CoLLM variants: two-step (default), T1 (step 2 also tunes the CF "
              "vectors), T2 (step 2 trains them from scratch), T3 (one step from the raw base LLM); other CF sources "
              "and variants are in the tables above (`collm_<cf>[_<variant>]`). \"w/o CIE\" is TALLRec. Ensembles: "
              f"{ENSEMBLE_RULE}.", "",
              "| paper's method | ours | backbone | AUC | UAUC | NDCG |", "|---|---|---|---|---|---|"]
    fmt = lambda e: "n/a" if e is None or e.get("not_applicable") else f"{e['value']:.4f}"  # noqa: E731
    lines += [f"| {paper} | {mine} | {'-' if mine in ('mf', 'lightgcn', 'sasrec') else backbone} | "
              + " | ".join(fmt(result[mine]['all'].get(k)) for k in POINTWISE_METRICS) + " |"
              for paper, mine in PAPER_NAMES.items() if mine in result]
    return lines + [""]


def how_to_read(margin: float, samples: int, test_samples: int) -> list[str]:
    return [
        "## How to read this", "",
        "- Every table names its **frame**: the rows (or candidate lists) its numbers rest on, with their n. Methods "
        "are compared only within one frame; the evaluation sample is whole users (seeded), so UAUC and CoLLM's NDCG "
        "exist for every method there once enough of its users have both labels.",
        f"- Intervals are 95 % user-level bootstrap percentiles ({samples:,} resamples: users resampled with all their "
        "rows or lists); an estimate from fewer than `evaluation.min_subset_rows` users has no interval (‡).",
        f"- Claims and paired comparisons are paired user-level bootstrap tests ({test_samples:,} resamples, centred "
        "on the observed difference): p is the share of resamples at least as far from the estimate as the estimate is "
        "from the null value, and the 95 % interval shown is the matching symmetric one, so p <= 0.05 exactly when the "
        "interval excludes the null. The claims form one family and the paired comparisons another; each is "
        "Holm-adjusted, and the verdicts read the adjusted p. \"≥\" claims are non-inferiority tests with a margin of "
        f"{margin:g} (`evaluation.noninferiority_margin`, in the metric's units).",
        f"- Ties: {TIE_POLICY}. The *chance* row of each table is that level: 0.5 for AUC and UAUC, k/n for HR@k "
        "among n candidates.",
        "- A CF model gives every cold user or item a zero vector, so its cold-row scores carry no collaborative "
        "signal (a constant: AUC 0.5); CoLLM falls back to the text prompt there, so its cold rows are TALLRec's.",
        "",
    ]


def lineage_lines(settings: dict, lineage: list[dict]) -> list[str]:
    lines = ["## Settings", "", "```json", json.dumps(settings, indent=2, default=str), "```", "", "## Lineage", "",
             "| input | data version | artifact | sha256 |", "|---|---|---|---|"]
    return lines + [f"| {x.get('asset')} | {x.get('data_version', '')} | `{x.get('path', '')}` | "
                    f"{str(x.get('sha256', ''))[:16]} |" for x in lineage]


# ---------------------------------------------------------------------------------------------------
# plots


def _styles(n: int) -> list[dict]:
    """n distinct line styles: tab20's colours, then the same colours dashed and dotted."""
    import matplotlib

    colours = matplotlib.colormaps["tab20"].colors
    dashes = ("-", "--", ":")
    return [{"color": colours[k % len(colours)], "linestyle": dashes[(k // len(colours)) % len(dashes)]}
            for k in range(n)]


def plot_roc(frame: Frame, frame_subsets: list[Subset], test: pl.DataFrame, methods: dict[str, MethodScores],
             path: Path) -> Path:
    """ROC curves of every method of a frame, one panel per shown subset; each curve's legend gives
    its AUC and the rows it rests on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    labels = test["label"].to_numpy()
    shown = [s for s in frame_subsets if s.shown]
    styles = _styles(len(frame.methods))
    fig, axes = plt.subplots(1, len(shown), figsize=(6.2 * len(shown), 5.4), sharey=True, squeeze=False)
    for ax, sub in zip(axes[0], shown):
        sel = sub.mask
        if labels[sel].min() == labels[sel].max():
            ax.text(0.5, 0.5, "one label class: no curve", ha="center", va="center", color="grey")
        else:
            for style, name in zip(styles, frame.methods):
                fpr, tpr, _ = roc_curve(labels[sel], methods[name].pointwise[sel])
                ax.plot(fpr, tpr, lw=1.1, label=f"{name} {metrics.auc(labels[sel], methods[name].pointwise[sel]):.3f}",
                        **style)
            ax.legend(fontsize=7, loc="lower right", title=f"AUC on {int(sel.sum()):,} rows", title_fontsize=7)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_title(f"ROC, {sub.name}: {int(sel.sum()):,} rows of {frame.short}", fontsize=9)
        ax.set_xlabel("false positive rate")
    axes[0][0].set_ylabel("true positive rate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_metrics(frame: Frame, frame_subsets: list[Subset], result: dict, chance: dict, path: Path) -> Path:
    """The frame's pointwise metrics by method and shown subset, with intervals; no bar where a metric
    is not applicable (the table's n/a), the full 0-1 axis, and each metric's chance level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [s.name for s in frame_subsets if s.shown]
    keys = [k for k in POINTWISE_METRICS if any(k in result[m][s] and not result[m][s][k].get("not_applicable")
                                                for m in frame.methods for s in shown)]
    methods = list(frame.methods)
    fig, axes = plt.subplots(len(keys), 1, figsize=(max(7.0, 0.45 * len(methods) + 2), 3.9 * len(keys)),
                             squeeze=False)
    width = 0.8 / len(shown)
    colours = ("tab:blue", "tab:orange", "tab:green")
    for ax, key in zip(axes[:, 0], keys):
        for j, subset in enumerate(shown):
            x = np.arange(len(methods)) + (j - (len(shown) - 1) / 2) * width
            labelled = False
            for i, m in enumerate(methods):
                est = result[m][subset].get(key)
                if point(est) is None:
                    ax.text(x[i], 0.02, "n/a", rotation=90, fontsize=6, ha="center", va="bottom", color="grey")
                    continue
                v, lo, hi = est["value"], est["ci_low"], est["ci_high"]
                err = None if lo is None or math.isnan(lo) else [[max(v - lo, 0)], [max(hi - v, 0)]]
                ax.bar(x[i], v, width, yerr=err, capsize=2, color=colours[j], label=None if labelled else subset)
                labelled = True
            ax.hlines(chance[subset][key], x[0] - width / 2, x[-1] + width / 2, color=colours[j], lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(methods)), methods, rotation=40, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(f"{METRIC_LABELS[key]} on {frame.short} (dashed: chance)", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_forest(compared: list[dict], path: Path, metric: str = "auc") -> Path | None:
    """The paired differences of one metric on all of a frame (a − b with its 95 % interval), one line
    per pair: a forest plot. None when there is nothing to draw."""
    rows = [c for c in compared if c["metric"] == metric and c["subset"] == "all" and c.get("shown")
            and not c.get("not_applicable") and c.get("ci_low") is not None and not math.isnan(c["ci_low"])]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{c['a']} − {c['b']}" for c in reversed(rows)]
    fig, ax = plt.subplots(figsize=(6.0 + 0.075 * max(len(n) for n in names), 1.4 + 0.28 * len(rows)))
    for y, c in enumerate(reversed(rows)):
        significant = c.get("p_holm", 1.0) <= comparisons_mod.ALPHA
        colour = "tab:grey" if not significant else "tab:green" if c["difference"] > 0 else "tab:red"
        ax.errorbar(c["difference"], y, xerr=[[c["difference"] - c["ci_low"]], [c["ci_high"] - c["difference"]]],
                    fmt="o", color=colour, ms=3, capsize=2)
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel(f"{metric_label(metric)} difference, 95 % paired user-level interval "
                  "(green / red: Holm-adjusted p <= 0.05)", fontsize=8)
    ax.set_title(f"Paired differences on {rows[0]['n_rows']:,} rows of {rows[0]['n_users']:,} users", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------
# the cross-domain summary

SUMMARY_ROW_COLUMNS = (("auc", "all"), ("auc", "warm"), ("auc", "cold"), ("uauc", "all"), ("user_ndcg", "all"))
SUMMARY_LIST_COLUMNS = ("hr@1", "ndcg@5", "generated_hr@1")


def comparison_frames(payload: dict) -> tuple[str | None, str | None]:
    """The frames a report compares methods in: the pointwise one (the evaluation sample where LLM
    methods scored one, else all rows) and the list one (RecCocktail's lists, else the sample's
    lists, else all lists)."""
    frames = payload.get("frames", {})
    rows = next((f for f in ("sample", "all") if f in frames), None)
    own = [n for n, f in frames.items() if f["kind"] == "lists" and n not in LIST_FRAMES]
    lists = next((f for f in (*own, "sample_lists", "all_lists") if f in frames), None)
    return rows, lists


def _cell(est: dict | None) -> str:
    return "n/a" if est is None else _fmt(est).replace("n/a†", "n/a")


def summary_markdown(reports: dict[str, dict]) -> tuple[str, list[dict]]:
    """One table per frame kind across domains, each domain on its comparison frame (named in the
    `frame` column, with its n), and every domain's claims with their verdicts."""
    table, list_rows = [], []
    for domain, rep in reports.items():
        rows_frame, lists_frame = comparison_frames(rep)
        if rows_frame:
            info = rep["frames"][rows_frame]
            for method, subsets in rep["metrics"][rows_frame].items():
                row = {"domain": domain, "frame": info["short"], "method": method}
                for k, s in SUMMARY_ROW_COLUMNS:
                    est = subsets.get(s, {}).get(k)
                    ok = est is not None and not est.get("not_applicable")
                    row[f"{k}_{s}"] = est["value"] if ok else None
                    row[f"{k}_{s}_cell"] = _cell(est)
                table.append(row)
        if lists_frame:
            info = rep["frames"][lists_frame]
            for method, subsets in rep["metrics"][lists_frame].items():
                list_rows.append({"domain": domain, "frame": info["short"], "method": method,
                                  **{f"{k}_cell": _cell(subsets.get("all", {}).get(k)) for k in SUMMARY_LIST_COLUMNS}})
    lines = ["# Evaluation summary", "",
             f"{len(reports)} domain(s). Each domain's methods on one frame (the `frame` column: the evaluation sample "
             "where LLM methods scored one, else all test rows), test split, 95 % user-level bootstrap intervals (‡: "
             "too few users for an interval). Numbers of two domains are on different rows and are not compared here. "
             "Which differences within a domain are significant: each domain's report (Claims, Paired comparisons).",
             "", "## Pointwise", "",
             "| domain | frame | method | " + " | ".join(f"{METRIC_LABELS[k]}" + ("" if s == "all" else f" {s}")
                                                   for k, s in SUMMARY_ROW_COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(SUMMARY_ROW_COLUMNS)]
    lines += [f"| {r['domain']} | {r['frame']} | {r['method']} | "
              + " | ".join(r[f"{k}_{s}_cell"] for k, s in SUMMARY_ROW_COLUMNS) + " |" for r in table]
    if list_rows:
        lines += ["", "## Candidate lists (ranked by score; gen: RecCocktail's generated answer)", "",
                  "| domain | frame | method | " + " | ".join(("" if k.startswith("generated_") else "score ")
                                                           + metric_label(k) for k in SUMMARY_LIST_COLUMNS) + " |",
                  "|---|---|---|" + "---|" * len(SUMMARY_LIST_COLUMNS)]
        lines += [f"| {r['domain']} | {r['frame']} | {r['method']} | "
                  + " | ".join(r[f"{k}_cell"] for k in SUMMARY_LIST_COLUMNS) + " |" for r in list_rows]
    claimed = [(d, c) for d, rep in reports.items() for c in rep.get("claims", [])]
    lines += ["", "## Claims", ""]
    if claimed:
        num = comparisons_mod.num
        lines += ["Each domain's claims are one family, Holm-adjusted within the domain's report.", "",
                  "| domain | claim | frame | verdict | a − b [95 % CI] | p (Holm) | users / rows |",
                  "|---|---|---|---|---|---|---|"]
        for d, c in claimed:
            frame = reports[d]["frames"][c["frame"]]["short"]
            verdict = f"**{c['verdict']}**" + (f" ({c['not_testable']})" if c.get("not_testable") else "")
            ci = "" if c.get("not_testable") else \
                f" [{num(c.get('ci_low'), '{:+.3f}')}, {num(c.get('ci_high'), '{:+.3f}')}]"
            lines.append(f"| {d} | {c['claim']} | {frame} | {verdict} | {num(c.get('difference'))}{ci} | "
                         f"{num(c.get('p_holm'), '{:.4f}')} | {c.get('n_users', '')} / {c.get('n_rows', '')} |")
    else:
        lines.append("No domain has the methods a claim of the papers needs (the LLM stages have not run).")
    return "\n".join(lines) + "\n", table


def plot_summary(table: list[dict], path: Path) -> Path:
    """AUC on all of each domain's comparison frame, by domain and method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(dict.fromkeys(r["domain"] for r in table))
    methods = list(dict.fromkeys(r["method"] for r in table))
    grid = np.full((len(methods), len(domains)), np.nan)
    for r in table:
        v = r["auc_all"]
        grid[methods.index(r["method"]), domains.index(r["domain"])] = np.nan if v is None else v
    fig, ax = plt.subplots(figsize=(max(6.5, 1.2 * len(domains) + 3), 0.5 * len(methods) + 2))
    im = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(len(domains)), domains, rotation=30, ha="right")
    ax.set_yticks(range(len(methods)), methods)
    for i in range(len(methods)):
        for j in range(len(domains)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(im, ax=ax, label="test AUC (chance 0.5)")
    ax.set_title("AUC by domain and method\n(each domain on its comparison frame: see summary.md)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------
# score files


# The score files a report reads, by the asset that writes them (under domains/<d>/scores/); a
# report needs the CF scores, the LLM rows join when their stages have run for the domain.
REQUIRED_SOURCES = ("cf_embeddings",)


def score_sources() -> dict[str, str]:
    """asset -> score family of every file of per-row scores: the CF models, each task kind that scores
    rows (the registry's; the pointwise LLM methods), and CoLLM."""
    return {"cf_embeddings": "cf", **{t.assets["scores"]: t.scores_family for t in TASKS.values()
                                      if t.report_as == "rows"}, "collm_cie": "collm"}


class StaleScores(ValueError):
    """A required score file was written for an older split of the domain."""


def load_scores(ws, domain: str, n_test: int, log=None) -> tuple[list[MethodScores], list[dict]]:
    """Every score file's methods, and their lineage (asset, path, sha256). A file written for an
    older split (its split_sha256 differs from the current split's) is left out with a warning, or
    fails the report if it is a required source. `ws` is a models.data.workspace.Workspace."""

    methods, lineage = [], []
    current = ws.split_sha256(domain)
    seen: dict[str, str] = {}
    for asset, family in score_sources().items():
        path = ws.scores_path(domain, family)
        if not path.exists():
            if asset in REQUIRED_SOURCES:
                ws.require(path, asset, domain)
            continue
        df = pl.read_parquet(path)
        written_for = df["split_sha256"][0] if "split_sha256" in df.columns and df.height else None
        if written_for != current:
            text = (f"{path} was scored on an older split of {domain!r}; materialize {asset} for {domain!r} "
                    "again to bring its methods back into the report")
            if asset in REQUIRED_SOURCES:
                raise StaleScores(text)
            if log:
                log(text + "; left out of this report")
            continue
        lineage.append({"asset": asset, "path": str(path), "sha256": file_sha256(path)})
        for name in df["method"].unique(maintain_order=True):
            if name in seen:
                raise ValueError(f"method {name!r} is scored by both {seen[name]} and {asset} for {domain!r}: a domain's "
                                 "score files must name their methods apart")
            seen[name] = asset
            methods.append(_method_scores(df, name, n_test, asset))
    return methods + ensembles(methods), lineage


def _standardised(x: np.ndarray, on: np.ndarray) -> np.ndarray:
    """x with mean 0 and standard deviation 1 on the values `on` (0 where those are constant)."""
    sd = float(on.std())
    return (x - float(on.mean())) / sd if sd > 0 else np.zeros_like(x)


def ensembles(methods: list[MethodScores]) -> list[MethodScores]:
    """CoLLM's Table III pairs (`ENSEMBLES`) present, combined as `ENSEMBLE_RULE` says on the rows
    (and candidate lists) both scored; NaN elsewhere. The standardisation of each member uses its
    test scores on those rows only (no labels), and the same affine map serves its candidate lists."""
    by_name = {m.name: m for m in methods}
    out = []
    for name, (a, b) in ENSEMBLES.items():
        if a not in by_name or b not in by_name:
            continue
        ma, mb = by_name[a], by_name[b]
        both = ~np.isnan(ma.pointwise) & ~np.isnan(mb.pointwise)
        if not both.any():
            continue
        za = lambda x: _standardised(x, ma.pointwise[both])  # noqa: E731
        zb = lambda x: _standardised(x, mb.pointwise[both])  # noqa: E731
        point = np.where(both, (za(ma.pointwise) + zb(mb.pointwise)) / 2, np.nan)
        rank = None
        if ma.ranking is not None and mb.ranking is not None and ma.ranking.shape == mb.ranking.shape:
            rank = (za(ma.ranking) + zb(mb.ranking)) / 2
        out.append(MethodScores(name, point, rank, {"asset": "report", "ensemble_of": [a, b], "rule": ENSEMBLE_RULE}))
    return out


def _method_scores(df: pl.DataFrame, name: str, n_test: int, asset: str) -> MethodScores:
    part = df.filter(pl.col("method") == name).sort("row")
    point = np.full(n_test, np.nan)
    point[part["row"].to_numpy()] = part["score"].to_numpy()
    ranking = None
    listed = part.filter(pl.col("candidate_scores").is_not_null())
    if listed.height:
        width = listed["candidate_scores"].list.len().max()
        ranking = np.full((n_test, width), np.nan)
        ranking[listed["row"].to_numpy()] = np.array(listed["candidate_scores"].to_list(), dtype=np.float64)
    return MethodScores(name, point, ranking, {"asset": asset})


# ---------------------------------------------------------------------------------------------------
# the report


@dataclass
class WrittenReport:
    payload: dict
    markdown: str
    plots: dict[str, str]
    report_path: Path
    metrics_path: Path
    history_path: Path


@dataclass
class _Frames:
    """Every frame of one report with its subsets, numbers and what scored it."""

    frames: dict[str, Frame] = field(default_factory=dict)
    subsets: dict[str, list[Subset]] = field(default_factory=dict)
    result: dict[str, dict] = field(default_factory=dict)
    chance: dict[str, dict] = field(default_factory=dict)
    counts: dict[str, dict] = field(default_factory=dict)
    lists: dict[str, dict[str, ListScores]] = field(default_factory=dict)

    def add(self, frame: Frame, subsets: list[Subset]) -> None:
        self.frames[frame.name] = frame
        self.subsets[frame.name] = subsets


def _build(test: pl.DataFrame, methods: list[MethodScores], lists: dict[str, dict[str, ListScores]] | None, ev: dict,
           one_row_per_user: bool, next_item: bool) -> _Frames:
    ks = tuple(int(k) for k in ev["ranking_k"])
    samples, seed, min_units = int(ev["bootstrap_samples"]), int(ev["seed"]), int(ev["min_subset_rows"])
    masks = subset_masks(test)
    users = test["user_id"].to_numpy()
    by_name = {m.name: m for m in methods}
    out = _Frames()
    for f in row_frames(test, methods).values():
        out.add(f, frames_mod.subsets(f, masks, min_units, one_row_per_user))
        out.result[f.name] = evaluate_rows(f, out.subsets[f.name], test, by_name, samples, seed, min_units,
                                           one_row_per_user)
        out.chance[f.name] = chance_rows(out.subsets[f.name], test, one_row_per_user)
    targets = frames_mod.ranking_targets(test["label"].to_numpy(), next_item)
    rule, n_neg = frames_mod.target_rule(next_item), int(ev["ranking_negatives"])
    ranked = {m.name: ls for m in methods if (ls := list_scores(m, targets)) is not None}
    found = list_frames(test, ranked, targets, rule, n_neg)
    complete = found.get("all_lists", (None, {}))[1]
    for task, task_lists in (lists or {}).items():  # a task kind whose methods rank lists: a frame of its own
        framed = list_frames(test, {**complete, **task_lists}, targets, rule, n_neg, prefix=f"{task}_",
                             what=LIST_SECTIONS.get(task, (f"The {task} task's lists", ""))[0] + ". ")
        if f"{task}_sample_lists" in framed:
            f, ls = framed[f"{task}_sample_lists"]
            found[task] = (Frame(task, "lists", f.mask, f.methods, f.description, f.short), ls)
    for name, (f, ls) in found.items():
        out.add(f, frames_mod.subsets(f, masks, min_units, one_row_per_user))
        out.lists[name] = ls
        out.result[name], out.counts[name] = evaluate_lists(f, out.subsets[name], users, ls, ks, samples, seed,
                                                            min_units)
        generated = any(ls[m].generated is not None for m in f.methods)
        out.chance[name] = chance_lists(out.subsets[name], next(iter(ls.values())).n_candidates, ks, generated)
    return out


def _compare(fr: _Frames, test: pl.DataFrame, methods: list[MethodScores], ev: dict,
             one_row_per_user: bool) -> list[dict]:
    """The paired comparisons of each frame where methods are compared, Holm-adjusted as one family."""
    samples, seed, min_units = int(ev["test_resamples"]), int(ev["seed"]), int(ev["min_subset_rows"])
    ks = tuple(int(k) for k in ev["ranking_k"])
    users, labels = test["user_id"].to_numpy(), test["label"].to_numpy().astype(np.int64)
    sources = {m.name: str(m.source.get("asset", "")) for m in methods}
    records: list[dict] = []
    rows_frame = next((n for n in ("sample", "all") if n in fr.frames), None)
    if rows_frame:
        f = fr.frames[rows_frame]
        scores = {m.name: m.pointwise for m in methods if m.name in f.methods}
        records += comparisons_mod.compare_rows(f, fr.subsets[rows_frame], labels, users, scores,
                                                comparisons_mod.pairs(list(f.methods), sources), samples, seed,
                                                min_units, one_row_per_user)
    list_metrics = ("generated_hr@1", "generated_ndcg@3", "hr@1", f"ndcg@{max(ks)}")
    for name in ("sample_lists", *(n for n, f in fr.frames.items() if f.kind == "lists" and n not in LIST_FRAMES)):
        if name in fr.frames:
            f, ls = fr.frames[name], fr.lists[name]
            own = {n: (l.source or sources.get(n, "")) for n, l in ls.items()}
            records += comparisons_mod.compare_lists(f, fr.subsets[name], users, ls,
                                                     comparisons_mod.pairs(list(f.methods), own), list_metrics,
                                                     samples, seed, min_units)
    return comparisons_mod.adjust(records)


def _against_best_baseline(fr: _Frames, test: pl.DataFrame, st: next_item_report.Standings | None, ev: dict
                           ) -> tuple[list[dict], list[comparisons_mod.Claim], tuple[str, float] | None]:
    """RecCocktail against the best traditional baseline (by validation, `next_item_report.best_baseline`)
    on the lists both ranked: the comparison record and the claim that reads it."""
    frame = fr.frames.get("listwise")
    if st is None or frame is None or "reccocktail" not in frame.methods:
        return [], [], None
    best = next_item_report.best_baseline(st, [m for m in frame.methods if m in st.methods])
    if best is None:
        return [], [], None
    records = comparisons_mod.compare_lists(
        frame, fr.subsets["listwise"], test["user_id"].to_numpy(), fr.lists["listwise"],
        [("reccocktail", best[0], "RecCocktail against the best traditional baseline (picked on validation)")],
        ("own_hr@1",), int(ev["test_resamples"]), int(ev["seed"]), int(ev["min_subset_rows"]))
    claim = comparisons_mod.Claim(
        f"RecCocktail > the best traditional baseline ({best[0]}, picked on validation) on the same lists (HR@1: "
        "RecCocktail's generated answer, the baseline's scores)", "reccocktail", best[0], "own_hr@1", "all", ">",
        "RecCocktail paper v2: beats traditional recommenders", frame="listwise")
    return records, [claim], best


def _sanity(fr: _Frames, methods: list[MethodScores]) -> list[dict]:
    by_name = {m.name: m for m in methods}
    found = []
    for name, f in fr.frames.items():
        found += sanity.below_chance(name, f.short, fr.result[name], fr.chance[name], fr.counts.get(name))
        if f.kind == "rows":
            sig = {m: by_name[m].pointwise[f.mask] for m in f.methods}
            constant = {m: bool(s.size and np.all(s == s[0])) for m, s in sig.items()}
        else:
            rows = np.flatnonzero(f.mask)
            sig, constant = {}, {}
            for m in f.methods:
                ls = fr.lists[name][m]
                r = ls.by_score[ls.positions(rows)]
                sig[m] = np.concatenate([r.above, r.tied] + ([ls.generated[ls.positions(rows)].above]
                                                            if ls.generated is not None else []))
                constant[m] = bool(np.all(r.tied == ls.n_candidates - 1)) and ls.generated is None
        found += sanity.degenerate(name, f.short, sig, constant)
        found += sanity.no_candidate_named(name, f.short, fr.counts.get(name, {}))
    return found


def markdown(domain: str, test: pl.DataFrame, fr: _Frames, records: list[dict], claim_rows: list[dict],
             findings: list[dict], settings: dict, lineage: list[dict], reference: str | None, ev: dict,
             one_row_per_user: bool, plots: dict[str, str] | None = None, sections: list[str] | None = None,
             list_labels: dict[str, str] | None = None, published: dict[str, list[str]] | None = None,
             next_lines: list[str] | None = None) -> str:
    ks = tuple(int(k) for k in ev["ranking_k"])
    margin = float(ev["noninferiority_margin"])
    masks = subset_masks(test)
    lines = [f"# Evaluation report: `{domain}`", "",
             f"Test split: {test.height:,} rows of {test['user_id'].n_unique():,} users (positive rate "
             f"{test['label'].mean():.3f}; warm {int(masks['warm'].sum()):,}, cold {int(masks['cold'].sum()):,}). "
             "Frames (every table names one; methods are compared only within one):", ""]
    lines += [f"- **{f.name}**: {f.description}." for f in fr.frames.values()] + [""]
    lines += comparisons_mod.claims_markdown(claim_rows, fr.frames, int(ev["test_resamples"]), margin)
    blocks = []
    for name in ("sample", "all"):
        if name in fr.frames:
            blocks.append((fr.frames[name], fr.result[name], fr.chance[name],
                           [k for k in POINTWISE_METRICS if k in fr.chance[name]["all"]]))
            break
    for name in (*task_list_frames(fr.frames), "sample_lists", "all_lists"):
        if name in fr.frames:
            blocks.append((fr.frames[name], fr.result[name], fr.chance[name],
                           [k for k in ("hr@1", f"ndcg@{max(ks)}", "generated_hr@1") if k in fr.chance[name]["all"]]))
            break
    lines += best_per_metric(blocks)
    kinds = sorted({f["check"] for f in findings})
    lines += [f"**Sanity.** {len(findings)} finding(s) ({', '.join(k.replace('_', ' ') for k in kinds)}): see "
              "\"Sanity checks\"." if findings else "**Sanity.** No finding (below chance, degenerate scorers, "
              "generations naming no candidate).", ""]
    row_names = [n for n in ("sample", "all") if n in fr.frames]
    if row_names:
        lines += ["## Pointwise: AUC, UAUC and CoLLM's NDCG", "",
                  "AUC over the frame's rows; UAUC: each user's AUC, unweighted mean over the users with both labels; "
                  "NDCG: CoLLM's Table II column, per user the user's rows ranked by score with the labels as "
                  "relevance (tied rows share their discounts), mean over the same users.", ""]
        for n in row_names:
            lines += rows_table(fr.frames[n], fr.subsets[n], fr.result[n], fr.chance[n], test, one_row_per_user)
    list_names = [n for n in ("sample_lists", "all_lists") if n in fr.frames]
    if list_names:
        lines += [f"## Ranking: the target among {int(ev['ranking_negatives'])} sampled negatives", "",
                  f"Lists of `ranking_candidates` (seeded); ties: {TIE_POLICY}.", ""]
        for n in list_names:
            lines += lists_table(fr.frames[n], fr.subsets[n], fr.result[n], fr.counts[n], fr.chance[n], ks, test)
    for name in task_list_frames(fr.frames):
        heading, intro = LIST_SECTIONS.get(name, (f"The {name} task's lists", LIST_INTRO))
        lines += [f"## {heading}", "", intro, ""]
        lines += lists_table(fr.frames[name], fr.subsets[name], fr.result[name], fr.counts[name], fr.chance[name], ks,
                             test, list_labels)
        lines += (published or {}).get(name, [])
    lines += next_lines or []
    lines += comparisons_mod.markdown(records, fr.frames, int(ev["test_resamples"]))
    lines += sanity.markdown(findings)
    lines += sections or []
    rows_frame = row_names[0] if row_names else None
    if reference and reference in PUBLISHED and rows_frame:
        lines += _published_collm(reference, settings, fr.frames[rows_frame], fr.result[rows_frame])
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({Path(path).name})" for name, path in plots.items()] + [""]
    lines += how_to_read(margin, int(ev["bootstrap_samples"]), int(ev["test_resamples"]))
    lines += lineage_lines(settings, lineage)
    return "\n".join(lines) + "\n"


def write_report(out: Path, domain: str, test: pl.DataFrame, methods: list[MethodScores], settings: dict[str, Any],
                 lineage: list[dict], reference: str | None, ev: dict, one_row_per_user: bool, run_id: str,
                 sections: list[str] | None = None, extra: dict | None = None,
                 lists: dict[str, dict[str, ListScores]] | None = None, next_item: bool = False,
                 list_labels: dict[str, str] | None = None,
                 published: dict[str, list[str]] | None = None,
                 standings: next_item_report.Standings | None = None) -> WrittenReport:
    """Build the frames, evaluate every method in each, test the papers' claims and the paired
    comparisons, run the sanity guards, plot, and write report.md, metrics.json and
    history/<run_id>.json under `out`. `ev` is the config's evaluation settings; `lists`: task kind ->
    its LLM methods' ranked lists (models/reporting/listwise.py: RecCocktail's), each a frame named after
    the task beside the CF models on the same lists; `published`: task kind -> the papers' numbers for
    its section; `standings`: the CF models' next-item standings (models/reporting/next_item.py: the
    full-ranking, 100-negative and beyond-accuracy tables); `next_item`: every test row is a
    ranking target (a listwise domain); `sections`: more Markdown (the base spirits' overlap, our
    pointwise cocktail's note), put before the published numbers; `extra` joins metrics.json."""
    import shutil

    fr = _build(test, methods, lists, ev, one_row_per_user, next_item)
    against, extra_claims, best = _against_best_baseline(fr, test, standings, ev)
    records = comparisons_mod.adjust(_compare(fr, test, methods, ev, one_row_per_user) + against)
    claim_rows = comparisons_mod.claims(records, fr.frames, float(ev["noninferiority_margin"]), extra=extra_claims)
    next_result = next_item_report.evaluate(standings, ev) if standings is not None else None
    next_lines = next_item_report.markdown(standings, next_result, ev, reference, best) if next_result else []
    findings = _sanity(fr, methods)
    by_name = {m.name: m for m in methods}
    plots = {}
    rows_frame = next((n for n in ("sample", "all") if n in fr.frames), None)
    if rows_frame:
        f = fr.frames[rows_frame]
        plots["roc"] = str(plot_roc(f, fr.subsets[rows_frame], test, by_name, out / "roc.png"))
        plots["metrics"] = str(plot_metrics(f, fr.subsets[rows_frame], fr.result[rows_frame], fr.chance[rows_frame],
                                            out / "metrics.png"))
    forest = plot_forest([r for r in records if r["frame"] == rows_frame], out / "paired_auc.png")
    if forest is not None:
        plots["paired_auc"] = str(forest)
    text = markdown(domain, test, fr, records, claim_rows, findings, settings, lineage, reference, ev,
                    one_row_per_user, plots, sections, list_labels, published, next_lines)
    (out / "report.md").write_text(text)
    users = test["user_id"].to_numpy()
    payload = {
        "domain": domain, "test_rows": test.height, "tie_policy": TIE_POLICY,
        "frames": {n: {"kind": f.kind, "description": f.description, "short": f.short, "rows": f.n,
                       "users": f.users(users), "methods": list(f.methods),
                       "positions": np.flatnonzero(f.mask).tolist()} for n, f in fr.frames.items()},
        "subsets": {n: {s.name: {"shown": s.shown, "n": int(s.mask.sum()), "note": s.note} for s in subs}
                    for n, subs in fr.subsets.items()},
        "metrics": fr.result, "chance": fr.chance, "counts": fr.counts,
        "comparisons": comparisons_mod.public(records), "claims": comparisons_mod.public(claim_rows),
        "sanity": findings, "settings": settings, "lineage": lineage, **(extra or {})}
    if next_result is not None:
        payload["next_item"] = {"metrics": next_result, "methods": standings.methods,
                                "best_baseline": None if best is None else {"method": best[0],
                                                                            "valid_ndcg@10_100neg": best[1]}}
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=str))
    history = out / "history" / f"{run_id}.json"
    history.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "metrics.json", history)
    return WrittenReport(payload, text, plots, out / "report.md", out / "metrics.json", history)


def headline_numbers(payload: dict) -> dict[str, float]:
    """The few numbers worth plotting over time, for the asset's top-level metadata: each headline
    method's primary metric on all rows of the comparison frame (`method/all/auc`; on a task's own list
    frame, RecCocktail's, `listwise/method/all/hr@1`), where the headline methods are the ones the
    papers' claims compare (every method of the frame when the domain has no claim), and the claims'
    tally. Every other number is in `metrics_table` and metrics.json."""
    rows_frame, lists_frame = comparison_frames(payload)
    claims = payload.get("claims") or []
    named = {m for c in claims for m in (c.get("a"), c.get("b")) if m}
    out = {}
    own = lists_frame if lists_frame not in (None, *LIST_FRAMES) else None
    for frame, prefix, metric in ((rows_frame, "", "auc"), (own, f"{own}/", "hr@1")):
        if frame is None:
            continue
        methods = payload["metrics"][frame]
        for m in [m for m in methods if m in named] or list(methods):
            value = _value(methods[m].get("all", {}).get(metric))
            if value is not None:
                out[f"{prefix}{m}/all/{metric}"] = value
    out["claims_testable"] = sum(c["verdict"] != "not testable" for c in claims)
    out["claims_reproduced"] = sum(c["verdict"] == "reproduced" for c in claims)
    return out


def metrics_table(payload: dict) -> tuple[list[str], list[dict]]:
    """Every estimate of the report as one table: a row per frame, method and subset with its n and a
    column per metric (the point estimate; the intervals are in the report and metrics.json). Returns
    (the metric columns in order, the rows)."""
    metrics, rows = [], []
    for frame, methods in payload["metrics"].items():
        for method, subsets in methods.items():
            for subset, ests in subsets.items():
                row = {"frame": frame, "method": method, "subset": subset, "n": None}
                for k, est in ests.items():
                    if k not in metrics:
                        metrics.append(k)
                    row[k] = _value(est)
                    row["n"] = row["n"] or (est or {}).get("n")
                rows.append(row)
    return metrics, rows


def claims_table(payload: dict) -> list[dict]:
    """The papers' claims as rows: claim, frame, verdict (with the reason when not testable), the
    difference with its 95 % interval, p and Holm-adjusted p, users."""
    return [{"claim": c["claim"], "frame": c["frame"],
             "verdict": c["verdict"] + (f" ({c['not_testable']})" if c.get("not_testable") else ""),
             **{k: _value({"value": c.get(k)}) for k in ("difference", "ci_low", "ci_high", "p", "p_holm")},
             "users": c.get("n_users")}
            for c in payload.get("claims") or []]


def point(est: dict | None) -> float | None:
    """An estimate's value; None when it is missing, not applicable or not a number (shown as n/a)."""
    if not est or est.get("not_applicable") or est.get("value") is None or math.isnan(est["value"]):
        return None
    return float(est["value"])


def _value(est: dict | None) -> float | None:
    """An estimate's point value rounded to 4 places, for the metadata; None where `point` is None."""
    v = point(est)
    return None if v is None else round(v, 4)
