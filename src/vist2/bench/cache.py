"""`vist2 bench cache`: the evicting preallocated cache vs Hugging Face's DynamicCache.

Both run the same generation (same model, same prompt, greedy) in one process, interleaved token
by token (`vist2.bench.interleave`), and report decode tokens/s on each one's own clock. The tokens must agree
(the run fails otherwise): speed is the only thing allowed to differ.
"""

from __future__ import annotations

import statistics

import torch

from vist2.errors import Vist2Error


def run_cache_bench(
    preset: str = "bench-cpu",
    new_tokens: int = 4096,
    policy: str = "global",
    repeats: int = 3,
    device: str = "cpu",
    seed: int = 0,
) -> dict:
    from vist2.bench.interleave import run_interleaved
    from vist2.engine import Engine, GenerationConfig
    from vist2.loading import load_tokenizer, tiny_tokenizer_path
    from vist2.model import VIST2Model
    from vist2.presets import preset_config

    torch.manual_seed(seed)
    model = VIST2Model(preset_config(preset)).to(device).eval()
    engine = Engine(model, load_tokenizer(tiny_tokenizer_path()))
    prompt = (
        "It is a truth universally acknowledged, that a single man in possession of a good fortune"
    )
    warm = {
        c: GenerationConfig(policy=policy, max_new_tokens=64, cache=c)
        for c in ("static", "dynamic")
    }
    run_interleaved(engine, prompt, warm)
    configs = {
        c: GenerationConfig(policy=policy, max_new_tokens=new_tokens, stop_on_eos=False, cache=c)
        for c in ("static", "dynamic")
    }
    runs: dict[str, list] = {"static": [], "dynamic": []}
    for _ in range(repeats):
        for cache, (result, own) in run_interleaved(engine, prompt, configs).items():
            runs[cache].append((result, own))
    if runs["static"][0][0].token_ids != runs["dynamic"][0][0].token_ids:
        raise Vist2Error("the two cache implementations generated different tokens")
    out = {"preset": preset, "policy": policy, "new_tokens": new_tokens, "repeats": repeats}
    for cache, results in runs.items():
        # decode tokens/s on each run's own clock, after the first token
        rates = [(len(own) - 1) / max(own[-1] - own[0], 1e-9) for _, own in results]
        out[cache] = {
            "decode_tokens_per_s": statistics.median(rates),
            "own_seconds": statistics.median(own[-1] for _, own in results),
        }
    out["static_over_dynamic"] = (
        out["static"]["decode_tokens_per_s"] / out["dynamic"]["decode_tokens_per_s"]
    )
    return out
