"""Draw rendered pages side by side with the windowed encoder's cells over them.

Each visual token of a windowed model (`VIST2Config.vision_window`) is encoded from one cell of
the page on its own (square, or H x W px); this draws those cells in red over pages rendered with
`vist2 render`, to show where the text falls (docs/model/half-vs-full-pages.png: a half-full
page at K = 32 beside a full one at K = 64):

    python scripts/with_density.py vist2-small --page-tokens 32 --out /tmp/k32
    sed -n 3000,3100p ../shared/corpora/en/moby_dick.txt > /tmp/text.txt
    vist2 render /tmp/text.txt --model /tmp/k32 --out /tmp/p32 --max-pages 1
    vist2 render /tmp/text.txt --model vist2-small --out /tmp/p64 --max-pages 1
    python scripts/draw_page_cells.py /tmp/p32/page_00000.png /tmp/p64/page_00000.png \\
        --titles "K = 32: OCR runs 9-21 (r = 2)" "K = 64: OLM, eval, OCR run 23 (r = 4)" \\
        --out docs/model/half-vs-full-pages.png

`--cell` takes one size for every page or one per page, each N or HxW (`--cell 32 16x64`).
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw, ImageFont

SCALE = 3  # nearest-neighbour upscale, so that glyphs and cells stay sharp
TITLE_HEIGHT = 28
GAP = 24


def parse_cell(text: str) -> tuple[int, int]:
    """ "32" -> (32, 32); "16x64" -> (16, 64): a cell's (height, width) in page pixels."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: give N or HxW, e.g. 32 or 16x64")
    return (int(parts[0]), int(parts[-1]))


def draw_cells(
    draw: ImageDraw.ImageDraw, x0: int, y0: int, size: tuple[int, int], cell: tuple[int, int]
):
    """Red lines around each (height, width) `cell` inside the (width, height) page at (x0, y0)."""
    width, height = size
    cell_h, cell_w = cell
    for x in range(cell_w * SCALE, width, cell_w * SCALE):
        draw.line([(x0 + x, y0), (x0 + x, y0 + height)], fill=(220, 60, 60))
    for y in range(cell_h * SCALE, height, cell_h * SCALE):
        draw.line([(x0, y0 + y), (x0 + width, y0 + y)], fill=(220, 60, 60))
    draw.rectangle([x0, y0, x0 + width - 1, y0 + height - 1], outline=(120, 120, 120))


def page_cells_figure(
    paths: list[str], titles: list[str], cells: list[tuple[int, int]]
) -> Image.Image:
    pages = [Image.open(path).convert("L") for path in paths]
    sizes = [(page.width * SCALE, page.height * SCALE) for page in pages]
    width = sum(w for w, _ in sizes) + GAP * (len(pages) - 1)
    height = max(h for _, h in sizes) + TITLE_HEIGHT
    figure = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default(size=16)
    x0 = 0
    for page, size, title, cell in zip(pages, sizes, titles, cells, strict=True):
        figure.paste(page.resize(size, Image.NEAREST).convert("RGB"), (x0, TITLE_HEIGHT))
        draw_cells(draw, x0, TITLE_HEIGHT, size, cell)
        draw.text((x0 + 4, 4), title, fill="black", font=font)
        x0 += size[0] + GAP
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="+", help="page PNGs from `vist2 render`")
    parser.add_argument("--titles", nargs="+", help="one title per page (default: file names)")
    parser.add_argument(
        "--cell",
        type=parse_cell,
        nargs="+",
        default=[(32, 32)],
        help="cell size in page pixels, N or HxW: one for all pages or one per page",
    )
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    titles = args.titles or args.pages
    if len(titles) != len(args.pages):
        parser.error(f"{len(args.pages)} pages but {len(titles)} titles")
    cells = args.cell * len(args.pages) if len(args.cell) == 1 else args.cell
    if len(cells) != len(args.pages):
        parser.error(f"{len(args.pages)} pages but {len(args.cell)} cell sizes")
    page_cells_figure(args.pages, titles, cells).quantize(16).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
