"""Stage datasets: plain records -> laid-out examples with their rendered pages.

Every stage dataset is map-style and keyed by the *global sample number* s = 0, 1, 2, ...:
epoch e = s // len(dataset) visits the dataset's units in a permutation seeded by (seed, e), and
everything random about a sample (curriculum page count, synthetic image) is keyed by s. So a
sample is the same on any process, in any DataLoader worker and after a resume, and resuming
the data stream is just "start at sample step x global batch" (`SampleRange`).

Tokenizing, chunking and rendering happen in `__getitem__`, i.e. inside DataLoader workers, so
rendering never stalls the accelerator. The main process only indexes: it reads the files, checks
them (bad records -> `ProblemLog`) and cuts documents into character spans sized from a measured
characters-per-token ratio (10 % over, so a span nearly always holds the tokens a sample needs;
the tokens past that are dropped).

A record that fails in a worker (an image that does not open, a page that overflows) is skipped:
the sample takes the next unit instead and carries a `DataProblem` that the trainer counts.

Stage layouts (DESIGN.md): caption [image page, caption + EOS]; OCR [v1, c1, v2, c2, ...] with
the curriculum's page count; OLM [c1, v1, ..., cn] on a span of as many tokens as fit max_length;
SFT [template, query pages (+ raw tail), template, response chunks, EOS], loss on the response;
the text-only baseline (stage "text") [span as raw text], loss on every token, no pages.
"""

from __future__ import annotations

import functools
import math
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from vist2.chat import chat_parts
from vist2.chunker import Chunk, decode_pieces, split_into_chunks
from vist2.errors import Vist2Error
from vist2.layout import (
    SequenceLayout,
    TextSegment,
    build_layout,
    caption_layout,
    collate_layouts,
    ocr_layout,
    olm_layout,
    sft_layout,
)
from vist2.render import PageRenderer, pages_to_tensor
from vist2.training.config import TrainConfig
from vist2.training.curriculum import page_tokens_for_page, pages_for_sample
from vist2.training.problems import DataProblem, ProblemLog
from vist2.training.recall import recall_ids
from vist2.training.sources import Document, read_captions, read_chats, read_documents
from vist2.training.synthetic import image_to_page, synthetic_caption

SYNTHETIC = "synthetic"  # --data value of the built-in synthetic caption set
MAX_SKIPS = 32  # consecutive bad units one sample may skip before the data is declared unusable
SPAN_MARGIN = 1.1  # spans hold ~10 % more text than the tokens a sample needs


@dataclass
class Example:
    """One training sequence and what it needs."""

    layout: SequenceLayout
    pages: torch.Tensor  # (n_pages, H, W) float32 in [-1, 1], in slot order
    problems: list[DataProblem] = field(default_factory=list)  # records skipped to make it


