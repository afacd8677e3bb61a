"""The evaluation report end to end on a small synthetic domain, and its audit gates."""

import json

import dagster as dg
import numpy as np
import polars as pl
import pytest
import yaml

from assets._metadata import embed_images
from models.metrics import frames
from models.metrics import ranking as metrics
from models.reporting import report
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
                   "bpr": {"iterations": 20},
                   # the next-item models (leave-one-out domains only): a few epochs
                   **{m: {"max_epochs": 10, "eval_every": 5, "lr": 0.01}
                      for m in ("sasrec_next", "gru4rec", "mf_bpr", "lightgcn_bpr")}},
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
    # a CF-only domain: the frames of all test rows and of all lists, nothing sampled
    assert set(payload["frames"]) == {"all", "all_lists"}
    assert payload["frames"]["all"]["rows"] == payload["test_rows"]
    cf = {"popularity", "als", "bpr", "mf", "lightgcn", "sasrec"}
    assert set(payload["metrics"]["all"]) == cf == set(payload["metrics"]["all_lists"])
    for method, subsets in payload["metrics"]["all"].items():
        assert "all" in subsets and set(subsets) <= {"all", "warm", "cold"}
        auc = subsets["all"]["auc"]["value"]
        assert meta[f"{method}/all/auc"] == pytest.approx(auc, abs=1e-4)
        assert f"| {method} | {payload['test_rows']:,} | {auc:.4f} [" in md  # the Markdown shows the JSON's number
        assert {"auc", "uauc", "user_ndcg"} == set(subsets["all"])
        # no NDCG@1 beside HR@1 (they are equal)
        assert set(payload["metrics"]["all_lists"][method]["all"]) == {"hr@1", "hr@3", "ndcg@3"}
    assert payload["chance"]["all_lists"]["all"]["hr@3"] == pytest.approx(3 / 10)  # 9 negatives + the target
    assert "| *chance* |" in md
    assert [x["asset"] for x in payload["lineage"]] == ["ranking_candidates", "temporal_split", "cf_embeddings"]


def test_the_asset_page_leads_with_the_report_and_a_metrics_table(evaluated):
    """The evaluation report's metadata: the Markdown first, then every estimate as one table (a row per
    frame, method and subset), then a handful of top-level numbers; the rest stays in metrics.json."""
    settings, _, _, result = evaluated
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("evaluation_report")]
    md = event.materialization.metadata
    keys = list(md)
    assert keys[:2] == ["report", "metrics"], keys[:5]
    table = md["metrics"]
    assert isinstance(table, dg.TableMetadataValue)
    columns = [c.name for c in table.schema.columns]
    assert columns[:4] == ["frame", "method", "subset", "n"] and {"auc", "uauc", "hr@1"} <= set(columns)
    payload = json.loads((settings.data_dir / "reports" / "shop" / "metrics.json").read_text())
    by_key = {(r.data["frame"], r.data["method"], r.data["subset"]): r.data for r in table.records}
    expected = {(f, m, sub): ests for f, methods in payload["metrics"].items() for m, subsets in methods.items()
                for sub, ests in subsets.items()}
    assert set(by_key) == set(expected)
    for key, ests in expected.items():
        for metric, est in ests.items():
            if est.get("not_applicable"):  # shown as n/a in the report: empty in the table
                assert by_key[key][metric] is None, (key, metric)
            else:
                assert by_key[key][metric] == pytest.approx(est["value"], abs=5e-5), (key, metric)
    numbers = [k for k in keys if isinstance(md[k], (dg.FloatMetadataValue, dg.IntMetadataValue))]
    assert len([k for k in numbers if k.endswith("/auc")]) == len(payload["metrics"]["all"])  # one per method
    assert not any(k.endswith(("/uauc", "/user_ndcg")) for k in keys)  # those are in the table
    assert keys.index("metrics") < min(keys.index(k) for k in numbers)
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

    got = payload["metrics"]["all"]["mf"]
    assert got["all"]["auc"]["value"] == pytest.approx(roc_auc_score(test["label"], mf))
    assert got["all"]["uauc"]["value"] == pytest.approx(
        metrics.uauc(test["user_id"].to_numpy(), test["label"].to_numpy(), mf))
    # the planted taste structure is learnable: MF beats chance on warm rows
    assert got["warm"]["auc"]["value"] > 0.6


def test_gates_pass_on_the_first_report(evaluated):
    *_, result = evaluated
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    gates = {"report_complete", "metric_floors", "no_regression"}
    assert set(checks) == gates | {"below_chance", "degenerate", "no_candidate_named"}
    assert all(checks[g].passed for g in gates), {k: c.description for k, c in checks.items()}
    assert all(c.severity == dg.AssetCheckSeverity.WARN for k, c in checks.items() if k not in gates)
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
    assert "all/mf/all/auc" in checks["no_regression"].description
    assert checks["report_complete"].passed


