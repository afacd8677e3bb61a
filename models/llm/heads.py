"""What a LoRA training run is made of: the adapter wrapped around the model (LoRA targets), the
heads that reduce the model to what a task trains (the Yes logit at each prompt's last token; the
answer tokens' loss), each task's objective (loss and validation), and the batched evaluation.
The loop itself is models/llm/trainer.py. No Dagster here."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models.llm.listwise import answer_loss
from models.llm.loading import LoadedLLM, answer_row, decoder_of, prompt_ids
from models.metrics import ranking as metrics
from models.profiles import TrainConfig


def add_lora(llm: LoadedLLM, c: TrainConfig):
    """The model wrapped with a fresh LoRA (fp32 adapter weights, whatever the base weights' dtype)."""
    from peft import LoraConfig, get_peft_model

    targets = c.peft_targets() or auto_targets(llm.model)
    try:
        conv1d = any(type(m).__name__ == "Conv1D" for m in llm.model.modules())  # GPT-2: weights stored [in, out]
        cfg = LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                         target_modules=targets, bias="none", task_type="CAUSAL_LM", fan_in_fan_out=conv1d)
        peft_model = get_peft_model(llm.model, cfg, autocast_adapter_dtype=True)
    except ValueError as err:
        layers = sorted({n.rsplit(".", 1)[-1] for n, m in llm.model.named_modules()
                         if type(m).__name__ in ("Linear", "Conv1D")})
        raise ValueError(f"LoRA targets {list(c.target_modules)} do not fit {type(llm.model).__name__}: {err}. Its "
                         f"linear layers are named {layers}; set train.target_modules to some of them, `auto` or "
                         f"`all-linear`") from None
    if c.gradient_checkpointing:
        # non-reentrant: the frozen embeddings need no requires_grad trick, and CIE inputs work as they are
        if hasattr(llm.model, "activation_checkpointing_enable"):  # its name in the newest transformers
            llm.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            llm.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return peft_model


# attention projections by the names decoder families give them, for `auto` where PEFT has no default
ATTENTION_TARGETS = (("q_proj", "v_proj"), ("qkv_proj",), ("c_attn",), ("query_key_value",), ("Wqkv",))


