"""`vist2 bench efficiency`: global vs prompt-only vs plain, measured side by side in one run.

Two scenarios, each for every policy (`none`, `prompt`, `global`) on one random-init model (speed
does not depend on the weights, so the real shapes measure it faithfully):
- long context: a prompt of L tokens (sweep), a few new tokens -> time to first token, peak cache
  bytes, prefill FLOPs;
- long writing: a short prompt, N new tokens (one long run per policy, read at marks along the
  way) -> decode tokens/s along the generation, cache bytes, FLOPs (vision encoder included),
  wall time.

Notable:
- Warm-up first. Long context: policies alternate within each repeat; medians are reported.
  Long writing: the three policies generate at once, one token each in turn, and each policy's
  clock runs only during its own steps (the device synchronised at both ends of each step, so
  asynchronous CUDA work lands on the right clock), so machine noise lands on all policies alike.
- Compiled decode (`compile`, default on for CUDA): long writing decodes with compiled
  fixed-shape steps, warmed up (compiled) before the clocks start. Long context measures the
  prefill (time to first token) and always decodes eagerly: one graph per prompt length would
  cost more compile time than the few tokens it decodes.
- Results are written after every completed point (efficiency.json and .md; plots at the end), so
  a killed run keeps what it measured. `scenarios` picks `context`, `writing` or both.
- FLOPs: the analytic model of `vist2.bench.flops`, cross-checked against torch's
  FlopCounterMode on the smallest sweep point (the JSON records both and their ratio).
- Cache bytes count the live entries of the sequence (what the policy must keep); on CUDA the peak
  of `torch.cuda.max_memory_allocated` is recorded too.
- The crossover, where `global` starts to beat `none`, is reported next to the best case: GCC adds
  β LLM slots and one vision-encoder pass per K generated tokens, so short runs can cost more.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vist2.bench.flops import FlopModel, count_flops
from vist2.bench.interleave import Interleaved
from vist2.cache import cache_bytes_per_entry
from vist2.engine import GenerationConfig
from vist2.errors import Vist2Error
from vist2.layout import build_layout

POLICIES = ("none", "prompt", "global")
SCENARIOS = ("context", "writing")
DEFAULT_TEXT = Path(__file__).resolve().parents[4] / "shared" / "corpora" / "en" / "moby_dick.txt"


@dataclass
class EfficiencyConfig:
    """One benchmark run. `quick()` is the CI-sized variant."""

    preset: str = "bench-cpu"
    """Model shape (vist2.presets); random init."""
    context_lengths: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384, 32768)
    """Prompt lengths (tokens) of the long-context sweep."""
    context_new_tokens: int = 64
    """New tokens generated after each long prompt."""
    writing_prompt_tokens: int = 100
    """Prompt length of the long-writing scenario."""
    writing_new_tokens: int = 16384
    """Tokens generated in the long-writing scenario (read at powers of two along the way)."""
    repeats: int = 3
    """Timed repeats per long-context point (median reported)."""
    device: str = "cpu"
    dtype: str = "float32"
    text: str = str(DEFAULT_TEXT)
    """UTF-8 text the prompts are cut from."""
    tokenizer: str | None = None
    """Tokenizer dir (default: the bundled tiny tokenizer)."""
    seed: int = 0
    count_flops_up_to: int = 4096
    """Cross-check the analytic FLOPs with FlopCounterMode at context lengths up to this."""
    policies: tuple[str, ...] = field(default=POLICIES)
    scenarios: tuple[str, ...] = SCENARIOS
    """Which scenarios run: context (long prompt), writing (long output)."""
    compile: bool | None = None
    """Compiled decode in the long-writing run (None: on for CUDA, off for CPU)."""

    def __post_init__(self) -> None:
        self.context_lengths = tuple(sorted(int(n) for n in self.context_lengths))
        self.policies = tuple(self.policies)
        self.scenarios = tuple(self.scenarios)
        if not self.scenarios or set(self.scenarios) - set(SCENARIOS):
            raise Vist2Error(
                f"EfficiencyConfig.scenarios must be among {SCENARIOS}, got {self.scenarios}"
            )
        if (
            any(n < 1 for n in self.context_lengths)
            or self.writing_new_tokens < 1
            or self.repeats < 1
        ):
            raise Vist2Error("EfficiencyConfig: lengths, new tokens and repeats must be positive")
        if set(self.policies) - set(POLICIES):
            raise Vist2Error(
                f"EfficiencyConfig.policies must be among {POLICIES}, got {self.policies}"
            )
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise Vist2Error(
                f"EfficiencyConfig.dtype must be float32, bfloat16 or float16, got {self.dtype!r}"
            )

    @classmethod
    def quick(cls, **overrides) -> EfficiencyConfig:
        base = dict(
            preset="tiny",
            context_lengths=(256, 1024),
            context_new_tokens=8,
            writing_prompt_tokens=32,
            writing_new_tokens=512,
            repeats=1,
            count_flops_up_to=256,
        )
        return cls(**{**base, **overrides})


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _environment(device: torch.device, dtype: torch.dtype) -> dict:
    import transformers

    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }


def _writing_marks(n: int) -> list[int]:
    marks, m = [], 256
    while m < n:
        marks.append(m)
        m *= 2
    return [*marks, n]


class EfficiencyBench:
    def __init__(self, config: EfficiencyConfig) -> None:
        from vist2.engine import Engine
        from vist2.loading import load_tokenizer, tiny_tokenizer_path
        from vist2.model import VIST2Model
        from vist2.presets import preset_config

        self.config = config
        self.device = torch.device(config.device)
        self.dtype = getattr(torch, config.dtype)
        torch.manual_seed(config.seed)
        model_config = preset_config(config.preset)
        model = VIST2Model(model_config).to(device=self.device, dtype=self.dtype).eval()
        tokenizer = load_tokenizer(config.tokenizer or tiny_tokenizer_path())
        self.engine = Engine(model, tokenizer)
        self.flops = FlopModel.of(model)
        self.per_entry = cache_bytes_per_entry(model_config.text_config, self.dtype)
        self.out_dir: str | Path | None = None
        self.results: dict = {}
        self.k, self.beta = model_config.chunk_tokens, model_config.visual_tokens_per_page
        path = Path(config.text)
        if not path.is_file():
            raise Vist2Error(
                f"benchmark text {path} not found; pass --text FILE (any long UTF-8 text)"
            )
        text = path.read_text(encoding="utf-8")
        start = text.find("Call me Ishmael")  # skip Moby Dick's front matter when it is the text
        text = text[max(start, 0) :]
        need = max(max(config.context_lengths), config.writing_prompt_tokens) + 64
        ids = tokenizer(text[: need * 8], add_special_tokens=False)["input_ids"]
        while len(ids) < need:  # short texts are repeated
            ids = ids + ids
        self.ids = ids

    def prompt(self, n_tokens: int) -> str:
        return self.engine.tokenizer.decode(self.ids[:n_tokens])

    def _generate(self, prompt: str, policy: str, new_tokens: int):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        result = self.engine.generate(
            prompt, policy=policy, max_new_tokens=new_tokens, stop_on_eos=False, compile=False
        )
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
        return result, peak

    def _prompt_shape(self, prompt: str, policy: str) -> tuple[int, int]:
        """(prompt slots, prompt pages) of `prompt` under `policy`."""
        segments, pages, _ = self.engine.prompt_segments(
            prompt, self.engine._config(None, {"policy": policy})
        )
        return len(build_layout(segments, self.beta)), len(pages)

    # -- long context ---------------------------------------------------------------------------

    def long_context(self, progress: tqdm) -> None:
        cfg = self.config
        rows = self.results["long_context"]
        for length in cfg.context_lengths:
            prompt = self.prompt(length)
            runs: dict[str, list] = {p: [] for p in cfg.policies}
            for _ in range(cfg.repeats):  # policies alternate, so machine noise hits all alike
                for policy in cfg.policies:
                    progress.set_description(f"long context L={length} {policy}")
                    runs[policy].append(self._generate(prompt, policy, cfg.context_new_tokens))
            for policy in cfg.policies:
                stats = [r.stats for r, _ in runs[policy]]
                slots, pages = self._prompt_shape(prompt, policy)
                analytic = self.flops.generation(slots, pages, 1, policy, self.k, self.beta)
                row = {
                    "context_tokens": stats[0].prompt_tokens,
                    "policy": policy,
                    "prompt_slots": slots,
                    "prompt_pages": pages,
                    "ttft_s": statistics.median(s.ttft_s for s in stats),
                    "ttft_s_all": [s.ttft_s for s in stats],
                    "decode_tokens_per_s": statistics.median(s.decode_tokens_per_s for s in stats),
                    "peak_cache_entries": stats[0].peak_cache_entries,
                    "peak_cache_bytes": stats[0].peak_cache_bytes,
                    "render_s": statistics.median(s.render_s for s in stats),
                    "vision_s": statistics.median(s.vision_s for s in stats),
                    "prefill_flops": analytic["prefill"] + analytic["vision"],
                    "cuda_max_memory_allocated": runs[policy][0][1],
                }
                if length <= cfg.count_flops_up_to:
                    counted = count_flops(lambda p=prompt, pol=policy: self._generate(p, pol, 1))
                    row["prefill_flops_counted"] = counted
                    row["flops_counted_over_analytic"] = counted / row["prefill_flops"]
                rows.append(row)
                progress.update(1)
            self.save()  # a killed run keeps every completed length

    # -- long writing ---------------------------------------------------------------------------

    def long_writing(self, progress: tqdm) -> None:
        cfg = self.config
        prompt = self.prompt(cfg.writing_prompt_tokens)
        marks = _writing_marks(cfg.writing_new_tokens)
        configs = {
            p: GenerationConfig(
                policy=p,
                max_new_tokens=cfg.writing_new_tokens,
                stop_on_eos=False,
                compile=cfg.compile,
            )
            for p in cfg.policies
        }
        self._warm_up_decode(prompt, configs)
        _, _, n_tokens = self.engine.prompt_segments(prompt, configs[cfg.policies[0]])
        out = {"prompt_tokens": n_tokens, "marks": marks, "policies": {}}
        out["policies"] = {p: {"at_marks": []} for p in cfg.policies}
        self.results["long_writing"] = out
        shapes = {p: self._prompt_shape(prompt, p) for p in cfg.policies}
        run = Interleaved(self.engine, prompt, configs)
        pending = list(marks)
        for policy, n in run:
            if n % 1024 == 0:
                progress.set_description(f"long writing {n}/{cfg.writing_new_tokens} {policy}")
            while pending and all(len(run.stamps[p]) >= pending[0] for p in cfg.policies):
                for p in cfg.policies:
                    point = self._writing_point(run, p, pending[0], shapes[p])
                    out["policies"][p]["at_marks"].append(point)
                pending.pop(0)
                self.save()  # a killed run keeps every completed mark
        for policy in cfg.policies:
            result, own = run.result(policy), run.stamps[policy]
            step = max(len(own) // 64, 16)
            out["policies"][policy]["trace"] = [
                {
                    "generated_tokens": i + step,
                    "tokens_per_s": step / max(own[i + step - 1] - own[i - 1], 1e-9),
                }
                for i in range(1, len(own) - step, step)
            ]
            out["policies"][policy]["stats"] = result.stats.to_dict()
        progress.update(len(cfg.policies))

    def _writing_point(self, run: Interleaved, policy: str, n: int, shape) -> dict:
        """Figures of `policy` at the first `n` generated tokens of the long-writing run."""
        own, entries = run.stamps[policy], run.entries[policy]
        lo = max(n // 2, 1)  # tokens/s over the second half up to the mark
        flops = self.flops.generation(*shape, n, policy, self.k, self.beta)
        return {
            "generated_tokens": n,
            "decode_tokens_per_s": (n - lo) / max(own[n - 1] - own[lo - 1], 1e-9),
            "wall_s": own[n - 1],  # this policy's own time, first token included
            "cache_entries": max(entries[:n]),
            "cache_bytes": max(entries[:n]) * self.per_entry,
            "flops": flops["total"],
            "vision_flops": flops["vision"],
        }

    def _warm_up_decode(self, prompt: str, configs: dict) -> None:
        """Compiled decode compiles its graphs here (every window size the timed run can reach,
        decode and chunk boundary), not on a policy's clock; then a few eager-warm steps."""
        for config in configs.values():
            self.engine.steps(prompt, config).precompile()
            steps = iter(self.engine.steps(prompt, config))
            for _ in range(min(config.max_new_tokens, 8)):
                next(steps)

    def save(self) -> None:
        """Write what has been measured so far (JSON and table; plots come at the end)."""
        if self.out_dir is not None:
            write_report(self.results, self.out_dir, plots=False)

    def run(self, out_dir: str | Path | None = None) -> dict:
        cfg = self.config
        self.out_dir = out_dir
        start = time.perf_counter()
        self.results = {
            "environment": _environment(self.device, self.dtype),
            "config": asdict(cfg),
            "model": {
                "preset": cfg.preset,
                "chunk_tokens": self.k,
                "visual_tokens_per_page": self.beta,
            },
            "long_context": [],
            "long_writing": {},
            "complete": False,
        }
        # warm-up: every policy once, short (kernels, glyph atlases, allocator)
        for policy in cfg.policies:
            self._generate(self.prompt(min(cfg.context_lengths)), policy, 4)
        runs = {"context": len(cfg.context_lengths), "writing": 1}
        total = sum(runs[s] for s in cfg.scenarios) * len(cfg.policies)
        with tqdm(total=total, unit="run") as progress:
            if "context" in cfg.scenarios:
                self.long_context(progress)
            if "writing" in cfg.scenarios:
                self.long_writing(progress)
        self.results["seconds"] = time.perf_counter() - start
        self.results["complete"] = True
        return self.results


