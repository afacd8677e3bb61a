"""Paired comparisons of the report's methods, and the papers' claims read from them.

Every comparison is on the rows both methods scored (an LLM method scores a seeded sample, the same
sample for every LLM method), per subset (all / warm / cold): the difference of each metric with a
paired user-level bootstrap interval and p-value (`models.stats`), and for AUC also DeLong's test.
A claim of a paper ("CoLLM-MF > TALLRec on warm rows") is read from its comparison's interval:
**reproduced** when the interval lies above 0, **contradicted** when it lies below 0,
**inconclusive** when it holds 0 (95 % intervals, the 0.05 level). A claim of the form ">=" (the
cocktail no worse than its parts) is contradicted only by an interval below 0; an interval above 0
reproduces it, one holding 0 leaves it inconclusive (no difference shown either way).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import polars as pl

from models import metrics, stats

SUBSETS = ("all", "warm", "cold")
UNTRAINED = "llm_untrained"
TALLREC = "ingredient_tallrec"
# RecCocktail's merge baselines (models/merge.py score names); our pointwise adaptation
MERGE_BASELINES = ("ingredient_tallrec", "base_spirit", "equal_weights", "task_arithmetic", "ties", "dare")
LLM_ASSETS = ("llm_scores", "collm_cie")


def collm_source(method: str) -> str | None:
    """The CF model of a CoLLM method: collm_<cf>[_cocktail][_<variant>] -> <cf>."""
    return method.split("_")[1] if method.startswith("collm_") and method.count("_") >= 1 else None


def pairs(methods) -> list[tuple[str, str, str]]:
    """(a, b, why) for every comparison a reader asks of these methods (`methods`: MethodScores)."""
    names = [m.name for m in methods]
    have = set(names)
    out: list[tuple[str, str, str]] = []
    for m in names:
        cf = collm_source(m)
        if cf:
            if TALLREC in have:
                out.append((m, TALLREC, "CoLLM against TALLRec (CoLLM w/o CIE)"))
            if cf in have:
                out.append((m, cf, f"CoLLM against its CF model {cf} alone"))
    if "reccocktail" in have:
        out += [("reccocktail", b, "the cocktail against " + ("its ingredient" if b == TALLREC else "its base spirit"
                                                              if b == "base_spirit" else f"the merge baseline {b}"))
                for b in MERGE_BASELINES if b in have]
    if UNTRAINED in have:
        out += [(m.name, UNTRAINED, "a trained model against the untrained LLM") for m in methods
                if m.name != UNTRAINED and m.source.get("asset") in LLM_ASSETS]
    return list(dict.fromkeys(out))


def _per_user(fn, users, labels, a, b):
    va, codes = fn(users, labels, a)
    vb, codes_b = fn(users, labels, b)
    assert np.array_equal(codes, codes_b)  # the same rows and labels keep the same users
    return va, vb


def compare(test: pl.DataFrame, methods, pair_list: list[tuple[str, str, str]], ks: tuple[int, ...] = (1, 3, 5),
            samples: int = 1000, seed: int = 2023, min_rows: int = 20, one_row_per_user: bool = False) -> list[dict]:
    """One record per (pair, subset, metric): difference a - b on the rows both scored, its paired
    user-level bootstrap interval and p-value; `delong` for AUC. Too few rows (or users, or lists)
    give a record with `not_applicable` and its reason."""
    from models.report import subset_masks

    by_name = {m.name: m for m in methods}
    labels = test["label"].to_numpy().astype(np.int64)
    users = test["user_id"].to_numpy()
    masks = subset_masks(test)
    out = []
    for a, b, why in pair_list:
        ma, mb = by_name[a], by_name[b]
        both = ~np.isnan(ma.pointwise) & ~np.isnan(mb.pointwise)
        for subset, mask in masks.items():
            sel = both & mask
            y, sa, sb, u = labels[sel], ma.pointwise[sel], mb.pointwise[sel], users[sel]
            base = {"a": a, "b": b, "why": why, "subset": subset}

            def record(metric, paired: stats.Paired | None, unit_n: int, unit: str, **more):
                rec = {**base, "metric": metric, **more}
                if paired is None or unit_n < min_rows:
                    rec["not_applicable"] = f"only {unit_n} {unit} both methods scored (evaluation.min_subset_rows = {min_rows})"
                    if paired is not None:
                        rec.update(paired.as_dict())
                else:
                    rec.update(paired.as_dict())
                out.append(rec)

            auc_pair = None
            if len(np.unique(y)) == 2:
                auc_pair = stats.paired_auc_bootstrap(y, sa, sb, u, samples, seed)
            record("auc", auc_pair, int(sel.sum()), "rows",
                   delong=stats.delong(y, sa, sb).as_dict() if auc_pair is not None else None)
            if not one_row_per_user:
                for metric, fn in (("uauc", metrics.per_user_auc), ("user_ndcg", metrics.per_user_ndcg)):
                    va, vb = _per_user(fn, u, y, sa, sb)
                    paired = stats.paired_mean_bootstrap(va, vb, np.arange(va.size), samples, seed) if va.size else None
                    if paired is not None:  # its unit is the user; n_rows: the rows both scored
                        paired = dataclasses.replace(paired, n_rows=int(sel.sum()))
                    record(metric, paired, int(va.size), "users with both labels")
            if ma.ranking is not None and mb.ranking is not None:
                lists = mask & (labels == 1) & ~np.isnan(ma.ranking).any(1) & ~np.isnan(mb.ranking).any(1)
                ra = metrics.target_ranks(ma.ranking[lists, 0], ma.ranking[lists, 1:])
                rb = metrics.target_ranks(mb.ranking[lists, 0], mb.ranking[lists, 1:])
                for k in ks:
                    for metric in ("hr", "ndcg"):
                        paired = (stats.paired_mean_bootstrap(metrics.ranking_values(ra, metric, k),
                                                              metrics.ranking_values(rb, metric, k), users[lists],
                                                              samples, seed) if lists.any() else None)
                        record(f"{metric}@{k}", paired, int(lists.sum()), "ranked lists")
    return out


@dataclass(frozen=True)
class Claim:
    text: str
    a: str
    b: str
    metric: str
    subset: str
    relation: str  # ">" or ">="
    source: str


def _claims() -> list[Claim]:
    table2 = "CoLLM Table II (ML-1M, Amazon-Book)"
    out = []
    for cf, label in (("mf", "MF"), ("lightgcn", "LightGCN"), ("sasrec", "SASRec")):
        for metric, name in (("auc", "AUC"), ("uauc", "UAUC")):
            out.append(Claim(f"CoLLM-{label} > TALLRec ({name}, all rows)", f"collm_{cf}", TALLREC, metric, "all", ">",
                             table2))
            out.append(Claim(f"CoLLM-{label} > {label} ({name}, all rows)", f"collm_{cf}", cf, metric, "all", ">", table2))
    out += [
        Claim("CoLLM-MF > TALLRec on warm rows (AUC)", "collm_mf", TALLREC, "auc", "warm", ">",
              "CoLLM's warm/cold analysis"),
        Claim("CoLLM-MF > MF on cold rows (AUC)", "collm_mf", "mf", "auc", "cold", ">",
              "CoLLM's warm/cold analysis"),
        Claim("RecCocktail >= ingredient on warm rows (AUC; our pointwise adaptation)", "reccocktail", TALLREC, "auc",
              "warm", ">=", "RecCocktail, expected shape (PROTOCOLS section 7)"),
        Claim("RecCocktail >= base spirit on warm rows (AUC; our pointwise adaptation)", "reccocktail", "base_spirit",
              "auc", "warm", ">=", "RecCocktail, expected shape (PROTOCOLS section 7)"),
        Claim("RecCocktail >= base spirit on cold rows (AUC; our pointwise adaptation)", "reccocktail", "base_spirit",
              "auc", "cold", ">=", "RecCocktail, expected shape (PROTOCOLS section 7)"),
    ]
    lw = "listwise/"
    for b, name, subset in (("ingredient_tallrec", "ingredient", "warm"), ("base_spirit", "base spirit", "warm"),
                            ("base_spirit", "base spirit", "cold")):
        out.append(Claim(f"RecCocktail >= {name} on {subset} lists (generated NDCG@1, as published)", lw + "reccocktail",
                         lw + b, "generated_hr@1", subset, ">=", "RecCocktail, expected shape (PROTOCOLS section 7)"))
    return out


CLAIMS = _claims()


def verdict(rec: dict, relation: str) -> str:
    """reproduced / contradicted / inconclusive from a comparison's interval (module doc)."""
    if rec.get("not_applicable") or rec.get("ci_low") is None or np.isnan(rec["ci_low"]):
        return "not testable"
    if rec["ci_low"] > 0:
        return "reproduced"
    if rec["ci_high"] < 0:
        return "contradicted"
    return "inconclusive"


