"""Model cards in the Hugging Face format (`README.md` with YAML front matter) for every adapter and
merged model, and adapter configs that name their base model portably.

PEFT writes an empty card template and records `base_model_name_or_path` as the absolute local path
the base was loaded from, so `AutoPeftModel` cannot find the base on another machine. Here the card
says what the folder is, which base it needs (by name and weights hash), what it was trained on and
under which terms, with which settings, how it scored on validation, and how to load it; the
adapter config names the base by its hub id where there is one (the embedded SmolLM2), else by the
model setting's name. Cards hold no timestamps: writing one again gives the same bytes, so the
folder's digest (which the cocktail's fingerprint reads) does not change on a rerun.
No Dagster here.
"""

from __future__ import annotations

import json
from pathlib import Path

from models.llm import loading as llm_mod

# model settings whose base has a public name another machine can load it by
HUB_IDS = {llm_mod.EMBEDDED: "HuggingFaceTB/SmolLM2-135M-Instruct"}


def portable_base(identity: dict) -> str:
    """The base model's name for configs and cards: its hub id where known, else the model
    setting's name (`tiny-llama-smoke`, or the folder name of a user's model)."""
    name = str(identity.get("name") or Path(str(identity.get("path", "base"))).name)
    return HUB_IDS.get(name, name)


def identity_of(llm) -> dict:
    """A loaded LLM's identity with the name of the folder it was loaded from (the model setting's
    name for the embedded and smoke models)."""
    return {"name": Path(llm.path).name, **llm.identity}


def make_portable(adapter: Path, identity: dict) -> None:
    """Point adapter_config.json's `base_model_name_or_path` at the portable name (the files PEFT
    wrote keep everything else)."""
    cfg_path = Path(adapter) / "adapter_config.json"
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = portable_base(identity)
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def data_terms(cfg, domains: list[str]) -> list[str]:
    """One line per dataset behind `domains`: its name, the domains, and its licence as configured."""
    if cfg is None:
        return [f"- domains {', '.join(domains)} (dataset terms: see the project config)"]
    by_ds: dict[str, list[str]] = {}
    for d in domains:
        by_ds.setdefault(cfg.domains[d].dataset, []).append(d)
    return [f"- `{ds}` (domains {', '.join(ds_domains)}): {cfg.datasets[ds].licence or 'terms not stated in the config'}"
            for ds, ds_domains in by_ds.items()]


def _figure(v) -> str:
    return "not measured" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _front_matter(base: str, library: str, tags: list[str]) -> list[str]:
    return ["---", f"base_model: {base}", f"library_name: {library}", "pipeline_tag: text-generation", "tags:",
            *[f"- {t}" for t in tags], "---", ""]


def _identity_lines(identity: dict) -> list[str]:
    return [f"- name: `{portable_base(identity)}` (model setting `{identity.get('name', '?')}`)",
            f"- weights sha256: `{identity.get('weights_sha256', '?')}`", ""]


def write_adapter_card(adapter: Path, *, title: str, what: str, identity: dict, domains: list[str], cfg,
                       rows: dict[str, int], settings: dict, validation: dict[str, float | int | str]) -> Path:
    """README.md for a PEFT adapter folder (and its config made portable). `rows`: what it trained and
    validated on (e.g. {"train prompts": 2000, "valid prompts": 64}); `validation`: the chosen
    checkpoint's validation figures. Test metrics live in the domain's evaluation report, the only
    reader of test labels."""
    adapter = Path(adapter)
    make_portable(adapter, identity)
    base = portable_base(identity)
    lines = _front_matter(base, "peft", ["recommendation", "lora", "llmrec"]) + [
        f"# {title}", "", what, "",
        "## Base model", "", *_identity_lines(identity),
        "## Training data", "", *data_terms(cfg, domains), "",
        *[f"- {k}: {v:,}" if isinstance(v, int) else f"- {k}: {v}" for k, v in rows.items()], "",
        "## Settings", "", "```json", json.dumps(settings, indent=2, sort_keys=True, default=str), "```", "",
        "## Validation", "", *[f"- {k}: {_figure(v)}" for k, v in validation.items()], "",
        "Test metrics: the domain's evaluation report (`reports/<domain>/report.md`), the only place test labels "
        "are read.", "",
        "## How to load", "", "```python", "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM", "",
        f"base = AutoModelForCausalLM.from_pretrained(\"{base}\")  # or the local folder of that base",
        "model = PeftModel.from_pretrained(base, \"path/to/this/folder\")", "```", ""]
    path = adapter / "README.md"
    path.write_text("\n".join(lines))
    return path


def write_merged_card(model_dir: Path, *, title: str, what: str, identity: dict, adapters: dict[str, str],
                      domains: list[str], cfg, settings: dict, validation: dict[str, float | int | str]) -> Path:
    """README.md for a merged dense model folder (transformers format): the base and the adapters it
    folds in (by folder digest), the merge settings and the selection figures."""
    model_dir = Path(model_dir)
    base = portable_base(identity)
    lines = _front_matter(base, "transformers", ["recommendation", "merged", "llmrec"]) + [
        f"# {title}", "", what, "",
        "## Base model", "", *_identity_lines(identity),
        "## Adapters folded in", "", *[f"- {name}: folder sha256 `{digest}`" for name, digest in adapters.items()], "",
        "## Data", "", *data_terms(cfg, domains), "",
        "## Merge settings", "", "```json", json.dumps(settings, indent=2, sort_keys=True, default=str), "```", "",
        "## Validation (selection)", "", *[f"- {k}: {_figure(v)}" for k, v in validation.items()], "",
        "Test metrics: the domain's evaluation report (`reports/<domain>/report.md`).", "",
        "## How to load", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        "model = AutoModelForCausalLM.from_pretrained(\"path/to/this/folder\")",
        "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")", "```", ""]
    path = model_dir / "README.md"
    path.write_text("\n".join(lines))
    return path
