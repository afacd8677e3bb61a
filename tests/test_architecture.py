"""The structure the import contracts do not see: the settings and registries load without the heavy
libraries, and no module of models/ hides an import of the project inside a function (unless
.importlinter lists it with its reason). `lint-imports` (the contracts themselves) and ruff run in
`make test` beside pytest."""

import ast
import configparser
import json
import subprocess
import sys

from models.config import PROJECT_ROOT

HEAVY = ("torch", "transformers", "peft", "implicit", "matplotlib")
LIGHT = ("models.config", "models.profiles", "models.registry.cf", "models.registry.collm", "models.registry.formats",
         "models.registry.merge", "models.registry.methods", "models.registry.published", "models.registry.tasks")


def test_the_settings_and_registries_load_without_the_heavy_libraries():
    code = ("import json, sys\n" + "".join(f"import {m}\n" for m in LIGHT)
            + "import models.config as c, models.profiles as p\n"
            + "c.load_config(None); p.load_profiles()\n"
            + f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _allowed() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(PROJECT_ROOT / ".importlinter")
    return dict(parser["llmrec:function-local-imports"]) if parser.has_section("llmrec:function-local-imports") else {}


def _project_module(node: ast.AST) -> str | None:
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("models", "sql"):
        return node.module
    if isinstance(node, ast.Import):
        return next((a.name for a in node.names if a.name.split(".")[0] in ("models", "sql")), None)
    return None


def test_no_function_hides_an_import_of_the_project():
    allowed = _allowed()
    found = []
    for path in sorted((PROJECT_ROOT / "models").rglob("*.py")):
        module = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    target = _project_module(node)
                    if target and f"{module} -> {target}" not in allowed:
                        found.append(f"{module}:{node.lineno} imports {target} inside {fn.name}")
    assert not found, found
    # every allowed entry says why (a heavy optional dependency it defers)
    assert all(reason.strip() for reason in allowed.values())


def test_the_check_finds_a_hidden_import(tmp_path):
    """The AST walk above sees an import placed inside a function."""
    tree = ast.parse("def f():\n    from models.core import files\n    return files\n")
    fn = tree.body[0]
    assert [_project_module(n) for n in ast.walk(fn) if _project_module(n)] == ["models.core"]