def claims(comparisons: list[dict]) -> list[dict]:
    """Every claim whose two methods this report has, with its verdict and the numbers behind it."""
    index = {(c["a"], c["b"], c["subset"], c["metric"]): c for c in comparisons}
    out = []
    for cl in CLAIMS:
        rec = index.get((cl.a, cl.b, cl.subset, cl.metric))
        if rec is None:
            continue
        out.append({"claim": cl.text, "source": cl.source, "a": cl.a, "b": cl.b, "metric": cl.metric,
                    "subset": cl.subset, "relation": cl.relation, "verdict": verdict(rec, cl.relation),
                    **{k: rec.get(k) for k in ("difference", "ci_low", "ci_high", "p", "n_users", "n_rows", "delong",
                                               "not_applicable")}})
    return out


def num(v, fmt="{:+.4f}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)


def markdown(comparisons: list[dict], claim_rows: list[dict], samples: int) -> list[str]:
    """The report's "Claims" and "Paired comparisons" sections."""
    if not comparisons:
        return []
    lines = ["## Claims", "",
             "Each claim of the papers that this report's methods can test, read from the paired comparison below: "
             "**reproduced** when the 95 % interval of the difference lies above 0, **contradicted** when it lies "
             "below 0, **inconclusive** when it holds 0 (for \"≥\" claims an interval holding 0 shows no difference "
             "either way). Intervals are user-level (users resampled with all their rows, "
             f"{samples} resamples, percentile), on the rows both methods scored.", ""]
    if claim_rows:
        lines += ["| claim | source | verdict | difference [95 % CI] | p (bootstrap) | p (DeLong) | users / rows |",
                  "|---|---|---|---|---|---|---|"]
        for c in claim_rows:
            delong = c.get("delong") or {}
            lines.append(f"| {c['claim']} | {c['source']} | **{c['verdict']}** | {num(c.get('difference'))} "
                         f"[{num(c.get('ci_low'), '{:+.3f}')}, {num(c.get('ci_high'), '{:+.3f}')}] | "
                         f"{num(c.get('p'), '{:.3f}')} | {num(delong.get('p'), '{:.3f}')} | "
                         f"{c.get('n_users')} / {c.get('n_rows')} |")
    else:
        lines.append("No claim of the papers can be tested with this report's methods.")
    metric_names = list(dict.fromkeys(c["metric"] for c in comparisons))
    labels = {"auc": "AUC", "uauc": "UAUC", "user_ndcg": "NDCG"}
    lines += ["", "## Paired comparisons", "",
              "Each cell: a − b on the rows both scored [95 % paired user-level bootstrap interval], its two-sided "
              "bootstrap p-value, and for AUC DeLong's p-value (DeLong treats rows as independent). † not applicable "
              "(too few rows, users or lists both scored). `metrics.json` (`comparisons`) has each number with its "
              "users and rows.", "",
              "| a | b | subset | users / rows | " + " | ".join(
                  labels.get(m) or m.replace("generated_", "gen ").replace("likelihood_", "lik ").upper()
                  for m in metric_names) + " |",
              "|---|---|---|---|" + "---|" * len(metric_names)]
    groups: dict[tuple, dict] = {}
    for c in comparisons:
        groups.setdefault((c["a"], c["b"], c["subset"]), {})[c["metric"]] = c

    def cell(c: dict | None) -> str:
        if c is None:
            return ""
        if c.get("not_applicable"):
            return "n/a†"
        text = (f"{num(c['difference'])} [{num(c['ci_low'], '{:+.3f}')}, {num(c['ci_high'], '{:+.3f}')}] "
                f"p={num(c['p'], '{:.3f}')}")
        if c.get("delong"):
            text += f"; DeLong p={num(c['delong'].get('p'), '{:.3f}')}"
        return text

    for (a, b, subset), by_metric in groups.items():
        first = next((c for c in by_metric.values() if "n_users" in c), {})
        lines.append(f"| {a} | {b} | {subset} | {first.get('n_users', '')} / {first.get('n_rows', '')} | "
                     + " | ".join(cell(by_metric.get(m)) for m in metric_names) + " |")
    return lines + [""]
