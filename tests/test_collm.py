"""CoLLM's CIE on the smoke model: slot positions carry the CF vectors, unknown users or items fall
back to the text prompt, and training through the LoRA trainer moves only what the variant trains
and learns a signal that exists only in the CF vectors."""

import numpy as np
import polars as pl
import pytest
import torch

from models.llm import collm
from models.llm import heads
from models import profiles
from models.llm import loading as llm
from models.llm import trainer as lora_train
from models.cf.model import CFModel
from models.llm.prompts import PromptBuilder

TEXT, IDS = PromptBuilder(noun="movie"), PromptBuilder(noun="movie", with_ids=True)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return llm.resolve_model_path(llm.SMOKE, tmp_path_factory.mktemp("models"))


def _cf(n_users=6, n_items=40, d=4, seed=0):
    rng = np.random.default_rng(seed)
    known_items = np.ones(n_items, bool)
    known_items[-1] = False  # a cold item
    return CFModel("mf", np.array([f"u{k}" for k in range(n_users)]), np.array([f"i{k}" for k in range(n_items)]),
                   rng.normal(size=(n_users, d)).astype(np.float32), rng.normal(size=(n_items, d)).astype(np.float32),
                   np.ones(n_users, bool), known_items)


def _split(cf, n=320, seed=1):
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        item = int(rng.integers(len(cf.item_ids) - 1))
        rows.append({"split": "train" if k < n * 3 // 4 else "valid", "user_id": f"u{k % 6}", "item_id": f"i{item}",
                     "history_item_ids": [], "title": "Same film",
                     "label": int(cf.item_factors[item, 0] > 0)})  # the signal lives only in the CF vectors
    return pl.DataFrame(rows)


def test_slots_carry_cf_vectors_and_unknown_ids_fall_back_to_text(model_path):
    loaded = llm.load(model_path, device="cpu")
    cf = _cf()
    head = collm.CoLLMHead(loaded.model, cf, loaded.yes_id)
    titles = {i: f"Film {i}" for i in cf.item_ids}
    toks, used = collm.encode_rows(head, loaded.tokenizer, [("u1", "i3", ["i0"]), ("u1", "i39", ["i0"]),
                                                            ("nobody", "i3", [])], titles, TEXT, IDS)
    assert used.tolist() == [True, False, False]
    v = head.vocab
    assert sum(t >= v for t in toks[0]) == 2 and toks[0][toks[0].index(v + 1) + 1:].count(v + 6 + 3) == 1
    assert all(t < v for t in toks[1] + toks[2])
    assert toks[1] == loaded.tokenizer(TEXT(["Film i0"], "Film i39"))["input_ids"]
    ids = torch.tensor([toks[0]])
    emb = head.embed(ids)
    pos_u, pos_i = toks[0].index(v + 1), toks[0].index(v + 6 + 3)
    with torch.no_grad():
        torch.testing.assert_close(emb[0, pos_u], head.cie(head.users.weight[1]))
        torch.testing.assert_close(emb[0, pos_i], head.cie(head.items.weight[3]))
        before = head(ids, torch.ones_like(ids))
        head.items.weight[3] += 5.0
        assert (head(ids, torch.ones_like(ids)) - before).abs().item() > 1e-4  # the CF vector reaches the score


@pytest.mark.parametrize("variant", ["two_step", "t1", "t3"])
def test_training_moves_only_what_the_variant_trains_and_learns_the_cf_signal(model_path, tmp_path, variant):
    loaded = llm.load(model_path, device="cpu")
    cf = _cf()
    peft = heads.add_lora(loaded, profiles.TrainConfig()) if variant == "t3" else None
    torch.manual_seed(0)
    head = collm.CoLLMHead(loaded.model, cf, loaded.yes_id, variant, peft_model=peft)
    frozen = {n: p.detach().clone() for n, p in loaded.model.named_parameters() if "lora_" not in n}
    users0 = head.users.weight.detach().clone()
    split = _split(cf)
    titles = {i: f"Film {i}" for i in cf.item_ids}
    tr, ty, _, _ = collm.examples(head, loaded.tokenizer, split, titles, TEXT, IDS, "train", None)
    va, vy, _, used = collm.examples(head, loaded.tokenizer, split, titles, TEXT, IDS, "valid", None)
    assert used.all()
    cfg = profiles.TrainConfig(lr=1e-2, min_lr=1e-3, warmup_steps=5, batch_size=16, max_steps=60, eval_every=20,
                                 checkpoint_every=20)
    res = lora_train.train(loaded, tr, ty, va, vy, tmp_path, cfg, log=lambda s: None, head=head)
    assert res.best_valid > 0.8, res.history  # text is identical for every row: only the CF vectors tell
    for n, p in loaded.model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert torch.equal(head.users.weight, users0) == (variant != "t1")
    assert (tmp_path / "adapter" / "cie.safetensors").exists()
    assert (tmp_path / "adapter" / "lora" / "adapter_config.json").exists() == (variant == "t3")
    fresh = collm.CoLLMHead(llm.load(model_path, device="cpu").model, cf, loaded.yes_id,
                            "two_step").load_trained(tmp_path / "adapter")
    if variant != "t3":  # the saved head reproduces the best validation AUC
        from models.metrics import ranking as metrics

        assert metrics.auc(vy, heads.predict(fresh, loaded, va)) == pytest.approx(res.best_valid, abs=1e-6)


def test_fast_scorer_with_slot_embeddings_equals_the_plain_forward(model_path):
    from models.llm import scorer

    loaded = llm.load(model_path, device="cpu")
    cf = _cf()
    torch.manual_seed(0)
    head = collm.CoLLMHead(loaded.model, cf, loaded.yes_id).eval()
    titles = {i: f"Film {i}" for i in cf.item_ids}
    hist = ["i1", "i2", "i5"]
    group = collm.candidate_tokens(head, loaded.tokenizer, "u2", hist, [f"i{k}" for k in range(30, 40)], titles, TEXT, IDS)
    assert sum(t >= head.vocab for t in group[-1]) == 0 and sum(t >= head.vocab for t in group[0]) == 2  # i39 is cold
    (fast,) = scorer.score_id_groups(loaded, [group], max_batch_tokens=40, embed=head.embed)
    plain = heads.predict(head, loaded, group)
    assert np.abs(fast.numpy() - plain).max() < 1e-4
    rows = [("u1", "i3", hist), ("u1", "i4", hist), ("u3", "i3", []), ("u1", "i39", hist)]
    seqs = collm.encode_rows(head, loaded.tokenizer, rows, titles, TEXT, IDS)[0]
    assert np.abs(scorer.score_ids(loaded, seqs, min_shared_tokens=8, embed=head.embed)
                  - heads.predict(head, loaded, seqs)).max() < 1e-4
