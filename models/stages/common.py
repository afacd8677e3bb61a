"""What every LLM stage starts from: a fresh copy of the profile's base LLM and the prompt builder
of a domain. No Dagster here."""

from __future__ import annotations

import polars as pl

from models.data.workspace import Workspace
from models.llm import loading as llm_mod
from models.llm import prompts as prompt_mod
from models.profiles import Profile


def load_base(ws: Workspace, prof: Profile) -> llm_mod.LoadedLLM:
    """A fresh copy of the profile's base LLM (the embedded one is converted once)."""
    return llm_mod.load(llm_mod.resolve_model_path(prof.model, ws.models_dir))


def builder(llm: llm_mod.LoadedLLM, noun: str, max_tokens: int, with_ids: bool = False) -> prompt_mod.PromptBuilder:
    return prompt_mod.PromptBuilder(noun=noun, with_ids=with_ids, max_tokens=max_tokens,
                                    count_tokens=lambda text: len(llm_mod.prompt_ids(llm.tokenizer, text)))


def in_file_order(rows: list[dict]) -> list[dict]:
    """Score rows gathered from any number of shards (models/stages/shards.py), in the order one process
    writes them (their `order`: method, then the row's place in the evaluation sample), without `order`."""
    return [{k: v for k, v in r.items() if k != "order"} for r in sorted(rows, key=lambda r: tuple(r["order"]))]


def test_users(ws: Workspace, domain: str) -> pl.Series:
    """The user of every test row, by the row's position (the `row` of a score file)."""
    split = pl.read_parquet(ws.require(ws.split_path(domain), "temporal_split", domain), columns=["split", "user_id"])
    return split.filter(pl.col("split") == "test")["user_id"]
