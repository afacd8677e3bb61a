"""RecCocktail's listwise protocol as published (PROTOCOLS section 7), piece by piece on the tiny
model with SmolLM2's tokenizer and chat template: prompt and answer character for character,
candidates, history, loss mask, parser, metrics, the shared-cache ranking, the entropy objective,
and the shipped config's domain-general base spirit."""

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from models.llm import listwise
from models.llm import loading as llm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return llm.load(llm.resolve_model_path(llm.SMOKE, tmp_path_factory.mktemp("lw") / "models"), device="cpu")


def _split() -> tuple[pl.DataFrame, dict[str, str]]:
    """Four users over 45 items; user u0 saw A, B, C, D, E in time order (E = test, D = valid)."""
    titles = {f"i{k}": f"Item {k} (19{k % 90 + 10})" for k in range(40)}
    titles.update({"iA": "A", "iB": "B", "iC": "C", "iD": "D", "iE": "E"})
    rows = [("u0", it, 100 + t, "train" if t < 3 else ("valid" if t == 3 else "test"))
            for t, it in enumerate(["iA", "iB", "iC", "iD", "iE"])]
    for u in ("u1", "u2"):
        for t in range(6):
            rows.append((u, f"i{(t * 7 + int(u[1])) % 40}", 100 + t, "train" if t < 4 else ("valid" if t == 4 else "test")))
    rows += [("u9", f"i{k}", 50 + k, "train") for k in range(40)]  # every item is in the domain
    df = pl.DataFrame(rows, schema=["user_id", "item_id", "ts", "split"], orient="row")
    df = df.with_columns(pl.col("item_id").replace_strict(titles).alias("title"), pl.lit(1).alias("label"))
    return df, titles


def test_prompt_and_answer_are_the_authors_format(tiny):
    split, titles = _split()
    ex = [e for e in listwise.build_examples(split, titles, "test", tiny.tokenizer, listwise.Words(), 3)
          if e.user_id == "u0"][0]
    cands = "||".join(ex.candidates)
    assert ex.prompt == (
        "<|im_start|>system\nYou are a helpful recommendation assistant.<|im_end|>\n<|im_start|>user\n"
        "Given the following purchase history of a user:[B||C||D]. Please select the top 5 most likely products to "
        "be purchased by the user based on the user's purchase history. And sort them from highest to lowest "
        f"likelihood of purchasing.Candidates: [{cands}]. The top 5 most likely products to be purchased by the user "
        "are:<|im_end|>\n<|im_start|>assistant\n")
    parts = ex.answer.split("||")
    assert parts[0] == "E" and len(parts) == 5 and len(set(parts)) == 5 and set(parts) <= set(ex.candidates)
    words = listwise.Words("watching history", "movies", "watched", "watching")
    msg = listwise.user_message(["x"], ["y"], words)
    assert msg.startswith("Given the following watching history of a user:[x]. Please select the top 5 most likely "
                          "movies to be watched by the user based on the user's watching history.")
    assert "likelihood of watching.Candidates: [y]." in msg


def test_candidates_are_seeded_shuffled_and_outside_the_history(tiny):
    split, titles = _split()
    a = listwise.build_examples(split, titles, "test", tiny.tokenizer, listwise.Words(), 10, n_negatives=29)
    b = listwise.build_examples(split, titles, "test", tiny.tokenizer, listwise.Words(), 10, n_negatives=29)
    c = listwise.build_examples(split, titles, "test", tiny.tokenizer, listwise.Words(), 10, n_negatives=29, seed=7)
    seen = split.group_by("user_id").agg("item_id")
    seen = {u: set(i) for u, i in seen.iter_rows()}
    for e in a:
        target_id = e.candidate_ids[e.target]
        assert len(e.candidates) == 30 and len(set(e.candidate_ids)) == 30
        assert target_id == split.filter((pl.col("user_id") == e.user_id) & (pl.col("split") == "test"))["item_id"][0]
        assert not (set(e.candidate_ids) - {target_id}) & seen[e.user_id]
    assert [e.candidate_ids for e in a] == [e.candidate_ids for e in b]
    assert [e.candidate_ids for e in a] != [e.candidate_ids for e in c]
    assert len({e.target for e in a + c}) > 1  # the target is not always in the same place


def test_history_is_the_earlier_items_in_time_order_the_last_n(tiny):
    split, titles = _split()
    (valid,) = [e for e in listwise.build_examples(split, titles, "valid", tiny.tokenizer, listwise.Words(), 2)
                if e.user_id == "u0"]
    assert valid.history == ["B", "C"]
    (test,) = [e for e in listwise.build_examples(split, titles, "test", tiny.tokenizer, listwise.Words(), 10)
               if e.user_id == "u0"]
    assert test.history == ["A", "B", "C", "D"]


