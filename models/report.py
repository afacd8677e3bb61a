"""The evaluation report: every method by every metric and subset, with bootstrap intervals,
plots, Markdown for people and JSON for machines. No Dagster here; test labels are read here only."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models import comparisons as comparisons_mod
from models import metrics

SUBSETS = ("all", "warm", "cold")

# PROTOCOLS section 6 (CoLLM Tables II, III, V and VII), test AUC / UAUC / NDCG (None: not published),
# labelled by backbone.
PUBLISHED: dict[str, list[tuple[str, str, float | None, float | None, float | None]]] = {
    "collm_ml1m": [
        ("MF", "-", 0.6482, 0.6361, 0.8447),
        ("LightGCN", "-", 0.5959, 0.6499, 0.8564),
        ("SASRec", "-", 0.7078, 0.6884, 0.8612),
        ("TALLRec (= CoLLM w/o CIE)", "Vicuna-7B", 0.7097, 0.6818, 0.8711),
        ("CoLLM-MF", "Vicuna-7B", 0.7295, 0.6875, 0.8714),
        ("CoLLM-LightGCN", "Vicuna-7B", 0.7100, 0.6967, 0.8740),
        ("CoLLM-SASRec", "Vicuna-7B", 0.7235, 0.6990, 0.8765),
        ("CoLLM-MF T1 (Table V)", "Vicuna-7B", 0.7360, 0.6946, None),
        ("CoLLM-MF T2 (Table V)", "Vicuna-7B", 0.7418, 0.6906, None),
        ("CoLLM-MF T3 (Table V)", "Vicuna-7B", 0.7131, 0.6661, None),
        ("Ensemble MF + TALLRec (Table III)", "Vicuna-7B", 0.7239, None, None),
        ("Ensemble MF + CoLLM-MF (Table III)", "Vicuna-7B", 0.7364, None, None),
        ("TALLRec (= CoLLM w/o CIE)", "Qwen2-1.5B", 0.7027, 0.6638, None),
        ("CoLLM-MF", "Qwen2-1.5B", 0.7354, 0.6950, None),
    ],
    "collm_amazon_book": [
        ("MF", "-", 0.7134, 0.5565, None),
        ("TALLRec (= CoLLM w/o CIE)", "Vicuna-7B", 0.7375, 0.5983, None),
        ("CoLLM-MF", "Vicuna-7B", 0.8109, 0.6225, None),
        ("CoLLM-MF T1 (Table V)", "Vicuna-7B", 0.8154, 0.6139, None),
        ("CoLLM-MF T2 (Table V)", "Vicuna-7B", 0.8288, 0.6352, None),
        ("CoLLM-MF T3 (Table V)", "Vicuna-7B", 0.8104, 0.5753, None),
        ("Ensemble MF + TALLRec (Table III)", "Vicuna-7B", 0.7782, None, None),
        ("Ensemble MF + CoLLM-MF (Table III)", "Vicuna-7B", 0.8112, None, None),
    ],
}


# the papers' method names -> ours, for the published-numbers comparison
PAPER_NAMES = {"MF": "mf", "LightGCN": "lightgcn", "SASRec": "sasrec",
               "TALLRec (= CoLLM w/o CIE)": "ingredient_tallrec",
               "CoLLM-MF": "collm_mf", "CoLLM-LightGCN": "collm_lightgcn", "CoLLM-SASRec": "collm_sasrec",
               "CoLLM-MF T1 (Table V)": "collm_mf_t1", "CoLLM-MF T2 (Table V)": "collm_mf_t2",
               "CoLLM-MF T3 (Table V)": "collm_mf_t3",
               "Ensemble MF + TALLRec (Table III)": "ensemble_mf_tallrec",
               "Ensemble MF + CoLLM-MF (Table III)": "ensemble_mf_collm_mf",
               "RecCocktail, pointwise (ours)": "reccocktail", "CoLLM on RecCocktail (ours)": "collm_mf_cocktail"}
# Table III's ensemble averaging (Dietterich 2000): the mean of the two methods' probabilities,
# sigmoid(score), on the rows both scored; computed by the report from the two score sets
ENSEMBLES = {"ensemble_mf_tallrec": ("mf", "ingredient_tallrec"), "ensemble_mf_collm_mf": ("mf", "collm_mf")}
# the pointwise rows of the cocktail stage that are our adaptation of RecCocktail (PROTOCOLS section 8):
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
             "Yes/No task (PROTOCOLS section 8): the base spirit and the ingredient are Yes/No adapters, and the "
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


def subset_masks(test: pl.DataFrame) -> dict[str, np.ndarray]:
    warm = test["warm"].to_numpy().astype(bool)
    not_cold = test["not_cold"].to_numpy().astype(bool)
    return {"all": np.ones(test.height, bool), "warm": warm, "cold": ~not_cold}


# what an estimate's n counts, per metric
UNITS = {"auc": "scored rows", "uauc": "users with both labels", "user_ndcg": "users with both labels",
         "hr": "ranked lists", "ndcg": "ranked lists"}
# the pointwise metrics of every method (PROTOCOLS section 5): `user_ndcg` is CoLLM's NDCG column
POINTWISE_METRICS = ("auc", "uauc", "user_ndcg")
METRIC_LABELS = {"auc": "AUC", "uauc": "UAUC", "user_ndcg": "NDCG"}


def on_common_rows(methods: list[MethodScores]) -> tuple[list[MethodScores], int] | None:
    """Every method restricted to the test rows (and candidate lists) that all of them scored, so
    that a method scored on a seeded sample (the LLM rows) is compared with the others on the same
    rows; None when every method scored the same rows already."""
    scored = np.logical_and.reduce([~np.isnan(m.pointwise) for m in methods])
    ranked = [m for m in methods if m.ranking is not None]
    lists = np.logical_and.reduce([~np.isnan(m.ranking).any(axis=1) for m in ranked]) if ranked else None
    if all(np.array_equal(~np.isnan(m.pointwise), scored) for m in methods) and (
            lists is None or all(np.array_equal(~np.isnan(m.ranking).any(axis=1), lists) for m in ranked)):
        return None
    out = []
    for m in methods:
        point = np.where(scored, m.pointwise, np.nan)
        rank = None if m.ranking is None else np.where(lists[:, None], m.ranking, np.nan)
        out.append(MethodScores(m.name, point, rank, m.source))
    return out, int(scored.sum())


def evaluate(test: pl.DataFrame, methods: list[MethodScores], ks: tuple[int, ...] = (1, 3, 5),
             bootstrap_samples: int = 1000, seed: int = 2023, min_subset_rows: int = 20,
             one_row_per_user: bool = False) -> dict[str, dict[str, dict[str, dict]]]:
    """metrics[method][subset][metric] = {value, ci_low, ci_high, n}, plus `not_applicable` (the
    reason) where a metric cannot exist: a subset with fewer than `min_subset_rows` test rows, or
    UAUC when every user has one test row (leave-one-out)."""
    labels = test["label"].to_numpy().astype(np.int64)
    users = test["user_id"].to_numpy()
    masks = subset_masks(test)
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for m in methods:
        if len(m.pointwise) != test.height:
            raise ValueError(f"method {m.name}: {len(m.pointwise)} scores for {test.height} test rows")
        scored = ~np.isnan(m.pointwise)
        out[m.name] = {}
        for subset, mask in masks.items():
            sel = mask & scored
            res = {
                "auc": metrics.auc_estimate(users[sel], labels[sel], m.pointwise[sel], bootstrap_samples,
                                            seed).as_dict(),
                "uauc": metrics.uauc_estimate(users[sel], labels[sel], m.pointwise[sel],
                                              bootstrap_samples, seed).as_dict(),
                "user_ndcg": metrics.user_ndcg_estimate(users[sel], labels[sel], m.pointwise[sel],
                                                        bootstrap_samples, seed).as_dict(),
            }
            if m.ranking is not None:
                ranked = mask & (labels == 1) & ~np.isnan(m.ranking).any(axis=1)
                r = metrics.target_ranks(m.ranking[ranked, 0], m.ranking[ranked, 1:])
                for k in ks:
                    for name in ("hr", "ndcg"):
                        res[f"{name}@{k}"] = metrics.ranking_estimate(r, name, k, bootstrap_samples, seed,
                                                                      users=users[ranked]).as_dict()
            if mask.sum() < min_subset_rows:
                why = f"only {int(mask.sum())} {subset} test rows (evaluation.min_subset_rows = {min_subset_rows})"
                for est in res.values():
                    est["not_applicable"] = why
            else:
                if one_row_per_user:
                    for k in ("uauc", "user_ndcg"):
                        res[k]["not_applicable"] = "one test row per user (leave-one-out): no per-user ranking exists"
                # a method that scored a sample: too few of its own rows, users or lists is no estimate
                for metric, est in res.items():
                    unit = UNITS[metric.split("@")[0]]
                    if not est.get("not_applicable") and est["n"] < min_subset_rows:
                        est["not_applicable"] = (f"only {est['n']} {unit} (evaluation.min_subset_rows = "
                                                 f"{min_subset_rows})")
            out[m.name][subset] = res
    return out


def missing_metrics(result: dict, expected_methods: list[str]) -> list[str]:
    """Every (method, subset, metric) that is absent or NaN: what the completeness gate reports."""
    problems = [f"{m}: missing" for m in expected_methods if m not in result]
    for m, subsets in result.items():
        for subset in SUBSETS:
            if subset not in subsets:
                problems.append(f"{m}/{subset}: missing")
                continue
            for metric, est in subsets[subset].items():
                if est.get("not_applicable"):
                    continue
                if est["value"] is None or (isinstance(est["value"], float) and math.isnan(est["value"])):
                    problems.append(f"{m}/{subset}/{metric}: NaN (n={est['n']})")
    return problems


def _fmt(est: dict) -> str:
    if est.get("not_applicable"):
        return "n/a†"
    v, lo, hi = est["value"], est["ci_low"], est["ci_high"]
    if v is None or math.isnan(v):
        return "n/a"
    if lo is None or math.isnan(lo):
        return f"{v:.4f}"
    return f"{v:.4f} [{lo:.3f}, {hi:.3f}]"


def plot_roc(test: pl.DataFrame, methods: list[MethodScores], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    labels = test["label"].to_numpy()
    masks = subset_masks(test)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    for ax, subset in zip(axes, SUBSETS):
        drawn = 0
        for m in methods:
            sel = masks[subset] & ~np.isnan(m.pointwise)
            if sel.sum() == 0 or labels[sel].min() == labels[sel].max():
                continue
            fpr, tpr, _ = roc_curve(labels[sel], m.pointwise[sel])
            ax.plot(fpr, tpr, label=f"{m.name} ({metrics.auc(labels[sel], m.pointwise[sel]):.3f})")
            drawn += 1
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_title(f"ROC, {subset} test rows ({int(masks[subset].sum())})")
        ax.set_xlabel("false positive rate")
        if drawn:
            ax.legend(fontsize=8, loc="lower right")
        else:  # e.g. a subset of one row: no curve exists
            ax.text(0.5, 0.5, "no rows with both labels", ha="center", va="center", color="grey")
    axes[0].set_ylabel("true positive rate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_metrics(result: dict, path: Path, metric_names: tuple[str, ...] = ("auc", "uauc", "ndcg@3")) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(result)
    fig, axes = plt.subplots(1, len(metric_names), figsize=(4.6 * len(metric_names), 4.2))
    width = 0.8 / len(SUBSETS)
    for ax, metric in zip(np.atleast_1d(axes), metric_names):
        for j, subset in enumerate(SUBSETS):
            vals, errs = [], [[], []]
            for m in methods:
                est = result[m][subset].get(metric)
                v = np.nan if est is None or est["value"] is None else est["value"]
                lo = est["ci_low"] if est and est["ci_low"] is not None else np.nan
                hi = est["ci_high"] if est and est["ci_high"] is not None else np.nan
                vals.append(v)
                errs[0].append(max(v - lo, 0) if not np.isnan(lo) else 0)
                errs[1].append(max(hi - v, 0) if not np.isnan(hi) else 0)
            x = np.arange(len(methods)) + (j - 1) * width
            ax.bar(x, vals, width, yerr=errs, capsize=2, label=subset)
        ax.set_xticks(np.arange(len(methods)), methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(metric.upper())
        if metric in ("auc", "uauc"):
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
            ax.set_ylim(0.4, None)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _metric_tables(result: dict, settings: dict[str, Any], level: str = "##") -> list[str]:
    """The pointwise table, the ranking tables per subset and the not-applicable footnote."""
    lines = [
        f"{level} Pointwise: AUC, UAUC and NDCG",
        "",
        "NDCG is CoLLM's (Table II): per user, the user's labelled test rows ranked by score, NDCG with the "
        "labels as relevance over the whole list (tied scores share their discounts), averaged over the users "
        "with both a positive and a negative row (the others are skipped, as for UAUC).",
        "",
        "| method | " + " | ".join(f"{METRIC_LABELS[k]} {s}" for k in POINTWISE_METRICS for s in SUBSETS) + " |",
        "|---|" + "---|" * (len(POINTWISE_METRICS) * len(SUBSETS)),
    ]
    for m, subsets in result.items():
        lines.append(f"| {m} | " + " | ".join(_fmt(subsets[s][k]) if k in subsets[s] else "n/a"
                                              for k in POINTWISE_METRICS for s in SUBSETS) + " |")
    rank_metrics = [k for k in next(iter(result.values()))["all"] if k.startswith(("hr@", "ndcg@"))] if result else []
    if rank_metrics:
        lines += [
            "",
            f"{level} Ranking: the target among {settings.get('ranking_negatives', 29)} sampled negatives "
            "(positive test rows; ties rank the target last)",
            "",
        ]
        for subset in SUBSETS:
            lines += [f"**{subset}**", "", "| method | " + " | ".join(k.upper() for k in rank_metrics) + " |",
                      "|---|" + "---|" * len(rank_metrics)]
            for m, subsets in result.items():
                if all(k in subsets[subset] for k in rank_metrics):
                    lines.append(f"| {m} | " + " | ".join(_fmt(subsets[subset][k]) for k in rank_metrics) + " |")
            lines.append("")
    reasons = sorted({f"{s}/{k}: {est['not_applicable']}" for subsets in result.values() for s in SUBSETS
                      for k, est in subsets[s].items() if est.get("not_applicable")})
    if reasons:
        lines += ["† not applicable: " + "; ".join(dict.fromkeys(r.split(": ", 1)[1] for r in reasons)), ""]
    return lines


def markdown(domain: str, test: pl.DataFrame, result: dict, settings: dict[str, Any],
             lineage: list[dict[str, Any]], reference: str | None = None,
             plots: dict[str, str] | None = None, same_rows: tuple[dict, int] | None = None,
             tested: list[str] | None = None) -> str:
    """The report. `same_rows` = (result, rows): every method again on the rows all of them scored;
    `tested`: the Claims and Paired comparisons sections (models/comparisons.py)."""
    masks = subset_masks(test)
    lines = [
        f"# Evaluation report: `{domain}`",
        "",
        f"Test rows: {test.height:,} (positive rate {test['label'].mean():.3f}); "
        f"warm {int(masks['warm'].sum()):,}; cold {int(masks['cold'].sum()):,}. "
        f"Warm: the user and the item each have more than {settings.get('warm_threshold', 3)} train records. "
        "Cold: the user or the item never appears in train. Intervals are 95 % user-level bootstrap "
        f"percentiles ({settings.get('bootstrap_samples')} resamples): users are resampled, each with all its "
        "rows (or lists), since a user's rows are not independent draws.",
        "",
    ]
    if same_rows is not None:
        lines += ["Some methods scored a seeded sample of the test rows (the LLM stages, by the profile's "
                  "`test_rows` and `ranking_users`); each method below is on its own rows (n in metrics.json), "
                  f"and **\"Same rows\"** further down puts every method on the {same_rows[1]:,} rows they all "
                  "scored: compare methods there.", ""]
    lines += _metric_tables(result, settings)
    if same_rows is not None:
        lines += [f"## Same rows: every method on the {same_rows[1]:,} test rows (and the candidate lists) "
                  "that all of them scored", ""]
        lines += _metric_tables(same_rows[0], settings, level="###")
    lines += tested or []
    if reference and reference in PUBLISHED:
        num = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        lines += ["## Published numbers for this protocol (the papers' test sets, all their rows)", "",
                  "| method | backbone | AUC | UAUC | NDCG |", "|---|---|---|---|---|"]
        lines += [f"| {m} | {b} | {num(a)} | {num(u)} | {num(n)} |" for m, b, a, u, n in PUBLISHED[reference]]
        backbone = settings.get("llm") or "?"
        lines += ["", f"Ours on the same protocol (test; LLM backbone `{backbone}`, profile "
                  f"`{settings.get('profile', '?')}`; each method on its own rows, LLM methods on a seeded sample "
                  "of test rows: n in metrics.json). CoLLM variants: two-step (default), T1 (step 2 also tunes the "
                  "CF vectors), T2 (step 2 trains them from scratch), T3 (one step from the raw base LLM); the "
                  "CoLLM rows of other CF sources and variants are in the tables above (`collm_<cf>[_<variant>]`). "
                  "\"w/o CIE\" is TALLRec: the same step-1 model with the text-only prompt.", "",
                  "| paper's method | ours | backbone | AUC | UAUC | NDCG |", "|---|---|---|---|---|---|"]
        fmt = lambda e: "n/a" if e is None or e.get("not_applicable") else f"{e['value']:.4f}"  # noqa: E731

        def ours(res: dict) -> list[str]:
            return [f"| {paper} | {mine} | {'-' if mine in ('mf', 'lightgcn', 'sasrec') else backbone} | "
                    + " | ".join(fmt(res[mine]['all'].get(k)) for k in POINTWISE_METRICS) + " |"
                    for paper, mine in PAPER_NAMES.items() if mine in res]

        lines += ours(result)
        if same_rows is not None:
            lines += ["", f"The same methods on the {same_rows[1]:,} rows they all scored:", "",
                      "| paper's method | ours | backbone | AUC | UAUC | NDCG |", "|---|---|---|---|---|---|"]
            lines += ours(same_rows[0])
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({Path(path).name})" for name, path in plots.items()] + [""]
    lines += [
        "## How to read this",
        "",
        "- AUC ranks all test rows against each other; UAUC averages each user's own AUC (users with "
        "one row or one label class are skipped), so it rewards personalisation, not popularity.",
        "- Whether one method beats another is answered by \"Paired comparisons\" (the difference on the rows "
        "both scored, its paired interval and p-value), not by comparing two marginal intervals; \"Claims\" reads "
        "the papers' claims from those comparisons.",
        "- A CF model gives every cold user or item a zero vector, so its cold-row scores carry "
        "no collaborative signal: that is where LLM methods are expected to help.",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(settings, indent=2, default=str),
        "```",
        "",
        "## Lineage",
        "",
        "| input | data version | artifact | sha256 |",
        "|---|---|---|---|",
    ]
    lines += [f"| {x.get('asset')} | {x.get('data_version', '')} | `{x.get('path', '')}` | "
              f"{str(x.get('sha256', ''))[:16]} |" for x in lineage]
    return "\n".join(lines) + "\n"


def plot_forest(compared: list[dict], path: Path, metric: str = "auc") -> Path | None:
    """The paired differences of one metric on all rows (a − b with its 95 % interval), one line per
    pair: a forest plot (warm and cold are in the report's table). None when there is nothing to draw."""
    rows = [c for c in compared if c["metric"] == metric and c["subset"] == "all" and not c.get("not_applicable")
            and c.get("ci_low") is not None and not math.isnan(c["ci_low"])]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 1.2 + 0.22 * len(rows)))
    for y, c in enumerate(reversed(rows)):
        ax.errorbar(c["difference"], y, xerr=[[c["difference"] - c["ci_low"]], [c["ci_high"] - c["difference"]]],
                    fmt="o", color="tab:red" if c["ci_high"] < 0 else "tab:green" if c["ci_low"] > 0 else "tab:grey",
                    ms=3, capsize=2)
    ax.set_yticks(range(len(rows)), [f"{c['a']} − {c['b']}" for c in reversed(rows)], fontsize=6)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel(f"{METRIC_LABELS.get(metric, metric)} difference, 95 % paired user-level interval")
    ax.set_title("Paired differences on all rows both methods scored", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curve(values: list[float] | dict[str, list[float]], xlabel: str, ylabel: str, title: str,
               path: Path) -> Path:
    """Training curves (e.g. validation AUC by evaluation; one line per named series) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = values if isinstance(values, dict) else {"": values}
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, ys in series.items():
        ax.plot(range(1, len(ys) + 1) if isinstance(values, dict) else range(len(ys)), ys, label=name or None)
    if isinstance(values, dict):
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_heatmap(matrix: np.ndarray, rows: list[str], cols: list[str], title: str, label: str, path: Path) -> Path:
    """A matrix (e.g. mixing weight per layer and projection) as a PNG heat map; NaN cells blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # wide enough for the title: two projection columns alone would cut it off
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 + 0.9 * len(cols)), 1.4 + 0.18 * len(rows)))
    im = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=label)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


