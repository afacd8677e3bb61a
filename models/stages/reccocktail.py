"""The listwise task kind: RecCocktail as published (docs/protocols.md section 7). Its adapters
learn the authors' listwise prompt (the base spirit on the general domains' validation sample of
each user, as published; the ingredient on the domain's train rows, a few-shot budget on a
cold-start domain) with the language-model loss on the answer; its merge learns on the Shannon
entropy at the first tokens of each generated answer item and is selected by candidate-likelihood
NDCG@5; its scores are every merge method's greedy generation (as published) and candidate
likelihoods (ours) on the evaluation sample's lists of `ranking_candidates`. The prompts, parser
and objective are models/llm/listwise.py. No Dagster here.

Ours, named as such: the base spirit validates on the general domains' test rows (they are never
evaluated); the ingredient trains on train rows only (the authors add the domain's validation
samples, which here stay clean for the merge's selection); the merge learns on unlabelled
validation prompts and is selected by candidate-likelihood NDCG@5 on other validation rows (the
authors use test prompts and test metrics)."""

from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np
import polars as pl
import torch

from models.config import DomainConfig, ProjectConfig
from models.core import fingerprint
from models.core.files import write_parquet_atomic
from models.core.progress import Progress
from models.data import base_spirit
from models.data.workspace import Workspace
from models.llm import heads, listwise, merge
from models.llm import loading as llm_mod
from models.metrics import ranking as metrics
from models.profiles import Profile, TrainConfig
from models.stages.common import in_file_order, test_users
from models.stages.mixing import dense_model, methods
from models.stages.task import MergePlan, Task, TrainingData

SELECT_K = 5  # the merge's selection metric: NDCG@5 of the candidate-likelihood ranking (ours)


def words(dom: DomainConfig) -> listwise.Words:
    return listwise.Words(**dom.words) if dom.words else listwise.Words()


def _examples(split: pl.DataFrame, titles: dict, part: str, dom: DomainConfig, cfg: ProjectConfig, prof: Profile,
              tokenizer, limit, seed: int = 2023, **sample) -> list[listwise.ListExample]:
    return listwise.build_examples(split, titles, part, tokenizer, words(dom), cfg.listwise_history_length,
                                   int(cfg.evaluation["ranking_negatives"]), seed, limit,
                                   prof.listwise.max_prompt_tokens, **sample)


def _encode(tokenizer, examples: list[listwise.ListExample]) -> tuple[list[list[int]], np.ndarray]:
    pairs = [listwise.encode_example(tokenizer, e.prompt, e.answer) for e in examples]
    return [p[0] for p in pairs], np.array([p[1] for p in pairs], dtype=np.int64)


def _ranks_by_likelihood(llm: llm_mod.LoadedLLM, examples: list[listwise.ListExample]) -> list[np.ndarray]:
    return [listwise.rank_candidates(llm, e.prompt, e.candidates) for e in examples]


def select_ndcg(llm: llm_mod.LoadedLLM, examples: list[listwise.ListExample]) -> float:
    """Mean NDCG@5 of the candidate-likelihood ranking: the merge's selection metric (validation labels),
    with the report's tie policy."""
    scores = _ranks_by_likelihood(llm, examples)
    ranks = [metrics.target_ranks(s[[e.target]], np.delete(s, e.target)[None, :]) for s, e in zip(scores, examples)]
    return metrics.ndcg_at_k(metrics.Ranks(np.concatenate([r.above for r in ranks]),
                                           np.concatenate([r.tied for r in ranks])), SELECT_K)