@torch.no_grad()  # values only: no graph (and no warning for float() of a tensor that needs one)
def test_the_loss_covers_the_answer_tokens_only(tiny):
    ids, start = listwise.encode_example(tiny.tokenizer, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
                                         "A||B")
    assert tiny.tokenizer.decode(ids[start:]) == "A||B<|im_end|>"
    x = torch.tensor([ids])
    mask = torch.ones_like(x)
    loss = listwise.answer_loss(tiny.model, x, mask, torch.tensor([start]))
    logits = tiny.model(input_ids=x).logits[0]
    hand = torch.nn.functional.cross_entropy(logits[start - 1:-1], x[0, start:])
    assert float(loss) == pytest.approx(float(hand), abs=1e-5)
    # padding and prompt tokens do not count: a right-padded copy gives the same loss
    padded = torch.tensor([ids + [tiny.tokenizer.pad_token_id] * 3])
    same = listwise.answer_loss(tiny.model, padded, torch.tensor([[1] * len(ids) + [0] * 3]), torch.tensor([start]))
    assert float(same) == pytest.approx(float(loss), abs=1e-5)
    changed = list(ids)
    changed[-2] = (changed[-2] + 1) % 1000  # an answer token
    assert abs(float(listwise.answer_loss(tiny.model, torch.tensor([changed]), mask, torch.tensor([start]))) -
               float(loss)) > 1e-6


def test_the_generation_parser():
    cands = ["Heat (1995)", "Toy Story (1995)", "Casino (1995)"]
    assert listwise.parse_generation("Toy Story (1995)||Heat (1995)||Casino (1995)", cands) == ([1, 0, 2], 0)
    assert listwise.parse_generation(" Heat (1995) || Toy Story (1995)||", cands) == ([0, 1], 0)
    assert listwise.parse_generation("Heat (1995)||Jumanji (1995)||Heat (1995)", cands) == ([0], 1)
    assert listwise.parse_generation("heat (1995)||I cannot answer", cands) == ([], 2)
    assert listwise.parse_generation("", cands) == ([], 0)


def test_the_reports_listwise_metrics_by_hand():
    """Three test lists of three candidates: generated ranks from the parser (a target not named is a
    miss, an empty generation is counted), likelihood ranks with a tie broken at random (its
    expectation); the lists must be the domain's candidate lists."""
    from models.metrics import frames
    from models.reporting import listwise as listwise_report
    from models.reporting import report

    test = pl.DataFrame({"user_id": ["u", "v", "w"], "item_id": ["a", "b", "c"], "label": [1, 0, 1],
                         "warm": [True, True, False], "not_cold": [True, True, True]})
    candidates = pl.DataFrame({"row": [0, 1, 2], "candidates": [["a", "x", "y"], ["b", "z", "w"], ["c", "q", "r"]]})
    scores = pl.DataFrame({
        "method": ["m"] * 3, "row": [0, 1, 2],
        "candidate_ids": [["x", "y", "a"], ["b", "z", "w"], ["q", "c", "r"]],
        "candidate_scores": [[0.0, 1.0, 2.0], [1.0, 1.0, 0.0], [3.0, 2.0, 1.0]],  # ranks 0, 0-or-1 (a tie), 1
        "generated": [[2, 0], [1, 2, 0], []],  # ranks 0, 2 (the target b is candidate 0), not named
        "invalid_items": [0, 1, 2]}, schema_overrides={"generated": pl.List(pl.Int64)})
    ls = listwise_report.list_scores(scores, test, candidates)["m"]
    everything = np.arange(3)
    assert ls.values("generated_hr@1", everything).mean() == pytest.approx(1 / 3)
    assert ls.values("generated_hr@3", everything).mean() == pytest.approx(2 / 3)
    assert ls.values("generated_ndcg@3", everything).mean() == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert ls.values("hr@1", everything).mean() == pytest.approx((1 + 0.5 + 0) / 3)  # the tie: half a hit
    assert ls.values("ndcg@3", everything).mean() == pytest.approx((1 + (1 + 1 / math.log2(3)) / 2
                                                                    + 1 / math.log2(3)) / 3)
    assert (int(ls.named_none.sum()), int(ls.invalid_items.sum())) == (1, 3)
    mask = np.ones(3, bool)
    frame = frames.Frame("listwise", "lists", mask, ("m",), "f", "f")
    subsets = [frames.Subset("all", mask, True, ""), frames.Subset("warm", np.array([1, 1, 0], bool), True, "")]
    _, counts = report.evaluate_lists(frame, subsets, test["user_id"].to_numpy(), {"m": ls}, (1, 3), 20, 0, 1)
    assert counts["m"]["all"] == {"lists": 3, "no_candidate_named": 1, "invalid_items": 3}
    assert counts["m"]["warm"] == {"lists": 2, "no_candidate_named": 0, "invalid_items": 1}
    # lists other than the domain's candidate lists are refused
    other = candidates.with_columns(pl.Series("candidates", [["a", "x", "o"], ["b", "z", "w"], ["c", "q", "r"]]))
    with pytest.raises(listwise_report.OtherLists, match="test row 0"):
        listwise_report.list_scores(scores, test, other)