SUMMARY_COLUMNS = (("auc", "all"), ("auc", "warm"), ("auc", "cold"), ("uauc", "all"), ("uauc", "warm"),
                   ("uauc", "cold"), ("user_ndcg", "all"), ("ndcg@3", "all"))


def summary_markdown(reports: dict[str, dict]) -> tuple[str, list[dict]]:
    """A cross-domain table (one row per domain and method) from each domain's metrics.json: where
    the methods of a domain scored different rows (the LLM stages score a sample), every method on
    the rows all of them scored (the report's "same rows"), else on all test rows; each cell with
    its user-level interval, each domain's row set named."""
    table = []
    for domain, rep in reports.items():
        same = rep.get("same_rows")
        source = same["metrics"] if same else rep["metrics"]
        rows = (f"{same['rows']:,} rows every method scored" if same else f"all {rep.get('test_rows') or 0:,} test rows")
        for method, subsets in source.items():
            row = {"domain": domain, "method": method, "rows": rows, "test_rows": rep.get("test_rows")}
            for k, s in SUMMARY_COLUMNS:
                est = subsets.get(s, {}).get(k)
                ok = est is not None and not est.get("not_applicable")
                row[f"{k}_{s}"] = est["value"] if ok else None
                row[f"{k}_{s}_ci"] = (est["ci_low"], est["ci_high"]) if ok else None
            table.append(row)

    def f(r, key):
        v, ci = r[key], r[f"{key}_ci"]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        if ci is None or ci[0] is None or math.isnan(ci[0]):
            return f"{v:.4f}"
        return f"{v:.4f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    lines = ["# Evaluation summary", "", f"{len(reports)} domain(s). Test-split values with 95 % user-level bootstrap "
             "intervals. Within a domain every method is on the same rows (the `rows` column): where the LLM stages "
             "scored a sample, all methods are on that sample, so a CF model's number here can differ from its "
             "all-rows number in the domain's report. Which differences are significant: each domain's report, "
             "\"Paired comparisons\" and \"Claims\".", "",
             "| domain | method | rows | " + " | ".join(f"{METRIC_LABELS.get(k, k.upper())} {s}" for k, s in SUMMARY_COLUMNS)
             + " |", "|---|---|---|" + "---|" * len(SUMMARY_COLUMNS)]
    for r in table:
        lines.append(f"| {r['domain']} | {r['method']} | {r['rows']} | "
                     + " | ".join(f(r, f"{k}_{s}") for k, s in SUMMARY_COLUMNS) + " |")
    claimed = [(d, c) for d, rep in reports.items() for c in rep.get("claims", [])]
    lines += ["", "## Claims", ""]
    if claimed:
        lines += ["The papers' claims each domain's methods can test (verdicts from the paired user-level interval of "
                  "the difference on the rows both methods scored; each domain's report has the details).", "",
                  "| domain | claim | verdict | difference [95 % CI] | p | users / rows |", "|---|---|---|---|---|---|"]
        num = comparisons_mod.num
        for d, c in claimed:
            lines.append(f"| {d} | {c['claim']} | **{c['verdict']}** | {num(c.get('difference'), '{:+.4f}')} "
                         f"[{num(c.get('ci_low'), '{:+.3f}')}, {num(c.get('ci_high'), '{:+.3f}')}] | "
                         f"{num(c.get('p'), '{:.3f}')} | {c.get('n_users')} / {c.get('n_rows')} |")
    else:
        lines.append("No domain has the methods a claim of the papers needs (the LLM stages have not run).")
    return "\n".join(lines) + "\n", table


