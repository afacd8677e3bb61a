"""The schema of an LLM profile (config/profiles.yaml): every setting of the LLM stages, typed and
strict, and which of them each stage reads (the stage's part of its lineage). No Dagster here."""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import yaml
from pydantic import (AfterValidator, BaseModel, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      model_validator)

from models.core.strict import ConfigError, Strict, partial_model, validate
from models.registry.cf import CF_MODELS
from models.registry.collm import VARIANTS
from models.core.strict import schema_markdown
from models.core.strict import between_markers


class TrainConfig(Strict):
    """Every setting of one training run (docs/protocols.md section 3 where the paper gives one). A
    profile's `train` section is exactly this; all of it goes into the checkpoint fingerprint."""

    lr: PositiveFloat = Field(1e-3, description="peak learning rate (AdamW)")
    warmup_steps: NonNegativeInt = Field(200, description="linear warm-up steps from `warmup_start_lr` to `lr`")
    warmup_start_lr: PositiveFloat = Field(1e-5, description="learning rate at step 0")
    min_lr: PositiveFloat = Field(8e-5, description="cosine floor reached at `max_steps`")
    weight_decay: NonNegativeFloat = Field(1e-3, description="AdamW weight decay (none on biases and norms)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    batch_size: PositiveInt = Field(16, description="prompts per optimiser step, across processes and accumulation")
    grad_accum: PositiveInt = Field(1, description="micro-batches per optimiser step")
    max_steps: PositiveInt = Field(1000, description="optimiser steps at most")
    eval_every: PositiveInt = Field(50, description="steps between validation AUCs (CoLLM's 'epoch' of 50 iterations)")
    patience: PositiveInt = Field(20, description="evaluations without improvement before early stop")
    checkpoint_every: PositiveInt = Field(50, description="steps between resumable checkpoints")
    lora_r: PositiveInt = Field(8, description="LoRA rank")
    lora_alpha: PositiveInt = Field(16, description="LoRA alpha (scale alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    target_modules: tuple[str, ...] = Field(("auto",), min_length=1,
                                            description="the modules LoRA wraps: their names (q_proj, v_proj; c_attn "
                                                        "on GPT-2), `auto` (PEFT's default for the model family: "
                                                        "q_proj, v_proj on Llama and Qwen2 as in TALLRec and CoLLM; "
                                                        "c_attn on GPT-2; qkv_proj on Phi-3) or `all-linear`")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: far less "
                                                            "memory for long prompts and large models, ~30 % slower")
    max_grad_norm: Optional[PositiveFloat] = Field(None, description="clip the gradient's global norm to this "
                                                                     "before each step (none: no clipping)")
    length_group: PositiveInt = Field(32, description="batches per length-sorted pool; 1 = plain shuffled batches")
    seed: int = Field(2023, description="seed of LoRA init, batch order and dropout")
    epochs: Optional[PositiveFloat] = Field(None, description="when set, `max_steps` = epochs x training rows / "
                                                              "batch_size (RecCocktail: 2 base spirit, 4 ingredient)")
    warmup_ratio: Optional[float] = Field(None, ge=0, lt=1, description="when set, `warmup_steps` = this share of "
                                                                        "`max_steps` (RecCocktail: 0.05)")

    def for_rows(self, n: int) -> "TrainConfig":
        """The config with `epochs` and `warmup_ratio` resolved into steps for `n` training rows."""
        steps = max(1, math.ceil(self.epochs * n / self.batch_size)) if self.epochs else self.max_steps
        warmup = round(self.warmup_ratio * steps) if self.warmup_ratio is not None else self.warmup_steps
        return self.model_copy(update={"max_steps": steps, "warmup_steps": warmup})

    def peft_targets(self):
        """`target_modules` as PEFT's LoraConfig takes it; None for `auto` (the model decides: `auto_targets`)."""
        if self.target_modules == ("auto",):
            return None
        if self.target_modules == ("all-linear",):
            return "all-linear"
        if "auto" in self.target_modules or "all-linear" in self.target_modules:
            raise ValueError(f"target_modules {list(self.target_modules)}: `auto` and `all-linear` stand alone")
        return list(self.target_modules)

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        self.peft_targets()
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} is above lr {self.lr}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of grad_accum {self.grad_accum}")
        return self