# -- summary, table and plots ------------------------------------------------------------------


def _crossover(points: list[tuple[int, float]], margin: float = 1.02) -> int | None:
    """The smallest x from which `global` stays ahead: ratio > `margin` at x and every larger x
    (within 2 % counts as a tie: before its first page, `global` runs exactly what `none` runs)."""
    start = None
    for x, value in sorted(points):
        if value <= margin:
            start = None  # fell behind: a later point must start the lead again
        elif start is None:
            start = x
    return start


def summarise(context: list[dict], writing: dict) -> dict:
    """Ratios to `none`, the largest point, and the crossovers (from where `global` stays ahead)."""
    by = {(r["context_tokens"], r["policy"]): r for r in context}
    lengths = sorted({r["context_tokens"] for r in context})
    ratios = []
    for n in lengths:
        base = by.get((n, "none"))
        if base is None:
            continue
        for policy in ("prompt", "global"):
            r = by.get((n, policy))
            if r is None:
                continue
            ratios.append(
                {
                    "context_tokens": n,
                    "policy": policy,
                    "ttft_speedup": base["ttft_s"] / r["ttft_s"],
                    "cache_fraction": r["peak_cache_bytes"] / base["peak_cache_bytes"],
                    "prefill_flops_fraction": r["prefill_flops"] / base["prefill_flops"],
                }
            )
    summary: dict = {"long_context": ratios}
    glob = [r for r in ratios if r["policy"] == "global"]
    if glob:
        summary["ttft_crossover_tokens"] = _crossover(
            [(r["context_tokens"], r["ttft_speedup"]) for r in glob]
        )
        summary["largest_context"] = glob[-1]
    pol = writing.get("policies", {})
    if "none" in pol and "global" in pol:
        rows = []
        for a, b in zip(pol["global"]["at_marks"], pol["none"]["at_marks"], strict=True):
            rows.append(
                {
                    "generated_tokens": a["generated_tokens"],
                    "decode_speedup": a["decode_tokens_per_s"] / b["decode_tokens_per_s"],
                    "cache_fraction": a["cache_bytes"] / b["cache_bytes"],
                    "flops_fraction": a["flops"] / b["flops"],
                    "wall_speedup": b["wall_s"] / a["wall_s"],
                }
            )
        summary["long_writing"] = rows
        summary["decode_crossover_tokens"] = _crossover(
            [(r["generated_tokens"], r["decode_speedup"]) for r in rows]
        )
        summary["flops_crossover_tokens"] = _crossover(
            [(r["generated_tokens"], 1 / r["flops_fraction"]) for r in rows]
        )
        summary["wall_crossover_tokens"] = _crossover(
            [(r["generated_tokens"], r["wall_speedup"]) for r in rows]
        )
    return summary


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def markdown_table(results: dict) -> str:
    env = results["environment"]
    lines = [
        f"Device: {env['device_name']} ({env['device']}, {env['dtype']}, {env['cpu_threads']} threads), "
        f"torch {env['torch']}, transformers {env['transformers']}; preset `{results['config']['preset']}` "
        f"(K={results['model']['chunk_tokens']}, β={results['model']['visual_tokens_per_page']}).",
        "",
        "**Long context** (prompt of L tokens, "
        f"{results['config']['context_new_tokens']} new tokens; median of {results['config']['repeats']}):",
        "",
        "| L | policy | TTFT (s) | none/x TTFT | peak cache | x/none cache | prefill GFLOPs | x/none FLOPs |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by = {(r["context_tokens"], r["policy"]): r for r in results["long_context"]}
    for r in results["long_context"]:
        base = by.get((r["context_tokens"], "none"), r)
        lines.append(
            f"| {r['context_tokens']:,} | {r['policy']} | {r['ttft_s']:.3f} | {base['ttft_s'] / r['ttft_s']:.2f}× "
            f"| {_fmt_bytes(r['peak_cache_bytes'])} | {r['peak_cache_bytes'] / base['peak_cache_bytes']:.3f} "
            f"| {r['prefill_flops'] / 1e9:,.1f} | {r['prefill_flops'] / base['prefill_flops']:.3f} |"
        )
    if not results["long_context"]:
        lines = lines[:1]
    writing = results.get("long_writing") or {}
    pol = writing.get("policies", {})
    done = min((len(d["at_marks"]) for d in pol.values()), default=0)
    if done:
        lines += [
            "",
            f"**Long writing** ({writing['prompt_tokens']}-token prompt; tokens/s over the second half up to N):",
            "",
            "| N | policy | decode tok/s | x/none tok/s | cache | x/none cache | GFLOPs | x/none FLOPs | wall (s) |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
    for i, n in enumerate(writing.get("marks", [])[:done]):
        base = pol["none"]["at_marks"][i] if "none" in pol else None
        for policy, data in pol.items():
            m = data["at_marks"][i]
            b = base or m
            lines.append(
                f"| {n:,} | {policy} | {m['decode_tokens_per_s']:.1f} | {m['decode_tokens_per_s'] / b['decode_tokens_per_s']:.2f}× "
                f"| {_fmt_bytes(m['cache_bytes'])} | {m['cache_bytes'] / b['cache_bytes']:.3f} "
                f"| {m['flops'] / 1e9:,.1f} | {m['flops'] / b['flops']:.3f} | {m['wall_s']:.1f} |"
            )
    if not results.get("complete", True):
        lines += ["", "*Partial results: the run is still going or was stopped.*"]
    s = results["summary"]
    lines += [
        "",
        f"Crossovers (global beats none): time to first token from L = {s.get('ttft_crossover_tokens')}; "
        f"decode tokens/s from N = {s.get('decode_crossover_tokens')}; total FLOPs from N = {s.get('flops_crossover_tokens')}; "
        f"wall time from N = {s.get('wall_crossover_tokens')}.",
    ]
    t, w = s.get("largest_context"), (s.get("long_writing") or [None])[-1]
    if t and w:
        lines.append(
            f"Targets: at L = {t['context_tokens']:,}, cache global/none = {t['cache_fraction']:.3f} "
            f"(target ≤ 0.27) and TTFT none/global = {t['ttft_speedup']:.1f}× (≥ 3×); at N = "
            f"{w['generated_tokens']:,}, decode tokens/s global/none = {w['decode_speedup']:.2f}× "
            "(≥ 1.5× past 16k)."
        )
    checks = [r for r in results["long_context"] if "flops_counted_over_analytic" in r]
    if checks:
        worst = max(abs(r["flops_counted_over_analytic"] - 1) for r in checks)
        lines.append(
            f"FLOPs: analytic model vs FlopCounterMode on {len(checks)} runs: largest difference {worst:.2%}."
        )
    return "\n".join(lines) + "\n"


def plot(results: dict, out_dir: Path) -> list[Path]:
    """long_context.png and long_writing.png, for the scenarios the results hold."""
    import matplotlib

    matplotlib.use("Agg")
    paths = []
    if results["summary"]["long_context"]:
        paths.append(_plot_context(results, out_dir))
    writing = (results.get("long_writing") or {}).get("policies", {})
    if writing and all("trace" in d for d in writing.values()):
        paths.append(_plot_writing(results, out_dir))
    return paths


def _plot_context(results: dict, out_dir: Path) -> Path:
    import matplotlib.pyplot as plt

    ratios = results["summary"]["long_context"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for policy, style in (("prompt", "s--"), ("global", "o-")):
        rows = [r for r in ratios if r["policy"] == policy]
        if not rows:
            continue
        x = [r["context_tokens"] for r in rows]
        axes[0].plot(x, [r["ttft_speedup"] for r in rows], style, label=policy)
        axes[1].plot(x, [r["cache_fraction"] for r in rows], style, label=policy)
        axes[2].plot(x, [r["prefill_flops_fraction"] for r in rows], style, label=policy)
    for ax, title in zip(
        axes,
        ("TTFT speed-up vs none (×)", "peak cache / none", "prefill FLOPs / none"),
        strict=True,
    ):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("prompt tokens")
        ax.set_title(title, fontsize=10)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"long context — {results['environment']['device_name']}, preset {results['config']['preset']}",
        fontsize=10,
    )
    fig.tight_layout()
    path = out_dir / "long_context.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_writing(results: dict, out_dir: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for policy, data in results["long_writing"]["policies"].items():
        trace = data["trace"]
        axes[0].plot(
            [t["generated_tokens"] for t in trace],
            [t["tokens_per_s"] for t in trace],
            label=policy,
            lw=1,
        )
        marks = data["at_marks"]
        axes[1].plot(
            [m["generated_tokens"] for m in marks],
            [m["cache_bytes"] / 2**20 for m in marks],
            "o-",
            label=policy,
        )
    axes[0].set_title("decode tokens/s along the generation", fontsize=10)
    axes[1].set_title("cache (MiB) vs generated tokens", fontsize=10)
    for ax in axes:
        ax.set_xlabel("generated tokens")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "long_writing.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(results: dict, out_dir: str | Path, plots: bool = True) -> None:
    """efficiency.json, efficiency.md and (with `plots`) the PNG plots, the summary recomputed from
    the data. Partial results (a run still going, or killed) are written as they are."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results["summary"] = summarise(results["long_context"], results.get("long_writing") or {})
    tmp = out / "efficiency.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out / "efficiency.json")  # atomic: a kill mid-write keeps the previous file
    (out / "efficiency.md").write_text(markdown_table(results))
    if plots:
        plot(results, out)


def rewrite_report(out_dir: str | Path) -> dict:
    """Re-make the table and plots of an earlier run from its efficiency.json."""
    path = Path(out_dir) / "efficiency.json"
    if not path.is_file():
        raise Vist2Error(f"{path} not found; run `vist2 bench efficiency --out {out_dir}` first")
    results = json.loads(path.read_text())
    write_report(results, out_dir)
    return results


def run_efficiency(config: EfficiencyConfig, out_dir: str | Path) -> dict:
    """Run the benchmark, writing efficiency.json and efficiency.md to `out_dir` after every
    completed point, and the PNG plots at the end."""
    results = EfficiencyBench(config).run(out_dir)
    write_report(results, out_dir)
    return results
