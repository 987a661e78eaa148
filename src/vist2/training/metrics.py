"""What a person watching a run sees: a progress bar, and metrics in `RUN_DIR/metrics.jsonl`.

- `Progress`: a tqdm bar over optimizer steps with loss, lr and tokens/s (tqdm adds the ETA).
  Main process only; `note` prints a line above the bar without breaking it.
- `MetricsLog`: one JSON object per logged step, flushed at once, so `vist2 plot` works while the
  run is going and after a crash. On resume the lines past the checkpoint's step are dropped
  (they are about to be re-done), so the log never holds a step twice.
- TensorBoard (optional): the same scalars through `torch.utils.tensorboard`.

Metrics of a step (all processes together): loss (mean over the labelled tokens of the global
batch), lr and lr/<module> (the rates the step used), grad_norm (before clipping),
labelled_tokens, slots (layout slots without padding: text + visual tokens), pages,
tokens_per_s (slots per second), step_time_s, elapsed_s, epoch, bad_records.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from vist2.errors import ConfigError

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (a torn last line, from a crash, is ignored)."""
    records = []
    path = Path(path)
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLog:
    """Append-only JSONL metrics of a run (and TensorBoard scalars if asked)."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = False) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    "TrainConfig.tensorboard is true but the tensorboard package is missing; "
                    "`pip install tensorboard` or set it to false"
                ) from None
            self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after `step` (work a crash lost; it is about to be redone)."""
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def log(self, record: dict[str, Any]) -> None:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(clean) + "\n")
        if self._writer is not None:
            step = record["step"]
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float) and value is not None:
                    self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _si(value: float) -> str:
    """12345 -> '12.3k'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


class Progress:
    """tqdm bar over optimizer steps; disabled (silent) off the main process."""

    def __init__(self, total: int, initial: int, description: str, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=description,
            unit="step",
            disable=not enabled,
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def update(self, loss: float, lr: float, tokens_per_s: float) -> None:
        if not self.enabled:
            return
        self.bar.set_postfix_str(
            f"loss={loss:.4f}, lr={lr:.2e}, tok/s={_si(tokens_per_s)}", refresh=False
        )
        self.bar.update(1)

    def note(self, message: str) -> None:
        if self.enabled:
            self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


__all__ = ["METRICS_FILE", "MetricsLog", "Progress", "read_metrics"]
