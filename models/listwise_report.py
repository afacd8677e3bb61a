"""RecCocktail's table in the evaluation report (PROTOCOLS section 7): every merge method on the
listwise test lists, warm and cold, in both evaluation modes (greedy generation, as published; the
candidate-likelihood ranking, ours), and the published
numbers with their backbone. Test labels (which candidate is the target) are read here only."""

from __future__ import annotations

import numpy as np
import polars as pl

from models import metrics, stats

# the papers' NDCG@1 (= HR@1, generated), paper v2's table (PROTOCOLS section 7): data set, then (method, backbone, value)
PUBLISHED = {
    "reccocktail_ml1m": ("ML-1M", [("best baseline", "Qwen2-7B-Instruct", 0.5392),
                                   ("RecCocktail", "Qwen2-7B-Instruct", 0.5783)]),
    "reccocktail_beauty": ("Amazon 2014 Beauty", [("best baseline", "Qwen2-7B-Instruct", 0.3347),
                                                  ("RecCocktail", "Qwen2-7B-Instruct", 0.4132)]),
    "reccocktail_toys": ("Amazon 2014 Toys and Games", [("best baseline", "Qwen2-7B-Instruct", 0.3746),
                                                        ("RecCocktail", "Qwen2-7B-Instruct", 0.4097)]),
    "reccocktail_sports": ("Amazon 2014 Sports and Outdoors", [("best baseline", "Qwen2-7B-Instruct", 0.3585),
                                                               ("RecCocktail", "Qwen2-7B-Instruct", 0.3754)]),
}
LABELS = {"llm_untrained": "raw LLM", "base_spirit": "base only (RecCocktail-G)", "ingredient_tallrec":
          "ingredient only", "equal_weights": "equal weights", "task_arithmetic": "task arithmetic", "ties": "TIES",
          "dare": "DARE", "reccocktail": "RecCocktail"}
GENERATED = (("hr", 1), ("hr", 3), ("ndcg", 3), ("ndcg", 5))
MISSING_RANK = 10 ** 6  # a target the generation does not name: never a hit


