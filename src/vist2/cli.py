"""`vist2` command line: one entry point, one sub-command per job.

Every user mistake (bad file, unknown preset, bad config field) ends in one line
`vist2: error: ...` on stderr and exit status 2; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vist2.errors import Vist2Error


def read_text_file(path: str | Path) -> str:
    """UTF-8 text of `path`, or a `Vist2Error` that says why not."""
    path = Path(path)
    if not path.is_file():
        raise Vist2Error(f"{path}: no such file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Vist2Error(
            f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
            "convert it to UTF-8 first (e.g. `iconv -f GB18030 -t UTF-8`)"
        ) from None
    if not text.strip():
        raise Vist2Error(f"{path}: the file is empty; there is nothing to render")
    return text


def output_dir(path: str | Path) -> Path:
    """`path` as a directory to write into, or a `Vist2Error` if a file stands there."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise Vist2Error(f"{path} is a file, not a directory; choose another --out")
    return path


def torch_device(name: str):
    """A `torch.device` the machine has, or a `Vist2Error` that says why not."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise Vist2Error(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Vist2Error(
            f"device {name!r} asked for, but this machine has no CUDA GPU; use --device cpu"
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise Vist2Error(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


# -- vist2 init ----------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    import torch

    from vist2.loading import load_tokenizer, save_model, tiny_tokenizer_path
    from vist2.model import VIST2Model
    from vist2.presets import preset_config

    config = preset_config(args.preset)
    tokenizer = load_tokenizer(args.tokenizer or tiny_tokenizer_path())
    if len(tokenizer) > config.text_config.vocab_size:
        raise Vist2Error(
            f"tokenizer {args.tokenizer} has {len(tokenizer)} tokens but preset {args.preset} has "
            f"vocab_size {config.text_config.vocab_size}; pick a matching tokenizer"
        )
    out = output_dir(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise Vist2Error(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    torch.manual_seed(args.seed)
    model = VIST2Model(config)
    save_model(model, tokenizer, out)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"wrote {out}: preset {args.preset}, {params / 1e6:.2f}M parameters, "
        f"K={config.chunk_tokens}, β={config.visual_tokens_per_page}, r={config.compression_ratio:g}"
    )
    if args.tokenizer is None and args.preset != "tiny":
        print(
            "note: the bundled tiny tokenizer stands in; pass --tokenizer DIR for a real one",
            file=sys.stderr,
        )
    return 0


# -- vist2 render --------------------------------------------------------------------------------


def cmd_render(args: argparse.Namespace) -> int:
    from PIL import Image

    from vist2.chunker import split_into_chunks
    from vist2.loading import load_config, load_tokenizer, resolve_model_dir, tiny_tokenizer_path
    from vist2.presets import preset_config
    from vist2.render import PageRenderer

    text = read_text_file(args.file)
    out = output_dir(args.out)
    if args.model:
        config = load_config(args.model)
        tokenizer = load_tokenizer(args.tokenizer or resolve_model_dir(args.model))
    else:
        config = preset_config(args.preset)
        tokenizer = load_tokenizer(args.tokenizer or tiny_tokenizer_path())
    k, beta = config.chunk_tokens, config.visual_tokens_per_page
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    chunks = split_into_chunks(ids, tokenizer, k, beta)
    compressed = [c for c in chunks if c.compressed]
    if args.max_pages is not None:
        compressed = compressed[: args.max_pages]
    renderer = PageRenderer(config.render_config)
    start = time.perf_counter()
    pages = renderer.render_batch([c.text for c in compressed])
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    for i, page in enumerate(pages):
        Image.fromarray(page.image).save(out / f"page_{i:05d}.png", optimize=True)

    text_tokens = sum(len(c.token_ids) for c in compressed)
    raw_tail = (
        sum(len(c.token_ids) for c in chunks if not c.compressed) if args.max_pages is None else 0
    )
    visual = len(pages) * beta
    missing = sum(p.missing_chars for p in pages)
    sizes = sorted({p.font_size for p in pages})
    print(f"{args.file}: {len(text)} characters, {len(ids)} tokens (K={k}, β={beta})")
    print(
        f"{text_tokens} text tokens -> {visual} visual tokens on {len(pages)} pages "
        f"(ratio {text_tokens / max(visual, 1):.2f}x)"
        + (f", plus a raw tail of {raw_tail} tokens" if raw_tail else "")
    )
    print(f"font sizes used: {sizes}; characters the font lacked: {missing}")
    print(f"rendered {len(pages) / max(seconds, 1e-9):.1f} pages/s; wrote {out}/page_*.png")
    return 0


# -- vist2 generate ------------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> int:
    import json

    import torch

    from vist2.engine import Engine, GenerationConfig

    prompt = read_text_file(args.prompt_file) if args.prompt_file else args.prompt
    config = GenerationConfig(
        policy=args.policy,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        stop_strings=tuple(args.stop or ()),
        chat=args.chat,
        cache=args.cache,
        compile=args.compile,
    )
    dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    engine = Engine.from_pretrained(args.model, dtype=dtype, device=torch_device(args.device))

    def show(_row: int, text: str) -> None:
        print(text, end="", flush=True)

    result = engine.generate(prompt, config, on_text=None if args.json else show)
    stats = result.stats.to_dict()
    if args.json:
        print(
            json.dumps(
                {"text": result.text, "finish_reason": result.finish_reason, "stats": stats},
                ensure_ascii=False,
            )
        )
    else:
        print()
        summary = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()
        )
        print(f"[{args.policy}] finish={result.finish_reason} {summary}", file=sys.stderr)
    return 0


# -- vist2 bench ---------------------------------------------------------------------------------


def cmd_bench_efficiency(args: argparse.Namespace) -> int:
    from vist2.bench.efficiency import (
        EfficiencyConfig,
        markdown_table,
        rewrite_report,
        run_efficiency,
    )

    if args.report_only:
        print(markdown_table(rewrite_report(args.out)))
        return 0

    fields = {
        "preset": args.preset,
        "context_lengths": args.lengths,
        "context_new_tokens": args.context_new_tokens,
        "writing_new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "device": None if args.device is None else str(torch_device(args.device)),
        "dtype": args.dtype,
        "text": args.text,
        "tokenizer": args.tokenizer,
        "scenarios": args.scenarios,
        "compile": args.compile,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    config = EfficiencyConfig.quick(**fields) if args.quick else EfficiencyConfig(**fields)
    results = run_efficiency(config, args.out)
    print(markdown_table(results))
    print(f"wrote {args.out}/efficiency.json, efficiency.md and the plots")
    return 0


def cmd_bench_cache(args: argparse.Namespace) -> int:
    import json

    from vist2.bench.cache import run_cache_bench

    device = str(torch_device(args.device))
    result = run_cache_bench(args.preset, args.new_tokens, args.policy, args.repeats, device)
    print(json.dumps(result, indent=1))
    return 0


def cmd_bench_render(args: argparse.Namespace) -> int:
    from vist2.bench.render import bench_render_main

    return bench_render_main(args.passthrough)


# -- entry point ---------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


COMPILE_HELP = "compiled decode steps (torch.compile; CUDA graphs on GPU); default: on for CUDA"


def build_parser() -> argparse.ArgumentParser:
    """The `vist2` parser: each command group registers itself."""
    from vist2.demo import add_command as add_demo_command
    from vist2.eval.cli import add_commands as add_eval_commands
    from vist2.serve.cli import add_serve_command
    from vist2.training.cli import add_commands as add_training_commands

    parser = argparse.ArgumentParser(prog="vist2", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_model_commands(sub)  # vist2 init, render, generate
    add_training_commands(sub)  # vist2 train, plot
    add_serve_command(sub)  # vist2 serve
    add_eval_commands(sub)  # vist2 eval ocr|olm|needle
    add_demo_command(sub)  # vist2 demo
    add_bench_commands(sub)  # vist2 bench efficiency|cache|decode|render|serve
    return parser


def add_model_commands(sub) -> None:
    """vist2 init, render and generate."""
    from vist2.engine import POLICIES
    from vist2.presets import PRESETS

    p = sub.add_parser("init", help="write a random-init model directory from a preset")
    p.add_argument("--preset", required=True, help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the bundled tiny tokenizer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("render", help="render a text file into pages and report the compression")
    p.add_argument("file", help="UTF-8 text file")
    p.add_argument("--out", required=True, help="directory for the page PNGs")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="model directory: its tokenizer, K, β and page settings")
    src.add_argument(
        "--preset",
        default="tiny",
        help=f"preset instead of a model (default tiny): {', '.join(PRESETS)}",
    )
    p.add_argument("--tokenizer", help="tokenizer directory overriding the model's or preset's")
    p.add_argument("--max-pages", type=positive_int, help="render at most this many pages")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("generate", help="generate text under a context policy; stats to stderr")
    p.add_argument("--model", required=True, help="model directory or a shipped name (vist2-small)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompt-file", help="UTF-8 file holding the prompt")
    p.add_argument(
        "--policy", default="global", help=f"context policy: {', '.join(POLICIES)} (default global)"
    )
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.add_argument("--cache", default="static", choices=["static", "dynamic"])
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, help=COMPILE_HELP)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object {text, stats} instead of streaming",
    )
    p.set_defaults(func=cmd_generate)


def add_bench_commands(sub) -> None:
    """vist2 bench efficiency, cache, decode, render and serve."""
    from vist2.bench.decode import add_parser as add_decode_bench
    from vist2.serve.cli import add_bench_serve

    bench = sub.add_parser(
        "bench", help="benchmarks: efficiency, cache, decode, render, serve"
    ).add_subparsers(dest="bench", required=True)
    add_efficiency_bench(bench)
    p = bench.add_parser("cache", help="evicting preallocated cache vs Hugging Face DynamicCache")
    p.add_argument("--preset", default="bench-cpu")
    p.add_argument("--new-tokens", type=int, default=4096)
    p.add_argument("--policy", default="global")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_bench_cache)
    add_decode_bench(bench)  # vist2 bench decode: compiled vs eager
    p = bench.add_parser(
        "render",
        help="pages/s of each renderer path (and Glyph's, with --glyph-dir)",
        add_help=False,  # -h goes to the benchmark's own parser
    )
    # its options belong to vist2.bench.render (`vist2 bench render -h` shows them)
    p.set_defaults(func=cmd_bench_render, passthrough=True)
    add_bench_serve(bench)  # vist2 bench serve (the server's load test)


def add_efficiency_bench(bench) -> None:
    p = bench.add_parser(
        "efficiency", help="global vs prompt vs none: TTFT, cache, FLOPs, decode speed"
    )
    p.add_argument("--preset", help="model shape (default bench-cpu; tiny with --quick)")
    p.add_argument("--out", required=True, help="results directory")
    p.add_argument(
        "--quick", action="store_true", help="a small run (CI): tiny preset, short sweeps"
    )
    p.add_argument(
        "--report-only", action="store_true", help="re-make table and plots from --out's JSON"
    )
    p.add_argument(
        "--lengths", type=int, nargs="+", help="prompt lengths of the long-context sweep"
    )
    p.add_argument("--context-new-tokens", type=int, help="new tokens after each long prompt")
    p.add_argument("--new-tokens", type=int, help="tokens generated in the long-writing run")
    p.add_argument("--repeats", type=int, help="timed repeats per long-context point")
    p.add_argument("--device", help="cpu (default), cuda, ...")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--text", help="UTF-8 text to cut prompts from (default: ../shared Moby Dick)")
    p.add_argument("--tokenizer", help="tokenizer dir (default: the bundled tiny tokenizer)")
    p.add_argument("--scenarios", nargs="+", choices=["context", "writing"], help="default: both")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, help=COMPILE_HELP)
    p.set_defaults(func=cmd_bench_efficiency)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passthrough", None) is True:
        args.passthrough = rest  # handed to the sub-command's own parser
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars only
    try:
        return args.func(args)
    except Vist2Error as err:
        print(f"vist2: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vist2: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
