"""Export a training checkpoint (or run) as a vist2 model directory: `python -m vist2.training.export`.

    python -m vist2.training.export SOURCE --out DIR [--dtype float32|bfloat16|float16]

SOURCE is a checkpoint (`RUN_DIR/checkpoints/step-N`), or a run directory (its finished `model/`
if there is one, else its newest checkpoint). The model's config and tokenizer come from the
model the run started from (`RUN_DIR/run.json`); the weights from the checkpoint. DIR gets
config.json, model.safetensors, the tokenizer and `training.json` (where the weights come from:
run, step, loss, training time, the run's config, and the same for each earlier run of the chain
it continues), written atomically (a temp dir, then a rename).

    python -m vist2.training.export SOURCE --out DIR --max-mb 50 --print-chain

`--max-mb` refuses a model over that size (DIR untouched); `--print-chain` prints, after the
export, the run directories of the chain, first to last (stdout; the summary goes to stderr).
`scripts/ship_small_model.sh` uses this to put vist2-small into the package.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from vist2.errors import Vist2Error
from vist2.loading import (
    MODEL_DIR,
    SHIPPED_MODELS,
    load_model,
    load_tokenizer,
    resolve_model_dir,
    save_model,
    shipped_model_path,
)
from vist2.training.checkpoint import MARKER, CheckpointManager, replace_dir
from vist2.training.metrics import METRICS_FILE, read_metrics

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def find_weights(source: Path) -> tuple[Path, Path]:
    """(run directory, checkpoint or model directory holding the weights) of `source`."""
    if (source / MARKER).is_file() and source.parent.name == "checkpoints":
        return source.parent.parent, source
    if (source / "run.json").is_file():
        if (source / MODEL_DIR / "model.safetensors").is_file():
            return source, source / MODEL_DIR
        latest = CheckpointManager(source / "checkpoints").latest()
        if latest is not None:
            return source, latest
        raise Vist2Error(f"run {source} has no finished model and no checkpoint yet")
    raise Vist2Error(
        f"{source} is neither a checkpoint (RUN_DIR/checkpoints/step-N with {MARKER}) nor a run "
        "directory (with run.json)"
    )


def started_from(model: str | Path) -> dict | None:
    """The provenance of the model a run started from, when it was trained: its own
    training.json, or that of the run it is the model of (RUN_DIR or RUN_DIR/model); None for
    an untrained (`vist2 init`) or outside model."""
    path = Path(model)
    if str(model) in SHIPPED_MODELS and not path.exists():  # e.g. fine-tuning vist2-small
        path = shipped_model_path(str(model))
    if (path / "training.json").is_file():
        return json.loads((path / "training.json").read_text(encoding="utf-8"))
    for run in (path, path.parent):
        if (run / "run.json").is_file() and (run / MODEL_DIR / "model.safetensors").is_file():
            return provenance(run, run / MODEL_DIR)
    return None


def carry_history(source: str | Path, out: str | Path, converted: str) -> None:
    """Give `out`, a model a script made from `source`, source's training record marked
    `converted` (what the script did; a source that was itself converted since its training keeps
    that step first: "A; then B"), so a run from `out` keeps its chain. Nothing to carry for an
    untrained source."""
    history = started_from(source)
    if history is not None:
        before = history.get("converted")
        history["converted"] = f"{before}; then {converted}" if before else converted
        text = json.dumps(history, indent=2) + "\n"
        (Path(out) / "training.json").write_text(text, encoding="utf-8")


def provenance(run_dir: Path, weights: Path) -> dict:
    """Where the weights come from: run, stage, step, loss and time at that step, the config,
    and (`started_from`) the same for the trained model the run began with, back to the start."""
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    step = None
    if (weights / MARKER).is_file():
        step = json.loads((weights / MARKER).read_text(encoding="utf-8"))["step"]
    records = read_metrics(run_dir / METRICS_FILE)
    if step is None and records:  # a finished model: the run's last step
        step = records[-1]["step"]
    at_step = [r for r in records if r["step"] <= (step or 0)]
    last = at_step[-1] if at_step else {}
    window = [r["loss"] for r in at_step[-50:]]
    config_path = run_dir / "train_config.json"
    return {
        "run": str(run_dir),
        "weights": str(weights),
        "stage": info.get("stage"),
        "data": info.get("data"),
        "step": step,
        "loss": last.get("loss"),
        "loss_mean_last_50_steps": sum(window) / len(window) if window else None,
        "elapsed_s": last.get("elapsed_s"),
        "slots_seen": sum(r.get("slots", 0) for r in at_step),
        "labelled_tokens_seen": sum(r.get("labelled_tokens", 0) for r in at_step),
        "pages_seen": sum(r.get("pages", 0) for r in at_step),
        "train_config": json.loads(config_path.read_text(encoding="utf-8"))
        if config_path.is_file()
        else None,
        "started_from": started_from(info["model"]) if info.get("model") else None,
    }


def chain_runs(model_dir: str | Path) -> list[str]:
    """The run directories a model's training.json records, first run to last."""
    path = Path(model_dir) / "training.json"
    if not path.is_file():
        raise Vist2Error(f"{path} not found: export a run first (python -m vist2.training.export)")
    info, runs = json.loads(path.read_text(encoding="utf-8")), []
    while info:
        runs.append(info["run"])
        info = info.get("started_from")
    return runs[::-1]


