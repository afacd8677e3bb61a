"""Checkpoints resume only their own run, and a finished adapter is reused only by an identical one,
seen through real Dagster materializations of `ingredient_lora` on the smoke profile: a change of
the train rows, of one training setting (a Launchpad override) or of the model (two tiny configs of
different sizes) trains from step 0 with a new adapter; nothing changed reuses the finished adapter
and says so."""

import dagster as dg
import polars as pl
import pytest

from models.llm import loading as llm
from orchestration.definitions import build_definitions
from orchestration.jobs import materialize_dataset, materialize_domain
from test_report import MONTH, write_fixture


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reuse")
    settings = write_fixture(tmp)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_dataset(defs, "synthetic", instance).success
    assert materialize_domain(defs, "shop", instance).success
    return tmp, defs, instance


def _ingredient(defs: dg.Definitions, instance: dg.DagsterInstance, overrides: dict | None = None):
    """Materialize ingredient_lora for `shop`; (its metadata as plain values, the run's log lines)."""
    run_config = {"ops": {"ingredient_lora": {"config": {"overrides": overrides}}}} if overrides else None
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey("ingredient_lora")], partition_key="shop", instance=instance,
        run_config=run_config)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    md = {k: v.value for k, v in event.materialization.metadata.items()}
    return md, [e.user_message for e in instance.all_logs(result.run_id)]


def _add_train_rows(tmp):
    """New interactions land in a train month: the split's train rows change."""
    events = pl.read_csv(tmp / "events.csv")
    extra = events.filter(pl.col("when") < 1_600_000_000 + 2 * MONTH).head(40).with_columns(
        pl.col("user").str.replace("u", "newu"), (pl.col("when") + 60).alias("when"))
    pl.concat([events, extra]).write_csv(tmp / "events.csv")


def test_only_an_identical_run_reuses_the_adapter(world):
    tmp, defs, instance = world
    first, _ = _ingredient(defs, instance)
    assert first["steps_run"] == 10 and first["steps"] == 10 and first["reused_finished_adapter"] is False

    again, logs = _ingredient(defs, instance)
    assert again["reused_finished_adapter"] is True and again["steps_run"] == 0
    assert again["adapter_sha256"] == first["adapter_sha256"] and again["fingerprint"] == first["fingerprint"]
    assert any("reusing the finished adapter" in m for m in logs)

    _add_train_rows(tmp)
    assert materialize_dataset(defs, "synthetic", instance).success
    split = materialize_domain(defs, "shop", instance)
    (split_md,) = [e.materialization.metadata for e in split.get_asset_materialization_events()
                   if e.asset_key == dg.AssetKey("temporal_split")]
    assert split_md["train/rows"].value == 1020 + 40  # the new rows are train rows
    rows, _ = _ingredient(defs, instance)
    assert rows["steps_run"] == 10 and rows["reused_finished_adapter"] is False and rows["resumed_from_step"] is None
    assert rows["fingerprint"] != first["fingerprint"] and rows["adapter_sha256"] != first["adapter_sha256"]

    lr, logs = _ingredient(defs, instance, {"train": {"lr": 0.004}})
    assert lr["steps_run"] == 10 and lr["reused_finished_adapter"] is False
    assert lr["profile_overrides"] == {"train": {"lr": 0.004}} and lr["effective_settings"]["train"]["lr"] == 0.004
    assert lr["adapter_sha256"] not in (first["adapter_sha256"], rows["adapter_sha256"])
    # the previous run's last checkpoint (step 10) is another run's: set aside, not resumed
    assert any("set aside" in m and "training from step 0" in m for m in logs)

    bigger = llm.make_tiny_model(tmp / "tiny-96", hidden_size=96, layers=2, seed=3)
    model, _ = _ingredient(defs, instance, {"model": str(bigger)})
    assert model["steps_run"] == 10 and model["reused_finished_adapter"] is False
    assert model["model"] == str(bigger) and model["model_weights_sha256"] != lr["model_weights_sha256"]
    assert model["adapter_sha256"] not in (first["adapter_sha256"], rows["adapter_sha256"], lr["adapter_sha256"])

    # and back to the profile's settings: the model differs from the finished run's, so it trains again
    back, _ = _ingredient(defs, instance)
    assert back["steps_run"] == 10 and back["adapter_sha256"] == rows["adapter_sha256"]  # same inputs, same adapter


def test_a_typo_in_the_run_overrides_fails_once_with_its_path(world):
    _, defs, instance = world
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey("ingredient_lora")], partition_key="shop", instance=instance,
        run_config={"ops": {"ingredient_lora": {"config": {"overrides": {"trian": {"lr": 0.1}}}}}},
        raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    text = failure.step_failure_data.error.message
    assert "trian" in text and "did you mean `train`" in text and "overrides" in text
    starts = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]
    assert len(starts) == 1
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
