"""The cocktail merge: the dense model equals the mixture forward with the learned weights, the
adapter files are read as PEFT means them, and merge selection only ever sees validation rows."""

import inspect

import numpy as np
import polars as pl
import pytest
import torch

from models.llm import loading as llm
from models import profiles
from models.llm import merge
from models.metrics import ranking as metrics
from models.llm import scorer
from models.llm.prompts import PromptBuilder


def _prompts(n, seed):
    rng = np.random.default_rng(seed)
    titles = [f"Movie {k} ({1950 + k % 50})" for k in range(60)]
    build = PromptBuilder(noun="movie")
    return [build([titles[j] for j in rng.choice(60, rng.integers(0, 6), replace=False)], titles[rng.integers(60)])
            for _ in range(n)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("merge")
    path = llm.resolve_model_path(llm.SMOKE, root / "models")
    adapters = {}
    for k, (name, targets) in enumerate([("base_spirit", ["q_proj", "v_proj"]), ("ingredient", ["q_proj", "v_proj", "o_proj"])]):
        torch.manual_seed(k)
        base = llm.load(path, device="cpu").model
        peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
        with torch.no_grad():  # make each adapter's effect large enough to tell the two apart
            for n, p in peft.named_parameters():
                if "lora_B" in n:
                    p.mul_(20)
        peft.save_pretrained(root / name)
        adapters[name] = root / name
    return path, adapters, root


def _mixture(path, adapters):
    loaded = llm.load(path, device="cpu")
    mix = merge.Mixture(loaded.model, [merge.Adapter.load(n, p) for n, p in adapters.items()])
    return loaded, mix


def _encode(loaded):
    return lambda ps: loaded.tokenizer(list(ps), return_tensors="pt", padding=True)


def test_dense_model_scores_equal_the_mixture_with_learned_weights(setup):
    path, adapters, root = setup
    loaded, mix = _mixture(path, adapters)
    curve = merge.learn_weights(mix, merge.yes_entropy(_encode(loaded), loaded.yes_id), _prompts(32, 1), lr=0.5,
                                steps=6, batch_size=8, seed=0)
    assert np.isfinite(curve).all() and curve[-1] < curve[0]  # the entropy goes down
    table = mix.weight_table()
    weights = np.array([w for t in table.values() for w in t.values()])
    assert np.abs(weights - 0.5).max() > 0.05  # the weights moved away from equal
    assert set(table["model.layers.0.self_attn.o_proj"]) == {"ingredient"}  # only one adapter wraps it
    prompts = _prompts(20, 2)
    with torch.no_grad():
        mixed = scorer.score(loaded, prompts)
    dense_dir = merge.save_dense(mix, loaded.tokenizer, root / "dense")
    dense = llm.load(dense_dir, device="cpu")  # AutoModelForCausalLM.from_pretrained on plain safetensors
    assert not any("lora" in n or "logits" in n for n, _ in dense.model.named_parameters())
    assert np.abs(scorer.score(dense, prompts) - mixed).max() < 1e-4
    assert np.abs(scorer.score(llm.load(path, device="cpu"), prompts) - mixed).max() > 1e-2  # merged != base


@pytest.mark.parametrize("name", ["base_spirit", "ingredient"])
def test_one_adapter_weights_equal_peft_merge(setup, name):
    from peft import PeftModel

    path, adapters, _ = setup
    loaded, mix = _mixture(path, adapters)
    other = next(n for n in adapters if n != name)
    mix.set_fixed({name: 1.0, other: 0.0})
    prompts = _prompts(12, 3)
    ours = scorer.score(loaded, prompts)
    ref = llm.load(path, device="cpu")
    ref.model = PeftModel.from_pretrained(ref.model, adapters[name]).merge_and_unload().eval()
    assert np.abs(scorer.score(ref, prompts) - ours).max() < 1e-4


@pytest.mark.parametrize("combination", ["ties", "dare_linear"])
def test_a_peft_combination_folds_into_the_model_peft_itself_merges(setup, combination):
    """TIES and DARE come from PEFT's own `add_weighted_adapter` (seeded) and are folded by our merge
    code like every other method: the dense result equals PEFT's merge_and_unload of the same combination."""
    from peft import PeftModel

    path, adapters, _ = setup
    how = {"combination": combination, "density": 0.5, "weights": [1.0, 1.0]}
    ours = llm.load(path, device="cpu")
    adapter, ours.model = merge.peft_combination(ours.model, adapters, how, seed=7)
    mix = merge.Mixture(ours.model, [adapter])
    mix.set_fixed({adapter.name: 1.0})
    mix.to_dense()
    ref = llm.load(path, device="cpu")
    peft = PeftModel.from_pretrained(ref.model, str(adapters["base_spirit"]), adapter_name="base_spirit")
    peft.load_adapter(str(adapters["ingredient"]), adapter_name="ingredient")
    torch.manual_seed(7)
    peft.add_weighted_adapter(["base_spirit", "ingredient"], [1.0, 1.0], "combined", combination_type=combination,
                              density=0.5)
    peft.set_adapter("combined")
    ref.model = peft.merge_and_unload().eval()
    prompts = _prompts(12, 4)
    mine = scorer.score(ours, prompts)
    assert np.abs(scorer.score(ref, prompts) - mine).max() < 1e-4
    assert np.abs(scorer.score(llm.load(path, device="cpu"), prompts) - mine).max() > 1e-2  # it did something


def test_adapter_for_another_model_is_refused(setup, tmp_path):
    path, adapters, _ = setup
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text((adapters["base_spirit"] / "adapter_config.json").read_text())
    from safetensors.torch import load_file, save_file

    w = load_file(str(adapters["base_spirit"] / "adapter_model.safetensors"))
    save_file({k: torch.zeros(v.shape[0], v.shape[1] + 3) if "lora_A" in k else v for k, v in w.items()},
              str(bad / "adapter_model.safetensors"))
    loaded = llm.load(path, device="cpu")
    with pytest.raises(merge.MergeError, match="does not fit"):
        merge.Mixture(loaded.model, [merge.Adapter.load("bad", bad)])
    with pytest.raises(merge.MergeError, match="not a PEFT LoRA adapter"):
        merge.Adapter.load("none", tmp_path)
    import json

    cfg = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "bias": "all"}))
    with pytest.raises(merge.MergeError, match="trained biases"):
        merge.Adapter.load("biased", bad)


