"""Benchmark of the page renderer: pages/s and characters/s of each path on real text.

What is notable here
- Both of our backends render the same chunks with the same layout, so their ratio is the cost of
  rasterisation alone (glyph atlas + numpy vs `ImageDraw.text`), layout included in both.
- Warm-up first (fonts, glyph atlases and per-size tables are filled once per renderer, as in a
  long training run), then repeated timed passes over the chunks; the median pass is reported.
- Side by side, in the same run and on the same characters: Glyph's own renderer
  (thu-coai/Glyph, `scripts/word2png_function.py`: reportlab -> PDF -> poppler -> PNG files),
  run from a checkout given by path (`--glyph-dir`; its code is never part of vist2) in a
  subprocess, under a Python that has its dependencies (`--glyph-python`). A small worker
  (`render_glyph_worker.py`, run by path) imports its module, loads its own config file
  (`config/config_en.json` or `config_zh.json`, A4 at 72 dpi, 9 pt font) and times
  `text_to_images`: interpreter start, imports and the first call are reported apart from the
  timed passes, and the passes are split into font loading, reportlab (layout + PDF), poppler
  (rasterisation) and PNG writing by timing wrappers around the functions its module calls.
  Glyph is run two ways: "document" (the whole text in one call -> A4 pages, how Glyph renders a
  long context) and "per chunk" (one call per vist2 chunk, what a renderer is asked for while
  generating).
- Pages differ in size and density between the paths (512x512 px vs cropped A4 at 72 dpi), so
  characters/s is the like-for-like figure; pages/s is reported with each path's page size and
  characters per page.
- `vist2 bench render` / `python -m vist2.bench.render` runs it on ../shared/corpora (English:
  Moby Dick, Chinese: Hongloumeng) with the default `RenderConfig`; `--out DIR` writes
  render_bench.json, render_bench.md and render_bench.png. `--write-examples DIR` writes the two
  example pages shown in docs/ (page_en.png, page_zh.png).
- This module measures and holds the command; Glyph's subprocess is driven by render_glyph.py
  (its harness, run under Glyph's Python, is render_glyph_worker.py) and the Markdown table and
  chart are written by render_report.py.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from vist2.bench.render_glyph import (
    GLYPH_DOCUMENT,
    GLYPH_OWN_FONT,
    GLYPH_PER_CHUNK,
    GlyphSession,
    describe_glyph_checkout,
    glyph_config_font,
    glyph_config_path,
    run_glyph_renderer,
)
from vist2.bench.render_report import (
    plot_render_bench,
    render_bench_markdown,
    write_render_bench,
)
from vist2.render import (
    BACKENDS,
    PageOverflowError,
    PageRenderer,
    RenderConfig,
    default_font_path,
    normalize_text,
)

# The public names, including those that live in render_glyph.py and render_report.py (tests and
# older callers import them from here).
__all__ = [
    "CORPORA",
    "GLYPH_DOCUMENT",
    "GLYPH_OWN_FONT",
    "GLYPH_PER_CHUNK",
    "SAMPLES",
    "GlyphSession",
    "bench_render_main",
    "bench_texts",
    "glyph_config_font",
    "glyph_config_path",
    "longest_prefix_that_fits",
    "plot_render_bench",
    "read_sample",
    "render_bench_markdown",
    "run_glyph_renderer",
    "split_chunks",
    "write_example_pages",
]

# src/vist2/bench/render.py -> the repo root -> ../shared beside it (as in CI).
CORPORA = Path(__file__).resolve().parents[4] / "shared" / "corpora"
# Where each sample starts: the first line of the novel (after the Project Gutenberg header).
SAMPLES = {
    "en": ("en/moby_dick.txt", "Call me Ishmael."),
    "zh": ("zh/hongloumeng.txt", "第一回  甄士隐"),
}
SAMPLE_CHARS = 400_000
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def split_chunks(text: str, chars_per_page: int, max_pages: int) -> list[str]:
    """`text` cut into `chars_per_page`-character chunks, blank ones dropped, at most `max_pages`."""
    if chars_per_page < 1:
        raise ValueError(f"chars_per_page must be >= 1, got {chars_per_page}")
    chunks = [text[i : i + chars_per_page] for i in range(0, len(text), chars_per_page)]
    chunks = [c for c in chunks if c.strip()][:max_pages]
    if not chunks:
        raise ValueError("the text holds no non-blank chunk to render")
    return chunks


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
    """The longest prefix of `text` that fits one page at `config.font_size` (no auto-fit, and
    newlines kept: no reflow, which would otherwise let any text fit at the full size)."""
    fixed = PageRenderer(
        dataclasses.replace(config, min_font_size=config.font_size, overflow="error")
    )
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


# -- the whole benchmark --------------------------------------------------------------------------


def _lang_of(text: str) -> str:
    """ "zh" when at least a tenth of the non-space characters are CJK ideographs, else "en"."""
    letters = [c for c in text[:20000] if not c.isspace()]
    cjk = sum(1 for c in letters if _CJK.match(c))
    return "zh" if letters and cjk >= 0.1 * len(letters) else "en"


class _OurBackend:
    """One of vist2's backends on a list of chunks, timed pass by pass (warm-up on creation)."""

    def __init__(self, chunks: list[str], config: RenderConfig, backend: str) -> None:
        self.chunks = chunks
        self.renderer = PageRenderer(dataclasses.replace(config, backend=backend))
        start = time.perf_counter()
        pages = self.renderer.render_batch(chunks)  # warm-up: fonts, atlases, tables
        self.warmup_s = time.perf_counter() - start
        self.font_sizes = sorted({p.font_size for p in pages})
        self.pass_s: list[float] = []

    def one_pass(self) -> float:
        start = time.perf_counter()
        self.renderer.render_batch(self.chunks)
        self.pass_s.append(time.perf_counter() - start)
        return self.pass_s[-1]

    def finish(self) -> dict[str, Any]:
        median = statistics.median(self.pass_s)
        # Characters as laid out ("\r\n" is one newline), as Glyph is given them.
        chars = sum(len(normalize_text(c)) for c in self.chunks)
        return {
            "pages_per_s": len(self.chunks) / median,
            "chars_per_s": chars / median,
            "pages": len(self.chunks),
            "chars": chars,
            "repeats": len(self.pass_s),
            "pass_s_median": median,
            "font_sizes": self.font_sizes,
            "warmup_s": self.warmup_s,
        }


