"""Staged training of VIST2 models: captioning, multi-turn OCR, optical LM, instruction tuning.

Modules, one idea each:
- `config`: `TrainConfig` (typed, self-checking) and the stage recipes (paper Table 8, tiny).
- `sources`: plain inputs (text files, JSONL) -> records that remember file and line.
- `problems`: bad-data accounting under an error budget.
- `synthetic`: the built-in shapes caption set and synthetic chats for demos (`make_chat`
  writes them: `python -m vist2.training.make_chat CORPUS --out FILE.jsonl`).
- `curriculum`: the multi-turn OCR curriculum (easy / medium / hard) over training steps.
- `datasets`: per-stage datasets; tokenizing, chunking and rendering happen in DataLoader workers.
- `schedule`: warm-up + cosine learning rate.
- `checkpoint`: atomic, keep-last-N, resumable checkpoints.
- `metrics`: progress bar, metrics.jsonl (and TensorBoard).
- `trainer`: the one training loop (`train`).
- `plot`: loss curves to PNG.
- `cli`: `vist2 train` and `vist2 plot` (`add_commands`; `python -m vist2.training` stand-alone).
"""

from vist2.training.config import STAGES, CurriculumLevel, TrainConfig, recipe
from vist2.training.plot import plot_run, plot_runs
from vist2.training.trainer import TrainResult, train

__all__ = [
    "STAGES",
    "CurriculumLevel",
    "TrainConfig",
    "TrainResult",
    "plot_run",
    "plot_runs",
    "recipe",
    "train",
]