class MergeSettings(Strict):
    """The cocktail merge of one profile (its `merge` section): what the weights learn on, how they
    learn, and the baselines' grid."""

    learn_rows: PositiveInt = Field(200, description="unlabelled validation prompts the mixing weights learn on")
    select_rows: PositiveInt = Field(200, description="other validation rows whose labels pick the learning rate "
                                                       "and step (and the task-arithmetic lambda)")
    learning_rates: tuple[PositiveFloat, ...] = Field((0.01, 0.05), min_length=1,
                                                      description="Adam learning rates tried for the mixing logits")
    steps: PositiveInt = Field(20, description="weight-learning steps per learning rate")
    batch_size: PositiveInt = Field(8, description="prompts per weight-learning step")
    eval_every: PositiveInt = Field(5, description="steps between candidates scored on the selection rows")
    temperature: PositiveFloat = Field(1.0, description="softmax temperature T of the mixing weights")
    task_arithmetic_lambdas: tuple[PositiveFloat, ...] = Field((0.3, 0.5, 0.7, 1.0), min_length=1,
                                                               description="task-arithmetic lambdas tried")
    ties_densities: tuple[PositiveFloat, ...] = Field((0.5,), min_length=1, description="TIES densities tried "
                                                      "(PEFT `add_weighted_adapter`, weights 1, 1)")
    dare_densities: tuple[PositiveFloat, ...] = Field((0.5,), min_length=1, description="DARE densities tried "
                                                      "(PEFT `dare_linear`, weights 1, 1, seeded)")
    entropy_tokens: int = Field(3, ge=1, le=5, description="listwise: the first tokens of each generated answer "
                                                           "item whose next-token entropy the weights minimise (3-5)")
    entropy_buffer: PositiveInt = Field(60, description="listwise: entropy positions per weight-learning step "
                                                        "(prompts are generated until the buffer holds this many)")
    max_new_tokens: PositiveInt = Field(96, description="listwise: tokens generated per answer at most")
    seed: int = Field(2023, description="seed of the validation slices and the prompt batches")



# a profile's per-kind `train` entries: any TrainConfig field, each optional (None: the profile's `train`)
TrainOverrides = partial_model(TrainConfig, "TrainOverrides", "Changes to the profile's `train` for one kind of training.")


# a profile's `listwise.merge`: any MergeSettings field, each optional (None: the profile's `merge`)
MergeOverrides = partial_model(MergeSettings, "MergeOverrides",
                               "Changes to the profile's `merge` for the listwise cocktail.")


def _fraction_at_most_one(v):
    if isinstance(v, float) and not 0 < v <= 1:
        raise ValueError(f"{v} is neither a row count (an integer) nor a fraction in (0, 1]")
    return v


# how many rows of a split part a stage uses: a count, a fraction (a float up to 1), or null for all
RowCount = Annotated[Optional[Union[PositiveInt, float]], AfterValidator(_fraction_at_most_one)]


def _apply(base: TrainConfig, overrides: BaseModel) -> TrainConfig:
    return TrainConfig(**{**base.model_dump(), **overrides.model_dump(exclude_none=True)})


class AdapterKind(Strict):
    """Settings of one kind of LoRA adapter (`base_spirit` or `ingredient`) that differ from the profile's."""

    train: TrainOverrides = Field(default_factory=TrainOverrides, description="changes to `train` for this adapter")
    valid_rows: RowCount = Field(None, description="validation rows per domain for this adapter; null: the "
                                                   "profile's `valid_rows`")


class CoLLMSettings(Strict):
    """CoLLM's CIE (docs/protocols.md section 3)."""

    cf_models: tuple[str, ...] = Field(("mf",), min_length=1, description="CF models whose vectors feed the CIE "
                                                                          f"(any of {', '.join(CF_MODELS)})")
    backbones: tuple[Literal["ingredient", "cocktail"], ...] = Field(
        ("ingredient",), min_length=1, description="frozen backbones the CIE trains on: `ingredient` (as published) "
                                                   "and `cocktail` (ours)")
    variants: tuple[Literal[VARIANTS], ...] = Field(
        ("two_step",), min_length=1, description="tuning variants (CoLLM's Table V): `two_step` (as published), `t1` "
        "(step 2 also tunes the CF vectors), `t2` (step 2 trains the CF vectors from scratch), `t3` (one step from "
        "the raw base LLM: LoRA and MLP together); t1 and t2 skip sequential CF models")
    train: TrainOverrides = Field(default_factory=TrainOverrides, description="changes to `train` for the CIE")

    @model_validator(mode="after")
    def _known_cf(self) -> "CoLLMSettings":
        unknown = [m for m in self.cf_models if m not in CF_MODELS]
        if unknown:
            raise ValueError(f"unknown CF model(s) {unknown}: choose from {', '.join(CF_MODELS)}")
        return self


