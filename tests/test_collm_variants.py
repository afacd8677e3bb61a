"""CoLLM's tuning variants as the paper defines them (PROTOCOLS section 3, Table V): which parameters
each trains, that one optimiser step moves exactly those, that T3 starts from the raw base LLM (not
the ingredient), and that every variant and CF source reaches the report through Dagster."""

import json

import dagster as dg
import numpy as np
import pytest
import torch

from models.llm import collm
from models.cf import interactions as cf_data
from models.cf import train as cf_train
from models.llm import heads
from models import profiles
from models.registry import collm as collm_registry
from models.stages import collm as collm_train
from models.llm import loading as llm
from models.stages.common import load_base
from models.cf.model import CFModel
from models.stages.mixing import dense_model
from models.config import Settings
from models.profiles import get_profile
from models.llm.prompts import PromptBuilder
from models.data.workspace import Workspace
from orchestration.definitions import build_definitions
from orchestration.jobs import evaluate_domain, summarize
from test_report import add_general_domain, prepare_llm_fixture, write_fixture

TEXT, IDS = PromptBuilder(noun="movie"), PromptBuilder(noun="movie", with_ids=True)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return llm.resolve_model_path(llm.SMOKE, tmp_path_factory.mktemp("models"))


def _cf(sequential=False, n_users=6, n_items=40, d=4):
    rng = np.random.default_rng(0)
    return CFModel("mf", np.array([f"u{k}" for k in range(n_users)]), np.array([f"i{k}" for k in range(n_items)]),
                   rng.normal(size=(n_users, d)).astype(np.float32), rng.normal(size=(n_items, d)).astype(np.float32),
                   np.ones(n_users, bool), np.ones(n_items, bool), {"sequential": sequential})


def _head(model_path, variant):
    loaded = llm.load(model_path, device="cpu")
    peft = heads.add_lora(loaded, profiles.TrainConfig()) if variant == "t3" else None
    torch.manual_seed(0)
    return loaded, collm.CoLLMHead(loaded.model, _cf(), loaded.yes_id, variant, peft_model=peft)


def _trainable(head) -> set[str]:
    return {n for n, p in head.named_parameters() if p.requires_grad}


EXPECTED = {  # what each variant trains: the CIE's MLP always; its CF tables (users, items); the LoRA
    "two_step": lambda n: n.startswith("cie."),
    "t1": lambda n: n.startswith(("cie.", "users.", "items.")),
    "t2": lambda n: n.startswith(("cie.", "users.", "items.")),
    "t3": lambda n: n.startswith("cie.") or "lora_" in n,
}


@pytest.mark.parametrize("variant", collm_registry.VARIANTS)
def test_each_variant_trains_exactly_its_parameters_and_a_step_moves_only_those(model_path, variant):
    loaded, head = _head(model_path, variant)
    names = {n for n, _ in head.named_parameters()}
    trainable = _trainable(head)
    assert trainable == {n for n in names if EXPECTED[variant](n)}
    assert any(n.startswith("cie.") for n in trainable)
    assert any("lora_" in n for n in trainable) == (variant == "t3")
    assert any(n.startswith("users.") for n in trainable) == (variant in ("t1", "t2"))
    # T1 starts the CF tables from the pre-trained model, T2 from scratch (a fresh start of the same shape)
    pretrained = torch.as_tensor(_cf().user_factors)
    assert torch.equal(head.users.weight.detach(), pretrained) == (variant != "t2")
    if variant == "t2":
        assert head.users.weight.shape == pretrained.shape and head.users.weight.std() < 0.5 * pretrained.std()

    titles = {f"i{k}": f"Film {k}" for k in range(40)}
    toks, used = collm.encode_rows(head, loaded.tokenizer, [("u1", "i3", ["i0"]), ("u2", "i7", ["i1", "i2"])], titles,
                                   TEXT, IDS)
    assert used.all()
    width = max(map(len, toks))
    ids = torch.tensor([t + [loaded.tokenizer.pad_token_id or 0] * (width - len(t)) for t in toks])
    mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in toks])
    before = {n: p.detach().clone() for n, p in head.named_parameters()}
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=1.0)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(head(ids, mask), torch.tensor([1.0, 0.0]))
    loss.backward()
    if variant == "t3":  # LoRA's B starts at zero: the first step moves B (A's gradient is zero through B = 0)
        assert all(p.grad is not None for n, p in head.named_parameters() if "lora_B" in n)
    opt.step()
    changed = {n for n, p in head.named_parameters() if not torch.equal(p.detach(), before[n])}
    moved_expected = {n for n in trainable if not (variant == "t3" and "lora_A" in n)}
    # the CF tables: only the rows of the prompts' user and item move (the others have no gradient)
    assert changed == moved_expected
    if variant in ("t1", "t2"):
        rows = (head.users.weight.detach() != before["users.weight"]).any(1).nonzero().ravel().tolist()
        assert rows == [1, 2]


