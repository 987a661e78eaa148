"""`vist2 bench decode`: compiled vs eager decode tokens/s, side by side in one run.

For each policy, the eager engine and the compiled one (fixed-shape steps under `torch.compile`;
CUDA graphs on GPU) generate the same prompt at once, one token each in turn, each on its own
device-synchronised clock (`vist2.bench.interleave`); medians over the repeats. The compiled
graphs are built in a warm-up (`Generation.precompile`), so compile time lands on no clock.
With `hf`, the `none` policy is also run through Hugging Face `generate` with its static cache
(which Hugging Face compiles on CUDA), alternating with the engine's runs, timed per token by a
streamer. Greedy tokens are compared and reported (`tokens_agree`): float rounding may flip a
near-tie of a random-init model, which changes the text but not the work per token.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm
from transformers.generation.streamers import BaseStreamer

from vist2.bench.interleave import Interleaved
from vist2.engine import POLICIES, GenerationConfig
from vist2.errors import Vist2Error

PROMPT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered as the rightful property of some one or other "
    "of their daughters."
)


@dataclass
class DecodeBenchConfig:
    """One `vist2 bench decode` run."""

    preset: str = "bench-cpu"
    """Model shape (vist2.presets); random init."""
    policies: tuple[str, ...] = ("none", "global")
    new_tokens: int = 2048
    """Tokens generated per run (bench-cpu's K = 1024: two chunk boundaries under global)."""
    repeats: int = 3
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    hf: bool = False
    """Also time Hugging Face `generate` (static cache) on the `none` policy."""

    def __post_init__(self) -> None:
        self.policies = tuple(self.policies)
        if not self.policies or set(self.policies) - set(POLICIES):
            raise Vist2Error(f"policies must be among {POLICIES}, got {self.policies}")
        if self.new_tokens < 2 or self.repeats < 1:
            raise Vist2Error("--new-tokens must be >= 2 and --repeats >= 1")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise Vist2Error(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


def _rate(own: list[float]) -> float:
    """Decode tokens/s after the first token, on a variant's own clock."""
    return (len(own) - 1) / max(own[-1] - own[0], 1e-9)


class _TokenClock(BaseStreamer):
    """A `generate` streamer that notes when each new token reaches the host."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.prompt_seen = False

    def put(self, value) -> None:
        if self.prompt_seen:  # the first call hands over the prompt
            self.times.append(time.perf_counter())
        self.prompt_seen = True

    def end(self) -> None:
        pass


def _hf_rate(engine, new_tokens: int) -> float:
    """Decode tokens/s of Hugging Face `generate` (greedy, static cache) on the plain LLM."""
    from transformers import GenerationConfig as HFGenerationConfig

    ids = engine.tokenizer(PROMPT, add_special_tokens=False, return_tensors="pt")["input_ids"]
    config = HFGenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=engine.pad_id,
        cache_implementation="static",
    )
    clock = _TokenClock()
    lm = engine.model.language_model
    lm.generate(ids.to(engine.device), generation_config=config, streamer=clock)
    return _rate(clock.times)


def run_decode_bench(config: DecodeBenchConfig) -> dict:
    from vist2.bench.efficiency import _environment
    from vist2.engine import Engine
    from vist2.loading import load_tokenizer, tiny_tokenizer_path
    from vist2.model import VIST2Model
    from vist2.presets import preset_config

    device, dtype = torch.device(config.device), getattr(torch, config.dtype)
    torch.manual_seed(config.seed)
    model = VIST2Model(preset_config(config.preset)).to(device=device, dtype=dtype).eval()
    engine = Engine(model, load_tokenizer(tiny_tokenizer_path()))
    out = {"environment": _environment(device, dtype), "config": asdict(config), "policies": {}}
    with tqdm(total=len(config.policies) * config.repeats, unit="run") as progress:
        for policy in config.policies:
            variants = {
                name: GenerationConfig(
                    policy=policy, max_new_tokens=config.new_tokens, stop_on_eos=False, compile=c
                )
                for name, c in (("eager", False), ("compiled", True))
            }
            progress.set_description(f"{policy}: warm-up (compiling)")
            if config.hf and policy == "none":
                _hf_rate(engine, min(config.new_tokens, 16))  # Hugging Face compiles here
            for variant in variants.values():
                engine.steps(PROMPT, variant).precompile()  # every graph the run can need
                steps = iter(engine.steps(PROMPT, variant))
                for _ in range(min(config.new_tokens, 8)):
                    next(steps)
            rates: dict[str, list[float]] = {name: [] for name in variants}
            agree = True
            for _ in range(config.repeats):
                progress.set_description(f"{policy}: eager and compiled")
                run = Interleaved(engine, PROMPT, variants)
                for _ in run:
                    pass
                for name in variants:
                    rates[name].append(_rate(run.stamps[name]))
                agree &= run.result("eager").token_ids == run.result("compiled").token_ids
                if config.hf and policy == "none":
                    rates.setdefault("hf", []).append(_hf_rate(engine, config.new_tokens))
                progress.update(1)
            row = {name: statistics.median(r) for name, r in rates.items()}
            out["policies"][policy] = {
                "eager_tokens_per_s": row["eager"],
                "compiled_tokens_per_s": row["compiled"],
                "compiled_over_eager": row["compiled"] / row["eager"],
                "all_eager": rates["eager"],
                "all_compiled": rates["compiled"],
                "tokens_agree": agree,
            }
            if "hf" in rates:
                out["policies"][policy]["hf_static_tokens_per_s"] = row["hf"]
                out["policies"][policy]["compiled_over_hf"] = row["compiled"] / row["hf"]
    return out


def markdown_table(results: dict) -> str:
    env, cfg = results["environment"], results["config"]
    lines = [
        f"Device: {env['device_name']} ({env['device']}, {env['dtype']}, {env['cpu_threads']} "
        f"threads), torch {env['torch']}, transformers {env['transformers']}; preset "
        f"`{cfg['preset']}`, {cfg['new_tokens']} new tokens, median of {cfg['repeats']}.",
        "",
        "| policy | eager tok/s | compiled tok/s | compiled/eager | same tokens |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    hf_rows: list[str] = []
    for policy, r in results["policies"].items():
        lines.append(
            f"| {policy} | {r['eager_tokens_per_s']:.1f} | {r['compiled_tokens_per_s']:.1f} "
            f"| {r['compiled_over_eager']:.2f}× | {'yes' if r['tokens_agree'] else 'no'} |"
        )
        if "hf_static_tokens_per_s" in r:
            hf_rows.append(
                f"Hugging Face `generate` (static cache), {policy}: "
                f"{r['hf_static_tokens_per_s']:.1f} tok/s; engine compiled / HF = "
                f"{r['compiled_over_hf']:.2f}×."
            )
    if hf_rows:
        lines += ["", *hf_rows]
    return "\n".join(lines) + "\n"


# -- CLI (registered by vist2.cli) ------------------------------------------------------------


def add_parser(bench_commands) -> None:
    """`vist2 bench decode` under the `vist2 bench` sub-commands."""
    p = bench_commands.add_parser("decode", help="compiled vs eager decode tokens/s, side by side")
    p.add_argument("--preset", default="bench-cpu")
    p.add_argument("--policies", nargs="+", default=["none", "global"], choices=POLICIES)
    p.add_argument("--new-tokens", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--hf", action="store_true", help="also time Hugging Face generate on none")
    p.add_argument("--out", help="directory for decode.json and decode.md")
    p.set_defaults(func=cmd_bench_decode)


def cmd_bench_decode(args: argparse.Namespace) -> int:
    from vist2.cli import output_dir, torch_device

    config = DecodeBenchConfig(
        preset=args.preset,
        policies=tuple(args.policies),
        new_tokens=args.new_tokens,
        repeats=args.repeats,
        device=str(torch_device(args.device)),
        dtype=args.dtype,
        hf=args.hf,
    )
    out = output_dir(args.out) if args.out else None  # checked before the long run
    results = run_decode_bench(config)
    table = markdown_table(results)
    print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "decode.json").write_text(json.dumps(results, indent=1))
        (out / "decode.md").write_text(table)
        print(f"wrote {out}/decode.json, decode.md")
    return 0


__all__ = ["DecodeBenchConfig", "add_parser", "markdown_table", "run_decode_bench"]