class ListwiseSettings(Strict):
    """RecCocktail's listwise task as published (docs/protocols.md section 7)."""

    domains: Optional[tuple[str, ...]] = Field(None, description="domains `make demo` runs the listwise stages on; "
                                                                 "null: every target and cold-start domain with "
                                                                 "task listwise or both")
    max_prompt_tokens: PositiveInt = Field(1024, description="token budget of one listwise prompt; the oldest "
                                                             "history titles are dropped first")
    base_spirit_rows: RowCount = Field(None, description="lists per general domain for the base spirit (one per "
                                                         "user: its validation sample, as published); null: all")
    train_rows: RowCount = Field(None, description="train lists per target domain for its ingredient; null: all")
    few_shot_rows: PositiveInt = Field(64, description="train lists of a cold-start domain's few-shot ingredient")
    valid_rows: RowCount = Field(64, description="validation lists per domain for the adapters' validation loss")
    test_users: RowCount = Field(None, description="the listwise evaluation sample: how many test users (a seeded "
                                 "draw, each with its test list) every method ranks, the CF models on the same lists; "
                                 "a fraction of the users, or null: all")
    train: TrainOverrides = Field(default_factory=TrainOverrides, description="changes to `train` for both listwise "
                                                                              "adapters")
    base_spirit: TrainOverrides = Field(default_factory=TrainOverrides, description="then for the base spirit")
    ingredient: TrainOverrides = Field(default_factory=TrainOverrides, description="then for the ingredients")
    merge: MergeOverrides = Field(default_factory=MergeOverrides, description="changes to `merge` for the listwise "
                                                                              "cocktail (generation costs more)")


class Profile(Strict):
    """How big the LLM stages run: the model, training, the merge, CoLLM and the evaluation samples."""

    description: str = Field("", description="one line on what the profile is for")
    model: str = Field(description="the LLM: `smollm2-135m-instruct`, `tiny-llama-smoke`, or a Hugging Face model "
                                   "folder (`LLMREC_MODEL` overrides it)")
    max_prompt_tokens: PositiveInt = Field(512, description="token budget of one prompt; the oldest history titles "
                                                            "are dropped first")
    llm_domains: Optional[tuple[str, ...]] = Field(None, description="domains `make demo` runs the LLM stages on; "
                                                                     "null: every domain")
    train_rows_per_domain: RowCount = Field(None, description="train rows per domain the adapters see; null: all")
    valid_rows: RowCount = Field(64, description="validation rows per domain (count, or fraction of valid)")
    test_users: RowCount = Field(None, description="the evaluation sample: how many test users (a seeded draw, "
                                 "each with all of their test rows) the LLM methods score; a fraction of the users, "
                                 "or null: all")
    ranking_users: Optional[NonNegativeInt] = Field(None, description="how many of the sampled users (the first of "
                                                                      "the same draw) also get the candidate lists "
                                                                      "of their test rows ranked; null: all of them")
    train: TrainConfig = Field(default_factory=TrainConfig, description="LoRA training (docs/protocols.md section 3)")
    base_spirit: AdapterKind = Field(default_factory=AdapterKind, description="the base spirit's differences")
    ingredient: AdapterKind = Field(default_factory=AdapterKind, description="the ingredients' differences")
    merge: MergeSettings = Field(default_factory=MergeSettings, description="the cocktail merge")
    collm: CoLLMSettings = Field(default_factory=CoLLMSettings, description="CoLLM's CIE")
    listwise: ListwiseSettings = Field(default_factory=ListwiseSettings, description="RecCocktail's listwise task")

    @model_validator(mode="after")
    def _effective_settings_valid(self) -> "Profile":
        for kind in ("base_spirit", "ingredient"):
            self.adapter_train(kind)  # min_lr <= lr and the like, after the overrides
        self.collm_train()
        for kind in ("base_spirit", "ingredient"):
            self.listwise_train(kind)
        self.listwise_merge()
        return self

    def adapter_train(self, kind: str) -> TrainConfig:
        return _apply(self.train, getattr(self, kind).train)

    def adapter_valid_rows(self, kind: str) -> RowCount:
        own = getattr(self, kind).valid_rows
        return self.valid_rows if own is None else own

    def collm_train(self) -> TrainConfig:
        return _apply(self.train, self.collm.train)

    def listwise_train(self, kind: str) -> TrainConfig:
        return _apply(_apply(self.train, self.listwise.train), getattr(self.listwise, kind))

    def listwise_merge(self) -> MergeSettings:
        return MergeSettings(**{**self.merge.model_dump(), **self.listwise.merge.model_dump(exclude_none=True)})

    def for_listwise(self) -> "Profile":
        """This profile with the listwise cocktail's merge settings as its `merge`."""
        return self.model_copy(update={"merge": self.listwise_merge()})

    def reads(self, stage: str) -> dict:
        """The settings a stage reads (part of its code version, so a change there marks it stale)."""
        common = {"model": self.model, "max_prompt_tokens": self.max_prompt_tokens}
        if stage in ("base_spirit", "ingredient"):
            return {**common, "train": self.adapter_train(stage).model_dump(mode="json"),
                    "train_rows_per_domain": self.train_rows_per_domain,
                    "valid_rows": self.adapter_valid_rows(stage)}
        if stage == "cocktail":
            return {**common, "merge": self.merge.model_dump(mode="json")}
        if stage == "llm_scores":
            return {**common, "test_users": self.test_users, "ranking_users": self.ranking_users}
        if stage == "collm":
            return {**common, "collm": self.collm.model_dump(mode="json"),
                    "train": self.collm_train().model_dump(mode="json"),
                    "train_rows_per_domain": self.train_rows_per_domain, "valid_rows": self.valid_rows,
                    "test_users": self.test_users, "ranking_users": self.ranking_users}
        if stage.startswith("listwise_"):
            lw = self.listwise.model_dump(mode="json", exclude={"train", "base_spirit", "ingredient", "domains", "merge"})
            out = {"model": self.model, "listwise": lw}
            if stage in ("listwise_base_spirit", "listwise_ingredient"):
                out["train"] = self.listwise_train(stage.removeprefix("listwise_")).model_dump(mode="json")
            if stage in ("listwise_cocktail", "listwise_scores"):
                out["merge"] = self.listwise_merge().model_dump(mode="json")
            return out
        raise KeyError(stage)


