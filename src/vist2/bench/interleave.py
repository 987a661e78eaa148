"""Run several generations at once, one step of each in turn, each on its own clock.

This is how vist2's benchmarks compare variants "side by side in one run": a burst of machine
noise lands on every variant alike instead of on whichever happened to be running.

Each variant's clock covers only its own steps, and on CUDA the device is synchronised before the
clock starts and before it stops: kernels run asynchronously, and without that a step's work
would land on whichever clock runs next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(steps: Iterator, device: torch.device) -> tuple[object | None, float]:
    """(next item of `steps` or None at the end, seconds it took on the device)."""
    synchronize(device)
    start = time.perf_counter()
    item = next(steps, None)
    synchronize(device)
    return item, time.perf_counter() - start


def run_interleaved(
    engine, prompt: str, configs: dict, on_token: Callable[[str, int], None] | None = None
) -> dict[str, tuple]:
    """Generate `prompt` under each `GenerationConfig` of `configs`, one step of each in turn.

    Returns {name: (GenerationResult, own seconds elapsed at each generated token)}; a variant's
    clock runs only while its own step runs (first token: prefill included).
    """
    generations = {name: engine.steps(prompt, config) for name, config in configs.items()}
    steps = {name: iter(g) for name, g in generations.items()}
    own = dict.fromkeys(steps, 0.0)
    stamps: dict[str, list[float]] = {name: [] for name in steps}
    done: dict[str, tuple] = {}
    while len(done) < len(steps):
        for name, it in steps.items():
            if name in done:
                continue
            event, seconds = timed_step(it, engine.device)
            own[name] += seconds
            if event is None:  # the iteration ended: this variant is finished
                done[name] = (generations[name].results[0], stamps[name])
                continue
            stamps[name].append(own[name])
            if on_token is not None:
                on_token(name, len(stamps[name]))
    return done
