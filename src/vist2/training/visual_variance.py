"""An anti-collapse term for training a vision encoder from scratch: keep the visual tokens
different from page to page until the LLM has learned to read them.

A small random-init VIST2 model trained on OCR alone turns its visual tokens into one constant
within ~50 steps (their spread over pages falls from ~0.3 to ~0.01 of their size): to a model
that cannot read yet, page-to-page differences are noise, and the fastest way to remove noise is
to remove the differences — after which nothing is left to learn to read from. This term (the
variance part of VICReg, Bardes et al. 2022) is a hinge on each feature's standard deviation over
the pages of a micro-batch, with the tokens scaled to unit RMS first so that shrinking them all
does not count as variety. It is zero once the tokens vary enough, so it only stops the collapse.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def variance_penalty(visual: torch.Tensor, target: float) -> torch.Tensor:
    """visual: (N, β, D) visual tokens of N pages -> scalar mean of relu(target - std over the
    pages) per (token, feature), tokens first scaled to unit RMS. Zero for N < 2."""
    if visual.shape[0] < 2:
        return visual.sum() * 0.0  # keeps the graph (and DDP's hooks) connected
    unit = visual / visual.float().pow(2).mean(-1, keepdim=True).add(1e-6).sqrt().to(visual.dtype)
    return torch.relu(target - unit.float().std(0)).mean()  # std over pages: [β, D]


@contextmanager
def capture_visual_tokens(aligner: nn.Module) -> Iterator[list[torch.Tensor]]:
    """While open, every output of `aligner` (N, β, D) is appended to the yielded list."""
    captured: list[torch.Tensor] = []
    handle = aligner.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        yield captured
    finally:
        handle.remove()


__all__ = ["capture_visual_tokens", "variance_penalty"]
