"""Each registry takes a new entry from outside, here from this test and no other file: an ingestion
format, a CF model, a merge method and a task kind. The dataset is read by the new format, the new
CF model trains beside the others, the new task kind gets its own assets in the Dagster graph (base
spirit, ingredient, cocktail, scores), its cocktail tries the new merge method, and the report shows
the new CF model and the new task's methods, the merge method's among them (docs/architecture.md
walks through the same steps)."""

import json

import dagster as dg
import numpy as np
import polars as pl
import yaml

from models.cf.interactions import Interactions
from models.cf.model import CFModel
from models.config import Settings
from models.registry import cf as cf_registry
from models.registry import formats, tasks
from models.registry import merge as merge_registry
from models.stages.pointwise import Pointwise
from orchestration.definitions import build_definitions
from orchestration.jobs import materialize_dataset, materialize_domain
from test_report import write_fixture


def fit_item_activity(data: Interactions, p: cf_registry.PopularityParams, seed: int, log=None) -> CFModel:
    """The toy CF model: each item's number of train rows, liked or not (every user's vector is [1])."""
    counts = np.bincount(data.parts["train"]["item"], minlength=data.n_items).astype(np.float32)
    ku, ki = data.in_train()
    return CFModel("item_activity", data.user_ids, data.item_ids, np.ones((data.n_users, 1), np.float32),
                   counts[:, None], ku, ki, {"model": "item_activity", "fit_s": 0.0})


class ToyTask(Pointwise):
    """The toy task kind: the Yes/No machinery under a name, folders, assets and a score file of its own."""

    name = "toy_task"


TOY_TASK = ToyTask()

TOY_FORMAT = formats.IngestFormat("toy_semicolon", "semicolon-separated events `who;what;stars;when;name`",
                                  files={"interactions": "events.txt*"},
                                  fields={"user": "who", "item": "what", "rating": "stars", "timestamp": "when",
                                          "item_id": "what", "title": "name"}, delim=";", text="';'-separated text")
TOY_CF = cf_registry.CFSpec("item_activity", "each item's number of train rows, liked or not",
                            cf_registry.PopularityParams, "test_registries:fit_item_activity")
TOY_MERGE = merge_registry.MergeMethod("quarter_base", "quarter_base", "W0 + (dA + 3 dB) / 4",
                                       lambda s, a, b: [{a: 0.25, b: 0.75}])
pointwise = tasks.TASKS["pointwise"]
TOY_KIND = tasks.TaskKind(
    "toy_task", "a toy task kind: the Yes/No machinery under its own names",
    {"base_spirit": "toy_base_spirit", "ingredient": "toy_ingredient"}, "toy_cocktail",
    {"base_spirit": "toy_base_spirit_lora", "ingredient": "toy_ingredient_lora", "cocktail": "toy_cocktail_model",
     "scores": "toy_scores"}, dict(pointwise.stages), "toy", "rows", "test_registries:TOY_TASK", "toy")


def _config(tmp_path) -> Settings:
    """The report fixture's events as a ';'-separated file in the toy format (its own column names), and
    the same events under other user ids as the general dataset (the base spirit's)."""
    settings = write_fixture(tmp_path)
    events = pl.read_csv(tmp_path / "events.csv")
    mine = events.rename({"user": "who", "item": "what", "when": "when"})
    mine.select("who", "what", "stars", "when", "name").write_csv(tmp_path / "events.txt", separator=";")
    events.with_columns(("g" + pl.col("user")).alias("user")).write_csv(tmp_path / "general.csv")
    cfg = yaml.safe_load(settings.config_path.read_text())
    table = cfg["datasets"]["synthetic"]
    cfg["datasets"] = {
        "synthetic": {"format": "toy_semicolon", "source": {"path": "events.txt"}, "label_threshold": 4,
                      "split": table["split"]},
        "general": {**table, "source": {"path": "general.csv"}}}
    cfg["domains"] = {"shop": {"dataset": "synthetic", "item_noun": "item", "role": "target", "task": "toy_task"},
                      "shop_all": {"dataset": "general", "item_noun": "item", "role": "general"}}
    cfg["settings"]["evaluation"]["floors"] = {}
    settings.config_path.write_text(yaml.safe_dump(cfg))
    return settings


def test_a_new_entry_in_each_registry_reaches_the_report(tmp_path):
    formats.FORMATS[TOY_FORMAT.name] = TOY_FORMAT
    cf_registry.register(TOY_CF)
    merge_registry.register(TOY_MERGE)
    tasks.register(TOY_KIND)
    try:
        settings = _config(tmp_path)
        defs = build_definitions(settings)
        graph = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
        assert set(TOY_KIND.assets.values()) <= graph  # the new task kind's assets are in the graph
        instance = dg.DagsterInstance.ephemeral()
        for ds in ("synthetic", "general"):
            assert materialize_dataset(defs, ds, instance).success
        for d in ("shop", "shop_all"):
            assert materialize_domain(defs, d, instance).success
        job = defs.resolve_implicit_global_asset_job_def()
        assert job.execute_in_process(asset_selection=[dg.AssetKey("toy_base_spirit_lora")], instance=instance,
                                      run_config={}).success
        selection = [dg.AssetKey(k) for k in ("ranking_candidates", "cf_embeddings", "toy_ingredient_lora",
                                              "toy_cocktail_model", "toy_scores", "evaluation_report")]
        assert job.execute_in_process(asset_selection=selection, partition_key="shop", instance=instance).success

        data = settings.data_dir
        # the format read the file; the cocktail tried the merge method; the task wrote its own files
        split = pl.read_parquet(data / "domains" / "shop" / "split.parquet")
        assert split.height > 0 and split["title"].str.starts_with("Item number").all()
        merged = json.loads((data / "models" / "toy_cocktail" / "shop" / "merge.json").read_text())
        assert "quarter_base" in [r["method"] for r in merged["results"]]
        assert (data / "adapters" / "toy_ingredient" / "shop" / "adapter" / "adapter_model.safetensors").exists()
        assert (data / "domains" / "shop" / "scores" / "toy.parquet").exists()
        # the report: the CF model on every row, the task's methods (the merge method's too) on the sample
        payload = json.loads((data / "reports" / "shop" / "metrics.json").read_text())
        assert "item_activity" in payload["metrics"]["all"]
        sample = payload["frames"]["sample"]["methods"]
        assert {"item_activity", "llm_untrained", "ingredient_tallrec", "quarter_base", "reccocktail"} <= set(sample)
        assert payload["metrics"]["sample"]["quarter_base"]["all"]["auc"]["n"] == payload["frames"]["sample"]["rows"]
        assert "toy_scores" in [x["asset"] for x in payload["lineage"]]
    finally:
        formats.FORMATS.pop(TOY_FORMAT.name, None)
        cf_registry.CF_MODELS.pop(TOY_CF.name, None)
        merge_registry.MERGE_METHODS.pop(TOY_MERGE.name, None)
        tasks.TASKS.pop(TOY_KIND.name, None)
