"""The render benchmark's result as files: render_bench.json, .md (tables) and .png (a chart).

What is notable here
- The table and the chart read only the JSON-able result of `vist2.bench.render.bench_texts`,
  so a saved render_bench.json can be turned into both again without rendering anything.
- chars/s is the like-for-like figure (pages differ in size and density across paths); Glyph's
  document run is the reference column, and its startup and where its time goes get their own
  table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from vist2.bench.render_glyph import GLYPH_DOCUMENT


def _si(x: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _pages(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _page_size(value: Any) -> str:
    """Glyph's config page size, "(595.0, 842.0)" or "595,842", as "595×842"."""
    numbers = re.findall(r"[0-9.]+", str(value))
    return "×".join(f"{float(n):g}" for n in numbers) if numbers else str(value)


def render_bench_markdown(result: dict[str, Any]) -> str:
    """The result as Markdown: one table of all paths and texts, ratios, then how each ran."""
    lines = _intro(result)
    lines += ["", *_throughput_table(result)]
    lines += ["", "Ratios (same text, same run):", "", *_ratio_list(result)]
    lines += ["", "## How each path ran", "", _how_ours_ran(result["render_config"])]
    if result["glyph"] is None:
        lines += ["- Glyph: not run (no `--glyph-dir`)."]
    else:
        lines += [*_how_glyph_ran(result["glyph"]), "", *_glyph_time_table(result)]
        lines += _skipped_runs(result)
    lines += [
        "",
        "Pages are not the same size or density across paths, so chars/s is the like-for-like "
        "figure; pages/s is per each path's own page.",
        "",
    ]
    return "\n".join(lines)


def _intro(result: dict[str, Any]) -> list[str]:
    """Title, command, machine and method, and a note when other processes were running."""
    env = result["environment"]
    lines = [
        "# Renderer throughput",
        "",
        f"Command: `{result.get('command', 'vist2 bench render')}`  ",
        f"Machine: {env['platform']}, {env['cpu_count']} CPUs, Python {env['python']}. One "
        "process per path; every path is warmed up, then all paths of a text are timed in "
        "interleaved rounds (each path renders the whole text at least once per round, "
        f"{result.get('min_rounds', 1)}+ rounds, about {result['seconds']:g} s per path) and the "
        "median pass counts.",
    ]
    loads = [env.get("load_avg_1min_before"), env.get("load_avg_1min_after")]
    if any(x is not None and x > 0.5 for x in loads):
        lines.append(
            f"Other processes were running (1-minute load average {loads[0]} before, "
            f"{loads[1]} after, on {env['cpu_count']} CPUs): absolute figures are lower than on "
            "an idle machine; the paths ran one after another in the same run."
        )
    return lines


