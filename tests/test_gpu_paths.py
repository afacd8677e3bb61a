"""What a GPU run and other tokenizers change, checked on the CPU: the padding side and BOS are
handled the same way for every prompt kind and scoring path; bf16 weights train with fp32 LoRA
weights and optimizer state under autocast; the merge folds in fp32 then casts; gradient
checkpointing gives the gradient it replaces; clipping is recorded."""

import numpy as np
import pytest
import torch

from models.llm import collm
from models.llm import heads
from models import profiles
from models.llm import loading as llm
from models.llm import trainer as lora_train
from models.llm import merge
from models.llm import scorer
from models.cf.model import CFModel
from models.llm.prompts import PromptBuilder

TEXT, IDS = PromptBuilder(noun="movie"), PromptBuilder(noun="movie", with_ids=True)


def _prompts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    titles = [f"Movie {k} ({1950 + k % 50})" for k in range(60)]
    # lengths differ a lot, so padding (and on which side) matters
    return ([TEXT([titles[j] for j in rng.choice(60, rng.integers(0, 8), replace=False)], titles[rng.integers(60)])
             for _ in range(n)], rng.integers(0, 2, n))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The same random Llama three times: SmolLM2's tokenizer as it is, one that pads on the left, and
    one that pads on the left and adds BOS (as Llama and Vicuna tokenizers do)."""
    root = tmp_path_factory.mktemp("tok")
    make = lambda name, kw: llm.make_tiny_model(root / name, **llm.SMOKE_RECIPE, tokenizer_kwargs=kw)  # noqa: E731
    return {"default": make("default", None), "left": make("left", {"padding_side": "left"}),
            "left_bos": make("left_bos", {"padding_side": "left", "add_bos_token": True})}


def _unpadded(loaded, ids: list[list[int]]) -> np.ndarray:
    """The Yes logit of each prompt alone: one forward, no padding, full logits at its last token."""
    with torch.no_grad():
        return np.array([float(loaded.model(input_ids=torch.tensor([s])).logits[0, -1, loaded.yes_id]) for s in ids])


def _trainer_logits(loaded, ids: list[list[int]]) -> np.ndarray:
    """The trainer's Yes logits: padded batches through `yes_logit` (what training and validation use)."""
    with torch.no_grad():
        enc = heads._pad(loaded, ids)
        return heads.yes_logit(loaded.model, enc["input_ids"], enc["attention_mask"], loaded.yes_id).numpy()


def test_padding_side_and_bos_give_the_same_yes_logits_on_every_path(folders):
    prompts, _ = _prompts(12)
    default = llm.load(folders["default"], device="cpu")
    ids = [llm.prompt_ids(default.tokenizer, p) for p in prompts]
    reference = _unpadded(default, ids)
    for name in ("default", "left", "left_bos"):
        loaded = llm.load(folders[name], device="cpu")
        assert loaded.tokenizer.padding_side == "right", name  # forced: the code reads the last real position
        ids_k = [llm.prompt_ids(loaded.tokenizer, p) for p in prompts]
        bos = name == "left_bos"
        assert all((s[0] == loaded.tokenizer.bos_token_id) == bos for s in ids_k), name
        assert all(s[1:] == t for s, t in zip(ids_k, ids)) if bos else ids_k == ids
        truth = _unpadded(loaded, ids_k)
        if not bos:  # the tokenizer's padding side changes nothing
            np.testing.assert_allclose(truth, reference, atol=1e-5)
        for path, got in (("trainer", _trainer_logits(loaded, ids_k)),
                          ("scorer", scorer.score(loaded, prompts, max_batch_tokens=256, min_shared_tokens=8)),
                          ("reference scorer", scorer.score_reference(loaded, prompts))):
            np.testing.assert_allclose(got, truth, atol=1e-4, err_msg=f"{name}: {path}")


def test_text_and_id_prompts_start_alike_with_a_bos_tokenizer(folders):
    loaded = llm.load(folders["left_bos"], device="cpu")
    rng = np.random.default_rng(0)
    cf = CFModel("mf", np.array(["u0", "u1"]), np.array(["i0", "i1", "i2"]), rng.normal(size=(2, 4)).astype(np.float32),
                 rng.normal(size=(3, 4)).astype(np.float32), np.array([True, False]), np.ones(3, bool))
    head = collm.CoLLMHead(loaded.model, cf, loaded.yes_id)
    titles = {"i0": "Alien (1979)", "i1": "Heat (1995)", "i2": "Fargo (1996)"}
    (id_prompt, text_prompt), used = collm.encode_rows(head, loaded.tokenizer, [("u0", "i1", ["i0"]), ("u1", "i1", ["i0"])],
                                                       titles, TEXT, IDS)
    assert used.tolist() == [True, False]  # u1 has no trained vector: the text prompt
    bos = loaded.tokenizer.bos_token_id
    assert id_prompt[0] == bos and id_prompt[1] != bos and text_prompt[0] == bos and text_prompt[1] != bos
    assert text_prompt == llm.prompt_ids(loaded.tokenizer, TEXT(["Alien (1979)"], "Heat (1995)"))


