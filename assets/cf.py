"""Domain-level CF assets (Dagster wiring; the models are models/cf/ and models/data/candidates.py):
seeded ranking candidates, then every registered CF model with its vectors (CIE sources) and its
scores on the test rows and candidate lists."""

import dagster as dg

from assets import _metadata as meta
from models.data import candidates
from models.registry import cf as cf_registry
from models.stages import cf as cf_stage
from models.cf import model as cf
from models.cf import neural, next_item, pairwise, sequential
from models.config import ProjectConfig
from models.data.workspace import Workspace
from models.core.files import write_parquet_atomic
from assets._partitions import domain_partitions
from assets._resources import ProjectResource

CODE_VERSION = meta.code_version(cf, neural, next_item, pairwise, sequential, cf_stage, candidates)


@meta.classify_failures
def ranking_candidates(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
    ev, ws = project.config.evaluation, Workspace(project.root)
    cands = candidates.sample_candidates(ws.read_split(context.partition_key), int(ev["ranking_negatives"]),
                                         int(ev["seed"]))
    out = ws.domain(context.partition_key) / "candidates.parquet"
    digest = write_parquet_atomic(cands, out)
    return dg.MaterializeResult(
        metadata={"dagster/row_count": cands.height, "negatives": int(ev["ranking_negatives"]),
                  "seed": int(ev["seed"]), "path": dg.MetadataValue.path(str(out)), "sha256": digest},
        data_version=dg.DataVersion(digest[:16]))


@meta.classify_failures
def cf_embeddings(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
    d, pcfg = context.partition_key, project.config
    md = cf_stage.fit_domain(Workspace(project.root), d, pcfg.cf_for(d), log=context.log.info,
                             next_item=pcfg.evaluation if pcfg.domains[d].split.protocol == "leave_one_out" else None)
    return dg.MaterializeResult(metadata=meta.metadata_values(md), data_version=dg.DataVersion(md["scores_sha256"][:16]))


def build_cf_assets(cfg: ProjectConfig) -> list:
    common = dict(partitions_def=domain_partitions(cfg), code_version=CODE_VERSION, retry_policy=meta.TRANSIENT_RETRY)
    cands = dg.asset(
        name="ranking_candidates", deps=["temporal_split"], kinds={"parquet"}, group_name="evaluation", **common,
        description="For every test row: its item plus `ranking_negatives` seeded negatives the user never "
                    "interacted with. Every method is ranked on these same lists.",
    )(ranking_candidates)
    embeddings = dg.asset(
        name="cf_embeddings", deps=["temporal_split", cands], kinds={"implicit", "pytorch"}, group_name="cf",
        pool="cpu_heavy", **common,
        description=f"The registered CF models ({', '.join(cf_registry.CF_MODELS)}), trained on train and tuned on valid. "
                    "Vectors with id maps in `domains/<d>/cf/<model>.npz`; test-row and candidate scores in "
                    "`domains/<d>/scores/cf.parquet`; on a leave-one-out domain also the next-item models and every "
                    "model's standing by full ranking and among 100 sampled negatives, with its top-10 list, in "
                    "`domains/<d>/scores/next_item.parquet`.",
    )(cf_embeddings)
    return [cands, embeddings]
