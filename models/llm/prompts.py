"""CoLLM's Yes/No prompts (docs/protocols.md section 2): text-only (TALLRec, CoLLM step 1) and with the
collaborative-ID placeholders (CoLLM step 2), with the domain's item noun and a token budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence
from models.metrics.frames import sample_positions

if TYPE_CHECKING:
    import numpy as np

# `\n` is a real newline here; the authors' files had a literal backslash-n (ours, documented).
TEXT_TEMPLATE = (
    "#Question: A user has given high ratings to the following {nouns}: {history}. "
    "Leverage the information to predict whether the user would enjoy the {noun} titled {target}? "
    'Answer with "Yes" or "No". \n#Answer:'
)
ID_TEMPLATE = (
    "#Question: A user has given high ratings to the following {nouns}: {history}. "
    "Additionally, we have information about the user's preferences encoded in the feature {user_slot}. "
    "Using all available information, make a prediction about whether the user would enjoy the {noun} "
    'titled {target} with the feature {item_slot}? Answer with "Yes" or "No". \n#Answer:'
)
# The original wrote the typo "unkow" for an empty history; we say it plainly.
EMPTY_HISTORY = "none yet"
USER_SLOT = "<UserID>"
ITEM_SLOT = "<TargetItemID>"


def plural(noun: str) -> str:
    """'movie' -> 'movies', 'comedy movie' -> 'comedy movies', 'documentary' -> 'documentaries'."""
    if noun.endswith("y") and not noun.endswith(("ay", "ey", "oy", "uy")):
        return noun[:-1] + "ies"
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def quoted(title: str) -> str:
    return '"' + title.replace('"', "'") + '"'


@dataclass(frozen=True)
class PromptBuilder:
    """Builds prompts for one domain. `count_tokens` (text -> int) enforces `max_tokens` by dropping
    the oldest history titles first, never by cutting the prompt mid-way."""

    noun: str = "movie"
    with_ids: bool = False
    max_tokens: int | None = None
    count_tokens: Callable[[str], int] | None = None

    def render(self, history_titles: Sequence[str], target_title: str) -> str:
        history = ", ".join(quoted(t) for t in history_titles) if history_titles else EMPTY_HISTORY
        fields = {"nouns": plural(self.noun), "noun": self.noun, "history": history, "target": quoted(target_title)}
        if self.with_ids:
            return ID_TEMPLATE.format(**fields, user_slot=USER_SLOT, item_slot=ITEM_SLOT)
        return TEXT_TEMPLATE.format(**fields)

    def __call__(self, history_titles: Sequence[str], target_title: str) -> str:
        """The prompt; history oldest first, most recent last (the order of `history_item_ids`)."""
        titles = list(history_titles)
        text = self.render(titles, target_title)
        if self.max_tokens is None or self.count_tokens is None:
            return text
        while self.count_tokens(text) > self.max_tokens and titles:
            titles.pop(0)
            text = self.render(titles, target_title)
        if self.count_tokens(text) > self.max_tokens:
            raise ValueError(
                f"the prompt for {target_title!r} needs {self.count_tokens(text)} tokens without any history, "
                f"over the budget of {self.max_tokens}: raise the token budget")
        return text


def sample_rows(split, part: str, limit: int | float | None, seed: int = 2023, by_user: bool = False):
    """(rows, positions within `part`) of one split part on a fixed seeded subsample: `limit` rows
    (int), a fraction of them (float <= 1), or all (None). With `by_user`, `limit` counts users and
    every row of each drawn user is kept (`models.metrics.frames.sample_users`: the test part's evaluation
    sample). Every method scoring a part with the same limit and seed gets the same rows."""
    import numpy as np
    import polars as pl


    rows = split.filter(pl.col("split") == part)
    if by_user:
        positions = sample_positions(rows["user_id"].to_numpy(), limit, seed)
        return rows[positions.tolist()], positions
    n = rows.height
    take = n if limit is None else (round(n * limit) if isinstance(limit, float) and limit <= 1 else min(n, int(limit)))
    positions = np.sort(np.random.default_rng(seed).choice(n, take, replace=False)) if take < n else np.arange(n)
    return rows[positions.tolist()], positions


def examples(split, titles: dict[str, str], build: PromptBuilder, part: str, limit: int | float | None,
             seed: int = 2023, with_labels: bool = True,
             by_user: bool = False) -> tuple[list[str], "np.ndarray | None", "np.ndarray"]:
    """(prompts, labels, row positions within `part`) for the rows `sample_rows` picks. Scoring test
    rows passes with_labels=False (only the report reads test labels) and by_user=True (the
    evaluation sample is whole users)."""
    chosen, positions = sample_rows(split, part, limit, seed, by_user)
    prompts = [build([titles[i] for i in hist], title)
               for hist, title in chosen.select("history_item_ids", "title").iter_rows()]
    return prompts, (chosen["label"].to_numpy() if with_labels else None), positions
