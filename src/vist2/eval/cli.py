"""`vist2 eval ocr|olm|needle`: argument parsing and handlers (registered by `vist2.cli`)."""

from __future__ import annotations

import argparse

from vist2.heldout import SPLITS


def _common(p: argparse.ArgumentParser, batch_size: int, data_required: bool = True) -> None:
    p.add_argument("--model", required=True, help="vist2 model directory (or a run directory)")
    p.add_argument("--out", required=True, help="directory for the JSON, Markdown and PNGs")
    p.add_argument(
        "--data",
        required=data_required,
        help="text file, JSONL of {'text': ...} or a directory of them (UTF-8)",
    )
    p.add_argument(
        "--split",
        default="heldout",
        choices=[s for s in SPLITS if s != "train"],
        help="heldout (default): the part training skips; all: whole files never trained on",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument(
        "--batch-size",
        type=_positive,
        default=batch_size,
        help=f"sequences per forward (default {batch_size})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a depth is a fraction in [0, 1], got {value}")
    return value


def _dtype(name: str):
    import torch

    return {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def _device(name: str) -> str:
    from vist2.cli import torch_device

    return str(torch_device(name))


def add_commands(sub) -> None:
    """Register `vist2 eval ...` on the top-level subparsers."""
    ev = sub.add_parser("eval", help="quality: OCR read-back, optical LM perplexity, needle")
    cmds = ev.add_subparsers(dest="eval", required=True)

    p = cmds.add_parser("ocr", help="read held-out pages back; character/token accuracy, ROUGE-L")
    _common(p, batch_size=16)
    p.add_argument("--pages", type=_positive, help="read at most this many pages")
    p.add_argument(
        "--page-tokens",
        type=_positive,
        nargs="+",
        metavar="N",
        help="text tokens per page, one run each (default: the model's K); r = N / β",
    )
    p.add_argument("--worst", type=int, default=5, help="worst pages to show (image + diff)")
    p.add_argument(
        "--control",
        action="store_true",
        help="also read every page as a blank page: what the language prior alone scores",
    )
    p.set_defaults(func=cmd_ocr)

    p = cmds.add_parser("olm", help="continuation perplexity: prefix as pages (global) vs text")
    _common(p, batch_size=4)
    p.add_argument("--prefix", type=_positive, default=1024, metavar="N", help="prefix tokens")
    p.add_argument(
        "--continue", dest="cont", type=_positive, default=1024, metavar="N", help="scored tokens"
    )
    p.add_argument("--windows", type=_positive, help="score at most this many windows")
    p.add_argument("--baseline", help="a text-only model directory (Hugging Face causal LM)")
    p.add_argument(
        "--control",
        action="store_true",
        help="also read the prefix as blank pages: what the pages carry (blank - global)",
    )
    p.set_defaults(func=cmd_olm)

    p = cmds.add_parser("needle", help="passkey retrieval per (length, depth) and policy")
    _common(p, batch_size=8, data_required=False)
    p.add_argument("--lengths", type=_positive, nargs="+", default=[512, 1024, 2048])
    p.add_argument("--depths", type=_fraction, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--trials", type=_positive, default=5, help="passkeys per cell")
    p.add_argument(
        "--policies", nargs="+", default=["global", "prompt", "none"], help="context policies"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--chat", action="store_true", help="wrap each prompt in the chat template (tuned models)"
    )
    p.set_defaults(func=cmd_needle)


def cmd_ocr(args: argparse.Namespace) -> int:
    from vist2.cli import output_dir
    from vist2.eval.ocr import OCRRun, ocr_markdown, run_ocr

    run = OCRRun(
        model=args.model,
        data=args.data,
        out=str(output_dir(args.out)),
        split=args.split,
        max_pages=args.pages,
        page_tokens=tuple(args.page_tokens or ()),
        batch_size=args.batch_size,
        worst=args.worst,
        control=args.control,
        device=_device(args.device),
        dtype=_dtype(args.dtype),
        progress=not args.no_progress,
    )
    report = run_ocr(run)
    print(ocr_markdown(report).split("\n## Worst pages")[0].rstrip())
    print(f"\nwrote {args.out}/ocr.json, ocr.md, ocr_hist.png, worst/")
    return 0


def cmd_olm(args: argparse.Namespace) -> int:
    from vist2.cli import output_dir
    from vist2.eval.olm import OLMRun, olm_markdown, run_olm

    run = OLMRun(
        model=args.model,
        data=args.data,
        out=str(output_dir(args.out)),
        split=args.split,
        prefix=args.prefix,
        cont=args.cont,
        max_windows=args.windows,
        baseline=args.baseline,
        batch_size=args.batch_size,
        device=_device(args.device),
        dtype=_dtype(args.dtype),
        progress=not args.no_progress,
        control=args.control,
    )
    report = run_olm(run)
    print(olm_markdown(report).rstrip())
    print(f"\nwrote {args.out}/olm.json, olm.md")
    return 0


def cmd_needle(args: argparse.Namespace) -> int:
    from vist2.cli import output_dir
    from vist2.eval.needle import NeedleRun, needle_markdown, run_needle

    run = NeedleRun(
        model=args.model,
        out=str(output_dir(args.out)),
        data=args.data,
        split=args.split,
        lengths=tuple(args.lengths),
        depths=tuple(args.depths),
        trials=args.trials,
        policies=tuple(args.policies),
        seed=args.seed,
        chat=args.chat,
        batch_size=args.batch_size,
        device=_device(args.device),
        dtype=_dtype(args.dtype),
        progress=not args.no_progress,
    )
    report = run_needle(run)
    print(needle_markdown(report).rstrip())
    print(f"\nwrote {args.out}/needle.json, needle.md, needle.png")
    return 0
