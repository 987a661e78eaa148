"""Generation engine: one decode loop, three context policies.

- `global` (GCC, the method): the query enters as pages; while the model writes, every K generated
  tokens are rendered, encoded and run through the LLM as β visual tokens (which attend to the
  chunk's text), then the chunk's text entries are evicted from every layer's cache. The cache of a
  sequence never holds more than its persistent entries + K + β.
- `prompt` (PCC, Glyph-style baseline): the query enters as pages, the response stays text.
- `none`: the plain LLM on raw text.

Notable:
- All rows of a batch are left-padded to one cache length, so they reach chunk boundaries at the
  same step and one eviction serves the whole batch. Padding is hidden by the attention mask.
- Position ids follow DESIGN.md rule 1, so the engine reproduces the training layout exactly: the
  exactness tests compare its per-step logits with one masked forward over the same tokens.
- The last text token of a chunk and the chunk's β visual tokens go through the LLM in one
  forward; the logits of the last visual token pick the first token of the next chunk (rule 3).
- Page text comes from a streaming decode (`StreamingDecoder`), the same causal rule as the
  chunker: a character split across chunks is drawn on the page of its last byte.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields

import torch

from vist2.cache import cache_bytes_per_entry, evict_range, make_cache
from vist2.chat import chat_parts
from vist2.chunker import StreamingDecoder, split_into_chunks
from vist2.errors import ConfigError, Vist2Error
from vist2.layout import Segment, TextSegment, build_layout, collate_layouts, query_segments
from vist2.render import PageOverflowError, PageRenderer, pages_to_tensor

POLICIES = ("global", "prompt", "none")


@dataclass
class GenerationConfig:
    """How to generate. Every field is checked on creation; errors name the field."""

    policy: str = "global"
    """global (pages for prompt and output), prompt (pages for the prompt only) or none (plain text)."""
    max_new_tokens: int = 256
    """Stop after this many generated tokens."""
    temperature: float = 0.0
    """0 = greedy; > 0 samples from softmax(logits / temperature)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    top_k: int = 0
    """Keep the k most likely tokens before sampling (0 = all)."""
    seed: int | None = None
    """Seed of the sampler's generator (None = nondeterministic)."""
    stop_strings: tuple[str, ...] = ()
    """Stop a sequence when its text contains one of these; the text is cut before it."""
    stop_on_eos: bool = True
    """Stop a sequence at the tokenizer's end-of-turn / end-of-text tokens."""
    chat: bool = False
    """Wrap the prompt in the tokenizer's chat template (the template tokens stay raw text)."""
    cache: str = "static"
    """static (preallocated, in-place eviction) or dynamic (Hugging Face DynamicCache)."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(
                f"GenerationConfig.policy must be one of {POLICIES}, got {self.policy!r}"
            )
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(
                f"GenerationConfig.max_new_tokens must be >= 1, got {self.max_new_tokens!r}"
            )
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ConfigError(
                f"GenerationConfig.temperature must be a finite number >= 0, got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:  # (NaN fails this too)
            raise ConfigError(f"GenerationConfig.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"GenerationConfig.top_k must be >= 0, got {self.top_k}")
        self.stop_strings = tuple(self.stop_strings)
        if any(not s for s in self.stop_strings):
            raise ConfigError("GenerationConfig.stop_strings must not contain an empty string")
        if self.cache not in ("static", "dynamic"):
            raise ConfigError(
                f"GenerationConfig.cache must be 'static' or 'dynamic', got {self.cache!r}"
            )


@dataclass
class GenerationStats:
    """What one request cost. Cache figures count this sequence's live entries (no padding)."""

    prompt_tokens: int = 0  # tokens of the prompt text (before compression), template included
    visual_tokens: int = 0  # visual tokens fed to the LLM (prompt pages + output pages)
    generated_tokens: int = 0
    pages: int = 0  # pages rendered (prompt + output)
    peak_cache_entries: int = 0
    peak_cache_bytes: int = 0
    ttft_s: float = 0.0  # time to first token, rendering and encoding of the prompt included
    decode_tokens_per_s: float = 0.0  # generated tokens after the first / time after the first
    render_s: float = 0.0
    vision_s: float = 0.0
    llm_s: float = 0.0
    total_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "eos", "stop" (a stop string), "length" or "overflow" (a page overflowed)
    stats: GenerationStats
    logits: torch.Tensor | None = None  # (generated, V) float32, with return_logits=True
    token_times: list[float] = field(
        default_factory=list
    )  # perf_counter() when each token was picked
    cache_entries: list[int] = field(
        default_factory=list
    )  # live cache entries when each token was picked


