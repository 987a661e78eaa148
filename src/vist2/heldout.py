"""Which part of a corpus is held out from training, so that quality is measured on unseen text.

One rule for every document source, applied by the training loaders (they read the `train` part
by default) and by `vist2 eval` (it reads the `heldout` part by default):

- a plain text file: its last `HELDOUT_FRACTION` of characters is held out, cut at the first line
  break after that mark (so no line is split between the two parts);
- a JSONL file of documents: every `HELDOUT_EVERY`-th record (line numbers 10, 20, ...) is held
  out.

For the corpora in ../shared this holds out, e.g., the last ~126k characters of Moby Dick and the
last chapters of each Chinese novel. Pass `split="all"` to read a file whole (an evaluation file
of your own that no training run has seen).
"""

from __future__ import annotations

SPLITS = ("train", "heldout", "all")
HELDOUT_FRACTION = 0.1
HELDOUT_EVERY = 10


def heldout_start(text: str, fraction: float = HELDOUT_FRACTION) -> int:
    """Index of the first held-out character of `text` (== len(text) when nothing is held out)."""
    mark = int(len(text) * (1.0 - fraction))
    if mark >= len(text):
        return len(text)
    newline = text.find("\n", mark)
    return len(text) if newline < 0 else newline + 1


def split_text(text: str, split: str) -> str:
    """The `split` part of one text file's contents."""
    check_split(split)
    if split == "all":
        return text
    cut = heldout_start(text)
    return text[:cut] if split == "train" else text[cut:]


def record_in_split(line_number: int, split: str) -> bool:
    """Whether JSONL record number `line_number` (1-based) belongs to `split`."""
    check_split(split)
    if split == "all":
        return True
    held = line_number % HELDOUT_EVERY == 0
    return held if split == "heldout" else not held


def check_split(split: str) -> None:
    if split not in SPLITS:
        from vist2.errors import ConfigError

        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")


__all__ = [
    "HELDOUT_EVERY",
    "HELDOUT_FRACTION",
    "SPLITS",
    "heldout_start",
    "record_in_split",
    "split_text",
]
