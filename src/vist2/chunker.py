"""Chunker: token ids -> chunks of K tokens, each with the text its page shows.

Notable:
- The tail rule (DESIGN.md): a last chunk of m < K tokens is rendered only if m > β; otherwise it
  stays raw text, because a page of β visual tokens would cost more than the m tokens it replaces.
- A chunk's page text is the decode of its own tokens, made causal and lossless for byte-level BPE:
  a UTF-8 character whose bytes straddle a chunk boundary is drawn on the page of the chunk that
  holds its *last* byte. That is the only choice that works at inference, where the rest of the
  character has not been generated yet when a chunk is closed. `tokenizers.decoders.DecodeStream`
  does exactly this bookkeeping, so we use it rather than decoding bytes by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from vist2.errors import ConfigError


@dataclass(frozen=True)
class Chunk:
    """K (or fewer, for a tail) consecutive tokens of one stream."""

    token_ids: tuple[int, ...]
    text: str  # what the page shows: the causal decode of `token_ids`
    compressed: bool  # True: rendered to a page; False: a short tail kept as raw text


def backend_tokenizer(tokenizer) -> Tokenizer:
    """The Rust `tokenizers.Tokenizer` behind a Hugging Face tokenizer (or the object itself)."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(
        tokenizer, "_tokenizer", None
    )
    if not isinstance(backend, Tokenizer):
        raise ConfigError(
            f"tokenizer of type {type(tokenizer).__name__} has no fast (Rust) backend; "
            "vist2 needs a `tokenizers`-based tokenizer (tokenizer.json)"
        )
    return backend


class StreamingDecoder:
    """Incremental decode that only ever emits whole characters (wraps `DecodeStream`)."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = backend_tokenizer(tokenizer)
        self._stream = DecodeStream(skip_special_tokens=False)

    def step(self, token_id: int) -> str:
        """Text completed by `token_id` ("" while a character is still incomplete)."""
        return self._stream.step(self._tokenizer, int(token_id)) or ""


def decode_pieces(tokenizer, groups: Sequence[Sequence[int]]) -> list[str]:
    """Causal decode of consecutive token groups: piece i holds the characters completed in group i.

    `"".join(decode_pieces(tok, groups))` equals the decode of all tokens (bytes of an incomplete
    character at the very end, which no text can show, are the only thing not emitted).
    """
    decoder = StreamingDecoder(tokenizer)
    return ["".join(decoder.step(t) for t in group) for group in groups]


def split_into_chunks(
    token_ids: Sequence[int],
    tokenizer,
    chunk_tokens: int,
    visual_tokens_per_page: int,
    compress_tail: bool = True,
) -> list[Chunk]:
    """Cut `token_ids` into chunks of `chunk_tokens` (K) and apply the tail rule.

    Full chunks are always compressed. The tail (m < K tokens) is compressed only if
    `compress_tail` and m > `visual_tokens_per_page` (β).
    """
    if chunk_tokens < 1:
        raise ConfigError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    ids = [int(t) for t in token_ids]
    groups = [ids[i : i + chunk_tokens] for i in range(0, len(ids), chunk_tokens)]
    texts = decode_pieces(tokenizer, groups)
    chunks = []
    for group, text in zip(groups, texts, strict=True):
        full = len(group) == chunk_tokens
        compressed = full or (compress_tail and len(group) > visual_tokens_per_page)
        chunks.append(Chunk(tuple(group), text, compressed))
    return chunks
