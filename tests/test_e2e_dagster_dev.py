"""End to end with the real services: `dagster dev` (webserver and daemon) on 127.0.0.1, a run
launched through the GraphQL API, a file dropped in the landing folder that the sensor ingests,
the domain refresh and the eager automation that follow it, and the evaluation-report and summary
asset pages rendered by headless Chromium into screenshots (tests/artifacts/evaluation_report.png,
evaluation_report_markdown.png with the report's Markdown opened and its ROC plot in view,
evaluation_summary_markdown.png)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest
import yaml

from models.config import PROJECT_ROOT
from test_report import write_fixture

pytestmark = pytest.mark.slow
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dagster:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}"

    def gql(self, query: str, variables: dict | None = None) -> dict:
        req = urllib.request.Request(f"{self.url}/graphql", data=json.dumps(
            {"query": query, "variables": variables or {}}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            body = json.loads(r.read())
        assert "errors" not in body, body
        return body["data"]

    def launch(self, job: str, partition: str | None = None) -> str:
        data = self.gql("""mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
            __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
            ... on RunConfigValidationInvalid { errors { message } } } }""",
                        {"p": {"selector": {"repositoryLocationName": "llmrec", "repositoryName": "__repository__",
                                            "jobName": job},
                               "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]
                                                     if partition else []}}})
        assert data["launchRun"]["__typename"] == "LaunchRunSuccess", data
        return data["launchRun"]["run"]["runId"]

    def runs(self, job: str) -> list[dict]:
        data = self.gql("""query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs {
            results { runId status tags { key value } } } } }""", {"f": {"pipelineName": job}})
        return data["runsOrError"]["results"]

    def wait_for(self, job: str, count: int = 1, timeout: float = 420) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs(job)
            done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
            if len(done) >= count:
                assert all(r["status"] == "SUCCESS" for r in done), runs
                return done
            time.sleep(3)
        raise AssertionError(f"no finished {job} run within {timeout} s: {self.runs(job)}")


def dagster_env(settings, tmp_path: Path, **extra: str) -> dict:
    """The environment `make ui` gives `dagster dev` (a DAGSTER_HOME with the project's dagster.yaml),
    pointed at a fixture's config and data."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(PROJECT_ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    return {**os.environ, "DAGSTER_HOME": str(home), "LLMREC_DATA_DIR": str(settings.data_dir),
            "LLMREC_CONFIG": str(settings.config_path), "LLMREC_PROFILE": "smoke",
            "LLMREC_LANDING_DIR": str(tmp_path / "landing"), "LLMREC_LANDING_INTERVAL_S": "5",
            "LLMREC_LANDING_SETTLE_S": "2", "LLMREC_AUTOMATION_INTERVAL_S": "5", "HF_HUB_OFFLINE": "1", **extra}