def _ranks(df: pl.DataFrame, targets: dict[int, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per list: the target's 0-based rank by likelihood (ties rank it last), by generation
    (MISSING_RANK when not named), whether the generation named no candidate, and the test row."""
    lik, gen, none, rows = [], [], [], []
    for row, ids, scores, generated in df.select("row", "candidate_ids", "candidate_scores", "generated").iter_rows():
        t = ids.index(targets[row])
        s = np.asarray(scores)
        lik.append(int(metrics.target_ranks(s[[t]], np.delete(s, t)[None, :])[0]))
        gen.append(generated.index(t) if t in generated else MISSING_RANK)
        none.append(len(generated) == 0)
        rows.append(row)
    return np.array(lik), np.array(gen), np.array(none), np.array(rows)


def all_ranks(scores: pl.DataFrame, test: pl.DataFrame) -> dict[str, tuple]:
    """method -> `_ranks` of its lists."""
    targets = dict(enumerate(test["item_id"].to_list()))
    return {method: _ranks(scores.filter(pl.col("method") == method).sort("row"), targets)
            for method in scores["method"].unique(maintain_order=True)}


def evaluate(scores: pl.DataFrame, test: pl.DataFrame, ks: tuple[int, ...], samples: int, seed: int) -> dict:
    """method -> subset (all / warm / cold: not warm) -> metric -> estimate; plus the invalid counts.
    One list per user (leave-one-out), so resampling lists is resampling users."""
    warm = test["warm"].to_numpy().astype(bool)
    out = {}
    for method, (lik, gen, none, rows) in all_ranks(scores, test).items():
        part = scores.filter(pl.col("method") == method).sort("row")
        res = {}
        for subset, mask in (("all", np.ones(len(rows), bool)), ("warm", warm[rows]), ("cold", ~warm[rows])):
            est = {f"generated_{m}@{k}": metrics.ranking_estimate(gen[mask], m, k, samples, seed).as_dict()
                   for m, k in GENERATED}
            est.update({f"likelihood_{m}@{k}": metrics.ranking_estimate(lik[mask], m, k, samples, seed).as_dict()
                        for k in ks for m in ("hr", "ndcg")})
            est["lists"] = int(mask.sum())
            est["no_candidate_named"] = int(none[mask].sum())
            est["invalid_items"] = int(part["invalid_items"].to_numpy()[mask].sum())
            res[subset] = est
        out[method] = res
    return out


# the comparisons a reader asks of the listwise table (models/comparisons.py reads the claims from them)
MERGE_BASELINES = ("ingredient_tallrec", "base_spirit", "equal_weights", "task_arithmetic", "ties", "dare")
PAIRED_METRICS = (("generated", "hr", 1), ("generated", "ndcg", 3), ("likelihood", "ndcg", 5))
PREFIX = "listwise/"  # the listwise methods' names in the comparisons, apart from the pointwise ones


def compare(scores: pl.DataFrame, test: pl.DataFrame, samples: int, seed: int, min_lists: int) -> list[dict]:
    """RecCocktail against its ingredient, its base spirit and every merge baseline, and every method
    against the raw LLM, on the lists both scored, per subset: the difference of generated HR@1 (the
    paper's NDCG@1), generated NDCG@3 and likelihood NDCG@5 with the paired bootstrap (one list per
    user: resampling lists is resampling users)."""
    ranks = all_ranks(scores, test)
    warm = test["warm"].to_numpy().astype(bool)
    pairs = [("reccocktail", b) for b in MERGE_BASELINES if "reccocktail" in ranks and b in ranks]
    pairs += [(m, "llm_untrained") for m in ranks if m != "llm_untrained" and "llm_untrained" in ranks]
    out = []
    for a, b in pairs:
        (lik_a, gen_a, _, rows_a), (lik_b, gen_b, _, rows_b) = ranks[a], ranks[b]
        common, ia, ib = np.intersect1d(rows_a, rows_b, return_indices=True)
        for subset, mask in (("all", np.ones(common.size, bool)), ("warm", warm[common]), ("cold", ~warm[common])):
            for mode, m, k in PAIRED_METRICS:
                ra, rb = (gen_a[ia], gen_b[ib]) if mode == "generated" else (lik_a[ia], lik_b[ib])
                rec = {"a": PREFIX + a, "b": PREFIX + b, "subset": subset, "metric": f"{mode}_{m}@{k}",
                       "why": "listwise: " + ("the cocktail against " + b if a == "reccocktail" and b != "llm_untrained"
                                              else "a trained model against the raw LLM")}
                if mask.sum() < min_lists:
                    rec["not_applicable"] = f"only {int(mask.sum())} lists both scored (evaluation.min_subset_rows = {min_lists})"
                else:
                    rec.update(stats.paired_mean_bootstrap(metrics.ranking_values(ra[mask], m, k),
                                                           metrics.ranking_values(rb[mask], m, k), common[mask],
                                                           samples, seed).as_dict())
                out.append(rec)
    return out


def _fmt(est: dict) -> str:
    v, lo, hi = est["value"], est["ci_low"], est["ci_high"]
    if v is None or np.isnan(v):
        return "n/a"
    return f"{v:.4f}" if lo is None or np.isnan(lo) else f"{v:.4f} [{lo:.3f}, {hi:.3f}]"


def markdown(result: dict, ks: tuple[int, ...], reference: str | None, backbone: str,
             samples: int) -> list[str]:
    lines = ["## RecCocktail as published: listwise next-item selection among 30 candidates", "",
             "Each test list: the user's last item among 29 seeded negatives, shuffled, in the authors' prompt. "
             "**Generated** (as published): greedy generation split on `||`, exact title match. **Likelihood** "
             "(ours, deterministic): the 30 titles ranked by their log-likelihood as the first answer item. Warm: "
             "the user and the item each have more than `warm_threshold` train records; cold: the others. "
             f"Intervals: 95 % bootstrap over lists, one per user ({samples} resamples). Base spirit, ingredients and the merge "
             "are trained and selected on validation data only.", ""]
    gen_cols = [f"{m}@{k}" for m, k in GENERATED]
    lik_cols = [f"{m}@{k}" for k in ks for m in ("hr", "ndcg")]
    for subset in ("all", "warm", "cold"):
        n = next(iter(result.values()))[subset]["lists"] if result else 0
        lines += [f"**{subset}** ({n} lists)", "",
                  "| method | " + " | ".join(f"gen {c.upper()}" for c in gen_cols) + " | no candidate | "
                  + " | ".join(f"lik {c.upper()}" for c in lik_cols) + " |",
                  "|---|" + "---|" * (len(gen_cols) + 1 + len(lik_cols))]
        for method, subsets in result.items():
            r = subsets[subset]
            lines.append(f"| {LABELS.get(method, method)} | "
                         + " | ".join(_fmt(r[f"generated_{c}"]) for c in gen_cols) + f" | {r['no_candidate_named']} | "
                         + " | ".join(_fmt(r[f"likelihood_{c}"]) for c in lik_cols) + " |")
        lines.append("")
    if reference in PUBLISHED:
        data, rows = PUBLISHED[reference]
        lines += [f"Published (paper v2, {data}, NDCG@1 = HR@1, generated):", "", "| method | backbone | NDCG@1 |",
                  "|---|---|---|"] + [f"| {m} | {b} | {v:.4f} |" for m, b, v in rows] + [
            "", f"Ours above: backbone `{backbone}`; gen HR@1 is the comparable column.", ""]
    return lines


def section(ws, domain: str, test: pl.DataFrame, ev: dict, reference: str | None, backbone: str,
            log=None) -> tuple[list[str], dict, dict | None]:
    """(markdown lines, metrics, lineage entry) of the domain's listwise scores; nothing when there are none
    or they were scored on an older split."""
    path = ws.scores_path(domain, "listwise")
    if not path.exists():
        return [], {}, None
    df = pl.read_parquet(path)
    if df.height == 0 or df["split_sha256"][0] != ws.split_sha256(domain):
        if log:
            log(f"{path} was scored on an older split of {domain!r}; materialize listwise_scores again")
        return [], {}, None
    ks = tuple(int(k) for k in ev["ranking_k"])
    result = evaluate(df, test, ks, int(ev["bootstrap_samples"]), int(ev["seed"]))
    compared = compare(df, test, int(ev["bootstrap_samples"]), int(ev["seed"]), int(ev["min_subset_rows"]))
    from models.data_prep import file_sha256

    return (markdown(result, ks, reference, backbone, int(ev["bootstrap_samples"])),
            {"metrics": result, "comparisons": compared},
            {"asset": "listwise_scores", "path": str(path), "sha256": file_sha256(path)})
