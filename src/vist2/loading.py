"""Model directories: write, check and load them (config.json + model.safetensors + tokenizer).

Notable: every missing piece gets one message that names the file and the way to make it, instead
of the stack trace `from_pretrained` would give. A shipped model is loaded by name, offline, from
inside the package (`load_model("vist2-small")`, `vist2 generate --model vist2-small`); an
existing directory of the same name wins.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from transformers import AutoTokenizer

from vist2.errors import Vist2Error

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
MODEL_DIR = "model"  # where a training run directory keeps its trained model


SHIPPED_MODELS = ("vist2-small",)  # model directories inside the package: assets/models/NAME


def shipped_model_path(name: str) -> Path:
    """Where the shipped model `name` lives inside the installed package."""
    if name not in SHIPPED_MODELS:
        raise Vist2Error(f"no shipped model {name!r}; shipped: {', '.join(SHIPPED_MODELS)}")
    return Path(str(resources.files("vist2") / "assets" / "models" / name))


def tiny_tokenizer_path() -> Path:
    """The small byte-level BPE tokenizer bundled with vist2 (see scripts/make_tiny_tokenizer.py)."""
    return Path(str(resources.files("vist2") / "assets" / "tiny-tokenizer"))


def load_tokenizer(path: str | Path):
    """A Hugging Face fast tokenizer from a directory holding tokenizer.json."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise Vist2Error(
            f"tokenizer {path}: no tokenizer.json there; point at a directory with a Hugging Face "
            "fast tokenizer (tokenizer.json + tokenizer_config.json)"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    # Documents are compressed before they meet the LLM's position limit; the engine checks the
    # real budget, so the tokenizer's per-call length warning would only mislead.
    tokenizer.model_max_length = int(1e30)
    return tokenizer


def check_model_dir(path: str | Path, weights: bool = True) -> Path:
    """Raise a `Vist2Error` naming the first file a model directory lacks."""
    path = Path(path)
    if not path.is_dir():
        raise Vist2Error(
            f"model directory {path} does not exist; create one with `vist2 init --preset tiny --out {path}`"
        )
    needed = ["config.json", *TOKENIZER_FILES[:1]]
    if weights:
        needed.append("model.safetensors")
    for name in needed:
        if not (path / name).is_file() and not (
            name == "model.safetensors" and any(path.glob("model-*.safetensors"))
        ):
            raise Vist2Error(
                f"model directory {path} has no {name}; it is not a complete vist2 model "
                f"(make one with `vist2 init --preset tiny --out DIR`, or `save_pretrained`)"
            )
    return path


def resolve_model_dir(path: str | Path) -> Path:
    """A model directory, a training run directory whose `model/` holds the trained model, or
    the name of a shipped model (`SHIPPED_MODELS`) when no such path exists."""
    if str(path) in SHIPPED_MODELS and not Path(path).exists():
        shipped = shipped_model_path(str(path))
        if not (shipped / "model.safetensors").is_file():
            raise Vist2Error(
                f"the shipped model {path} is missing from this install ({shipped}); "
                "reinstall vist2, or export one with scripts/ship_small_model.sh"
            )
        return check_model_dir(shipped)
    path = Path(path)
    if (path / MODEL_DIR / "config.json").is_file() and not (path / "config.json").is_file():
        return path / MODEL_DIR
    if (path / "train_config.json").is_file() and not (path / MODEL_DIR).is_dir():
        raise Vist2Error(
            f"{path} is a run directory without a finished model ({path / MODEL_DIR}); "
            "finish or resume that run first"
        )
    return check_model_dir(path)


def load_config(path: str | Path):
    from vist2.config import VIST2Config

    return VIST2Config.from_pretrained(str(resolve_model_dir(path)))


def load_model(
    path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
):
    """(model, tokenizer) from a vist2 model directory (or a run directory), model in eval mode."""
    from vist2.model import VIST2Model

    path = resolve_model_dir(path)
    model = VIST2Model.from_pretrained(str(path), dtype=dtype).to(device).eval()
    return model, load_tokenizer(path)


def save_model(model, tokenizer, path: str | Path) -> Path:
    """Write model weights (safetensors), config.json and the tokenizer into `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
