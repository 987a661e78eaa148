"""`vist2 train`, `vist2 plot`, `vist2 loss-memory`: register them on the main CLI with `add_commands(subparsers)`.

    vist2 train --stage caption|ocr|olm|sft|text --model DIR --data PATH --out RUN_DIR
                [--recipe paper|tiny] [--config FILE.json] [--set FIELD=VALUE ...] [--max-steps N]
                [--resume] [--stop-after STEP]
    vist2 plot RUN_DIR [RUN_DIR ...] [--out PNG]
    vist2 loss-memory [--preset NAME] [--slots 8192] ...   (vist2.training.memory)

The config of a run is the recipe, then the JSON file's fields (`TrainConfig` names; unknown
names are an error), then each `--set` (`learning_rates` merged key by key), then `--max-steps`.
Multi-process: `accelerate launch [--config_file configs/accelerate/...] -m vist2.cli train ...`
(or `-m vist2.training train ...`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vist2.errors import Vist2Error


def cmd_train(args: argparse.Namespace) -> int:
    from vist2.training.config import load_overrides, parse_set, recipe
    from vist2.training.datasets import SYNTHETIC
    from vist2.training.trainer import train

    config = recipe(args.stage, args.recipe)
    overrides = load_overrides(args.config) if args.config else {}
    overrides = parse_set(args.set, overrides)
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    if overrides:
        config = config.with_overrides(overrides)
    data = args.data
    if data is None and args.stage == "caption":
        data = SYNTHETIC
    if data is None:
        raise Vist2Error(f"--stage {args.stage} needs --data (a text file, a directory, or JSONL)")
    result = train(
        config, args.model, data, args.out, resume=args.resume, stop_after=args.stop_after
    )
    print(
        f"next: vist2 plot {result.run_dir}  |  the model for the next stage: --model {result.run_dir}"
    )
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from vist2.training.plot import plot_runs

    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "loss.png"
    path = plot_runs(args.run_dirs, out)
    print(f"wrote {path}")
    return 0


def add_commands(subparsers) -> None:
    """Add `train`, `plot` and `loss-memory` to an argparse sub-parser set (vist2.cli.build_parser's `sub`)."""
    from vist2.training.config import RECIPES, STAGES

    p = subparsers.add_parser(
        "train",
        help="train one stage (caption, ocr, olm, sft) of a vist2 model, or its text-only baseline (text)",
    )
    p.add_argument("--stage", required=True, choices=STAGES, help="which stage to train")
    p.add_argument(
        "--model", required=True, help="model directory, or the run directory of the previous stage"
    )
    p.add_argument(
        "--data",
        help="ocr/olm: text file, directory of text files, or JSONL {'text'}; sft: JSONL chats "
        "({'messages'} or {'prompt','response'}); caption: JSONL {'image','caption'} or 'synthetic' (default)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="run directory (metrics, checkpoints, the trained model in OUT/model)",
    )
    p.add_argument(
        "--recipe",
        default="paper",
        choices=list(RECIPES),
        help="base settings: paper (Table 8) or tiny (CPU demo)",
    )
    p.add_argument("--config", help="JSON file of TrainConfig fields that override the recipe")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override one TrainConfig field after --config (repeatable; VALUE is JSON or a "
        "string), e.g. --set micro_batch_size=4 --set mixed_precision=no",
    )
    p.add_argument(
        "--max-steps", type=int, help="optimizer steps (default: the recipe's; paper = one epoch)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --out"
    )
    p.add_argument(
        "--stop-after",
        type=int,
        metavar="STEP",
        help="stop after this optimizer step of the schedule (checkpoint + OUT/model); "
        "--resume goes on: train a long schedule in pieces",
    )
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("plot", help="draw the loss curves of training runs to a PNG")
    p.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (one panel each)"
    )
    p.add_argument("--out", help="PNG to write (default: RUN_DIR/loss.png of the first run)")
    p.set_defaults(func=cmd_plot)

    from vist2.training.memory import add_command as add_loss_memory

    add_loss_memory(subparsers)


def main(argv: list[str] | None = None) -> int:
    """`python -m vist2.training train ...`: the same as `vist2 train ...`."""
    from vist2.cli import main as vist2_main

    return vist2_main(argv)


__all__ = ["add_commands", "cmd_plot", "cmd_train", "main"]
