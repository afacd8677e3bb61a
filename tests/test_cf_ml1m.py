"""CF baselines on the real ML-1M `movies` domain, through Dagster, with the report's MF floor."""

import json

import dagster as dg
import pytest

from models.config import PROJECT_ROOT, Settings, load_config
from orchestration.definitions import build_definitions
from orchestration.jobs import evaluate_domain, materialize_dataset, materialize_domain

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def movies_report(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    settings = Settings(data_dir, PROJECT_ROOT / "config" / "datasets.yaml", "demo")
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_dataset(defs, "ml1m", instance).success
    assert materialize_domain(defs, "movies", instance).success
    result = evaluate_domain(defs, "movies", instance)
    assert result.success
    return json.loads((data_dir / "reports" / "movies" / "metrics.json").read_text()), result


def test_mf_meets_the_configured_floor(movies_report):
    payload, result = movies_report
    floors = load_config(PROJECT_ROOT / "config" / "datasets.yaml").evaluation["floors"]["movies"]["mf"]
    mf = payload["metrics"]["mf"]["all"]
    assert mf["auc"]["value"] >= floors["auc"]
    assert mf["uauc"]["value"] >= floors["uauc"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"report_complete": True, "metric_floors": True, "no_regression": True}


def test_every_method_is_reported_on_warm_and_cold_rows(movies_report):
    payload, _ = movies_report
    assert set(payload["metrics"]) == {"popularity", "als", "bpr", "mf"}
    assert payload["test_rows"] == 7_331
    for method, subsets in payload["metrics"].items():
        assert subsets["warm"]["auc"]["n"] == 3_522
        assert subsets["cold"]["auc"]["n"] == 3_178
    # MF's collaborative signal lives in warm rows
    assert payload["metrics"]["mf"]["warm"]["auc"]["value"] > 0.70
