"""LoRA training out of process: `ingredient_lora` / `base_spirit_lora` with LLMREC_TRAIN_PIPES=1
start this module through Dagster Pipes (PipesSubprocessClient here; PipesK8sClient on Kubernetes,
see README "Operations"). It runs the same trainer as in process (models.stages.adapters.train_adapter,
with the run's effective profile) and sends its log lines and the adapter's materialization back to
the Dagster run. It imports models/ only."""

from __future__ import annotations

from pathlib import Path

from dagster_pipes import open_dagster_pipes


def _typed(v):
    """A metadata value as Dagster Pipes carries it."""
    if isinstance(v, Path):
        return {"raw_value": str(v), "type": "path"}
    if isinstance(v, (list, dict, tuple)):
        return {"raw_value": v, "type": "json"}
    if v is None:
        return {"raw_value": None, "type": "null"}
    return {"raw_value": v, "type": "__infer__"}


def main() -> None:
    with open_dagster_pipes() as pipes:
        from models.stages.adapters import train_adapter
        from models.config import load_config
        from models.profiles import Profile
        from models.data.workspace import Workspace

        ex = pipes.extras
        pipes.log.info(f"pipes trainer: {ex['kind']} on {', '.join(ex['domains'])} ({ex['task']} task)")
        md = train_adapter(Workspace(Path(ex["data_dir"])), load_config(Path(ex["config_path"])), list(ex["domains"]),
                           ex["kind"], ex["task"], Profile.model_validate(ex["profile"]), log=pipes.log.info)
        pipes.report_asset_materialization(metadata={k: _typed(v) for k, v in md.items()},
                                           data_version=md["adapter_sha256"][:16])


if __name__ == "__main__":
    main()
