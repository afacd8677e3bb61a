"""What every LLM stage starts from: a fresh copy of the profile's base LLM and the prompt builder
of a domain. No Dagster here."""

from __future__ import annotations

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
