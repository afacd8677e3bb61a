"""The LLM layer's foundations: the embedded SmolLM2 converted once, the tiny smoke model, the
Yes/No answer tokens, and CoLLM's prompts with the token budget."""

import json

import pytest
import torch

from models.llm import loading as llm
from models.llm.prompts import EMPTY_HISTORY, PromptBuilder, plural


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    models_dir = tmp_path_factory.mktemp("models")
    return llm.load(llm.resolve_model_path(llm.SMOKE, models_dir), device="cpu")


def test_smoke_model_has_smollm2_vocabulary_and_answer_tokens(smoke):
    assert (smoke.yes_id, smoke.no_id) == (9230, 2838)  # " Yes", " No" in SmolLM2's tokenizer
    assert smoke.tokenizer.decode([smoke.yes_id]) == " Yes"
    ids = smoke.tokenizer("#Answer:", return_tensors="pt")
    with torch.no_grad():
        logits = smoke.model(**ids).logits
    assert logits.shape[-1] == len(smoke.tokenizer)
    assert sum(p.numel() for p in smoke.model.parameters()) < 5_000_000


def test_unknown_model_setting_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloaded at run time"):
        llm.resolve_model_path("meta-llama/Llama-3-8B", tmp_path)


def test_text_prompt_is_collm_step1_with_a_real_newline():
    p = PromptBuilder(noun="movie")(["Toy Story (1995)", "Heat (1995)"], "Casino (1995)")
    assert p == ('#Question: A user has given high ratings to the following movies: "Toy Story (1995)", '
                 '"Heat (1995)". Leverage the information to predict whether the user would enjoy the movie '
                 'titled "Casino (1995)"? Answer with "Yes" or "No". \n#Answer:')


def test_id_prompt_has_both_placeholders_and_the_domain_noun():
    p = PromptBuilder(noun="book", with_ids=True)([], "Dune")
    assert "following books: none yet." in p and "<UserID>" in p and 'the book titled "Dune" with the feature <TargetItemID>?' in p
    assert EMPTY_HISTORY == "none yet"
    assert [plural(n) for n in ("movie", "documentary", "horror movie", "box")] == [
        "movies", "documentaries", "horror movies", "boxes"]


def test_token_budget_drops_oldest_titles_first(smoke):
    count = lambda text: len(smoke.tokenizer.encode(text))  # noqa: E731
    titles = [f"Film number {k} (19{k:02d})" for k in range(10)]
    full = PromptBuilder()(titles, "Target (2000)")
    budget = count(full) - 15
    trimmed = PromptBuilder(max_tokens=budget, count_tokens=count)(titles, "Target (2000)")
    assert count(trimmed) <= budget
    assert '"Film number 9 (1909)"' in trimmed and '"Film number 0 (1900)"' not in trimmed
    assert trimmed.endswith("\n#Answer:")
    with pytest.raises(ValueError, match="raise the token budget"):
        PromptBuilder(max_tokens=10, count_tokens=count)(titles, "Target (2000)")


@pytest.mark.slow
def test_embedded_smollm2_converts_once_and_matches_the_gguf(tmp_path):
    from transformers import AutoModelForCausalLM

    path = llm.resolve_model_path(llm.EMBEDDED, tmp_path)
    record = json.loads((path / "conversion.json").read_text())
    assert record["weights_sha256"] == llm._sha256(path / "model.safetensors")
    assert llm.resolve_model_path(llm.EMBEDDED, tmp_path) == path  # cached: no second conversion
    loaded = llm.load(path, device="cpu")
    src = llm.gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    prompt = PromptBuilder()(["Toy Story (1995)"], "Heat (1995)")
    ids = loaded.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        ours = loaded.model(**ids).logits[0, -1]
        theirs = reference(**ids).logits[0, -1]
    assert torch.equal(ours, theirs)
    # the real model puts " Yes" and " No" among its top answers after "#Answer:"
    top = set(ours.topk(10).indices.tolist())
    assert {loaded.yes_id, loaded.no_id} <= top
