"""Built-in synthetic data, so every stage runs with no download.

- Captions (stage 1): images of 1-4 shapes of one kind and colour in one or two quadrants, with a
  template caption ("two red circles in the top left and one blue square in the bottom right.").
  Sample i of seed s is always the same image; the set is as large as you ask. Colours are picked
  so their grayscale levels stay apart: the encoder reads grayscale pages.
- Chats (stage 4 demo data): `synthetic_chats` cuts {"prompt", "response"} examples from a text
  corpus: "continue this text" and "repeat this text" tasks (the repeat task can only be solved
  by reading the query's pages, which is what global context compression must learn).
  `python -m vist2.training.make_chat CORPUS --out FILE.jsonl` writes them.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

# name -> RGB; grayscale levels (ITU-R 601) 0, 29, 76, 100, 158, 204: at least 24 apart, and
# all of them well below the white paper (255).
COLOURS = {
    "black": (0, 0, 0),
    "blue": (0, 0, 255),
    "red": (255, 0, 0),
    "green": (0, 170, 0),
    "orange": (255, 140, 0),
    "yellow": (230, 230, 0),
}
SHAPES = ("circle", "square", "triangle", "diamond")
COUNT_WORDS = ("one", "two", "three", "four")
REGIONS = ("top left", "top right", "bottom left", "bottom right")  # quadrants, in caption order


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], fill
) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    else:  # diamond
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)


def synthetic_caption(index: int, seed: int, width: int, height: int) -> tuple[Image.Image, str]:
    """(RGB image of `width` x `height`, caption) of synthetic sample `index`; deterministic."""
    rng = random.Random(f"vist2-shapes-{seed}-{index}")
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    regions = sorted(rng.sample(range(len(REGIONS)), rng.choice((1, 1, 2))))
    parts = []
    qw, qh = width / 2, height / 2  # quadrant size
    cw, ch = qw / 2, qh / 2  # a quadrant holds a 2 x 2 grid of cells, one shape per cell
    for region in regions:
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        count = rng.randint(1, 4)
        qx, qy = (region % 2) * qw, (region // 2) * qh
        for cell in rng.sample(range(4), count):
            size = rng.uniform(0.55, 0.85) * min(cw, ch)
            x = qx + (cell % 2) * cw + rng.uniform(0, cw - size)
            y = qy + (cell // 2) * ch + rng.uniform(0, ch - size)
            _draw_shape(draw, shape, (x, y, x + size, y + size), COLOURS[colour])
        noun = shape + ("s" if count > 1 else "")
        parts.append(f"{COUNT_WORDS[count - 1]} {colour} {noun} in the {REGIONS[region]}")
    return image, " and ".join(parts) + "."


def image_to_page(image: Image.Image, width: int, height: int) -> torch.Tensor:
    """Any Pillow image -> a grayscale page (height, width) float32 in [-1, 1], white = +1.

    The image is scaled to fit and centred on white paper (aspect ratio kept).
    """
    gray = ImageOps.pad(image.convert("L"), (width, height), color=255)
    pixels = torch.from_numpy(np.asarray(gray, dtype=np.uint8).copy())  # (H, W) uint8
    return pixels.to(torch.float32).div_(127.5).sub_(1.0)


# -- synthetic chat data --------------------------------------------------------------------------

_CONTINUE = (
    "Continue this text:\n\n",
    "What comes next?\n\n",
    "Write the next part of this passage:\n\n",
)
_REPEAT = ("Repeat this text word for word:\n\n", "Copy the following passage exactly:\n\n")


def synthetic_chats(
    texts: list[str],
    n: int,
    seed: int = 0,
    context_chars: tuple[int, int] = (200, 600),
    answer_chars: tuple[int, int] = (80, 300),
) -> list[dict]:
    """`n` {"prompt", "response"} examples cut from `texts` (continue / repeat tasks)."""
    rng = random.Random(f"vist2-chat-{seed}")
    usable = [t for t in texts if len(t) > context_chars[1] + answer_chars[1] + 1]
    if not usable:
        raise ValueError("no text is long enough to cut chat examples from")
    out = []
    for _ in range(n):
        text = rng.choice(usable)
        context_len, answer_len = rng.randint(*context_chars), rng.randint(*answer_chars)
        start = rng.randrange(0, len(text) - context_len - answer_len)
        context = text[start : start + context_len].strip()
        if rng.random() < 0.5:
            prompt = rng.choice(_CONTINUE) + context
            response = text[start + context_len : start + context_len + answer_len].strip()
        else:
            prompt = rng.choice(_REPEAT) + context
            response = context
        if context and response:
            out.append({"prompt": prompt, "response": response})
    return out


__all__ = ["COLOURS", "SHAPES", "image_to_page", "synthetic_caption", "synthetic_chats"]
