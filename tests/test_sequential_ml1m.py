"""The standard SASRec on the real ML-1M, leave-one-out, every user, by the SASRec paper's protocol
(the test item among 100 sampled negatives). The paper reports HR@10 0.8245 and NDCG@10 0.5905
after about 200 epochs; this test affords a few epochs on a 2-core CPU, so it asserts what that
budget reaches (docs/cf.md and the issue's note give the longer runs), and that SASRec already ranks
far above popularity and above chance on the same lists."""

import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from models.cf import next_item
from models.cf.interactions import Interactions
from models.cf.train import train_model
from models.config import load_config
from models.data import ingest, splits, warehouse
from models.metrics import ranking as metrics

pytestmark = pytest.mark.slow

EPOCHS = 10  # the budget this test affords (about 10 s an epoch here); the paper trains about 200


@pytest.fixture(scope="module")
def ml1m_loo() -> Interactions:
    cfg = load_config()
    dom = cfg.domains["ml1m_loo"]
    con = warehouse.connect(":memory:")
    ingest.ingest_dataset(con, cfg.datasets[dom.dataset])
    ingest.build_interactions(con, cfg.datasets[dom.dataset])
    splits.build_domain(con, dom)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "split.parquet"
        splits.build_split(con, "ml1m_loo", dom.split, out)
        return Interactions.from_split(pl.read_parquet(out))


def test_sasrec_on_100_negatives(ml1m_loo):
    data = ml1m_loo
    assert data.n_users == 6040 and data.parts["test"]["user"].size == 6040  # every user, one test item
    negatives = next_item.sampled_lists(data, "test", 100, seed=2023)
    found = {}
    for name, params in (("popularity", {}),
                         ("sasrec_next", {"max_epochs": EPOCHS, "eval_every": EPOCHS, "patience": 1})):
        model = train_model(name, data, params, seed=2023)
        st = next_item.standing(model.user_factors, model.item_factors, data, "test", negatives, 10, 2023)
        found[name] = (metrics.hit_rate_at_k(st.sampled, 10), metrics.ndcg_at_k(st.sampled, 10))
    hr, ndcg = found["sasrec_next"]
    pop_hr, pop_ndcg = found["popularity"]
    print(f"ML-1M leave-one-out, 100 negatives: sasrec_next after {EPOCHS} epochs HR@10 {hr:.4f} NDCG@10 {ndcg:.4f}; "
          f"popularity HR@10 {pop_hr:.4f} NDCG@10 {pop_ndcg:.4f} (paper: SASRec 0.8245 / 0.5905)")
    assert hr > pop_hr + 0.1 and ndcg > pop_ndcg + 0.05
    assert hr > 0.65 and ndcg > 0.40  # measured 0.6849 and 0.4260 (2026-12-06); chance is 10 / 101 and 0.04
    assert np.isclose(metrics.chance_level(101, "hr", 10), 10 / 101)
