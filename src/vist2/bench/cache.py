"""`vist2 bench cache`: the evicting preallocated cache vs Hugging Face's DynamicCache.

Both run the same `global` generation (same model, same prompt, greedy) in one process,
alternating, and report decode tokens/s and wall time per implementation. The tokens must agree
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
    from vist2.engine import Engine
    from vist2.loading import load_tokenizer, tiny_tokenizer_path
    from vist2.model import VIST2Model
    from vist2.presets import preset_config

    torch.manual_seed(seed)
    model = VIST2Model(preset_config(preset)).to(device).eval()
    engine = Engine(model, load_tokenizer(tiny_tokenizer_path()))
    prompt = (
        "It is a truth universally acknowledged, that a single man in possession of a good fortune"
    )
    kw = dict(policy=policy, max_new_tokens=new_tokens, stop_on_eos=False)
    for cache in ("static", "dynamic"):  # warm-up
        engine.generate(prompt, **{**kw, "max_new_tokens": 64}, cache=cache)
    runs: dict[str, list] = {"static": [], "dynamic": []}
    for _ in range(repeats):
        for cache in runs:
            runs[cache].append(engine.generate(prompt, cache=cache, **kw))
    if runs["static"][0].token_ids != runs["dynamic"][0].token_ids:
        raise Vist2Error("the two cache implementations generated different tokens")
    out = {"preset": preset, "policy": policy, "new_tokens": new_tokens, "repeats": repeats}
    for cache, results in runs.items():
        out[cache] = {
            "decode_tokens_per_s": statistics.median(r.stats.decode_tokens_per_s for r in results),
            "total_s": statistics.median(r.stats.total_s for r in results),
        }
    out["static_over_dynamic"] = (
        out["static"]["decode_tokens_per_s"] / out["dynamic"]["decode_tokens_per_s"]
    )
    return out
