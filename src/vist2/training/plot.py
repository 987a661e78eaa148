"""Loss curves of runs, drawn to a PNG (matplotlib, Agg backend: no display needed).

`plot_run(run_dir, out_png)` draws one run; `plot_runs([...], out_png)` draws several side by side
(one panel per run, e.g. the four stages of a chain). Each panel shows the per-step loss (thin),
an exponential moving average (thick) and the learning rate (dashed, right axis).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from vist2.errors import Vist2Error
from vist2.training.metrics import METRICS_FILE, read_metrics


def smooth(values: Sequence[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (starts at the first value)."""
    out, avg, norm = [], 0.0, 0.0
    for v in values:
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(avg / norm)
    return out


def _run_title(run_dir: Path) -> str:
    info = run_dir / "run.json"
    stage = json.loads(info.read_text(encoding="utf-8")).get("stage", "") if info.is_file() else ""
    return f"{stage}: {run_dir.name}" if stage else run_dir.name


def _load(run_dir: Path) -> list[dict]:
    if not (run_dir / METRICS_FILE).is_file():
        raise Vist2Error(f"{run_dir}: no {METRICS_FILE}; is it a `vist2 train` run directory?")
    by_step = {
        r["step"]: r for r in read_metrics(run_dir / METRICS_FILE) if r.get("loss") is not None
    }
    if not by_step:
        raise Vist2Error(f"{run_dir}: {METRICS_FILE} holds no finished step yet")
    return [by_step[s] for s in sorted(by_step)]


def plot_runs(
    run_dirs: Sequence[str | Path], out_png: str | Path, dpi: int = 80, columns: int = 4
) -> Path:
    """Draw the loss curve of each run (one panel each, `columns` to a row) into `out_png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [Path(d) for d in run_dirs]
    records = [_load(d) for d in runs]
    cols = min(len(runs), columns)
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(runs) :]:  # the last row's empty cells
        ax.set_visible(False)
    for ax, run_dir, recs in zip(axes.flat, runs, records, strict=False):
        steps = [r["step"] for r in recs]
        losses = [r["loss"] for r in recs]
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss")
        ax.plot(steps, smooth(losses), color="tab:blue", linewidth=2.0, label="loss (EMA)")
        ax.set_title(_run_title(run_dir), fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        first, last = losses[0], smooth(losses)[-1]
        ax.text(
            0.98,
            0.95,
            f"{first:.2f} → {last:.2f}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=9,
        )
        if any("lr" in r for r in recs):
            lr_ax = ax.twinx()
            lr_ax.plot(
                steps,
                [r.get("lr", float("nan")) for r in recs],
                color="tab:gray",
                linestyle="--",
                linewidth=0.8,
            )
            lr_ax.set_ylabel("lr", color="tab:gray", fontsize=8)
            lr_ax.tick_params(axis="y", labelsize=7, colors="tab:gray")
            lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def plot_run(run_dir: str | Path, out_png: str | Path | None = None) -> Path:
    """Draw `run_dir`'s loss curve into `out_png` (default RUN_DIR/loss.png)."""
    return plot_runs([run_dir], out_png or Path(run_dir) / "loss.png")


__all__ = ["plot_run", "plot_runs", "smooth"]
