"""The pointwise task kind: CoLLM's Yes/No prompts. Its adapters are TALLRec's (the ingredient, CoLLM's
step 1) and our pointwise base spirit, trained with BCE on the Yes logit and validated by AUC; its
cocktail is our adaptation of RecCocktail (docs/protocols.md section 8): the binary entropy of
P(Yes) on unlabelled validation prompts, selected by AUC on other validation rows; its scores are
the Yes logits of every merge method on the evaluation sample (seeded users, all of their test
rows) and on the candidate lists of `ranking_candidates`. Test labels are not read here. No Dagster
here."""

from __future__ import annotations

import json
import time
from typing import Callable

import numpy as np
import polars as pl

from models.config import ProjectConfig
from models.core import fingerprint
from models.core.progress import Progress
from models.data import base_spirit
from models.data.workspace import Workspace, write_scores
from models.llm import heads
from models.llm import loading as llm_mod
from models.llm import merge, scorer
from models.llm import prompts as prompt_mod
from models.metrics import ranking as metrics
from models.metrics.frames import sample_positions
from models.profiles import Profile, TrainConfig
from models.stages.common import builder, in_file_order, test_users
from models.stages.mixing import dense_model, methods, skipped
from models.stages.task import MergePlan, Task, TrainingData


def ranking_rows(test_users: np.ndarray, rows: np.ndarray, ranking_users: int | None) -> np.ndarray:
    """The scored test rows whose candidate lists are also ranked: every row of the first
    `ranking_users` users of the evaluation sample's draw (`models.metrics.frames`; labels are not read).
    `test_users`: the user of each test row."""
    if ranking_users is None:
        return np.asarray(rows)
    return np.intersect1d(rows, sample_positions(test_users, int(ranking_users)))