class ProfilesFile(Strict):
    """config/profiles.yaml, and a user's file named by LLMREC_PROFILES whose profiles are added (or
    replace ours of the same name). A profile may begin with `extends: <profile>`: it starts from that
    profile and changes only the keys it names, nested sections key by key."""

    profiles: dict[str, Profile] = Field(description="profile name -> profile")


PROFILES_FILE = Path(__file__).resolve().parent.parent / "config" / "profiles.yaml"


def profile_files() -> list[Path]:
    """The shipped profiles, then the user's file (LLMREC_PROFILES), whose profiles are added or replace ours."""
    extra = os.environ.get("LLMREC_PROFILES")
    return [PROFILES_FILE] + ([Path(extra).expanduser().resolve()] if extra else [])


def _deep_merge(base: dict, change: dict) -> dict:
    out = dict(base)
    for k, v in change.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _resolve_extends(name: str, raw: dict[str, dict], origin: dict[str, Path], chain: tuple[str, ...] = ()) -> dict:
    entry = raw[name]
    if not isinstance(entry, dict) or "extends" not in entry:
        return entry
    parent = entry["extends"]
    where = f"{origin[name]}: profiles.{name}.extends"
    if parent not in raw:
        close = difflib.get_close_matches(str(parent), list(raw), n=1)
        raise ConfigError(f"{where}: no profile {parent!r} (profiles: {', '.join(sorted(raw))})"
                          + (f"; did you mean `{close[0]}`?" if close else ""))
    if parent in chain + (name,):
        raise ConfigError(f"{where}: a loop ({' -> '.join(chain + (name, parent))})")
    rest = {k: v for k, v in entry.items() if k != "extends"}
    return _deep_merge(_resolve_extends(parent, raw, origin, chain + (name,)), rest)