def test_candidate_likelihood_with_a_shared_cache_equals_separate_forwards(tiny):
    tok = tiny.tokenizer
    titles = [f"Film number {k}" + " and more" * (k % 4) + f" ({1950 + k})" for k in range(30)]
    prompt = listwise.prompt_text(tok, ["A film (1990)", "Another (1991)"], titles, listwise.Words())
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    conts = [listwise.continuation_ids(tok, t) for t in titles]
    assert len({len(c) for c in conts}) > 1
    fast = listwise.candidate_loglik(tiny, p, conts, max_batch_tokens=64)  # several batches
    ref = listwise.candidate_loglik_reference(tiny, p, conts)
    assert np.abs(fast - ref).max() < 1e-4
    assert np.allclose(listwise.rank_candidates(tiny, prompt, titles), fast, atol=1e-6)


def test_one_prompt_encoding_gives_the_answers_and_the_likelihoods(tiny, monkeypatch):
    """generate_and_rank reuses generate's cache for the candidates: the same answers as `generate` and
    the same likelihoods as `rank_candidates` on prompts of different lengths (left-padded batches)."""
    tok = tiny.tokenizer
    prompts, lists = [], []
    for k in range(5):
        titles = [f"Film {k}-{j}" + " and more" * ((j + k) % 3) + f" ({1950 + j})" for j in range(30)]
        prompts.append(listwise.prompt_text(tok, [f"Seen film {h} (1990)" for h in range(1 + 2 * k)], titles,
                                            listwise.Words()))
        lists.append(titles)
    assert len({len(tok(p)["input_ids"]) for p in prompts}) == 5
    with monkeypatch.context() as m:  # the prompts are not encoded again (that is the fallback's path)
        m.setattr(listwise, "candidate_loglik", lambda *a, **k: pytest.fail("the prompt was encoded again"))
        texts, liks, lik_s = listwise.generate_and_rank(tiny, prompts, lists, max_new_tokens=6, batch_size=3,
                                                        max_batch_tokens=100)
    assert texts == listwise.generate(tiny, prompts, 6, batch_size=3) and all(texts)
    for prompt, titles, lik in zip(prompts, lists, liks):
        assert np.abs(lik - listwise.rank_candidates(tiny, prompt, titles)).max() < 1e-4
    assert lik_s > 0


def test_the_entropy_objective_by_hand(tiny):
    v = 7
    assert float(listwise.shannon_entropy(torch.zeros(v))) == pytest.approx(math.log(v), abs=1e-6)
    logits = torch.tensor([[math.log(3.0), 0.0]])  # p = (3/4, 1/4)
    hand = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert float(listwise.shannon_entropy(logits)[0]) == pytest.approx(hand, abs=1e-6)
    tok = tiny.tokenizer
    gen = tok("Heat (1995)||Toy Story (1995)||", add_special_tokens=False)["input_ids"] + [tok.eos_token_id, 5]
    pos = listwise.item_start_positions(tok, gen, 2)
    texts = [tok.decode(gen[j]) for j in pos]
    assert texts[:2] == ["He", "at"] or tok.decode(gen[pos[0]:pos[1] + 1]).startswith("He")
    second = [j for j in pos if j > pos[1]]
    assert tok.decode(gen[second[0]:]).startswith("Toy") and len(pos) == 4  # two items x two tokens; none after eos
    # with gradient to a trainable parameter (the merge's mixing logits stand in: a scale on the output layer)
    scale = torch.nn.Parameter(torch.ones(()))
    head = tiny.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda m, i, o: o * scale)
    try:
        p = tok("Pick some:", add_special_tokens=False)["input_ids"]
        loss, n = listwise.entropy_objective(tiny.model, tok, [p, p], 12, 3, "cpu")
        assert n > 0 and torch.isfinite(loss)
        loss.backward()
        assert scale.grad is not None and scale.grad.abs() > 0
    finally:
        handle.remove()


