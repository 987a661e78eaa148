"""Sequence layout: segments -> token slots, position ids, attention mask and labels.

This module is DESIGN.md's three rules in code; everything that trains or generates goes
through it, and the exactness contract tests the engine against it.

A sequence is a list of segments:
- `TextSegment`: raw text, persistent (chat-template tokens, a short tail, a caption, OCR text).
- `ChunkSegment`: a compressed chunk: its K text tokens (transient), then the β visual tokens of
  its page (persistent).
- `PageSegment`: β visual tokens of a page whose text is never fed as tokens (a long query).

Pages are numbered by order of appearance: the i-th `ChunkSegment`/`PageSegment` of a sequence
uses page i. The three rules:
1. Positions: persistent tokens take the next free position; a chunk's text starting at free
   position P takes P, P+1, ...; its visual tokens reuse P ... P+β-1, and the next free position
   becomes P+β.
2. Visibility: a token sees every persistent token before it, and transient text of its own chunk
   before it; nothing sees a transient token of another chunk.
3. Loss: a trained text token is predicted from the slot just before it in the layout (so the
   first token of chunk i+1 is predicted from the last visual token of chunk i).

Notable: a `mask_mod` for flex attention is built from the same per-slot arrays as the dense
mask, so GPU training with a BlockMask and the CPU dense mask cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vist2.chunker import Chunk
from vist2.errors import ConfigError

IGNORE_INDEX = -100  # label of slots that carry no loss (torch cross_entropy's default)


@dataclass(frozen=True)
class TextSegment:
    """Raw text, kept in context for good. `train`: next-token loss on these tokens."""

    token_ids: tuple[int, ...]
    train: bool = False


@dataclass(frozen=True)
class ChunkSegment:
    """A compressed chunk: transient text tokens, then the β visual tokens of its page."""

    token_ids: tuple[int, ...]
    train: bool = False


@dataclass(frozen=True)
class PageSegment:
    """β visual tokens of a page whose text is not fed as tokens."""


Segment = TextSegment | ChunkSegment | PageSegment


@dataclass
class SequenceLayout:
    """Per-slot arrays of one sequence, all of shape (L,)."""

    input_ids: torch.Tensor  # (L,) long: text id, or 0 at visual slots
    visual: torch.Tensor  # (L,) bool: slot holds a visual token
    position_ids: torch.Tensor  # (L,) long: rule 1
    persistent: torch.Tensor  # (L,) bool: stays in context (visual tokens, raw text)
    chunk_id: (
        torch.Tensor
    )  # (L,) long: chunk of a transient text token or of a chunk's visual token, else -1
    labels: torch.Tensor  # (L,) long: target predicted at this slot, or IGNORE_INDEX
    num_pages: int

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def attention_mask(self) -> torch.Tensor:
        """Dense rule-2 mask, (L, L) bool, True where query row may attend to key column."""
        return visibility(
            self.persistent[None], self.chunk_id[None], torch.ones_like(self.visual)[None]
        )[0]


def build_layout(segments: Sequence[Segment], visual_tokens_per_page: int) -> SequenceLayout:
    """Apply rules 1-3 to `segments` (see module docstring)."""
    beta = visual_tokens_per_page
    if beta < 1:
        raise ConfigError(f"visual_tokens_per_page must be >= 1, got {beta}")
    ids: list[int] = []
    visual: list[bool] = []
    positions: list[int] = []
    persistent: list[bool] = []
    chunk_id: list[int] = []
    train: list[bool] = []
    next_pos = 0  # the next free position (rule 1)
    num_chunks = 0
    num_pages = 0

    def add(token: int, is_visual: bool, pos: int, keep: bool, chunk: int, trained: bool) -> None:
        ids.append(token)
        visual.append(is_visual)
        positions.append(pos)
        persistent.append(keep)
        chunk_id.append(chunk)
        train.append(trained)

    for seg in segments:
        if isinstance(seg, TextSegment):
            for t in seg.token_ids:
                add(t, False, next_pos, True, -1, seg.train)
                next_pos += 1
        elif isinstance(seg, ChunkSegment):
            if not seg.token_ids:
                raise ConfigError("a ChunkSegment needs at least one text token")
            for j, t in enumerate(seg.token_ids):
                add(t, False, next_pos + j, False, num_chunks, seg.train)
            for j in range(beta):  # visual tokens reuse the chunk's first β positions
                add(0, True, next_pos + j, True, num_chunks, False)
            next_pos += beta
            num_chunks += 1
            num_pages += 1
        elif isinstance(seg, PageSegment):
            for _ in range(beta):
                add(0, True, next_pos, True, -1, False)
                next_pos += 1
            num_pages += 1
        else:
            raise TypeError(f"not a layout segment: {seg!r}")

    # Rule 3: the slot before a trained text token predicts it.
    labels = [IGNORE_INDEX] * len(ids)
    for j in range(1, len(ids)):
        if train[j] and not visual[j]:
            labels[j - 1] = ids[j]

    return SequenceLayout(
        input_ids=torch.tensor(ids, dtype=torch.long),
        visual=torch.tensor(visual, dtype=torch.bool),
        position_ids=torch.tensor(positions, dtype=torch.long),
        persistent=torch.tensor(persistent, dtype=torch.bool),
        chunk_id=torch.tensor(chunk_id, dtype=torch.long),
        labels=torch.tensor(labels, dtype=torch.long),
        num_pages=num_pages,
    )


def visibility(
    persistent: torch.Tensor, chunk_id: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Rule 2 as a dense mask.

    persistent, chunk_id, valid: (B, L). Returns (B, L, L) bool: [b, q, k] = q may attend to k.
    """
    length = persistent.shape[-1]
    idx = torch.arange(length, device=persistent.device)
    causal = idx[None, :] <= idx[:, None]  # (L, L): k <= q
    same_chunk = (chunk_id[:, :, None] == chunk_id[:, None, :]) & (
        chunk_id[:, None, :] >= 0
    )  # (B, L, L)
    visible = persistent[:, None, :] | same_chunk  # (B, L, L)
    return causal[None] & visible & valid[:, None, :]


