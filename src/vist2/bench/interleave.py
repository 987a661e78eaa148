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


class Interleaved:
    """Generations of one prompt under several `GenerationConfig`s, advanced one step each in
    turn. Iterating yields (name, tokens so far) after each step; what has been measured so far
    is readable at any time: `stamps[name]` (own seconds at each token, prefill included in the
    first) and `entries[name]` (live cache entries at each token). `result(name)` once done."""

    def __init__(self, engine, prompt: str, configs: dict) -> None:
        self.device = engine.device
        self.generations = {name: engine.steps(prompt, config) for name, config in configs.items()}
        self.stamps: dict[str, list[float]] = {name: [] for name in configs}
        self.entries: dict[str, list[int]] = {name: [] for name in configs}
        self.done: set[str] = set()

    def __iter__(self) -> Iterator[tuple[str, int]]:
        steps = {name: iter(g) for name, g in self.generations.items()}
        own = dict.fromkeys(steps, 0.0)
        while len(self.done) < len(steps):
            for name, it in steps.items():
                if name in self.done:
                    continue
                event, seconds = timed_step(it, self.device)
                own[name] += seconds
                if event is None:  # the iteration ended: this variant is finished
                    self.done.add(name)
                    continue
                self.stamps[name].append(own[name])
                self.entries[name].append(event.cache_entries)
                yield name, len(self.stamps[name])

    def result(self, name: str):
        return self.generations[name].results[0]


def run_interleaved(
    engine, prompt: str, configs: dict, on_token: Callable[[str, int], None] | None = None
) -> dict[str, tuple]:
    """Generate `prompt` under each `GenerationConfig` of `configs`, one step of each in turn.

    Returns {name: (GenerationResult, own seconds elapsed at each generated token)}.
    """
    run = Interleaved(engine, prompt, configs)
    for name, n in run:
        if on_token is not None:
            on_token(name, n)
    return {name: (run.result(name), run.stamps[name]) for name in configs}