def test_tuning_variants_refuse_a_sequential_source(model_path):
    loaded = llm.load(model_path, device="cpu")
    for variant in ("t1", "t2"):
        with pytest.raises(ValueError, match="sequential"):
            collm.CoLLMHead(loaded.model, _cf(sequential=True), loaded.yes_id, variant)
    assert [m for m, *_ in collm_registry.methods(("ingredient", "cocktail"), ("mf", "sasrec"), collm_registry.VARIANTS)] == [
        "collm_mf", "collm_sasrec", "collm_mf_cocktail", "collm_sasrec_cocktail", "collm_mf_t1",
        "collm_mf_cocktail_t1", "collm_mf_t2", "collm_mf_cocktail_t2", "collm_mf_t3", "collm_sasrec_t3"]


@pytest.fixture(scope="module")
def every_variant(tmp_path_factory, monkeypatch_module):
    tmp_path = tmp_path_factory.mktemp("variants")
    settings = write_fixture(tmp_path)
    add_general_domain(settings)
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(json.dumps({"profiles": {"variants": {
        "extends": "smoke", "collm": {"cf_models": ["mf", "lightgcn", "sasrec"], "backbones": ["ingredient"],
                                      "variants": list(collm_registry.VARIANTS)}}}}))
    monkeypatch_module.setenv("LLMREC_PROFILES", str(profiles))
    defs = build_definitions(Settings(settings.data_dir, settings.config_path, "variants"))
    instance = dg.DagsterInstance.ephemeral()
    prepare_llm_fixture(defs, instance)
    result = evaluate_domain(defs, "shop", instance, with_llm=True)
    assert result.success
    return settings, result


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_t3_starts_from_the_raw_base_llm_and_the_others_from_the_ingredient(every_variant):
    settings, _ = every_variant
    ws, prof = Workspace(settings.data_dir), get_profile("variants")
    base = load_base(ws, prof).model.state_dict()
    t3 = dense_model(ws, "shop", prof, collm_train.start_model(ws, "shop", "ingredient", "t3")).model.state_dict()
    two = dense_model(ws, "shop", prof, collm_train.start_model(ws, "shop", "ingredient", "two_step")).model.state_dict()
    assert all(torch.equal(base[k], t3[k]) for k in base)
    differ = [k for k in base if not torch.equal(base[k], two[k])]
    assert differ and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in differ)  # the folded ingredient
    # the t3 method trained its own LoRA; the two-step ones none
    collm_dir = settings.data_dir / "adapters" / "collm" / "shop"
    assert (collm_dir / "collm_mf_t3" / "adapter" / "lora" / "adapter_config.json").exists()
    assert not (collm_dir / "collm_mf" / "adapter" / "lora").exists()


def test_every_variant_and_source_reaches_the_report(every_variant):
    settings, result = every_variant
    payload = json.loads((settings.data_dir / "reports" / "shop" / "metrics.json").read_text())
    expected = {"collm_mf", "collm_lightgcn", "collm_sasrec", "collm_mf_t1", "collm_lightgcn_t1", "collm_mf_t2",
                "collm_lightgcn_t2", "collm_mf_t3", "collm_lightgcn_t3", "collm_sasrec_t3", "lightgcn", "sasrec",
                "ensemble_mf_tallrec", "ensemble_mf_collm_mf"}
    sample = payload["metrics"]["sample"]
    assert expected <= set(sample)
    assert not {"collm_sasrec_t1", "collm_sasrec_t2"} & set(sample)
    for m in expected:
        for k in ("auc", "uauc", "user_ndcg"):
            assert sample[m]["all"][k]["n"] > 0, (m, k)
    (ev,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "collm_cie"]
    md = {k: v.value for k, v in ev.materialization.metadata.items()}
    assert {md[f"{m}/variant"] for m in expected if m.startswith("collm_")} == set(collm_registry.VARIANTS)


