"""Any decoder family, not only Llama: tiny random Llama, Qwen2, Mistral, Phi-3 (fused qkv), GPT-2
(Conv1D layers, learned positions, the decoder under `transformer`) and OPT (the decoder under
`model.decoder`) with SmolLM2's tokenizer train a LoRA, score with the shared-prefix cache (equal to
the plain forward), rank listwise candidates from generate's cache, run CoLLM's CIE, and merge two
adapters into a dense model that scores as the mixture did."""

import numpy as np
import pytest
import torch

from models.llm import collm
from models.llm import heads
from models import profiles
from models.llm import listwise
from models.llm import loading as llm
from models.llm import trainer as lora_train
from models.llm import merge
from models.llm import scorer
from models.cf.model import CFModel
from models.llm.prompts import PromptBuilder

FAMILIES = ["llama", "qwen2", "mistral", "phi3", "gpt2", "opt"]
TEXT, IDS = PromptBuilder(noun="movie"), PromptBuilder(noun="movie", with_ids=True)


def _prompts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    titles = [f"Movie {k} ({1950 + k % 50})" for k in range(60)]
    labels = rng.integers(0, 2, n)
    # a shared history for runs of prompts, so the scorer's prefix cache is used
    hists = [[titles[j] for j in rng.choice(60, 4, replace=False)] for _ in range(3)]
    return [TEXT(hists[k % 3], titles[rng.integers(60)]) for k in range(n)], labels


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


def _model(models_dir, family: str):
    return llm.make_tiny_model(models_dir / family, hidden_size=64, layers=2, seed=0, family=family)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_scores_runs_cie_and_merges(models_dir, tmp_path, family):
    path = _model(models_dir, family)
    loaded = llm.load(path, device="cpu")
    assert llm.decoder_of(loaded.model) is not loaded.model
    prompts, labels = _prompts(24, 0)

    # scoring: the shared-prefix cache (grouped, batched) equals one plain forward per batch
    fast = scorer.score(loaded, prompts, max_batch_tokens=200, min_shared_tokens=8)
    plain = scorer.score_reference(loaded, prompts)
    assert np.abs(fast - plain).max() < 1e-3, family

    # RecCocktail's listwise scoring: the answers and candidate likelihoods from the greedy search's own
    # cache equal generate's answers and one plain forward per candidate (left-padded batches)
    cands = [f"Film {k}" + " and more" * (k % 3) for k in range(30)]
    lw = [listwise.prompt_text(loaded.tokenizer, [f"Seen film {h}" for h in range(1 + 2 * j)], cands, listwise.Words())
          for j in range(3)]
    texts, liks, _ = listwise.generate_and_rank(loaded, lw, [cands] * 3, max_new_tokens=4, batch_size=2)
    assert texts == listwise.generate(loaded, lw, 4, batch_size=2), family
    for prompt, lik in zip(lw, liks):
        ids = loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ref = listwise.candidate_loglik_reference(loaded, ids, [listwise.continuation_ids(loaded.tokenizer, t)
                                                                for t in cands])
        assert np.abs(lik - ref).max() < 1e-3, family

    # training: `auto` targets (PEFT's default for the family) and `all-linear`; two adapters to merge
    folders = {}
    for name, targets in (("a", ("auto",)), ("b", ("all-linear",))):
        c = profiles.TrainConfig(max_steps=2, batch_size=8, eval_every=2, checkpoint_every=2, warmup_steps=0,
                                   lr=0.05, min_lr=0.01, target_modules=targets, gradient_checkpointing=name == "b",
                                   max_grad_norm=1.0, seed=len(folders))
        fresh = llm.load(path, device="cpu")
        result = lora_train.train(fresh, prompts, labels, prompts[:8], labels[:8], tmp_path / name, c,
                                  log=lambda s: None)
        assert result.steps == 2 and np.isfinite(result.best_valid), (family, name)
        folders[name] = tmp_path / name / "adapter"
    kinds = {type(loaded.model.get_submodule(m)).__name__ for m in merge.Adapter.load("b", folders["b"]).deltas}
    assert kinds == ({"Conv1D"} if family == "gpt2" else {"Linear"}), kinds

    # the merge: per-module mixture of the two adapters (B scaled up so they matter), folded into W0
    adapters = [merge.Adapter.load(n, f) for n, f in folders.items()]
    for a in adapters:
        a.deltas = {m: (A, B + 0.05 * torch.randn_like(B)) for m, (A, B) in a.deltas.items()}
    mixed = llm.load(path, device="cpu")
    mix = merge.Mixture(mixed.model, adapters)
    mix.set_fixed({"a": 0.3, "b": 0.7})
    before = scorer.score(mixed, prompts, min_shared_tokens=8)
    assert np.abs(before - plain).max() > 1e-3  # the adapters change the scores
    mix.to_dense()
    after = scorer.score(mixed, prompts, min_shared_tokens=8)
    assert np.abs(after - before).max() < 1e-3, family

    # CoLLM's CIE: slot positions fed CF vectors; the fast scorer equals the trainer's forward; the MLP learns
    rng = np.random.default_rng(0)
    cf = CFModel("mf", np.array([f"u{k}" for k in range(4)]), np.array([f"i{k}" for k in range(10)]),
                 rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(10, 8)).astype(np.float32),
                 np.ones(4, bool), np.ones(10, bool))
    torch.manual_seed(0)
    head = collm.CoLLMHead(loaded.model, cf, loaded.yes_id)
    titles = {i: f"Film {i}" for i in cf.item_ids}
    rows = [(f"u{k % 4}", f"i{k % 10}", ["i1", "i2"]) for k in range(12)]
    seqs, used = collm.encode_rows(head, loaded.tokenizer, rows, titles, TEXT, IDS)
    assert used.all()
    head.eval()
    assert np.abs(scorer.score_ids(loaded, seqs, min_shared_tokens=4, embed=head.embed)
                  - heads.predict(head, loaded, seqs)).max() < 1e-3
    head.train()
    enc = loaded.tokenizer.pad({"input_ids": seqs}, return_tensors="pt")
    loss = head(enc["input_ids"], enc["attention_mask"]).sum()
    loss.backward()
    grads = {n for n, p in head.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads == {n for n, _ in head.cie.named_parameters(prefix="cie")}, grads
