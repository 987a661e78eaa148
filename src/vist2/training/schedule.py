"""Learning-rate schedule: linear warm-up, then cosine decay (paper Table 8: warm-up 1 %, cosine).

`WarmupCosine` is a callable object rather than a lambda so `LambdaLR.state_dict()` can save it
and a resumed run continues the same curve.
"""

from __future__ import annotations

import math

import torch


class WarmupCosine:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based).

    Steps 0 .. warmup-1 rise linearly to 1 ((step + 1) / warmup, so the first step already
    learns); the remaining steps follow a half cosine from 1 down to `min_ratio`.
    """

    def __init__(self, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> None:
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / decay_steps, 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float,
    min_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over every param group: warm-up for ceil(warmup_fraction x total_steps) steps."""
    warmup = math.ceil(warmup_fraction * total_steps) if warmup_fraction > 0 else 0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(total_steps, warmup, min_ratio)
    )


__all__ = ["WarmupCosine", "warmup_cosine_scheduler"]
