"""The evaluation report end to end on a small synthetic domain, and its audit gates."""

import json

import dagster as dg
import numpy as np
import polars as pl
import pytest
import yaml

from assets._metadata import embed_images
from models import metrics, report
from models.config import Settings
from orchestration.definitions import build_definitions
from orchestration.jobs import evaluate_domain, materialize_dataset, materialize_domain, train_base_spirit

MONTH = 30 * 86400


def write_fixture(tmp_path):
    """80 users x 60 items over six months with a planted taste structure; some users and items
    appear only in the last month, so the test split has warm and cold rows."""
    rng = np.random.default_rng(0)
    users, items = 80, 60
    taste_u, taste_i = rng.normal(size=(users, 4)), rng.normal(size=(items, 4))
    rows = []
    for u in range(users):
        first_month = 5 if u >= 70 else 0  # users 70.. are new in the test month
        for i in rng.choice(items, 25, replace=False):
            if i >= 55 and first_month == 0:
                continue  # items 55.. exist only in the test month
            month = rng.integers(first_month, 6) if i < 55 else 5
            like = taste_u[u] @ taste_i[i] + rng.normal(scale=0.5) > 0
            rows.append((f"u{u}", f"i{i}", 5 if like else 2, 1_600_000_000 + month * MONTH + int(rng.integers(0, MONTH - 86400))))
    df = pl.DataFrame(rows, schema=["user", "item", "stars", "when"], orient="row")
    df = df.join(pl.DataFrame({"item": [f"i{i}" for i in range(items)],
                               "name": [f"Item number {i}" for i in range(items)]}), on="item")
    df.write_csv(tmp_path / "events.csv")
    cfg = {
        "settings": {
            "cf": {"mf": {"dim": 16, "patience": 10, "max_epochs": 200, "batch_size": 256, "lr": 0.01},
                   "bpr": {"iterations": 20}},
            "evaluation": {"bootstrap_samples": 50, "ranking_negatives": 9, "ranking_k": [1, 3],
                           "floors": {"shop": {"popularity": {"auc": 0.0}}}},
        },
        "datasets": {"synthetic": {
            "format": "table", "source": {"path": "events.csv"},
            "fields": {"user": "user", "item": "item", "rating": "stars", "timestamp": "when",
                       "item_id": "item", "title": "name"},
            "label_threshold": 4,
            "split": {"protocol": "month_window", "train_slots": [0, 3], "valid_slots": [4, 4],
                      "test_slots": [5, 5]},
        }},
        "domains": {"shop": {"dataset": "synthetic", "item_noun": "item", "role": "target"}},
    }
    (tmp_path / "datasets.yaml").write_text(yaml.safe_dump(cfg))
    return Settings(tmp_path / "data", tmp_path / "datasets.yaml", "smoke")


def prepare_llm_fixture(defs, instance) -> None:
    """What an LLM evaluation of `shop` needs first: both datasets, `shop` and the general `shop_all`
    split (`add_general_domain`), and the base spirit."""
    for ds in ("synthetic", "general"):
        assert materialize_dataset(defs, ds, instance).success
    for d in ("shop", "shop_all"):
        assert materialize_domain(defs, d, instance).success
    assert train_base_spirit(defs, instance).success


def add_general_domain(settings: Settings, name: str = "shop_all") -> dict:
    """Add the base spirit's data to the fixture's config: a dataset `general` of other people (the
    fixture's events under other user ids, as a domain-general base spirit needs) and its domain
    `name` with role general. Returns the config as written."""
    import polars as pl

    events = pl.read_csv(settings.config_path.parent / "events.csv")
    events.with_columns(("g" + pl.col("user")).alias("user")).write_csv(settings.config_path.parent / "general.csv")
    cfg = yaml.safe_load(settings.config_path.read_text())
    cfg["datasets"]["general"] = {**cfg["datasets"]["synthetic"], "source": {"path": "general.csv"}}
    cfg["domains"][name] = {"dataset": "general", "item_noun": "item", "role": "general"}
    settings.config_path.write_text(yaml.safe_dump(cfg))
    return cfg


