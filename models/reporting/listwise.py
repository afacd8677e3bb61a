"""RecCocktail's lists in the evaluation report (docs/protocols.md section 7): each listwise LLM method's
ranked lists read from `scores/listwise.parquet` (the candidate likelihood, ours, and the greedy
generation, as published), checked to be the domain's `ranking_candidates` lists, which the CF models
rank too; and the paper's published numbers with their backbone. Test labels (which candidate is the
target) are read here only."""

from __future__ import annotations

import numpy as np
import polars as pl

from models.metrics import ranking as metrics
from models.registry.published import LISTWISE_PUBLISHED
from models.reporting.report import ListScores
from models.core.files import file_sha256

LABELS = {"llm_untrained": "raw LLM", "base_spirit": "base only (RecCocktail-G)", "ingredient_tallrec":
          "ingredient only", "equal_weights": "equal weights", "task_arithmetic": "task arithmetic", "ties": "TIES",
          "dare": "DARE", "reccocktail": "RecCocktail"}
MISSING_RANK = 10 ** 6  # a target the generation does not name: never a hit


class OtherLists(ValueError):
    """listwise_scores ranked lists other than the domain's `ranking_candidates` lists."""


def list_scores(df: pl.DataFrame, test: pl.DataFrame, candidates: pl.DataFrame) -> dict:
    """method -> `models.reporting.report.ListScores` of its lists: the target's standing by likelihood and by
    generation, the lists whose generation named no candidate and the items that named none. Every
    list must hold exactly the candidates `ranking_candidates` gave its test row."""

    targets = test["item_id"].to_list()
    expected = dict(zip(candidates["row"].to_list(), candidates["candidates"].to_list()))
    out = {}
    for method in df["method"].unique(maintain_order=True):
        part = df.filter(pl.col("method") == method).sort("row")
        above, tied, gen, none = [], [], [], []
        for row, ids, scores, generated in part.select("row", "candidate_ids", "candidate_scores",
                                                       "generated").iter_rows():
            if sorted(ids) != sorted(expected.get(row, [])):
                raise OtherLists(f"listwise_scores ranked other candidates than ranking_candidates for test row {row} "
                                 f"({method}): materialize listwise_scores again after ranking_candidates")
            t = ids.index(targets[row])
            s = np.asarray(scores, dtype=np.float64)
            r = metrics.target_ranks(s[[t]], np.delete(s, t)[None, :])
            above.append(int(r.above[0]))
            tied.append(int(r.tied[0]))
            gen.append(generated.index(t) if t in generated else MISSING_RANK)
            none.append(len(generated) == 0)
        rows = part["row"].to_numpy()
        out[method] = ListScores(method, rows, metrics.Ranks(np.array(above), np.array(tied)),
                                 int(part["candidate_ids"].list.len().max()), metrics.Ranks.exact(gen),
                                 np.array(none, dtype=bool), part["invalid_items"].to_numpy(), "listwise_scores")
    return out


def published_markdown(reference: str | None, backbone: str) -> list[str]:
    if reference not in LISTWISE_PUBLISHED:
        return []
    data, rows = LISTWISE_PUBLISHED[reference]
    return [f"Published (paper v2, {data}, NDCG@1 = HR@1, generated):", "", "| method | backbone | NDCG@1 |",
            "|---|---|---|"] + [f"| {m} | {b} | {v:.4f} |" for m, b, v in rows] + [
        "", f"Ours above: backbone `{backbone}`; gen HR@1 is the comparable column.", ""]


def load(ws, domain: str, test: pl.DataFrame, family: str = "listwise", asset: str = "listwise_scores",
         log=None) -> tuple[dict, dict | None]:
    """(method -> ListScores, lineage entry) of the domain's scores/<family>.parquet (a list task's:
    RecCocktail's `listwise`); nothing when there are none or they were scored on an older split."""
    path = ws.scores_path(domain, family)
    if not path.exists():
        return {}, None
    df = pl.read_parquet(path)
    if df.height == 0 or df["split_sha256"][0] != ws.split_sha256(domain):
        if log:
            log(f"{path} was scored on an older split of {domain!r}; materialize {asset} again")
        return {}, None
    return (list_scores(df, test, ws.candidates(domain)),
            {"asset": asset, "path": str(path), "sha256": file_sha256(path)})
