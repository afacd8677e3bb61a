"""The next-item sections of a leave-one-out domain's report, from scores/next_item.parquet (the CF
stage's standings, models/stages/cf.py): every CF model's test item ranked among every item the user
has not interacted with (full ranking, ours, as RecBole's `full` mode) and among 100 sampled negatives
(the SASRec paper's protocol), and the beyond-accuracy values of its top-k lists (RecBole's
definitions, models/metrics/beyond.py). Also the "best traditional baseline", picked by validation
NDCG@10 among 100 sampled negatives, which RecCocktail's claim is tested against. Every user has one
test item, so a user-level interval is a row-level one here."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from models.core.files import file_sha256
from models.metrics import ranking as metrics
from models.metrics import stats
from models.registry.cf import CF_MODELS
from models.registry.published import SAMPLED_PUBLISHED

FAMILY = "next_item"
ASSET = "cf_embeddings"


@dataclass
class Standings:
    """Each method's test standings and top-k values, and its validation NDCG@10 (100 negatives)."""

    methods: list[str]
    full: dict[str, metrics.Ranks]
    pool: dict[str, np.ndarray]
    sampled: dict[str, metrics.Ranks]
    popularity: dict[str, np.ndarray]
    tail: dict[str, np.ndarray]
    coverage: dict[str, float]
    gini: dict[str, float]
    valid_ndcg: dict[str, float]
    negatives: int
    top_k: int
    extra: dict = field(default_factory=dict)


def load(ws, domain: str, n_test: int, ev: dict, log=None) -> tuple[Standings | None, dict | None]:
    """The domain's standings (None when the file is absent, or written for another split), and its lineage."""
    path = ws.scores_path(domain, FAMILY)
    if not path.exists():
        return None, None
    df = pl.read_parquet(path)
    if df.height == 0 or df["split_sha256"][0] != ws.split_sha256(domain):
        if log:
            log(f"{path} was written for an older split of {domain!r}; materialize cf_embeddings again to bring "
                "the next-item tables back; left out of this report")
        return None, None
    out = Standings([], {}, {}, {}, {}, {}, {}, {}, {}, int(df["sampled_negatives"][0]), int(ev["top_k"]))
    if out.negatives < int(ev["next_item_negatives"]):
        out.extra["negatives_note"] = (f"{out.negatives} negatives, not evaluation.next_item_negatives = "
                                       f"{int(ev['next_item_negatives'])}: some user has only {out.negatives} items "
                                       "left that they never interacted with")
    for name in df["method"].unique(maintain_order=True):
        part = df.filter(pl.col("method") == name)
        test = part.filter(pl.col("split") == "test").sort("row")
        if test.height != n_test:
            raise ValueError(f"{path}: {name} has {test.height} test rows, the split {n_test}")
        out.methods.append(name)
        out.full[name] = metrics.Ranks(test["full_above"].to_numpy(), test["full_tied"].to_numpy())
        out.pool[name] = test["full_pool"].to_numpy()
        out.sampled[name] = metrics.Ranks(test["sampled_above"].to_numpy(), test["sampled_tied"].to_numpy())
        out.popularity[name] = test["popularity"].to_numpy()
        out.tail[name] = test["tail"].to_numpy()
        out.coverage[name] = float(test["coverage"][0])
        out.gini[name] = float(test["gini"][0])
        out.valid_ndcg[name] = float(test["valid_ndcg@10"][0])
    return out, {"asset": ASSET, "path": str(path), "sha256": file_sha256(path)}


def metric_names(ev: dict) -> list[str]:
    ks = [int(k) for k in ev["full_ranking_k"]]
    return [f"{m}@{k}" for m in ("hr", "ndcg") for k in ks] + ["mrr", "sampled_hr@10", "sampled_ndcg@10"]


def evaluate(st: Standings, ev: dict) -> dict:
    """method -> metric -> estimate (value, 95 % user-level interval, n), and the beyond-accuracy values."""
    samples, seed = int(ev["bootstrap_samples"]), int(ev["seed"])
    out = {}
    for m in st.methods:
        row = {}
        for metric in metric_names(ev):
            ranks = st.sampled[m] if metric.startswith("sampled_") else st.full[m]
            name, _, k = metric.removeprefix("sampled_").partition("@")
            row[metric] = metrics.ranking_estimate(ranks, name, int(k or 0), samples, seed).as_dict()
        for key in ("popularity", "tail"):
            values = getattr(st, key)[m]
            lo, hi = stats.mean_bootstrap(values, np.arange(values.size), samples, seed)
            row[key] = {"value": float(values.mean()), "ci_low": lo, "ci_high": hi, "n": int(values.size)}
        row["coverage"], row["gini"] = st.coverage[m], st.gini[m]
        row["valid_ndcg@10_100neg"] = st.valid_ndcg[m]
        out[m] = row
    return out


