"""Training one LoRA adapter of any task kind: the base spirit (on the general domains, without any
user of a cocktail domain) or a domain's ingredient. The task kind (models/stages/task.py) gives the
examples, the objective and what the adapter is; this module trains it, draws its validation curve,
writes its card and its record, and for the base spirit the rows it trained on and their overlap
with each cocktail domain (models/data/base_spirit.py). The Dagster assets call it in process;
orchestration/pipes_train.py calls it in a subprocess. No Dagster here."""

from __future__ import annotations

import json
from typing import Callable

from models.config import ProjectConfig
from models.core import fingerprint
from models.core.plots import plot_curve
from models.data import base_spirit
from models.data.workspace import Workspace
from models.llm import cards
from models.llm import trainer
from models.profiles import Profile
from models.stages.common import load_base
from models.stages.mixing import adapter_dir
from models.stages.task import task as task_of


def train_adapter(ws: Workspace, cfg: ProjectConfig, domains: list[str], role: str, task: str, prof: Profile,
                  log: Callable[[str], None] = print) -> dict:
    """Train `task`'s `role` adapter (`base_spirit` on the general `domains`, or `ingredient` on one
    domain) into its folder; returns its metadata (paths as Path objects)."""
    impl = task_of(task)
    prof = impl.profile(prof)
    llm = load_base(ws, prof)
    out = adapter_dir(ws, role, task, None if role == "base_spirit" else domains[0])
    data = impl.training_data(ws, cfg, domains, role, prof, llm)
    c = impl.train_config(prof, role)
    unit, metric = impl.unit, impl.objective.metric
    log(f"{impl.title_prefix}{role}: {len(data.train)} training {unit} from {', '.join(domains)}; "
        f"validating on {len(data.valid)}")
    result = trainer.train(llm, data.train, data.train_targets, data.valid, data.valid_targets, out, c, log=log,
                           objective=impl.objective)
    if trainer.rank() != 0:  # under torchrun rank 0 writes the adapter's files and reports them
        return {"rank": trainer.rank(), "steps": result.steps}
    curve = plot_curve([h[metric] for h in result.history], f"evaluation (every {c.eval_every} steps)",
                       impl.metric_label, f"{out.name}: best {result.best_valid:.4f} at step {result.best_step}",
                       out / f"{metric}.png")
    adapter = out / "adapter"
    cards.write_adapter_card(
        adapter, title=f"{impl.title_prefix}{role.replace('_', ' ')} LoRA ({', '.join(domains)})",
        what=impl.adapter_what[role], identity=cards.identity_of(llm), domains=list(domains), cfg=cfg,
        rows={f"train {unit}": len(data.train), f"valid {unit}": len(data.valid)}, settings=c.model_dump(mode="json"),
        validation={f"best {impl.metric_label}": round(result.best_valid, 4), "at step": result.best_step,
                    "steps run": result.steps, f"untrained LLM's {impl.metric_label}": result.untrained_valid})
    record = {"domains": list(domains), "kind": role, "task": task, "model": llm.identity,
              "config": c.model_dump(mode="json"), "result": result.__dict__,
              "rows_dropped_as_target_users": data.dropped}
    md = {}
    if role == "base_spirit":
        base_spirit.save_training_rows(out, cfg, data.used)
        record["overlap"] = base_spirit.overlaps(ws, cfg, out.name)
        md = base_spirit.overlap_metadata(record["overlap"], log)
    (out / "training.json").write_text(json.dumps(record, indent=2, default=str))
    return {**md, "domains": ", ".join(domains), f"train_{unit}": len(data.train), f"valid_{unit}": len(data.valid),
            "rows_dropped_as_target_users": data.dropped, "model": str(llm.path),
            "model_weights_sha256": llm.identity["weights_sha256"], "steps": result.steps,
            "steps_run": result.steps_run, "resumed_from_step": result.resumed_from,
            "reused_finished_adapter": result.reused, "fingerprint": result.fingerprint, "stopped": result.stopped,
            f"best_{metric}": round(result.best_valid, 4), "best_step": result.best_step,
            f"untrained_{metric}": None if result.untrained_valid is None else round(result.untrained_valid, 4),
            "tokens_per_s": round(result.tokens_per_s, 1), "world_size": result.world_size, impl.history_key: result.history,
            "train_settings": c.model_dump(mode="json"), f"{metric}_plot": curve, "adapter": adapter,
            "adapter_sha256": fingerprint.folder_digest(adapter)}
