"""Paired comparisons of the report's methods, and the papers' claims read from them as tests.

Every comparison is made within one frame (models/metrics/frames.py: the same rows, or the same candidate
lists, for both methods) and subset: the difference a - b of a metric, its paired user-level
bootstrap (`models.metrics.stats`: both methods see the same drawn users in every resample; the test
centres the resampled differences on the observed one) with `evaluation.test_resamples` resamples,
and for AUC also DeLong's test. A comparison that cannot be a test says why instead of giving a
number: too few users, rows or lists; one label class; or a degenerate pair (identical scores, a
constant scorer, the same value on every list).

Two families of tests, each with Holm's adjustment: the papers' claims (the confirmatory family)
and the paired comparisons a reader asks (the exploratory family). A claim has a relation: ">" is
tested against 0, ">=" (no worse) against minus the non-inferiority margin
(`evaluation.noninferiority_margin`, in the metric's units). Its verdict, at the Holm-adjusted level
alpha = 0.05: **reproduced** when the difference lies significantly above the null value,
**contradicted** when significantly below, **inconclusive** otherwise, **not testable** with the
reason. Each claim states the minimum detectable effect at its sample size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from models.metrics import ranking as metrics
from models.metrics import stats
from models.metrics.frames import Frame, Subset
from models.registry.methods import MERGE_BASELINES, TALLREC, UNTRAINED

ALPHA = 0.05
LLM_ASSETS = ("llm_scores", "collm_cie", "listwise_scores")
ROW_METRICS = ("auc", "uauc", "user_ndcg")
# the listwise comparisons: the published generated metrics and the ranking by score (likelihood for the LLM)
LIST_METRICS = ("generated_hr@1", "generated_ndcg@3", "hr@1", "ndcg@5")
LABELS = {"auc": "AUC", "uauc": "UAUC", "user_ndcg": "NDCG"}


def label(metric: str) -> str:
    return LABELS.get(metric) or metric.replace("generated_", "gen ").replace("own_", "own ").upper()


def collm_source(method: str) -> str | None:
    """The CF model of a CoLLM method: collm_<cf>[_cocktail][_<variant>] -> <cf>."""
    return method.split("_")[1] if method.startswith("collm_") and method.count("_") >= 1 else None


def pairs(names: list[str], sources: dict[str, str]) -> list[tuple[str, str, str]]:
    """(a, b, why) for every comparison a reader asks of these methods (`sources`: method -> asset)."""
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
        out += [(m, UNTRAINED, "a trained model against the untrained LLM") for m in names
                if m != UNTRAINED and sources.get(m) in LLM_ASSETS]
    return list(dict.fromkeys(out))


def _degenerate_scores(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> str | None:
    if np.array_equal(a, b):
        return "degenerate: identical scores"
    for name, s in ((name_a, a), (name_b, b)):
        if s.size and np.all(s == s[0]):
            return f"degenerate: {name} is constant on these rows"
    return None


def _degenerate_values(va: np.ndarray, vb: np.ndarray, unit: str) -> str | None:
    if np.array_equal(va, vb):
        if va.size and np.all(va == 0):
            return f"degenerate: both are 0 on every {unit}"
        return f"degenerate: identical on every {unit}"
    return None


class _Record:
    """Builds the comparison records of one frame; caches each method's AUC resamples per subset."""

    def __init__(self, frame: Frame, samples: int, seed: int, min_units: int):
        self.frame, self.samples, self.seed, self.min_units = frame, samples, seed, min_units
        self.auc_cache: dict[tuple[str, str], np.ndarray] = {}
        self.out: list[dict] = []

    def add(self, base: dict, metric: str, paired: stats.Paired | None, why_not: str | None, **more) -> None:
        rec = {"frame": self.frame.name, **base, "metric": metric, **more}
        if paired is not None:
            rec.update(paired.as_dict())
            rec["_paired"] = paired
        if why_not:
            rec["not_applicable"] = why_not
        self.out.append(rec)

    def auc_draws(self, method: str, subset: str, y, s, u) -> np.ndarray:
        key = (method, subset)
        if key not in self.auc_cache:
            self.auc_cache[key] = stats.auc_draws(y, s, u, self.samples, self.seed)
        return self.auc_cache[key]


