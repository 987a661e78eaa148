"""`vist2 bench serve`: a bounded load test of `vist2 serve` with the official `openai` client.

Phases (loopback only; bounded by request count and by `--duration`):
1. alone: each of P distinct prompts streamed once, one at a time: single-stream throughput and
   the greedy reference text of every prompt;
2. busy: `--streams` concurrent streaming clients send `--requests` requests (prompt i mod P);
   every response is compared with its prompt's reference (greedy decoding is deterministic, so a
   difference is a corrupted response);
3. memory (with `--memory-tokens T`): `--memory-streams` streams of T tokens under `global`, then
   under `none`; /metrics is polled for the cache bytes (live entries and allocated buffers).

Reported: aggregate tokens/s (and its ratio to one stream alone), time to first token p50/p99,
inter-token latency p50/p99, errors (exceptions, error events), lost requests (a stream that
ended without a finish_reason), corrupted responses; written as JSON and a PNG.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import openai
from tqdm import tqdm

from vist2.errors import Vist2Error

DEFAULT_TEXT = Path(__file__).resolve().parents[4] / "shared" / "corpora" / "en" / "moby_dick.txt"
FALLBACK_TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered as the rightful property of some one or other "
    "of their daughters. "
) * 20
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Outcome:
    """One request as the client saw it."""

    prompt: int
    start: float
    text: str = ""
    finish: str | None = None
    error: str | None = None
    completion_tokens: int = 0
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)  # seconds between content chunks
    end: float = 0.0
    usage: dict = field(default_factory=dict)


def prompt_source(path: str | None) -> tuple[str, str]:
    """(text, where it came from): `path`, else ../shared's Moby-Dick, else a built-in passage."""
    if path is not None:
        from vist2.cli import read_text_file

        return read_text_file(path), str(path)
    if DEFAULT_TEXT.is_file():
        return DEFAULT_TEXT.read_text("utf-8"), str(DEFAULT_TEXT)
    return FALLBACK_TEXT, "built-in passage (Pride and Prejudice, opening lines, repeated)"


def make_prompts(n: int, text: str | None = None) -> list[str]:
    """n distinct prompts of growing length (about 20 to 200 words) cut from a text."""
    if text is None:
        text = prompt_source(None)[0]
    words = text.split()
    prompts = []
    for i in range(n):
        length = 20 + (180 * i) // max(n - 1, 1)
        start = (i * 997) % max(len(words) - length, 1)
        prompts.append(" ".join(words[start : start + length]))
    return prompts


async def one_request(
    client: openai.AsyncOpenAI, model: str, prompt: str, index: int, max_tokens: int, policy: str
) -> Outcome:
    """Stream one completion; never raises (errors are recorded)."""
    out = Outcome(index, time.perf_counter())
    last = None
    try:
        stream = await client.completions.create(
            model=model,
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"policy": policy, "ignore_eos": True},
        )
        async for chunk in stream:
            now = time.perf_counter()
            if chunk.usage is not None:
                out.usage = chunk.usage.model_dump()
                out.completion_tokens = out.usage["completion_tokens"]
            for choice in chunk.choices:
                if choice.text:
                    if last is None:
                        out.ttft = now - out.start
                    else:
                        out.gaps.append(now - last)
                    last = now
                    out.text += choice.text
                if choice.finish_reason is not None:
                    out.finish = choice.finish_reason
    except Exception as err:  # recorded: the report counts errors
        out.error = f"{type(err).__name__}: {err}"
    out.end = time.perf_counter()
    return out


async def run_phase(
    url: str,
    model: str,
    prompts: list[str],
    order: list[int],
    concurrency: int,
    max_tokens: int,
    policy: str,
    duration: float,
    label: str,
) -> tuple[list[Outcome], list[tuple[float, dict]]]:
    """Send `order` (prompt indices) with `concurrency` clients; no new request after
    `duration` seconds. Returns the outcomes and the /metrics samples taken meanwhile."""
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)
    base = url.removesuffix("/v1")
    pending = list(enumerate(order))
    outcomes: list[Outcome] = []
    samples: list[tuple[float, dict]] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(order), desc=label, unit="req", leave=False)

    async def worker() -> None:
        while pending and time.perf_counter() - t0 < duration:
            _, p = pending.pop(0)
            outcomes.append(await one_request(client, model, prompts[p], p, max_tokens, policy))
            bar.update()

    async def poll(stop: asyncio.Event) -> None:
        async with httpx.AsyncClient() as http:
            while not stop.is_set():
                text = (await http.get(base + "/metrics")).text
                samples.append((time.perf_counter() - t0, parse_metrics(text)))
                await asyncio.sleep(0.1)

    stop = asyncio.Event()
    poller = asyncio.create_task(poll(stop))
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    stop.set()
    await poller
    bar.close()
    await client.close()
    return outcomes, samples


