"""What a task kind does, in one place (models/registry/tasks.py names them): its training data and
objective for the base spirit and the ingredients, the merge's plan (what the mixing weights learn
on and are selected by), the scoring of every merge method, and what its adapters and cocktail
say they are. `Task` is the interface; `models/stages/pointwise.py` and `models/stages/reccocktail.py`
are the two shipped kinds, found by name through the registry (`task`). The stages that serve every
kind are `models/stages/adapters.py` (one adapter-training function) and `models/stages/cocktail.py`
(one cocktail function). No Dagster here."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from models.config import DomainConfig, ProjectConfig
from models.data.workspace import Workspace
from models.llm import heads
from models.llm import loading as llm_mod
from models.llm import merge
from models.profiles import Profile, TrainConfig
from models.registry.tasks import TASKS, TaskKind


@dataclass
class TrainingData:
    """One adapter's training and validation examples (text prompts or token-id lists) with their
    targets (Yes/No labels, or each sequence's answer start), and the rows trained on per domain."""

    train: list
    train_targets: np.ndarray
    valid: list
    valid_targets: np.ndarray
    used: dict = field(default_factory=dict)  # domain -> the train rows used (the base spirit keeps them)
    dropped: dict = field(default_factory=dict)  # domain -> rows left out as users of a cocktail domain


@dataclass
class MergePlan:
    """What one task's merge learns on and is selected by (validation rows only)."""

    learn: list  # unlabelled validation prompts (text, or token ids)
    select_score: Callable[[llm_mod.LoadedLLM | None], float]  # None: the mixture as it stands
    objective: merge.Objective
    data: dict  # digests of the learn and selection data, for the fingerprint
    select_rows: int
    metric: str  # the selection metric, as the report names it
    entropy: str  # the objective, for the plot
    code: tuple = ()  # the modules that define the plan beyond merge and scorer (part of the fingerprint)


class Task:
    """One task kind's behaviour. Subclasses set the class attributes and implement the methods."""

    name: str  # its models/registry/tasks.py entry
    objective: heads.Objective  # the adapters' training objective and validation metric
    unit: str  # what its examples are called in metadata and logs: "prompts", "lists"
    history_key: str  # the metadata key of the adapters' training history
    metric_label: str  # the validation metric, for the curve and the card
    title_prefix: str = ""  # the adapter and cocktail cards' title prefix
    # a config without general domains: "skip" the base spirit and the cocktail (the ingredient alone still
    # scores), or "fail" (the task needs a base spirit)
    without_general: str = "fail"
    adapter_what: dict[str, str] = {}  # role -> what the adapter card says it is
    cocktail_what: str = ""

    @property
    def kind(self) -> TaskKind:
        return TASKS[self.name]

    def profile(self, prof: Profile) -> Profile:
        """The profile as this task's stages read it."""
        return prof

    def why_not(self, dom: DomainConfig) -> str | None:
        """Why a domain does not get this task's ingredient and cocktail (None: it does)."""
        return None

    def train_config(self, prof: Profile, role: str) -> TrainConfig:
        raise NotImplementedError

    def training_data(self, ws: Workspace, cfg: ProjectConfig, domains: list[str], role: str, prof: Profile,
                      llm: llm_mod.LoadedLLM) -> TrainingData:
        raise NotImplementedError

    def merge_plan(self, ws: Workspace, cfg: ProjectConfig, domain: str, prof: Profile,
                   loaded: llm_mod.LoadedLLM) -> MergePlan:
        raise NotImplementedError

    def score(self, ws: Workspace, cfg: ProjectConfig, domain: str, prof: Profile, base: llm_mod.LoadedLLM,
              log: Callable[[str], None] = print) -> dict:
        """Every merge method (and the untrained LLM) on the evaluation sample into
        scores/<the kind's family>.parquet; returns the metadata."""
        raise NotImplementedError


def task(name: str) -> Task:
    """The registered task kind `name`'s implementation ("module:attribute", imported here)."""
    module, attribute = TASKS[name].implementation.split(":")
    return getattr(importlib.import_module(module), attribute)
