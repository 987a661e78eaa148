"""FLOP counting with grouped-query attention (more query heads than KV heads, as in Qwen3)."""

import pytest
import torch
import torch.nn.functional as F

from vist2.bench.flops import FlopModel, count_flops, sdpa_flops
from vist2.engine import Engine
from vist2.layout import build_layout


def test_gqa_sdpa_is_counted_with_every_query_head():
    b, heads_q, heads_kv, s_q, s_k, d = 2, 4, 2, 3, 7, 16
    q = torch.randn(b, heads_q, s_q, d)
    k, v = torch.randn(b, heads_kv, s_k, d), torch.randn(b, heads_kv, s_k, d)
    mask = torch.ones(b, 1, s_q, s_k, dtype=torch.bool)
    expected = 2 * b * heads_q * s_q * s_k * (d + d)  # scores + weighted sum, per query head
    assert sdpa_flops(q.shape, k.shape, v.shape) == expected
    counted = count_flops(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
    assert counted == expected
    masked = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)  # noqa: E731
    assert count_flops(masked) == expected
    with pytest.raises(ValueError, match="multiple"):
        sdpa_flops((1, 3, 1, 8), (1, 2, 1, 8), (1, 2, 1, 8))


@pytest.mark.parametrize("policy", ["none", "global"])
def test_counted_flops_of_a_gqa_model_match_the_analytic_model(tiny_model, tiny_tokenizer, policy):
    text = tiny_model.config.text_config
    assert text.num_attention_heads > text.num_key_value_heads  # grouped-query attention
    engine = Engine(tiny_model, tiny_tokenizer)
    prompt = "It is a truth universally acknowledged, that a single man in possession of a fortune"
    counted = count_flops(lambda: engine.generate(prompt, policy=policy, max_new_tokens=1))
    config = engine._config(None, {"policy": policy})
    segments, pages, _ = engine.prompt_segments(prompt, config)
    slots = len(build_layout(segments, engine.beta))
    flops = FlopModel.of(tiny_model).generation(
        slots, len(pages), 1, policy, engine.chunk_tokens, engine.beta
    )
    assert counted == pytest.approx(flops["total"], rel=0.01)
