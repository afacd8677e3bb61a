"""The LLM assets end to end on the smoke profile: base spirit, ingredient, their scores, and the
report's LLM rows."""

import json
import re
import os
import shutil
import subprocess
import sys

import dagster as dg
import polars as pl
import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM

from models.metrics import frames
from models.config import PROJECT_ROOT, Settings
from orchestration.definitions import build_definitions
from orchestration.jobs import evaluate_domain, materialize_dataset, materialize_domain, train_base_spirit
import report_check
from test_report import add_general_domain, write_fixture


def test_llm_rows_join_the_report(tmp_path):
    settings = write_fixture(tmp_path)
    add_general_domain(settings)
    defs = build_definitions(Settings(settings.data_dir, settings.config_path, "smoke"))
    instance = dg.DagsterInstance.ephemeral()
    for ds in ("synthetic", "general"):
        assert materialize_dataset(defs, ds, instance).success
    for d in ("shop", "shop_all"):
        assert materialize_domain(defs, d, instance).success
    base = train_base_spirit(defs, instance)
    assert base.success
    (event,) = base.get_asset_materialization_events()
    md = {k: v.value for k, v in event.materialization.metadata.items()}
    assert md["domains"] == "shop_all" and md["steps"] == 10 and md["tokens_per_s"] > 0
    assert len(md["loss_and_auc"]) == 2
    result = evaluate_domain(defs, "shop", instance, with_llm=True)
    assert result.success
    # the WARN gate: each adapter and the cocktail against the untrained LLM on validation, by how much
    checks = {(e.asset_key.to_user_string(), e.check_name): e
              for e in [*base.get_asset_check_evaluations(), *result.get_asset_check_evaluations()]}
    for asset in ("base_spirit_lora", "ingredient_lora", "cocktail_model"):
        ev = checks[(asset, "beats_untrained")]
        assert ev.severity == dg.AssetCheckSeverity.WARN and "for the untrained LLM on the same" in ev.description, asset
        assert re.search(r"on the same [\d,]+ validation prompts", ev.description), ev.description  # how many rows
        assert "not measured" not in ev.description, ev.description
    payload = json.loads((settings.data_dir / "reports" / "shop" / "metrics.json").read_text())
    llm_methods = ("llm_untrained", "base_spirit", "ingredient_tallrec", "reccocktail", "equal_weights",
                   "task_arithmetic", "ties", "dare", "collm_mf", "collm_mf_cocktail")
    # one frame: the evaluation sample (the profile's 40 users, all of their rows) holds every method; the
    # sampled users' lists (the first 3 users of the same draw) hold every ranking method
    sample = payload["frames"]["sample"]
    assert set(llm_methods) | {"mf", "popularity", "ensemble_mf_tallrec"} <= set(sample["methods"])
    split = pl.read_parquet(settings.data_dir / "domains" / "shop" / "split.parquet")
    test = split.filter(pl.col("split") == "test")
    users = test["user_id"].to_numpy()
    assert sample["positions"] == frames.sample_positions(users, 40).tolist() and sample["users"] == 40
    lists = payload["frames"]["sample_lists"]
    expected = [int(r) for r in frames.sample_positions(users, 3) if test["label"][int(r)] == 1]
    assert lists["positions"] == expected and set(llm_methods) <= set(lists["methods"])
    for method in llm_methods:
        assert payload["metrics"]["sample"][method]["all"]["auc"]["n"] == sample["rows"]
        assert "ndcg@1" not in payload["metrics"]["sample_lists"][method]["all"]  # it is HR@1
    assert report_check.check(settings.data_dir, "shop")["sample"] > 0
    # the base spirit's training rows are an input too (the overlap statement): none shared with shop
    assert [x["asset"] for x in payload["lineage"]][-3:] == ["llm_scores", "collm_cie", "base_spirit_lora"]
    assert payload["base_spirit_overlap"]["base_spirit"]["rows"] == 0 == payload["base_spirit_overlap"][
        "base_spirit"]["users"]
    text = (settings.data_dir / "reports" / "shop" / "report.md").read_text()
    assert "## Our pointwise adaptation of RecCocktail" in text and "`reccocktail`" in text
    # the adapter is portable: its config names the base by name, not by this machine's path, its card
    # says what it is; copied elsewhere, PEFT loads it onto the base and it scores as the original
    adapter = settings.data_dir / "adapters" / "ingredient" / "shop" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-llama-smoke"
    card = (adapter / "README.md").read_text()
    assert card.startswith("---\nbase_model: tiny-llama-smoke\nlibrary_name: peft\n")
    for part in ("## Training data", "terms not stated in the config", "train prompts: 200", "## Settings",
                 "best validation AUC:", "## How to load", "PeftModel.from_pretrained"):
        assert part in card, part
    moved = tmp_path / "elsewhere" / "ingredient_shop"
    shutil.copytree(adapter, moved)
    base_dir = settings.data_dir / "models" / "tiny-llama-smoke"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), moved).eval()
    original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter).eval()
    assert any("lora_B" in n for n, _ in model.named_parameters())
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)
        assert not torch.equal(model(ids).logits, AutoModelForCausalLM.from_pretrained(base_dir)(ids).logits)

    # the cocktail: a dense model plain transformers loads, its weights, plots and selection record
    cocktail = settings.data_dir / "models" / "cocktail" / "shop"
    dense = AutoModelForCausalLM.from_pretrained(cocktail / "model")
    card = (cocktail / "model" / "README.md").read_text()
    assert "library_name: transformers" in card and "## Adapters folded in" in card and "not the paper's" in card
    assert not any("lora" in n for n, _ in dense.named_parameters())
    (ev,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "cocktail_model"]
    cmd = {k: v.value for k, v in ev.materialization.metadata.items()}
    assert cmd["selected_step"] in (2, 4) and cmd["selected_lr"] == 0.1
    assert len(cmd["weights_per_module"]) == 2 * 2  # 2 layers x (q_proj, v_proj)
    assert (cocktail / "weights.png").stat().st_size > 0 and (cocktail / "entropy.png").stat().st_size > 0
    merged = json.loads((cocktail / "merge.json").read_text())
    assert [r["method"] for r in merged["results"]] == ["base_only", "ingredient_only", "equal_weights",
                                                         "task_arithmetic", "ties", "dare", "reccocktail"]
    (ev,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "collm_cie"]
    cmd = {k: v.value for k, v in ev.materialization.metadata.items()}
    assert cmd["collm_mf/steps"] == 6 and 0 < cmd["collm_mf/test_id_prompt_share"] <= 1
    assert (settings.data_dir / "adapters" / "collm" / "shop" / "collm_mf" / "adapter" / "cie.safetensors").exists()