def compare_rows(frame: Frame, frame_subsets: list[Subset], labels: np.ndarray, users: np.ndarray,
                 scores: dict[str, np.ndarray], pair_list: list[tuple[str, str, str]], samples: int, seed: int,
                 min_units: int, one_row_per_user: bool = False) -> list[dict]:
    """One record per (pair, subset, metric) of a frame of rows: AUC, and UAUC and CoLLM's NDCG
    unless every user has one row. `scores`: method -> scores over all test rows."""
    rec = _Record(frame, samples, seed, min_units)
    for a, b, why in pair_list:
        for sub in frame_subsets:
            sel = sub.mask
            y, sa, sb, u = labels[sel], scores[a][sel], scores[b][sel], users[sel]
            n_users = int(np.unique(u).size)
            base = {"a": a, "b": b, "why": why, "subset": sub.name, "shown": sub.shown, "n_users": n_users,
                    "n_rows": int(sel.sum())}
            degenerate = _degenerate_scores(a, sa, b, sb)
            if not sel.any():
                rec.add(base, "auc", None, f"no {sub.name} rows in this frame")
            elif len(np.unique(y)) < 2:
                rec.add(base, "auc", None, f"one label class on these {int(sel.sum())} rows")
            elif n_users < min_units:
                rec.add(base, "auc", None, f"too few users: {n_users} < evaluation.min_subset_rows = {min_units}")
            elif degenerate:
                rec.add(base, "auc", None, degenerate)
            else:
                observed = metrics.auc(y, sa) - metrics.auc(y, sb)
                d = rec.auc_draws(a, sub.name, y, sa, u) - rec.auc_draws(b, sub.name, y, sb, u)
                rec.add(base, "auc", stats.centred_test(observed, d, n_users, int(sel.sum())), None,
                        delong=stats.delong(y, sa, sb).as_dict())
            if one_row_per_user:
                continue
            for metric, fn in (("uauc", metrics.per_user_auc), ("user_ndcg", metrics.per_user_ndcg)):
                va, _ = fn(u, y, sa)
                vb, _ = fn(u, y, sb)
                base_m = {**base, "n_users": int(va.size)}
                if va.size < min_units:
                    rec.add(base_m, metric, None, f"too few users with both labels: {va.size} < "
                                                  f"evaluation.min_subset_rows = {min_units}")
                elif degenerate or _degenerate_values(va, vb, "user"):
                    rec.add(base_m, metric, None, degenerate or _degenerate_values(va, vb, "user"))
                else:  # the unit is the user; n_rows: the frame's rows
                    paired = stats.paired_mean_bootstrap(va, vb, np.arange(va.size), samples, seed)
                    rec.add(base_m, metric, dataclasses.replace(paired, n_rows=int(sel.sum())), None)
    return rec.out


def compare_lists(frame: Frame, frame_subsets: list[Subset], users: np.ndarray, lists: dict,
                  pair_list: list[tuple[str, str, str]], metric_names: tuple[str, ...], samples: int, seed: int,
                  min_units: int) -> list[dict]:
    """One record per (pair, subset, metric) of a frame of candidate lists. `lists`: method ->
    `models.reporting.report.ListScores` (each method's ranks on the frame's lists, by test row)."""
    rec = _Record(frame, samples, seed, min_units)
    for a, b, why in pair_list:
        la, lb = lists[a], lists[b]
        for sub in frame_subsets:
            rows = np.flatnonzero(sub.mask)
            u = users[rows]
            n_users = int(np.unique(u).size)
            base = {"a": a, "b": b, "why": why, "subset": sub.name, "shown": sub.shown, "n_users": n_users,
                    "n_rows": int(rows.size)}
            for metric in metric_names:
                va, vb = la.values(metric, rows), lb.values(metric, rows)
                if va is None or vb is None:
                    continue
                degenerate = _degenerate_values(va, vb, "list")
                if not rows.size:
                    rec.add(base, metric, None, f"no {sub.name} lists in this frame")
                elif n_users < min_units:
                    rec.add(base, metric, None, f"too few users: {n_users} < evaluation.min_subset_rows = {min_units}")
                elif degenerate:
                    rec.add(base, metric, None, degenerate)
                else:
                    rec.add(base, metric, stats.paired_mean_bootstrap(va, vb, u, samples, seed), None)
    return rec.out


def adjust(records: list[dict]) -> list[dict]:
    """Holm's adjustment over the family of the testable comparisons the report shows (`p_holm`);
    the hidden subsets' records (a subset the report does not show apart from "all") stay out of the
    family and keep no adjusted p."""
    family = [r for r in records if r.get("shown") and not r.get("not_applicable") and r.get("p") is not None]
    for r, adjusted in zip(family, stats.holm([r["p"] for r in family])):
        r["p_holm"] = float(adjusted)
    return records


@dataclass(frozen=True)
class Claim:
    text: str
    a: str
    b: str
    metric: str
    subset: str
    relation: str  # ">" (tested against 0) or ">=" (no worse: tested against minus the margin)
    source: str
    frame: str = "rows"  # where it is read: "rows" (the first frame of rows with both methods) or "listwise"