def parse_metrics(text: str) -> dict[str, float]:
    """vist2_* samples of a Prometheus text page (unlabelled ones)."""
    values = {}
    for line in text.splitlines():
        if line.startswith("vist2_") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def summarize(outcomes: list[Outcome], refs: dict[int, str] | None) -> dict:
    """Throughput, latency percentiles and failure counts of one phase."""
    ok = [o for o in outcomes if o.error is None and o.finish is not None]
    tokens = sum(o.completion_tokens for o in ok)
    wall = max((o.end for o in outcomes), default=0) - min((o.start for o in outcomes), default=0)
    ttft = [o.ttft for o in ok if o.ttft is not None]
    gaps = [g for o in ok for g in o.gaps]
    # time per output token of each request: chunk gaps are bursty when several SSE events
    # arrive in one read, so the per-request mean is the steadier latency figure
    tpot = [
        (o.end - o.start - o.ttft) / (o.completion_tokens - 1)
        for o in ok
        if o.ttft is not None and o.completion_tokens > 1
    ]
    pct = lambda xs, q: float(np.percentile(xs, q)) if xs else None  # noqa: E731
    corrupted = [o.prompt for o in ok if refs is not None and o.text != refs.get(o.prompt)]
    return {
        "requests": len(outcomes),
        "completed": len(ok),
        "errors": sum(o.error is not None for o in outcomes),
        "error_samples": sorted({o.error for o in outcomes if o.error})[:5],
        "lost": sum(o.error is None and o.finish is None for o in outcomes),
        "corrupted": len(corrupted),
        "completion_tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "ttft_p50_s": pct(ttft, 50),
        "ttft_p99_s": pct(ttft, 99),
        "tpot_p50_s": pct(tpot, 50),
        "tpot_p99_s": pct(tpot, 99),
        "itl_p50_s": pct(gaps, 50),
        "itl_p99_s": pct(gaps, 99),
    }