@dataclass
class _Row:
    """Book-keeping of one sequence while it is generated."""

    decoder: StreamingDecoder
    stats: GenerationStats
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    chunk_text: str = ""  # characters completed by the tokens of the current (open) chunk
    finish_reason: str | None = None
    logits: list[torch.Tensor] = field(default_factory=list)
    token_times: list[float] = field(default_factory=list)
    cache_entries: list[int] = field(default_factory=list)


class _BatchKV:
    """The KV cache of a left-padded batch plus which of its entries each row may see.

    `valid` (B, S) marks live, non-padding entries; every row shares one cache length S, so one
    eviction serves the whole batch.
    """

    def __init__(self, model, cache, valid: torch.Tensor) -> None:
        self.model, self.cache, self.valid = model, cache, valid  # valid: [B, S]
        self.padded = not bool(valid.all())  # left padding stays for the whole run

    def __len__(self) -> int:
        return self.valid.shape[1]

    def live(self) -> list[int]:
        """Entries each row attends over."""
        return self.valid.sum(dim=1).tolist()

    def feed(self, ids, positions, visual_mask=None, visual_tokens=None) -> torch.Tensor:
        """Run n new slots per row (ids/positions (B, n)) through the LLM; they see every live
        entry and the new slots before them. Returns the logits of the last slot, (B, V)."""
        b, n = ids.shape
        new = torch.ones(b, n, dtype=torch.bool, device=ids.device)
        self.valid = torch.cat([self.valid, new], 1)  # [B, S+n]
        if n == 1 and not self.padded:
            mask = None  # one new slot that sees every entry: the backend needs no mask
        else:
            s = self.valid.shape[1]
            causal = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()  # [n, n]
            mask = self.valid[:, None, None, :].expand(b, 1, n, s).clone()  # [B, 1, n, S+n]
            mask[..., s - n :] &= causal
        out = self.model(
            input_ids=ids,
            visual_mask=visual_mask,
            visual_tokens=visual_tokens,
            position_ids=positions,
            attention_mask=mask,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].float()

    def evict(self, start: int, stop: int) -> None:
        """Forget entries [start, stop) of every row and layer."""
        evict_range(self.cache, start, stop)
        self.valid = torch.cat([self.valid[:, :start], self.valid[:, stop:]], 1)


