"""Beyond-accuracy metrics of top-k recommendation lists, as RecBole defines them (its
`ItemCoverage`, `GiniIndex`, `AveragePopularity`, `TailPercentage`), over the lists of every test user:

- **coverage**: distinct recommended items / catalogue items;
- **Gini index** of how often each catalogue item is recommended (items never recommended count as
  0): 0 when every item is recommended equally often, towards 1 when a few items take every slot;
- **average popularity**: per user the mean train interaction count of the recommended items, then
  the mean over users;
- **tail share**: per user the share of recommended items in the long tail, then the mean over
  users. The tail: the `tail_ratio` share of the items with train interactions that have the fewest
  (ties by index), as RecBole's `tail_ratio` < 1; items never in train count as tail too (ours:
  RecBole leaves them out of its count and so never calls them tail).

Coverage and Gini are properties of the whole set of lists (no per-user value, so no user-level
interval); average popularity and tail share are means of per-user values."""

from __future__ import annotations

import numpy as np


def coverage(top: np.ndarray, n_items: int) -> float:
    return float(np.unique(top).size / n_items) if n_items else float("nan")


def gini_index(top: np.ndarray, n_items: int) -> float:
    counts = np.sort(np.bincount(np.asarray(top).ravel(), minlength=n_items)).astype(np.float64)
    total = counts.sum()
    if not total:
        return float("nan")
    i = np.arange(1, n_items + 1)
    return float(((2 * i - n_items - 1) * counts).sum() / (n_items * total))


def popularity_per_user(top: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each list's mean train interaction count of its items."""
    return np.asarray(counts, np.float64)[top].mean(axis=1)


def tail_items(counts: np.ndarray, tail_ratio: float) -> np.ndarray:
    """Mask of the long-tail items: never in train, or among the `tail_ratio` share (at least one) of
    the items with train interactions that have the fewest."""
    counts = np.asarray(counts)
    seen = np.flatnonzero(counts > 0)
    cut = max(int(seen.size * tail_ratio), 1) if seen.size else 0
    order = seen[np.lexsort((seen, counts[seen]))]
    tail = counts == 0
    tail[order[:cut]] = True
    return tail


def tail_share_per_user(top: np.ndarray, tail: np.ndarray) -> np.ndarray:
    return tail[top].mean(axis=1)
