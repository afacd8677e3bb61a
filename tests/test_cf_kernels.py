"""The CF models' own kernels against torch's: LightGCN's symmetric CSR propagation (values and
gradients as torch.sparse.mm on COO) and SASRec's dropout (torch's distribution and scaling)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from models.cf import interactions as cf_data
from models.cf import neural as cf_neural
from models.cf import train as cf_train


def test_symmetric_csr_propagation_equals_torch_sparse_mm_values_and_gradients():
    rng = np.random.default_rng(0)
    r = sp.random(40, 25, density=0.2, random_state=1, format="csr", dtype=np.float32)
    adj = sp.bmat([[None, r], [r.T, None]], format="csr")
    coo = adj.tocoo()
    ref_graph = torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data, coo.shape).coalesce()
    csr = torch.sparse_csr_tensor(adj.indptr.astype(np.int64), adj.indices.astype(np.int64), adj.data, adj.shape)
    x0 = torch.from_numpy(rng.normal(size=(65, 8)).astype(np.float32))
    w = torch.from_numpy(rng.normal(size=(65, 8)).astype(np.float32))
    outs, grads = [], []
    for spmm in (lambda x: torch.sparse.mm(ref_graph, x), lambda x: cf_neural._SymmetricSpMM.apply(csr, x)):
        x = x0.clone().requires_grad_(True)
        y = spmm(spmm(x))  # two layers, as LightGCN
        (y * w).sum().backward()
        outs.append(y.detach())
        grads.append(x.grad)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_sasrec_dropout_has_torchs_distribution_and_scaling():
    torch.manual_seed(0)
    x = torch.ones(1_000_000, requires_grad=True)
    y = cf_neural._dropout(x, 0.2, True)
    kept = y.detach() != 0
    # 1e6 draws: the kept share within 5 standard deviations (0.002) of 0.8
    assert abs(float(kept.float().mean()) - 0.8) < 0.002
    assert torch.allclose(y.detach()[kept], torch.tensor(1.25))
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept) and torch.allclose(x.grad[kept], torch.tensor(1.25))
    assert float(cf_neural._dropout(x, 0.5, True).detach().ne(0).float().mean()) == pytest.approx(0.5, abs=0.002)
    assert cf_neural._dropout(x, 0.2, False) is x and cf_neural._dropout(x, 0.0, True) is x
    torch.manual_seed(1)
    a = cf_neural._dropout(x, 0.2, True)
    torch.manual_seed(1)
    assert torch.equal(a, cf_neural._dropout(x, 0.2, True))  # seeded by torch's generator, as nn.Dropout


def test_every_cf_model_gives_the_same_vectors_for_the_same_seed():
    """A report rerun on the same split must show the same numbers (the regression gate compares
    them): implicit's BPR is Hogwild SGD, so it trains on one thread; ALS and the torch models are
    deterministic as they are."""
    import polars as pl

    rng = np.random.default_rng(3)
    n = 3000
    users, items = rng.integers(0, 120, n), rng.integers(0, 80, n)
    part = np.where(np.arange(n) < 2400, "train", np.where(np.arange(n) < 2700, "valid", "test"))
    split = pl.DataFrame({"user_id": [f"u{u}" for u in users], "item_id": [f"i{i}" for i in items],
                          "label": (rng.random(n) < 0.6).astype(np.int64), "ts": np.arange(n), "split": part})
    data = cf_data.Interactions.from_split(split)
    for name in ("als", "bpr", "mf"):
        params = {"mf": {"max_epochs": 5, "dim": 8}}.get(name, {})
        a, b = (cf_train.train_model(name, data, params, seed=7) for _ in range(2))
        np.testing.assert_array_equal(a.user_factors, b.user_factors, err_msg=name)
        np.testing.assert_array_equal(a.item_factors, b.item_factors, err_msg=name)