class Engine:
    """Generate with a `VIST2Model` under a context policy.

    >>> engine = Engine.from_pretrained("runs/tiny")
    >>> engine.generate("Call me Ishmael.", max_new_tokens=64).text
    """

    def __init__(self, model, tokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.renderer = PageRenderer(model.config.render_config)
        self.chunk_tokens = model.config.chunk_tokens
        self.beta = model.config.visual_tokens_per_page
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # end of turn (the tokenizer's eos) and end of text, where the vocabulary has it
        end_of_text = tokenizer.get_vocab().get("<|endoftext|>")
        self.stop_ids = {t for t in (tokenizer.eos_token_id, end_of_text) if t is not None}

    @classmethod
    def from_pretrained(cls, path, dtype: torch.dtype | None = None, device: str = "cpu") -> Engine:
        from vist2.loading import load_model

        model, tokenizer = load_model(path, dtype=dtype, device=device)
        return cls(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- the public verbs ------------------------------------------------------------------------

    def generate(
        self,
        prompts: str | list[str],
        config: GenerationConfig | None = None,
        on_text: Callable[[int, str], None] | None = None,
        return_logits: bool = False,
        **overrides,
    ) -> GenerationResult | list[GenerationResult]:
        """Generate for one prompt (returns one result) or a batch (returns a list).

        `overrides` are `GenerationConfig` fields; `on_text(row, text)` receives text as it is made.
        """
        single = isinstance(prompts, str)
        batch = [prompts] if single else list(prompts)
        config = self._config(config, overrides)
        results = None
        for event in self._run(batch, config, return_logits):
            if isinstance(event, list):
                results = event
            elif on_text is not None:
                on_text(*event)
        return results[0] if single else results

    def stream(
        self, prompt: str, config: GenerationConfig | None = None, **overrides
    ) -> Iterator[str]:
        """Yield the text of one prompt's answer piece by piece as it is generated."""
        config = self._config(config, overrides)
        for event in self._run([prompt], config, False):
            if not isinstance(event, list):
                yield event[1]

    @staticmethod
    def _config(config: GenerationConfig | None, overrides: dict) -> GenerationConfig:
        known = {f.name for f in fields(GenerationConfig)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        base = asdict(config) if config is not None else {}
        return GenerationConfig(**{**base, **overrides})

    # -- prompt preparation ----------------------------------------------------------------------

    def prompt_segments(
        self, prompt: str, config: GenerationConfig
    ) -> tuple[list[Segment], list[str], int]:
        """(segments, page texts, prompt text tokens) of one prompt under `config.policy`."""
        if not prompt or not prompt.strip():
            raise Vist2Error("the prompt is empty; give some text to continue or answer")
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        prefix, middle = chat_parts(self.tokenizer) if config.chat else ([], [])
        n_tokens = len(prefix) + len(ids) + len(middle)
        if config.policy == "none":
            return [TextSegment(tuple(prefix + ids + middle))], [], n_tokens
        chunks = split_into_chunks(ids, self.tokenizer, self.chunk_tokens, self.beta)
        segments = [TextSegment(tuple(prefix))] if prefix else []
        segments += query_segments(chunks)
        if middle:
            segments.append(TextSegment(tuple(middle)))
        return segments, [c.text for c in chunks if c.compressed], n_tokens

    def encode_texts(self, texts: list[str]) -> tuple[torch.Tensor | None, float, float]:
        """Render and encode pages: (visual tokens (N, β, D) or None, render seconds, vision seconds)."""
        if not texts:
            return None, 0.0, 0.0
        t0 = time.perf_counter()
        pages = self.renderer.render_batch(texts)
        t1 = time.perf_counter()
        pixels = pages_to_tensor(pages).to(self.device)  # [N, H, W]
        visual = self.model.encode_pages(pixels)  # [N, β, D]
        _sync(self.device)
        return visual, t1 - t0, time.perf_counter() - t1

    # -- the decode loop -------------------------------------------------------------------------

    @torch.inference_mode()
    def _run(
        self,
        prompts: list[str],
        config: GenerationConfig,
        return_logits: bool,
        every_token: bool = False,
    ):
        """Yields (row, text) as text is produced (with `every_token`, once per token, text
        possibly ""), then the list of results."""
        if not prompts:
            raise Vist2Error("no prompts given")
        start = time.perf_counter()
        k, beta = self.chunk_tokens, self.beta
        compress_output = config.policy == "global"
        generator = None
        if config.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(config.seed)

        rows: list[_Row] = []
        layouts, page_texts = [], []
        for prompt in prompts:
            segments, texts, n_tokens = self.prompt_segments(prompt, config)
            layout = build_layout(segments, beta)
            layouts.append(layout)
            page_texts += texts
            stats = GenerationStats(
                prompt_tokens=n_tokens, pages=len(texts), visual_tokens=len(texts) * beta
            )
            rows.append(_Row(StreamingDecoder(self.tokenizer), stats))
        self._check_position_budget(layouts, config)

        # ---- prefill: prompt pages + raw text, left-padded to one length
        visual, render_s, vision_s = self.encode_texts(page_texts)
        batch = collate_layouts(layouts, pad_id=self.pad_id, padding_side="left")
        device = self.device
        next_pos = torch.tensor(
            [int(lay.position_ids[-1]) + 1 for lay in layouts], device=device
        )  # [B]
        length = batch["valid"].shape[1]
        max_chunks = config.max_new_tokens // k + 1 if compress_output else 0
        capacity = length + (
            k + beta * (max_chunks + 1) if compress_output else config.max_new_tokens + 1
        )
        cache = make_cache(config.cache, self.config.text_config.num_hidden_layers, capacity)
        kv = _BatchKV(self.model, cache, batch["valid"].to(device))
        # A prompt holds persistent slots only, so rule 2 is plain causal attention over the valid
        # slots: a (B, L) padding mask lets the backend use its causal kernel instead of an
        # (L x L) mask (1 GB at 32k slots).
        prefill_mask = (
            batch["valid"] if bool(batch["persistent"].all()) else batch["attention_mask"]
        )
        t_llm = time.perf_counter()
        out = self.model(
            input_ids=batch["input_ids"].to(device),
            visual_mask=batch["visual_mask"].to(device),
            visual_tokens=visual,
            position_ids=batch["position_ids"].to(device),
            attention_mask=prefill_mask.to(device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1].float()  # [B, V]
        _sync(device)
        llm_s = time.perf_counter() - t_llm
        per_entry = cache_bytes_per_entry(self.config.text_config, self.model.dtype)
        live = self._track_cache(rows, kv.live(), per_entry)

        chunk_start = length  # cache index where the open chunk's text begins
        chunk_pos = next_pos.clone()  # position of the open chunk's first text token, per row
        n_in_chunk = 0
        first_token_at = None
        for step in range(config.max_new_tokens):
            token = sample_tokens(logits, config, generator)  # [B]
            now = time.perf_counter()
            if first_token_at is None:
                first_token_at = now
            for i, row in enumerate(rows):
                if row.finish_reason is not None:
                    continue
                row.token_times.append(now)
                row.cache_entries.append(int(live[i]))
                if return_logits:
                    row.logits.append(logits[i].cpu())
                delta = self._append(row, int(token[i]), config)
                if delta or every_token:
                    yield i, delta
            n_in_chunk += 1
            if all(r.finish_reason is not None for r in rows) or step == config.max_new_tokens - 1:
                break

            t_llm = time.perf_counter()
            if compress_output and n_in_chunk == k:
                # ---- chunk boundary: last text token + the chunk's β visual tokens, then evict
                try:
                    visual, r_s, v_s = self.encode_texts([r.chunk_text for r in rows])
                except PageOverflowError:
                    # The text just written does not fit a page even reflowed (e.g. one long
                    # token repeated): stop here and keep what was written.
                    for r in rows:
                        r.finish_reason = r.finish_reason or "overflow"
                    break
                render_s, vision_s = render_s + r_s, vision_s + v_s
                t_llm = time.perf_counter()
                for r in rows:
                    r.chunk_text = ""
                    if r.finish_reason is None:
                        r.stats.pages += 1
                        r.stats.visual_tokens += beta
                ids = torch.cat(
                    [token[:, None], torch.full((len(rows), beta), self.pad_id, device=device)], 1
                )
                vis_mask = torch.zeros_like(ids, dtype=torch.bool)
                vis_mask[:, 1:] = True
                pos = torch.cat(
                    [next_pos[:, None], chunk_pos[:, None] + torch.arange(beta, device=device)], 1
                )
                logits = kv.feed(ids, pos, vis_mask, visual)
                self._track_cache(rows, kv.live(), per_entry)  # the peak: chunk text + its page
                kv.evict(chunk_start, chunk_start + k)
                live = kv.live()
                chunk_pos = chunk_pos + beta
                next_pos = chunk_pos.clone()
                chunk_start += beta
                n_in_chunk = 0
            else:
                logits = kv.feed(token[:, None], next_pos[:, None])
                live = self._track_cache(rows, kv.live(), per_entry)
                next_pos = next_pos + 1
            _sync(device)
            llm_s += time.perf_counter() - t_llm

        end = time.perf_counter()
        results = []
        for row in rows:
            row.finish_reason = row.finish_reason or "length"
            s = row.stats
            s.generated_tokens = len(row.tokens)
            s.ttft_s = (first_token_at or end) - start
            s.decode_tokens_per_s = (
                (len(row.tokens) - 1) / max(end - first_token_at, 1e-9)
                if len(row.tokens) > 1
                else 0.0
            )
            s.render_s, s.vision_s, s.llm_s, s.total_s = render_s, vision_s, llm_s, end - start
            logits_out = torch.stack(row.logits) if return_logits and row.logits else None
            results.append(
                GenerationResult(
                    row.text,
                    row.tokens,
                    row.finish_reason,
                    s,
                    logits_out,
                    row.token_times,
                    row.cache_entries,
                )
            )
        yield results

    def _append(self, row: _Row, token: int, config: GenerationConfig) -> str:
        """Record a sampled token; return the text it completes (cut at a stop string)."""
        row.tokens.append(token)
        if config.stop_on_eos and token in self.stop_ids:
            row.finish_reason = "eos"
            row.chunk_text += row.decoder.step(token)
            return ""
        delta = row.decoder.step(token)
        row.chunk_text += delta
        if config.stop_strings and delta:
            # search only where a stop string could newly end: the tail of the old text + delta
            full = row.text + delta
            since = max(0, len(row.text) - max(len(s) for s in config.stop_strings) + 1)
            hits = [i for i in (full.find(s, since) for s in config.stop_strings) if i >= 0]
            if hits:
                cut = min(hits)
                delta = full[len(row.text) : cut] if cut > len(row.text) else ""
                row.text = full[:cut]
                row.finish_reason = "stop"
                return delta
        row.text += delta
        if len(row.tokens) >= config.max_new_tokens:
            row.finish_reason = "length"
        return delta

    @staticmethod
    def _track_cache(rows: list[_Row], live: list[int], per_entry: int) -> list[int]:
        """Update each row's peak cache figures from its live entries; return `live`."""
        for row, n in zip(rows, live, strict=True):
            if row.finish_reason is None or row.stats.peak_cache_entries == 0:
                row.stats.peak_cache_entries = max(row.stats.peak_cache_entries, int(n))
                row.stats.peak_cache_bytes = row.stats.peak_cache_entries * per_entry
        return live

    def _check_position_budget(self, layouts, config: GenerationConfig) -> None:
        budget = getattr(self.config.text_config, "max_position_embeddings", None)
        if budget is None:
            return
        k, beta = self.chunk_tokens, self.beta
        for i, lay in enumerate(layouts):
            start = int(lay.position_ids[-1]) + 1  # position of the first generated token
            last = start + last_position_offset(config.max_new_tokens, config.policy, k, beta)
            if last >= budget:
                raise Vist2Error(
                    f"prompt {i} takes positions 0-{start - 1} and generating "
                    f"{config.max_new_tokens} tokens under policy {config.policy!r} reaches "
                    f"position {last}, past the model's max_position_embeddings ({budget}); "
                    "shorten the prompt or --max-new-tokens"
                )


def last_position_offset(new_tokens: int, policy: str, chunk_tokens: int, beta: int) -> int:
    """Highest position a generation of `new_tokens` reaches, counted from its first token.

    Under `global`, token j (0-based) of the output sits in chunk q = j // K at offset m = j % K,
    position q·β + m: a chunk's text runs K - β positions past the pages that replace it.
    """
    if policy != "global":
        return new_tokens - 1
    q, m = divmod(new_tokens - 1, chunk_tokens)
    if q == 0:
        return m
    return max((q - 1) * beta + chunk_tokens - 1, q * beta + m)


def sample_tokens(
    logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """logits (B, V) float32 -> next token ids (B,)."""
    if config.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / config.temperature
    if config.top_k:
        kth = logits.topk(min(config.top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # [B, V]
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > config.top_p  # tokens past the nucleus
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


__all__ = [
    "POLICIES",
    "Engine",
    "GenerationConfig",
    "GenerationResult",
    "GenerationStats",
    "sample_tokens",
]
