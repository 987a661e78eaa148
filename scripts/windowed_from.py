"""Turn a VIST2 model into a windowed one (VIST2Config.vision_window) that keeps its LLM, aligner
and encoder weights: the start of the `small-windowed` warm run, and of the one-line-a-token
windows of run 40 (docs/model/vist2-small.md).

The encoder then sees one window at a time, so its position embeddings shrink from the source's
patch grid (the page's, or its windows') to the new window's: each window gets the top-left block
of the source table. A rectangular window (`--window 16x64`) holding as many patches as the
source's square window keeps the table as it is, read row by row over its patches (a SigLIP (v1)
table is one learned row per patch; training finds what each now means). `--merge RxC` changes
how many patches make one visual token (the aligner's input keeps its width when R·C is
unchanged). Everything else is copied unchanged (same shapes). The source's training record
(training.json) goes along, marked `converted`, so a run from the result keeps its history.

    python scripts/windowed_from.py vist2-small --window 32 --out /work/runs/sw-warm-init
    python scripts/windowed_from.py /work/runs/r34-pitch16/model --window 16x64 --merge 2x8 \
        --out /work/runs/r34-lines/model
"""

from __future__ import annotations

import argparse
import math

import torch

from vist2.config import VIST2Config
from vist2.errors import ConfigError, Vist2Error
from vist2.loading import load_model, save_model
from vist2.model import VIST2Model
from vist2.training.export import carry_history

POSITIONS = "embeddings.position_embedding.weight"


def parse_shape(text: str) -> int | list[int]:
    """ "32" -> 32 (a square); "16x64" -> [16, 64] (rows x cols, or height x width)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return parts
    raise argparse.ArgumentTypeError(f"{text!r}: give N or HxW, e.g. 32 or 16x64")


def shape_text(shape: int | list[int]) -> str:
    """32 -> "32"; [16, 64] -> "16x64": `parse_shape` backwards."""
    return "x".join(map(str, shape)) if isinstance(shape, list) else str(shape)


def windowed_config(
    config: VIST2Config, window: int | list[int], merge: int | list[int] | None = None
) -> VIST2Config:
    """`config` with the encoder seeing `window` px windows (SigLIP's image_size: the square
    holding as many patches), merging `merge` patches into a token when given."""
    height, width = (window, window) if isinstance(window, int) else window
    patch = config.vision_config.patch_size
    side = math.isqrt((height // patch) * (width // patch))
    if side * side != (height // patch) * (width // patch) or height % patch or width % patch:
        raise ConfigError(
            f"--window {height}x{width}: a SigLIP encoder needs a square number of "
            f"{patch} px patches in a window"
        )
    changes = {"vision_window": window, "vision_config": {"image_size": side * patch}}
    if merge is not None:
        changes["merge_size"] = merge
    return config.replaced(**changes)


def crop_positions(
    table: torch.Tensor, grid: tuple[int, int], window: tuple[int, int]
) -> torch.Tensor:
    """(rows·cols, D) position embeddings of a `grid` of patches -> (wr·wc, D) for a `window` of
    wr x wc patches: the top-left block of the grid, or the table as it is when the counts match."""
    rows, cols = grid
    if window[0] * window[1] == rows * cols:
        return table.clone()
    if window[0] > rows or window[1] > cols:
        raise ConfigError(
            f"a window of {window[0]} x {window[1]} patches does not fit the source's "
            f"{rows} x {cols}: crop from a page-wide model instead"
        )
    block = table.reshape(rows, cols, -1)[: window[0], : window[1]]  # [wr, wc, D]
    return block.reshape(window[0] * window[1], -1).clone()


def windowed_from(
    source: VIST2Model, window: int | list[int], merge: int | list[int] | None = None
) -> VIST2Model:
    if source.config.vision_config.model_type != "siglip_vision_model":
        raise SystemExit("windowed_from.py: only SigLIP (fixed-size) encoders are handled")
    model = VIST2Model(windowed_config(source.config, window, merge))
    model.language_model.load_state_dict(source.language_model.state_dict())
    model.aligner.load_state_dict(source.aligner.state_dict())
    vision = source.vision_model.state_dict()
    patch = source.config.vision_config.patch_size
    seen = source.config.window_shape or (
        source.config.render["page_height"],
        source.config.render["page_width"],
    )
    new = model.config.window_shape
    vision[POSITIONS] = crop_positions(
        vision[POSITIONS], (seen[0] // patch, seen[1] // patch), (new[0] // patch, new[1] // patch)
    )
    model.vision_model.load_state_dict(vision)
    return model.float()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a model directory or a shipped name (vist2-small)")
    p.add_argument(
        "--window", type=parse_shape, required=True, help="window side (32) or HxW (16x64) in px"
    )
    p.add_argument("--merge", type=parse_shape, help="patches a token, N or RxC (2x8)")
    p.add_argument("--out", required=True, help="directory to write")
    args = p.parse_args()
    try:
        convert(args)
    except Vist2Error as err:  # a missing model, a K or window the config rejects: one line
        raise SystemExit(f"windowed_from.py: {err}") from None


def convert(args: argparse.Namespace) -> None:
    source, tokenizer = load_model(args.model)
    save_model(windowed_from(source.float(), args.window, args.merge), tokenizer, args.out)
    done = f"scripts/windowed_from.py --window {shape_text(args.window)}"
    if args.merge is not None:
        done += f" --merge {shape_text(args.merge)}"
    carry_history(args.model, args.out, done)
    print(f"wrote {args.out}: {args.model} with vision_window {args.window}")


if __name__ == "__main__":
    main()