def load_profiles(files: list[Path] | None = None) -> dict[str, Profile]:
    """Every profile of the files, `extends` resolved, validated strictly (all problems in one error)."""
    files = files or profile_files()
    raw: dict[str, dict] = {}
    origin: dict[str, Path] = {}  # profile -> the file that defines it
    for f in files:
        if not f.exists():
            raise ConfigError(f"profiles file {f} does not exist (LLMREC_PROFILES names it)")
        data = yaml.safe_load(f.read_text()) or {}
        if not isinstance(data, dict) or set(data) - {"profiles"} or not isinstance(data.get("profiles", {}), dict):
            raise ConfigError(f"{f}: a profiles file holds one key, `profiles: {{name: {{...}}}}` "
                              f"(found {sorted(data) if isinstance(data, dict) else type(data).__name__})")
        raw.update(data.get("profiles") or {})
        origin.update({name: f for name in data.get("profiles") or {}})
    resolved = {name: _resolve_extends(name, raw, origin) for name in raw}
    return validate(ProfilesFile, {"profiles": resolved}, " + ".join(str(f) for f in files)).profiles


def with_overrides(p: Profile, overrides: dict, source: str) -> Profile:
    """The profile with (nested) per-run changes, validated like the file: e.g. {"train": {"lr": 5e-4}}."""
    if not overrides:
        return p
    merged = _deep_merge(p.model_dump(mode="json"), overrides)
    return validate(Profile, merged, source)


def get_profile(name: str, overrides: dict | None = None, source: str = "run config overrides") -> Profile:
    """The named profile; `LLMREC_MODEL` replaces its model; then the per-run overrides."""
    profiles = load_profiles()
    if name not in profiles:
        close = difflib.get_close_matches(name, list(profiles), n=1)
        raise ConfigError(f"LLMREC_PROFILE={name!r} is not a profile of {' + '.join(map(str, profile_files()))}: "
                          f"choose one of {', '.join(profiles)}" + (f" (did you mean `{close[0]}`?)" if close else ""))
    p = profiles[name]
    if os.environ.get("LLMREC_MODEL"):
        p = with_overrides(p, {"model": os.environ["LLMREC_MODEL"]}, "LLMREC_MODEL")
    return with_overrides(p, overrides or {}, source)


# docs/reference/profile-keys.md holds the generated tables between these markers
DOCS_START = "<!-- profile-schema:start -->"
DOCS_END = "<!-- profile-schema:end -->"


def profiles_markdown() -> str:
    """The shipped profiles side by side, then every key of the profile schema (for the README)."""

    shipped = load_profiles([PROFILES_FILE])
    rows = ["| profile | model | steps (base spirit / ingredient / CIE) | batch | valid rows | test users | users with "
            "lists | LLM domains | listwise steps (base spirit / ingredient), batch, test users | listwise domains | "
            "what for |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    every = lambda v: "all" if v is None else v  # noqa: E731
    domains = lambda v: "all" if v is None else (", ".join(v) or "none")  # noqa: E731
    batch = lambda t: str(t.batch_size) if t.grad_accum == 1 else \
        f"{t.batch_size} ({t.grad_accum} x {t.batch_size // t.grad_accum})"  # noqa: E731
    for name, p in shipped.items():
        steps = " / ".join(str(t.max_steps) for t in (p.adapter_train("base_spirit"), p.adapter_train("ingredient"),
                                                       p.collm_train()))
        lw = [p.listwise_train(k) for k in ("base_spirit", "ingredient")]
        lw_steps = " / ".join(f"{t.epochs:g} epochs" if t.epochs else str(t.max_steps) for t in lw)
        rows.append(f"| `{name}` | `{p.model}` | {steps} | {batch(p.train)} | {p.valid_rows} | {every(p.test_users)} "
                    f"| {every(p.ranking_users)} | {domains(p.llm_domains)} | {lw_steps}, {batch(lw[1])}, "
                    f"{every(p.listwise.test_users)} | {domains(p.listwise.domains)} | {p.description} |")
    return "\n".join(rows) + "\n\n" + schema_markdown(ProfilesFile)


def main(argv: list[str]) -> int:
    import sys

    if argv == ["--markdown"]:
        sys.stdout.write(profiles_markdown())
        return 0
    if argv == ["--docs"]:
        page = PROFILES_FILE.parent.parent / "docs" / "reference" / "profile-keys.md"
        page.write_text(between_markers(page.read_text(), DOCS_START, DOCS_END, profiles_markdown()))
        return 0
    try:
        names = list(load_profiles())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{' + '.join(map(str, profile_files()))}: profiles {', '.join(names)}, valid")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:]))
