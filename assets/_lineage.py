"""What decides an LLM asset's result besides its upstream data: its code (every models/ module it
reaches), the resolved model (name, path, weights hash), the profile settings its stage reads and
the torch / transformers / peft versions. They make up its Dagster code version, so a change of any
of them marks exactly the assets it affects stale (and, through their new data versions, what
depends on them)."""

from __future__ import annotations

import importlib.metadata
import inspect
import sys
from dataclasses import dataclass
from types import ModuleType

from models.core import fingerprint
from models.llm import loading as llm
from models.config import Settings
from models.profiles import Profile, get_profile

LIBRARIES = ("torch", "transformers", "peft")


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def models_closure(*modules: ModuleType) -> list[ModuleType]:
    """The given modules and every `models.*` module they reach through their imports, sorted by name."""
    seen: dict[str, ModuleType] = {}
    todo = list(modules)
    while todo:
        m = todo.pop()
        if m.__name__ in seen:
            continue
        seen[m.__name__] = m
        for v in vars(m).values():
            name = v.__name__ if isinstance(v, ModuleType) else getattr(v, "__module__", None)
            if isinstance(name, str) and name.startswith("models.") and name not in seen and name in sys.modules:
                todo.append(sys.modules[name])
    return [seen[k] for k in sorted(seen)]


@dataclass(frozen=True)
class LLMLineage:
    profile_name: str
    profile: Profile
    model: dict  # models.llm.loading.model_identity, or the reason it could not be resolved
    libraries: dict

    @classmethod
    def from_settings(cls, settings: Settings) -> "LLMLineage":
        prof = get_profile(settings.profile)
        try:
            model = llm.model_identity(prof.model, settings.data_dir / "models")
        except (FileNotFoundError, OSError) as exc:
            # the code location still loads; the LLM assets fail at run time with this message
            model = {"name": prof.model, "unresolved": str(exc)}
        return cls(settings.profile, prof, model, library_versions())

    def code_version(self, stage: str, *modules: ModuleType) -> str:
        code = {m.__name__: fingerprint.digest(inspect.getsource(m)) for m in models_closure(*modules)}
        return fingerprint.digest({"code": code, "model": self.model, "settings": self.profile.reads(stage),
                                   "libraries": self.libraries})[:16]


def git_commit(root) -> str:
    """The project's commit (with `+uncommitted changes` when the tree differs), or why it is unknown."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + (" +uncommitted changes" if dirty else "")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"


def environment(root) -> dict:
    """Where the numbers were computed: ML library versions, the LLM device and dtype, Python, git."""
    import platform

    import torch

    dev, dtype = llm.pick_device("auto")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    return {**library_versions(), "python": platform.python_version(), "llm_device": f"{dev.type} ({name})",
            "llm_dtype": str(dtype).removeprefix("torch."), "torch_threads": torch.get_num_threads(),
            "git_commit": git_commit(root)}
