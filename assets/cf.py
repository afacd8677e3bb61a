"""Domain-level CF assets: seeded ranking candidates, then popularity, ALS, BPR and MF with their
vectors (CIE sources later) and their scores on the test rows and candidate lists."""

import dagster as dg
import numpy as np
import polars as pl

from assets import _metadata as meta
from models import candidates, cf, data_prep, metrics
from models.config import ProjectConfig
from orchestration.partitions import domain_partitions
from orchestration.resources import ProjectResource

CODE_VERSION = meta.code_version(cf, candidates)


def domain_dir(project: ProjectResource, domain: str, *parts: str):
    return project.artifact_dir("domains", domain, *parts)


def read_split(project: ProjectResource, domain: str) -> pl.DataFrame:
    path = domain_dir(project, domain) / "split.parquet"
    if not path.exists():
        raise meta.fail(f"{path} is missing: materialize temporal_split for domain {domain!r} first")
    return pl.read_parquet(path)


def write_parquet_atomic(df: pl.DataFrame, path) -> str:
    """Write beside the final name, then rename: a reader never sees half a file. Returns sha256."""
    tmp = path.with_name(path.name + ".tmp")
    df.write_parquet(tmp)
    tmp.replace(path)
    return data_prep.file_sha256(path)


def split_sha256(project: ProjectResource, domain: str) -> str:
    """The content hash of the domain's split: score files carry it, so the report never pairs
    scores with the rows of a newer split."""
    return data_prep.file_sha256(domain_dir(project, domain) / "split.parquet")


def write_scores(path, rows: list[dict], split_sha: str) -> str:
    """Scores of one family of methods: (method, row, score, candidate_scores) and the sha256 of the
    split whose test rows `row` indexes; returns the file's sha256."""
    df = pl.DataFrame(rows, schema={"method": pl.Utf8, "row": pl.Int64, "score": pl.Float64,
                                    "candidate_scores": pl.List(pl.Float64)})
    return write_parquet_atomic(df.with_columns(pl.lit(split_sha).alias("split_sha256")), path)


def build_cf_assets(cfg: ProjectConfig) -> list:
    partitions = domain_partitions(cfg)

    @dg.asset(
        deps=["temporal_split"],
        partitions_def=partitions,
        code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY,
        kinds={"parquet"},
        group_name="evaluation",
        description="For every test row: its item plus `ranking_negatives` seeded negatives the user "
                    "never interacted with. Every method is ranked on these same lists.",
    )
    def ranking_candidates(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
        ev = project.config.evaluation
        split = read_split(project, context.partition_key)
        cands = candidates.sample_candidates(split, int(ev["ranking_negatives"]), int(ev["seed"]))
        out = domain_dir(project, context.partition_key) / "candidates.parquet"
        digest = write_parquet_atomic(cands, out)
        return dg.MaterializeResult(
            metadata={"dagster/row_count": cands.height, "negatives": int(ev["ranking_negatives"]),
                      "seed": int(ev["seed"]), "path": dg.MetadataValue.path(str(out)), "sha256": digest},
            data_version=dg.DataVersion(digest[:16]),
        )

    @dg.asset(
        deps=["temporal_split", ranking_candidates],
        partitions_def=partitions,
        code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY,
        kinds={"implicit", "pytorch"},
        group_name="cf",
        pool="cpu_heavy",
        description="Popularity, ALS and BPR (implicit) and CoLLM's BCE matrix factorisation, trained on "
                    "train and tuned on valid. Vectors with id maps in `domains/<d>/cf/<model>.npz`; "
                    "test-row and candidate scores in `domains/<d>/scores/cf.parquet`.",
    )
    def cf_embeddings(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
        domain = context.partition_key
        c = project.config.cf
        seed = int(c.get("seed", 2023))
        split, split_sha = read_split(project, domain), split_sha256(project, domain)
        data = cf.Interactions.from_split(split)
        cands = pl.read_parquet(domain_dir(project, domain) / "candidates.parquet").sort("row")
        index = {it: k for k, it in enumerate(data.item_ids)}
        cand_idx = np.array([[index[i] for i in row] for row in cands["candidates"]], dtype=np.int64)
        test_users = data.parts["test"]["user"]
        valid = data.parts["valid"]

        models = {name: cf.train_model(name, data, c.get(name), seed=seed, log=context.log.info)
                  for name in cf.CF_MODELS}
        rows, md = [], {}
        artifacts = {}
        for name, model in models.items():
            path = model.save(domain_dir(project, domain, "cf") / f"{name}.npz")
            artifacts[name] = {"path": str(path), "sha256": data_prep.file_sha256(path)}
            test_scores = model.score(test_users, data.parts["test"]["item"])
            cand_scores = np.einsum("nd,nkd->nk", model.user_factors[test_users], model.item_factors[cand_idx])
            rows += [{"method": name, "row": r, "score": float(test_scores[r]),
                      "candidate_scores": cand_scores[r].tolist()} for r in range(len(test_users))]
            md[f"{name}/valid_auc"] = round(metrics.auc(valid["label"], model.score(valid["user"], valid["item"])), 4)
            md[f"{name}/fit_s"] = round(model.info["fit_s"], 2)
            md[f"{name}/dim"] = int(model.user_factors.shape[1])
        mf_info = models["mf"].info
        md["mf/best_epoch"] = mf_info["best_epoch"]
        md["mf/epochs_run"] = mf_info["epochs_run"]
        curve = domain_dir(project, domain, "cf") / "mf_valid_auc.png"
        from models.report import plot_curve

        plot_curve([h["valid_auc"] for h in mf_info["valid_auc_curve"]], "epoch", "validation AUC",
                   f"MF on {domain}: best epoch {mf_info['best_epoch']}", curve)
        scores_path = domain_dir(project, domain, "scores") / "cf.parquet"
        digest = write_scores(scores_path, rows, split_sha)
        return dg.MaterializeResult(
            metadata={
                **md,
                "users": data.n_users, "items": data.n_items,
                "artifacts": dg.MetadataValue.json(artifacts),
                "scores_path": dg.MetadataValue.path(str(scores_path)),
                "scores_sha256": digest,
                "mf_valid_auc_plot": dg.MetadataValue.path(str(curve)),
            },
            data_version=dg.DataVersion(digest[:16]),
        )

    return [ranking_candidates, cf_embeddings]
