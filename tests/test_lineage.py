"""Lineage that includes what decides the result: switching the model (two tiny configs) changes
the code version of every LLM asset and of no CF or split asset; one profile value changes the code
version of the stages that read it and, once they rerun, the data version of every LLM asset and of
no CF or split asset. Staleness is Dagster's own (what the UI shows)."""

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from models.llm import loading as llm
from models.config import Settings
from orchestration.definitions import build_definitions
from orchestration.jobs import evaluate_domain, train_base_spirit
from test_report import add_general_domain, prepare_llm_fixture, write_fixture

LLM_ASSETS = ("base_spirit_lora", "ingredient_lora", "cocktail_model", "llm_scores", "collm_cie")
DATA_ASSETS = ("raw_interactions", "raw_items", "interactions", "domain_interactions", "temporal_split",
               "ranking_candidates", "cf_embeddings")
# the stages whose code version reads the training settings; the cocktail and the scores follow
# through the new data versions of the adapters
TRAINING = ("base_spirit_lora", "ingredient_lora", "collm_cie")


def _code_versions(defs: dg.Definitions) -> dict[str, str]:
    graph = defs.resolve_asset_graph()
    return {k.to_user_string(): graph.get(k).code_version for k in graph.materializable_asset_keys}


def _status(defs: dg.Definitions, instance: dg.DagsterInstance, asset: str) -> StaleStatus:
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    partition = None if asset in ("base_spirit_lora",) else "synthetic" if asset in DATA_ASSETS[:3] else "shop"
    return resolver.get_status(dg.AssetKey(asset), partition)


def _data_versions(instance: dg.DagsterInstance) -> dict[str, str]:
    return {a: instance.fetch_materializations(dg.AssetKey(a), limit=1).records[0].asset_materialization.tags[
        "dagster/data_version"] for a in LLM_ASSETS + DATA_ASSETS}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The smoke chain materialized once with tiny model A; profiles for model B and for one changed value."""
    tmp = tmp_path_factory.mktemp("lineage")
    settings = write_fixture(tmp)
    add_general_domain(settings)
    model_a = llm.make_tiny_model(tmp / "tiny-a", hidden_size=64, layers=2, seed=1)
    model_b = llm.make_tiny_model(tmp / "tiny-b", hidden_size=96, layers=2, seed=2)
    profiles = tmp / "my_profiles.yaml"
    profiles.write_text(yaml.safe_dump({"profiles": {
        "tiny_a": {"extends": "smoke", "model": str(model_a)},
        "tiny_b": {"extends": "smoke", "model": str(model_b)},
        "tiny_a_lr": {"extends": "tiny_a", "train": {"lr": 0.004}},
    }}))
    mp = pytest.MonkeyPatch()
    mp.setenv("LLMREC_PROFILES", str(profiles))
    mp.delenv("LLMREC_MODEL", raising=False)
    at = {name: Settings(settings.data_dir, settings.config_path, name) for name in ("tiny_a", "tiny_b", "tiny_a_lr")}
    defs = build_definitions(at["tiny_a"])
    instance = dg.DagsterInstance.ephemeral()
    prepare_llm_fixture(defs, instance)
    assert evaluate_domain(defs, "shop", instance, with_llm=True).success
    yield {name: build_definitions(s) for name, s in at.items()}, instance
    mp.undo()


def test_everything_is_fresh_where_it_was_materialized(world):
    defs, instance = world
    for asset in LLM_ASSETS + DATA_ASSETS:
        assert _status(defs["tiny_a"], instance, asset) == StaleStatus.FRESH, asset


def test_another_model_marks_every_llm_asset_stale_and_nothing_else(world):
    defs, instance = world
    a, b = _code_versions(defs["tiny_a"]), _code_versions(defs["tiny_b"])
    assert all(a[x] != b[x] for x in LLM_ASSETS), {x: (a[x], b[x]) for x in LLM_ASSETS}
    assert all(a[x] == b[x] for x in DATA_ASSETS)
    for asset in LLM_ASSETS:
        assert _status(defs["tiny_b"], instance, asset) == StaleStatus.STALE, asset
    for asset in DATA_ASSETS:
        assert _status(defs["tiny_b"], instance, asset) == StaleStatus.FRESH, asset


def test_one_profile_value_changes_its_stages_code_and_the_rest_of_the_llm_data(world):
    """A training setting is read by the training stages: their code versions change (Dagster marks
    them stale); rematerialized, every LLM asset has a new data version and no CF or split asset does."""
    defs, instance = world
    a, c = _code_versions(defs["tiny_a"]), _code_versions(defs["tiny_a_lr"])
    assert {x for x in LLM_ASSETS if a[x] != c[x]} == set(TRAINING)
    assert all(a[x] == c[x] for x in DATA_ASSETS)
    for asset in TRAINING:
        assert _status(defs["tiny_a_lr"], instance, asset) == StaleStatus.STALE, asset
    for asset in DATA_ASSETS:
        assert _status(defs["tiny_a_lr"], instance, asset) == StaleStatus.FRESH, asset
    before = _data_versions(instance)
    assert train_base_spirit(defs["tiny_a_lr"], instance).success
    assert defs["tiny_a_lr"].resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey(a) for a in LLM_ASSETS[1:]], partition_key="shop", instance=instance).success
    after = _data_versions(instance)
    assert all(before[x] != after[x] for x in LLM_ASSETS), {x: (before[x], after[x]) for x in LLM_ASSETS}
    assert all(before[x] == after[x] for x in DATA_ASSETS), {x: (before[x], after[x]) for x in DATA_ASSETS if before[x] != after[x]}
    for asset in LLM_ASSETS + DATA_ASSETS:
        assert _status(defs["tiny_a_lr"], instance, asset) == StaleStatus.FRESH, asset