class Pointwise(Task):
    name = "pointwise"
    objective = heads.YES
    unit = "prompts"
    history_key = "loss_and_auc"
    metric_label = "validation AUC"
    without_general = "skip"  # TALLRec and CoLLM still run on the ingredient alone
    adapter_what = {
        "base_spirit": "The base spirit: one LoRA on the text-only Yes/No prompts of the general domains (our pointwise "
                       "RecCocktail, docs/protocols.md section 8).",
        "ingredient": "The ingredient: a LoRA on the domain's text-only Yes/No prompts (TALLRec; CoLLM's step 1)."}
    cocktail_what = ("Our pointwise adaptation of RecCocktail (docs/protocols.md section 8): the Yes/No base spirit and ingredient "
                     "merged per module by weights learned with the binary entropy of P(Yes); not the paper's method.")

    def train_config(self, prof: Profile, role: str) -> TrainConfig:
        return prof.adapter_train(role)

    def training_data(self, ws: Workspace, cfg: ProjectConfig, domains: list[str], role: str, prof: Profile,
                      llm: llm_mod.LoadedLLM) -> TrainingData:
        """The text-only prompts of the domains' train rows (the base spirit: without the users of any
        cocktail domain), validated on their valid rows."""
        data = TrainingData([], np.empty(0), [], np.empty(0))
        train_y, valid_y = [], []
        for d in domains:
            split, titles = ws.read_split(d), ws.titles(d)
            if role == "base_spirit":
                split, data.dropped[d] = base_spirit.training_split(ws, cfg, d)
            build = builder(llm, cfg.domains[d].item_noun, prof.max_prompt_tokens)
            p, y, positions = prompt_mod.examples(split, titles, build, "train", prof.train_rows_per_domain)
            data.used[d] = split.filter(pl.col("split") == "train")[positions.tolist()]
            data.train += p
            train_y += y.tolist()
            p, y, _ = prompt_mod.examples(split, titles, build, "valid", prof.adapter_valid_rows(role))
            data.valid += p
            valid_y += y.tolist()
        data.train_targets, data.valid_targets = np.array(train_y), np.array(valid_y)
        return data

    def merge_plan(self, ws: Workspace, cfg: ProjectConfig, domain: str, prof: Profile,
                   loaded: llm_mod.LoadedLLM) -> MergePlan:
        """Ours (docs/protocols.md section 8): binary entropy of P(Yes) on unlabelled validation prompts; AUC on others."""
        s = prof.merge
        build = builder(loaded, cfg.domains[domain].item_noun, prof.max_prompt_tokens)
        # validation rows only: the test part is dropped before anything else reads the split
        learn, select, labels = merge.validation_slices(ws.read_split(domain), ws.titles(domain), build, s.learn_rows,
                                                        s.select_rows, s.seed)
        encode = lambda ps: loaded.tokenizer.pad(  # noqa: E731
            {"input_ids": [llm_mod.prompt_ids(loaded.tokenizer, p) for p in ps]}, return_tensors="pt").to(loaded.device)
        return MergePlan(learn, lambda m: metrics.auc(labels, scorer.score(m or loaded, select)),
                         merge.yes_entropy(encode, loaded.yes_id),
                         {"learn": fingerprint.data_digest(learn), "select": fingerprint.data_digest(select, labels)},
                         len(select), "AUC", "mean binary entropy of P(Yes)")

    def score(self, ws: Workspace, cfg: ProjectConfig, domain: str, prof: Profile, base: llm_mod.LoadedLLM,
              log: Callable[[str], None] = print) -> dict:
        """Every method's Yes logits on the evaluation sample and on its first `ranking_users` users'
        candidate lists into scores/llm.parquet; `base` is the untrained LLM, loaded once by the caller."""
        rows, md = self.score_rows(ws, cfg, domain, prof, base, log)
        return self.write_scores(ws, domain, rows, md)

    def score_rows(self, ws: Workspace, cfg: ProjectConfig, domain: str, prof: Profile, base: llm_mod.LoadedLLM,
                   log: Callable[[str], None] = print, shard: tuple[int, int] = (0, 1)) -> tuple[list[dict], dict]:
        """The score rows (`method`, `row`, `score`, `candidate_scores`, and `order`: where the row stands
        in the file) of shard `k` of `n`: every n-th scored test row from the k-th, with its candidate
        list when it has one (models/stages/shards.py runs the shards and gathers them)."""
        k, n = shard
        split, titles = ws.read_split(domain), ws.titles(domain)
        build = builder(base, cfg.domains[domain].item_noun, prof.max_prompt_tokens)
        point_p, _, rows = prompt_mod.examples(split, titles, build, "test", prof.test_users, with_labels=False,
                                               by_user=True)
        test = split.filter(pl.col("split") == "test")
        cands = ws.candidates(domain)
        hist = test["history_item_ids"].to_list()
        rank_rows = ranking_rows(test["user_id"].to_numpy(), rows, prof.ranking_users)
        mine = list(range(len(rows)))[k::n]
        position = {int(rows[i]): i for i in mine}
        point_p, rows = [point_p[i] for i in mine], rows[mine]
        rank_rows = np.asarray([r for r in rank_rows if int(r) in position], dtype=np.int64)
        groups = [[build([titles[i] for i in hist[r]], titles[c]) for c in cands["candidates"][int(r)]]
                  for r in rank_rows]
        out_rows, md, done = [], {}, {}
        todo = methods(ws, domain, self.name, without_base_spirit=skipped(ws, domain, self.name))
        part = f" (shard {k + 1} of {n})" if n > 1 else ""
        progress = Progress(f"{domain}: scoring {len(rows)} test rows and {len(rank_rows)} lists{part}", len(todo), log,
                            unit="methods", every_s=0)
        for m_i, (method, how) in enumerate(todo.items(), 1):
            key = json.dumps(how, sort_keys=True, default=str)  # task arithmetic at 0.5 = equal weights: scored once
            if key not in done:
                model = base if how is None else dense_model(ws, domain, prof, how, self.name)
                t0 = time.perf_counter()
                done[key] = (scorer.score(model, point_p),
                             dict(zip(rank_rows.tolist(), scorer.score_groups(model, groups))))
                md[f"{method}/score_s"] = round(time.perf_counter() - t0, 1)
            point, ranked = done[key]
            out_rows += [{"method": method, "row": int(r), "score": float(s),
                          "candidate_scores": ranked[int(r)].tolist() if int(r) in ranked else None,
                          "order": (m_i, position[int(r)])}
                         for r, s in zip(rows, point)]
            progress.update(m_i, method)
        return out_rows, md

    def write_scores(self, ws: Workspace, domain: str, rows: list[dict], md: dict) -> dict:
        """scores/llm.parquet from the rows of every shard, in the order one process writes them."""
        rows = in_file_order(rows)
        scored = sorted({r["row"] for r in rows})
        path = ws.scores_path(domain, self.kind.scores_family)
        digest = write_scores(path, rows, ws.split_sha256(domain))
        users = test_users(ws, domain)
        return {**md, "test_users_scored": users[scored].n_unique(), "test_rows_scored": len(scored),
                "ranking_lists_scored": len({r["row"] for r in rows if r["candidate_scores"] is not None}),
                "test_rows": len(users), "methods": list(dict.fromkeys(r["method"] for r in rows)),
                "scores_path": path, "scores_sha256": digest}


POINTWISE = Pointwise()