def plot_summary(table: list[dict], path: Path) -> Path:
    """AUC (all test rows) by domain and method."""
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
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(domains)), domains, rotation=30, ha="right")
    ax.set_yticks(range(len(methods)), methods)
    for i in range(len(methods)):
        for j in range(len(domains)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(im, ax=ax, label="test AUC")
    ax.set_title("AUC by domain and method\n(within a domain: the rows all its methods scored)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# The score files a report reads, by the asset that writes them (under domains/<d>/scores/); a
# report needs the CF scores, the LLM rows join when their stages have run for the domain.
SCORE_SOURCES = {"cf_embeddings": "cf", "llm_scores": "llm", "collm_cie": "collm"}
REQUIRED_SOURCES = ("cf_embeddings",)


class StaleScores(ValueError):
    """A required score file was written for an older split of the domain."""


def load_scores(ws, domain: str, n_test: int, log=None) -> tuple[list[MethodScores], list[dict]]:
    """Every score file's methods, and their lineage (asset, path, sha256). A file written for an
    older split (its split_sha256 differs from the current split's) is left out with a warning, or
    fails the report if it is a required source. `ws` is a models.workspace.Workspace."""
    methods, lineage = [], []
    current = ws.split_sha256(domain)
    for asset, family in SCORE_SOURCES.items():
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
        from models.data_prep import file_sha256

        lineage.append({"asset": asset, "path": str(path), "sha256": file_sha256(path)})
        methods += [_method_scores(df, name, n_test, asset) for name in df["method"].unique(maintain_order=True)]
    return methods + ensembles(methods), lineage


def ensembles(methods: list["MethodScores"]) -> list["MethodScores"]:
    """CoLLM's Table III: each pair of `ENSEMBLES` present, averaged as probabilities on the rows
    (and candidate lists) both scored; NaN elsewhere."""
    by_name = {m.name: m for m in methods}
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    out = []
    for name, (a, b) in ENSEMBLES.items():
        if a in by_name and b in by_name:
            ma, mb = by_name[a], by_name[b]
            rank = None
            if ma.ranking is not None and mb.ranking is not None and ma.ranking.shape == mb.ranking.shape:
                rank = (sig(ma.ranking) + sig(mb.ranking)) / 2
            out.append(MethodScores(name, (sig(ma.pointwise) + sig(mb.pointwise)) / 2, rank,
                                    {"asset": "report", "ensemble_of": [a, b]}))
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


@dataclass
class WrittenReport:
    result: dict
    markdown: str
    plots: dict[str, str]
    report_path: Path
    metrics_path: Path
    history_path: Path


def write_report(out: Path, domain: str, test: pl.DataFrame, methods: list[MethodScores], settings: dict[str, Any],
                 lineage: list[dict], reference: str | None, ev: dict, one_row_per_user: bool,
                 run_id: str, sections: list[str] | None = None, extra: dict | None = None) -> WrittenReport:
    """Evaluate every method (and again on the rows all of them scored), plot, and write report.md,
    metrics.json and history/<run_id>.json under `out`. `ev` is the config's evaluation settings;
    `sections` are more markdown lines (RecCocktail's sections: `pointwise_cocktail_note`,
    models/listwise_report.py), put before "How to read this"; `extra` joins metrics.json."""
    import functools
    import shutil

    evaluate_ = functools.partial(evaluate, test, ks=tuple(int(k) for k in ev["ranking_k"]),
                                  bootstrap_samples=int(ev["bootstrap_samples"]), seed=int(ev["seed"]),
                                  min_subset_rows=int(ev["min_subset_rows"]), one_row_per_user=one_row_per_user)
    result = evaluate_(methods)
    common = on_common_rows(methods)
    same_rows = None if common is None else (evaluate_(common[0]), common[1])
    compared = comparisons_mod.compare(test, methods, comparisons_mod.pairs(methods),
                                       ks=tuple(int(k) for k in ev["ranking_k"]), samples=int(ev["bootstrap_samples"]),
                                       seed=int(ev["seed"]), min_rows=int(ev["min_subset_rows"]),
                                       one_row_per_user=one_row_per_user)
    compared += (extra or {}).get("listwise", {}).get("comparisons", [])  # RecCocktail's listwise table's
    claimed = comparisons_mod.claims(compared)
    plots = {"roc": str(plot_roc(test, methods, out / "roc.png")),
             "metrics": str(plot_metrics(result, out / "metrics.png"))}
    forest = plot_forest(compared, out / "paired_auc.png")
    if forest is not None:
        plots["paired_auc"] = str(forest)
    text = markdown(domain, test, result, settings, lineage, reference, plots, same_rows,
                    comparisons_mod.markdown(compared, claimed, int(ev["bootstrap_samples"])))
    if sections:
        head, sep, tail = text.partition("## How to read this")
        text = head + "\n".join(sections) + "\n" + sep + tail
    (out / "report.md").write_text(text)
    payload = {"domain": domain, "metrics": result, "settings": settings, "lineage": lineage, "test_rows": test.height,
               "comparisons": compared, "claims": claimed, **(extra or {})}
    if same_rows is not None:
        payload["same_rows"] = {"rows": same_rows[1], "metrics": same_rows[0]}
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=str))
    history = out / "history" / f"{run_id}.json"
    history.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "metrics.json", history)
    return WrittenReport(result, text, plots, out / "report.md", out / "metrics.json", history)


def headline_numbers(result: dict) -> dict[str, float]:
    """`method/subset/metric` -> value of every applicable AUC, UAUC and NDCG, for the asset's metadata."""
    return {f"{m}/{s}/{k}": round(result[m][s][k]["value"], 4)
            for m in result for s in SUBSETS for k in POINTWISE_METRICS if k in result[m][s]
            if not result[m][s][k].get("not_applicable") and result[m][s][k]["value"] is not None
            and not math.isnan(result[m][s][k]["value"])}