def _throughput_table(result: dict[str, Any]) -> list[str]:
    """One row per text and path: page size, font, chars/page, pages/s, chars/s, vs Glyph."""
    lines = [
        "| text | path | page (px) | font | chars/page | pages/s | chars/s | chars/s vs Glyph |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for label, entry in result["texts"].items():
        paths = entry["paths"]
        ref = paths.get(GLYPH_DOCUMENT)
        for name, r in paths.items():
            w, h = r["page_px"]
            page = f"{w:.0f}×{h:.0f}"
            if name.startswith("glyph"):
                (w0, h0), (w1, h1) = r["page_px_range"]
                page += f" (median; {w0}–{w1} × {h0}–{h1})"
            vs = f"{r['chars_per_s'] / ref['chars_per_s']:.2f}×" if ref else "–"
            lines.append(
                f"| {label} | {name} | {page} | {r['font_desc']} | {r['chars_per_page']:.0f} | "
                f"{r['pages_per_s']:.1f} | {_si(r['chars_per_s'])} | {vs} |"
            )
    return lines


def _ratio_list(result: dict[str, Any]) -> list[str]:
    lines = []
    for label, entry in result["texts"].items():
        ratios = ", ".join(f"{k} = {v:.2f}×" for k, v in entry["ratios"].items())
        lines.append(f"- {label}: {ratios}")
    return lines


def _how_ours_ran(cfg: dict[str, Any]) -> str:
    return (
        f"- **atlas**, **pillow** (vist2): the default `RenderConfig` ({cfg['page_width']}×"
        f"{cfg['page_height']} px, {cfg['font_size']} px font, auto-fit down to "
        f"{cfg['min_font_size']} px, margin {cfg['margin']} px), chunks of what one page holds at "
        f"{cfg['font_size']} px, rendered to numpy arrays in memory (no file written). The two "
        "backends share the layout; only rasterisation differs."
    )


def _how_glyph_ran(glyph: dict[str, Any]) -> list[str]:
    """Glyph's checkout, config and paths, then the Python and versions it ran under."""
    gc = glyph.get("config", {})
    v = glyph.get("versions", {})
    commit = f", commit {glyph['commit'][:12]}" if glyph.get("commit") else ""
    return [
        f"- **glyph** (thu-coai/Glyph{commit}): "
        f"its `{glyph['script']}` with its own config file (page {_page_size(gc.get('page-size'))} pt at "
        f"{gc.get('dpi')} dpi, font {gc.get('font-size')} pt, leading {gc.get('line-height')}, "
        f"margins {gc.get('margin-x')}/{gc.get('margin-y')}, auto-crop-width "
        f"{gc.get('auto-crop-width')}, auto-crop-last-page {gc.get('auto-crop-last-page')}); "
        "font WenQuanYi Micro Hei (ours) unless the path says otherwise. reportlab lays out and "
        "writes a PDF, poppler's pdftoppm rasterises it (RGB), each page is written as a PNG "
        "file; all of that is in the timed passes. **glyph** renders the whole text as one "
        "document (Glyph's use: a long context -> A4 pages); **glyph-per-chunk** calls it once "
        "per vist2 chunk (what rendering each chunk while generating asks for; each call "
        "reloads the font and starts pdftoppm twice); **glyph-own-font** is the document run "
        "with the font its config names.",
        f"- Glyph ran under {glyph['python']} (Python {v.get('python')}, reportlab "
        f"{v.get('reportlab')}, pdf2image {v.get('pdf2image')}, Pillow {v.get('pillow')}), "
        f"poppler {glyph.get('poppler')}, in a subprocess; it started in the times below, "
        "which are not in pages/s. The timed passes split into font loading (reportlab "
        "parses the font file on every call), reportlab (layout + PDF), poppler (pdfinfo + "
        "pdftoppm) and PNG writing; the last column is the rate if the PNG files were not "
        "written (vist2's paths write none):",
    ]


def _glyph_time_table(result: dict[str, Any]) -> list[str]:
    """Per Glyph path: startup times, shares of the timed passes, chars/s less PNG writing."""
    lines = [
        "| text | path | interpreter (s) | imports (s) | first call (s) | font | reportlab | "
        "poppler | PNG write | chars/s less PNG write |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, entry in result["texts"].items():
        for name, r in entry["paths"].items():
            if not name.startswith("glyph"):
                continue
            s, f = r["startup"], r["fractions"]
            lines.append(
                f"| {label} | {name} | {s['interpreter_s']:.2f} | {s['import_s']:.2f} | "
                f"{s['warmup_s']:.2f} | {f['font']:.0%} | {f['reportlab']:.0%} | "
                f"{f['poppler']:.0%} | {f['png']:.0%} | "
                f"{_si(r['chars_per_s'] / max(1e-9, 1 - f['png']))} |"
            )
    return lines


def _skipped_runs(result: dict[str, Any]) -> list[str]:
    return [
        f"\n{label}: {name} not run: {why}."
        for label, entry in result["texts"].items()
        for name, why in entry.get("skipped", {}).items()
    ]


def plot_render_bench(result: dict[str, Any], path: Path) -> Path | None:
    """A small bar chart of chars/s per path and text (log scale); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels = list(result["texts"])
    names: list[str] = []
    for entry in result["texts"].values():
        names += [n for n in entry["paths"] if n not in names]
    colors = {"atlas": "#1f77b4", "pillow": "#7fb2d9", GLYPH_DOCUMENT: "#d62728"}
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.35 * len(names) * len(labels)), dpi=100)
    y, ticks, ticklabels = 0.0, [], []
    for label in labels:
        for name in names:
            r = result["texts"][label]["paths"].get(name)
            if r is None:
                continue
            ax.barh(y, r["chars_per_s"], color=colors.get(name, "#f4a3a3"), height=0.8)
            ax.text(
                r["chars_per_s"] * 1.08,
                y,
                f"{_si(r['chars_per_s'])} chars/s, {_pages(r['pages_per_s'])} pages/s",
                va="center",
                fontsize=7,
            )
            ticks.append(y)
            ticklabels.append(f"{label} {name}")
            y += 1
        y += 0.6
    ax.set_yticks(ticks, ticklabels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    lo = min(r["chars_per_s"] for e in result["texts"].values() for r in e["paths"].values())
    hi = max(r["chars_per_s"] for e in result["texts"].values() for r in e["paths"].values())
    ax.set_xlim(lo / 3, hi * 15)
    ax.set_xlabel("characters rendered per second (log scale, one process)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    cfg = result["render_config"]
    title = f"vist2 backends ({cfg['page_width']}×{cfg['page_height']} px pages)"
    if result["glyph"]:
        title += " vs Glyph's renderer (A4 at 72 dpi), same text"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, pil_kwargs={"optimize": True})
    plt.close(fig)
    return path


def write_render_bench(result: dict[str, Any], out_dir: Path) -> None:
    """Write render_bench.json, render_bench.md and (with matplotlib) render_bench.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "render_bench.json").write_text(
        json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out_dir / "render_bench.md").write_text(render_bench_markdown(result), encoding="utf-8")
    png = plot_render_bench(result, out_dir / "render_bench.png")
    written = "json, md" + (", png" if png else " (no png: matplotlib is not installed)")
    print(f"wrote {out_dir}/render_bench.{{{written}}}")
