"""The CF models' own kernels against torch's: LightGCN's symmetric CSR propagation (values and
gradients as torch.sparse.mm on COO) and SASRec's dropout (torch's distribution and scaling)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from models import cf


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
    for spmm in (lambda x: torch.sparse.mm(ref_graph, x), lambda x: cf._SymmetricSpMM.apply(csr, x)):
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
    y = cf._dropout(x, 0.2, True)
    kept = y.detach() != 0
    # 1e6 draws: the kept share within 5 standard deviations (0.002) of 0.8
    assert abs(float(kept.float().mean()) - 0.8) < 0.002
    assert torch.allclose(y.detach()[kept], torch.tensor(1.25))
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept) and torch.allclose(x.grad[kept], torch.tensor(1.25))
    assert float(cf._dropout(x, 0.5, True).detach().ne(0).float().mean()) == pytest.approx(0.5, abs=0.002)
    assert cf._dropout(x, 0.2, False) is x and cf._dropout(x, 0.0, True) is x
    torch.manual_seed(1)
    a = cf._dropout(x, 0.2, True)
    torch.manual_seed(1)
    assert torch.equal(a, cf._dropout(x, 0.2, True))  # seeded by torch's generator, as nn.Dropout
