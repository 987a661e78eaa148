"""Turn a page-wide VIST2 model into a windowed one (VIST2Config.vision_window) that keeps its
LLM, aligner and encoder weights: the start of the `small-windowed` warm run.

The encoder then sees one w x w window at a time, so its position embeddings shrink from the
page's patch grid to the window's: each window gets the top-left (w/p) x (w/p) block of the
page-wide table. Everything else is copied unchanged (same shapes). The source's training record
(training.json) goes along, marked `converted`, so a run from the result keeps its history.

    python scripts/windowed_from.py vist2-small --window 32 --out /work/runs/sw-warm-init
"""

from __future__ import annotations

import argparse

import torch

from vist2.config import VIST2Config
from vist2.errors import Vist2Error
from vist2.loading import load_model, save_model
from vist2.model import VIST2Model
from vist2.training.export import carry_history

POSITIONS = "embeddings.position_embedding.weight"


def windowed_config(config: VIST2Config, window: int) -> VIST2Config:
    """`config` with the encoder seeing `window` px windows (a SigLIP encoder's image_size too)."""
    return config.replaced(vision_window=window, vision_config={"image_size": window})


def crop_positions(table: torch.Tensor, page_side: int, window_side: int) -> torch.Tensor:
    """(page_side², D) position embeddings -> (window_side², D): the top-left block of the grid."""
    grid = table.reshape(page_side, page_side, -1)  # [rows, cols, D]
    return grid[:window_side, :window_side].reshape(window_side * window_side, -1).clone()


def windowed_from(source: VIST2Model, window: int) -> VIST2Model:
    if source.config.vision_config.model_type != "siglip_vision_model":
        raise SystemExit("windowed_from.py: only SigLIP (fixed-size) encoders are handled")
    model = VIST2Model(windowed_config(source.config, window))
    model.language_model.load_state_dict(source.language_model.state_dict())
    model.aligner.load_state_dict(source.aligner.state_dict())
    vision = source.vision_model.state_dict()
    patch = source.config.vision_config.patch_size
    vision[POSITIONS] = crop_positions(
        vision[POSITIONS], source.config.vision_config.image_size // patch, window // patch
    )
    model.vision_model.load_state_dict(vision)
    return model.float()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a page-wide model directory or a shipped name (vist2-small)")
    p.add_argument("--window", type=int, required=True, help="window side in pixels")
    p.add_argument("--out", required=True, help="directory to write")
    args = p.parse_args()
    try:
        convert(args)
    except Vist2Error as err:  # a missing model, a K or window the config rejects: one line
        raise SystemExit(f"windowed_from.py: {err}") from None


def convert(args: argparse.Namespace) -> None:
    source, tokenizer = load_model(args.model)
    save_model(windowed_from(source.float(), args.window), tokenizer, args.out)
    carry_history(args.model, args.out, f"scripts/windowed_from.py --window {args.window}")
    print(f"wrote {args.out}: {args.model} with vision_window {args.window}")


if __name__ == "__main__":
    main()
