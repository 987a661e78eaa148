"""KV caches that can forget: the text of a chunk leaves the cache once its page is encoded.

Two implementations behind one verb, `evict_range(cache, start, stop)`:
- `EvictingCache` (default): each layer's keys/values live in one preallocated buffer
  (B, kv_heads, capacity, head_dim); a step writes its new entries in place, and eviction moves
  the (at most β) entries after the evicted range down over it. Nothing is copied per step.
  After the prefill, `fix()` switches it to fixed shapes for compiled decode: a step writes at a
  device counter (`write_at`) and attends over a window of the buffer that grows in powers of two
  (the engine masks what is not live), so decode steps repeat a few shapes and captured graphs
  (CUDA graphs) replay.
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
        self.length = 0  # live entries, counted on the host
        self.write_at: torch.Tensor | None = None  # fixed mode: [] long, where new entries go
        self.window = capacity  # fixed mode: leading buffer entries a step attends over

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
        if self.write_at is not None:  # fixed shapes: write at the device counter, return it all
            slots = self.write_at + torch.arange(n, device=self.keys.device)  # [n]
            self.keys.index_copy_(2, slots, key_states)
            self.values.index_copy_(2, slots, value_states)
            window = self.window  # [B, H_kv, window, D]: the caller masks what is not live
            return self.keys[:, :, :window], self.values[:, :, :window]
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

    get_max_cache_shape = get_max_length  # its name before transformers 5.11 (then abstract)

    def reset(self) -> None:
        self.length = 0


class EvictingCache(Cache):
    """A Hugging Face `Cache` of `EvictingLayer`s (one per decoder layer)."""

    def __init__(self, num_layers: int, capacity: int) -> None:
        super().__init__(layers=[EvictingLayer(capacity) for _ in range(num_layers)])
        self.write_at: torch.Tensor | None = None

    def fix(self) -> torch.Tensor:
        """Switch to fixed shapes (after the prefill); returns the device counter of written
        entries, shared by all layers. Unwritten slots are zeroed: masked-out garbage could be NaN,
        and 0 x NaN is NaN in the attention's weighted sum."""
        first = self.layers[0]
        self.write_at = torch.tensor(first.length, device=first.keys.device)  # []
        for layer in self.layers:
            layer.keys[:, :, layer.length :].zero_()
            layer.values[:, :, layer.length :].zero_()
            layer.write_at = self.write_at
            # fixed addresses: a CUDA graph replays on the same memory (as in HF's StaticLayer)
            torch._dynamo.mark_static_address(layer.keys)
            torch._dynamo.mark_static_address(layer.values)
        torch._dynamo.mark_static_address(self.write_at)
        return self.write_at

    def set_window(self, window: int) -> None:
        """Fixed mode: attend over the first `window` entries of the buffers (each window size is
        its own compiled graph, so the engine grows it in powers of two)."""
        for layer in self.layers:
            layer.window = window

    def advance(self, n: int) -> None:
        """Host book-keeping after a fixed-shape step wrote `n` entries per layer."""
        for layer in self.layers:
            layer.length += n

    @property
    def capacity(self) -> int:
        return self.layers[0].capacity


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
    if getattr(cache, "write_at", None) is not None:  # fixed shapes: the counter moves back too
        cache.write_at.sub_(stop - start)


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