def start_server(model: str, max_batch: int, policy: str) -> tuple[subprocess.Popen, str]:
    """`vist2 serve` on a free loopback port; returns (process, base url /v1)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "vist2.cli",
        "serve",
        "--model",
        model,
        "--port",
        str(port),
        "--policy",
        policy,
        "--max-batch",
        str(max_batch),
        "--max-queue",
        "4096",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise Vist2Error(f"the server exited with status {proc.returncode} while starting")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base + "/v1"
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    raise Vist2Error("the server did not answer /health within 300 s")


def check_loopback(url: str) -> str:
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise Vist2Error(f"--url {url}: the load test talks to loopback servers only")
    return url.rstrip("/") if url.rstrip("/").endswith("/v1") else url.rstrip("/") + "/v1"


def memory_phase(url: str, model: str, prompts: list[str], streams: int, tokens: int) -> dict:
    """`streams` streams of `tokens` tokens under global, then none: cache bytes from /metrics."""
    report = {}
    for policy in ("global", "none"):
        order = [i % len(prompts) for i in range(streams)]
        outcomes, samples = asyncio.run(
            run_phase(url, model, prompts, order, streams, tokens, policy, 1e9, f"memory {policy}")
        )
        live = [s.get("vist2_cache_live_bytes", 0.0) for _, s in samples]
        allocated = [s.get("vist2_cache_allocated_bytes", 0.0) for _, s in samples]
        report[policy] = {
            **summarize(outcomes, None),
            "peak_live_bytes": max(live, default=0.0),
            "peak_allocated_bytes": max(allocated, default=0.0),
            "sum_stream_peak_entries": sum(o.usage.get("peak_cache_entries", 0) for o in outcomes),
            "timeline": [(t, s.get("vist2_cache_live_bytes", 0.0)) for t, s in samples],
            "timeline_allocated": [(t, a) for (t, _), a in zip(samples, allocated, strict=True)],
        }
    g, n = report["global"], report["none"]
    report["ratio_live"] = g["peak_live_bytes"] / max(n["peak_live_bytes"], 1.0)
    report["ratio_allocated"] = g["peak_allocated_bytes"] / max(n["peak_allocated_bytes"], 1.0)
    report["ratio_stream_peaks"] = g["sum_stream_peak_entries"] / max(
        n["sum_stream_peak_entries"], 1
    )
    return report


def run_loadtest(url: str, args) -> dict:
    """All phases against the server at `url` (…/v1); returns the report."""
    model = httpx.get(url + "/models", timeout=10).json()["data"][0]["id"]
    text, source = prompt_source(args.text)
    prompts = make_prompts(args.prompts, text)
    order = list(range(len(prompts)))
    alone, _ = asyncio.run(
        run_phase(url, model, prompts, order, 1, args.max_tokens, args.policy, 1e9, "alone")
    )
    refs = {o.prompt: o.text for o in alone if o.error is None}
    n_busy = args.requests or 2 * args.streams
    busy_order = [i % len(prompts) for i in range(n_busy)]
    busy, samples = asyncio.run(
        run_phase(
            url,
            model,
            prompts,
            busy_order,
            args.streams,
            args.max_tokens,
            args.policy,
            args.duration,
            "busy",
        )
    )
    report = {
        "model": model,
        "streams": args.streams,
        "max_tokens": args.max_tokens,
        "policy": args.policy,
        "prompts": len(prompts),
        "prompt_text": source,
        "alone": summarize(alone, None),
        "busy": summarize(busy, refs),
        "not_sent_by_time_bound": n_busy - len(busy),
        "busy_timeline": [(t, s.get("vist2_running_streams", 0.0)) for t, s in samples],
    }
    report["speedup"] = report["busy"]["tokens_per_s"] / max(report["alone"]["tokens_per_s"], 1e-9)
    if args.memory_tokens:
        report["memory"] = memory_phase(
            url, model, prompts, args.memory_streams, args.memory_tokens
        )
    return report


def plot(report: dict, path: Path) -> None:
    """Throughput, latency and (if measured) cache memory, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if "memory" in report else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    a, b = report["alone"], report["busy"]
    axes[0].bar(
        ["1 stream", f"{report['streams']} streams"], [a["tokens_per_s"], b["tokens_per_s"]]
    )
    axes[0].set_ylabel("generated tokens/s (all streams)")
    axes[0].set_title(f"throughput: {report['speedup']:.1f}x")
    keys = ["ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "itl_p99_s"]
    x = np.arange(len(keys))
    axes[1].bar(x - 0.2, [1e3 * (a[k] or 0) for k in keys], 0.4, label="1 stream")
    axes[1].bar(
        x + 0.2, [1e3 * (b[k] or 0) for k in keys], 0.4, label=f"{report['streams']} streams"
    )
    axes[1].set_xticks(x, ["TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "ITL p99"])
    axes[1].set_yscale("log")
    axes[1].set_ylabel("ms")
    axes[1].legend()
    axes[1].set_title("latency")
    if "memory" in report:
        mem = report["memory"]
        for policy in ("global", "none"):
            t, v = (
                zip(*mem[policy]["timeline"], strict=True) if mem[policy]["timeline"] else ((), ())
            )
            axes[2].plot(t, [x / 1e6 for x in v], label=f"{policy} (live)")
        axes[2].set_xlabel("s")
        axes[2].set_ylabel("KV cache, MB")
        axes[2].set_title(f"cache, global/none = {mem['ratio_live']:.2f}")
        axes[2].legend()
    fig.suptitle(f"vist2 serve load test: {report['model']}, {report['max_tokens']} tokens/request")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def loadtest_main(args) -> int:
    """The command: start a server (or use --url), run the phases, write JSON + PNG, print."""
    from vist2.cli import output_dir

    if bool(args.model) == bool(args.url):
        raise Vist2Error("give --model DIR (a server is started) or --url of a running server")
    out = output_dir(args.out)
    out.mkdir(parents=True, exist_ok=True)
    proc = None
    if args.url:
        url = check_loopback(args.url)
    else:
        from vist2.loading import resolve_model_dir

        resolve_model_dir(args.model)
        batch = max(args.streams, args.memory_streams)
        proc, url = start_server(args.model, batch, args.policy)
    try:
        report = run_loadtest(url, args)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
    (out / "loadtest.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out / "loadtest.png")
    print(format_report(report))
    print(f"wrote {out / 'loadtest.json'} and {out / 'loadtest.png'}")
    b = report["busy"]
    failed = b["errors"] + b["lost"] + b["corrupted"] + report["alone"]["errors"]
    return 1 if failed else 0


def format_report(report: dict) -> str:
    a, b = report["alone"], report["busy"]
    ms = lambda s: f"{1e3 * s:.1f} ms" if s is not None else "-"  # noqa: E731
    lines = [
        f"1 stream:   {a['tokens_per_s']:.0f} tokens/s, TTFT p50 {ms(a['ttft_p50_s'])}, "
        f"time per output token p50 {ms(a['tpot_p50_s'])}",
        f"{report['streams']} streams: {b['tokens_per_s']:.0f} tokens/s "
        f"({report['speedup']:.1f}x one stream), TTFT p50 {ms(b['ttft_p50_s'])} "
        f"p99 {ms(b['ttft_p99_s'])}, time per output token p50 {ms(b['tpot_p50_s'])} "
        f"p99 {ms(b['tpot_p99_s'])}, inter-chunk p99 {ms(b['itl_p99_s'])}",
        f"requests {b['requests']}: completed {b['completed']}, errors {b['errors']}, "
        f"lost {b['lost']}, corrupted {b['corrupted']} (not sent: {report['not_sent_by_time_bound']})",
    ]
    if "memory" in report:
        m = report["memory"]
        lines.append(
            f"cache, {m['global']['requests']} streams: global/none live {m['ratio_live']:.3f}, "
            f"allocated {m['ratio_allocated']:.3f}, per-stream peaks {m['ratio_stream_peaks']:.3f}"
        )
    return "\n".join(lines)
