"""Candidate lists for ranking evaluation: each test row's item plus N sampled negatives
(RecCocktail: 29), drawn, seeded, from the domain's items the user never interacted with."""

from __future__ import annotations

import numpy as np
import polars as pl


def sample_candidates(split: pl.DataFrame, n_negatives: int = 29, seed: int = 2023, part: str = "test",
                      positions=None) -> pl.DataFrame:
    """One row per row of `part` (test by default; only the rows at `positions` when given):
    `row` (its position among them), `user_id`, `candidates`
    (the target item first, then the negatives). Labels are not read: which rows count as
    ranking targets (the positives) is decided by the report, the only reader of test labels."""
    items = np.sort(split["item_id"].unique().to_numpy()).astype(str)
    item_index = {it: k for k, it in enumerate(items)}
    seen: dict[str, set[int]] = {}
    for user, item in split.select("user_id", "item_id").iter_rows():
        seen.setdefault(user, set()).add(item_index[item])
    test = split.filter(pl.col("split") == part).select("user_id", "item_id")
    rng = np.random.default_rng(seed)
    rows = []
    keep = None if positions is None else set(int(p) for p in positions)
    for k, (user, item) in enumerate(test.iter_rows()):
        if keep is not None and k not in keep:
            continue
        excluded = seen[user]
        available = len(items) - len(excluded)
        if available < n_negatives:
            raise ValueError(
                f"user {user!r} has interacted with all but {available} of the domain's {len(items)} items; "
                f"cannot sample {n_negatives} negatives (lower ranking_negatives)")
        chosen: list[int] = []
        taken: set[int] = set()
        while len(chosen) < n_negatives:
            for c in rng.integers(0, len(items), 2 * n_negatives):
                c = int(c)
                if c not in excluded and c not in taken:
                    taken.add(c)
                    chosen.append(c)
                    if len(chosen) == n_negatives:
                        break
        rows.append((k, user, [item, *items[chosen].tolist()]))
    return pl.DataFrame(rows, schema={"row": pl.Int64, "user_id": pl.Utf8, "candidates": pl.List(pl.Utf8)},
                        orient="row")
