"""LoRA training out of process: `ingredient_lora` / `base_spirit_lora` with LLMREC_TRAIN_PIPES=1
start this module through Dagster Pipes (PipesSubprocessClient here; PipesK8sClient on Kubernetes,
see README "Operations"). It runs the same trainer as in process (assets.llm.train_adapter) and
sends its log lines and the adapter's materialization back to the Dagster run."""

from __future__ import annotations

from pathlib import Path

from dagster_pipes import open_dagster_pipes


def main() -> None:
    with open_dagster_pipes() as pipes:
        from assets.llm import JSON_KEYS, PATH_KEYS, train_adapter
        from orchestration.resources import ProjectResource

        ex = pipes.extras
        project = ProjectResource(data_dir=ex["data_dir"], config_path=ex["config_path"], profile=ex["profile"])
        pipes.log.info(f"pipes trainer: {ex['kind']} on {', '.join(ex['domains'])} into {ex['out']}")
        md = train_adapter(project, list(ex["domains"]), Path(ex["out"]), ex["kind"], log=pipes.log.info)
        pipes.report_asset_materialization(
            metadata={k: {"raw_value": v, "type": "path" if k in PATH_KEYS else "json" if k in JSON_KEYS else "__infer__"}
                      for k, v in md.items()},
            data_version=md["adapter_sha256"][:16])


if __name__ == "__main__":
    main()
