"""The fast scorer gives the plain forward pass's Yes logits, in the caller's order."""

import numpy as np
import pytest

from models.llm import loading as llm
from models.llm import scorer
from models.llm.prompts import PromptBuilder


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return llm.load(llm.resolve_model_path(llm.SMOKE, tmp_path_factory.mktemp("models")), device="cpu")


def _prompts(n, seed=0):
    rng = np.random.default_rng(seed)
    titles = [f"Movie {k} ({1950 + k % 50})" for k in range(100)]
    build = PromptBuilder(noun="movie")
    return [build([titles[j] for j in rng.choice(100, rng.integers(0, 11), replace=False)], titles[rng.integers(100)])
            for _ in range(n)]


def test_pointwise_scores_equal_the_plain_forward(smoke):
    prompts = _prompts(37)
    ref = scorer.score_reference(smoke, prompts, batch_size=5)
    ours = scorer.score(smoke, prompts, max_batch_tokens=300)  # small budget: many length buckets
    assert np.abs(ref - ours).max() < 1e-4
    assert np.std(ours) > 0  # the prompts really differ


def test_grouped_scores_keep_order_and_equal_the_plain_forward(smoke):
    build = PromptBuilder(noun="movie")
    history = [f"Old film {k}" for k in range(10)]
    group_a = [build(history, f"Candidate {k} with a {'long ' * (k % 4)}title") for k in range(30)]
    group_b = [build(["Only one"], "Target")]  # a group of one has no shared prefix to reuse
    a, b = scorer.score_groups(smoke, [group_a, group_b], max_batch_tokens=64)
    assert np.abs(a - scorer.score_reference(smoke, group_a)).max() < 1e-4
    assert np.abs(b - scorer.score_reference(smoke, group_b)).max() < 1e-4


def test_identical_prompts_still_score(smoke):
    p = _prompts(1)[0]
    s = scorer.score(smoke, [p, p, p])
    assert np.allclose(s, s[0]) and np.abs(s[0] - scorer.score_reference(smoke, [p])[0]) < 1e-4
    assert scorer.score(smoke, []).shape == (0,)


def test_pointwise_rows_sharing_a_history_reuse_it_and_stay_exact(smoke):
    build = PromptBuilder(noun="movie")
    long_history = [f"A fairly long remembered film title number {k}" for k in range(10)]
    shared = [build(long_history, f"Target {k}") for k in range(12)]
    prompts = _prompts(9) + shared[:6] + _prompts(3, seed=5) + shared[6:]  # interleaved, out of order
    ref = scorer.score_reference(smoke, prompts)
    assert np.abs(ref - scorer.score(smoke, prompts, max_batch_tokens=256)).max() < 1e-4
