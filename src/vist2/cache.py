"""KV caches that can forget: the text of a chunk leaves the cache once its page is encoded.

Two implementations behind one verb, `evict_range(cache, start, stop)`:
- `EvictingCache` (default): each layer's keys/values live in one preallocated buffer
  (B, kv_heads, capacity, head_dim); a step writes its new entries in place, and eviction moves
  the (at most β) entries after the evicted range down over it. Nothing is copied per step.
- Hugging Face's `DynamicCache`: `torch.cat` per step (copies the whole cache every token), and
  eviction rebuilds each layer from two slices.
`vist2 bench cache` measures both; the engine uses `EvictingCache` unless told otherwise.

Both hold RoPE-rotated keys, so entries keep the positions they were written with: slicing them out
is a valid eviction (checked against a full masked forward by the exactness tests).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache


class EvictingLayer(CacheLayerMixin):
    """One layer: keys/values in a buffer (B, kv_heads, capacity, head_dim), `length` of them live."""

    is_sliding = False
    is_compileable = False

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        self.dtype, self.device = key_states.dtype, key_states.device
        self.keys = key_states.new_empty(b, h, self.capacity, d)  # [B, H_kv, capacity, D]
        self.values = value_states.new_empty(b, h, self.capacity, value_states.shape[-1])
        self.is_initialized = True

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * self.capacity)
        keys = self.keys.new_empty(*self.keys.shape[:2], capacity, self.keys.shape[-1])
        values = self.values.new_empty(*self.values.shape[:2], capacity, self.values.shape[-1])
        keys[:, :, : self.length] = self.keys[:, :, : self.length]
        values[:, :, : self.length] = self.values[:, :, : self.length]
        self.keys, self.values, self.capacity = keys, values, capacity

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write (B, H_kv, n, D) new entries after the live ones; return views of all live entries."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        if self.length + n > self.capacity:
            self._grow(self.length + n)
        self.keys[:, :, self.length : self.length + n] = key_states
        self.values[:, :, self.length : self.length + n] = value_states
        self.length += n
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]

    def evict(self, start: int, stop: int) -> None:
        """Forget entries [start, stop): later entries move down over them (in place)."""
        tail = self.length - stop
        if tail > 0:
            self.keys[:, :, start : start + tail] = self.keys[:, :, stop : self.length].clone()
            self.values[:, :, start : start + tail] = self.values[:, :, stop : self.length].clone()
        self.length -= stop - start

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.length = 0


class EvictingCache(Cache):
    """A Hugging Face `Cache` of `EvictingLayer`s (one per decoder layer)."""

    def __init__(self, num_layers: int, capacity: int) -> None:
        super().__init__(layers=[EvictingLayer(capacity) for _ in range(num_layers)])


def evict_range(cache: Cache, start: int, stop: int) -> None:
    """Drop cache entries [start, stop) from every layer of `cache` (EvictingCache or DynamicCache)."""
    if stop <= start:
        return
    for layer in cache.layers:
        if isinstance(layer, EvictingLayer):
            layer.evict(start, stop)
        else:  # DynamicLayer: rebuild from the two kept slices
            layer.keys = torch.cat([layer.keys[:, :, :start], layer.keys[:, :, stop:]], dim=-2)
            layer.values = torch.cat(
                [layer.values[:, :, :start], layer.values[:, :, stop:]], dim=-2
            )


def make_cache(kind: str, num_layers: int, capacity: int) -> Cache:
    """`kind`: "static" (EvictingCache, preallocated) or "dynamic" (Hugging Face DynamicCache)."""
    if kind == "static":
        return EvictingCache(num_layers, capacity)
    if kind == "dynamic":
        return DynamicCache()
    raise ValueError(f"cache must be 'static' or 'dynamic', got {kind!r}")


def cache_bytes_per_entry(text_config, dtype: torch.dtype) -> int:
    """Bytes one cached token costs across all layers (keys + values)."""
    head_dim = (
        getattr(text_config, "head_dim", None)
        or text_config.hidden_size // text_config.num_attention_heads
    )
    kv_heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * text_config.num_hidden_layers * kv_heads * head_dim * elem
