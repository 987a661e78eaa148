"""Draw rendered pages side by side with the windowed encoder's cells over them.

Each visual token of a windowed model (`VIST2Config.vision_window`) is encoded from one square
cell of the page on its own; this draws those cells in red over pages rendered with
`vist2 render`, to show where the text falls (docs/model/half-vs-full-pages.png: a half-full
page at K = 32 beside a full one at K = 64):

    python scripts/with_density.py vist2-small --page-tokens 32 --out /tmp/k32
    sed -n 3000,3100p ../shared/corpora/en/moby_dick.txt > /tmp/text.txt
    vist2 render /tmp/text.txt --model /tmp/k32 --out /tmp/p32 --max-pages 1
    vist2 render /tmp/text.txt --model vist2-small --out /tmp/p64 --max-pages 1
    python scripts/draw_page_cells.py /tmp/p32/page_00000.png /tmp/p64/page_00000.png \\
        --titles "K = 32: OCR runs 9-21 (r = 2)" "K = 64: OLM, eval, OCR run 23 (r = 4)" \\
        --out docs/model/half-vs-full-pages.png
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw, ImageFont

SCALE = 3  # nearest-neighbour upscale, so that glyphs and cells stay sharp
TITLE_HEIGHT = 28
GAP = 24


def draw_cells(draw: ImageDraw.ImageDraw, x0: int, y0: int, size: tuple[int, int], cell: int):
    """Red lines every `cell` page pixels inside the (width, height) page at (x0, y0)."""
    width, height = size
    for x in range(cell * SCALE, width, cell * SCALE):
        draw.line([(x0 + x, y0), (x0 + x, y0 + height)], fill=(220, 60, 60))
    for y in range(cell * SCALE, height, cell * SCALE):
        draw.line([(x0, y0 + y), (x0 + width, y0 + y)], fill=(220, 60, 60))
    draw.rectangle([x0, y0, x0 + width - 1, y0 + height - 1], outline=(120, 120, 120))


def page_cells_figure(paths: list[str], titles: list[str], cell: int) -> Image.Image:
    pages = [Image.open(path).convert("L") for path in paths]
    sizes = [(page.width * SCALE, page.height * SCALE) for page in pages]
    width = sum(w for w, _ in sizes) + GAP * (len(pages) - 1)
    height = max(h for _, h in sizes) + TITLE_HEIGHT
    figure = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default(size=16)
    x0 = 0
    for page, size, title in zip(pages, sizes, titles, strict=True):
        figure.paste(page.resize(size, Image.NEAREST).convert("RGB"), (x0, TITLE_HEIGHT))
        draw_cells(draw, x0, TITLE_HEIGHT, size, cell)
        draw.text((x0 + 4, 4), title, fill="black", font=font)
        x0 += size[0] + GAP
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="+", help="page PNGs from `vist2 render`")
    parser.add_argument("--titles", nargs="+", help="one title per page (default: file names)")
    parser.add_argument("--cell", type=int, default=32, help="cell size in page pixels")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    titles = args.titles or args.pages
    if len(titles) != len(args.pages):
        parser.error(f"{len(args.pages)} pages but {len(titles)} titles")
    page_cells_figure(args.pages, titles, args.cell).quantize(16).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
