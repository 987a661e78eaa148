"""Which lines of its pages does a windowed model read: by where a line is drawn in the encoder's
cells, or by where the line comes in the text?

Reads held-out English pages twice, teacher-forced (the stage-2 layout of `vist2 eval ocr`'s page
gain): as drawn, and drawn one line lower (an empty first line), the loss always on the same
text tokens. If the model reads by position in the text, a text line's gain stays where it was;
if it reads some place in a cell (say, the top line of each row of cells), the gain follows the
line to its new place. Pages whose text would move in any other way (reflowed, or the font
shrunk to fit the extra line) are left out, so use fewer tokens a page than the model's K:

    python scripts/line_shift_probe.py /work/runs/r38-ocr-pitch16/model --page-tokens 48 \\
        --pages 40 --out docs/quality/r-sweep/run-38/line-shift.json

Needs a model with a fixed line pitch (`RenderConfig.line_height`) that divides its
`vision_window`, such as run 38's (`scripts/with_density.py --line-height 16 --margin 0`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from vist2.engine import Engine
from vist2.errors import Vist2Error
from vist2.eval.data import read_eval_documents
from vist2.eval.ocr import ocr_pages
from vist2.eval.page_loss import gain_row, page_token_nll, token_lines


def moves_one_line_down(renderer, text: str, pitch: int) -> bool:
    """Whether drawing "\\n" + text puts every character one line lower and nowhere else."""
    _, boxes = renderer.char_boxes(text)  # (m, 5): index, x0, y0, x1, y1
    _, shifted = renderer.char_boxes("\n" + text)
    if len(boxes) == 0 or len(boxes) != len(shifted):
        return False
    expected = boxes.copy()
    expected[:, 0] += 1  # the newline comes first in the text
    expected[:, [2, 4]] += pitch
    return bool(np.array_equal(expected, shifted))


def line_gains(real: list, blank: list, lines: list) -> list[dict]:
    """The page gain of the tokens on each line (0 = top), over every page."""
    r, b = torch.cat(real).numpy(), torch.cat(blank).numpy()  # (tokens,)
    line = np.concatenate(lines)  # (tokens,)
    return [gain_row(r[line == k], b[line == k]) for k in range(line.max() + 1)]


def place_in_cell(page_line: int, pitch: int, window: int) -> int:
    """0 for a line drawn at the top of its row of cells, 1 for the next, ...
    (`window`: a cell's height in pixels)."""
    return (page_line * pitch % window) // pitch


def probe(engine: Engine, pages: list) -> dict:
    config = engine.model.config
    pitch, shape = config.render_config.line_height, config.window_shape
    window = shape[0] if shape else 0  # a cell's height
    if not pitch or not window or window % pitch:
        raise SystemExit(
            "line_shift_probe.py: the model needs a fixed line pitch that divides its "
            f"vision_window (render.line_height {pitch}, vision_window {window}); "
            "make one with scripts/with_density.py --line-height 16 --margin 0"
        )
    kept = [p for p in pages if moves_one_line_down(engine.renderer, p.text, pitch)]
    shifted = [SimpleNamespace(text="\n" + p.text, token_ids=p.token_ids) for p in kept]
    blank = page_token_nll(engine.model, engine, kept, blank=True)
    lines = [token_lines(engine.renderer, engine.tokenizer, p.token_ids) for p in kept]
    as_drawn = line_gains(page_token_nll(engine.model, engine, kept, False), blank, lines)
    lower = line_gains(page_token_nll(engine.model, engine, shifted, False), blank, lines)
    rows = [
        {
            "text_line": k + 1,
            "as_drawn": as_drawn[k] | {"place_in_cell": place_in_cell(k, pitch, window)},
            "one_line_lower": lower[k] | {"place_in_cell": place_in_cell(k + 1, pitch, window)},
        }
        for k in range(len(as_drawn))
    ]
    return {"pages": len(kept), "pages_left_out": len(pages) - len(kept), "lines": rows}


def by_place(rows: list[dict]) -> dict:
    """Token-weighted gain of the lines at each place in a cell, in each drawing."""
    out = {}
    for drawing in ("as_drawn", "one_line_lower"):
        for place in sorted({row[drawing]["place_in_cell"] for row in rows}):
            part = [row[drawing] for row in rows if row[drawing]["place_in_cell"] == place]
            n = sum(x["tokens"] for x in part)
            gain = sum(x["gain_nats"] * x["tokens"] for x in part) / max(n, 1)
            out[f"{drawing}, place {place}"] = {"gain_nats": gain, "tokens": n}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a model directory (with a fixed line pitch)")
    p.add_argument("--data", default="../shared/corpora/en", help="a corpus folder (held-out part)")
    p.add_argument("--page-tokens", type=int, default=48, help="text tokens a page (< K)")
    p.add_argument("--pages", type=int, default=40)
    p.add_argument("--out", help="write the figures here as JSON")
    args = p.parse_args()
    try:
        run(args)
    except Vist2Error as err:  # a missing model or corpus: one line
        raise SystemExit(f"line_shift_probe.py: {err}") from None


def run(args: argparse.Namespace) -> None:
    engine = Engine.from_pretrained(args.model)
    beta = engine.model.config.visual_tokens_per_page
    docs = read_eval_documents(args.data, "heldout")
    pages = ocr_pages(docs, engine.tokenizer, args.page_tokens, beta, args.pages)
    result = probe(engine, pages) | {"model": args.model, "page_tokens": args.page_tokens}
    result["by_place_in_cell"] = by_place(result["lines"])
    print(f"{result['pages']} pages ({result['pages_left_out']} left out: text reflowed)")
    print("text line | as drawn: place in cell, gain | one line lower: place in cell, gain")
    for row in result["lines"]:
        a, b = row["as_drawn"], row["one_line_lower"]
        print(
            f"{row['text_line']:9d} | {a['place_in_cell']}, {a['gain_nats']:6.3f} "
            f"({a['tokens']} tokens) | {b['place_in_cell']}, {b['gain_nats']:6.3f}"
        )
    for name, value in result["by_place_in_cell"].items():
        print(f"{name}: gain {value['gain_nats']:.3f} over {value['tokens']} tokens")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
