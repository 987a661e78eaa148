"""Continuous batching: requests join and leave the running batch between decode steps.

One worker thread owns the model and a `BatchKV`. Each loop:
1. admit waiting jobs while the batch has room: their prompts are rendered and prefilled together
   (left-padded, in groups of bounded size) and merged into the batch; first tokens are sampled
   at once;
2. drop rows that finished or whose client went away (their entries are freed now);
3. one decode step for every row; rows whose open chunk just reached K tokens (policy `global`)
   have the chunk rendered and encoded, feed its β page tokens as a forward on that row subset,
   and evict the chunk's text: every stream meets its chunk boundaries on its own schedule;
4. sample each row's next token (its own temperature, top_p and seeded generator) and hand the
   new text to the job's `emit` callback.

A job's events, in order: ("text", str)*, then ("done", finish_reason, usage dict, token ids) or
("error", message). An exception while serving one job (its prefill, its page, its sampling) fails
that job only; a failed batched forward fails the rows of that batch, and the worker goes on with
the next jobs. Text that could still be the start of a stop string is held back, so what was
streamed is never taken back.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vist2.chunker import StreamingDecoder
from vist2.engine import Engine, GenerationConfig, sample_tokens, stop_string_cut
from vist2.layout import Segment, build_layout, collate_layouts
from vist2.render import PageOverflowError
from vist2.serve.kvbatch import BatchKV

log = logging.getLogger("vist2.serve")


class QueueFullError(Exception):
    """The waiting queue holds `max_queue` jobs already (HTTP 429)."""


@dataclass
class Job:
    """One request as the worker sees it (prompt already laid out by the HTTP handler)."""

    segments: list[Segment]
    page_texts: list[str]
    prompt_tokens: int
    config: GenerationConfig
    emit: Callable[[tuple], None]
    cancelled: bool = False  # set by the HTTP side when the client goes away

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class _Stream:
    """Book-keeping of one running row."""

    job: Job
    decoder: StreamingDecoder
    next_pos: int  # position of the next token fed
    chunk_pos: int  # position of the open chunk's first text token
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0  # characters of `text` handed to the client so far
    chunk_text: str = ""
    n_in_chunk: int = 0
    pages: int = 0
    visual_tokens: int = 0
    peak_entries: int = 0
    finish_reason: str | None = None

    def usage(self) -> dict:
        n = len(self.tokens)
        return {
            "prompt_tokens": self.job.prompt_tokens,
            "completion_tokens": n,
            "total_tokens": self.job.prompt_tokens + n,
            "visual_tokens": self.visual_tokens,
            "pages": self.pages,
            "peak_cache_entries": self.peak_entries,
        }


@dataclass
class BatcherStats:
    """Counters the metrics endpoint reads (written by the worker thread only)."""

    requests_done: int = 0
    requests_failed: int = 0
    requests_cancelled: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    pages_rendered: int = 0
    steps: int = 0
    compactions: int = 0
    running: int = 0
    cache_live_entries: int = 0
    cache_allocated_entries: int = 0
    peak_cache_live_entries: int = 0
    peak_cache_allocated_entries: int = 0


class Batcher:
    """Runs the decode loop in a worker thread; `submit` is safe to call from any thread."""

    def __init__(
        self, engine: Engine, max_batch: int = 64, max_queue: int = 256, prefill_slots: int = 16384
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.prefill_slots = prefill_slots  # padded slots of one batched prefill (rows x length)
        self.pending: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.kv = BatchKV(engine.model)
        self.streams: list[_Stream] = []
        self.stats = BatcherStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="vist2-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the worker after its current step (running jobs get an error event)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        """Queue a job; `QueueFullError` if `max_queue` jobs wait already."""
        try:
            self.pending.put_nowait(job)
        except queue.Full:
            raise QueueFullError from None

    @property
    def queue_length(self) -> int:
        return self.pending.qsize()

    # -- the loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.streams:
                try:
                    first = self.pending.get(timeout=0.05)
                except queue.Empty:
                    continue
                self._admit_waiting([first])
            else:
                self._admit_waiting()
            self._drop_finished()
            if self.streams:
                self.step()
        for s in self.streams:
            s.job.emit(("error", "the server stopped before this request finished"))
        self.streams = []

    def run_until_idle(self) -> None:
        """Run the loop in the calling thread until no job runs or waits (tests, benchmarks)."""
        while self.streams or not self.pending.empty():
            self._admit_waiting()
            self._drop_finished()
            if self.streams:
                self.step()

    def _admit_waiting(self, jobs: list[Job] | None = None) -> None:
        """Admit waiting jobs (after `jobs`) while the batch has room."""
        jobs = list(jobs or [])
        while len(self.streams) + len(jobs) < self.max_batch:
            try:
                jobs.append(self.pending.get_nowait())
            except queue.Empty:
                break
        self._admit(jobs)

    def _admit(self, jobs: list[Job]) -> None:
        """Prefill `jobs` in groups of at most `prefill_slots` padded slots, merge them into the
        batch and sample their first tokens."""
        group: list[tuple[Job, object]] = []
        longest = 0
        for job in jobs:
            if job.cancelled:
                self.stats.requests_cancelled += 1
                continue
            try:
                layout = build_layout(job.segments, self.engine.beta)
            except Exception as err:
                self._fail(job, f"prefill failed: {err}")
                continue
            wider = max(longest, len(layout))
            if group and wider * (len(group) + 1) > self.prefill_slots:
                self._prefill(group)
                group, wider = [], len(layout)
            group.append((job, layout))
            longest = wider
        if group:
            self._prefill(group)

    @torch.inference_mode()
    def _prefill(self, group: list[tuple[Job, object]]) -> None:
        """One left-padded prefill of `group` (job, layout) pairs; if it fails, each job alone, so
        only the faulty one fails."""
        engine = self.engine
        try:
            visual, _, _ = engine.encode_texts([t for job, _ in group for t in job.page_texts])
            batch = collate_layouts([lay for _, lay in group], engine.pad_id, "left")
            logits = self.kv.add(batch, visual)  # [n, V]
        except Exception as err:  # nothing was merged: the batch is as it was
            if len(group) > 1:
                for item in group:
                    self._prefill([item])
            else:
                log.exception("prefill failed")
                self._fail(group[0][0], f"prefill failed: {err}")
            return
        new = []
        for job, layout in group:
            next_pos = int(layout.position_ids[-1]) + 1
            generator = None
            if job.config.seed is not None:
                generator = torch.Generator(device=engine.device).manual_seed(job.config.seed)
            s = _Stream(job, StreamingDecoder(engine.tokenizer), next_pos, next_pos, generator)
            s.pages = len(job.page_texts)
            s.visual_tokens = s.pages * engine.beta
            self.stats.pages_rendered += s.pages
            self.stats.prompt_tokens += job.prompt_tokens
            new.append(s)
        self.streams += new
        self.stats.running = len(self.streams)
        self._track_cache()
        for i, s in enumerate(new):
            self._accept(s, logits[i : i + 1])

    def _fail(self, job: Job, message: str) -> None:
        self.stats.requests_failed += 1
        job.emit(("error", message))

    def _drop_finished(self) -> None:
        keep = []
        for i, s in enumerate(self.streams):
            if s.job.cancelled and s.finish_reason is None:
                self.stats.requests_cancelled += 1
                s.finish_reason = "cancelled"
            if s.finish_reason is None:
                keep.append(i)
        if len(keep) < len(self.streams):
            self.kv.drop(keep)
            self.streams = [self.streams[i] for i in keep]
            self.stats.cache_live_entries = int(self.kv.live().sum())
            self.stats.cache_allocated_entries = self.kv.allocated_entries()
        self.stats.running = len(self.streams)

    @torch.inference_mode()
    def step(self) -> None:
        """One decode step of every running row (with page feeds for rows at a boundary)."""
        streams, device = self.streams, self.engine.device
        global_ = torch.tensor([s.job.config.policy == "global" for s in streams], device=device)
        try:
            tokens = torch.tensor([s.tokens[-1] for s in streams], device=device)
            positions = torch.tensor([s.next_pos for s in streams], device=device)
            logits = self.kv.decode(tokens, positions, global_)  # [B, V]
            for s in streams:
                s.next_pos += 1
            logits = self._boundaries(logits)
        except Exception as err:
            log.exception("decode step failed")
            for s in streams:
                s.job.emit(("error", f"decode step failed: {err}"))
                s.finish_reason = "error"
            self.stats.requests_failed += len(streams)
            self.kv.drop([])
            self.streams = []
            return
        self.stats.steps += 1
        self._track_cache()
        if self.kv.compact():
            self.stats.compactions += 1
        greedy = logits.argmax(dim=-1).tolist()  # [B]: one call serves every greedy row
        for i, s in enumerate(streams):
            if s.finish_reason is None:
                token = greedy[i] if s.job.config.temperature == 0 else None
                self._accept(s, logits[i : i + 1], token)

    def _boundaries(self, logits: torch.Tensor) -> torch.Tensor:
        """Rows whose open chunk holds K tokens: render + encode it, feed its page, evict its
        text. Returns `logits` with those rows' next-token logits replaced."""
        k, beta = self.engine.chunk_tokens, self.engine.beta
        due = [
            i
            for i, s in enumerate(self.streams)
            if s.job.config.policy == "global" and s.n_in_chunk == k
        ]
        if not due:
            return logits
        due, visual = self._encode_pages(due)
        if not due:
            return logits
        device = logits.device
        rows = torch.tensor(due, device=device)
        starts = torch.tensor([self.streams[i].chunk_pos for i in due], device=device)
        positions = starts[:, None] + torch.arange(beta, device=device)  # [R, β]
        page_logits = self.kv.visual(rows, positions, visual)  # [R, V]
        self._track_cache()  # the peak: chunk text + its page
        self.kv.evict_open(rows)
        logits[rows] = page_logits
        for i in due:
            s = self.streams[i]
            s.chunk_pos += beta
            s.next_pos = s.chunk_pos
            s.n_in_chunk, s.chunk_text = 0, ""
            s.pages += 1
            s.visual_tokens += beta
        self.stats.pages_rendered += len(due)
        return logits

    def _encode_pages(self, due: list[int]) -> tuple[list[int], torch.Tensor | None]:
        """Pages of the open chunks of rows `due`; a row whose text overflows a page stops there
        (finish reason "length", as `Engine` does) and leaves `due`."""
        texts = [self.streams[i].chunk_text for i in due]
        try:
            visual, _, _ = self.engine.encode_texts(texts)
            return due, visual
        except PageOverflowError:
            pass
        kept, pages = [], []
        for i, text in zip(due, texts, strict=True):
            try:
                pages.append(self.engine.encode_texts([text])[0])
                kept.append(i)
            except PageOverflowError:
                self._finish(self.streams[i], "length")
        return kept, torch.cat(pages) if pages else None

    # -- tokens ----------------------------------------------------------------------------------

    def _accept(self, s: _Stream, logits: torch.Tensor, token: int | None = None) -> None:
        """Sample the next token of stream `s` from logits (1, V) (unless `token` is given), emit
        its text, check stops."""
        config = s.job.config
        try:
            if token is None:
                token = int(sample_tokens(logits, config, s.generator)[0])
        except Exception as err:
            log.exception("sampling failed")
            s.finish_reason = "error"
            self.stats.requests_failed += 1
            s.job.emit(("error", f"sampling failed: {err}"))
            return
        s.tokens.append(token)
        s.n_in_chunk += 1
        self.stats.generated_tokens += 1
        delta = s.decoder.step(token)
        s.chunk_text += delta
        if config.stop_on_eos and token in self.engine.stop_ids:
            return self._finish(s, "stop")
        cut = stop_string_cut(s.text, delta, config.stop_strings)
        if cut is not None:
            s.text = (s.text + delta)[:cut]
            return self._finish(s, "stop")
        s.text += delta
        if len(s.tokens) >= config.max_new_tokens:
            return self._finish(s, "length")
        # hold back what could still be the start of a stop string: streamed text is never
        # taken back, so the stream and the final text agree
        hold = max((len(x) - 1 for x in config.stop_strings), default=0)
        self._flush(s, len(s.text) - hold)

    def _flush(self, s: _Stream, upto: int) -> None:
        """Emit the text of `s` up to character `upto` that was not emitted yet."""
        if upto > s.emitted:
            s.job.emit(("text", s.text[s.emitted : upto]))
            s.emitted = upto

    def _finish(self, s: _Stream, reason: str) -> None:
        self._flush(s, len(s.text))
        s.finish_reason = reason
        self.stats.requests_done += 1
        s.job.emit(("done", reason, s.usage(), list(s.tokens)))

    def _track_cache(self) -> None:
        live = self.kv.live().tolist()
        for s, n in zip(self.streams, live, strict=True):
            s.peak_entries = max(s.peak_entries, int(n))
        st = self.stats
        st.cache_live_entries = int(sum(live))
        st.cache_allocated_entries = self.kv.allocated_entries()
        st.peak_cache_live_entries = max(st.peak_cache_live_entries, st.cache_live_entries)
        st.peak_cache_allocated_entries = max(
            st.peak_cache_allocated_entries, st.cache_allocated_entries
        )
