"""Which weights to evaluate: a model directory, a run directory (its `model/`), or one
checkpoint of a run (`RUN/checkpoints/step-N`), so that quality can be followed during training.

A checkpoint holds the weights (`model.safetensors`, the same keys as a model directory) but
not the config or tokenizer; those come from the model the run started from (`run.json`'s
"model"). `model_path` puts the three together in a temporary directory of symlinks.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vist2.errors import Vist2Error
from vist2.loading import resolve_model_dir


def is_checkpoint(path: Path) -> bool:
    return (path / "checkpoint.json").is_file() and not (path / "config.json").is_file()


@contextmanager
def model_path(path: str | Path) -> Iterator[Path]:
    """A loadable model directory for `path` (a checkpoint is assembled for the duration)."""
    path = Path(path)
    if not is_checkpoint(path):
        yield path
        return
    info = path.parent.parent / "run.json"
    if not info.is_file():
        raise Vist2Error(f"{path}: a checkpoint outside a run directory (no {info})")
    base = resolve_model_dir(json.loads(info.read_text(encoding="utf-8"))["model"])
    weights = sorted(path.glob("model*.safetensors"))
    if not weights:
        raise Vist2Error(f"{path}: this checkpoint has no model.safetensors")
    with tempfile.TemporaryDirectory(prefix="vist2-eval-") as tmp:
        for file in base.iterdir():
            if file.is_file() and not file.name.startswith("model"):  # config, tokenizer files
                (Path(tmp) / file.name).symlink_to(file.resolve())
        for file in weights:
            (Path(tmp) / file.name).symlink_to(file.resolve())
        yield Path(tmp)