def _interleaved_passes(
    runners: dict[str, Any], seconds: float, min_rounds: int, round_s: float = 0.25
) -> int:
    """Time all paths in rounds so that load from other processes falls on each alike.

    In a round every path makes passes until it has spent `round_s` (at least one pass); rounds
    go on until about `seconds` per path have passed, and at least `min_rounds`. Returns the
    number of rounds.
    """
    end = time.perf_counter() + seconds * len(runners)
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() < end and rounds < 1000):
        for runner in runners.values():
            spent = 0.0
            while spent < round_s:
                spent += runner.one_pass()
        rounds += 1
    return rounds


@dataclasses.dataclass(frozen=True)
class _GlyphRuns:
    """Which of Glyph's runs go beside our backends (`bench_texts`' glyph_* arguments)."""

    checkout: Path
    python: str
    per_chunk: bool
    own_font: bool


def bench_texts(
    texts: dict[str, str],
    config: RenderConfig | None = None,
    seconds: float = 3.0,
    max_pages: int = 64,
    min_rounds: int = 3,
    glyph_dir: Path | None = None,
    glyph_python: str = sys.executable,
    glyph_per_chunk: bool = True,
    glyph_own_font: bool = True,
    log=print,
) -> dict[str, Any]:
    """Benchmark every path on each text of `texts` ({label: text}); the JSON-able result.

    Each text is cut into chunks of what one default page holds at the default font size (at
    most `max_pages`). Our backends render the chunks; Glyph (when `glyph_dir` is given) renders
    the same characters as one document, then (`glyph_per_chunk`) one call per chunk, then
    (`glyph_own_font`) as one document with the font its config names when that file is in the
    checkout. Glyph gets WenQuanYi Micro Hei, our font, unless stated otherwise. All paths of a
    text are warmed up first, then timed in interleaved rounds (`_interleaved_passes`).
    """
    config = config or RenderConfig()
    font = config.font_path or default_font_path()
    result: dict[str, Any] = {
        "render_config": config.to_dict(),
        "font": font,
        "seconds": seconds,
        "max_pages": max_pages,
        "min_rounds": min_rounds,
        "texts": {},
        "glyph": None,
        "environment": _environment(),
    }
    glyph = None
    if glyph_dir is not None:
        checkout = Path(glyph_dir).resolve()
        glyph = _GlyphRuns(checkout, glyph_python, glyph_per_chunk, glyph_own_font)
        result["glyph"] = describe_glyph_checkout(checkout, glyph_python)
    for label, text in texts.items():
        entry = _bench_text(
            label,
            text,
            config,
            font,
            seconds=seconds,
            max_pages=max_pages,
            min_rounds=min_rounds,
            glyph=glyph,
            log=log,
        )
        if GLYPH_DOCUMENT in entry["paths"]:
            _record_glyph_setup(result["glyph"], entry["paths"][GLYPH_DOCUMENT])
        result["texts"][label] = entry
    result["environment"]["load_avg_1min_after"] = _load_avg()
    return result


