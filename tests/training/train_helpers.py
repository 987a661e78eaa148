"""Shared pieces of the training tests: a tiny model directory, tiny configs, small data files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import CORPORA, tiny_config
from PIL import Image

from vist2.loading import load_tokenizer, save_model, tiny_tokenizer_path
from vist2.model import VIST2Model
from vist2.training.config import TrainConfig, recipe


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models train several times faster on one thread, and a busy machine (other jobs on
    the 2 cores) slows multi-threaded ops by 10x or more; import this fixture into a test module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Per-stage sizes for tiny_config() (K=8, β=4, 64 px pages): a few ms per step on a CPU.
MAX_LENGTH = {"caption": 48, "ocr": 96, "olm": 64, "sft": 160}


SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str):
    """scripts/NAME.py as a module (the scripts are programs, not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_model_dir(path: Path, seed: int = 0) -> Path:
    """A random-init tiny_config() model with the bundled tiny tokenizer, saved to `path`."""
    torch.manual_seed(seed)
    save_model(VIST2Model(tiny_config()), load_tokenizer(tiny_tokenizer_path()), path)
    return path


def tiny_train_config(stage: str, **overrides) -> TrainConfig:
    """The tiny recipe shrunk further: 4 sequences a step in 2 micro-batches, no workers."""
    base = {
        "max_length": MAX_LENGTH[stage],
        "batch_size": 4,
        "micro_batch_size": 2,
        "max_steps": 4,
        "num_workers": 0,
        "save_every": 0,
        "progress": False,
        "cpu": True,
        "synthetic_size": 256,
    }
    return recipe(stage, "tiny").with_overrides({**base, **overrides})


def english_text(chars: int = 20_000) -> str:
    """Real English prose from ../shared (or a stand-in when it is missing)."""
    path = CORPORA / "en" / "pride_and_prejudice.txt"
    if path.is_file():
        return path.read_text(encoding="utf-8")[5_000 : 5_000 + chars]
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "while",
        "a",
        "small",
        "cat",
        "sleeps",
        "by",
        "the",
        "door",
    ]
    return " ".join(words[i % len(words)] for i in range(chars // 5))


def write_corpus(directory: Path, files: int = 3, chars: int = 6_000) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = english_text(files * chars)
    for i in range(files):
        (directory / f"doc{i}.txt").write_text(text[i * chars : (i + 1) * chars], encoding="utf-8")
    return directory


def write_chats(path: Path, n: int = 24) -> Path:
    text = english_text(40_000)
    lines = []
    for i in range(n):
        context = text[i * 300 : i * 300 + 120].strip()
        if i % 2:
            lines.append({"prompt": f"Repeat this text:\n\n{context}", "response": context})
        else:
            messages = [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"Continue: {context}"},
                {"role": "assistant", "content": text[i * 300 + 120 : i * 300 + 180].strip()},
            ]
            lines.append({"messages": messages})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def write_captions(directory: Path, n: int = 6, broken: tuple[int, ...] = ()) -> Path:
    """A caption JSONL with `n` small PNGs; images listed in `broken` are not images at all."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        name = f"img{i}.png"
        if i in broken:
            (directory / name).write_bytes(b"this is not a PNG")
        else:
            Image.new("RGB", (40 + i, 30), (20 * i, 0, 255 - 20 * i)).save(directory / name)
        lines.append({"image": name, "caption": f"a box of shade {i}."})
    path = directory / "captions.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))
