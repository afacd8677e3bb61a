"""The next-item models and protocols on small fixtures: SASRec's causal mask, the training targets and
negatives, full ranking and the 100-negative lists, and the metrics (HR, NDCG, MRR, coverage, Gini,
average popularity, tail share) against hand computations."""

import numpy as np
import polars as pl
import pytest
import torch

from models.cf import next_item
from models.cf.interactions import Interactions
from models.cf.sequential import GRU4Rec, _sasrec, length_batches, training_pairs
from models.cf.train import train_model
from models.metrics import beyond
from models.metrics import ranking as metrics
from models.registry.cf import GRU4RecParams, SASRecNextParams


def _split(rows: list[tuple[str, str, int, str]]) -> pl.DataFrame:
    """(user, item, ts, split) rows as a split table (every row liked)."""
    return pl.DataFrame(rows, schema=["user_id", "item_id", "ts", "split"], orient="row").with_columns(
        pl.lit(1).alias("label"))


def _loo(n_users: int = 30, n_items: int = 40, length: int = 12, seed: int = 0) -> Interactions:
    """Users walking through the catalogue in steps of one from a random start (a learnable next item):
    the last item test, the second to last valid, the rest train."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(0, n_items))
        for t in range(length):
            split = "test" if t == length - 1 else "valid" if t == length - 2 else "train"
            rows.append((f"u{u:02d}", f"i{(start + t) % n_items:02d}", 1000 + t, split))
    return Interactions.from_split(_split(rows))


@pytest.mark.parametrize("build", ["sasrec", "gru4rec"])
def test_changing_later_items_leaves_earlier_outputs_unchanged(build):
    gen = torch.Generator().manual_seed(0)
    model = _sasrec(50, SASRecNextParams(maxlen=12), gen) if build == "sasrec" else GRU4Rec(50, GRU4RecParams(), gen)
    model.eval()
    seqs = torch.tensor([[0, 0, 3, 7, 9, 11, 4, 5, 6, 8, 1, 2]])
    changed = seqs.clone()
    t = 6
    changed[0, t + 1:] = torch.tensor([20, 21, 22, 23, 24])
    with torch.no_grad():
        a, b = model.encode_all(seqs), model.encode_all(changed)
    real = slice(2, t + 1)  # the items up to t (the outputs at the two padded positions are never read)
    assert torch.allclose(a[0, real], b[0, real], atol=1e-6)  # positions <= t see positions <= t only
    assert not torch.allclose(a[0, t + 1:], b[0, t + 1:])
    # left padding does not change a sequence's vector (a cut batch sees the same)
    with torch.no_grad():
        assert torch.allclose(model.encode(seqs[:, 2:]), model.encode(seqs), atol=1e-5)


def test_targets_are_the_next_items_and_negatives_never_the_users_items():
    data = _loo()
    seqs = next_item.user_sequences(data, ("train",))
    users, inp, pos = training_pairs(seqs, maxlen=6)
    for k, u in enumerate(users):
        s = seqs[u][-7:] + 1
        assert inp[k][inp[k] > 0].tolist() == s[:-1].tolist()[-6:]
        assert pos[k][pos[k] > 0].tolist() == s[1:].tolist()[-6:]  # target at t = input at t + 1
    keys = next_item.interaction_keys(data, ("train",))
    rng = np.random.default_rng(0)
    many = np.repeat(np.arange(data.n_users), 200)
    neg = next_item.sample_negatives(many, keys, data.n_items, rng)
    train = next_item.interaction_matrix(data, ("train",)).toarray()
    assert not train[many, neg].any()
    assert len(np.unique(neg)) == data.n_items  # every other item can be drawn
    lists = next_item.sampled_lists(data, "test", 20, seed=1)
    seen = next_item.interaction_matrix(data, ("train", "valid", "test")).toarray()
    test_users = data.parts["test"]["user"]
    assert lists.shape == (data.n_users, 20)
    assert all(len(set(r)) == 20 for r in lists) and not seen[test_users[:, None], lists].any()
    assert np.array_equal(lists, next_item.sampled_lists(data, "test", 20, seed=1))  # seeded
    batches = length_batches(torch.from_numpy((pos > 0).sum(1)), 4, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == list(range(users.size))  # every user once an epoch


def test_full_ranking_leaves_out_the_history_and_ranks_the_target_among_every_other_item():
    # one user; items a..f; train a, b; valid c; test d. Scores: item vectors 1-d, the user's vector [1]
    rows = [("u", "a", 1, "train"), ("u", "b", 2, "train"), ("u", "c", 3, "valid"), ("u", "d", 4, "test"),
            ("v", "e", 1, "train"), ("v", "f", 2, "train"), ("v", "a", 3, "valid"), ("v", "b", 4, "test")]
    data = Interactions.from_split(_split(rows))
    idx = {it: k for k, it in enumerate(data.item_ids)}
    item_scores = {"a": 9.0, "b": 8.0, "c": 7.0, "d": 5.0, "e": 5.0, "f": 6.0}
    items = np.zeros((data.n_items, 1), np.float32)
    for it, s in item_scores.items():
        items[idx[it]] = s
    users = np.ones((2, 1), np.float32)
    st = next_item.standing(users, items, data, "test", np.array([[idx["e"]], [idx["c"]]]), k=2, seed=0)
    # u (history a, b, c): d among d, e, f: f above, e tied; v (history e, f, a): b among b, c, d: none above
    assert st.full.above.tolist() == [1, 0] and st.full.tied.tolist() == [1, 0] and st.pool.tolist() == [3, 3]
    assert st.sampled.above.tolist() == [0, 0] and st.sampled.tied.tolist() == [1, 0]
    assert [data.item_ids[t].tolist() for t in st.top][1] == ["b", "c"]  # v's history left out
    assert set(data.item_ids[st.top[0]]) == {"f", "d"} or set(data.item_ids[st.top[0]]) == {"f", "e"}
    # at validation time the history is train only: u's valid item c among c, d, e, f
    valid = next_item.standing(users, items, data, "valid", np.array([[idx["d"]], [idx["c"]]]), k=2, seed=0)
    assert valid.full.above.tolist() == [0, 0] and valid.pool.tolist() == [4, 4]


def test_ranking_and_beyond_accuracy_metrics_equal_hand_computations():
    ranks = metrics.Ranks(np.array([0, 2, 9, 1]), np.array([0, 0, 0, 1]))
    assert metrics.ranking_values(ranks, "hr", 3).tolist() == [1, 1, 0, 1]
    ndcg = metrics.ranking_values(ranks, "ndcg", 3)
    assert np.allclose(ndcg, [1, 1 / np.log2(4), 0, (1 / np.log2(3) + 1 / np.log2(4)) / 2])
    assert np.allclose(metrics.reciprocal_ranks(ranks), [1, 1 / 3, 1 / 10, (1 / 2 + 1 / 3) / 2])
    # a constant scorer over 5 candidates: MRR is the mean of 1/1..1/5
    assert np.isclose(metrics.reciprocal_ranks(metrics.Ranks(np.array([0]), np.array([4])))[0],
                      np.mean(1 / np.arange(1, 6)))
    top = np.array([[0, 1], [0, 2], [0, 1]])
    assert beyond.coverage(top, 5) == 3 / 5
    # counts over the 5 items: 3, 2, 1, 0, 0 -> sorted 0, 0, 1, 2, 3 with weights 2i - n - 1 = -4, -2, 0, 2, 4;
    # Gini = sum of weight * count / (n * total)
    assert np.isclose(beyond.gini_index(top, 5), (0 * 1 + 2 * 2 + 4 * 3) / (5 * 6))
    assert beyond.gini_index(np.array([[0, 1], [2, 3]]), 4) == 0.0  # every item equally often
    counts = np.array([10, 4, 1, 0, 7])
    assert np.allclose(beyond.popularity_per_user(top, counts), [7, 5.5, 7])
    tail = beyond.tail_items(counts, 0.25)  # 4 items with train interactions: the 1 fewest (item 2), and item 3
    assert tail.tolist() == [False, False, True, True, False]
    assert np.allclose(beyond.tail_share_per_user(top, tail), [0, 0.5, 0])


@pytest.mark.parametrize("name", ["sasrec_next", "gru4rec", "mf_bpr", "lightgcn_bpr"])
def test_each_next_item_model_learns_the_next_item_and_stops_on_validation(name):
    data = _loo()
    model = train_model(name, data, {"max_epochs": 60, "eval_every": 10, "lr": 0.01, "patience": 2}, seed=0)
    st = next_item.standing(model.user_factors, model.item_factors, data, "test",
                            next_item.sampled_lists(data, "test", 20, 1), 10, 0)
    popularity = train_model("popularity", data)
    st_pop = next_item.standing(popularity.user_factors, popularity.item_factors, data, "test",
                                next_item.sampled_lists(data, "test", 20, 1), 10, 0)
    assert metrics.ndcg_at_k(st.sampled, 10) > metrics.ndcg_at_k(st_pop.sampled, 10)
    curve = model.info["valid_curve"]
    assert curve and model.info["best_valid_ndcg@10"] == max(c["valid_ndcg@10"] for c in curve)
    if name in ("sasrec_next", "gru4rec"):  # the valid-time vector encodes train only, the test-time one also valid
        assert model.valid_user_factors is not None and not np.allclose(model.valid_user_factors, model.user_factors)
