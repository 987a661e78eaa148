"""The server's KV cache: a batch whose rows join, leave and evict on their own schedules.

Tensor layout: one Hugging Face `DynamicCache`; each layer holds keys/values
(B, kv_heads, S, head_dim), RoPE already applied. Two (B, S) bool tensors describe the columns:
- `valid[b, s]`: entry s is live for row b (not padding, not evicted); a row attends to these only;
- `open[b, s]`: entry s is text of row b's open chunk (transient: cleared at the chunk boundary).

Verbs:
- `add`: prefill prompts (left-padded) and merge their cache in (both sides left-padded to one
  width);
- `decode`: one new slot per row, written at the same column for every row;
- `visual`: the β page tokens of the rows at a chunk boundary, run as a forward on that row subset
  (the other rows get β dead columns, not β slots of compute);
- `evict_open`: a row forgets its open chunk's text (its validity is cleared);
- `compact`: when dead columns pile up, gather each row's live entries, left-padded, so the
  buffers really shrink;
- `drop`: rows that finished or whose client left are removed at once.

Exactness: a row sees exactly the entries `Engine` keeps for it alone, with the same position ids,
so a stream's greedy tokens do not depend on its neighbours (tests/serve/test_batcher.py).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from vist2.cache import cache_bytes_per_entry
from vist2.engine import prefill_forward


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Zero/False-pad `t` at the front of `dim` up to `width`."""
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _pad_right(t: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad a (B, H, S, D) cache tensor at the end of dim 2 up to `width`."""
    b, h, n, d = t.shape
    return torch.cat([t, t.new_zeros(b, h, width - n, d)], 2)


class BatchKV:
    """The cache of the running batch (see the module docstring for its layout)."""

    def __init__(self, model, min_dead: int = 16) -> None:
        self.model = model
        self.min_dead = (
            min_dead  # compact once this many (and >= 1/4 of the width) columns are dead
        )
        self.cache: DynamicCache | None = None
        self.valid = torch.zeros(0, 0, dtype=torch.bool)  # [B, S]
        self.open = torch.zeros(0, 0, dtype=torch.bool)  # [B, S]
        self.bytes_per_entry = cache_bytes_per_entry(model.config.text_config, model.dtype)

    # -- sizes -----------------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        return self.valid.shape[0]

    @property
    def width(self) -> int:
        return self.valid.shape[1]

    def live(self) -> torch.Tensor:
        """Live entries per row, (B,)."""
        return self.valid.sum(dim=1)

    def allocated_entries(self) -> int:
        """Entries the buffers hold (live + padding + evicted-but-not-compacted), all rows."""
        return self.rows * self.width

    # -- rows join and leave ---------------------------------------------------------------------

    @torch.inference_mode()
    def add(self, batch: dict[str, torch.Tensor], visual: torch.Tensor | None) -> torch.Tensor:
        """Prefill laid-out prompts (a left-padded `collate_layouts` batch of n), append them as
        the last rows; return their next-token logits (n, V)."""
        device = next(self.model.parameters()).device
        cache = DynamicCache()
        out = prefill_forward(self.model, batch, visual, cache)
        self._merge(cache, batch["valid"].to(device))  # valid: [n, L]
        return out.logits[:, -1].float()

    def _merge(self, cache: DynamicCache, valid: torch.Tensor) -> None:
        """Append an n-row cache (valid (n, L)) below the batch, left-padding the narrower side."""
        if self.rows == 0:
            self.cache, self.valid, self.open = cache, valid, torch.zeros_like(valid)
            return
        width = max(self.width, valid.shape[1])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_left(old.keys, width, 2), _pad_left(new.keys, width, 2)])
            old.values = torch.cat(
                [_pad_left(old.values, width, 2), _pad_left(new.values, width, 2)]
            )  # [B+n, H, width, D]
        self.valid = torch.cat([_pad_left(self.valid, width, 1), _pad_left(valid, width, 1)])
        self.open = torch.cat(
            [_pad_left(self.open, width, 1), torch.zeros_like(_pad_left(valid, width, 1))]
        )

    @torch.inference_mode()
    def drop(self, keep: list[int]) -> None:
        """Keep only rows `keep` (in that order); the others' entries are freed now."""
        if len(keep) == self.rows:
            return
        if not keep:
            self.cache = None
            self.valid = self.valid[:0, :0]
            self.open = self.open[:0, :0]
            return
        idx = torch.tensor(keep, device=self.valid.device)
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[idx], layer.values[idx]  # [B', H, S, D]
        self.valid, self.open = self.valid[idx], self.open[idx]
        self.compact()  # the columns only the dropped rows used are dead now

    # -- steps -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def decode(
        self, tokens: torch.Tensor, positions: torch.Tensor, transient: torch.Tensor
    ) -> torch.Tensor:
        """Feed one token per row: tokens, positions (B,) long; transient (B,) bool marks tokens
        that belong to an open chunk. Returns next-token logits (B, V)."""
        b = self.rows
        valid = torch.cat([self.valid, self.valid.new_ones(b, 1)], 1)  # [B, S+1]
        out = self.model(
            input_ids=tokens[:, None],
            position_ids=positions[:, None],
            attention_mask=valid[:, None, None, :],  # [B, 1, 1, S+1]
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.valid = valid
        self.open = torch.cat([self.open, transient[:, None]], 1)
        return out.logits[:, -1].float()

    @torch.inference_mode()
    def visual(
        self, rows: torch.Tensor, positions: torch.Tensor, visual: torch.Tensor
    ) -> torch.Tensor:
        """Feed the β page tokens of `rows` (R,) at `positions` (R, β); visual (R, β, D).

        They see the row's live entries (its open chunk's text included) and, causally, each
        other. Returns the logits of the last page token, (R, V): they pick the next chunk's
        first token (DESIGN.md rule 3).
        """
        r, beta = positions.shape
        whole = r == self.rows  # every row is at a boundary: no subset copy needed
        if whole:
            sub = self.cache
        else:
            sub = DynamicCache(
                ddp_cache_data=[(la.keys[rows], la.values[rows]) for la in self.cache.layers]
            )
        valid = self.valid[rows]  # [R, S]
        s = valid.shape[1] + beta
        mask = torch.cat([valid, valid.new_ones(r, beta)], 1)[:, None, None, :]  # [R, 1, 1, S+β]
        mask = mask.expand(r, 1, beta, s).clone()  # [R, 1, β, S+β]
        mask[..., s - beta :] &= torch.ones(beta, beta, dtype=torch.bool).tril().to(mask.device)
        ids = torch.zeros(r, beta, dtype=torch.long, device=positions.device)
        out = self.model(
            input_ids=ids,
            visual_mask=torch.ones_like(ids, dtype=torch.bool),
            visual_tokens=visual,
            position_ids=positions,
            attention_mask=mask,
            past_key_values=sub,
            use_cache=True,
            logits_to_keep=1,
        )
        new_valid = self.valid.new_zeros(self.rows, beta)  # [B, β]
        new_valid[rows] = True
        if not whole:  # the other rows get β dead columns
            for la, sl in zip(self.cache.layers, sub.layers, strict=True):
                keys = _pad_right(la.keys, s)  # [B, H, S+β, D]
                values = _pad_right(la.values, s)
                keys[rows], values[rows] = sl.keys, sl.values
                la.keys, la.values = keys, values
        self.valid = torch.cat([self.valid, new_valid], 1)
        self.open = torch.cat([self.open, torch.zeros_like(new_valid)], 1)
        return out.logits[:, -1].float()

    @torch.inference_mode()
    def evict_open(self, rows: torch.Tensor) -> None:
        """Rows `rows` forget the text of their open chunk (its page now stands for it)."""
        self.valid[rows] &= ~self.open[rows]
        self.open[rows] = False

    @torch.inference_mode()
    def compact(self, force: bool = False) -> bool:
        """Gather each row's live entries to the right, left-padded to the widest row; done when
        dead columns reach `min_dead` and a quarter of the width (or `force`). True if done."""
        if self.rows == 0:
            return False
        width = int(self.live().max())
        dead = self.width - width
        if dead == 0 or (not force and dead < max(self.min_dead, width // 4)):
            return False
        # a stable sort of validity puts each row's dead columns first and live ones last, both
        # in order: the last `width` columns are the row's live entries, right-aligned
        order = torch.sort(self.valid.to(torch.int8), dim=1, stable=True).indices  # [B, S]
        idx = order[:, self.width - width :]  # [B, W]
        for layer in self.cache.layers:
            b, h, _, d = layer.keys.shape
            gather = idx[:, None, :, None].expand(b, h, width, d)  # [B, H, W, D]
            layer.keys = layer.keys.gather(2, gather)
            layer.values = layer.values.gather(2, gather)
        self.valid = self.valid.gather(1, idx)
        self.open = self.open.gather(1, idx) & self.valid
        return True