def _claims() -> list[Claim]:
    table2 = "CoLLM Table II (ML-1M, Amazon-Book)"
    out = []
    for cf, name in (("mf", "MF"), ("lightgcn", "LightGCN"), ("sasrec", "SASRec")):
        for metric in ("auc", "uauc"):
            out.append(Claim(f"CoLLM-{name} > TALLRec ({LABELS[metric]})", f"collm_{cf}", TALLREC, metric, "all", ">",
                             table2))
            out.append(Claim(f"CoLLM-{name} > {name} ({LABELS[metric]})", f"collm_{cf}", cf, metric, "all", ">",
                             table2))
    shape = "RecCocktail, expected shape (docs/protocols.md section 7)"
    out += [
        Claim("CoLLM-MF > TALLRec on warm rows (AUC)", "collm_mf", TALLREC, "auc", "warm", ">",
              "CoLLM's warm/cold analysis"),
        Claim("CoLLM-MF > MF on cold rows (AUC)", "collm_mf", "mf", "auc", "cold", ">", "CoLLM's warm/cold analysis"),
        Claim("RecCocktail >= ingredient on warm rows (AUC; our pointwise adaptation)", "reccocktail", TALLREC, "auc",
              "warm", ">=", shape),
        Claim("RecCocktail >= base spirit on warm rows (AUC; our pointwise adaptation)", "reccocktail", "base_spirit",
              "auc", "warm", ">=", shape),
        Claim("RecCocktail >= base spirit on cold rows (AUC; our pointwise adaptation)", "reccocktail", "base_spirit",
              "auc", "cold", ">=", shape),
    ]
    for b, name, subset in (("ingredient_tallrec", "ingredient", "warm"), ("base_spirit", "base spirit", "warm"),
                            ("base_spirit", "base spirit", "cold")):
        out.append(Claim(f"RecCocktail >= {name} on {subset} lists (generated NDCG@1, as published)", "reccocktail",
                         b, "generated_hr@1", subset, ">=", shape, frame="listwise"))
    return out


CLAIMS = _claims()


def claims(records: list[dict], frames: dict[str, Frame], margin: float, alpha: float = ALPHA,
           extra: list[Claim] = ()) -> list[dict]:
    """Every claim whose two methods share its frame, tested against its relation's null value,
    Holm-adjusted over the report's testable claims, with its verdict and its minimum detectable
    effect. A pointwise claim is read in the first frame of rows that has both methods (the
    evaluation sample, where the LLM methods are); a listwise one on RecCocktail's lists. `extra`:
    claims whose methods the report picks (RecCocktail against the best baseline on validation)."""
    index = {(r["frame"], r["a"], r["b"], r["subset"], r["metric"]): r for r in records}
    out = []
    for cl in [*CLAIMS, *extra]:
        candidates = [f for f in frames.values() if f.kind == "rows"] if cl.frame == "rows" else \
            [frames[cl.frame]] if cl.frame in frames else []
        frame = next((f for f in candidates if cl.a in f.methods and cl.b in f.methods), None)
        rec = None if frame is None else index.get((frame.name, cl.a, cl.b, cl.subset, cl.metric))
        if frame is None:
            continue
        row = {"claim": cl.text, "source": cl.source, "a": cl.a, "b": cl.b, "metric": cl.metric, "subset": cl.subset,
               "relation": cl.relation, "frame": frame.name,
               "margin": margin if cl.relation == ">=" else 0.0, "null": -margin if cl.relation == ">=" else 0.0}
        if rec is None:
            row["not_testable"] = f"no {cl.subset} {frame.unit()} in this frame"
        elif rec.get("not_applicable"):
            row["not_testable"] = rec["not_applicable"]
            row.update({k: rec.get(k) for k in ("difference", "n_users", "n_rows")})
        else:
            paired = stats.shifted(rec["_paired"], row["null"])
            row.update({k: v for k, v in paired.as_dict().items()})
            row["delong_p"] = (rec.get("delong") or {}).get("p")
        out.append(row)
    tested = [r for r in out if "not_testable" not in r]
    for r, adjusted in zip(tested, stats.holm([r["p"] for r in tested])):
        r["p_holm"] = float(adjusted)
        r["mde"] = stats.minimum_detectable_effect(r["se"], len(tested), alpha)
        significant = adjusted <= alpha
        r["verdict"] = ("reproduced" if significant and r["difference"] > r["null"] else
                        "contradicted" if significant else "inconclusive")
    for r in out:
        if "not_testable" in r:
            r["verdict"] = "not testable"
    return out


def public(records: list[dict]) -> list[dict]:
    """The records without their in-memory resamples (what metrics.json keeps)."""
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]