def test_known_means_trained_for_every_cf_source(model_path):
    """A user with only negative train rows: BCE models (MF, LightGCN) trained its vector, implicit's ALS
    and BPR did not; SASRec's context is known once its sequence holds an item of train. The CIE gives
    an ID prompt exactly to the rows whose vectors were trained."""
    import polars as pl


    rows = []
    for u in range(8):
        for i in range(10):
            label = 0 if u == 7 else int((u + i) % 3 == 0)  # u7: negatives only
            rows.append(("train", f"u{u}", f"i{i}", 100 + 10 * i + u, label))
    rows += [("valid", "u0", "i1", 500, 1), ("valid", "u1", "i2", 501, 0), ("test", "u7", "i3", 600, 1),
             ("test", "u8", "i3", 601, 0), ("test", "u0", "i4", 602, 1)]
    split = pl.DataFrame(rows, schema=["split", "user_id", "item_id", "ts", "label"], orient="row")
    data = cf_data.Interactions.from_split(split)
    small = {"max_epochs": 3, "patience": 1, "dim": 4}
    models = {"mf": cf_train.train_model("mf", data, small), "lightgcn": cf_train.train_model("lightgcn", data, small),
              "als": cf_train.train_model("als", data, {"factors": 4, "iterations": 2}),
              "bpr": cf_train.train_model("bpr", data, {"factors": 4, "iterations": 2}),
              "sasrec": cf_train.train_model("sasrec", data, {**small, "dim": 8, "maxlen": 4})}
    u7 = list(data.user_ids).index("u7")
    for name in ("mf", "lightgcn"):
        assert models[name].known_users[u7] and np.abs(models[name].user_factors[u7]).sum() > 0
    for name in ("als", "bpr"):
        assert not models[name].known_users[u7] and not models[name].user_factors[u7].any()
    sas = models["sasrec"]
    assert sas.sequential and not sas.known_users[list(sas.user_ids).index(cf_data.context_key("u7", 600))]
    assert sas.known_users[list(sas.user_ids).index(cf_data.context_key("u0", 602))]
    loaded = llm.load(model_path, device="cpu")
    titles = {f"i{k}": f"Film {k}" for k in range(10)}
    for name, model in models.items():
        head = collm.CoLLMHead(loaded.model, model, loaded.yes_id)
        _, used = collm.encode_rows(head, loaded.tokenizer, [("u7", "i3", [], 600), ("u0", "i4", ["i0"], 602),
                                                             ("u8", "i3", [], 601)], titles, TEXT, IDS)
        assert used.tolist() == [name in ("mf", "lightgcn"), True, False], name


def test_the_report_tests_each_claim_and_its_verdict_follows_the_interval(every_variant):
    """The smoke run's report: the paired comparisons a reader asks (CoLLM-X against TALLRec and X, the
    cocktail against each merge baseline, every trained model against the untrained LLM) on the
    evaluation sample, Holm-adjusted; each claim's verdict read from its Holm-adjusted p and the side
    of its null value (models/reporting/comparisons.py)."""
    settings, _ = every_variant
    reports = settings.data_dir / "reports"
    payload = json.loads((reports / "shop" / "metrics.json").read_text())
    pairs = {(c["a"], c["b"]) for c in payload["comparisons"]}
    assert {("collm_mf", "ingredient_tallrec"), ("collm_mf", "mf"), ("collm_sasrec_t3", "sasrec"),
            ("reccocktail", "ingredient_tallrec"), ("reccocktail", "base_spirit"), ("reccocktail", "ties"),
            ("ingredient_tallrec", "llm_untrained"), ("collm_mf_t2", "llm_untrained")} <= pairs
    assert {c["frame"] for c in payload["comparisons"]} <= {"sample", "sample_lists"}
    family = [c for c in payload["comparisons"] if c.get("shown") and not c.get("not_applicable")]
    assert family and all("p_holm" in c and c["p_holm"] >= c["p"] for c in family)
    for c in payload["comparisons"]:
        assert c["subset"] in ("all", "warm", "cold")
        if not c.get("not_applicable"):
            assert c["ci_low"] <= c["difference"] <= c["ci_high"], c
            assert 0 < c["p"] <= 1 and c["resamples"] == 10000
            assert (c["p"] <= 0.05) == (c["ci_low"] > 0 or c["ci_high"] < 0), c  # p agrees with the interval
    assert payload["claims"], "the smoke report has the methods of several claims"
    for c in payload["claims"]:
        if c["verdict"] == "not testable":
            assert c["not_testable"]
            continue
        significant = c["p_holm"] <= 0.05
        expected = ("reproduced" if significant and c["difference"] > c["null"] else
                    "contradicted" if significant else "inconclusive")
        assert c["verdict"] == expected, c
        assert c["null"] == (-0.02 if c["relation"] == ">=" else 0.0) and c["mde"] > 0
    text = (reports / "shop" / "report.md").read_text()
    head = "\n".join(text.splitlines()[:30])
    assert "**Claims**" in head and "| claim | frame | verdict |" in head  # the headline first
    assert "## Paired comparisons" in text and "user-level" in text and "Holm" in text
    assert "![roc](roc.png)" in text  # the plots are linked, so report.md shows them outside the UI too
    defs = build_definitions(Settings(settings.data_dir, settings.config_path, "variants"))
    assert summarize(defs, dg.DagsterInstance.ephemeral()).success
    summary = (reports / "summary.md").read_text()
    # each domain on its comparison frame (the sample), each cell with its interval, and the claims
    assert "## Claims" in summary and "| shop | sample: " in summary
    assert any(line.startswith("| shop | sample: ") and "| collm_mf |" in line and "[" in line
               for line in summary.splitlines())