def auto_targets(model: torch.nn.Module) -> list[str]:
    """`auto` LoRA targets: PEFT's default for the model's family (q_proj, v_proj on Llama and Qwen2,
    c_attn on GPT-2), else the attention projections by their usual names (qkv_proj on Phi-3)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind in DEFAULTS:
        return list(DEFAULTS[kind])
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    for group in ATTENTION_TARGETS:
        if set(group) <= names:
            return list(group)
    raise ValueError(f"no default LoRA targets for model type {kind!r}: set train.target_modules to the names of "
                     "its attention projections, or `all-linear`")


def autocast(llm: LoadedLLM):
    """bf16 autocast where the model's weights are bf16 (CUDA): matmuls in bf16, the LoRA weights, the
    CIE and the optimizer state stay fp32; nothing on an fp32 model."""
    from contextlib import nullcontext

    return torch.autocast(llm.device.type, dtype=torch.bfloat16) if llm.dtype == torch.bfloat16 else nullcontext()



def save_adapter(peft_model, path: Path) -> None:
    """The LoRA adapter in PEFT's format. `save_embedding_layers=False`: our LoRAs never resize the
    vocabulary, and PEFT's default ("auto") would look the base model up on the Hub to find out, which
    offline (HF_HUB_OFFLINE, every run here) ends in a warning on every save."""
    peft_model.save_pretrained(path, save_embedding_layers=False)

class YesLogit(torch.nn.Module):
    """The LoRA-wrapped model reduced to what training needs: the Yes logit at each prompt's last
    token (only those rows meet the output layer). DDP wraps this module."""

    def __init__(self, peft_model, yes_id: int):
        super().__init__()
        self.peft = peft_model
        self.yes_id = yes_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return yes_logit(self.peft.get_base_model(), input_ids, attention_mask, self.yes_id)

    def save_pretrained(self, path: Path) -> None:
        save_adapter(self.peft, path)


class AnswerLM(torch.nn.Module):
    """The LoRA-wrapped model reduced to what listwise training needs (RecCocktail, docs/protocols.md section 7):
    the mean next-token loss over the answer tokens only; DDP wraps this module."""

    def __init__(self, peft_model):
        super().__init__()
        self.peft = peft_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, answer_start: torch.Tensor) -> torch.Tensor:
        return answer_loss(self.peft.get_base_model(), input_ids, attention_mask, answer_start)

    def save_pretrained(self, path: Path) -> None:
        save_adapter(self.peft, path)


class Objective:
    """What a run trains and validates, by task kind (models/registry/tasks.py names each kind's):
    `YesObjective` (BCE on the Yes logit, validation AUC: CoLLM, TALLRec) or `AnswerObjective`
    (language-model loss on the answer tokens, validation loss: RecCocktail's listwise task). A
    run's `labels` are the Yes/No labels for the first and each sequence's answer start for the second."""

    name: str
    metric: str
    higher_is_better: bool

    def make_head(self, llm: LoadedLLM, c: TrainConfig) -> torch.nn.Module:
        raise NotImplementedError

    def loss(self, net: torch.nn.Module, enc: dict, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def validate(self, head: torch.nn.Module, llm: LoadedLLM, ids: Sequence[list[int]], labels) -> float:
        raise NotImplementedError

    def better(self, value: float, best: float | None) -> bool:
        return best is None or (value > best if self.higher_is_better else value < best)


class YesObjective(Objective):
    name, metric, higher_is_better = "yes", "valid_auc", True

    def make_head(self, llm: LoadedLLM, c: TrainConfig) -> torch.nn.Module:
        return YesLogit(add_lora(llm, c), llm.yes_id)

    def loss(self, net: torch.nn.Module, enc: dict, targets: torch.Tensor) -> torch.Tensor:
        logits = net(enc["input_ids"], enc["attention_mask"])
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.float().to(logits.device))

    def validate(self, head: torch.nn.Module, llm: LoadedLLM, ids: Sequence[list[int]], labels) -> float:
        with autocast(llm):
            return evaluate(head, llm, ids, np.asarray(labels))


class AnswerObjective(Objective):
    name, metric, higher_is_better = "answer", "valid_loss", False

    def make_head(self, llm: LoadedLLM, c: TrainConfig) -> torch.nn.Module:
        return AnswerLM(add_lora(llm, c))

    def loss(self, net: torch.nn.Module, enc: dict, targets: torch.Tensor) -> torch.Tensor:
        return net(enc["input_ids"], enc["attention_mask"], targets.to(enc["input_ids"].device))

    def validate(self, head: torch.nn.Module, llm: LoadedLLM, ids: Sequence[list[int]], labels) -> float:
        with autocast(llm):
            return answer_valid_loss(head, llm, ids, np.asarray(labels))


YES = YesObjective()
ANSWER = AnswerObjective()


@torch.no_grad()
def answer_valid_loss(head: torch.nn.Module, llm: LoadedLLM, ids: Sequence[list[int]], starts: np.ndarray,
                      batch: int = 8) -> float:
    """Mean answer-token loss over validation sequences (eval mode; each batch weighted by its answer tokens)."""
    was_training = head.training
    head.eval()
    order = np.argsort([len(t) for t in ids], kind="stable")
    total, count = 0.0, 0
    for i in range(0, len(ids), batch):
        part = order[i:i + batch]
        enc = _pad(llm, [ids[j] for j in part])
        n = int(sum(len(ids[j]) - int(starts[j]) for j in part))
        total += float(head(enc["input_ids"], enc["attention_mask"],
                            torch.tensor(starts[part], device=enc["input_ids"].device))) * n
        count += n
    head.train(was_training)
    return total / max(1, count)


def yes_logit(causal_lm, input_ids: torch.Tensor | None, attention_mask: torch.Tensor, yes_id: int,
              inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable Yes logit at each right-padded prompt's last token; only those rows meet the
    output layer (one dot product each). Pass `inputs_embeds` instead of ids to feed vectors."""
    hidden = decoder_of(causal_lm)(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   use_cache=False).last_hidden_state
    last = attention_mask.sum(1) - 1
    yes, bias = answer_row(causal_lm, yes_id)
    logit = hidden[torch.arange(hidden.shape[0], device=hidden.device), last] @ yes.to(hidden.dtype)
    return logit if bias is None else logit + bias


def token_ids(llm: LoadedLLM, prompts: Sequence[str] | Sequence[list[int]]) -> list[list[int]]:
    """Prompts as token id lists: text is tokenized (`llm.prompt_ids`: the tokenizer's BOS where it adds one,
    as in every prompt kind), id lists (e.g. CoLLM's, with slot ids) pass through."""
    prompts = list(prompts)
    if prompts and isinstance(prompts[0], str):
        return [prompt_ids(llm.tokenizer, p) for p in prompts]
    return [list(p) for p in prompts]


def _pad(llm: LoadedLLM, ids: Sequence[list[int]]) -> dict[str, torch.Tensor]:
    return llm.tokenizer.pad({"input_ids": list(ids)}, return_tensors="pt").to(llm.device)


@torch.no_grad()
def predict(head: torch.nn.Module, llm: LoadedLLM, ids: Sequence[list[int]], batch: int = 32) -> np.ndarray:
    """The head's Yes logits (eval mode), in batches of similar length, in the caller's order."""
    was_training = head.training
    head.eval()
    order = np.argsort([len(t) for t in ids], kind="stable")
    out = np.empty(len(ids), dtype=np.float64)
    for i in range(0, len(ids), batch):
        part = order[i:i + batch]
        enc = _pad(llm, [ids[j] for j in part])
        out[part] = head(enc["input_ids"], enc["attention_mask"]).float().cpu().numpy()
    head.train(was_training)
    return out


def evaluate(head: torch.nn.Module, llm: LoadedLLM, ids: Sequence[list[int]], labels: np.ndarray, batch: int = 32) -> float:
    return metrics.auc(labels, predict(head, llm, ids, batch))