@contextmanager
def dagster_dev(env: dict, log_path: Path):
    """`dagster dev` (webserver and daemon) as `make ui` starts it, in the project root (so the code
    location is pyproject.toml's `llmrec`), on a free port; yields the GraphQL client once the code
    location has loaded, and stops the whole process group afterwards."""
    port = _free_port()
    log = log_path.open("w")
    # its own session: the webserver, daemon and code server are stopped together by this PID's group
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = Dagster(port)
    deadline = time.monotonic() + 240
    try:
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                status = client.gql("{ workspaceOrError { ... on Workspace { locationEntries { name "
                                    "locationOrLoadError { __typename } } } } }")
                entries = status["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["locationOrLoadError"] and \
                        entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "dagster dev did not come up in 240 s"
            time.sleep(2)
        yield client
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def ui(tmp_path):
    settings = write_fixture(tmp_path)
    with dagster_dev(dagster_env(settings, tmp_path), tmp_path / "dagster_dev.log") as client:
        yield client, settings, tmp_path / "landing"


def test_ui_graphql_sensor_automation_and_report_page(ui):
    client, settings, landing = ui
    # 1. a materialization launched through the GraphQL API, as the UI's "Materialize" does
    client.launch("ingest_dataset", "synthetic")
    client.wait_for("ingest_dataset")
    # 2. a new interaction file in the landing folder: the sensor ingests it, the domain refresh
    #    re-splits the domain it touched, and the eager automation rebuilds candidates, CF and report
    (landing / "synthetic").mkdir(parents=True)
    new = pl.DataFrame([("u1", "i2", 5, 1_620_000_000), ("u2", "i4", 2, 1_620_000_100)],
                       schema=["user", "item", "stars", "when"], orient="row")
    new.write_csv(landing / "synthetic" / "new_ratings.csv.part")
    (landing / "synthetic" / "new_ratings.csv.part").rename(landing / "synthetic" / "new_ratings.csv")
    (run,) = client.wait_for("ingest_landing")
    assert {"key": "llmrec/landing_files", "value": "new_ratings.csv"} in run["tags"]
    client.wait_for("prepare_domain")
    report = settings.data_dir / "reports" / "shop" / "report.md"
    deadline = time.monotonic() + 420
    while not report.exists():
        assert time.monotonic() < deadline, "the eager automation did not build the report"
        time.sleep(5)
    automation = [r for r in client.runs("__ASSET_JOB") if r["status"] in ("SUCCESS", "FAILURE")]
    deadline = time.monotonic() + 120
    while not any(r["status"] == "SUCCESS" for r in automation):
        assert time.monotonic() < deadline, automation
        time.sleep(3)
        automation = [r for r in client.runs("__ASSET_JOB") if r["status"] in ("SUCCESS", "FAILURE")]
    assert all(r["status"] == "SUCCESS" for r in automation), automation
    # 3. the evaluation-report asset page in headless Chromium
    url = f"{client.url}/assets/evaluation_report?partition=shop"
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        dom = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=30000",
                              "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
        # the asset page with the report's numbers and its passed gates (not an error or a pop-up)
        assert "evaluation_report" in dom and "popularity/all/auc" in dom and "Latest check results" in dom, \
            dom[-2000:]
        # the page leads with the report (its Markdown link) and the metrics table (a rendered table with its
        # schema link and columns), then the few loose numbers
        assert dom.index("Show Markdown") < dom.index("Show schema") < dom.index("user_ndcg") \
            < dom.index("popularity/all/auc"), dom[-3000:]
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "evaluation_report.png"
        shot.unlink(missing_ok=True)
        subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=30000",
                        "--window-size=1600,1200", f"--screenshot={shot}", url], capture_output=True, timeout=180)
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    # 4. the report's Markdown opened on the asset page draws its plots (ROC, metrics, paired forest)
    assert _markdown_screenshot(url, "report", "roc", ARTIFACTS / "evaluation_report_markdown.png") >= 2
    # 5. the cross-domain summary, materialized through the GraphQL API, with its heat map drawn
    client.launch("summarize")
    client.wait_for("summarize")
    assert _markdown_screenshot(f"{client.url}/assets/evaluation_summary", "summary", "summary",
                                ARTIFACTS / "evaluation_summary_markdown.png") >= 1