def test_the_base_spirit_leaves_out_the_users_of_cocktail_domains_of_its_dataset(tmp_path):
    """A general domain of the same dataset as a target keeps only the users the target does not have;
    a general domain of another dataset keeps everyone (its users are other people); the overlap of
    the kept rows with the target is then zero, and without the exclusion it is counted."""
    from models.data import base_spirit
    from models.config import DomainConfig, ProjectConfig, SplitSpec
    from models.data.workspace import Workspace

    loo = SplitSpec("leave_one_out", {"min_user_records": 5})
    dom = lambda name, ds, role: DomainConfig(name, ds, "item", role, None, loo)  # noqa: E731
    cfg = ProjectConfig(Path("x.yaml"), {}, {}, {d.name: d for d in (
        dom("target", "a", "target"), dom("cold", "a", "cold_start"), dom("general_a", "a", "general"),
        dom("general_b", "b", "general"))})
    ws = Workspace(tmp_path)
    rows = lambda users, items: pl.DataFrame(  # noqa: E731
        [(u, i, 100 + k, "train", f"Title {i}") for k, (u, i) in enumerate((u, i) for u in users for i in items)],
        schema=["user_id", "item_id", "ts", "split", "title"], orient="row")
    rows(["u1", "u2"], ["i1", "i2"]).write_parquet(ws.split_path("target"))
    rows(["u3"], ["i1"]).write_parquet(ws.split_path("cold"))
    rows(["u1", "u3", "u4", "u5"], ["i1", "i3"]).write_parquet(ws.split_path("general_a"))
    rows(["u1", "u2"], ["i1"]).write_parquet(ws.split_path("general_b"))
    kept_a, dropped_a = base_spirit.training_split(ws, cfg, "general_a")
    kept_b, dropped_b = base_spirit.training_split(ws, cfg, "general_b")
    assert sorted(kept_a["user_id"].unique()) == ["u4", "u5"] and dropped_a == 4
    assert sorted(kept_b["user_id"].unique()) == ["u1", "u2"] and dropped_b == 0
    base = pl.read_parquet(base_spirit.save_training_rows(tmp_path, cfg, {"general_a": kept_a, "general_b": kept_b}))
    stats = base_spirit.overlap(base, ws.read_split("target"), "a")
    assert (stats["rows"], stats["users"], stats["items"], stats["items_share_of_target"]) == (0, 0, 1, 0.5)
    assert base_spirit.overlap_warning(stats) is None
    everything = pl.read_parquet(base_spirit.save_training_rows(
        tmp_path, cfg, {"general_a": ws.read_split("general_a"), "general_b": ws.read_split("general_b")}))
    shared = base_spirit.overlap(everything, ws.read_split("target"), "a")
    assert (shared["rows"], shared["users"]) == (1, 1)  # u1, and its (i1, ts 100) row
    assert "shares 1 rows and 1 users" in base_spirit.overlap_warning(shared)
    assert base_spirit.overlap(everything, ws.read_split("general_a"), "a")["rows"] == 8


@pytest.mark.slow
def test_the_shipped_base_spirit_shares_no_row_or_user_with_a_target(tmp_path):
    """The shipped config on the real embedded data: the general domains are ML-100K and its genres (other
    users, other years), every cocktail domain is ML-1M; measured on the real splits, the base spirit's
    training data shares no row and no user with any of them (titles may be shared: the same films)."""
    import dagster as dg

    from models.data import base_spirit
    from models.config import PROJECT_ROOT, Settings, load_config
    from models.data.workspace import Workspace
    from orchestration.definitions import build_definitions
    from orchestration.jobs import materialize_dataset, materialize_domain

    settings = Settings(data_dir=tmp_path, config_path=PROJECT_ROOT / "config" / "datasets.yaml", profile="smoke")
    cfg = load_config(settings.config_path)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    for ds in cfg.datasets:
        assert materialize_dataset(defs, ds, instance).success
    for d in cfg.domains:
        assert materialize_domain(defs, d, instance).success
    ws = Workspace(tmp_path)
    general = base_spirit.general_domains(cfg)
    targets = base_spirit.cocktail_domains(cfg)
    assert {"ml1m_loo", "documentary"} <= {d for d in targets if cfg.domains[d].listwise}
    used = {d: base_spirit.training_split(ws, cfg, d)[0] for d in general}
    rows = pl.read_parquet(base_spirit.save_training_rows(tmp_path, cfg, used))
    assert rows.height > 50_000 and set(rows["dataset"]) == {"ml100k"}
    for t in targets:
        stats = base_spirit.overlap(rows, ws.read_split(t), cfg.domains[t].dataset)
        assert stats["rows"] == 0 and stats["users"] == 0, (t, stats)
        assert stats["items"] > 0 and base_spirit.overlap_warning(stats) is None
