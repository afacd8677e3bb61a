"""Only transient failures are retried: a deterministic error fails its step at the first try with a
one-line description, a transient one goes through the asset's retry policy."""

import errno
import inspect
import subprocess

import dagster as dg
import duckdb
import pytest
import yaml

from assets import _metadata as meta
from models.data import candidates
from orchestration.definitions import build_definitions
from orchestration.jobs import materialize_dataset, materialize_domain
from test_report import write_fixture


@pytest.mark.parametrize("exc, transient", [
    (TimeoutError("lock wait"), True),
    (ConnectionResetError("peer gone"), True),
    (BrokenPipeError("pipes child"), True),
    (InterruptedError("EINTR"), True),
    (OSError(errno.EBUSY, "busy"), True),
    (duckdb.IOException('Could not set lock on file "w.duckdb": Conflicting lock is held'), True),
    (subprocess.CalledProcessError(-9, ["python"]), True),
    (dg.Failure("decided by the asset", allow_retries=True), True),
    (ValueError("cannot sample 19 negatives"), False),
    (KeyError("items"), False),
    (FileNotFoundError(errno.ENOENT, "no such file", "split.parquet"), False),
    (PermissionError(errno.EACCES, "denied"), False),
    (duckdb.IOException("No files found that match the pattern"), False),
    (subprocess.CalledProcessError(1, ["python"]), False),
])
def test_transient_kinds(exc, transient):
    assert (meta.transient_reason(exc) is not None) == transient


def test_decorator_keeps_the_signature_and_classifies_plain_and_generator_bodies():
    def body(context: dg.AssetExecutionContext, project: int) -> int:
        raise ValueError("bad\ninput")

    def gen_body(context: dg.AssetExecutionContext):
        yield 1
        raise TimeoutError("slow")

    wrapped, wrapped_gen = meta.classify_failures(body), meta.classify_failures(gen_body)
    assert inspect.signature(wrapped) == inspect.signature(body) and wrapped.__name__ == "body"
    assert inspect.isgeneratorfunction(wrapped_gen) and not inspect.isgeneratorfunction(wrapped)
    with pytest.raises(dg.Failure) as info:
        wrapped(None, 1)
    assert info.value.allow_retries is False and isinstance(info.value.__cause__, ValueError)
    assert info.value.description.startswith("body failed with ValueError: bad input")
    assert "\n" not in info.value.description
    it = wrapped_gen(None)
    assert next(it) == 1
    with pytest.raises(TimeoutError):  # unchanged: the retry policy applies
        next(it)


def _step_events(instance: dg.DagsterInstance, run_id: str, step: str) -> list[str]:
    return [e.dagster_event.event_type_value for e in instance.all_logs(run_id)
            if e.dagster_event is not None and e.dagster_event.step_key == step]


def _prepared(tmp_path, ranking_negatives: int | None = None):
    settings = write_fixture(tmp_path)
    if ranking_negatives is not None:
        cfg = yaml.safe_load(settings.config_path.read_text())
        cfg["settings"]["evaluation"]["ranking_negatives"] = ranking_negatives
        settings.config_path.write_text(yaml.safe_dump(cfg))
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_dataset(defs, "synthetic", instance).success
    assert materialize_domain(defs, "shop", instance).success
    return defs, instance


def _candidates(defs: dg.Definitions, instance: dg.DagsterInstance):
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey("ranking_candidates")], partition_key="shop", instance=instance,
        raise_on_error=False)


def test_a_deterministic_failure_is_not_retried(tmp_path):
    defs, instance = _prepared(tmp_path, ranking_negatives=100)  # the domain has 60 items
    result = _candidates(defs, instance)
    assert not result.success
    events = _step_events(instance, result.run_id, "ranking_candidates")
    assert events.count("STEP_START") == 1 and "STEP_FAILURE" in events
    assert "STEP_UP_FOR_RETRY" not in events and "STEP_RESTARTED" not in events
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("ranking_candidates [shop] failed with ValueError: user ")
    assert "cannot sample 100 negatives (lower ranking_negatives)" in description and "not retried" in description


def test_a_transient_failure_is_retried(tmp_path, monkeypatch):
    # the same policy without its 10 s backoff, so the test does not wait for it
    monkeypatch.setattr(meta, "TRANSIENT_RETRY", dg.RetryPolicy(max_retries=2, delay=0.1))
    defs, instance = _prepared(tmp_path)
    real, calls = candidates.sample_candidates, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError("the shared disk did not answer in time")
        return real(*args, **kwargs)

    monkeypatch.setattr(candidates, "sample_candidates", flaky)
    result = _candidates(defs, instance)
    assert result.success and len(calls) == 2
    events = _step_events(instance, result.run_id, "ranking_candidates")
    assert events.count("STEP_UP_FOR_RETRY") == 1 and events.count("STEP_RESTARTED") == 1
    assert events[-1] == "STEP_SUCCESS"
