"""RecCocktail as published through Dagster on the smoke profile: the listwise base spirit (a general
dataset of other users), one target's ingredient and cocktail, a cold-start domain, and the report's
RecCocktail table with the overlap statement."""

import json

import dagster as dg
import yaml
from transformers import AutoModelForCausalLM

import report_check
from models.config import Settings
from orchestration.definitions import build_definitions
from orchestration.jobs import evaluate_domain, materialize_dataset, materialize_domain, train_base_spirit
from test_report import add_general_domain, write_fixture


def _config(tmp_path) -> Settings:
    settings = write_fixture(tmp_path)
    # the general data: other people (their own user ids, another dataset), the same catalogue
    cfg = add_general_domain(settings, "elsewhere")
    loo = {"protocol": "leave_one_out", "min_user_records": 5}
    cfg["datasets"]["general"]["split"] = loo
    cfg["domains"] = {
        "shop": {"dataset": "synthetic", "item_noun": "item", "role": "target", "task": "listwise", "split": loo},
        "shop_cold": {"dataset": "synthetic", "item_noun": "item", "role": "cold_start", "task": "listwise",
                      "split": loo},
        "elsewhere": {"dataset": "general", "item_noun": "item", "role": "general"},
    }
    cfg["settings"]["evaluation"]["floors"] = {}
    settings.config_path.write_text(yaml.safe_dump(cfg))
    return Settings(settings.data_dir, settings.config_path, "smoke")


def prepared(tmp_path):
    """The listwise fixture's datasets and domains materialized: (settings, definitions, instance)."""
    settings = _config(tmp_path)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    for ds in ("synthetic", "general"):
        assert materialize_dataset(defs, ds, instance).success
    for d in ("shop", "shop_cold", "elsewhere"):
        assert materialize_domain(defs, d, instance).success
    return settings, defs, instance


def test_listwise_reccocktail_end_to_end(tmp_path):
    settings, defs, instance = prepared(tmp_path)
    base = train_base_spirit(defs, instance, listwise=True)
    assert base.success
    (event,) = base.get_asset_materialization_events()
    md = {k: v.value for k, v in event.materialization.metadata.items()}
    assert md["domains"] == "elsewhere" and md["steps"] == 4 and md["train_lists"] == 24
    for target in ("shop", "shop_cold"):  # another dataset, other users: nothing shared but the catalogue
        assert md[f"overlap/{target}/rows"] == 0 and md[f"overlap/{target}/users"] == 0
        assert md[f"overlap/{target}/items"] > 0

    for domain in ("shop", "shop_cold"):
        result = evaluate_domain(defs, domain, instance, listwise=True)
        assert result.success
        events = {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
                  for e in result.get_asset_materialization_events()}
        ing = events["listwise_ingredient"]
        assert ing["train_lists"] == (12 if domain == "shop_cold" else 24)  # the cold start's few-shot budget
        mix = events["listwise_cocktail"]
        assert mix["task"] == "listwise" and mix["select_metric"].startswith("NDCG@5")
        assert {"ties", "dare", "task_arithmetic", "reccocktail"} <= {k.split("/")[1] for k in mix
                                                                        if k.startswith("select_score/")}
        dense = AutoModelForCausalLM.from_pretrained(settings.data_dir / "models" / "listwise_cocktail" / domain / "model")
        assert not any("lora" in n for n, _ in dense.named_parameters())
        assert events["listwise_scores"]["test_lists_scored"] == 24

        payload = json.loads((settings.data_dir / "reports" / domain / "metrics.json").read_text())
        # one frame of lists: the LLM methods and the CF models rank the same 24 users' lists
        frame = payload["frames"]["listwise"]
        llm = ["llm_untrained", "base_spirit", "ingredient_tallrec", "equal_weights", "task_arithmetic", "ties",
               "dare", "reccocktail"]
        cf = ["popularity", "als", "bpr", "mf", "lightgcn", "sasrec", "sasrec_next", "gru4rec", "mf_bpr", "lightgcn_bpr"]
        assert frame["methods"] == cf + llm  # the next-item models rank the very lists of the LLM methods
        assert frame["rows"] == 24 == frame["users"]
        counts, table = payload["counts"]["listwise"], payload["metrics"]["listwise"]
        for method in llm:
            assert counts[method]["all"]["lists"] == 24
            assert 0 <= table[method]["all"]["ndcg@3"]["value"] <= 1
            assert 0 <= table[method]["all"]["generated_hr@1"]["value"] <= 1
        assert "generated_hr@1" not in table["mf"]["all"] and "hr@1" in table["mf"]["all"]
        # the very lists of ranking_candidates, scored by every method (ids and targets recomputed)
        assert report_check.check(settings.data_dir, domain)["listwise"] == len(cf) + 2 * 8
        # the next-item tables: every CF model by full ranking and among 100 negatives, beyond accuracy
        ni = payload["next_item"]
        assert ni["methods"] == cf and ni["best_baseline"]["method"] in cf
        for m in cf:
            row = ni["metrics"][m]
            assert row["hr@10"]["n"] == payload["test_rows"] and 0 <= row["mrr"]["value"] <= 1
            assert row["hr@10"]["value"] <= row["hr@20"]["value"] and 0 < row["coverage"] <= 1
        best = ni["best_baseline"]["method"]
        claim = next(c for c in payload["claims"] if c["claim"].startswith("RecCocktail > the best traditional"))
        assert claim["b"] == best and claim["frame"] == "listwise" and claim["metric"] == "own_hr@1"
        assert "## Next-item ranking" in (settings.data_dir / "reports" / domain / "report.md").read_text()
        assert payload["base_spirit_overlap"]["listwise_base_spirit"]["rows"] == 0
        assert payload["base_spirit_overlap"]["listwise_base_spirit"]["users"] == 0
        # the listwise table's paired comparisons and the paper's claims read from them
        pairs = {(c["a"], c["b"]) for c in payload["comparisons"] if c["frame"] == "listwise"}
        assert {("reccocktail", b) for b in ("ingredient_tallrec", "base_spirit", "ties", "dare")} <= pairs
        assert ("ingredient_tallrec", "llm_untrained") in pairs
        claims = {c["claim"]: c for c in payload["claims"]}
        warm = claims["RecCocktail >= ingredient on warm lists (generated NDCG@1, as published)"]
        assert warm["verdict"] in ("reproduced", "contradicted", "inconclusive", "not testable")
        text = (settings.data_dir / "reports" / domain / "report.md").read_text()
        assert "RecCocktail as published" in text and "The base spirits' training data against this domain" in text
        assert "Warning" not in text
        lineage = [x["asset"] for x in payload["lineage"]]
        assert "listwise_scores" in lineage