def _split(test_labels):
    rows = []
    for part, n in (("train", 10), ("valid", 40), ("test", 30)):
        for i in range(n):
            label = (i % 3 == 0) if part != "test" else test_labels[i]
            rows.append({"split": part, "history_item_ids": [f"i{(i + j) % 7}" for j in range(i % 4)],
                         "title": f"Film {i % 11}", "label": int(label)})
    return pl.DataFrame(rows)


def test_merge_selection_never_sees_test_rows(setup):
    titles = {f"i{k}": f"Old film {k}" for k in range(7)}
    build = PromptBuilder(noun="movie")
    a = merge.validation_slices(_split(np.zeros(30)), titles, build, 16, 16)
    b = merge.validation_slices(_split(np.arange(30) % 2), titles, build, 16, 16)  # other test labels
    c = merge.validation_slices(_split(np.zeros(30)).filter(pl.col("split") != "test"), titles, build, 16, 16)
    assert a[0] == b[0] == c[0] and a[1] == b[1] == c[1]
    assert np.array_equal(a[2], b[2]) and np.array_equal(a[2], c[2])
    assert len(a[0]) == 16 and len(a[1]) == 16 and len(a[2]) == 16
    # the selection entry point takes validation prompts and labels only
    params = set(inspect.signature(merge.select_merge).parameters)
    assert not any("test" in p for p in params)

    # end to end on the smoke model: every candidate is scored on the selection slice
    path, adapters, _ = setup
    loaded, mix = _mixture(path, adapters)
    learn, select, labels = a
    combined = []

    def combine(how):
        combined.append(how)
        dense = llm.load(path, device="cpu")
        adapter, dense.model = merge.peft_combination(dense.model, adapters, how, seed=0)
        one = merge.Mixture(dense.model, [adapter])
        one.set_fixed({adapter.name: 1.0})
        one.to_dense()
        return dense

    results = merge.select_merge(mix, lambda m: metrics.auc(labels, scorer.score(m or loaded, select)),
                                 merge.yes_entropy(_encode(loaded), loaded.yes_id), learn,
                                 profiles.MergeSettings(learning_rates=(0.1,), steps=4, eval_every=2),
                                 log=lambda s: None, combine=combine)
    methods = [r.method for r in results]
    assert methods == ["base_only", "ingredient_only", "equal_weights", "task_arithmetic", "ties", "dare",
                       "reccocktail"]
    assert [h["combination"] for h in combined] == ["ties", "dare_linear"]
    learned = results[-1]
    assert learned.step in (2, 4) and len(learned.candidates) == 2 and len(learned.entropy_curves["0.1"]) == 4
    assert learned.select_score == max(c["select_score"] for c in learned.candidates)


def test_the_merge_checkpoint_resumes_only_its_own_run(setup, tmp_path):
    """Every scored candidate and finished learning rate is in the checkpoint: a rerun with the same
    fingerprint scores nothing again and returns the same selection; another fingerprint's
    checkpoint is set aside and the merge starts over."""
    path, adapters, _ = setup
    loaded, mix = _mixture(path, adapters)
    select, learn = _prompts(16, 5), _prompts(16, 6)
    labels = np.arange(16) % 2
    calls = []

    def score(model):
        calls.append(1)
        return metrics.auc(labels, scorer.score(model or loaded, select))

    s = profiles.MergeSettings(learning_rates=(0.1, 0.3), steps=4, eval_every=2, task_arithmetic_lambdas=(0.5, 1.0))
    ck = tmp_path / "merge_checkpoint.json"
    objective = merge.yes_entropy(_encode(loaded), loaded.yes_id)
    combine = lambda how: loaded  # noqa: E731  (the combination's own model is not what this test checks)
    run = lambda fp, log=lambda m: None: merge.select_merge(mix, score, objective, learn, s, log=log,  # noqa: E731
                                                         checkpoint=ck, fingerprint_=fp, combine=combine)
    first = run("a")
    assert len(calls) == 4 + 2 + 2 * 2  # base, ingredient, equal (= lambda 0.5), lambda 1.0, TIES, DARE; 2 per lr
    calls.clear()
    again = run("a")
    assert calls == [] and [r.__dict__ for r in again] == [r.__dict__ for r in first]
    logs = []
    other = run("b", logs.append)
    assert len(calls) == 10 and any("set aside" in m for m in logs) and (tmp_path / "merge_checkpoint.json.set-aside").exists()
    assert [r.select_score for r in other] == pytest.approx([r.select_score for r in first])