def export(
    source: str | Path,
    out: str | Path,
    dtype: torch.dtype = torch.float32,
    max_mb: float | None = None,
) -> Path:
    """Write the model of `source` (checkpoint or run) into `out`; returns `out`. With `max_mb`,
    a model.safetensors over that many MB (1e6 bytes) is an error and `out` is left as it was."""
    run_dir, weights = find_weights(Path(source))
    base = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["model"]
    base_dir = resolve_model_dir(base)
    model, _ = load_model(base_dir, dtype=torch.float32)
    state = load_file(str(weights / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"language_model.lm_head.weight"} if model.config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied:
        raise Vist2Error(
            f"{weights}: the weights do not fit the model of {base_dir} (missing "
            f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    model = model.to(dtype)
    out = Path(out)
    tmp = out.parent / f".tmp-{out.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        save_model(model, load_tokenizer(base_dir), tmp)
        info = provenance(run_dir, weights)
        (tmp / "training.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        size_mb = (tmp / "model.safetensors").stat().st_size / 1e6
        if max_mb is not None and size_mb > max_mb:
            raise Vist2Error(
                f"model.safetensors would be {size_mb:.1f} MB, over the {max_mb:g} MB limit; "
                f"{out} is unchanged (export in bfloat16, or ship a smaller model)"
            )
    except BaseException:  # nothing half-written is left beside `out`
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vist2.training.export", description=__doc__)
    parser.add_argument("source", help="RUN_DIR/checkpoints/step-N, or a run directory")
    parser.add_argument("--out", required=True, help="model directory to write (replaced)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument(
        "--max-mb",
        type=_positive_mb,
        metavar="N",
        help="refuse a model.safetensors over N MB (1e6 bytes); OUT is left as it was",
    )
    parser.add_argument(
        "--print-chain", action="store_true", help="then print the chain's run dirs, first to last"
    )
    args = parser.parse_args(argv)
    try:
        out = export(args.source, args.out, DTYPES[args.dtype], args.max_mb)
        chain = chain_runs(out) if args.print_chain else []
    except Vist2Error as err:
        print(f"vist2: error: {err}", file=sys.stderr)
        return 2
    info = json.loads((out / "training.json").read_text(encoding="utf-8"))
    size = (out / "model.safetensors").stat().st_size
    loss = "?" if info["loss"] is None else f"{info['loss']:.4f}"
    print(
        f"wrote {out}: step {info['step']} of {info['run']}, loss {loss}, "
        f"model.safetensors {size / 1e6:.1f} MB",
        file=sys.stderr if args.print_chain else sys.stdout,
    )
    if args.print_chain:
        print("\n".join(chain))
    return 0


def _positive_mb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a size in MB > 0, e.g. 50")
    return value


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "chain_runs",
    "export",
    "find_weights",
    "main",
    "provenance",
    "started_from",
]