def _environment() -> dict[str, Any]:
    """The machine and versions the figures come from, and its load before the run."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "pillow": importlib.metadata.version("pillow"),
        "numpy": importlib.metadata.version("numpy"),
        "vist2": importlib.metadata.version("vist2"),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_avg_1min_before": _load_avg(),
    }


def _bench_text(
    label: str,
    text: str,
    config: RenderConfig,
    font: str,
    *,
    seconds: float,
    max_pages: int,
    min_rounds: int,
    glyph: _GlyphRuns | None,
    log,
) -> dict[str, Any]:
    """One text, every path: its entry of the result ({"lang", "chars_per_page", "chunks",
    "chars", "skipped" (when a Glyph run was left out), "rounds", "paths", "ratios"})."""
    lang = label if label in SAMPLES else _lang_of(text)
    chars_per_page = len(longest_prefix_that_fits(text, config))
    chunks = split_chunks(text, chars_per_page, max_pages)
    log(
        f"{label}: {len(chunks)} chunks of {chars_per_page} characters (what one default "
        f"page holds at {config.font_size} px)"
    )
    entry: dict[str, Any] = {
        "lang": lang,
        "chars_per_page": chars_per_page,
        "chunks": len(chunks),
        "chars": sum(len(normalize_text(c)) for c in chunks),
    }
    runners: dict[str, Any] = {b: _OurBackend(chunks, config, b) for b in BACKENDS}  # warmed up
    fonts = {b: font for b in BACKENDS}
    with contextlib.ExitStack() as stack:
        if glyph is not None:
            runs, skipped = _glyph_runs(glyph, chunks, lang, font)
            if skipped:
                entry["skipped"] = skipped
            for name, glyph_texts, glyph_font in runs:
                work = stack.enter_context(tempfile.TemporaryDirectory(prefix="vist2-glyph-"))
                runners[name] = stack.enter_context(
                    GlyphSession(glyph.checkout, glyph_texts, work, glyph.python, lang, glyph_font)
                )
                fonts[name] = glyph_font
        entry["rounds"] = _interleaved_passes(runners, seconds, min_rounds)
        paths = {name: runner.finish() for name, runner in runners.items()}
    for name, r in paths.items():
        _add_page_and_font(r, name, config, fonts[name])
        log(_line(name, r))
    entry["paths"] = paths
    entry["ratios"] = _ratios(paths)
    return entry


def _glyph_runs(
    glyph: _GlyphRuns, chunks: list[str], lang: str, font: str
) -> tuple[list[tuple[str, list[str], str]], dict[str, str]]:
    """Glyph's runs on a text's chunks as (path name, texts, font), and {path name: why} for a
    run left out."""
    # Glyph splits paragraphs on "\n" only: give it the newlines our renderer lays out.
    glyph_chunks = [normalize_text(c) for c in chunks]
    runs = [(GLYPH_DOCUMENT, ["".join(glyph_chunks)], font)]
    if glyph.per_chunk:
        runs.append((GLYPH_PER_CHUNK, glyph_chunks, font))
    skipped = {}
    own = glyph_config_font(glyph.checkout, lang)
    if glyph.own_font and own.is_file() and own != Path(font).resolve():
        runs.append((GLYPH_OWN_FONT, ["".join(glyph_chunks)], str(own)))
    elif glyph.own_font:
        skipped[GLYPH_OWN_FONT] = f"{own.name} (named by config_{lang}.json) is not in the checkout"
    return runs, skipped


def _add_page_and_font(r: dict[str, Any], name: str, config: RenderConfig, font: str) -> None:
    """Add "chars_per_page", "page_px" (Glyph's sessions measure theirs) and "font_desc" to the
    result `r` of path `name`."""
    r["chars_per_page"] = r["chars"] / r["pages"]
    if name in BACKENDS:
        r["page_px"] = [config.page_width, config.page_height]
        r["font_desc"] = (
            f"{Path(font).name}, {config.font_size} px (auto-fit to {config.min_font_size})"
        )
    else:
        c = r["config"]
        r["font_desc"] = (
            f"{Path(font).name}, {c.get('font-size')} pt at {c.get('dpi')} dpi, "
            f"leading {c.get('line-height')}"
        )


def _ratios(paths: dict[str, dict[str, Any]]) -> dict[str, float]:
    """atlas/pillow pages/s, and with Glyph: each path against Glyph's document run (chars/s,
    and pages/s for ours), and atlas against Glyph per chunk (pages/s)."""
    ratios = {"atlas/pillow": paths["atlas"]["pages_per_s"] / paths["pillow"]["pages_per_s"]}
    if GLYPH_DOCUMENT in paths:
        g = paths[GLYPH_DOCUMENT]
        for p in (*BACKENDS, GLYPH_PER_CHUNK):
            if p in paths:
                ratios[f"{p}/{GLYPH_DOCUMENT} chars/s"] = paths[p]["chars_per_s"] / g["chars_per_s"]
        for p in BACKENDS:
            ratios[f"{p}/{GLYPH_DOCUMENT} pages/s"] = paths[p]["pages_per_s"] / g["pages_per_s"]
        if GLYPH_PER_CHUNK in paths:
            ratios[f"atlas/{GLYPH_PER_CHUNK} pages/s"] = (
                paths["atlas"]["pages_per_s"] / paths[GLYPH_PER_CHUNK]["pages_per_s"]
            )
    return ratios


def _record_glyph_setup(glyph: dict[str, Any], document: dict[str, Any]) -> None:
    """Glyph's versions and config (less the font, which is per path) as its document run
    reported them, into the result's "glyph" entry."""
    glyph.setdefault("versions", {}).update(document["versions"])
    glyph["config"] = {k: v for k, v in document["config"].items() if k != "font-path"}


