"""Run several generations at once, one token of each in turn, each on its own clock.

This is how vist2's benchmarks compare variants "side by side in one run": a burst of machine
noise lands on every variant alike instead of on whichever happened to be running.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def run_interleaved(
    engine, prompt: str, configs: dict, on_token: Callable[[str, int], None] | None = None
) -> dict[str, tuple]:
    """Generate `prompt` under each `GenerationConfig` of `configs`, token by token in turn.

    Returns {name: (GenerationResult, own seconds elapsed at each generated token)}; a variant's
    clock runs only while its own step runs (first token: prefill included).
    """
    runs = {
        name: engine._run([prompt], config, return_logits=False, every_token=True)
        for name, config in configs.items()
    }
    own = dict.fromkeys(runs, 0.0)
    stamps: dict[str, list[float]] = {name: [] for name in runs}
    done: dict[str, tuple] = {}
    cuda = engine.device.type == "cuda"
    while len(done) < len(runs):
        for name, run in runs.items():
            if name in done:
                continue
            start = time.perf_counter()
            event = next(run)
            if cuda:
                torch.cuda.synchronize(engine.device)
            own[name] += time.perf_counter() - start
            if isinstance(event, list):  # the results: this variant is finished
                done[name] = (event[0], stamps[name])
            else:
                stamps[name].append(own[name])
                if on_token is not None:
                    on_token(name, len(stamps[name]))
    return done
