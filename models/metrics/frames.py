"""The report's frames: which test rows and candidate lists each of its numbers rests on.

The evaluation sample is drawn by user, not by row: a seeded permutation of the domain's test users,
of which the first `n` are the sample, each with all of their test rows (and, on a next-item domain,
their one list). Rows of one user are not independent draws, and UAUC and CoLLM's NDCG are averages
over users, so only a sample of whole users gives them a value. The samples of different sizes are
nested (the first `n` users of the same permutation), so the listwise sample, the pointwise sample and
the users whose candidate lists an LLM also ranks are subsets of one another, never different draws.

A frame is a set of test rows (or of candidate lists, one per target row) and the methods that
scored every one of them; every table of the report states its frame and its `n`. No Dagster here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUBSETS = ("all", "warm", "cold")
SUBSET_MEANING = {
    "warm": "the user and the item each have more than `warm_threshold` train records",
    "cold": "the user or the item never appears in train",
}


def sample_users(user_ids, n: int | float | None, seed: int = 2023) -> np.ndarray:
    """The evaluation sample's users: the first `n` of a seeded permutation of the distinct users
    (sorted first, so the draw does not depend on row order); `n` a count, a fraction (a float <= 1)
    or None (every user)."""
    users = np.unique(np.asarray(user_ids).astype(str))
    if n is None:
        return users
    take = round(users.size * n) if isinstance(n, float) and n <= 1 else min(users.size, int(n))
    return users[np.random.default_rng(seed).permutation(users.size)[:take]]


def sample_positions(user_ids, n: int | float | None, seed: int = 2023) -> np.ndarray:
    """Sorted positions of every row whose user is in `sample_users(user_ids, n, seed)`."""
    ids = np.asarray(user_ids).astype(str)
    if n is None:
        return np.arange(ids.size)
    return np.flatnonzero(np.isin(ids, sample_users(ids, n, seed)))


def ranking_targets(labels: np.ndarray, next_item: bool) -> np.ndarray:
    """Which test rows are ranking targets (a list: the row's item among sampled negatives). On a
    next-item domain (RecCocktail's listwise task) every held-out item is the target, whatever its
    rating, as the authors' protocol has it; elsewhere only the positive rows are, since a row the
    user disliked names no item to recommend."""
    labels = np.asarray(labels)
    return np.ones(labels.size, bool) if next_item else labels == 1


def target_rule(next_item: bool) -> str:
    return ("targets: every test row's item, the next item whatever its rating" if next_item
            else "targets: the positive test rows")


@dataclass(frozen=True)
class Frame:
    """The rows (kind `rows`) or the target lists (kind `lists`) a table rests on, and the methods
    that scored all of them."""

    name: str
    kind: str  # "rows" or "lists"
    mask: np.ndarray  # over the domain's test rows
    methods: tuple[str, ...]
    description: str  # the sentence a table's heading gives
    short: str  # the few words a table cell gives

    @property
    def n(self) -> int:
        return int(self.mask.sum())

    def users(self, user_ids: np.ndarray) -> int:
        return int(np.unique(np.asarray(user_ids)[self.mask]).size)

    def unit(self) -> str:
        return "rows" if self.kind == "rows" else "lists"


@dataclass(frozen=True)
class Subset:
    """One subset (all / warm / cold) of a frame: its rows, and whether the report shows it."""

    name: str
    mask: np.ndarray
    shown: bool
    note: str


def subsets(frame: Frame, masks: dict[str, np.ndarray], min_units: int, one_row_per_user: bool = False) -> list[Subset]:
    """A frame's subsets. "all" is always shown; warm and cold are shown only when they have at
    least `min_units` rows (or lists) and leave at least `min_units` of the frame out: otherwise their
    numbers cannot differ from "all" by more than a few rows, or are no estimate at all. Each subset
    not shown carries the sentence that says why."""
    out = [Subset("all", frame.mask, True, "")]
    unit = frame.unit()
    for name in SUBSETS[1:]:
        mask = frame.mask & masks[name]
        n, rest = int(mask.sum()), frame.n - int(mask.sum())
        if n == 0:
            why = f"{name}: none of the {frame.n:,} {unit} ({SUBSET_MEANING[name]})"
            if name == "cold" and one_row_per_user:
                why += ("; under leave-one-out every test user has train records, so a cold row needs an item "
                        "first seen at test time")
        elif n < min_units:
            why = (f"{name}: {n:,} of the {frame.n:,} {unit}, fewer than evaluation.min_subset_rows = {min_units}: "
                   "no estimate")
        elif rest < min_units:
            why = (f"{name}: {n:,} of the {frame.n:,} {unit}; it leaves out {rest:,}, fewer than "
                   f"evaluation.min_subset_rows = {min_units}, so its numbers are those of \"all\": not shown apart")
        else:
            why = ""
        out.append(Subset(name, mask, not why, why))
    return out