def _evaluate(settings):
    """Ingest, split and evaluate the fixture's `shop` domain through Dagster: (defs, instance, result)."""
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_dataset(defs, "synthetic", instance).success
    assert materialize_domain(defs, "shop", instance).success
    result = evaluate_domain(defs, "shop", instance)
    assert result.success
    return defs, instance, result


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    settings = write_fixture(tmp_path_factory.mktemp("report"))
    return (settings, *_evaluate(settings))


def _report_metadata(result):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("evaluation_report")]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_report_files_exist_and_agree(evaluated):
    settings, _, _, result = evaluated
    out = settings.data_dir / "reports" / "shop"
    for name in ("report.md", "metrics.json", "roc.png", "metrics.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads((out / "metrics.json").read_text())
    md = (out / "report.md").read_text()
    meta = _report_metadata(result)
    # the asset page's Markdown is report.md with its plots inlined, so the UI draws them
    assert meta["report"] == embed_images(md, out) and "](data:image/png;base64," in meta["report"]
    assert "![roc](roc.png)" in md
    assert set(payload["metrics"]) == {"popularity", "als", "bpr", "mf", "lightgcn", "sasrec"}
    for method, subsets in payload["metrics"].items():
        assert set(subsets) == {"all", "warm", "cold"}
        auc = subsets["all"]["auc"]["value"]
        assert meta[f"{method}/all/auc"] == pytest.approx(auc, abs=1e-4)
        assert f"| {method} | {auc:.4f} [" in md  # the Markdown shows the JSON's number
        assert {"auc", "uauc", "hr@1", "ndcg@1", "hr@3", "ndcg@3"} <= set(subsets["all"])
    assert [x["asset"] for x in payload["lineage"]] == ["ranking_candidates", "temporal_split", "cf_embeddings"]
    assert all(len(x["sha256"]) == 64 for x in payload["lineage"])
    assert payload["settings"]["bootstrap_samples"] == 50


def test_report_numbers_match_an_independent_computation(evaluated):
    settings, *_ = evaluated
    split = pl.read_parquet(settings.data_dir / "domains" / "shop" / "split.parquet")
    test = split.filter(pl.col("split") == "test")
    scores = pl.read_parquet(settings.data_dir / "domains" / "shop" / "scores" / "cf.parquet")
    mf = scores.filter(pl.col("method") == "mf").sort("row")["score"].to_numpy()
    payload = json.loads((settings.data_dir / "reports" / "shop" / "metrics.json").read_text())
    from sklearn.metrics import roc_auc_score

    assert payload["metrics"]["mf"]["all"]["auc"]["value"] == pytest.approx(roc_auc_score(test["label"], mf))
    assert payload["metrics"]["mf"]["all"]["uauc"]["value"] == pytest.approx(
        metrics.uauc(test["user_id"].to_numpy(), test["label"].to_numpy(), mf))
    # the planted taste structure is learnable: MF beats chance on warm rows
    assert payload["metrics"]["mf"]["warm"]["auc"]["value"] > 0.6


def test_gates_pass_on_the_first_report(evaluated):
    *_, result = evaluated
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"report_complete", "metric_floors", "no_regression"}
    assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items()}
    assert "nothing to compare" in checks["no_regression"].description


def test_regression_gate_fails_on_a_planted_regression(evaluated):
    settings, defs, instance, _ = evaluated
    path = settings.data_dir / "domains" / "shop" / "scores" / "cf.parquet"
    original = path.read_bytes()
    scores = pl.read_parquet(path)
    # plant a regression: MF's scores reversed, as a broken training run would leave them
    scores.with_columns(pl.when(pl.col("method") == "mf").then(-pl.col("score")).otherwise(pl.col("score"))
                        .alias("score")).write_parquet(path)
    try:
        job = defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(asset_selection=[dg.AssetKey("evaluation_report")], partition_key="shop",
                                        instance=instance, raise_on_error=False)
    finally:
        path.write_bytes(original)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["no_regression"].passed
    assert "mf/all/auc" in checks["no_regression"].description
    assert checks["report_complete"].passed