def num(v, fmt="{:+.4f}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)


def _pvalue(p) -> str:
    if p is None or (isinstance(p, float) and np.isnan(p)):
        return "n/a"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def claims_markdown(claim_rows: list[dict], frames: dict[str, Frame], samples: int, margin: float) -> list[str]:
    """The headline's claims block."""
    if not claim_rows:
        return ["**Claims.** No claim of the papers can be tested with this report's methods.", ""]
    tested = sum(1 for c in claim_rows if c["verdict"] != "not testable")
    lines = [f"**Claims** ({tested} testable, one family: Holm-adjusted p at alpha = {ALPHA}; \">\" tested against 0, "
             f"\"≥\" against -{margin:g}, the non-inferiority margin; paired user-level bootstrap, {samples:,} "
             "resamples; MDE: the smallest true difference from the null the test finds with 80 % power)", "",
             "| claim | frame | verdict | a − b [95 % CI] | p | p (Holm) | MDE | users / rows |",
             "|---|---|---|---|---|---|---|---|"]
    for c in claim_rows:
        verdict = f"**{c['verdict']}**" + (f" ({c['not_testable']})" if c.get("not_testable") else "")
        ci = "" if c.get("not_testable") else \
            f" [{num(c.get('ci_low'), '{:+.3f}')}, {num(c.get('ci_high'), '{:+.3f}')}]"
        lines.append(f"| {c['claim']} | {c['frame']} | {verdict} | {num(c.get('difference'))}{ci} | "
                     f"{_pvalue(c.get('p'))} | {_pvalue(c.get('p_holm'))} | {num(c.get('mde'), '{:.3f}')} | "
                     f"{c.get('n_users', '')} / {c.get('n_rows', '')} |")
    return lines + [""]


def _not_testable_summary(part: list[dict]) -> list[str]:
    """The reasons of a frame's comparisons that are no test, each once, with the metrics and
    subsets it covers."""
    by_reason: dict[str, set] = {}
    for r in part:
        if r.get("not_applicable"):
            by_reason.setdefault(r["not_applicable"], set()).add(f"{label(r['metric'])} {r['subset']}")
    return [f"- {reason}: {', '.join(sorted(where))}" for reason, where in by_reason.items()]


def markdown(records: list[dict], frames: dict[str, Frame], samples: int) -> list[str]:
    """The report's "Paired comparisons" section: one table per frame, shown subsets only; a column
    or a row that holds no test is left out and its reasons listed under the table."""
    shown = [r for r in records if r.get("shown")]
    if not shown:
        return []
    family = sum(1 for r in shown if "p_holm" in r)
    lines = ["## Paired comparisons", "",
             f"Each cell: a − b on the frame's rows or lists [95 % paired user-level bootstrap interval, {samples:,} "
             f"resamples], the raw p and the Holm-adjusted p over this report's {family} testable comparisons (a "
             "family apart from the claims); for AUC also DeLong's p (which treats rows as independent). `–`: that "
             "comparison is no test (the reasons follow each table). `metrics.json` (`comparisons`) has every number "
             "with its users and rows.", ""]
    for frame_name in dict.fromkeys(r["frame"] for r in shown):
        part = [r for r in shown if r["frame"] == frame_name]
        tested = [r for r in part if not r.get("not_applicable")]
        metric_names = list(dict.fromkeys(r["metric"] for r in tested))
        lines += [f"**{frames[frame_name].description}**", ""]
        if tested:
            lines += ["| a | b | subset | users / " + frames[frame_name].unit() + " | "
                      + " | ".join(label(m) for m in metric_names) + " |",
                      "|---|---|---|---|" + "---|" * len(metric_names)]
            groups: dict[tuple, dict] = {}
            for r in tested:
                groups.setdefault((r["a"], r["b"], r["subset"]), {})[r["metric"]] = r
            for (a, b, subset), by_metric in groups.items():
                first = next(iter(by_metric.values()))
                lines.append(f"| {a} | {b} | {subset} | {first.get('n_users', '')} / {first.get('n_rows', '')} | "
                             + " | ".join(_cell(by_metric.get(m)) for m in metric_names) + " |")
            lines.append("")
        else:
            lines += ["No comparison in this frame is a test.", ""]
        reasons = _not_testable_summary(part)
        if reasons:
            lines += ["Not testable:"] + reasons + [""]
    return lines


def _cell(c: dict | None) -> str:
    if c is None or c.get("not_applicable"):
        return "–"
    text = (f"{num(c['difference'])} [{num(c['ci_low'], '{:+.3f}')}, {num(c['ci_high'], '{:+.3f}')}] "
            f"p={_pvalue(c['p'])}, Holm {_pvalue(c.get('p_holm'))}")
    if c.get("delong"):
        text += f"; DeLong p={_pvalue(c['delong'].get('p'))}"
    return text
