"""SASRec (standard form) on ML-1M leave-one-out at the paper's budget, against the SASRec paper.

Trains `sasrec_next` on the real `ml1m_loo` split with pmixer/SASRec.pytorch's ML-1M settings (d 50,
2 blocks, 1 head, dropout 0.2, lr 1e-3, batch 128, maxlen 200; up to 200 epochs, a validation check
every 20, stop after 3 checks without a better validation NDCG@10) and popularity, and prints each
one's HR@10 and NDCG@10 with the test item among 100 sampled negatives (the paper's protocol; Table
III: SASRec 0.8245 / 0.5905) and by full ranking. About 30 min on 2 CPU cores (9 s an epoch).

    python benchmarks/sasrec_ml1m.py [--epochs 200]
"""

from __future__ import annotations

import argparse
import time

from _common import domain_split
from models.cf import next_item
from models.cf.interactions import Interactions
from models.cf.train import train_model
from models.metrics import ranking as metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=20)
    args = parser.parse_args()
    split, _ = domain_split("ml1m_loo")
    data = Interactions.from_split(split)
    negatives = next_item.sampled_lists(data, "test", 100, seed=2023)
    for name, params in (("popularity", {}),
                         ("sasrec_next", {"max_epochs": args.epochs, "eval_every": args.eval_every, "patience": 3})):
        t0 = time.perf_counter()
        model = train_model(name, data, params, seed=2023, log=print)
        fit = time.perf_counter() - t0
        st = next_item.standing(model.user_factors, model.item_factors, data, "test", negatives, 10, 2023)
        print(f"{name}: {fit:.0f} s; 100 negatives HR@10 {metrics.hit_rate_at_k(st.sampled, 10):.4f} NDCG@10 "
              f"{metrics.ndcg_at_k(st.sampled, 10):.4f}; full ranking HR@10 {metrics.hit_rate_at_k(st.full, 10):.4f} "
              f"NDCG@10 {metrics.ndcg_at_k(st.full, 10):.4f}" +
              (f"; best epoch {model.info['best_epoch'] + 1} of {model.info['epochs_run']}" if "best_epoch" in model.info
               else ""))
    print("paper (Kang & McAuley 2018, Table III, ML-1M): SASRec HR@10 0.8245 NDCG@10 0.5905")


if __name__ == "__main__":
    main()