def _bf16(path) -> llm.LoadedLLM:
    loaded = llm.load(path, device="cpu")
    loaded.model.to(torch.bfloat16)
    loaded.dtype = torch.bfloat16
    return loaded


def test_bf16_weights_train_fp32_lora_under_autocast(folders, tmp_path):
    loaded = _bf16(folders["default"])
    prompts, labels = _prompts(16)
    c = profiles.TrainConfig(max_steps=2, batch_size=8, eval_every=2, checkpoint_every=2, warmup_steps=0, lr=0.01,
                               min_lr=0.001, max_grad_norm=1.0)
    result = lora_train.train(loaded, prompts, labels, prompts, labels, tmp_path, c, log=lambda s: None)
    assert result.steps == 2 and np.isfinite(result.best_valid)
    assert all(np.isfinite(h["grad_norm"]) for h in result.history)  # clipping measured the norm it clipped
    ck = torch.load(tmp_path / "checkpoint" / "checkpoint.pt", weights_only=False)
    assert ck["trainable"] and all(v.dtype == torch.float32 for v in ck["trainable"].values())
    moments = [t for st in ck["optimizer"]["state"].values() for k, t in st.items() if k in ("exp_avg", "exp_avg_sq")]
    assert moments and all(t.dtype == torch.float32 for t in moments)
    assert all(p.dtype == torch.bfloat16 for n, p in loaded.model.named_parameters() if "lora_" not in n)


def test_the_merge_folds_in_fp32_then_casts(folders, tmp_path):
    from peft import LoraConfig, get_peft_model

    adapters = []
    for k in range(2):
        torch.manual_seed(k)
        peft = get_peft_model(llm.load(folders["default"], device="cpu").model,
                              LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"],
                                         init_lora_weights=False))
        with torch.no_grad():
            for n, p in peft.named_parameters():
                if "lora_B" in n:
                    p.mul_(20)
        peft.save_pretrained(tmp_path / f"a{k}")
        adapters.append(merge.Adapter.load(f"a{k}", tmp_path / f"a{k}"))
    prompts, _ = _prompts(16, 1)
    loaded = _bf16(folders["default"])
    mix = merge.Mixture(loaded.model, adapters)
    mix.set_fixed({"a0": 0.4, "a1": 0.6})
    assert all(getattr(m, "A0").dtype == torch.float32 for m in mix.modules.values())  # adapters stay fp32
    mixed = scorer.score(loaded, prompts)
    plain = scorer.score(_bf16(folders["default"]), prompts)
    assert np.abs(mixed - plain).max() > 0.1  # the adapters matter
    mix.to_dense()
    assert all(p.dtype == torch.bfloat16 for p in loaded.model.parameters())
    dense = scorer.score(loaded, prompts)
    assert np.abs(dense - mixed).max() < 0.05


def test_gradient_checkpointing_gives_the_same_gradient(folders):
    prompts, labels = _prompts(8)
    grads = {}
    for ckpt in (False, True):
        loaded = llm.load(folders["default"], device="cpu")
        torch.manual_seed(0)
        c = profiles.TrainConfig(gradient_checkpointing=ckpt, lora_dropout=0.0)
        head = heads.YES.make_head(loaded, c)
        head.train()
        assert loaded.model.is_activation_checkpointing == ckpt if hasattr(loaded.model, "is_activation_checkpointing") \
            else True
        enc = heads._pad(loaded, heads.token_ids(loaded, prompts))
        heads.YES.loss(head, enc, torch.tensor(labels)).backward()
        grads[ckpt] = {n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys() and grads[True]
    for n in grads[True]:
        torch.testing.assert_close(grads[True][n], grads[False][n], rtol=1e-4, atol=1e-6)


def test_the_key_value_cache_goes_through_the_current_api(folders):
    """The shared-prefix scorer and the listwise likelihood pass transformers `Cache` objects under the
    keyword the installed version takes: no deprecation warning (`past_key_values` goes away in 5.40)."""
    import warnings

    from models.llm import listwise

    loaded = llm.load(folders["default"], device="cpu")
    prompts, _ = _prompts(6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        fast = scorer.score(loaded, prompts * 2, min_shared_tokens=8)
        ids = llm.prompt_ids(loaded.tokenizer, prompts[0])
        conts = [llm.prompt_ids(loaded.tokenizer, t) for t in ("Alien (1979)||", "Heat (1995)||")]
        lik = listwise.candidate_loglik(loaded, ids, conts)
    np.testing.assert_allclose(fast, scorer.score_reference(loaded, prompts * 2), atol=1e-4)
    np.testing.assert_allclose(lik, listwise.candidate_loglik_reference(loaded, ids, conts), atol=1e-4)
