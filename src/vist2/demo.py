"""`vist2 demo`: the default model on a long prompt, with what compression kept.

One command shows the method end to end on a CPU in about a minute:
1. a long held-out prompt (never trained on) is cut into pages; the model writes a continuation
   under `global` (prompt and output kept as pages) and the text is printed;
2. the same prompt and length run under `prompt` (Glyph-style) and `none` (the plain LLM), and a
   table compares pages, visual tokens and the peak KV cache of each;
3. the prompt's first page is saved as a PNG and the model reads it back (character accuracy,
   beside the same score for the prompt's second page's text: what another page of the same
   book earns without reading this one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

from vist2.errors import Vist2Error

# The start of Moby Dick's held-out part (`vist2.heldout`: never trained on), shipped so the demo
# runs anywhere; the Gutenberg line breaks are kept, the CRLF endings made LF.
BUNDLED_PROMPT = Path(__file__).parent / "assets" / "demo_prompt.txt"


def add_command(sub) -> None:
    p = sub.add_parser(
        "demo", help="the default model on a long prompt: text, compression, a page read back"
    )
    p.add_argument(
        "--model", default="vist2-small", help="model dir or shipped name (default vist2-small)"
    )
    p.add_argument(
        "--prompt-file",
        help="UTF-8 text whose held-out part is the prompt (default: the start of Moby Dick's "
        "held-out part, shipped with vist2)",
    )
    p.add_argument("--prompt-tokens", type=int, default=2048, help="prompt length (default 2048)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="tokens to write (default 512)")
    p.add_argument("--show-chars", type=int, default=600, help="characters of the output to print")
    p.add_argument("--out", default="demo", help="directory for the page PNG (default ./demo)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_demo)


def demo_prompt(path: str | None, tokenizer, tokens: int) -> str:
    """The first `tokens` tokens of the held-out part of `path` (the whole file if that part is
    too short), or of the bundled held-out text."""
    from vist2.cli import read_text_file
    from vist2.heldout import split_text

    if path is None:
        text = held = BUNDLED_PROMPT.read_text(encoding="utf-8")
    else:
        text = read_text_file(path)
        held = split_text(text, "heldout") or text
    ids = tokenizer(held, add_special_tokens=False)["input_ids"]
    if len(ids) < tokens:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:tokens])


def compare_policies(engine, prompt: str, max_new_tokens: int) -> dict:
    """Generate under every policy (greedy, same length); returns the results by policy."""
    from tqdm import tqdm

    from vist2.engine import POLICIES

    return {
        policy: engine.generate(
            prompt, policy=policy, max_new_tokens=max_new_tokens, stop_on_eos=False
        )
        for policy in tqdm(POLICIES, desc="policies", unit="policy", file=sys.stderr)
    }


def compression_table(results: dict) -> str:
    none = results["none"].stats
    lines = [
        "| policy | prompt tokens | generated | pages | visual tokens | peak cache entries | peak cache MB | cache / none |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for policy, r in results.items():
        s = r.stats
        lines.append(
            f"| {policy} | {s.prompt_tokens:,} | {s.generated_tokens:,} | {s.pages} | {s.visual_tokens:,} | "
            f"{s.peak_cache_entries:,} | {s.peak_cache_bytes / 2**20:.2f} | "
            f"{s.peak_cache_entries / max(none.peak_cache_entries, 1):.3f} |"
        )
    return "\n".join(lines)


class ReadBack(NamedTuple):
    """The prompt's first page and what the model read from it."""

    shown: str  # the page's text
    read: str  # the model's greedy reading of the page image
    accuracy: float  # character accuracy of `read` against `shown`
    floor: float | None  # the prompt's second page's text scored as if it were the reading
    png: Path  # where the rendered page was saved


def read_back_first_page(model, tokenizer, prompt: str, out: Path) -> ReadBack:
    """Render the prompt's first page, save it, let the model read it. The floor is what English
    that is not on the page earns (None for a one-page prompt)."""
    from PIL import Image

    from vist2.eval.metrics import character_accuracy
    from vist2.eval.ocr import GreedyReader, ocr_pages
    from vist2.render import normalize_text
    from vist2.training.sources import Document

    cfg = model.config
    page = ocr_pages(
        [Document(prompt, "prompt")], tokenizer, cfg.chunk_tokens, cfg.visual_tokens_per_page, 2
    )
    if not page:
        raise Vist2Error("the prompt is shorter than one page; give a longer --prompt-file")
    reader = GreedyReader(model, tokenizer)
    read_ids = reader(page[:1])[0]
    read = tokenizer.decode(read_ids)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "page_0.png"
    image = reader.engine.renderer.render(page[0].text).image
    Image.fromarray(image).save(png)
    shown = normalize_text(page[0].text)  # scored on what the page shows ("\r\n" drawn as "\n")
    floor = character_accuracy(shown, normalize_text(page[1].text)) if len(page) > 1 else None
    return ReadBack(page[0].text, read, character_accuracy(shown, normalize_text(read)), floor, png)


def cmd_demo(args: argparse.Namespace) -> int:
    from vist2.cli import torch_device
    from vist2.engine import Engine

    if args.prompt_tokens < 1 or args.max_new_tokens < 1:
        raise Vist2Error("--prompt-tokens and --max-new-tokens must be >= 1")
    engine = Engine.from_pretrained(args.model, device=torch_device(args.device))
    cfg = engine.config
    prompt = demo_prompt(args.prompt_file, engine.tokenizer, args.prompt_tokens)
    print(
        f"model {args.model}: K={cfg.chunk_tokens} text tokens per page, "
        f"β={cfg.visual_tokens_per_page} visual tokens per page (r={cfg.chunk_tokens / cfg.visual_tokens_per_page:g})"
    )
    source = args.prompt_file or "Moby Dick (bundled)"
    print(f"prompt: {args.prompt_tokens} tokens of the held-out part of {source}\n")
    results = compare_policies(engine, prompt, args.max_new_tokens)
    print("--- written under `global` (prompt and output kept as pages) ---")
    written = results["global"].text.strip()
    print(
        written[: args.show_chars]
        + (
            f" … ({len(written) - args.show_chars:,} more characters)"
            if len(written) > args.show_chars
            else ""
        )
    )
    print("\n--- what each policy kept ---")
    print(compression_table(results))
    page = read_back_first_page(engine.model, engine.tokenizer, prompt, Path(args.out))
    print(f"\n--- the prompt's first page ({page.png}), read back by the model ---")
    print(f"on the page: {page.shown!r}")
    print(f"read back:   {page.read!r}")
    print(f"character accuracy: {page.accuracy:.3f}")
    if page.floor is not None:
        print(
            f"(the prompt's second page's text, scored as if read from this one: {page.floor:.3f})"
        )
    return 0
