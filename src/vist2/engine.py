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
- The loop is a few verbs on one `Generation` (prefill, decode step, compress chunk, finish);
  iterating it yields one event type, `TokenEvent`. `generate`, `stream` and the benchmarks all
  read the same iterator (`Engine.steps`).
- Compiled decode (`compile=True`, the default on CUDA): after the prefill the cache switches to
  fixed shapes, and the decode step and the chunk-boundary step run as `torch.compile`d graphs
  (CUDA graphs on GPU) attending over the whole preallocated buffer with a validity mask;
  eviction moves at most β entries in place. Same logits as eager (the exactness tests run both).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields

import torch

from vist2.cache import cache_bytes_per_entry, evict_range, make_cache
from vist2.chat import chat_parts
from vist2.chunker import StreamingDecoder, split_into_chunks
from vist2.errors import ConfigError, Vist2Error
from vist2.layout import Segment, TextSegment, build_layout, collate_layouts, query_segments
from vist2.render import PageOverflowError, PageRenderer, pages_to_tensor

POLICIES = ("global", "prompt", "none")


def stop_string_cut(text: str, delta: str, stop_strings: Sequence[str]) -> int | None:
    """Where in `text + delta` the first stop string begins, when `delta` completes one (None
    otherwise). Only the tail where a stop string could newly end is searched."""
    if not stop_strings or not delta:
        return None
    full = text + delta
    since = max(0, len(text) - max(len(s) for s in stop_strings) + 1)
    hits = [i for i in (full.find(s, since) for s in stop_strings) if i >= 0]
    return min(hits) if hits else None


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
    compile: bool | None = None
    """Compiled fixed-shape decode steps (torch.compile; CUDA graphs on GPU). None = on for CUDA,
    off elsewhere. Needs cache="static"."""

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
        if self.compile and self.cache != "static":
            raise ConfigError(
                "GenerationConfig.compile needs cache='static' (compiled steps write in place)"
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


@dataclass(frozen=True)
class TokenEvent:
    """One token picked for one row of a batch: what iterating a `Generation` yields."""

    row: int
    token: int
    text: str  # the text this token completes, cut at a stop string ("" mid-character)
    cache_entries: int  # live cache entries of this row when the token was picked


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


def prefill_forward(model, batch: dict[str, torch.Tensor], visual: torch.Tensor | None, cache):
    """Run laid-out prompts (a `collate_layouts` batch) through the model into `cache`; returns
    the model output with the last slot's logits only (B, 1, V). A prompt holds persistent slots
    only, so rule 2 is plain causal attention over the valid slots: a (B, L) padding mask lets the
    backend use its causal kernel instead of an (L x L) mask (1 GB at 32k slots)."""
    device = next(model.parameters()).device
    mask = batch["valid"] if bool(batch["persistent"].all()) else batch["attention_mask"]
    return model(
        input_ids=batch["input_ids"].to(device),
        visual_mask=batch["visual_mask"].to(device),
        visual_tokens=visual,
        position_ids=batch["position_ids"].to(device),
        attention_mask=mask.to(device),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )


def _lm_step(model, ids, positions, mask, cache, visual=None) -> torch.Tensor:
    """The LLM on the new slots of every row: a token (ids (B, 1)), then optionally its chunk's
    visual tokens (B, β, D); positions (B, n); mask (B, 1, n, S) bool or None (see everything).
    Returns the logits of the last slot, (B, V) float32."""
    embeds = model.get_input_embeddings()(ids)  # [B, 1, D]
    if visual is not None:
        embeds = torch.cat([embeds, visual.to(embeds.dtype)], dim=1)  # [B, 1+β, D]
    out = model.language_model.get_decoder()(
        inputs_embeds=embeds,
        position_ids=positions,
        attention_mask=model._attention_mask_for_backend(mask, embeds.dtype),
        use_cache=True,
        **{model.cache_argument: cache},
    )
    hidden = out.last_hidden_state[:, -1]  # [B, D]
    return model.language_model.get_output_embeddings()(hidden).float()  # [B, V]


def _fixed_step(model, cache, valid, ids, positions, visual=None) -> torch.Tensor:
    """`_lm_step` over the fixed-shape cache: the new slots are written at `cache.write_at` and
    attend over the cache's window W (its first W entries), masked by `valid` (B, C) and causally
    among themselves. Shapes repeat from step to step (one graph per window size), so this is what
    gets compiled (a CUDA graph on GPU). `valid` and the counter are updated in place."""
    n = ids.shape[1] + (0 if visual is None else visual.shape[1])
    window = valid[:, : cache.layers[0].window]  # [B, W], a view: updated in place below
    new = torch.arange(n, device=valid.device)  # [n]
    offset = torch.arange(window.shape[1], device=valid.device) - cache.write_at  # [W]
    sees_new = (offset >= 0) & (offset[None, :] <= new[:, None])  # [n, W]
    mask = window[:, None, None, :] | sees_new[None, None]  # [B, 1, n, W]
    logits = _lm_step(model, ids, positions, mask, cache, visual)
    window.logical_or_(((offset >= 0) & (offset < n))[None, :])  # the new slots are live now
    cache.write_at.add_(n)
    return logits


def _window(entries: int, capacity: int) -> int:
    """Window a fixed-shape step attends over: `entries` rounded up to a power of two (at least
    `_MIN_WINDOW`), at most the capacity. Attention costs what the live cache costs, within 2×,
    for a handful of graphs (log2(capacity / _MIN_WINDOW) + 1 per step kind)."""
    return min(capacity, max(_MIN_WINDOW, 1 << (entries - 1).bit_length()))


class _BatchKV:
    """The KV cache of a left-padded batch plus which of its entries each row may see.

    Eager mode: the cache returns only its live entries, so shapes grow by a step's slots. After
    `fix`, the cache keeps fixed shapes (`EvictingCache.fix`) and `step` (`_fixed_step`, compiled
    or not) attends over a power-of-two window of the capacity. `valid` (B, S) marks live,
    non-padding entries; every row shares one cache length S, so one eviction serves the whole
    batch.
    """

    def __init__(self, model, cache, valid: torch.Tensor, step=None) -> None:
        self.model, self.cache, self.step = model, cache, step
        self.valid = valid  # [B, S]: eager, S = live length; fixed, S = capacity
        self.padded = not bool(valid.all())  # left padding stays for the whole run
        self.length = valid.shape[1]  # entries written (padding included)
        self.live = valid.sum(dim=1).tolist()  # entries each row attends over, on the host

    def fix(self, step) -> None:
        """Switch to fixed shapes after the prefill (compiled decode)."""
        self.cache.fix()
        valid = self.valid.new_zeros(len(self.live), self.cache.capacity)  # [B, C]
        valid[:, : self.length] = self.valid
        self.valid = valid
        torch._dynamo.mark_static_address(self.valid)
        self.step = step

    def feed(self, ids, positions, visual=None) -> torch.Tensor:
        """Run new slots per row (a token, then optionally its chunk's visual tokens) through the
        LLM; they see every live entry and the new slots before them. Returns (B, V) logits."""
        n = ids.shape[1] + (0 if visual is None else visual.shape[1])
        self.live = [x + n for x in self.live]
        self.length += n
        if self.step is not None:  # fixed shapes
            if self.length > self.cache.capacity:
                raise RuntimeError(f"cache capacity {self.cache.capacity} < {self.length} entries")
            self.cache.set_window(_window(self.length, self.cache.capacity))
            if ids.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are read
            logits = self.step(self.model, self.cache, self.valid, ids, positions, visual)
            self.cache.advance(n)
            return logits
        b = ids.shape[0]
        self.valid = torch.cat([self.valid, self.valid.new_ones(b, n)], 1)  # [B, S+n]
        mask = None  # one new slot that sees every entry: the backend needs no mask
        if n > 1 or self.padded:
            s = self.valid.shape[1]
            causal = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()  # [n, n]
            mask = self.valid[:, None, None, :].expand(b, 1, n, s).clone()  # [B, 1, n, S+n]
            mask[..., s - n :] &= causal
        return _lm_step(self.model, ids, positions, mask, self.cache, visual)

    def evict(self, start: int, stop: int) -> None:
        """Forget entries [start, stop) of every row and layer (in place on a static cache)."""
        evict_range(self.cache, start, stop)
        self.live = [x - (stop - start) for x in self.live]  # chunk text: no padding there
        if self.step is None:
            self.valid = torch.cat([self.valid[:, :start], self.valid[:, stop:]], 1)
        else:
            tail = self.length - stop
            self.valid[:, start : start + tail] = self.valid[:, stop : self.length].clone()
            self.valid[:, start + tail :] = False
        self.length -= stop - start


class Generation:
    """One batch in flight: its state between steps and the verbs that advance it.

    Iterate it for `TokenEvent`s (one per live row per step; the first `next()` runs the prefill);
    once the iteration ends, `results` holds one `GenerationResult` per prompt. The verbs:
    `prefill` (prompt pages + raw text), `decode_step` (one token per row), `compress_chunk` (a
    chunk's last token + its page, then its text leaves the cache) and `finish`.
    """

    def __init__(self, engine: Engine, prompts: list[str], config: GenerationConfig,
                 return_logits: bool = False) -> None:  # fmt: skip
        if not prompts:
            raise Vist2Error("no prompts given")
        self.engine, self.config, self.return_logits = engine, config, return_logits
        self.start = time.perf_counter()
        self.k, self.beta = engine.chunk_tokens, engine.beta
        self.compress_output = config.policy == "global"
        device = engine.device
        auto = device.type == "cuda" and config.cache == "static"
        self.compiled = config.compile if config.compile is not None else auto
        self.generator = None
        if config.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.rows: list[_Row] = []
        self.layouts, self.page_texts = [], []
        for prompt in prompts:
            segments, texts, n_tokens = engine.prompt_segments(prompt, config)
            self.layouts.append(build_layout(segments, self.beta))
            self.page_texts += texts
            stats = GenerationStats(
                prompt_tokens=n_tokens, pages=len(texts), visual_tokens=len(texts) * self.beta
            )
            self.rows.append(_Row(StreamingDecoder(engine.tokenizer), stats))
        engine._check_position_budget(self.layouts, config)
        self.per_entry = cache_bytes_per_entry(engine.config.text_config, engine.model.dtype)
        self.render_s = self.vision_s = self.llm_s = 0.0
        self.first_token_at: float | None = None
        self.n_in_chunk = 0  # tokens of the open chunk fed so far
        self.results: list[GenerationResult] | None = None

    # -- the verbs --------------------------------------------------------------------------------

    def prefill(self) -> torch.Tensor:
        """Prompt pages + raw text, left-padded to one length, into a fresh cache. Returns the
        logits (B, V) that pick the first token."""
        engine, config, device = self.engine, self.config, self.engine.device
        visual, self.render_s, self.vision_s = engine.encode_texts(self.page_texts)
        batch = collate_layouts(self.layouts, pad_id=engine.pad_id, padding_side="left")
        last = [int(lay.position_ids[-1]) for lay in self.layouts]
        self.next_pos = torch.tensor(last, device=device) + 1  # [B] position of the next slot
        length = batch["valid"].shape[1]
        capacity = length + self._decode_entries()
        if self.compiled:  # one graph serves every request of a similar size
            capacity = -(-capacity // _CAPACITY_STEP) * _CAPACITY_STEP
        cache = make_cache(config.cache, engine.config.text_config.num_hidden_layers, capacity)
        self.kv = _BatchKV(engine.model, cache, batch["valid"].to(device))
        t_llm = time.perf_counter()
        out = prefill_forward(engine.model, batch, visual, cache)
        if self.compiled:
            self.kv.fix(engine._compiled_step())
        _sync(device)
        self.llm_s += time.perf_counter() - t_llm
        self.chunk_start = length  # cache index where the open chunk's text begins
        self.chunk_pos = self.next_pos.clone()  # position of the open chunk's first text token
        self._track_cache()
        return out.logits[:, -1].float()  # [B, V]

    def decode_step(self, token: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,); returns the logits (B, V) of the next."""
        t_llm = time.perf_counter()
        logits = self.kv.feed(token[:, None], self.next_pos[:, None])
        self.next_pos = self.next_pos + 1
        self.n_in_chunk += 1
        _sync(self.engine.device)
        self.llm_s += time.perf_counter() - t_llm
        self._track_cache()
        return logits

    def compress_chunk(self, token: torch.Tensor) -> torch.Tensor | None:
        """Chunk boundary: the chunk's last token (B,) and its page's β visual tokens go through
        the LLM in one forward, then the chunk's K text entries leave the cache. Returns the logits
        of the last visual token (B, V) (they pick the next chunk's first token, rule 3), or None
        when the text does not fit a page (the rows then stop with "overflow")."""
        rows, beta, device = self.rows, self.beta, self.engine.device
        try:
            visual, render_s, vision_s = self.engine.encode_texts([r.chunk_text for r in rows])
        except PageOverflowError:
            # The text just written does not fit a page even reflowed (e.g. one long token
            # repeated): stop here and keep what was written.
            for r in rows:
                r.finish_reason = r.finish_reason or "overflow"
            return None
        self.render_s, self.vision_s = self.render_s + render_s, self.vision_s + vision_s
        t_llm = time.perf_counter()
        for r in rows:
            r.chunk_text = ""
            if r.finish_reason is None:
                r.stats.pages += 1
                r.stats.visual_tokens += beta
        visual_pos = self.chunk_pos[:, None] + torch.arange(beta, device=device)  # [B, β]
        positions = torch.cat([self.next_pos[:, None], visual_pos], 1)  # [B, 1+β]
        logits = self.kv.feed(token[:, None], positions, visual)
        self._track_cache()  # the peak: chunk text + its page
        self.kv.evict(self.chunk_start, self.chunk_start + self.k)
        self.chunk_pos = self.chunk_pos + beta
        self.next_pos = self.chunk_pos.clone()
        self.chunk_start += beta
        self.n_in_chunk = 0
        _sync(device)
        self.llm_s += time.perf_counter() - t_llm
        return logits

    @torch.inference_mode()  # as the run itself: grad mode is part of a graph's guards
    def precompile(self) -> None:
        """Compile every graph this generation's decode can need (each window size; decode and
        chunk-boundary steps) now, so that compile time lands before a benchmark's clock starts.
        Runs the prefill and spends this generation: its cache is filled with throwaway steps."""
        if not self.compiled:
            return
        self.prefill()
        kv, beta = self.kv, self.beta
        written = kv.cache.write_at.clone()
        token = self.next_pos.new_zeros(len(self.rows), 1)  # [B, 1]
        window = _MIN_WINDOW // 2
        while window < kv.cache.capacity:
            window = min(2 * window, kv.cache.capacity)
            kv.cache.set_window(window)
            kv.step(kv.model, kv.cache, kv.valid, token, self.next_pos[:, None])
            kv.cache.write_at.copy_(written)
            if self.compress_output and kv.length + 1 + beta <= kv.cache.capacity:
                dim = self.engine.model.get_input_embeddings().embedding_dim
                visual = kv.valid.new_zeros(
                    len(self.rows), beta, dim, dtype=self.engine.model.dtype
                )
                positions = self.next_pos[:, None] + torch.arange(1 + beta, device=token.device)
                kv.step(kv.model, kv.cache, kv.valid, token, positions, visual)
                kv.cache.write_at.copy_(written)

    def finish(self) -> list[GenerationResult]:
        """The results, one per prompt, with their stats."""
        end = time.perf_counter()
        first = self.first_token_at or end
        results = []
        for row in self.rows:
            s = row.stats
            s.generated_tokens = len(row.tokens)
            s.ttft_s = first - self.start
            if len(row.tokens) > 1:
                s.decode_tokens_per_s = (len(row.tokens) - 1) / max(end - first, 1e-9)
            s.render_s, s.vision_s, s.llm_s = self.render_s, self.vision_s, self.llm_s
            s.total_s = end - self.start
            logits = torch.stack(row.logits) if self.return_logits and row.logits else None
            results.append(
                GenerationResult(row.text, row.tokens, row.finish_reason or "length", s, logits,
                                 row.token_times, row.cache_entries)
            )  # fmt: skip
        return results

    # -- the step iterator ------------------------------------------------------------------------

    @torch.inference_mode()
    def __iter__(self) -> Iterator[TokenEvent]:
        logits = self.prefill()
        for step in range(self.config.max_new_tokens):
            token = sample_tokens(logits, self.config, self.generator)  # [B]
            yield from self._record(token, logits)
            if all(r.finish_reason is not None for r in self.rows):
                break
            if step == self.config.max_new_tokens - 1:
                break
            if self.compress_output and self.n_in_chunk + 1 == self.k:
                logits = self.compress_chunk(token)
                if logits is None:
                    break
            else:
                logits = self.decode_step(token)
        self.results = self.finish()

    def _record(self, token: torch.Tensor, logits: torch.Tensor) -> Iterator[TokenEvent]:
        """Hand each live row its token: stop rules, text, per-token figures."""
        ids = token.tolist()  # the one host synchronisation a step needs (before the clock)
        now = time.perf_counter()
        self.first_token_at = self.first_token_at or now
        for i, row in enumerate(self.rows):
            if row.finish_reason is not None:
                continue
            live = int(self.kv.live[i])
            row.token_times.append(now)
            row.cache_entries.append(live)
            if self.return_logits:
                row.logits.append(logits[i].cpu())
            yield TokenEvent(i, ids[i], self.engine._append(row, ids[i], self.config), live)

    def _decode_entries(self) -> int:
        """Cache entries the decode adds at most, past the prompt (the capacity to reserve)."""
        if not self.compress_output:
            return self.config.max_new_tokens + 1
        max_chunks = self.config.max_new_tokens // self.k + 1
        return self.k + self.beta * (max_chunks + 1)

    def _track_cache(self) -> None:
        """Update each row's peak cache figures from its live entries."""
        for row, n in zip(self.rows, self.kv.live, strict=True):
            if row.finish_reason is None or row.stats.peak_cache_entries == 0:
                row.stats.peak_cache_entries = max(row.stats.peak_cache_entries, int(n))
                row.stats.peak_cache_bytes = row.stats.peak_cache_entries * self.per_entry


_CAPACITY_STEP = 256  # compiled decode: capacities rounded up to this, so graphs are reused
_MIN_WINDOW = 256  # compiled decode: the smallest attention window
_RECOMPILE_LIMIT = 64  # graphs per compiled function: window sizes x step kinds x capacities


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
        self._compiled = None  # the compiled decode step, made on first use

    @classmethod
    def from_pretrained(cls, path, dtype: torch.dtype | None = None, device: str = "cpu") -> Engine:
        from vist2.loading import load_model

        model, tokenizer = load_model(path, dtype=dtype, device=device)
        return cls(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- the public verbs ------------------------------------------------------------------------

    def steps(
        self,
        prompts: str | list[str],
        config: GenerationConfig | None = None,
        return_logits: bool = False,
        **overrides,
    ) -> Generation:
        """A generation to advance step by step: iterate it for `TokenEvent`s (one per live row
        per step), then read `.results`. `overrides` are `GenerationConfig` fields."""
        batch = [prompts] if isinstance(prompts, str) else list(prompts)
        return Generation(self, batch, self._config(config, overrides), return_logits)

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
        generation = self.steps(prompts, config, return_logits, **overrides)
        for event in generation:
            if on_text is not None and event.text:
                on_text(event.row, event.text)
        return generation.results[0] if isinstance(prompts, str) else generation.results

    def stream(
        self, prompt: str, config: GenerationConfig | None = None, **overrides
    ) -> Iterator[str]:
        """Yield the text of one prompt's answer piece by piece as it is generated."""
        for event in self.steps([prompt], config, **overrides):
            if event.text:
                yield event.text

    def _compiled_step(self):
        """`_fixed_step` compiled once per engine (CUDA graphs on GPU); each new shape (batch,
        capacity, decode vs chunk boundary) compiles once more."""
        if self._compiled is None:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            config = torch._dynamo.config  # the limit's name changed across torch versions
            for name in ("recompile_limit", "cache_size_limit"):
                if hasattr(config, name):
                    setattr(config, name, max(getattr(config, name), _RECOMPILE_LIMIT))
            self._compiled = torch.compile(_fixed_step, mode=mode, dynamic=False)
        return self._compiled

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

    def _append(self, row: _Row, token: int, config: GenerationConfig) -> str:
        """Record a sampled token; return the text it completes (cut at a stop string)."""
        row.tokens.append(token)
        if config.stop_on_eos and token in self.stop_ids:
            row.finish_reason = "eos"
            row.chunk_text += row.decoder.step(token)
            return ""
        delta = row.decoder.step(token)
        row.chunk_text += delta
        cut = stop_string_cut(row.text, delta, config.stop_strings)
        if cut is not None:
            full = row.text + delta
            delta = full[len(row.text) : cut] if cut > len(row.text) else ""
            row.text = full[:cut]
            row.finish_reason = "stop"
            return delta
        row.text += delta
        if len(row.tokens) >= config.max_new_tokens:
            row.finish_reason = "length"
        return delta

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
    "Generation",
    "GenerationConfig",
    "GenerationResult",
    "GenerationStats",
    "TokenEvent",
    "last_position_offset",
    "sample_tokens",
    "stop_string_cut",
]
