"""Aligner: vision-encoder patch features -> LLM embeddings (β visual tokens per page).

Paper: `tanh(x W + b)` applied to each patch. Option: a pixel-shuffle merge of m×m neighbouring
patches into one token first (so a 512 px page at patch 16 still gives β = 256 tokens with m = 2),
and/or a two-layer MLP instead of the single tanh layer.
"""

from __future__ import annotations

import torch
from torch import nn


class Aligner(nn.Module):
    def __init__(
        self,
        vision_hidden: int,
        text_hidden: int,
        grid: tuple[int, int],
        merge_size: int = 1,
        kind: str = "tanh",
    ) -> None:
        super().__init__()
        self.grid = grid  # (rows, cols) of patches on a page
        self.merge_size = merge_size
        self.kind = kind
        merged = vision_hidden * merge_size * merge_size
        if kind == "tanh":
            self.proj = nn.Linear(merged, text_hidden)
        else:  # "mlp"
            self.proj = nn.Sequential(
                nn.Linear(merged, text_hidden), nn.GELU(), nn.Linear(text_hidden, text_hidden)
            )

    def pixel_shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """(N, rows*cols, D) -> (N, rows*cols / m², m²·D), merging m×m neighbouring patches."""
        m = self.merge_size
        if m == 1:
            return x
        n, _, d = x.shape
        rows, cols = self.grid
        x = x.reshape(n, rows // m, m, cols // m, m, d)  # [N, R/m, m, C/m, m, D]
        x = x.permute(0, 1, 3, 2, 4, 5)  # [N, R/m, C/m, m, m, D]
        return x.reshape(n, (rows // m) * (cols // m), m * m * d)  # [N, β, m²·D]

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches: (N, rows*cols, D_vision) -> (N, β, D_text)."""
        x = self.pixel_shuffle(patches)  # [N, β, m²·D_vision]
        x = self.proj(x)  # [N, β, D_text]
        return torch.tanh(x) if self.kind == "tanh" else x