def make_mask_mod(persistent: torch.Tensor, chunk_id: torch.Tensor, valid: torch.Tensor):
    """Rule 2 as a flex-attention `mask_mod(b, h, q, k)` over (B, L) per-slot tensors.

    Use with `torch.nn.attention.flex_attention.create_block_mask(mask_mod, B, None, L, L)`.
    """

    def mask_mod(b, h, q_idx, kv_idx):
        keep = persistent[b, kv_idx]
        same = (chunk_id[b, q_idx] == chunk_id[b, kv_idx]) & (chunk_id[b, kv_idx] >= 0)
        pad_self = (q_idx == kv_idx) & ~valid[b, q_idx]  # a padded row sees itself (no NaN)
        return ((kv_idx <= q_idx) & (keep | same) & valid[b, kv_idx]) | pad_self

    return mask_mod


def collate_layouts(
    layouts: Sequence[SequenceLayout],
    pad_id: int = 0,
    padding_side: str = "right",
    dense_mask: bool = True,
) -> dict[str, torch.Tensor]:
    """Pad layouts into a batch (right padding for training, left padding for generation).

    Returns input_ids, visual_mask, position_ids, labels, persistent, chunk_id, valid: (B, L);
    attention_mask: (B, 1, L, L) bool (the dense rule-2 mask with padded keys hidden; a padded
    query row sees itself, so no row is empty and softmax never makes NaN). With
    `dense_mask=False` it is left out (flex attention builds a BlockMask from the per-slot arrays).
    """
    if not layouts:
        raise ConfigError("cannot collate an empty batch")
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    length = max(len(lay) for lay in layouts)
    batch = len(layouts)

    def span(lay: SequenceLayout) -> slice:
        return slice(length - len(lay), length) if padding_side == "left" else slice(0, len(lay))

    def stack(name: str, fill) -> torch.Tensor:
        out = torch.full((batch, length), fill, dtype=getattr(layouts[0], name).dtype)
        for i, lay in enumerate(layouts):
            out[i, span(lay)] = getattr(lay, name)
        return out

    valid = torch.zeros(batch, length, dtype=torch.bool)
    for i, lay in enumerate(layouts):
        valid[i, span(lay)] = True
    persistent = stack("persistent", True)  # padded slots: persistent, but hidden by `valid`
    chunk_id = stack("chunk_id", -1)
    out = {
        "input_ids": stack("input_ids", pad_id),
        "visual_mask": stack("visual", False),
        "position_ids": stack("position_ids", 0),
        "labels": stack("labels", IGNORE_INDEX),
        "persistent": persistent,
        "chunk_id": chunk_id,
        "valid": valid,
    }
    if not dense_mask:
        return out
    mask = visibility(persistent, chunk_id, valid)  # [B, L, L]
    mask |= torch.diag_embed(~valid)  # padded rows see themselves only
    out["attention_mask"] = mask[:, None]  # [B, 1, L, L]
    return out


# ---- the four stage layouts (DESIGN.md, "Stage layouts") -------------------------------------


def caption_layout(caption_ids: Sequence[int]) -> list[Segment]:
    """Stage 1: [visual(image), caption], loss on the caption."""
    return [PageSegment(), TextSegment(tuple(caption_ids), train=True)]


def ocr_layout(page_token_ids: Sequence[Sequence[int]]) -> list[Segment]:
    """Stage 2: [v1, c1, v2, c2, ...], loss on every c_i (page i shows text c_i)."""
    segments: list[Segment] = []
    for ids in page_token_ids:
        segments += [PageSegment(), TextSegment(tuple(ids), train=True)]
    return segments


def olm_layout(chunks: Sequence[Chunk]) -> list[Segment]:
    """Stage 3: [c1, v1, c2, v2, ..., cn], loss on every c_i.

    Every chunk but the last is compressed; the last one has nothing after it to serve, so its
    text stays (its visual tokens would carry no loss).
    """
    segments: list[Segment] = [ChunkSegment(c.token_ids, train=True) for c in chunks[:-1]]
    if chunks:
        segments.append(TextSegment(chunks[-1].token_ids, train=True))
    return segments


def query_segments(chunks: Sequence[Chunk]) -> list[Segment]:
    """A query as context: compressed chunks become pages, a short raw tail stays text."""
    return [PageSegment() if c.compressed else TextSegment(c.token_ids) for c in chunks]


def response_segments(chunks: Sequence[Chunk], train: bool = True) -> list[Segment]:
    """A response as written: every chunk but the last is compressed after it is written."""
    segments: list[Segment] = [ChunkSegment(c.token_ids, train=train) for c in chunks[:-1]]
    if chunks:
        segments.append(TextSegment(chunks[-1].token_ids, train=train))
    return segments


def sft_layout(
    prefix_ids: Sequence[int],
    query_chunks: Sequence[Chunk],
    middle_ids: Sequence[int],
    response_chunks: Sequence[Chunk],
) -> list[Segment]:
    """Stage 4: [template, query pages (+ raw tail), template, c1, v1, ..., EOS], loss on the response.

    `prefix_ids`/`middle_ids` are the chat-template tokens around the query; the response chunks
    should end with the end-of-turn token.
    """
    return (
        [TextSegment(tuple(prefix_ids))]
        + query_segments(query_chunks)
        + [TextSegment(tuple(middle_ids))]
        + response_segments(response_chunks)
    )
