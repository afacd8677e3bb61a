"""CF training time on ML-1M `movies`, and our MF loop against the authors' training loop.

What it compares:
- ALS, BPR (implicit) and our BCE matrix factorisation: wall time to train on the `movies` split.
- MF, ours vs a faithful re-implementation of CoLLM's `baseline_train_mf_ood.py` loop: a
  DataLoader over a numpy array, and after every epoch a full pass over valid AND test with
  roc_auc_score plus the per-user Python uAUC loop, early stopping on valid AUC. Both use the same
  model, initialisation, optimiser and batch size on the same split; both run the same number of
  epochs (the per-epoch cost is what differs, convergence behaviour is the same), and the
  validation AUC each reaches is printed so the two can be seen to learn alike.

- SASRec on ML-1M `ml1m_loo` (leave-one-out): seconds per epoch of the standard form (`sasrec_next`:
  one causal sequence per user, the next item at every position) against CoLLM's per-row form
  (`sasrec`: one sequence per labelled train row), the per-row epoch timed on a share of its batches
  and scaled to the whole epoch (a full one takes over 10 minutes on 2 cores).

How to read: `cf_mf_speedup_vs_original: <N>x` (original seconds per epoch / ours) and
`sasrec_epoch_speedup_vs_per_row: <N>x` (per-row seconds per epoch / standard). Timings are
wall-clock on a shared machine: compare the ratios, not the absolute numbers.

    python benchmarks/cf.py [--epochs 40] [--only sasrec]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from _common import domain_split, movies_split
from models.cf import interactions as cf_data
from models.cf import neural as cf_neural
from models.cf import sequential
from models.cf import train as cf_train
from models.metrics import ranking as metrics
from models.config import load_config
from models.registry.cf import SASRecNextParams, SASRecParams


def original_uauc(user, predict, label) -> float:
    """CoLLM's uAUC_me: np.unique grouping, then roc_auc_score per user in a Python loop."""
    predict, label = np.array(predict).squeeze(), np.array(label).squeeze()
    u, inverse, counts = np.unique(user, return_inverse=True, return_counts=True)
    index = np.argsort(inverse)
    total, aucs = 0, []
    for k in range(len(u)):
        idx = index[total:total + counts[k]]
        total += counts[k]
        if counts[k] == 1:
            continue
        # the original caught the ValueError older scikit-learn raised for a one-class user;
        # newer releases warn and return NaN instead, so both are skipped
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            try:
                value = roc_auc_score(label[idx], predict[idx])
            except ValueError:
                continue
        if not np.isnan(value):
            aucs.append(value)
    return float(np.mean(aucs))