def test_a_backfill_of_several_domains_is_one_run(tmp_path):
    """The LLM assets' single-run backfill policy: a range of domain partitions, launched from the CLI
    as a backfill of one run would be, trains every domain's ingredient in one run and one process."""
    settings = write_fixture(tmp_path)
    cfg = yaml.safe_load(settings.config_path.read_text())
    cfg["domains"]["shop2"] = {"dataset": "synthetic", "item_noun": "item", "role": "target"}
    settings.config_path.write_text(yaml.safe_dump(cfg))
    defs = build_definitions(Settings(settings.data_dir, settings.config_path, "smoke"))
    for name in ("ingredient_lora", "cocktail_model", "llm_scores", "collm_cie"):
        spec = defs.resolve_assets_def(name)
        assert spec.backfill_policy == dg.BackfillPolicy.single_run(), name
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert materialize_dataset(defs, "synthetic", instance).success
        for d in ("shop", "shop2"):
            assert materialize_domain(defs, d, instance).success
        assert instance.get_dynamic_partitions("domain")[:2] == ["shop", "shop2"]
        runs_before = {r.run_id for r in instance.get_runs()}
    env = {**os.environ, "DAGSTER_HOME": str(home), "LLMREC_DATA_DIR": str(settings.data_dir),
           "LLMREC_CONFIG": str(settings.config_path), "LLMREC_PROFILE": "smoke", "HF_HUB_OFFLINE": "1"}
    cli = subprocess.run([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "orchestration.definitions",
                          "--select", "ingredient_lora", "--partition-range", "shop...shop2"],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = [r for r in instance.get_runs() if r.run_id not in runs_before]
        records = instance.fetch_materializations(dg.AssetKey("ingredient_lora"), limit=10).records
        assert sorted(r.partition_key for r in records) == ["shop", "shop2"]
        assert {r.run_id for r in records} == {run.run_id}
        md = records[0].asset_materialization.metadata
        assert md["domains"].value == "shop, shop2" and md["shop2/steps"].value == 10
    for d in ("shop", "shop2"):
        assert (settings.data_dir / "adapters" / "ingredient" / d / "adapter" / "adapter_model.safetensors").exists()


def test_the_untrained_gate_warns_in_sentences_a_user_can_act_on():
    """What was compared, on which rows, the two numbers, which way is better, and what to do."""
    from assets._metadata import beats_untrained

    ok = beats_untrained("ingredient_lora", {"best_valid_auc": 0.71, "untrained_valid_auc": 0.52, "valid_prompts": 64},
                         "best_valid_auc", "untrained_valid_auc", label="best validation AUC", rows="valid_prompts",
                         unit="prompts")
    assert ok.passed and ok.description == (
        "ingredient_lora: best validation AUC 0.7100 after training against 0.5200 for the untrained LLM on the "
        "same 64 validation prompts (higher is better): 0.1900 better")
    two = beats_untrained("ingredient_lora", {"a/best_valid_auc": 0.5, "a/untrained_valid_auc": 0.55,
                                              "b/best_valid_auc": 0.6, "b/untrained_valid_auc": 0.5},
                          "best_valid_auc", "untrained_valid_auc", advice="Train longer.")
    assert not two.passed and two.severity == dg.AssetCheckSeverity.WARN
    assert two.description.startswith("ingredient_lora [a] is no better than the untrained LLM on validation. ")
    assert "ingredient_lora [a]: best_valid_auc 0.5000 after training against 0.5500" in two.description
    assert "0.0500 worse" in two.description and "0.1000 better" in two.description
    assert two.description.endswith("Train longer.")
    assert "in its favour" not in two.description and "this model" not in two.description
    loss = beats_untrained("listwise_ingredient", {"best_valid_loss": 1.2, "untrained_valid_loss": 2.0},
                           "best_valid_loss", "untrained_valid_loss", higher_is_better=False)
    assert loss.passed and "(lower is better): 0.8000 better" in loss.description