def test_completeness_and_floor_gates_say_what_is_wrong():
    from assets.report import gate_results

    est = {"value": 0.61, "ci_low": 0.6, "ci_high": 0.62, "n": 10}
    nan = {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    payload = {"frames": {"all": {"methods": ["mf", "als"], "positions": [0, 1], "rows": 2}},
               "metrics": {"all": {"mf": {"all": {"auc": est, "uauc": est}, "warm": {"auc": est, "uauc": est},
                                          "cold": {"auc": nan, "uauc": est}}}}}
    complete, floors, regression = gate_results(payload, {"mf": {"auc": 0.65}}, None, 0.01)
    assert not complete.passed and "all/als: missing" in complete.description
    assert "all/mf/cold/auc: NaN" in complete.description
    assert not floors.passed and "mf's auc on the `all` frame (2 rows) is 0.6100, below its floor 0.65" \
        in floors.description
    assert regression.passed
    # a previous report on other rows is not compared
    moved = {"frames": {"all": {"methods": ["mf"], "positions": [0, 2]}}, "metrics": payload["metrics"]}
    assert "nothing to compare" in gate_results(payload, {}, moved, 0.01)[2].description


def _tiny(n_users=30, rows=4, seed=0):
    rng = np.random.default_rng(seed)
    users = [f"u{k}" for k in np.repeat(np.arange(n_users), rows)]
    labels = np.tile([1, 0] + [1] * (rows - 2), n_users)
    n = len(users)
    test = pl.DataFrame({"user_id": users, "item_id": [f"i{k % 17}" for k in range(n)], "label": labels,
                         "warm": [k % 3 != 0 for k in range(n)], "not_cold": [k % 5 != 0 for k in range(n)]})
    return test, rng


EV = {"ranking_k": [1, 3], "bootstrap_samples": 50, "test_resamples": 200, "seed": 1, "min_subset_rows": 5,
      "noninferiority_margin": 0.02, "ranking_negatives": 9}


def test_published_reference_appears_for_the_collm_protocol(tmp_path):
    test, rng = _tiny()
    y = test["label"].to_numpy()
    mf = report.MethodScores("mf", y + rng.normal(0, 1, y.size), source={"asset": "cf_embeddings"})
    tallrec = report.MethodScores("ingredient_tallrec", y + rng.normal(0, 1, y.size), source={"asset": "llm_scores"})
    w = report.write_report(tmp_path, "movies", test, [mf, tallrec], {"llm": "smollm2-135m-instruct"}, [],
                            "collm_ml1m", EV, False, "r")
    md = w.markdown
    assert "| CoLLM-MF | Qwen2-1.5B | 0.7354 | 0.6950 |" in md
    res = w.payload["metrics"]["all"]
    mine = lambda m: " | ".join(f"{res[m]['all'][k]['value']:.4f}" for k in ("auc", "uauc", "user_ndcg"))  # noqa: E731
    assert f"| MF | mf | - | {mine('mf')} |" in md  # ours beside theirs, labelled by backbone
    tallrec_row = ("| TALLRec (= CoLLM w/o CIE) | ingredient_tallrec | smollm2-135m-instruct | "
                   f"{mine('ingredient_tallrec')} |")
    assert tallrec_row in md


def test_metrics_that_cannot_exist_are_not_applicable_or_left_out(tmp_path):
    """Leave-one-out: one row per user, so no UAUC or NDCG column at all; a subset with too few rows
    is not shown, with the sentence saying why; a subset that cannot exist says so."""
    rng = np.random.default_rng(1)
    n = 60
    test = pl.DataFrame({"user_id": [f"u{k}" for k in range(n)], "item_id": [f"i{k}" for k in range(n)],
                         "label": rng.integers(0, 2, n), "warm": [k >= 5 for k in range(n)],
                         "not_cold": [True] * n})
    m = report.MethodScores("mf", rng.normal(size=n), source={"asset": "cf_embeddings"})
    w = report.write_report(tmp_path, "d", test, [m], {}, [], None, {**EV, "min_subset_rows": 20}, True, "r")
    assert set(w.payload["metrics"]["all"]["mf"]) == {"all"}  # warm leaves out 5 rows only; cold has none
    assert set(w.payload["metrics"]["all"]["mf"]["all"]) == {"auc"}
    notes = w.payload["subsets"]["all"]
    assert "leaves out 5" in notes["warm"]["note"] and not notes["warm"]["shown"]
    assert "none of the 60 rows" in notes["cold"]["note"] and "leave-one-out" in notes["cold"]["note"]
    assert report.missing_metrics(w.payload["metrics"], w.payload["frames"]) == []
    assert "Subsets not shown" in w.markdown and "UAUC and CoLLM's NDCG rank each user's own rows" in w.markdown


def test_a_sampled_method_and_the_full_ones_share_one_frame(tmp_path):
    """An LLM method scores the evaluation sample (whole users): the sample frame holds every method
    on exactly those rows, the all-rows frame only the methods that scored every row; the sample's
    numbers are the methods' numbers on those rows."""
    test, rng = _tiny(n_users=50)
    y = test["label"].to_numpy()
    n = test.height
    full = report.MethodScores("mf", y + rng.normal(0, 1, n), rng.normal(size=(n, 10)), {"asset": "cf_embeddings"})
    rows = frames.sample_positions(test["user_id"].to_numpy(), 25, seed=2023)
    sampled = np.full(n, np.nan)
    sampled[rows] = y[rows] + rng.normal(0, 1, rows.size)
    llm = report.MethodScores("ingredient_tallrec", sampled, None, {"asset": "llm_scores"})
    w = report.write_report(tmp_path, "movies", test, [full, llm], {}, [], "collm_ml1m", EV, False, "r")
    fr = w.payload["frames"]
    assert list(fr) == ["sample", "all", "all_lists"]
    assert fr["sample"]["positions"] == rows.tolist() and fr["sample"]["users"] == 25
    assert fr["sample"]["methods"] == ["mf", "ingredient_tallrec"] and fr["all"]["methods"] == ["mf"]
    from sklearn.metrics import roc_auc_score

    sample = w.payload["metrics"]["sample"]
    assert sample["mf"]["all"]["auc"]["value"] == pytest.approx(roc_auc_score(y[rows], full.pointwise[rows]))
    assert sample["ingredient_tallrec"]["all"]["auc"]["value"] == pytest.approx(roc_auc_score(y[rows], sampled[rows]))
    assert w.payload["metrics"]["all"]["mf"]["all"]["auc"]["value"] == pytest.approx(roc_auc_score(y, full.pointwise))
    assert "ingredient_tallrec" not in w.payload["metrics"]["all"]
    # every table says its frame; the LLM method appears in one table only
    assert w.markdown.count("| ingredient_tallrec | 100 | ") == 1
    assert "### Evaluation sample: 25 of the 50 test users (seeded draw), all of their 100 test rows" in w.markdown
    assert "Ours on the same protocol, on one frame (sample: 25 users, 100 rows" in w.markdown


def test_the_summary_names_each_domains_frame():
    est = {"value": 0.7, "ci_low": 0.6, "ci_high": 0.8, "n": 100}
    few = {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 3, "not_applicable": "only 3 rows"}
    rep = {"test_rows": 100, "frames": {"all": {"kind": "rows", "short": "all rows: 10 users, 100 rows",
                                            "methods": ["mf"]}},
           "metrics": {"all": {"mf": {"all": {"auc": est, "uauc": est}, "warm": {"auc": few, "uauc": est},
                                      "cold": {"auc": est, "uauc": few}}}}}
    text, table = report.summary_markdown({"movies": rep})
    assert table[0]["auc_all"] == 0.7 and table[0]["auc_warm"] is None
    assert ("| movies | all rows: 10 users, 100 rows | mf | 0.7000 [0.600, 0.800] | n/a | 0.7000 [0.600, 0.800] | "
            "0.7000 [0.600, 0.800] | n/a |") in text


def test_a_cf_model_can_be_left_out_of_a_domain(tmp_path):
    """`domains.<d>.cf.<model>.enabled: false` (the shipped config does it for SASRec on the 988k-row
    leave-one-out domain): the model is neither trained nor reported there, and the metadata says why."""
    settings = write_fixture(tmp_path)
    cfg = yaml.safe_load(settings.config_path.read_text())
    cfg["domains"]["shop"]["cf"] = {"sasrec": {"enabled": False}, "lightgcn": {"max_epochs": 5}}
    settings.config_path.write_text(yaml.safe_dump(cfg))
    _, _, result = _evaluate(settings)
    payload = json.loads((settings.data_dir / "reports" / "shop" / "metrics.json").read_text())
    assert "sasrec" not in payload["metrics"]["all"] and "lightgcn" in payload["metrics"]["all"]
    (ev,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "cf_embeddings"]
    md = {k: v.value for k, v in ev.materialization.metadata.items()}
    assert md["sasrec/skipped"] == "settings.cf.sasrec.enabled is false for shop" and md["lightgcn/epochs_run"] <= 5
    assert not (settings.data_dir / "domains" / "shop" / "cf" / "sasrec.npz").exists()
