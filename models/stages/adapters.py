"""Training one LoRA adapter (the base spirit or an ingredient) on the text-only prompts of some
domains: the prompts, the trainer, the curve and a record beside the adapter. The Dagster asset
calls it in process; orchestration/pipes_train.py calls it in a subprocess. No Dagster here."""

from __future__ import annotations

import json
from typing import Callable

import numpy as np
import polars as pl

from models.data import base_spirit
from models.llm import cards
from models.core import fingerprint
from models.llm import loading as llm_mod
from models.llm import trainer as lora_train
from models.llm import prompts as prompt_mod
from models.config import ProjectConfig
from models.profiles import Profile
from models.data.workspace import Workspace
from models.core.plots import plot_curve


def load_base(ws: Workspace, prof: Profile) -> llm_mod.LoadedLLM:
    """A fresh copy of the profile's base LLM (the embedded one is converted once)."""
    return llm_mod.load(llm_mod.resolve_model_path(prof.model, ws.models_dir))


def builder(llm: llm_mod.LoadedLLM, noun: str, max_tokens: int, with_ids: bool = False) -> prompt_mod.PromptBuilder:
    return prompt_mod.PromptBuilder(noun=noun, with_ids=with_ids, max_tokens=max_tokens,
                                    count_tokens=lambda text: len(llm_mod.prompt_ids(llm.tokenizer, text)))


def train_adapter(ws: Workspace, domains: dict[str, str], kind: str, prof: Profile,
                  log: Callable[[str], None] = print, cfg: ProjectConfig | None = None) -> dict:
    """Train the `kind` adapter (`base_spirit` or `ingredient`) on the train prompts of `domains`
    (name -> item noun) into its folder; returns its metadata (paths as Path objects). With the
    project config `cfg`, the base spirit leaves out the users of every cocktail domain and records
    the rows it trained on and their overlap with each cocktail domain (models/data/base_spirit.py)."""
    llm = load_base(ws, prof)
    out = ws.adapter_dir(kind) if kind == "base_spirit" else ws.adapter_dir(kind, next(iter(domains)))
    general = kind == "base_spirit" and cfg is not None
    train_p, train_y, valid_p, valid_y, used, dropped = [], [], [], [], {}, {}
    for d, noun in domains.items():
        split, titles = ws.read_split(d), ws.titles(d)
        if general:
            split, dropped[d] = base_spirit.training_split(ws, cfg, d)
        build = builder(llm, noun, prof.max_prompt_tokens)
        p, y, positions = prompt_mod.examples(split, titles, build, "train", prof.train_rows_per_domain)
        used[d] = split.filter(pl.col("split") == "train")[positions.tolist()]
        train_p += p
        train_y += y.tolist()
        p, y, _ = prompt_mod.examples(split, titles, build, "valid", prof.adapter_valid_rows(kind))
        valid_p += p
        valid_y += y.tolist()
    c = prof.adapter_train(kind)
    log(f"{kind}: {len(train_p)} training prompts from {', '.join(domains)}; validating on {len(valid_p)}")
    result = lora_train.train(llm, train_p, np.array(train_y), valid_p, np.array(valid_y), out, c, log=log)

    curve = plot_curve([h["valid_auc"] for h in result.history], f"evaluation (every {c.eval_every} steps)",
                       "validation AUC", f"{out.name}: best {result.best_valid:.4f} at step {result.best_step}",
                       out / "valid_auc.png")
    adapter = out / "adapter"
    cards.write_adapter_card(
        adapter, title=f"{kind.replace('_', ' ')} LoRA ({', '.join(domains)})",
        what=("The base spirit: one LoRA on the text-only Yes/No prompts of the general domains (our pointwise "
              "RecCocktail, PROTOCOLS section 8)." if kind == "base_spirit" else
              "The ingredient: a LoRA on the domain's text-only Yes/No prompts (TALLRec; CoLLM's step 1)."),
        identity=cards.identity_of(llm), domains=list(domains), cfg=cfg,
        rows={"train prompts": len(train_p), "valid prompts": len(valid_p)}, settings=c.model_dump(mode="json"),
        validation={"best validation AUC": round(result.best_valid, 4), "at step": result.best_step,
                    "steps run": result.steps, "untrained LLM's validation AUC": result.untrained_valid})
    digest = fingerprint.folder_digest(adapter)
    record = {"domains": list(domains), "model": llm.identity, "config": c.model_dump(mode="json"),
              "result": result.__dict__}
    md = {}
    if general:
        base_spirit.save_training_rows(out, cfg, used)
        record.update(rows_dropped_as_target_users=dropped, overlap=base_spirit.overlaps(ws, cfg, kind))
        md = {**base_spirit.overlap_metadata(record["overlap"], log), "rows_dropped_as_target_users": dropped}
    (out / "training.json").write_text(json.dumps(record, indent=2, default=str))
    return {**md, "domains": ", ".join(domains), "train_prompts": len(train_p), "valid_prompts": len(valid_p),
            "model": str(llm.path), "model_weights_sha256": llm.identity["weights_sha256"],
            "steps": result.steps, "steps_run": result.steps_run, "resumed_from_step": result.resumed_from,
            "reused_finished_adapter": result.reused, "fingerprint": result.fingerprint, "stopped": result.stopped,
            "best_valid_auc": round(result.best_valid, 4), "best_step": result.best_step,
            "untrained_valid_auc": None if result.untrained_valid is None else round(result.untrained_valid, 4),
            "tokens_per_s": round(result.tokens_per_s, 1), "loss_and_auc": result.history,
            "train_settings": c.model_dump(mode="json"), "valid_auc_plot": curve, "adapter": adapter,
            "adapter_sha256": digest}
