"""CoLLM's step 2 for one domain: for each CF model and frozen backbone of the profile, train the
CIE on ID prompts (models/llm/collm.py, through the shared trainer) and score the same test rows and
candidate lists as the text-only methods. Test labels are not read here. No Dagster here."""

from __future__ import annotations

import time
from typing import Callable

import polars as pl
import torch

from models.cf.model import CFModel
from models.core.files import file_sha256
from models.core.plots import plot_curve
from models.data.workspace import Workspace, write_scores
from models.llm import collm, heads, scorer
from models.llm import trainer as lora_train
from models.profiles import Profile
from models.registry.collm import methods
from models.stages.common import builder
from models.stages.mixing import cocktail_dir, dense_model, fixed_weights, skipped as cocktail_skipped
from models.stages.pointwise import ranking_rows


def start_model(ws: Workspace, domain: str, backbone: str, variant: str):
    """How to build the model step 2 starts from (models.stages.cocktail.dense_model): the raw base LLM for
    t3 (one step), else the ingredient folded into the base LLM (as published) or the RecCocktail
    dense model (ours)."""
    if variant == "t3":
        return None
    if backbone == "ingredient":
        return fixed_weights(ws, domain)["ingredient_only"]
    return cocktail_dir(ws, domain) / "model"


def _train_one(ws: Workspace, domain: str, noun: str, prof: Profile, backbone: str, cf_name: str, variant: str,
               method: str, log):
    """(head, backbone LLM, training result, text and ID prompt builders) of one CoLLM method."""
    lm = dense_model(ws, domain, prof, start_model(ws, domain, backbone, variant))
    cf_path = ws.require(ws.cf_path(domain, cf_name), "cf_embeddings", domain)
    cfg = prof.collm_train()
    peft = heads.add_lora(lm, cfg) if variant == "t3" else None
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
    identity = {"kind": "collm_cie", "variant": variant, "start": "base LLM" if variant == "t3" else backbone,
                "cf_model": cf_name, "cf_sha256": file_sha256(cf_path)}
    # no validation before the first step: a CIE's random start is nothing any check or report compares with
    res = lora_train.train(lm, tr, ty, va, vy, out, cfg, log=log, head=head, identity=identity, untrained=False)
    if lora_train.rank() != 0:  # under torchrun rank 0 keeps the best CIE and scores with it
        return head, lm, res, text, ids
    head.load_trained(out / "adapter")
    if peft is not None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(peft, load_file(str(out / "adapter" / "lora" / "adapter_model.safetensors")))
    head.eval()
    return head, lm, res, text, ids


def train_and_score(ws: Workspace, domain: str, noun: str, prof: Profile, log: Callable[[str], None] = print) -> dict:
    """Every CoLLM method of the profile, trained and scored into scores/collm.parquet; the metadata."""

    split, titles, split_sha = ws.read_split(domain), ws.titles(domain), ws.split_sha256(domain)
    test = split.filter(pl.col("split") == "test")
    cands = ws.candidates(domain)
    out_rows, md, curves = [], {}, {}
    for method, backbone, cf_name, variant in methods(prof.collm.backbones, prof.collm.cf_models,
                                                      prof.collm.variants):
        if backbone == "cocktail" and variant != "t3" and cocktail_skipped(ws, domain):
            log(f"{method}: skipped (no pointwise cocktail: the config has no general domain)")
            continue
        head, lm, res, text, ids = _train_one(ws, domain, noun, prof, backbone, cf_name, variant, method, log)
        if lora_train.rank() != 0:
            continue
        te, _, rows, used = collm.examples(head, lm.tokenizer, split, titles, text, ids, "test", prof.test_users,
                                           with_labels=False, by_user=True)
        t0 = time.perf_counter()
        point = scorer.score_ids(lm, te, embed=head.embed)
        rank_rows = ranking_rows(test["user_id"].to_numpy(), rows, prof.ranking_users)
        groups = [collm.candidate_tokens(head, lm.tokenizer, test["user_id"][r], test["history_item_ids"][r],
                                         cands["candidates"][r], titles, text, ids, ts=test["ts"][r])
                  for r in rank_rows.tolist()]
        ranked = dict(zip(rank_rows.tolist(), (g.numpy() for g in scorer.score_id_groups(lm, groups,
                                                                                         embed=head.embed))))
        md.update({f"{method}/best_valid_auc": round(res.best_valid, 4), f"{method}/steps": res.steps,
                   f"{method}/steps_run": res.steps_run, f"{method}/reused_finished_cie": res.reused,
                   f"{method}/tokens_per_s": round(res.tokens_per_s, 1),
                   f"{method}/test_id_prompt_share": round(float(used.mean()), 4),
                   f"{method}/score_s": round(time.perf_counter() - t0, 1), f"{method}/variant": variant})
        curves[method] = [h["valid_auc"] for h in res.history]
        out_rows += [{"method": method, "row": int(r), "score": float(s),
                      "candidate_scores": ranked[int(r)].tolist() if int(r) in ranked else None}
                     for r, s in zip(rows, point)]
    if lora_train.rank() != 0:  # the other ranks trained; rank 0 scores, draws and writes
        return {"rank": lora_train.rank()}
    plot = plot_curve(curves, "evaluation", "validation AUC", f"{domain}: CoLLM CIE ({', '.join(prof.collm.variants)})",
                      ws.collm_dir(domain) / "valid_auc.png")
    path = ws.scores_path(domain, "collm")
    digest = write_scores(path, out_rows, split_sha)
    return {**md, "variants": ", ".join(prof.collm.variants), "train_settings": prof.collm_train().model_dump(mode="json"),
            "valid_auc_plot": plot, "scores_path": path, "scores_sha256": digest}
