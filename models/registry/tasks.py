"""The task-kind registry: the two ways an LLM is asked to recommend here, each with the names of
what it makes (adapter folders, the cocktail's folder, its Dagster assets, its score file) and where
its implementation lives ("module:attribute", imported only when it runs). Light: names only.

- `pointwise`: CoLLM's Yes/No prompt, BCE on the Yes logit, AUC / UAUC / NDCG; its cocktail is our
  adaptation of RecCocktail (docs/protocols.md section 8);
- `listwise`: RecCocktail as published (section 7): history and 30 candidates, the answer generated,
  language-model loss on the answer, HR@k / NDCG@k by generation and by candidate likelihood.

Adding a task kind is one entry here (`register`) plus its implementation (a subclass of
`models.stages.tasks.Task`) and its tests (docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("base_spirit", "ingredient")  # the two adapters a cocktail mixes, in the merge methods' (a, b) order


@dataclass(frozen=True)
class TaskKind:
    """What one task kind makes and where its code is."""

    name: str
    description: str
    adapter_folders: dict[str, str]  # role -> folder under adapters/ (the ingredient's has a folder per domain)
    cocktail_folder: str  # under models/, one folder per domain
    assets: dict[str, str]  # "base_spirit", "ingredient", "cocktail", "scores" -> asset key
    scores_family: str  # scores/<family>.parquet
    # how its scores enter the report: "rows" (a score per test row and per candidate of a list, the
    # pointwise frames) or "lists" (each list's candidates, likelihoods and generation: a frame of lists
    # named after the task, beside the CF models on the same lists)
    report_as: str
    implementation: str  # "module:attribute" of its models.stages.tasks.Task
    # the shipped tasks' asset groups and run-config stage names are theirs; a new one gets its name
    stage_prefix: str = ""


TASKS: dict[str, TaskKind] = {t.name: t for t in (
    TaskKind("pointwise", "CoLLM's Yes/No prompt (BCE on the Yes logit); its cocktail is our adaptation of RecCocktail",
             {"base_spirit": "base_spirit", "ingredient": "ingredient"}, "cocktail",
             {"base_spirit": "base_spirit_lora", "ingredient": "ingredient_lora", "cocktail": "cocktail_model",
              "scores": "llm_scores"}, "llm", "rows", "models.stages.tasks:POINTWISE"),
    TaskKind("listwise", "RecCocktail as published: next-item selection among 30 candidates, the answer generated",
             {"base_spirit": "listwise_base_spirit", "ingredient": "listwise_ingredient"}, "listwise_cocktail",
             {"base_spirit": "listwise_base_spirit", "ingredient": "listwise_ingredient",
              "cocktail": "listwise_cocktail", "scores": "listwise_scores"}, "listwise", "lists",
             "models.stages.tasks:LISTWISE", stage_prefix="listwise_"),
)}


def register(task: TaskKind) -> TaskKind:
    """Add a task kind (its name must be new); returns it."""
    if task.name in TASKS:
        raise ValueError(f"a task kind named {task.name!r} is registered already")
    TASKS[task.name] = task
    return task
