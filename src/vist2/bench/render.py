"""Benchmark of the page renderer: pages/s and characters/s of each backend on real text.

What is notable here
- Both backends render the same chunks with the same layout, so the ratio is the cost of
  rasterisation alone (glyph atlas + numpy vs `ImageDraw.text`), layout included in both.
- Warm-up first (fonts, glyph atlases and per-size tables are filled once per renderer, as in a
  long training run), then repeated timed passes over the chunks; the median pass is reported.
- `python -m vist2.bench.render` runs it on ../shared/corpora (English: Moby Dick, Chinese:
  Hongloumeng) with the default `RenderConfig`; `--write-examples DIR` writes the two example
  pages shown in docs/ (page_en.png, page_zh.png).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

from PIL import Image

from vist2.render import BACKENDS, PageOverflowError, PageRenderer, RenderConfig

# src/vist2/bench/render.py -> the repo root -> ../shared beside it (as in CI).
CORPORA = Path(__file__).resolve().parents[4] / "shared" / "corpora"
# Where each sample starts: the first line of the novel (after the Project Gutenberg header).
SAMPLES = {
    "en": ("en/moby_dick.txt", "Call me Ishmael."),
    "zh": ("zh/hongloumeng.txt", "第一回  甄士隐"),
}


def run_render_benchmark(
    text: str,
    config: RenderConfig,
    chars_per_page: int,
    seconds: float = 3.0,
    max_pages: int = 64,
) -> dict[str, Any]:
    """Render `text` cut into `chars_per_page`-character chunks with each backend.

    Returns {"chars_per_page", "pages", "backends": {name: {"pages_per_s", "chars_per_s",
    "font_sizes", "repeats"}}, "speedup"} where speedup = atlas pages/s / pillow pages/s.
    Each backend gets about `seconds` of timed passes over at most `max_pages` chunks.
    """
    if chars_per_page < 1:
        raise ValueError(f"chars_per_page must be >= 1, got {chars_per_page}")
    chunks = [text[i : i + chars_per_page] for i in range(0, len(text), chars_per_page)]
    chunks = [c for c in chunks if c.strip()][:max_pages]
    if not chunks:
        raise ValueError("the text holds no non-blank chunk to render")
    n_chars = sum(len(c) for c in chunks)
    results: dict[str, Any] = {"chars_per_page": chars_per_page, "pages": len(chunks)}
    backends: dict[str, dict[str, Any]] = {}
    for backend in BACKENDS:
        renderer = PageRenderer(dataclasses.replace(config, backend=backend))
        pages = renderer.render_batch(chunks)  # warm-up: fonts, atlases, tables
        pass_seconds: list[float] = []
        budget_end = time.perf_counter() + seconds
        while not pass_seconds or (time.perf_counter() < budget_end and len(pass_seconds) < 1000):
            start = time.perf_counter()
            renderer.render_batch(chunks)
            pass_seconds.append(time.perf_counter() - start)
        median = statistics.median(pass_seconds)
        backends[backend] = {
            "pages_per_s": len(chunks) / median,
            "chars_per_s": n_chars / median,
            "font_sizes": sorted({p.font_size for p in pages}),
            "repeats": len(pass_seconds),
        }
    results["backends"] = backends
    results["speedup"] = backends["atlas"]["pages_per_s"] / backends["pillow"]["pages_per_s"]
    return results


def read_sample(lang: str, n_chars: int, corpora: Path = CORPORA) -> str:
    name, anchor = SAMPLES[lang]
    path = corpora / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the corpora live in ../shared beside the repo")
    # newline="" keeps the file's CRLF line endings: the renderer normalises them itself.
    with path.open(encoding="utf-8", newline="") as f:
        text = f.read()
    start = max(text.find(anchor), 0)
    return text[start : start + n_chars]


def longest_prefix_that_fits(text: str, config: RenderConfig) -> str:
    """The longest prefix of `text` that fits one page at `config.font_size` (no auto-fit)."""
    fixed = PageRenderer(dataclasses.replace(config, min_font_size=config.font_size))
    lo, hi = 0, len(text)  # text[:lo] fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            fixed.render(text[:mid])
            lo = mid
        except PageOverflowError:
            hi = mid - 1
    # End on a whole word or sentence-ish boundary so the example page does not stop mid-word.
    cut = max(text.rfind(" ", 0, lo), text.rfind("\n", 0, lo), text.rfind("。", 0, lo) + 1)
    return text[: cut if cut > lo // 2 else lo]


def write_example_pages(
    out_dir: Path, config: RenderConfig | None = None, corpora: Path = CORPORA
) -> list[Path]:
    """Render one full English and one full Chinese page and save them as PNG files."""
    config = config or RenderConfig()
    out_dir.mkdir(parents=True, exist_ok=True)
    renderer = PageRenderer(config)
    written = []
    for lang in ("en", "zh"):
        text = longest_prefix_that_fits(read_sample(lang, 8000, corpora), config)
        page = renderer.render(text)
        path = out_dir / f"page_{lang}.png"
        Image.fromarray(page.image).save(path, optimize=True)
        print(
            f"{path}: {len(text)} characters, {page.lines} lines at {page.font_size} px, "
            f"{page.missing_chars} missing"
        )
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per backend")
    parser.add_argument("--write-examples", type=Path, help="write page_en.png/page_zh.png here")
    parser.add_argument("--corpora", type=Path, default=CORPORA, help="the shared corpora folder")
    args = parser.parse_args()
    config = RenderConfig()
    if args.write_examples:
        write_example_pages(args.write_examples, config, args.corpora)
        return
    print(f"config: {config.to_dict()}")
    for lang in ("en", "zh"):
        sample = read_sample(lang, 400_000, args.corpora)
        # A chunk is what one default page holds at the default font size.
        chars_per_page = len(longest_prefix_that_fits(sample, config))
        result = run_render_benchmark(sample, config, chars_per_page, seconds=args.seconds)
        print(f"{lang}: {result['pages']} pages of {chars_per_page} characters")
        for backend, r in result["backends"].items():
            print(
                f"  {backend:>6}: {r['pages_per_s']:8.1f} pages/s {r['chars_per_s']:11.0f} chars/s "
                f"(font sizes {r['font_sizes']}, {r['repeats']} passes)"
            )
        print(f"  atlas / pillow: {result['speedup']:.1f}x")


if __name__ == "__main__":
    main()
