"""Checkpoints that survive crashes: atomic, keep-last-N, complete enough to resume exactly.

Layout of `RUN_DIR/checkpoints/`:

    step-00000050/          a complete checkpoint (accelerate's `save_state` files:
                            model.safetensors, optimizer.bin, random_states_<rank>.pkl,
                            custom_checkpoint_0.pkl = LR scheduler, custom_checkpoint_1.pkl =
                            trainer state: step, data position, bad records)
                            + checkpoint.json, written last
    .tmp-step-00000100/     a save in progress (or one a crash interrupted; ignored, removed)

A save writes everything into the `.tmp-` directory, fsyncs every file and the directory, and
only then renames it to `step-N` (a rename within one file system is atomic) and fsyncs the
parent. A crash at any point leaves either the old set of checkpoints or the old set plus the new
one, never a half-written `step-N`. Older checkpoints beyond `keep_last` are deleted only after
the new one is in place. Resume reads the newest `step-N` that has its `checkpoint.json`.

The RNG state (python, numpy, torch, CUDA; one file per process), model, optimizer and
registered objects are accelerate's (`Accelerator.save_state` / `load_state`), so FSDP and
DeepSpeed shards are saved the way those engines want. All processes call `save`; the
directory moves are done by the main process between barriers. (Multi-node runs need the run
directory on a shared file system.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

PREFIX = "step-"
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
MARKER = "checkpoint.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (so a rename or a new entry in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every directory, deepest first."""
    dirs = []
    for dirpath, _, filenames in os.walk(root):
        dirs.append(Path(dirpath))
        for name in filenames:
            fsync_path(Path(dirpath) / name)
    for d in reversed(dirs):
        fsync_path(d)


def replace_dir(src: Path, dst: Path) -> None:
    """Move complete directory `src` to `dst` atomically; an existing `dst` is swapped out first
    and deleted after (so there is always one complete copy on disk)."""
    old = dst.parent / f"{OLD_PREFIX}{dst.name}"
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    fsync_path(dst.parent)
    if old.exists():
        shutil.rmtree(old)


class _TiedWeightsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


@contextlib.contextmanager
def _quiet_tied_weights():
    """accelerate warns on every save that a tied LM head is stored once; that is expected here
    (the tie is restored on load), so keep it off the console."""
    logger = logging.getLogger("accelerate.utils.other")
    quiet = _TiedWeightsFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


class CheckpointManager:
    """Atomic checkpoints of an accelerate run in `directory`, keeping the newest `keep_last`."""

    def __init__(self, directory: str | Path, keep_last: int = 2) -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last

    def path_for(self, step: int) -> Path:
        return self.directory / f"{PREFIX}{step:08d}"

    def complete(self) -> list[tuple[int, Path]]:
        """(step, path) of every complete checkpoint, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _STEP_DIR.match(path.name)
            if match and (path / MARKER).is_file():
                found.append((int(match.group(1)), path))
        return sorted(found)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        found = self.complete()
        return found[-1][1] if found else None

    def save(self, accelerator, step: int, info: dict | None = None) -> Path:
        """Write the accelerate state at `step` atomically; every process must call this."""
        final = self.path_for(step)
        tmp = self.directory / f"{TMP_PREFIX}{final.name}"
        if accelerator.is_main_process:
            self.directory.mkdir(parents=True, exist_ok=True)
            if tmp.exists():  # left by a crash during an earlier save of this step
                shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        with _quiet_tied_weights():
            accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            marker = {"step": step, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **(info or {})}
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
            fsync_tree(tmp)
            replace_dir(tmp, final)
            self.prune()
        accelerator.wait_for_everyone()
        return final

    def prune(self) -> None:
        """Delete complete checkpoints beyond `keep_last` and leftovers of interrupted saves."""
        for _, path in self.complete()[: -self.keep_last]:
            shutil.rmtree(path, ignore_errors=True)
        if self.directory.is_dir():
            for path in self.directory.iterdir():
                if path.name.startswith((TMP_PREFIX, OLD_PREFIX)):
                    shutil.rmtree(path, ignore_errors=True)

    def load(self, accelerator, path: str | Path) -> None:
        """Restore model, optimizer, registered objects and RNG states from checkpoint `path`."""
        accelerator.load_state(str(path))


__all__ = ["CheckpointManager", "fsync_path", "fsync_tree", "replace_dir"]