class SkipRecord(Exception):  # noqa: N818 -- control flow, not an error the user sees
    """Raised by `make_example` for a record that cannot be used; carries the problem."""

    def __init__(self, problem: DataProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of document `doc`."""

    doc: int
    start: int
    end: int


class SampleRange(torch.utils.data.Sampler[int]):
    """Global sample numbers start, start + 1, ..., stop - 1: the whole data order of a run.

    `restart_at` moves the start after a checkpoint is loaded, before iteration begins.
    """

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def restart_at(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


# -- text helpers ---------------------------------------------------------------------------------


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def end_of_turn_id(tokenizer) -> int:
    """The token that ends a response (the tokenizer's eos, `<|im_end|>` for Qwen3)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise Vist2Error(
            "the tokenizer has no eos_token; set one in tokenizer_config.json (e.g. <|im_end|>)"
        )
    return int(eos)


def chars_per_token(tokenizer, docs: Sequence[Document], budget: int = 200_000) -> float:
    """Characters per token measured on up to `budget` characters spread over the documents."""
    per_doc = max(budget // max(len(docs), 1), 2_000)
    sample, used = [], 0
    for doc in docs:
        piece = doc.text[:per_doc]
        sample.append(piece)
        used += len(piece)
        if used >= budget:
            break
    n_tokens = sum(len(ids) for ids in tokenizer(sample, add_special_tokens=False)["input_ids"])
    return max(sum(map(len, sample)) / max(n_tokens, 1), 0.25)


def chars_per_token_by_source(
    tokenizer, docs: Sequence[Document], budget: int = 50_000
) -> dict[str, float]:
    """`chars_per_token` of each source file's documents, keyed by `Document.source`."""
    groups: dict[str, list[Document]] = {}
    for doc in docs:
        groups.setdefault(doc.source, []).append(doc)
    return {source: chars_per_token(tokenizer, group, budget) for source, group in groups.items()}


def shuffle_text(text: str, rng: random.Random) -> str:
    """`text`'s words in random order, or its characters for text written without spaces (Chinese):
    the same glyphs, nothing a language model could guess them from."""
    chars = [c for c in text if not c.isspace()]
    if sum(ord(c) >= 0x2E80 for c in chars) <= len(chars) // 3:  # mostly not CJK: spaced words
        words = text.split()
        rng.shuffle(words)
        return " ".join(words)
    rng.shuffle(chars)
    return "".join(chars)


def corrupt_inputs(layout: SequenceLayout, fraction: float, rng: random.Random) -> None:
    """Replace `fraction` of the text slots' input ids, in place, by ids drawn from those slots;
    the labels (built from the clean ids) stay: the prefix a reader sees after its own mistakes."""
    if fraction <= 0:
        return
    slots = (~layout.visual).nonzero().flatten().tolist()
    if len(slots) < 2:
        return
    pool = layout.input_ids[slots].tolist()
    for j in slots:
        if rng.random() < fraction:
            layout.input_ids[j] = rng.choice(pool)


def split_spans(text: str, span_chars: int) -> list[tuple[int, int]]:
    """Cut `text` into consecutive spans of about `span_chars` characters, at whitespace when
    there is some in the last fifth of a span."""
    spans, start, n = [], 0, len(text)
    while start < n:
        end = min(start + span_chars, n)
        if end < n:
            floor = start + (4 * span_chars) // 5
            cut = max(text.rfind(" ", floor, end), text.rfind("\n", floor, end))
            if cut > start:
                end = cut + 1
        if text[start:end].strip():
            spans.append((start, end))
        start = end
    return spans


def drawn(fraction: float, key: str) -> bool:
    """A draw that is true for `fraction` of keys, the same for a key on every call (resume)."""
    return fraction > 0 and random.Random(key).random() < fraction


def olm_tokens_for_length(max_length: int, chunk_tokens: int, visual_tokens_per_page: int) -> int:
    """Most text tokens T whose OLM layout fits `max_length` slots: T + (ceil(T / K) - 1) * β."""
    k, beta = chunk_tokens, visual_tokens_per_page
    best = 0
    for n_chunks in range(1, max_length // max(k, 1) + 2):
        tokens = min(n_chunks * k, max_length - (n_chunks - 1) * beta)
        if tokens > (n_chunks - 1) * k:  # the last chunk is not empty
            best = max(best, tokens)
    return best


# -- the datasets ---------------------------------------------------------------------------------


class StageDataset(torch.utils.data.Dataset):
    """Base: unit permutation per epoch, skipping of bad units, lazy renderer."""

    stage = ""

    def __init__(self, model_config, tokenizer, config: TrainConfig, num_units: int) -> None:
        if num_units < 1:
            raise Vist2Error(f"{self.stage}: no usable training records in the data")
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.config = config
        self.num_units = num_units
        self.chunk_tokens = model_config.chunk_tokens
        self.beta = model_config.visual_tokens_per_page
        self.page_size = (model_config.render["page_height"], model_config.render["page_width"])
        self.samples_per_step = config.batch_size
        self.total_steps = 1  # set by the trainer once the run length is known
        self._renderer: PageRenderer | None = None
        self._perm: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        """Units in one epoch."""
        return self.num_units

    @property
    def renderer(self) -> PageRenderer:
        if self._renderer is None:  # made in the worker that uses it, never pickled
            self._renderer = PageRenderer(self.model_config.render_config)
        return self._renderer

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_renderer"] = None
        return state

    def unit_of(self, sample: int) -> int:
        epoch, offset = divmod(sample, self.num_units)
        if self._perm is None or self._perm[0] != epoch:
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.num_units, generator=generator))
        return int(self._perm[1][offset])

    def __getitem__(self, sample: int) -> Example:
        unit = self.unit_of(sample)
        problems: list[DataProblem] = []
        for attempt in range(MAX_SKIPS):
            try:
                example = self.make_example(sample, (unit + attempt) % self.num_units)
            except SkipRecord as skip:
                problems.append(skip.problem)
                continue
            example.problems = problems + example.problems
            return example
        shown = "; ".join(str(p) for p in problems[:3])
        raise Vist2Error(
            f"{self.stage}: {MAX_SKIPS} records in a row could not be used ({shown} ...)"
        )

    def make_example(self, sample: int, unit: int) -> Example:
        raise NotImplementedError

    def add_input_noise(self, layout: SequenceLayout, sample: int) -> None:
        """`TrainConfig.ocr_input_noise` on a read-back's text inputs, keyed by (seed, sample) so
        that resuming draws the same."""
        noise = random.Random(f"{self.config.seed}-noise-{sample}")
        corrupt_inputs(layout, self.config.ocr_input_noise, noise)

    def render(self, texts: Sequence[str], source: str, line: int | None) -> torch.Tensor:
        """Pages for `texts`: (n, H, W); a page that does not fit is a `SkipRecord`."""
        if not texts:
            return torch.zeros(0, *self.page_size)
        try:
            return pages_to_tensor(self.renderer.render_batch(list(texts)))
        except Vist2Error as err:  # PageOverflowError and friends
            raise SkipRecord(DataProblem(source, line, f"cannot render a page: {err}")) from None


class _SpanDataset(StageDataset):
    """Documents cut into character spans (OCR and OLM)."""

    def __init__(
        self, docs: list[Document], span_tokens: int, model_config, tokenizer, config: TrainConfig
    ) -> None:
        self.docs = docs
        self.span_tokens = span_tokens
        # One ratio per source file: English and Chinese differ ~3x in characters per token, and
        # a ratio averaged over both would give one language pages far short of K tokens.
        ratios = chars_per_token_by_source(tokenizer, docs)
        self.spans = [
            Span(i, s, e)
            for i, doc in enumerate(docs)
            for s, e in split_spans(
                doc.text, max(math.ceil(span_tokens * ratios[doc.source] * SPAN_MARGIN), 1)
            )
        ]
        super().__init__(model_config, tokenizer, config, len(self.spans))

    def span_text(self, unit: int) -> tuple[str, str, int | None]:
        """(text, source file, line) of span `unit`; the line is where the span starts."""
        span = self.spans[unit]
        doc = self.docs[span.doc]
        line = doc.line if doc.line is not None else doc.text.count("\n", 0, span.start) + 1
        return doc.text[span.start : span.end], doc.source, line

    def span_ids(self, unit: int) -> tuple[list[int], str, int | None]:
        text, source, line = self.span_text(unit)
        return encode(self.tokenizer, text)[: self.span_tokens], source, line

    def plain_text_example(self, ids: list[int], source: str, line: int | None) -> Example:
        """`ids` as plain text, loss on every token but the first, no pages."""
        if len(ids) < 2:
            raise SkipRecord(DataProblem(source, line, "too little text for a training sequence"))
        layout = build_layout([TextSegment(tuple(ids), train=True)], self.beta)
        return Example(layout, torch.zeros(0, *self.page_size))


class OLMDataset(_SpanDataset):
    """Stage 3: [c1, v1, c2, v2, ..., cn] over a span of as many tokens as fit max_length."""

    stage = "olm"

    def __init__(self, docs: list[Document], model_config, tokenizer, config: TrainConfig) -> None:
        k, beta = model_config.chunk_tokens, model_config.visual_tokens_per_page
        tokens = olm_tokens_for_length(config.max_length, k, beta)
        if tokens < 2:
            raise Vist2Error(
                f"olm: max_length {config.max_length} holds no text with K={k}, β={beta}"
            )
        super().__init__(docs, tokens, model_config, tokenizer, config)

    def make_example(self, sample: int, unit: int) -> Example:
        ids, source, line = self.span_ids(unit)
        if len(ids) < 2:
            raise SkipRecord(DataProblem(source, line, "too little text for a training sequence"))
        if self.reads_back(sample):
            first = split_into_chunks(ids, self.tokenizer, self.chunk_tokens, self.beta)[0]
            example = self.read_back_example(first, source, line)
            self.add_input_noise(example.layout, sample)
            return example
        return self.olm_example(self.with_recall(sample, ids), source, line)

    def olm_example(self, ids: list[int], source: str, line: int | None) -> Example:
        """[c1, v1, c2, v2, ..., cn] over `ids`, every chunk but the last drawn as a page."""
        chunks = split_into_chunks(ids, self.tokenizer, self.chunk_tokens, self.beta)
        pages = self.render([c.text for c in chunks[:-1]], source, line)
        return Example(build_layout(olm_layout(chunks), self.beta), pages)

    def reads_back(self, sample: int) -> bool:
        """Whether `sample` is a read-back (`TrainConfig.olm_ocr_fraction`), keyed by (seed,
        sample) so that resuming draws the same."""
        return drawn(self.config.olm_ocr_fraction, f"{self.config.seed}-olm-{sample}")

    def with_recall(self, sample: int, ids: list[int]) -> list[int]:
        """`ids`, or for `TrainConfig.olm_recall_fraction` of samples the same length with a fact
        on one of its pages and its question and answer later (`recall.recall_ids`); draws keyed
        by (seed, sample)."""
        seed = self.config.seed
        if not drawn(self.config.olm_recall_fraction, f"{seed}-recall-{sample}"):
            return ids
        rng = random.Random(f"{seed}-recall-key-{sample}")
        encoder = functools.partial(encode, self.tokenizer)
        return recall_ids(ids, encoder, self.chunk_tokens, rng) or ids

    def read_back_example(self, chunk: Chunk, source: str, line: int | None) -> Example:
        """Stage 2's [v1, c1] for the span's first chunk: its page, then its tokens."""
        page = self.render([chunk.text], source, line)
        return Example(build_layout(ocr_layout([chunk.token_ids]), self.beta), page)


class TextDataset(_SpanDataset):
    """The text-only baseline (`--stage text`): the OLM stage's spans as plain text, loss on every
    token, no pages: the LLM trained the way a text-only model of the same compute would be."""

    stage = "text"

    def __init__(self, docs: list[Document], model_config, tokenizer, config: TrainConfig) -> None:
        super().__init__(docs, config.max_length, model_config, tokenizer, config)

    def make_example(self, sample: int, unit: int) -> Example:
        return self.plain_text_example(*self.span_ids(unit))


class OCRDataset(_SpanDataset):
    """Stage 2: [v1, c1, v2, c2, ...]: read consecutive page-sized spans, page count from the
    curriculum (capped by what fits max_length)."""

    stage = "ocr"

    def __init__(self, docs: list[Document], model_config, tokenizer, config: TrainConfig) -> None:
        page_tokens = config.ocr_page_tokens or model_config.chunk_tokens
        per_page = page_tokens + model_config.visual_tokens_per_page
        self.max_pages = config.max_length // per_page
        if self.max_pages < 1:
            raise Vist2Error(
                f"ocr: max_length {config.max_length} cannot hold one page "
                f"({page_tokens} text tokens + {model_config.visual_tokens_per_page} visual tokens)"
            )
        hardest = max(level.min_pages for level in config.curriculum)
        if self.max_pages < hardest:
            warnings.warn(
                f"ocr: max_length {config.max_length} holds at most {self.max_pages} pages of "
                f"{per_page} slots, fewer than the curriculum's hardest level asks for "
                f"({hardest}); samples are capped at {self.max_pages}. Raise max_length or set "
                "ocr_page_tokens to a shorter page text.",
                stacklevel=2,
            )
        super().__init__(docs, page_tokens, model_config, tokenizer, config)

    def pages_for(self, sample: int) -> int:
        c = self.config
        return pages_for_sample(
            sample, self.samples_per_step, self.total_steps, c.curriculum, self.max_pages, c.seed
        )

    def page_ids(self, sample: int, page: int, unit: int) -> tuple[list[int], str, int | None]:
        """Token ids of page `page` of `sample` (span `unit`): the first n of the span, n from the
        curriculum level (a full page unless it sets page tokens), shuffled for a fraction of
        pages (`TrainConfig.ocr_shuffle_fraction`); draws are keyed by (seed, sample, page)."""
        c = self.config
        keep = page_tokens_for_page(
            sample,
            page,
            self.samples_per_step,
            self.total_steps,
            c.curriculum,
            self.span_tokens,
            c.seed,
        )
        rng = random.Random(f"{c.seed}-{sample}-{page}")
        if rng.random() >= c.ocr_shuffle_fraction:
            ids, source, line = self.span_ids(unit)
            return ids[:keep], source, line
        text, source, line = self.span_text(unit)
        return encode(self.tokenizer, shuffle_text(text, rng))[:keep], source, line

    def make_example(self, sample: int, unit: int) -> Example:
        if self.writes_text(sample):
            return self.text_example(unit)
        page_ids, page_images, skipped = [], [], []
        for j in range(self.pages_for(sample)):
            ids, source, line = self.page_ids(sample, j, (unit + j) % self.num_units)
            if not ids:
                continue
            try:
                image = self.render(decode_pieces(self.tokenizer, [ids]), source, line)
            except SkipRecord as skip:  # drop this page, keep the others
                skipped.append(skip.problem)
                continue
            page_ids.append(ids)
            page_images.append(image)
        if not page_ids:
            raise SkipRecord(
                skipped[0] if skipped else DataProblem(*self.span_text(unit)[1:], "no text")
            )
        layout = build_layout(ocr_layout(page_ids), self.beta)
        self.add_input_noise(layout, sample)
        example = Example(layout, torch.cat(page_images))
        example.problems = skipped
        return example

    def writes_text(self, sample: int) -> bool:
        """Whether `sample` is plain text (`TrainConfig.ocr_text_fraction`), keyed by (seed,
        sample) so that resuming draws the same."""
        return drawn(self.config.ocr_text_fraction, f"{self.config.seed}-text-{sample}")

    def text_example(self, unit: int) -> Example:
        """The text from span `unit` on, within its document, `ocr_text_tokens` of it (or as
        many as fit max_length); loss on every token but the first, no pages."""
        tokens = self.config.ocr_text_tokens or self.config.max_length
        first = self.spans[unit]
        spans_needed = math.ceil(tokens / max(self.span_tokens, 1)) + 1  # spans vary in tokens
        last = unit
        while (
            last + 1 < self.num_units
            and last - unit + 1 < spans_needed
            and self.spans[last + 1].doc == first.doc
        ):
            last += 1
        text = self.docs[first.doc].text[first.start : self.spans[last].end]
        _, source, line = self.span_text(unit)
        return self.plain_text_example(encode(self.tokenizer, text)[:tokens], source, line)


class SFTDataset(StageDataset):
    """Stage 4: chat template around a compressed query, then the compressed response + EOS."""

    stage = "sft"

    def __init__(self, chats, model_config, tokenizer, config: TrainConfig) -> None:
        self.chats = chats
        self.prefix_ids, self.middle_ids = chat_parts(tokenizer)
        self.eos = end_of_turn_id(tokenizer)
        super().__init__(model_config, tokenizer, config, len(chats))

    def make_example(self, sample: int, unit: int) -> Example:
        chat = self.chats[unit]
        k, beta = self.chunk_tokens, self.beta
        query = split_into_chunks(encode(self.tokenizer, chat.query), self.tokenizer, k, beta)
        response_ids = [*encode(self.tokenizer, chat.response), self.eos]
        response = split_into_chunks(response_ids, self.tokenizer, k, beta)
        layout = build_layout(sft_layout(self.prefix_ids, query, self.middle_ids, response), beta)
        if len(layout) > self.config.max_length:
            raise SkipRecord(
                DataProblem(
                    chat.source,
                    chat.line,
                    f"{len(layout)} slots, longer than max_length {self.config.max_length}",
                )
            )
        texts = [c.text for c in query if c.compressed] + [c.text for c in response[:-1]]
        return Example(layout, self.render(texts, chat.source, chat.line))


class CaptionDataset(StageDataset):
    """Stage 1: [image page, caption + EOS], from JSONL records or the synthetic shapes set."""

    stage = "caption"

    def __init__(self, records, model_config, tokenizer, config: TrainConfig) -> None:
        self.records = records  # None = synthetic
        self.eos = end_of_turn_id(tokenizer)
        if config.max_length <= model_config.visual_tokens_per_page:
            raise Vist2Error(
                f"caption: max_length {config.max_length} leaves no room for a caption after the "
                f"image's {model_config.visual_tokens_per_page} visual tokens"
            )
        size = config.synthetic_size if records is None else len(records)
        super().__init__(model_config, tokenizer, config, size)

    def make_example(self, sample: int, unit: int) -> Example:
        height, width = self.page_size
        if self.records is None:
            image, caption = synthetic_caption(unit, self.config.seed, width, height)
        else:
            record = self.records[unit]
            caption = record.caption
            try:
                with Image.open(record.image) as opened:
                    opened.load()
                    image = opened.copy()
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                reason = f"cannot open image {record.image}: {type(err).__name__}: {err}"
                raise SkipRecord(DataProblem(record.source, record.line, reason)) from None
        ids = [*encode(self.tokenizer, caption), self.eos][: self.config.max_length - self.beta]
        page = image_to_page(image, width, height)[None]  # [1, H, W]
        return Example(build_layout(caption_layout(ids), self.beta), page)


# -- building and batching ------------------------------------------------------------------------


def build_dataset(
    stage: str, data: str | None, model_config, tokenizer, config: TrainConfig, problems: ProblemLog
) -> StageDataset:
    """The dataset of `stage` over `data` (a path, or "synthetic"/None for captions)."""
    if stage == "caption":
        if data is None or data == SYNTHETIC:
            return CaptionDataset(None, model_config, tokenizer, config)
        return CaptionDataset(read_captions(data, problems), model_config, tokenizer, config)
    if data is None:
        raise Vist2Error(f"stage {stage} needs --data (text files, a directory or JSONL)")
    if stage == "sft":
        return SFTDataset(read_chats(data, problems), model_config, tokenizer, config)
    docs = read_documents(data, problems)
    dataset = {"ocr": OCRDataset, "olm": OLMDataset, "text": TextDataset}[stage]
    return dataset(docs, model_config, tokenizer, config)


def collate_examples(examples: Sequence[Example], pad_id: int, dense_mask: bool = True) -> dict:
    """Examples -> a right-padded batch: `collate_layouts`' tensors, plus
    pages (N, H, W) in slot order (row-major over the batch) and the problems met on the way.
    `dense_mask=False` skips the (B, 1, L, L) mask, for flex attention."""
    batch = collate_layouts([e.layout for e in examples], pad_id=pad_id, dense_mask=dense_mask)
    batch["pages"] = torch.cat([e.pages for e in examples])  # [N, H, W]
    batch["problems"] = [p for e in examples for p in e.problems]
    return batch


__all__ = [
    "SYNTHETIC",
    "CaptionDataset",
    "Example",
    "OCRDataset",
    "OLMDataset",
    "SFTDataset",
    "SampleRange",
    "StageDataset",
    "TextDataset",
    "build_dataset",
    "collate_examples",
    "olm_tokens_for_length",
    "split_spans",
]