class Listwise(Task):
    name = "listwise"
    objective = heads.ANSWER
    unit = "lists"
    history_key = "loss_history"
    metric_label = "validation loss (answer tokens)"
    title_prefix = "listwise "
    without_general = "fail"
    adapter_what = {
        "base_spirit": "RecCocktail's base spirit as published: one LoRA on the listwise prompts of the general "
                       "domains.",
        "ingredient": "RecCocktail's ingredient as published: a LoRA on the domain's listwise prompts (next-item "
                      "selection among 30 candidates)."}
    cocktail_what = ("RecCocktail as published: the listwise base spirit and the domain's listwise ingredient merged "
                     "per module by weights learned with the entropy of generated answers.")

    def profile(self, prof: Profile) -> Profile:
        return prof.for_listwise()

    def why_not(self, dom: DomainConfig) -> str | None:
        if not dom.listwise or dom.role == "general":
            return (f"domain {dom.name!r} (role {dom.role}, task {dom.task}) gets no listwise cocktail: the listwise "
                    "assets run on target and cold_start domains with `task: listwise` or `both`")
        return None

    def train_config(self, prof: Profile, role: str) -> TrainConfig:
        return prof.listwise_train(role)

    def training_data(self, ws: Workspace, cfg: ProjectConfig, domains: list[str], role: str, prof: Profile,
                      llm: llm_mod.LoadedLLM) -> TrainingData:
        """The base spirit: every general domain's validation sample of each user (as published),
        validated on their test rows; an ingredient: train rows (a few-shot budget on a cold-start
        domain), validated on valid rows."""
        lw = prof.listwise
        train_e, valid_e, used, dropped = [], [], {}, {}
        for d in domains:
            dom, titles = cfg.domains[d], ws.titles(d)
            if role == "base_spirit":
                split, dropped[d] = base_spirit.training_split(ws, cfg, d)
                part, vpart, limit = "valid", "test", lw.base_spirit_rows
            else:
                split, part, vpart = ws.read_split(d), "train", "valid"
                limit = lw.few_shot_rows if dom.role == "cold_start" else lw.train_rows
            rows = _examples(split, titles, part, dom, cfg, prof, llm.tokenizer, limit)
            train_e += rows
            valid_e += _examples(split, titles, vpart, dom, cfg, prof, llm.tokenizer, lw.valid_rows)
            used[d] = split.filter(pl.col("split") == part)[[e.row for e in rows]]
        ids, starts = _encode(llm.tokenizer, train_e)
        vids, vstarts = _encode(llm.tokenizer, valid_e)
        return TrainingData(ids, starts, vids, vstarts, used, dropped)

    def merge_plan(self, ws: Workspace, cfg: ProjectConfig, domain: str, prof: Profile,
                   loaded: llm_mod.LoadedLLM) -> MergePlan:
        """As published: the Shannon entropy at the first tokens of each generated answer item on
        unlabelled validation prompts; selected by NDCG@5 on other validation rows (ours: not test)."""
        s = prof.merge
        dom = cfg.domains[domain]
        valid = _examples(ws.read_split(domain), ws.titles(domain), "valid", dom, cfg, prof, loaded.tokenizer,
                          s.learn_rows + s.select_rows, s.seed)
        order = np.random.default_rng(s.seed).permutation(len(valid))
        n_select = min(s.select_rows, len(valid) // 2)
        select = [valid[i] for i in sorted(order[:n_select])]
        learn = [loaded.tokenizer(valid[i].prompt, add_special_tokens=False)["input_ids"]
                 for i in sorted(order[n_select:])]

        def objective(model: torch.nn.Module, batch: list[list[int]]) -> torch.Tensor:
            total, count = None, 0
            for ids in batch:  # prompts are generated until the buffer holds entropy_buffer positions
                mean, n = listwise.entropy_objective(model, loaded.tokenizer, [ids], s.max_new_tokens,
                                                     s.entropy_tokens, loaded.device)
                if n:
                    total = mean * n if total is None else total + mean * n
                    count += n
                if count >= s.entropy_buffer:
                    break
            if total is None:
                raise merge.MergeError("no generated answer item to take an entropy from: raise max_new_tokens")
            return total / count

        data = {"learn": fingerprint.data_digest(learn),
                "select": fingerprint.data_digest([e.prompt for e in select], [e.target for e in select])}
        # this module's code decides the plan too: part of the cocktail's fingerprint
        return MergePlan(learn, lambda m: select_ndcg(m or loaded, select), objective, data, len(select),
                         f"NDCG@{SELECT_K} (candidate likelihood)", "mean Shannon entropy (first tokens of each item)",
                         code=(listwise, sys.modules[__name__]))

    def score(self, ws: Workspace, cfg: ProjectConfig, domain: str, prof: Profile, base: llm_mod.LoadedLLM,
              log: Callable[[str], None] = print) -> dict:
        """Every method on the evaluation sample's test lists (the profile's `listwise.test_users`, each
        user's lists from `ranking_candidates`, the ones the CF models rank too): greedy generation (as
        published) and the candidate-likelihood ranking (ours), both from one encoding of each prompt
        (`generate_and_rank`), into scores/listwise.parquet. The file holds each list's candidates in
        prompt order and what each method did with them; which one is the target is left to the report
        (the only reader of test labels)."""
        rows, md = self.score_rows(ws, cfg, domain, prof, base, log)
        return self.write_scores(ws, domain, rows, md)

    def score_rows(self, ws: Workspace, cfg: ProjectConfig, domain: str, prof: Profile, base: llm_mod.LoadedLLM,
                   log: Callable[[str], None] = print, shard: tuple[int, int] = (0, 1)) -> tuple[list[dict], dict]:
        """The rows of shard `k` of `n` (every n-th list from the k-th), each with its `order` in the file."""
        k, n = shard
        dom = cfg.domains[domain]
        split = ws.read_split(domain)
        # the evaluation sample's users and the domain's one set of candidate lists (`ranking_candidates`)
        test = _examples(split, ws.titles(domain), "test", dom, cfg, prof, base.tokenizer, prof.listwise.test_users,
                         by_user=True, candidate_lists=ws.candidates(domain))
        positions = list(range(len(test)))[k::n]
        test = [test[i] for i in positions]
        todo = methods(ws, domain, self.name)
        rows, md = [], {}
        part = f" (shard {k + 1} of {n})" if n > 1 else ""
        progress = Progress(f"{domain}: {len(test)} listwise test lists{part}", len(todo), log, unit="methods",
                            every_s=0)
        for m_i, (method, how) in enumerate(todo.items(), 1):
            model = base if how is None else dense_model(ws, domain, prof, how, self.name)
            t0 = time.perf_counter()
            texts, scores, lik_s = listwise.generate_and_rank(model, [e.prompt for e in test],
                                                              [e.candidates for e in test], prof.merge.max_new_tokens)
            md[f"{method}/likelihood_s"] = round(lik_s, 1)
            md[f"{method}/generate_s"] = round(time.perf_counter() - t0 - lik_s, 1)
            for pos, e, sc, text in zip(positions, test, scores, texts):
                named, invalid = listwise.parse_generation(text, e.candidates)
                rows.append({"method": method, "row": e.row, "candidate_ids": e.candidate_ids,
                             "candidate_scores": [float(x) for x in sc], "generated": named,
                             "invalid_items": invalid, "text": text, "order": (m_i, pos)})
            progress.update(m_i, method)
        return rows, md

    def write_scores(self, ws: Workspace, domain: str, rows: list[dict], md: dict) -> dict:
        """scores/listwise.parquet from the rows of every shard, in the order one process writes them."""
        rows = in_file_order(rows)
        df = pl.DataFrame(rows,
                          schema={"method": pl.Utf8, "row": pl.Int64, "candidate_ids": pl.List(pl.Utf8),
                                  "candidate_scores": pl.List(pl.Float64), "generated": pl.List(pl.Int64),
                                  "invalid_items": pl.Int64, "text": pl.Utf8})
        path = ws.scores_path(domain, self.kind.scores_family)
        digest = write_parquet_atomic(df.with_columns(pl.lit(ws.split_sha256(domain)).alias("split_sha256")), path)
        lists = sorted({r["row"] for r in rows})
        return {**md, "test_lists_scored": len(lists), "test_users_scored": test_users(ws, domain)[lists].n_unique(),
                "methods": list(dict.fromkeys(r["method"] for r in rows)), "scores_path": path, "scores_sha256": digest}


LISTWISE = Listwise()
