"""Report writers shared by the eval commands: JSON, Markdown tables and PNG figures.

Figures use matplotlib's Agg backend (no display needed). Numbers in tables are rounded for
reading; the JSON keeps full precision.
"""

from __future__ import annotations

import json
import math
import platform
import re
from collections.abc import Sequence
from pathlib import Path

import torch


def environment() -> dict:
    """Where the figures were measured."""
    device = "cpu"
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "accelerator": device,
        "threads": torch.get_num_threads(),
    }


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def fmt(value) -> str:
    """A table cell: percentages for fractions in [0, 1] named so by the caller, else numbers."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f} %"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub Markdown table: figures right-aligned, words left (judged by the first row)."""
    first = rows[0] if rows else [""] * len(header)
    align = ["---:" if _is_figure(v) else "---" for v in first]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(v) if not isinstance(v, str) else v for v in row) + " |")
    return "\n".join(lines)


def _is_figure(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return bool(re.fullmatch(r"[-+\d.,]+( %)?|n/a", str(value)))


def data_lines(parts: Sequence[dict]) -> list[str]:
    """Markdown bullets naming each data file and the part of it used."""
    lines = []
    for p in parts:
        extra = f", {len(p['records'])} records" if "records" in p else ""
        extra += f", {p['characters']:,} characters" if "characters" in p else ""
        lines.append(f"- `{p['file']}`: {p['part']}{extra}")
    return lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def histogram_png(
    values_by_group: dict[str, list[float]], xlabel: str, title: str, path: Path
) -> None:
    """One histogram per group (e.g. per language) of per-page scores in [0, 1]."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = [i / 20 for i in range(21)]
    for group, values in values_by_group.items():
        ax.hist(values, bins=bins, alpha=0.6, label=f"{group} ({len(values)} pages)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pages")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ratio_png(runs: Sequence[dict], path: Path) -> None:
    """OCR scores against the compression ratio, one line per language and score."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ratios = [run["compression_ratio"] for run in runs]
    languages = [lang for lang in runs[0]["summary"] if lang != "all"]
    for lang in languages:
        for key, name, style in (
            ("rouge_l", "ROUGE-L", "-o"),
            ("character_accuracy", "character accuracy", "--s"),
        ):
            values = [run["summary"].get(lang, {}).get(key, float("nan")) for run in runs]
            ax.plot(ratios, values, style, label=f"{lang} {name}")
    ax.set_xlabel("compression ratio r (text tokens per page / β)")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("score")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def line_gain_png(
    curves: dict[str, list[float]], path: Path, real: dict[str, list[float]] | None = None
) -> None:
    """Page gain (blank - real loss, nats per token) against the line of the page; with `real`,
    a second panel: the loss from the real page, line by line (the same labels)."""
    plt = _pyplot()
    panels = [(curves, "page gain, nats per token", "What the page tells the model, line by line")]
    if real:
        panels.append(
            (real, "loss from the real page, nats per token", "The reading itself: lower is better")
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.5), squeeze=False)
    for ax, (lines, ylabel, title) in zip(axes[0], panels, strict=True):
        for label, values in lines.items():
            ax.plot(range(1, len(values) + 1), values, "-o", label=label)
        ax.set_xlabel("line of the page (1 = top)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
    axes[0][0].axhline(0, color="grey", linewidth=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def heatmap_png(
    grids: dict[str, list[list[float]]],
    lengths: Sequence[int],
    depths: Sequence[float],
    title: str,
    path: Path,
) -> None:
    """One accuracy heat map per policy: rows = context length, columns = needle depth."""
    plt = _pyplot()
    n = len(grids)
    width = 2.0 + (0.8 * len(depths) + 0.8) * n
    fig, axes = plt.subplots(1, n, figsize=(width, 0.5 * len(lengths) + 2.5), squeeze=False)
    axes = list(axes[0])
    image = None
    for ax, (policy, grid) in zip(axes, grids.items(), strict=True):
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="lower")
        ax.set_xticks(range(len(depths)), [f"{d:g}" for d in depths])
        ax.set_yticks(range(len(lengths)), [str(n_) for n_ in lengths])
        ax.set_xlabel("depth (0 = start)")
        ax.set_title(policy)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    axes[0].set_ylabel("context tokens")
    fig.suptitle(title, y=1.04)
    fig.colorbar(image, ax=axes, shrink=0.8, label="accuracy")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
