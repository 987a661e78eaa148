"""What does one visual token keep of each line in its cell? A probe on a windowed model's tokens.

For a model whose pages put a whole number of lines in each row of its encoder's cells (a fixed
`RenderConfig.line_height` dividing `vision_window`, e.g. run 38's 16 px pitch: two lines a
cell), this encodes English pages, takes each visual token (what the LLM sees, after the
aligner) and trains a small MLP on it to say which letters (a-z, case folded) are drawn on each
line of its cell. Fitted on pages from the training part, scored on held-out pages: per place in
the cell (0 = its top line), the share of the letters' uncertainty the token removes
(1 - probe loss / the loss of guessing each letter's base rate; 0 = the token tells nothing about
that line, 1 = everything):

    python scripts/cell_probe.py /work/runs/r38-ocr-pitch16/model \\
        --out docs/quality/r-sweep/run-38/cell-probe.json

If the second line's share is much lower than the top line's, the visual token does not carry
it (the encoder's side); if they are alike, the LLM does not read it out (the LLM's side).
`--features encoder` probes the encoder's patches each token is merged from instead (the
aligner's input, m² patches side by side): whether the encoder or the aligner loses it.
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from vist2.engine import Engine
from vist2.errors import Vist2Error
from vist2.eval.data import read_eval_documents
from vist2.eval.ocr import ocr_pages

LETTERS = string.ascii_lowercase


def cell_targets(
    renderer, text: str, window: tuple[int, int], pitch: int, grid: tuple[int, int]
) -> np.ndarray:
    """(cells, lines_per_cell, 26) 0/1: which letters are drawn on each line of each cell, cells
    in the order of the page's visual tokens (row-major); `window` is a cell's (height, width)."""
    rows, cols = grid
    (cell_h, cell_w), per_cell = window, window[0] // pitch
    out = np.zeros((rows * cols, per_cell, len(LETTERS)), np.float32)
    norm, boxes = renderer.char_boxes(text)  # (m, 5): index, x0, y0, x1, y1
    for index, x0, y0, x1, _ in boxes:
        letter = LETTERS.find(norm[index].lower())
        if letter < 0:
            continue
        cx = (x0 + x1) // 2  # a glyph belongs to the cell holding its middle
        cell = (y0 // cell_h) * cols + min(cx // cell_w, cols - 1)
        out[cell, (y0 % cell_h) // pitch, letter] = 1.0
    return out


class EncoderFeatures:
    """Catches the encoder's patch features of each visual token on their way into the aligner:
    (N, β, m²·D_vision), the m × m patches the aligner merges into that token, side by side."""

    def __init__(self, aligner: nn.Module) -> None:
        self.aligner, self.last = aligner, None
        self.handle = aligner.register_forward_hook(self.catch)

    def catch(self, module, inputs, output) -> None:
        self.last = module.pixel_shuffle(inputs[0])  # [N, β, m²·D_vision]


@torch.no_grad()
def tokens_and_targets(engine: Engine, pages: list, where: str = "aligner", batch: int = 32):
    """(N·β, D) features of each visual token (`where`: "aligner", the token the LLM sees; or
    "encoder", the encoder's patches it is merged from) and their (N·β, lines_per_cell, 26)
    targets."""
    config = engine.model.config
    caught = EncoderFeatures(engine.model.aligner) if where == "encoder" else None
    window, pitch = config.window_shape, config.render_config.line_height
    height, width = config.render["page_height"], config.render["page_width"]
    grid = (height // window[0], width // window[1])
    feats, targets = [], []
    for start in range(0, len(pages), batch):
        texts = [p.text for p in pages[start : start + batch]]
        visual = engine.encode_texts(texts)[0]  # [B, β, D]
        if caught is not None:
            visual = caught.last  # [B, β, m²·D_vision]
        feats.append(visual.reshape(-1, visual.shape[-1]).float())
        targets += [cell_targets(engine.renderer, t, window, pitch, grid) for t in texts]
    if caught is not None:
        caught.handle.remove()
    return torch.cat(feats), torch.from_numpy(np.concatenate(targets))


def fit_probe(
    x: torch.Tensor, y: torch.Tensor, steps: int, seed: int, hidden: int = 512
) -> nn.Module:
    """An MLP from a token (D,) to the letter logits of each line of its cell (L, 26); with
    `hidden` 0, a linear map."""
    torch.manual_seed(seed)
    lines, letters = y.shape[1], y.shape[2]
    if hidden:
        layers = [nn.Linear(x.shape[1], hidden), nn.GELU(), nn.Linear(hidden, lines * letters)]
    else:
        layers = [nn.Linear(x.shape[1], lines * letters)]
    probe = nn.Sequential(*layers)
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=1e-2)
    mean, std = x.mean(0), x.std(0) + 1e-6
    probe.norm = (mean, std)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (256,))
        logits = probe((x[idx] - mean) / std).view(-1, lines, letters)
        loss = F.binary_cross_entropy_with_logits(logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe


@torch.no_grad()
def explained(probe: nn.Module, x: torch.Tensor, y: torch.Tensor, prior: torch.Tensor) -> list:
    """Per line of a cell: 1 - probe loss / base-rate loss on (x, y)."""
    mean, std = probe.norm
    logits = probe((x - mean) / std).view(y.shape)
    rate = prior.clamp(1e-4, 1 - 1e-4).expand_as(y)
    out = []
    for line in range(y.shape[1]):
        probe_loss = F.binary_cross_entropy_with_logits(logits[:, line], y[:, line])
        base_loss = F.binary_cross_entropy(rate[:, line], y[:, line])
        out.append(1 - float(probe_loss) / float(base_loss))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a windowed model with a fixed line pitch")
    p.add_argument("--data", default="../shared/corpora/en")
    p.add_argument("--train-pages", type=int, default=2400)
    p.add_argument("--test-pages", type=int, default=200)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=512, help="the probe's hidden width; 0 = linear")
    p.add_argument(
        "--features",
        choices=["aligner", "encoder"],
        default="aligner",
        help="the visual token the LLM sees, or the encoder's patches it is merged from",
    )
    p.add_argument("--out", help="write the figures here as JSON")
    args = p.parse_args()
    try:
        run(args)
    except Vist2Error as err:  # a missing model or corpus: one line
        raise SystemExit(f"cell_probe.py: {err}") from None


def run(args: argparse.Namespace) -> None:
    engine = Engine.from_pretrained(args.model)
    config = engine.model.config
    pitch, window = config.render_config.line_height, config.window_shape
    if not pitch or not window or window[0] % pitch:
        raise SystemExit(
            "cell_probe.py: the model needs a fixed line pitch that divides its vision_window "
            f"(render.line_height {pitch}, vision_window {window})"
        )
    k, beta = config.chunk_tokens, config.visual_tokens_per_page
    split = {}
    for part, n in (("train", args.train_pages), ("heldout", args.test_pages)):
        pages = ocr_pages(read_eval_documents(args.data, part), engine.tokenizer, k, beta, n)
        split[part] = tokens_and_targets(engine, pages, args.features)
    (x, y), (xt, yt) = split["train"], split["heldout"]
    prior = y.mean(0, keepdim=True)  # (1, L, 26) each letter's base rate on each line
    probe = fit_probe(x, y, args.steps, args.seed, args.hidden)
    result = {
        "model": args.model,
        "features": args.features,
        "hidden": args.hidden,
        "cells": {"train": len(x), "heldout": len(xt)},
        "letters_per_line": yt.sum(2).mean(0).tolist(),
        "explained_heldout": explained(probe, xt, yt, prior),
        "explained_train": explained(probe, x, y, prior),
    }
    for line, share in enumerate(result["explained_heldout"]):
        letters = result["letters_per_line"][line]
        print(
            f"line {line} of a cell: {share:.3f} of the letters' uncertainty ({letters:.1f} letters)"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