def _markdown_screenshot(url: str, key: str, image_alt: str, shot: Path) -> int:
    """Open an asset page in headless Chromium driven over the DevTools protocol, click the
    `[Show Markdown]` of metadata entry `key`, scroll the image whose alt text is `image_alt` into view
    and save a screenshot. Returns how many inline PNG images the opened Markdown rendered (loaded,
    with a width)."""
    import websocket

    port = _free_port()
    profile = tempfile.mkdtemp(prefix="chromium-cdp-")
    proc = subprocess.Popen([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                             "--window-size=1600,1200", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [t for t in json.loads(r.read()) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Chromium's DevTools endpoint did not come up"
            time.sleep(0.5)
        ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60)
        ids = iter(range(1, 10_000))

        def call(method: str, **params):
            n = next(ids)
            ws.send(json.dumps({"id": n, "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == n:
                    return msg.get("result", {})

        def js(expr: str):
            return call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True).get(
                "result", {}).get("value")

        def until(expr: str, what: str, timeout: float = 90):
            end = time.monotonic() + timeout
            while not js(expr):
                assert time.monotonic() < end, f"{what} within {timeout:.0f} s on {url}"
                time.sleep(1)

        call("Page.enable")
        call("Page.navigate", url=url)
        # the metadata table's row of `key`, and its "[Show Markdown]" link
        row_link = (f"Array.from(document.querySelectorAll('tr')).filter(tr => tr.innerText.trim().startsWith({key!r}))"
                    ".map(tr => Array.from(tr.querySelectorAll('*')).find(e => e.children.length === 0 && "
                    "e.innerText && e.innerText.includes('Show Markdown'))).find(Boolean)")
        until(f"!!({row_link})", f"the metadata entry {key!r} with its [Show Markdown] link")
        js(f"({row_link}).click()")
        images = ("Array.from(document.images).filter(i => i.src.startsWith('data:image/png') && i.complete && "
                  "i.naturalWidth > 0)")
        until(f"{images}.length > 0", "an inline PNG in the opened Markdown")
        js(f"({images}.find(i => i.alt === {image_alt!r}) || {images}[0]).scrollIntoView({{block: 'center'}})")
        time.sleep(1)
        shot.write_bytes(__import__("base64").b64decode(call("Page.captureScreenshot", format="png")["data"]))
        count = js(f"{images}.length")
        ws.close()
        return int(count)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert found, "headless Chromium is not installed: `apt-get install chromium` (.ci/run does)"
    return found


# the backfill command of docs/operations.md, run below exactly as written
BACKFILL = "dagster job backfill -j prepare_domain --all --noprompt"
BACKFILL_DOMAINS = 10


def test_the_documented_backfill_runs_every_domain_through_make_uis_daemon(tmp_path):
    """docs/operations.md's `dagster job backfill` from the project root while `dagster dev` runs as
    `make ui` starts it: the CLI loads the code location from pyproject.toml under the name `llmrec`,
    the daemon's name for it, so the queued runs are dequeued and launched (under `-m
    orchestration.definitions` they carried that name as their location and all failed at dequeue).
    The domain partitions exist before any sensor tick: the code location's load adds them."""
    assert BACKFILL in (PROJECT_ROOT / "docs" / "operations.md").read_text()
    settings = write_fixture(tmp_path)
    cfg = yaml.safe_load(settings.config_path.read_text())
    template = cfg["domains"].pop("shop")
    cfg["domains"] = {f"shop{i:02d}": dict(template) for i in range(BACKFILL_DOMAINS)}
    cfg["settings"]["evaluation"]["floors"] = {}
    settings.config_path.write_text(yaml.safe_dump(cfg))
    # no automation or landing ticks beyond the first: this test is about the backfill's runs only
    env = dagster_env(settings, tmp_path, LLMREC_AUTOMATION_INTERVAL_S="3600", LLMREC_LANDING_INTERVAL_S="3600")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the venv's dagster, as after `activate`
    with dagster_dev(env, tmp_path / "dagster_dev.log") as client:
        client.launch("ingest_dataset", "synthetic")
        client.wait_for("ingest_dataset")
        cli = subprocess.run(BACKFILL.split(), cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-3000:]
        assert "Traceback" not in cli.stderr, cli.stderr[-3000:]
        runs = client.wait_for("prepare_domain", count=BACKFILL_DOMAINS, timeout=900)
    assert len(runs) == BACKFILL_DOMAINS  # every one SUCCESS (wait_for asserts it)
    partitions = sorted(t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition")
    assert partitions == sorted(cfg["domains"])
    for d in cfg["domains"]:
        assert (settings.data_dir / "domains" / d / "split.parquet").is_file()
