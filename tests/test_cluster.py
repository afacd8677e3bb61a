"""The cluster path (docs/cluster.md) against what the code expects: the image installs the same pinned
dependencies as `make setup` and serves the code location's module; the Helm values name the same
module and location, mount the data volume where LLMREC_DATA_DIR points in the pods, launch runs with
K8sRunLauncher on Postgres, and keep the project's pools; the LLM steps' GPU requests follow the `gpu`
resource. No image is built and no chart rendered here (no container engine, no chart registry)."""

import os
import re
import subprocess
import sys

import yaml

from models.config import PROJECT_ROOT

VALUES = PROJECT_ROOT / "deploy" / "helm" / "values.yaml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"


def _make_variable(name: str) -> str:
    m = re.search(rf"^{name} \?= (.+)$", (PROJECT_ROOT / "Makefile").read_text(), flags=re.M)
    assert m, name
    return m.group(1).strip()


def test_the_image_pins_what_make_setup_installs_and_serves_the_code_location():
    text = DOCKERFILE.read_text()
    assert f"ARG TORCH_SPEC={_make_variable('TORCH_SPEC')}" in text
    assert f'ARG EMBEDDED="{_make_variable("EMBEDDED")}"' in text
    assert "pip install -q -e ." in text and "--no-deps $EMBEDDED" in text  # editable: config/ and sql/ stay put
    assert 'CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "orchestration.definitions"]' in text
    # a CPU and a CUDA build, chosen by a build argument
    assert "ARG VARIANT=cpu" in text and "FROM base-${VARIANT}" in text
    assert re.search(r"FROM \S+ AS base-cpu", text) and re.search(r"FROM nvidia/cuda:\S+ AS base-cuda", text)
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", ".git", ".dagster_home"} <= set(ignored)


def test_the_helm_values_fit_the_code_location():
    values = yaml.safe_load(VALUES.read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    tool = __import__("tomllib").loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    assert deployment["name"] == tool["code_location_name"] == "llmrec"  # the location's name, as under make ui
    assert deployment["dagsterApiGrpcArgs"] == ["-m", tool["module_name"]]
    assert values["dagster-user-deployments"]["enabled"] and deployment["includeConfigInLaunchedRuns"]["enabled"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    mount = {m["name"]: m["mountPath"] for m in deployment["volumeMounts"]}
    assert env["LLMREC_DATA_DIR"] == mount["llmrec-data"] == "/data"
    assert {v["name"] for v in deployment["volumes"]} == {"llmrec-data"}
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    assert "LLMREC_DATA_DIR=/data" in k8s["envVars"]
    assert {m["mountPath"] for m in k8s["volumeMounts"]} == {"/data"}
    assert values["postgresql"]["enabled"]
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    local = yaml.safe_load((PROJECT_ROOT / "deploy" / "local" / "dagster.yaml").read_text())
    assert values["concurrency"]["pools"]["defaultLimit"] == local["concurrency"]["pools"]["default_limit"]


def test_the_llm_steps_ask_for_the_gpus_of_the_gpu_resource():
    """GPU_TAGS follows LLMREC_GPU_PROCESSES when the code location loads: one GPU by default, the values'
    count on the cluster."""
    values = yaml.safe_load(VALUES.read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    processes = {e["name"]: e["value"] for e in deployment["env"]}["LLMREC_GPU_PROCESSES"]
    probe = ("from assets.llm import GPU_TAGS; "
             "print(GPU_TAGS['dagster-k8s/config']['container_config']['resources']['limits']['nvidia.com/gpu'])")
    for setting, expected in ((None, "1"), (processes, processes)):
        env = {k: v for k, v in os.environ.items() if k != "LLMREC_GPU_PROCESSES"}
        if setting is not None:
            env["LLMREC_GPU_PROCESSES"] = setting
        out = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip() == expected


def test_the_cluster_page_names_every_step():
    page = (PROJECT_ROOT / "docs" / "cluster.md").read_text()
    steps = re.findall(r"^## (\d+)\. (.+)$", page, flags=re.M)
    assert [int(n) for n, _ in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 5
    for name in ("Dockerfile", "deploy/helm/values.yaml", "K8sRunLauncher", "postgresql", "nvidia.com/gpu",
                 "LLMREC_GPU_PROCESSES", "deploy/k8s/run_config.yaml", "torchrun"):
        assert name in page, name
    assert "has **not** been built" in page and "**not** been rendered" in page  # says what was not run
