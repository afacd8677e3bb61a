"""CoLLM (docs/protocols.md section 3): a CF model's user and item vectors mapped into the LLM's token space.

The CIE is `Linear(d, 10d) -> ReLU -> Linear(10d, H)`, one MLP for users and items. The ID prompt
has one position for `<UserID>` and one for `<TargetItemID>` (as in the original, each placeholder
is a single position); their input embeddings are replaced by the CIE's outputs. To keep prompts
plain token-id lists (so the LoRA trainer's batching, checkpoints, resume and DDP serve unchanged),
a slot position carries an id past the vocabulary: `vocab + user index` or `vocab + n_users + item
index`; the head turns those into CIE vectors.

Variants (docs/protocols.md section 3, CoLLM's Table V):
- `two_step` (the default, as published): the LLM with its step-1 LoRA (TALLRec) merged in and
  frozen, the CF model frozen, only the MLP trains;
- `t1`: two steps, step 2 also tunes the CF vectors, initialised from the pre-trained CF model;
- `t2`: two steps, step 2 tunes the whole CIE with the CF vectors trained from scratch (a fresh
  normal start, std `T2_INIT_STD`);
- `t3`: one step from the raw base LLM (no text-only step before it): a fresh LoRA and the MLP
  train together, the CF model frozen.
What "the CF model" tunes is its exported vector tables (for LightGCN the propagated vectors). A
sequential source (SASRec) has one vector per (user, moment) context computed by its encoder, not
a table, so `t1` and `t2` refuse it. A row gets the ID prompt only when both its vectors were
trained (models/cf/, "known"); otherwise it falls back to the text-only prompt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import save_file

from models.cf.model import CFModel
from models.llm.loading import prompt_ids
from models.llm.prompts import ITEM_SLOT, USER_SLOT, PromptBuilder, sample_rows
from models.registry.collm import TUNES_CF, VARIANTS
from models.llm.heads import save_adapter, yes_logit

T2_INIT_STD = 0.1  # the CF models' normal start (models/cf/, init_std)


class CIE(torch.nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(d, 10 * d), torch.nn.ReLU(), torch.nn.Linear(10 * d, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CoLLMHead(torch.nn.Module):
    """Yes logit of ID prompts: token embeddings, with slot positions replaced by CIE(CF vector)."""

    def __init__(self, causal_lm, cf: CFModel, yes_id: int, variant: str = "two_step", peft_model=None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"CoLLM variant {variant!r}: choose one of {', '.join(VARIANTS)}")
        self.lm = causal_lm
        self.peft = peft_model  # t3: the LoRA-wrapped model (its adapters are injected into causal_lm)
        self.variant, self.cf_name, self.yes_id = variant, cf.name, yes_id
        self.cf = cf
        self.vocab = causal_lm.get_input_embeddings().num_embeddings
        if variant == "t3" and peft_model is None:
            raise ValueError("the t3 variant trains a LoRA with the MLP: pass the LoRA-wrapped model as peft_model")
        if variant in TUNES_CF and cf.sequential:
            raise ValueError(f"the {variant} variant tunes the CF model's vector tables; {cf.name} is sequential (one "
                             "vector per user and moment, from its encoder): use it with two_step or t3")
        for n, p in causal_lm.named_parameters():
            p.requires_grad_(variant == "t3" and "lora_" in n)
        dev = causal_lm.get_input_embeddings().weight.device
        users = torch.as_tensor(cf.user_factors, dtype=torch.float32)
        items = torch.as_tensor(cf.item_factors, dtype=torch.float32)
        if variant == "t2":  # the CF model from scratch: same shapes, a fresh start, trained only here
            users, items = torch.randn_like(users) * T2_INIT_STD, torch.randn_like(items) * T2_INIT_STD
        self.users = torch.nn.Embedding.from_pretrained(users, freeze=variant not in TUNES_CF).to(dev)
        self.items = torch.nn.Embedding.from_pretrained(items, freeze=variant not in TUNES_CF).to(dev)
        self.cie = CIE(cf.user_factors.shape[1], causal_lm.config.hidden_size).to(dev)
        self.known_users, self.known_items = cf.known_users, cf.known_items
        self.user_index = {u: k for k, u in enumerate(cf.user_ids.tolist())}
        self.item_index = {i: k for k, i in enumerate(cf.item_ids.tolist())}

    def user_slot(self, user_id: str, ts=None) -> int | None:
        """The slot of the row's user vector (for a sequential source, the user at `ts`); None when untrained."""
        k = self.user_index.get(self.cf.user_key(user_id, ts))
        return None if k is None or not self.known_users[k] else self.vocab + k

    def item_slot(self, item_id: str) -> int | None:
        k = self.item_index.get(str(item_id))
        return None if k is None or not self.known_items[k] else self.vocab + self.users.num_embeddings + k

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        v, nu = self.vocab, self.users.num_embeddings
        emb = self.lm.get_input_embeddings()(torch.where(input_ids < v, input_ids, torch.zeros_like(input_ids)))
        is_user = (input_ids >= v) & (input_ids < v + nu)
        is_item = input_ids >= v + nu
        if is_user.any() or is_item.any():
            emb = emb.clone()
            if is_user.any():
                emb[is_user] = self.cie(self.users(input_ids[is_user] - v)).to(emb.dtype)
            if is_item.any():
                emb[is_item] = self.cie(self.items(input_ids[is_item] - v - nu)).to(emb.dtype)
        return emb

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:

        return yes_logit(self.lm, None, attention_mask, self.yes_id, inputs_embeds=self.embed(input_ids))

    def save_pretrained(self, path: Path) -> None:
        """cie.safetensors (the MLP, and the CF vectors when they were tuned: t1, t2), collm.json, and for t3
        the LoRA adapter (PEFT format) in lora/."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"cie.{k}": v.detach().cpu().contiguous() for k, v in self.cie.state_dict().items()}
        if self.variant in TUNES_CF:
            tensors["users"] = self.users.weight.detach().cpu().contiguous()
            tensors["items"] = self.items.weight.detach().cpu().contiguous()
        save_file(tensors, str(path / "cie.safetensors"))
        (path / "collm.json").write_text(json.dumps({
            "variant": self.variant, "cf_model": self.cf_name, "cf_dim": self.users.embedding_dim,
            "hidden_size": self.lm.config.hidden_size, "vocab": self.vocab}, indent=2))
        if self.peft is not None:
            save_adapter(self.peft, path / "lora")

    def load_trained(self, path: Path) -> "CoLLMHead":
        from safetensors.torch import load_file

        tensors = load_file(str(Path(path) / "cie.safetensors"))
        self.cie.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("cie.")})
        if "users" in tensors:
            self.users.weight.data.copy_(tensors["users"])
            self.items.weight.data.copy_(tensors["items"])
        return self


def id_prompt_tokens(tokenizer, text: str, user_slot: int, item_slot: int) -> list[int]:
    """Token ids of an ID prompt with each placeholder as one slot position, starting as every prompt
    does (the tokenizer's BOS where it adds one, `llm.prompt_ids`)."""
    head, rest = text.split(USER_SLOT, 1)
    middle, tail = rest.split(ITEM_SLOT, 1)
    enc = tokenizer([middle, tail], add_special_tokens=False)["input_ids"]
    return prompt_ids(tokenizer, head) + [user_slot] + enc[0] + [item_slot] + enc[1]


def encode_rows(head: CoLLMHead, tokenizer, rows, titles: dict[str, str], text: PromptBuilder,
                ids: PromptBuilder) -> tuple[list[list[int]], np.ndarray]:
    """Token ids per row (user_id, item_id, history_item_ids[, ts]): the ID prompt when the CF model
    trained both vectors the row needs, else the text-only prompt. Returns (ids, used_id_prompt mask)."""
    out, used = [], []
    for user, item, hist, *ts in rows:
        h = [titles[i] for i in hist]
        u, i = head.user_slot(user, *ts), head.item_slot(item)
        if u is None or i is None:
            out.append(prompt_ids(tokenizer, text(h, titles[item])))
            used.append(False)
        else:
            out.append(id_prompt_tokens(tokenizer, ids(h, titles[item]), u, i))
            used.append(True)
    return out, np.array(used, dtype=bool)


def examples(head: CoLLMHead, tokenizer, split, titles: dict[str, str], text: PromptBuilder, ids: PromptBuilder,
             part: str, limit: int | float | None, seed: int = 2023, with_labels: bool = True, by_user: bool = False):
    """(token ids, labels, positions within `part`, used_id_prompt) on the rows `sample_rows` picks
    (the same rows the text-only methods score with the same limit, seed and `by_user`)."""
    chosen, positions = sample_rows(split, part, limit, seed, by_user)
    cols = ["user_id", "item_id", "history_item_ids"] + (["ts"] if "ts" in chosen.columns else [])
    toks, used = encode_rows(head, tokenizer, chosen.select(cols).iter_rows(), titles, text, ids)
    return toks, (chosen["label"].to_numpy() if with_labels else None), positions, used


def candidate_tokens(head: CoLLMHead, tokenizer, user: str, hist: Sequence[str], candidates: Sequence[str],
                     titles: dict[str, str], text: PromptBuilder, ids: PromptBuilder, ts=None) -> list[list[int]]:
    """Each candidate's tokens with the list's user (at the target row's `ts` for a sequential source)."""
    return encode_rows(head, tokenizer, [(user, c, hist, ts) for c in candidates], titles, text, ids)[0]
