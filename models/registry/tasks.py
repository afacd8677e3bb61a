"""The task-kind registry: the two ways an LLM is asked to recommend here, each with the names of
what it makes (adapter folders, the cocktail's folder, its Dagster assets, its score file) and where
its implementation lives ("module:attribute", imported only when it runs). Light: names only.

- `pointwise`: CoLLM's Yes/No prompt, BCE on the Yes logit, AUC / UAUC / NDCG; its cocktail is our
  adaptation of RecCocktail (docs/protocols.md section 8);
- `listwise`: RecCocktail as published (section 7): history and 30 candidates, the answer generated,
  language-model loss on the answer, HR@k / NDCG@k by generation and by candidate likelihood.

Adding a task kind is one entry here (`register`) plus its implementation (a subclass of
`models.stages.task.Task`) and its tests (docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("base_spirit", "ingredient")  # the two adapters a cocktail mixes, in the merge methods' (a, b) order


@dataclass(frozen=True)
class TaskKind:
    """What one task kind makes and where its code is."""

    name: str
    description: str
    adapter_folders: dict[str, str]  # role -> folder under adapters/ (the ingredient's has a folder per domain)
    cocktail_folder: str  # under models/, one folder per domain
    assets: dict[str, str]  # "base_spirit", "ingredient", "cocktail", "scores" -> asset key
    # the same -> the profile stage it reads (models/profiles.py `Profile.reads`: part of its code version)
    stages: dict[str, str]
    scores_family: str  # scores/<family>.parquet
    # how its scores enter the report: "rows" (a score per test row and per candidate of a list, the
    # pointwise frames) or "lists" (each list's candidates, likelihoods and generation: a frame of lists
    # named after the task, beside the CF models on the same lists)
    report_as: str
    implementation: str  # "module:attribute" of its models.stages.task.Task
    group: str  # its assets' Dagster group
    descriptions: dict[str, str] = field(default_factory=dict)  # asset -> description (a default otherwise)


TASKS: dict[str, TaskKind] = {t.name: t for t in (
    TaskKind(
        "pointwise", "CoLLM's Yes/No prompt (BCE on the Yes logit); its cocktail is our adaptation of RecCocktail",
        {"base_spirit": "base_spirit", "ingredient": "ingredient"}, "cocktail",
        {"base_spirit": "base_spirit_lora", "ingredient": "ingredient_lora", "cocktail": "cocktail_model",
         "scores": "llm_scores"},
        {"base_spirit": "base_spirit", "ingredient": "ingredient", "cocktail": "cocktail", "scores": "llm_scores"},
        "llm", "rows", "models.stages.pointwise:POINTWISE", "llm",
        {"base_spirit": "One LoRA adapter trained on the train prompts of the general domains ({general}; without any "
                        "user of a cocktail domain), in PEFT format under adapters/base_spirit; metadata "
                        "`overlap/<target>/...` says what its rows share with each target (our pointwise adaptation "
                        "of RecCocktail's base spirit).",
         "ingredient": "The domain's ingredient LoRA, trained from the same base LLM on the domain's text-only prompts "
                       "(TALLRec / CoLLM step 1), in PEFT format under `adapters/ingredient/<domain>`.",
         "cocktail": "RecCocktail: the base spirit and the domain's ingredient mixed per layer and projection by "
                     "weights learned on unlabelled validation prompts (entropy of P(Yes), our pointwise form), the "
                     "learning rate and step picked on other validation rows, folded into one dense model under "
                     "`models/cocktail/<domain>/model`; merge.json holds every candidate and baseline.",
         "scores": "Yes-logit scores of the untrained LLM and of every merge method (base spirit only, ingredient only "
                   "= TALLRec, equal weights, task arithmetic, RecCocktail) on the evaluation sample (seeded users, "
                   "all of their test rows) and its first `ranking_users` users' candidate lists: scores/llm.parquet."}),
    TaskKind(
        "listwise", "RecCocktail as published: next-item selection among 30 candidates, the answer generated",
        {"base_spirit": "listwise_base_spirit", "ingredient": "listwise_ingredient"}, "listwise_cocktail",
        {"base_spirit": "listwise_base_spirit", "ingredient": "listwise_ingredient", "cocktail": "listwise_cocktail",
         "scores": "listwise_scores"},
        {"base_spirit": "listwise_base_spirit", "ingredient": "listwise_ingredient", "cocktail": "listwise_cocktail",
         "scores": "listwise_scores"},
        "listwise", "lists", "models.stages.reccocktail:LISTWISE", "reccocktail",
        {"base_spirit": "RecCocktail's base spirit as published: one LoRA on the listwise prompts of the general "
                        "domains ({general}; each user's validation sample, without any user of a cocktail domain), "
                        "under adapters/listwise_base_spirit; metadata `overlap/<target>/...` says what it shares "
                        "with each target.",
         "ingredient": "The domain's listwise ingredient LoRA (train lists; a few-shot budget on a cold-start domain), "
                       "from the same base LLM, under adapters/listwise_ingredient/<domain>.",
         "cocktail": "RecCocktail as published: per-module mixing weights learned by the Shannon entropy at the first "
                     "tokens of each generated answer item on unlabelled validation prompts, picked by NDCG@5 on "
                     "other validation lists (ours: the authors pick on test), folded into one dense model under "
                     "models/listwise_cocktail/<domain>/model, with every baseline (TIES, DARE by PEFT) in merge.json.",
         "scores": "Every merge method and the raw LLM on the evaluation sample's test lists (seeded users, the lists "
                   "of `ranking_candidates`, which the CF models rank too): greedy generation parsed on `||` (as "
                   "published) and the candidate-likelihood ranking (ours): scores/listwise.parquet."}),
)}


def register(task: TaskKind) -> TaskKind:
    """Add a task kind (its name must be new); returns it."""
    if task.name in TASKS:
        raise ValueError(f"a task kind named {task.name!r} is registered already")
    TASKS[task.name] = task
    return task
