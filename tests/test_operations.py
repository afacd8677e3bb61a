"""Operations past one laptop: the training gate, Postgres instance storage against a real
PostgreSQL server, the Kubernetes deployment files against dagster-k8s' own schemas, and LoRA
training out of process through Dagster Pipes."""

import getpass
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import dagster as dg
import pytest
import yaml

from models.config import PROJECT_ROOT, Settings
from orchestration.definitions import build_definitions
from orchestration.jobs import materialize_dataset, materialize_domain
from assets._partitions import DOMAIN_PARTITIONS
from test_report import write_fixture

DEPLOY = PROJECT_ROOT / "deploy"


def test_a_split_that_cannot_train_blocks_training(tmp_path):
    settings = write_fixture(tmp_path)
    cfg = yaml.safe_load(settings.config_path.read_text())
    cfg["datasets"]["synthetic"]["label_threshold"] = 1  # every rating is a positive: nothing to learn
    settings.config_path.write_text(yaml.safe_dump(cfg))
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_dataset(defs, "synthetic", instance).success
    # the UI's "materialize" of the split and the LoRA in one run: the gate stops the LoRA
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey("domain_interactions"), dg.AssetKey("temporal_split"),
                         dg.AssetKey("ingredient_lora")],
        partition_key="shop", instance=instance, raise_on_error=False)
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "split_trainable"]
    assert not check.passed
    assert "train has" in check.description and "0 negative" in check.description
    assert "label_threshold" in check.description and "Training downstream is skipped" in check.description
    done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert done == {"domain_interactions", "temporal_split"}  # ingredient_lora never ran
    assert not (settings.data_dir / "adapters" / "ingredient" / "shop").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    assert found, f"PostgreSQL's {name} is not installed: `apt-get install postgresql` (.ci/run does)"
    return found


@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL server on 127.0.0.1 at a free port, in a throw-away data directory."""
    root = Path(tempfile.mkdtemp(prefix="llmrec-pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    port = _free_port()
    user = "postgres" if as_user else getpass.getuser()
    subprocess.run([*as_user, _pg_bin("initdb"), "-D", str(root / "data"), "-U", "dagster", "--auth=trust", "-E",
                    "UTF8"], check=True, capture_output=True)
    subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(root / "data"), "-w", "-l", str(root / "server.log"),
                    "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True,
                   capture_output=True)
    try:
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=port, user="dagster", dbname="postgres")
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE dagster_test")
        con.close()
        yield {"DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_HOST": "127.0.0.1",
               "DAGSTER_PG_DB": "dagster_test", "DAGSTER_PG_PORT": str(port)}
    finally:
        subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(root / "data"), "-m", "fast", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        del user


def test_postgres_instance_storage_round_trip(tmp_path, postgres, monkeypatch):
    for k, v in postgres.items():
        monkeypatch.setenv(k, v)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "postgres" / "dagster.yaml", home / "dagster.yaml")
    settings = write_fixture(tmp_path)
    defs = build_definitions(settings)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert materialize_dataset(defs, "synthetic", instance).success
        assert materialize_domain(defs, "shop", instance).success
    # a fresh instance object (another webserver, the daemon) reads it all back from the server
    with dg.DagsterInstance.from_config(str(home)) as again:
        assert type(again.event_log_storage).__name__ == "PostgresEventLogStorage"
        runs = again.get_runs()
        assert {r.job_name for r in runs} == {"ingest_dataset", "prepare_domain"}
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        rec = again.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("temporal_split"),
                                                                 asset_partitions=["shop"]), limit=1).records
        assert rec and rec[0].asset_materialization.metadata["train/rows"].value > 0
        assert "shop" in again.get_dynamic_partitions(DOMAIN_PARTITIONS.name)
        assert again.get_concurrency_config().pool_config.default_pool_limit == 1


def test_kubernetes_config_validates_against_dagster_k8s(monkeypatch):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher, k8s_job_executor
    from dagster_k8s.job import get_user_defined_k8s_config

    for k in ("LLMREC_IMAGE", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_DB"):
        monkeypatch.setenv(k, "x")
    monkeypatch.setenv("DAGSTER_PG_PORT", "5432")
    home = DEPLOY / "k8s"
    instance_cfg, _ = dagster_instance_config(str(home))  # the instance schema, run launcher class included
    assert instance_cfg["run_launcher"]["class"] == "K8sRunLauncher"
    launcher = process_config(K8sRunLauncher.config_type(), instance_cfg["run_launcher"]["config"])
    assert launcher.success, launcher.errors
    assert launcher.value["job_namespace"] == "llmrec"
    run_cfg = yaml.safe_load((home / "run_config.yaml").read_text())
    executor = process_config(k8s_job_executor.config_schema.config_type, run_cfg["execution"]["config"])
    assert executor.success, executor.errors
    bad = process_config(k8s_job_executor.config_schema.config_type, {"max_concurrent": "four"})
    assert not bad.success  # the check can fail
    # the GPU request the LLM assets carry reaches the pod spec
    defs = build_definitions(Settings(Path(tempfile.mkdtemp()), PROJECT_ROOT / "config" / "datasets.yaml", "smoke"))
    op = defs.resolve_assets_def("ingredient_lora").node_def
    assert op.pool == "gpu"
    k8s = get_user_defined_k8s_config(op.tags)
    assert k8s.container_config["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_lora_training_through_dagster_pipes(tmp_path):
    settings = write_fixture(tmp_path)
    settings = Settings(settings.data_dir, settings.config_path, "smoke", train_pipes=True)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_dataset(defs, "synthetic", instance).success
    assert materialize_domain(defs, "shop", instance).success
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey("ingredient_lora")], partition_key="shop", instance=instance)
    assert result.success
    (ev,) = result.get_asset_materialization_events()
    md = {k: v.value for k, v in ev.materialization.metadata.items()}
    assert md["steps"] == 10 and md["tokens_per_s"] > 0 and len(md["loss_and_auc"]) == 2
    adapter = settings.data_dir / "adapters" / "ingredient" / "shop" / "adapter"
    assert md["adapter"] == str(adapter) and (adapter / "adapter_model.safetensors").stat().st_size > 0
    assert ev.materialization.tags["dagster/data_version"] == md["adapter_sha256"][:16]
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("pipes trainer: ingredient on shop" in m for m in logs)  # sent from the subprocess
    assert any("step 10" in m for m in logs)
