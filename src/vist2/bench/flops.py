"""FLOPs of a generation: counted by torch's FlopCounterMode, and an analytic model to cross-check.

Notable:
- SDPA is counted with our own grouped-query-aware formula (`sdpa_flops`), passed to
  FlopCounterMode for every SDPA kernel (CPU flash, CUDA flash / memory-efficient / cuDNN): torch
  counts nothing for CPU SDPA (DESIGN.md), and before 2.13 its formula asserts when the query has
  more heads than keys and values (Qwen3: 16 query heads, 8 KV heads).
- Both counts are "as executed": masked attention is a dense (queries x keys) product, and the
  causal prefill kernel is counted dense too (torch's formula ignores causality). Only matrix
  products count (linear layers, attention, convolutions), as in FlopCounterMode.
- The analytic model replays the engine's cache arithmetic (prefill, one slot per step, 1 + β
  slots at a chunk boundary, then K entries evicted), so it can be evaluated at any length
  without running the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

_SDPA_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
)


def sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one SDPA call, grouped-query attention included: query (B, H_q, S_q, D),
    key (B, H_kv, S_k, D), value (B, H_kv, S_k, D_v) with H_q a multiple of H_kv. Every query head
    scores all keys and sums all values: 2·B·H_q·S_q·S_k·(D + D_v). Dense, as executed (masks and
    causality do not reduce it)."""
    b, heads_q, s_q, d = query_shape
    _, heads_kv, s_k, _ = key_shape
    if heads_q % heads_kv:
        raise ValueError(f"query heads ({heads_q}) are not a multiple of KV heads ({heads_kv})")
    return 2 * b * heads_q * s_q * s_k * (d + value_shape[-1])


def _sdpa_mapping() -> dict:
    ops = (getattr(torch.ops.aten, name, None) for name in _SDPA_OPS)
    return {op: sdpa_flops for op in ops if op is not None}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products `fn()` runs."""
    with FlopCounterMode(display=False, custom_mapping=_sdpa_mapping()) as counter:
        fn()
    return int(counter.get_total_flops())


def _linear_params(module: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


@dataclass
class FlopModel:
    """Analytic FLOPs of a `VIST2Model` (matrix products only)."""

    llm_linear: int  # weights of the decoder layers' Linear modules
    attn_width: int  # query heads x head_dim
    layers: int
    head: int  # hidden x vocab (the LM head, one row of logits per forward in the engine)
    vision_page: int  # one page through the vision encoder and the aligner

    @classmethod
    def of(cls, model) -> FlopModel:
        tc, vc = model.config.text_config, model.config.vision_config
        head_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
        decoder = model.language_model.get_decoder()
        patches = (model.config.render["page_height"] // vc.patch_size) * (
            model.config.render["page_width"] // vc.patch_size
        )
        embed = 2 * patches * vc.num_channels * vc.patch_size**2 * vc.hidden_size  # patch conv
        vision_linear = 2 * patches * _linear_params(model.vision_model)
        vision_attn = vc.num_hidden_layers * 4 * patches * patches * vc.hidden_size
        aligner = 2 * model.config.visual_tokens_per_page * _linear_params(model.aligner)
        return cls(
            llm_linear=_linear_params(decoder),
            attn_width=tc.num_attention_heads * head_dim,
            layers=tc.num_hidden_layers,
            head=tc.hidden_size * tc.vocab_size,
            vision_page=embed + vision_linear + vision_attn + aligner,
        )

    def forward(self, new: int, keys: int, logits: int = 1) -> int:
        """One LLM forward of `new` slots attending over `keys` cache entries (new ones included)."""
        return (
            2 * new * self.llm_linear
            + 4 * self.layers * new * keys * self.attn_width
            + 2 * logits * self.head
        )

    def generation(
        self,
        prompt_slots: int,
        prompt_pages: int,
        new_tokens: int,
        policy: str,
        chunk_tokens: int,
        beta: int,
    ) -> dict[str, int]:
        """FLOPs of one engine run, split into prefill / decode / vision, replaying its cache sizes."""
        prefill = self.forward(prompt_slots, prompt_slots)
        vision = prompt_pages * self.vision_page
        decode = 0
        cache = prompt_slots
        in_chunk = 0
        for _ in range(new_tokens - 1):  # the last token is never fed back
            in_chunk += 1
            if policy == "global" and in_chunk == chunk_tokens:
                decode += self.forward(1 + beta, cache + 1 + beta)
                vision += self.vision_page
                cache += 1 + beta - chunk_tokens
                in_chunk = 0
            else:
                decode += self.forward(1, cache + 1)
                cache += 1
        return {
            "prefill": prefill,
            "decode": decode,
            "vision": vision,
            "total": prefill + decode + vision,
        }
