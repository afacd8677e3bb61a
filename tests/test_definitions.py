"""The code location: loads, validates with the dagster CLI, and its asset graph is what we expect."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.config import PROJECT_ROOT, ConfigError, Settings, load_config
from orchestration.definitions import build_definitions
from assets._partitions import DOMAIN_PARTITIONS

# A renamed or removed asset must be a visible diff here.
EXPECTED_ASSETS = {
    "raw_interactions": ("dataset", []),
    "raw_items": ("dataset", []),
    "landed_interactions": ("dataset", []),
    "interactions": ("dataset", ["landed_interactions", "raw_interactions", "raw_items"]),
    "domain_interactions": ("domain", ["interactions"]),
    "temporal_split": ("domain", ["domain_interactions"]),
    "ranking_candidates": ("domain", ["temporal_split"]),
    "cf_embeddings": ("domain", ["ranking_candidates", "temporal_split"]),
    "base_spirit_lora": ("none", ["temporal_split"]),
    "ingredient_lora": ("domain", ["temporal_split"]),
    "cocktail_model": ("domain", ["base_spirit_lora", "ingredient_lora", "temporal_split"]),
    "llm_scores": ("domain", ["base_spirit_lora", "cocktail_model", "ingredient_lora", "ranking_candidates",
                             "temporal_split"]),
    "collm_cie": ("domain", ["cf_embeddings", "cocktail_model", "ingredient_lora", "ranking_candidates"]),
    "listwise_base_spirit": ("none", ["temporal_split"]),
    "listwise_ingredient": ("domain", ["temporal_split"]),
    "listwise_cocktail": ("domain", ["listwise_base_spirit", "listwise_ingredient", "temporal_split"]),
    "listwise_scores": ("domain", ["listwise_base_spirit", "listwise_cocktail", "listwise_ingredient",
                                   "ranking_candidates", "temporal_split"]),
    "evaluation_report": ("domain", ["base_spirit_lora", "cf_embeddings", "collm_cie", "listwise_base_spirit",
                                     "listwise_scores", "llm_scores", "ranking_candidates", "temporal_split"]),
    "evaluation_summary": ("none", ["evaluation_report"]),
}


def test_asset_graph_snapshot(tmp_path):
    defs = build_definitions(Settings(tmp_path, PROJECT_ROOT / "config" / "datasets.yaml", "smoke"))
    graph = defs.resolve_asset_graph()
    cfg = load_config(PROJECT_ROOT / "config" / "datasets.yaml")
    got = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        pdef = node.partitions_def
        kind = ("none" if pdef is None else "domain" if pdef == DOMAIN_PARTITIONS
                else "dataset" if set(pdef.get_partition_keys()) == set(cfg.datasets) else "?")
        got[key.to_user_string()] = (kind, sorted(k.to_user_string() for k in node.parent_keys))
    assert got == EXPECTED_ASSETS
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {"quarantine_share_within_limit", "split_trainable", "report_complete", "metric_floors",
                      "no_regression", "beats_untrained", "below_chance", "degenerate", "no_candidate_named"}
    assert {s.name for s in defs.sensors} == {"landing", "domain_refresh", "cheap_automation", "llm_automation",
                                            "dead_run_reaper"}
    assert {j.name for j in defs.jobs} >= {"ingest_dataset", "ingest_landing", "prepare_domain", "evaluate_domain", "train_base_spirit",
                                          "evaluate_domain_llm", "summarize"}


def test_dagster_cli_finds_and_validates_the_code_location(tmp_path):
    env = {**os.environ, "LLMREC_DATA_DIR": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).parent / "dagster"
    out = subprocess.run([str(dagster), "definitions", "validate"], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr


@pytest.mark.parametrize("bad, message", [
    ("format: excel", "format='excel'"),
    ("split: {protocol: random}", "protocol='random'"),
    ("split: {protocol: month_window, train_slots: [5, 1]}", "train_slots"),
    ("split: {protocol: date_cutoff, start: 2017-01-01}", "needs 'train_end'"),
])
def test_config_errors_name_the_key(tmp_path, bad, message):
    base = {"format": "format: movielens_dat", "split": "split: {protocol: leave_one_out}"}
    base[bad.split(":")[0]] = bad
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "datasets:\n  d:\n    source: {path: .}\n    " + "\n    ".join(base.values())
        + "\ndomains:\n  x: {dataset: d}\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(cfg)


def test_missing_package_or_folder_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("datasets:\n  d:\n    format: movielens_dat\n    source: {package: no_such_pkg, path: x}\n"
                   "    split: {protocol: leave_one_out}\ndomains:\n  x: {dataset: d}\n")
    with pytest.raises(ConfigError, match="no_such_pkg.*not installed"):
        load_config(cfg)


def test_unknown_domain_dataset_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("datasets:\n  d:\n    format: movielens_dat\n    source: {path: .}\n"
                   "    split: {protocol: leave_one_out}\ndomains:\n  x: {dataset: nope}\n")
    with pytest.raises(ConfigError, match="domains.x.dataset='nope'"):
        load_config(cfg)


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_layers_hold():
    """assets/ is Dagster wiring (no function over 60 lines); models/ and sql/ never import Dagster;
    the Pipes trainer imports models/ only (and dagster_pipes, the other end of the pipe, and the
    standard library's os and pathlib)."""
    long = [f"{f.name}:{fn.lineno} {fn.name} ({fn.end_lineno - fn.lineno + 1} lines)"
            for f in sorted((PROJECT_ROOT / "assets").glob("*.py")) for fn in _functions(f)
            if fn.end_lineno - fn.lineno + 1 > 60]
    assert not long, long
    for f in [*(PROJECT_ROOT / "models").rglob("*.py"), *(PROJECT_ROOT / "sql").glob("*.py")]:
        assert not {n for n in _imports(f) if n.split(".")[0] == "dagster"}, f.name
    pipes = {n.split(".")[0] for n in _imports(PROJECT_ROOT / "orchestration" / "pipes_train.py")}
    assert pipes <= {"__future__", "os", "pathlib", "dagster_pipes", "models"}, pipes
