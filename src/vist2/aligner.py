"""Aligner: vision-encoder patch features -> LLM embeddings (β visual tokens per page).

Paper: `tanh(x W + b)` applied to each patch. Option: a pixel-shuffle merge of m×m neighbouring
patches into one token first (so a 512 px page at patch 16 still gives β = 256 tokens with m = 2),
or of a rows × cols rectangle of them (2 × 8: a token half a line wide and one line tall), and/or
a two-layer MLP instead of the single tanh layer.
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
        merge_size: int | tuple[int, int] = 1,
        kind: str = "tanh",
    ) -> None:
        super().__init__()
        self.grid = grid  # (rows, cols) of patches on a page
        if isinstance(merge_size, int):
            merge_size = (merge_size, merge_size)
        self.merge_shape = tuple(merge_size)  # (rows, cols) of patches merged into one token
        self.kind = kind
        merged = vision_hidden * self.merge_shape[0] * self.merge_shape[1]
        if kind == "tanh":
            self.proj = nn.Linear(merged, text_hidden)
        else:  # "mlp"
            self.proj = nn.Sequential(
                nn.Linear(merged, text_hidden), nn.GELU(), nn.Linear(text_hidden, text_hidden)
            )

    def pixel_shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """(N, rows*cols, D) -> (N, β, mr·mc·D), merging mr × mc neighbouring patches
        (β = rows/mr · cols/mc, row by row; each token's patches row by row inside it)."""
        mr, mc = self.merge_shape
        if mr == mc == 1:
            return x
        n, _, d = x.shape
        rows, cols = self.grid
        x = x.reshape(n, rows // mr, mr, cols // mc, mc, d)  # [N, R/mr, mr, C/mc, mc, D]
        x = x.permute(0, 1, 3, 2, 4, 5)  # [N, R/mr, C/mc, mr, mc, D]
        return x.reshape(n, (rows // mr) * (cols // mc), mr * mc * d)  # [N, β, mr·mc·D]

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches: (N, rows*cols, D_vision) -> (N, β, D_text)."""
        x = self.pixel_shuffle(patches)  # [N, β, m²·D_vision]
        x = self.proj(x)  # [N, β, D_text]
        return torch.tanh(x) if self.kind == "tanh" else x
