"""CoLLM's step 2 for one domain: for each CF model and frozen backbone of the profile, train the
CIE on ID prompts (models/collm.py, through the shared trainer) and score the same test rows and
candidate lists as the text-only methods. Test labels are not read here. No Dagster here."""

from __future__ import annotations

import time
from typing import Callable

import polars as pl
import torch

from models import collm, data_prep, lora_train, scorer
from models.adapters import builder
from models.cf import CFModel
from models.cocktail import dense_model, fixed_weights
from models.llm_scores import ranking_rows
from models.profiles import Profile
from models.workspace import Workspace, write_scores


BACKBONES = ("ingredient", "cocktail")  # as published, and ours


def method_name(cf_name: str, backbone: str) -> str:
    return f"collm_{cf_name}" + ("" if backbone == "ingredient" else f"_{backbone}")


def method_names() -> tuple[str, ...]:
    """Every CoLLM method a profile can ask for: each registered CF model on each backbone."""
    from models.cf import CF_MODELS

    return tuple(method_name(cf, b) for b in BACKBONES for cf in CF_MODELS)


def backbones(ws: Workspace, domain: str) -> dict:
    """Backbone name -> how to build it (models.cocktail.dense_model): the ingredient folded into the
    base LLM (as published), or the RecCocktail dense model (ours)."""
    return {"ingredient": fixed_weights(ws, domain)["ingredient_only"], "cocktail": ws.cocktail_dir(domain) / "model"}


def _train_one(ws: Workspace, domain: str, noun: str, prof: Profile, backbone, cf_name: str, method: str, log):
    """(head, backbone LLM, training result, text and ID prompt builders) of one CoLLM method."""
    lm = dense_model(ws, domain, prof, backbone)
    cf_path = ws.require(ws.cf_path(domain, cf_name), "cf_embeddings", domain)
    cfg = prof.collm_train()
    variant = prof.collm.variant
    peft = lora_train.add_lora(lm, cfg) if variant == "t3" else None
    torch.manual_seed(cfg.seed)
    head = collm.CoLLMHead(lm.model, CFModel.load(cf_path, cf_name), lm.yes_id, variant, peft)
    text = builder(lm, noun, prof.max_prompt_tokens)
    ids = builder(lm, noun, prof.max_prompt_tokens, with_ids=True)
    split, titles = ws.read_split(domain), ws.titles(domain)
    tr, ty, _, tr_used = collm.examples(head, lm.tokenizer, split, titles, text, ids, "train", prof.train_rows_per_domain)
    va, vy, _, _ = collm.examples(head, lm.tokenizer, split, titles, text, ids, "valid", prof.valid_rows)
    out = ws.collm_dir(domain, method)
    log(f"{method}: training the CIE ({variant}) on {len(tr)} prompts ({tr_used.mean():.0%} with IDs), "
        f"validating on {len(va)}")
    identity = {"kind": "collm_cie", "variant": variant, "cf_model": cf_name, "cf_sha256": data_prep.file_sha256(cf_path)}
    res = lora_train.train(lm, tr, ty, va, vy, out, cfg, log=log, head=head, identity=identity)
    head.load_trained(out / "adapter")
    if peft is not None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(peft, load_file(str(out / "adapter" / "lora" / "adapter_model.safetensors")))
    head.eval()
    return head, lm, res, text, ids


def train_and_score(ws: Workspace, domain: str, noun: str, prof: Profile, log: Callable[[str], None] = print) -> dict:
    """Every CoLLM method of the profile, trained and scored into scores/collm.parquet; the metadata."""
    from models.report import plot_curve

    split, titles, split_sha = ws.read_split(domain), ws.titles(domain), ws.split_sha256(domain)
    test = split.filter(pl.col("split") == "test")
    cands = ws.candidates(domain)
    ways = backbones(ws, domain)
    out_rows, md, curves = [], {}, {}
    for backbone in prof.collm.backbones:
        for cf_name in prof.collm.cf_models:
            method = method_name(cf_name, backbone)
            head, lm, res, text, ids = _train_one(ws, domain, noun, prof, ways[backbone], cf_name, method, log)
            te, _, rows, used = collm.examples(head, lm.tokenizer, split, titles, text, ids, "test", prof.test_rows,
                                               with_labels=False)
            t0 = time.perf_counter()
            point = scorer.score_ids(lm, te, embed=head.embed)
            rank_rows = ranking_rows(rows, prof.ranking_users)
            groups = [collm.candidate_tokens(head, lm.tokenizer, test["user_id"][r], test["history_item_ids"][r],
                                             cands["candidates"][r], titles, text, ids) for r in rank_rows.tolist()]
            ranked = dict(zip(rank_rows.tolist(), (g.numpy() for g in scorer.score_id_groups(lm, groups,
                                                                                             embed=head.embed))))
            md.update({f"{method}/best_valid_auc": round(res.best_valid, 4), f"{method}/steps": res.steps,
                       f"{method}/steps_run": res.steps_run, f"{method}/reused_finished_cie": res.reused,
                       f"{method}/tokens_per_s": round(res.tokens_per_s, 1),
                       f"{method}/test_id_prompt_share": round(float(used.mean()), 4),
                       f"{method}/score_s": round(time.perf_counter() - t0, 1)})
            curves[method] = [h["valid_auc"] for h in res.history]
            out_rows += [{"method": method, "row": int(r), "score": float(s),
                          "candidate_scores": ranked[int(r)].tolist() if int(r) in ranked else None}
                         for r, s in zip(rows, point)]
    plot = plot_curve(curves, "evaluation", "validation AUC", f"{domain}: CoLLM CIE ({prof.collm.variant})",
                      ws.collm_dir(domain) / "valid_auc.png")
    path = ws.scores_path(domain, "collm")
    digest = write_scores(path, out_rows, split_sha)
    return {**md, "variant": prof.collm.variant, "train_settings": prof.collm_train().model_dump(mode="json"),
            "valid_auc_plot": plot, "scores_path": path, "scores_sha256": digest}