def original_mf_loop(data: cf_data.Interactions, c: cf_neural.MFConfig, epochs: int) -> tuple[float, float]:
    """The authors' loop (per-epoch valid + test evaluation, early stopping); returns (s, best valid AUC)."""
    torch.manual_seed(c.seed)
    np.random.seed(c.seed)

    class MatrixFactorization(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.user_embedding = torch.nn.Embedding(data.n_users, c.dim)
            self.item_embedding = torch.nn.Embedding(data.n_items, c.dim)
            torch.nn.init.normal_(self.user_embedding.weight, std=c.init_std)
            torch.nn.init.normal_(self.item_embedding.weight, std=c.init_std)

        def forward(self, users, items):
            return torch.mul(self.user_embedding(users), self.item_embedding(items)).sum(dim=-1)

    def as_array(part):
        p = data.parts[part]
        return np.stack([p["user"], p["item"], p["label"].astype(np.int64)], axis=1)

    train_loader = DataLoader(as_array("train"), batch_size=c.batch_size, shuffle=True)
    valid_loader = DataLoader(as_array("valid"), batch_size=c.batch_size, shuffle=False)
    test_loader = DataLoader(as_array("test"), batch_size=c.batch_size, shuffle=False)
    model = MatrixFactorization()
    opt = torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    criterion = torch.nn.BCEWithLogitsLoss()
    best, reach = None, 0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for batch in train_loader:
            loss = criterion(model(batch[:, 0].long(), batch[:, 1].long()), batch[:, -1].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        found = {}
        for name, loader in (("valid", valid_loader), ("test", test_loader)):
            pre, label, users = [], [], []
            for batch in loader:
                out = model(batch[:, 0].long(), batch[:, 1].long())
                users.extend(batch[:, 0].cpu().numpy())
                pre.extend(out.detach().cpu().numpy())
                label.extend(batch[:, -1].cpu().numpy())
            found[name] = (roc_auc_score(label, pre), original_uauc(users, pre, label))
        if best is None or found["valid"][0] > best:
            best, reach = found["valid"][0], 0
        else:
            reach += 1
            if reach >= c.patience:
                break
    return time.perf_counter() - t0, float(best)


def sasrec_epochs(per_row_batches: int = 20) -> None:
    """Seconds per epoch of the standard SASRec and of CoLLM's per-row SASRec on `ml1m_loo`."""
    split, _ = domain_split("ml1m_loo")
    data = cf_data.Interactions.from_split(split)
    print(f"ML-1M ml1m_loo: {data.n_users} users, {data.n_items} items, {len(data.parts['train']['user'])} train rows")
    p = SASRecNextParams(max_epochs=2, eval_every=2, patience=1)
    t0 = time.perf_counter()
    model = sequential.fit_sasrec_next(data, p, 2023)
    standard_s = model.info["fit_s"] / model.info["epochs_run"]
    print(f"sasrec_next (standard): {model.info['sequences']} sequences an epoch, {standard_s:.1f} s/epoch "
          f"({model.info['epochs_run']} epochs and one validation check in {time.perf_counter() - t0:.1f} s)")
    # CoLLM's per-row form: its training step on `per_row_batches` batches of the config's size, scaled
    c = SASRecParams()
    t = data.parts["train"]
    maxlen = max(1, round(t["user"].size / max(1, np.unique(t["user"]).size)))
    _, ki = data.in_train()
    filtered = cf_data.Interactions(data.user_ids, data.item_ids, data.parts, data.context_keys,
                                    [seq[ki[seq]] for seq in data.context_items])
    seqs = torch.from_numpy(filtered.padded_contexts(maxlen))
    gen = torch.Generator().manual_seed(2023)
    per_row = cf_neural.SASRec(data.n_items, c, maxlen, gen)
    opt = torch.optim.Adam(per_row.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    tr = {k: torch.from_numpy(v) for k, v in t.items()}
    perm = torch.randperm(tr["user"].numel(), generator=gen)
    per_row.train()
    t0 = time.perf_counter()
    for b in range(per_row_batches):
        idx = perm[b * c.batch_size:(b + 1) * c.batch_size]
        logits = (per_row.encode_rows(seqs, tr["ctx"][idx]) * per_row.item(tr["item"][idx] + 1)).sum(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, tr["label"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    batches = -(-tr["user"].numel() // c.batch_size)
    per_row_s = (time.perf_counter() - t0) / per_row_batches * batches
    print(f"sasrec (CoLLM per-row): {tr['user'].numel()} rows an epoch in {batches} batches of {c.batch_size}, "
          f"maxlen {maxlen}: {per_row_s:.1f} s/epoch (timed on {per_row_batches} batches)")
    print(f"sasrec_epoch_speedup_vs_per_row: {per_row_s / standard_s:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40, help="epochs for the MF loop comparison")
    parser.add_argument("--only", choices=["mf", "sasrec"], help="run one of the two comparisons")
    args = parser.parse_args()
    if args.only != "mf":
        sasrec_epochs()
    if args.only == "sasrec":
        return
    cfg = load_config()
    c = cfg.cf
    split, _ = movies_split()
    data = cf_data.Interactions.from_split(split)
    print(f"ML-1M movies: {data.n_users} users, {data.n_items} items, "
          f"{len(data.parts['train']['user'])} train rows")

    te = data.parts["test"]
    for kind in ("als", "bpr"):
        t0 = time.perf_counter()
        model = cf_train.train_model(kind, data, c.get(kind), seed=int(c.get("seed", 2023)))
        s = time.perf_counter() - t0
        print(f"{kind}: trained in {s:.2f} s (fit {model.info['fit_s']:.2f} s); test AUC "
              f"{metrics.auc(te['label'], model.score(te['user'], te['item'])):.4f}")

    mf_cfg = cf_neural.MFConfig(**(c.get("mf") or {}))
    t0 = time.perf_counter()
    full = cf_neural.train_mf_bce(data, mf_cfg)
    print(f"mf (ours, to early stop): {time.perf_counter() - t0:.1f} s, {full.info['epochs_run']} epochs, "
          f"best epoch {full.info['best_epoch']}, test AUC "
          f"{metrics.auc(te['label'], full.score(te['user'], te['item'])):.4f}")

    fixed = cf_neural.MFConfig(**{**mf_cfg.model_dump(), "max_epochs": args.epochs, "patience": args.epochs})
    t0 = time.perf_counter()
    ours = cf_neural.train_mf_bce(data, fixed)
    ours_s = time.perf_counter() - t0
    orig_s, orig_best = original_mf_loop(data, fixed, args.epochs)
    print(f"mf, {args.epochs} epochs: ours {ours_s:.2f} s ({ours_s / args.epochs * 1000:.0f} ms/epoch, best valid "
          f"AUC {ours.info['best_valid_auc']:.4f}); original loop {orig_s:.2f} s "
          f"({orig_s / args.epochs * 1000:.0f} ms/epoch, best valid AUC {orig_best:.4f})")
    print(f"cf_mf_speedup_vs_original: {orig_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