def test_a_pointwise_domain_gets_no_listwise_cocktail(tmp_path):
    settings = _config(tmp_path)
    cfg = yaml.safe_load(settings.config_path.read_text())
    cfg["domains"]["shop"]["task"] = "pointwise"
    settings.config_path.write_text(yaml.safe_dump(cfg))
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_dataset(defs, "synthetic", instance).success
    assert materialize_domain(defs, "shop", instance).success
    result = defs.resolve_job_def("evaluate_domain_listwise").execute_in_process(
        partition_key="shop", instance=instance, raise_on_error=False,
        asset_selection=[dg.AssetKey("listwise_ingredient")])
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert "gets no listwise cocktail" in str(failure.event_specific_data.error)


def test_a_base_spirit_that_shares_users_with_a_target_is_refused_or_warned(tmp_path):
    """General data from the targets' own dataset (the same users): by default the base spirit leaves
    the targets' users out, which here leaves nothing, and the run says so in one line; with
    `base_spirit_excludes_target_users: false` it trains on them, and the metadata, the run log and
    the report state the overlap with a warning."""
    settings = _config(tmp_path)
    cfg = yaml.safe_load(settings.config_path.read_text())
    cfg["domains"]["elsewhere"]["dataset"] = "synthetic"
    for exclude in (True, False):
        cfg["settings"]["base_spirit_excludes_target_users"] = exclude
        settings.config_path.write_text(yaml.safe_dump(cfg))
        defs = build_definitions(settings)
        instance = dg.DagsterInstance.ephemeral()
        assert materialize_dataset(defs, "synthetic", instance).success
        for d in ("shop", "shop_cold", "elsewhere"):
            assert materialize_domain(defs, d, instance).success
        base = train_base_spirit(defs, instance, listwise=True, raise_on_error=False)
        if exclude:
            assert not base.success
            failure = [e for e in base.all_events if e.is_step_failure][0]
            assert "every user of the general domain 'elsewhere' is also a user of a domain that gets a cocktail" \
                in str(failure.event_specific_data.error)
            continue
        (event,) = base.get_asset_materialization_events()
        md = {k: v.value for k, v in event.materialization.metadata.items()}
        assert md["overlap/shop/warning"].startswith("the base spirit shares")
        assert evaluate_domain(defs, "shop", instance).success
        text = (settings.data_dir / "reports" / "shop" / "report.md").read_text()
        payload = json.loads((settings.data_dir / "reports" / "shop" / "metrics.json").read_text())
        stats = payload["base_spirit_overlap"]["listwise_base_spirit"]
        assert stats == {k.split("/")[-1]: v for k, v in md.items() if k.startswith("overlap/shop/")
                         and not k.endswith("/warning")}
        assert md["rows_dropped_as_target_users"]["elsewhere"] == 0 and stats["rows"] > 0 and stats["users"] > 0
        assert "The base spirits' training data against this domain" in text
        assert f"shares {stats['rows']} rows and {stats['users']} users with this domain" in text