def _load_avg() -> float | None:
    """The 1-minute load average: other processes on the machine slow every path down."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _line(name: str, r: dict[str, Any]) -> str:
    w, h = r["page_px"]
    return (
        f"  {name:>15}: {r['pages_per_s']:8.1f} pages/s {r['chars_per_s']:11.0f} chars/s "
        f"({r['chars_per_page']:.0f} chars/page, {w:.0f}x{h:.0f} px, {r['repeats']} passes)"
    )


# -- the command ----------------------------------------------------------------------------------


def bench_render_main(argv: Sequence[str] | None = None) -> int:
    """`vist2 bench render`: pages/s and chars/s of each renderer path, optionally vs Glyph."""
    parser = _parser()
    args = parser.parse_args(argv)
    config = RenderConfig()
    if args.write_examples:
        write_example_pages(args.write_examples, config, args.corpora)
        return 0
    if args.seconds < 0 or args.max_pages < 1 or args.min_rounds < 1:
        parser.error("--seconds must be >= 0, --max-pages and --min-rounds >= 1")
    texts = _read_texts(args.text, args.corpora)
    print(f"config: {config.to_dict()}")
    result = bench_texts(
        texts,
        config,
        seconds=args.seconds,
        max_pages=args.max_pages,
        glyph_dir=args.glyph_dir,
        glyph_python=args.glyph_python,
        glyph_per_chunk=not args.no_glyph_per_chunk,
        glyph_own_font=not args.no_glyph_own_font,
        min_rounds=args.min_rounds,
    )
    if result["glyph"] is not None and args.glyph_commit:
        result["glyph"]["commit"] = result["glyph"]["commit"] or args.glyph_commit
    result["command"] = _command_line(argv)
    _print_ratios(result)
    if args.out:
        write_render_bench(result, args.out)
    return 0


def _parser() -> argparse.ArgumentParser:
    """The options of `vist2 bench render` / `python -m vist2.bench.render`."""
    parser = argparse.ArgumentParser(
        prog="vist2 bench render",
        description="Pages/s and characters/s of vist2's renderer backends at the default page "
        "settings, side by side with Glyph's own renderer (thu-coai/Glyph) on the same text.",
    )
    parser.add_argument(
        "--text",
        type=Path,
        action="append",
        metavar="FILE",
        help="a UTF-8 text file to render (repeatable); default: Moby Dick and Hongloumeng "
        "from ../shared/corpora",
    )
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="about this many timed seconds per path"
    )
    parser.add_argument(
        "--min-rounds",
        type=int,
        default=3,
        help="time every path in at least this many interleaved rounds",
    )
    parser.add_argument(
        "--max-pages", type=int, default=64, help="render at most this many chunks per text"
    )
    parser.add_argument(
        "--glyph-dir", type=Path, help="a checkout of thu-coai/Glyph to run side by side"
    )
    parser.add_argument(
        "--glyph-python",
        default=sys.executable,
        help="a Python with Glyph's dependencies (reportlab, pdf2image); default: this one",
    )
    parser.add_argument(
        "--glyph-commit", help="the Glyph commit to record when --glyph-dir is not a git work tree"
    )
    parser.add_argument(
        "--no-glyph-per-chunk", action="store_true", help="skip Glyph's one-call-per-chunk run"
    )
    parser.add_argument(
        "--no-glyph-own-font", action="store_true", help="skip Glyph's run with its config's font"
    )
    parser.add_argument("--out", type=Path, help="write render_bench.{json,md,png} here")
    parser.add_argument("--corpora", type=Path, default=CORPORA, help="the shared corpora folder")
    parser.add_argument(
        "--write-examples", type=Path, help="only write page_en.png/page_zh.png here"
    )
    return parser


def _read_texts(files: list[Path] | None, corpora: Path) -> dict[str, str]:
    """{label: text}: the first SAMPLE_CHARS characters of each file (labelled by its stem), or
    without files the English and Chinese samples from `corpora`."""
    if not files:
        return {lang: read_sample(lang, SAMPLE_CHARS, corpora) for lang in SAMPLES}
    texts = {}
    for path in files:
        with path.open(encoding="utf-8", newline="") as f:
            texts[path.stem] = f.read()[:SAMPLE_CHARS]
    return texts


def _command_line(argv: Sequence[str] | None) -> str:
    """How the benchmark was started: `vist2 bench render` passes argv; `python -m` leaves it
    None (the options are then in sys.argv)."""
    given = sys.argv[1:] if argv is None else [a for a in argv if a != "--"]
    prefix = "python -m vist2.bench.render" if argv is None else "vist2 bench render"
    return " ".join([prefix, *given])


def _print_ratios(result: dict[str, Any]) -> None:
    for label, entry in result["texts"].items():
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in entry["ratios"].items())
        print(f"{label}: {ratios}")


def main() -> None:
    raise SystemExit(bench_render_main())


if __name__ == "__main__":
    main()