def best_baseline(st: Standings, among: list[str]) -> tuple[str, float] | None:
    """The CF model of `among` with the best validation NDCG@10 among 100 negatives (ties: the first)."""
    scored = [(st.valid_ndcg[m], -k, m) for k, m in enumerate(among) if m in st.valid_ndcg]
    if not scored:
        return None
    value, _, name = max(scored)
    return name, value


def _cell(est: dict) -> str:
    return f"{est['value']:.4f} [{est['ci_low']:.3f}, {est['ci_high']:.3f}]"


def markdown(st: Standings, result: dict, ev: dict, reference: str | None, best: tuple[str, float] | None) -> list[str]:
    n = len(next(iter(st.full.values())))
    pools = np.concatenate(list(st.pool.values()))
    names = metric_names(ev)
    head = [m.replace("sampled_", "").upper() + (" (100 neg.)" if m.startswith("sampled_") else " (full)")
            for m in names]
    lines = ["## Next-item ranking: full catalogue and the SASRec paper's 100 negatives", "",
             f"Frame: every test user ({n:,} users, one test item each: the next item, whatever its rating); every "
             "CF model ranked it. **Full ranking** (ours, as RecBole's `full` mode): the test item among every item "
             f"the user has not interacted with in train or valid ({int(pools.min()):,} to {int(pools.max()):,} "
             f"items). **100 neg.** (the SASRec paper's protocol): among {st.negatives} items drawn uniformly "
             "(seeded, the same for every model) from those the user never interacted with"
             + (f" ({st.extra['negatives_note']})" if "negatives_note" in st.extra else "") + ". Ties: random "
             "tie-breaking by its expectation (MRR too). 95 % intervals: users resampled. Objective: what each model "
             "is trained on.", "",
             "| method | objective | " + " | ".join(head) + " |",
             "|---|---|" + "---|" * len(head)]
    for m in st.methods:
        objective = CF_MODELS[m].objective if m in CF_MODELS else ""
        lines.append(f"| {m} | {objective} | " + " | ".join(_cell(result[m][k]) for k in names) + " |")
    chance = {"sampled_hr@10": 10 / (st.negatives + 1),
              "sampled_ndcg@10": metrics.chance_level(st.negatives + 1, "ndcg", 10)}
    lines.append("| *chance* | | " + " | ".join(f"*{chance[k]:.4f}*" if k in chance else "" for k in names) + " |")
    lines.append("")
    published = SAMPLED_PUBLISHED.get(reference or "")
    if published:
        data, rows = published
        lines += [f"Published (Kang & McAuley 2018, Table III, {data}, 100 negatives): "
                  + "; ".join(f"{m} HR@10 {hr:.4f}, NDCG@10 {nd:.4f}" for m, hr, nd in rows)
                  + ". Ours above: the same protocol at this domain's training budget (`settings.cf`; "
                    "docs/cf.md gives the budget that reproduces it).", ""]
    if best:
        lines += [f"Best traditional baseline by validation NDCG@10 among 100 negatives (no test data): **{best[0]}** "
                  f"({best[1]:.4f}); RecCocktail's claim against it is in the claims block.", ""]
    lines += [f"### Beyond accuracy: each user's top {st.top_k} by full ranking", "",
              "Coverage: distinct recommended items / catalogue; Gini: concentration of how often each catalogue "
              "item is recommended (0 equal, 1 one item everywhere); average popularity: per user the mean train "
              f"interaction count of the {st.top_k} items, then the mean; tail share: per user the share of them in "
              f"the long tail (the {float(ev['tail_ratio']):g} of train items with the fewest interactions, and items "
              "never in train; RecBole's definitions, the last part ours). Coverage and Gini describe the whole set "
              "of lists: no interval.", "",
              "| method | coverage | Gini | average popularity | tail share |", "|---|---|---|---|---|"]
    for m in st.methods:
        r = result[m]
        lines.append(f"| {m} | {r['coverage']:.4f} | {r['gini']:.4f} | {r['popularity']['value']:.1f} "
                     f"[{r['popularity']['ci_low']:.1f}, {r['popularity']['ci_high']:.1f}] | {_cell(r['tail'])} |")
    return lines + [""]