def test_completeness_and_floor_gates_say_what_is_wrong():
    from assets.report import gate_results

    est = {"value": 0.61, "ci_low": 0.6, "ci_high": 0.62, "n": 10}
    nan = {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    result = {"mf": {"all": {"auc": est, "uauc": est}, "warm": {"auc": est, "uauc": est},
                     "cold": {"auc": nan, "uauc": est}}}
    complete, floors, regression = gate_results(result, ["mf", "als"], {"mf": {"auc": 0.65}}, None, 0.01)
    assert not complete.passed and "als: missing" in complete.description and "mf/cold/auc: NaN" in complete.description
    assert not floors.passed and "mf auc = 0.61 < floor 0.65" in floors.description
    assert regression.passed


def test_published_reference_appears_for_the_collm_protocol():
    test = pl.DataFrame({"user_id": ["a", "a", "b", "b"], "label": [1, 0, 1, 0], "warm": [True, True, False, False],
                         "not_cold": [True, True, False, False]})
    m = report.MethodScores("mf", np.array([0.9, 0.1, 0.4, 0.6]))
    t = report.MethodScores("ingredient_tallrec", np.array([0.9, 0.1, 0.6, 0.4]))
    res = report.evaluate(test, [m, t], bootstrap_samples=10, min_subset_rows=2)
    md = report.markdown("movies", test, res, {"bootstrap_samples": 10, "llm": "smollm2-135m-instruct"}, [],
                         reference="collm_ml1m")
    assert "| CoLLM-MF | Qwen2-1.5B | 0.7354 | 0.6950 |" in md
    assert "| MF | mf | - | 0.7500 | 0.5000 |" in md  # ours beside theirs, labelled by backbone
    assert "| TALLRec (= CoLLM w/o CIE) | ingredient_tallrec | smollm2-135m-instruct | 1.0000 | 1.0000 |" in md
    assert res["mf"]["warm"]["auc"]["value"] == 1.0 and res["mf"]["cold"]["auc"]["value"] == 0.0


def test_metrics_that_cannot_exist_are_not_applicable_not_missing():
    rng = np.random.default_rng(1)
    n = 60
    test = pl.DataFrame({"user_id": [f"u{k}" for k in range(n)], "label": rng.integers(0, 2, n),
                         "warm": [k < 5 for k in range(n)], "not_cold": [k < 40 for k in range(n)]})
    m = report.MethodScores("mf", rng.normal(size=n))
    res = report.evaluate(test, [m], bootstrap_samples=10, min_subset_rows=20, one_row_per_user=True)
    assert "only 5 warm test rows" in res["mf"]["warm"]["auc"]["not_applicable"]
    assert "leave-one-out" in res["mf"]["all"]["uauc"]["not_applicable"]
    assert "not_applicable" not in res["mf"]["all"]["auc"]
    assert report.missing_metrics(res, ["mf"]) == []
    md = report.markdown("d", test, res, {"bootstrap_samples": 10}, [])
    assert "n/a†" in md and "† not applicable" in md


def test_a_sampled_method_is_compared_on_the_rows_it_scored():
    """An LLM method scores a seeded sample of test rows: too few of its own rows is not an estimate,
    and the same-rows evaluation puts every method on the rows all of them scored."""
    rng = np.random.default_rng(2)
    n = 200
    test = pl.DataFrame({"user_id": [f"u{k % 40}" for k in range(n)], "label": rng.integers(0, 2, n),
                         "warm": [k % 2 == 0 for k in range(n)], "not_cold": [k % 4 != 1 for k in range(n)]})
    full = report.MethodScores("mf", rng.normal(size=n), rng.normal(size=(n, 10)))
    sampled = np.full(n, np.nan)
    rows = np.sort(rng.choice(n, 60, replace=False))
    sampled[rows] = rng.normal(size=60)
    ranking = np.full((n, 10), np.nan)
    ranking[rows[:8]] = rng.normal(size=(8, 10))
    llm = report.MethodScores("ingredient_tallrec", sampled, ranking)
    res = report.evaluate(test, [full, llm], ks=(1,), bootstrap_samples=10, min_subset_rows=20)
    assert res["ingredient_tallrec"]["all"]["auc"]["n"] == 60 and "not_applicable" not in res["ingredient_tallrec"]["all"]["auc"]
    assert "ranked lists" in res["ingredient_tallrec"]["all"]["ndcg@1"]["not_applicable"]  # at most 8 lists
    assert "scored rows" in res["ingredient_tallrec"]["cold"]["auc"]["not_applicable"]  # about 15 cold rows
    assert "not_applicable" not in res["mf"]["all"]["ndcg@1"]
    assert report.on_common_rows([full, full]) is None
    common, n_common = report.on_common_rows([full, llm])
    assert n_common == 60
    same = report.evaluate(test, common, ks=(1,), bootstrap_samples=10, min_subset_rows=20)
    assert same["mf"]["all"]["auc"]["n"] == 60
    from sklearn.metrics import roc_auc_score

    assert same["mf"]["all"]["auc"]["value"] == pytest.approx(roc_auc_score(test["label"].to_numpy()[rows],
                                                                            full.pointwise[rows]))
    md = report.markdown("movies", test, res, {"bootstrap_samples": 10}, [], reference="collm_ml1m",
                         same_rows=(same, n_common))
    assert "## Same rows: every method on the 60 test rows" in md
    assert "The same methods on the 60 rows they all scored:" in md


def test_the_summary_shows_not_applicable_metrics_as_na():
    est = {"value": 0.7, "ci_low": 0.6, "ci_high": 0.8, "n": 100}
    few = {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 3, "not_applicable": "only 3 scored rows"}
    rep = {"test_rows": 100, "metrics": {"mf": {"all": {"auc": est, "uauc": est}, "warm": {"auc": few, "uauc": est},
                                               "cold": {"auc": est, "uauc": few}}}}
    text, table = report.summary_markdown({"movies": rep})
    assert table[0]["auc_all"] == 0.7 and table[0]["auc_warm"] is None and table[0]["uauc_cold"] is None
    assert ("| movies | mf | all 100 test rows | 0.7000 [0.600, 0.800] | n/a | 0.7000 [0.600, 0.800] | "
            "0.7000 [0.600, 0.800] | 0.7000 [0.600, 0.800] | n/a | n/a | n/a |") in text


def test_a_cf_model_can_be_left_out_of_a_domain(tmp_path):
    """`domains.<d>.cf.<model>.enabled: false` (the shipped config does it for SASRec on the 988k-row
    leave-one-out domain): the model is neither trained nor reported there, and the metadata says why."""
    settings = write_fixture(tmp_path)
    cfg = yaml.safe_load(settings.config_path.read_text())
    cfg["domains"]["shop"]["cf"] = {"sasrec": {"enabled": False}, "lightgcn": {"max_epochs": 5}}
    settings.config_path.write_text(yaml.safe_dump(cfg))
    _, _, result = _evaluate(settings)
    payload = json.loads((settings.data_dir / "reports" / "shop" / "metrics.json").read_text())
    assert "sasrec" not in payload["metrics"] and "lightgcn" in payload["metrics"]
    (ev,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "cf_embeddings"]
    md = {k: v.value for k, v in ev.materialization.metadata.items()}
    assert md["sasrec/skipped"] == "settings.cf.sasrec.enabled is false for shop" and md["lightgcn/epochs_run"] <= 5
    assert not (settings.data_dir / "domains" / "shop" / "cf" / "sasrec.npz").exists()
