"""`vist2 eval ocr`: does the model read its own pages back?

Pages are the model's chunks of held-out text: each document is tokenized with the model's
tokenizer and cut into chunks of K tokens with the tail rule (`split_into_chunks`); every
compressed chunk is one page. As in OCR training (`OCRDataset`), a page shows the decode of its
own token ids, and that decode is the expected text.

Reading is the stage-2 layout [v, c]: the page's β visual tokens at positions 0..β-1, then the
model writes greedily, one token at a time with a KV cache, exactly as many tokens as the page
holds. Pages are read in batches; every page has β visual tokens, so a batch needs no padding.

Sanity anchors (tests): a reader that returns the expected ids scores 100 % on every metric; a
random-init model scores near zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from vist2.chunker import decode_pieces, split_into_chunks
from vist2.engine import Engine
from vist2.errors import Vist2Error
from vist2.eval.data import language_of, round_robin
from vist2.eval.metrics import PageScore, inline_diff, mean_scores, score_page
from vist2.eval.models import model_path
from vist2.eval.page_loss import page_gain
from vist2.loading import load_model
from vist2.render import PageOverflowError, PageRenderer
from vist2.training.sources import Document


@dataclass(frozen=True)
class OCRPage:
    """One page to read back: its token ids and the text it shows."""

    index: int
    source: str
    token_ids: tuple[int, ...]
    text: str
    language: str


Reader = Callable[[Sequence[OCRPage]], list[list[int]]]  # pages -> token ids read per page


def ocr_pages(
    docs: Sequence[Document], tokenizer, chunk_tokens: int, beta: int, max_pages: int | None
) -> list[OCRPage]:
    """The compressed chunks of `docs` as pages, taken from the documents in turn (round robin),
    so that a `max_pages` limit still samples every file."""
    per_doc = []
    for doc in docs:
        ids = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
        chunks = split_into_chunks(ids, tokenizer, chunk_tokens, beta)
        # a page shows the decode of its own ids, as OCR training draws it
        texts = [decode_pieces(tokenizer, [c.token_ids])[0] for c in chunks]
        per_doc.append(
            [
                (doc.source, c.token_ids, text)
                for c, text in zip(chunks, texts, strict=True)
                if c.compressed and text.strip()
            ]
        )
    picked = round_robin(per_doc, max_pages)
    return [
        OCRPage(i, source, ids, text, language_of(text))
        for i, (source, ids, text) in enumerate(picked)
    ]


class GreedyReader:
    """Reads pages with a `VIST2Model`: [β visual tokens, then greedy text], batched, KV-cached.

    With `blank=True` every page is replaced by a blank one: the control that shows what the
    language model's prior alone scores (fluent text earns some character accuracy by chance).
    """

    def __init__(self, model, tokenizer, blank: bool = False) -> None:
        self.engine = Engine(model, tokenizer)  # its renderer + encoder: the inference path
        self.model = model
        self.beta = model.config.visual_tokens_per_page
        self.blank = blank

    @torch.inference_mode()
    def __call__(self, pages: Sequence[OCRPage]) -> list[list[int]]:
        texts = ["" if self.blank else p.text for p in pages]
        visual, _, _ = self.engine.encode_texts(texts)  # [B, β, D]
        device = visual.device
        b, beta = visual.shape[0], self.beta
        steps = max(len(p.token_ids) for p in pages)
        cache = DynamicCache()
        out = self.model(
            input_ids=torch.zeros(b, beta, dtype=torch.long, device=device),
            visual_mask=torch.ones(b, beta, dtype=torch.bool, device=device),
            visual_tokens=visual,
            position_ids=torch.arange(beta, device=device).expand(b, beta),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        read = torch.empty(b, steps, dtype=torch.long, device=device)  # [B, steps]
        for step in range(steps):
            read[:, step] = out.logits[:, -1].argmax(dim=-1)
            if step == steps - 1:
                break
            out = self.model(
                input_ids=read[:, step : step + 1],
                position_ids=torch.full((b, 1), beta + step, device=device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        rows = read.tolist()
        return [row[: len(p.token_ids)] for row, p in zip(rows, pages, strict=True)]


def oracle_reader(pages: Sequence[OCRPage]) -> list[list[int]]:
    """Reads every page perfectly: the ground-truth anchor of the scoring path."""
    return [list(p.token_ids) for p in pages]


@dataclass
class PageResult:
    page: OCRPage
    read_ids: list[int]
    read_text: str
    score: PageScore


def read_pages(
    pages: Sequence[OCRPage], reader: Reader, tokenizer, batch_size: int, progress: bool = True
) -> tuple[list[PageResult], list[dict], float]:
    """Read and score every page: (results, pages that could not be rendered, seconds)."""
    results: list[PageResult] = []
    skipped: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(total=len(pages), desc="ocr", unit="page", disable=not progress)
    for i in range(0, len(pages), batch_size):
        batch = list(pages[i : i + batch_size])
        try:
            read = reader(batch)
        except PageOverflowError:  # find the page(s) that do not fit, read the others
            read = []
            for page in batch:
                try:
                    read += reader([page])
                except PageOverflowError as err:
                    skipped.append({"page": page.index, "source": page.source, "error": str(err)})
                    read.append(None)
        for page, ids in zip(batch, read, strict=True):
            if ids is None:
                continue
            text = decode_pieces(tokenizer, [ids])[0]
            score = score_page(page.text, text, page.token_ids, ids)
            results.append(PageResult(page, ids, text, score))
        bar.update(len(batch))
    bar.close()
    return results, skipped, time.perf_counter() - start


def summarize(results: Sequence[PageResult]) -> dict[str, dict]:
    """Page-averaged scores per language, plus 'all'."""
    by_lang: dict[str, list[PageScore]] = {}
    for r in results:
        by_lang.setdefault(r.page.language, []).append(r.score)
    summary = {lang: mean_scores(scores) for lang, scores in sorted(by_lang.items())}
    summary["all"] = mean_scores([r.score for r in results])
    return summary


def other_page_floor(pages: Sequence[OCRPage]) -> dict[str, dict]:
    """What fluent text that is not on the page scores: each page "read" as the next page of its
    language (cyclic; `ocr_pages` takes pages from the files in turn, so usually another file's),
    scored like a reading. No model is involved; a reader has to beat this to be reading. A
    language with one page is left out."""
    by_lang: dict[str, list[OCRPage]] = {}
    for page in pages:
        by_lang.setdefault(page.language, []).append(page)
    results = []
    for lang_pages in by_lang.values():
        if len(lang_pages) < 2:
            continue
        for page, other in zip(lang_pages, lang_pages[1:] + lang_pages[:1], strict=True):
            score = score_page(page.text, other.text, page.token_ids, other.token_ids)
            results.append(PageResult(page, list(other.token_ids), other.text, score))
    return summarize(results) if results else {}


def worst_pages(results: Sequence[PageResult], count: int) -> list[PageResult]:
    """The `count` pages with the lowest character accuracy (ties: lowest token accuracy)."""
    order = sorted(
        results, key=lambda r: (r.score.character_accuracy, r.score.token_accuracy, r.page.index)
    )
    return order[:count]


def clear_worst(out: Path) -> None:
    """Remove the worst-page images an earlier report left in `out` (their names, as
    `write_worst` gives them), so that a re-run into the same folder keeps only its own."""
    for stale in (out / "worst").glob("*page_[0-9]*.png"):
        stale.unlink()


def write_worst(worst: Sequence[PageResult], renderer, out: Path, prefix: str = "") -> list[dict]:
    """Each worst page's image (PNG) and its diff; returns their JSON records."""
    from PIL import Image

    folder = out / "worst"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for rank, r in enumerate(worst, start=1):
        name = f"worst/{prefix}page_{r.page.index:05d}.png"
        Image.fromarray(renderer.render(r.page.text).image).save(out / name, optimize=True)
        records.append(
            {
                "rank": rank,
                "page": r.page.index,
                "source": r.page.source,
                "language": r.page.language,
                "image": name,
                **r.score.to_dict(),
                "expected": r.page.text,
                "read": r.read_text,
                "diff": inline_diff(r.page.text, r.read_text),
            }
        )
    return records


def check_ocr_budget(config, pages: Sequence[OCRPage]) -> None:
    """A page's β visual tokens + its text must fit the LLM's positions."""
    budget = getattr(config.text_config, "max_position_embeddings", None)
    need = config.visual_tokens_per_page + max((len(p.token_ids) for p in pages), default=0)
    if budget is not None and need > budget:
        raise Vist2Error(
            f"reading a page takes {need} positions (β={config.visual_tokens_per_page} visual + "
            f"{need - config.visual_tokens_per_page} text tokens), past the model's "
            f"max_position_embeddings ({budget})"
        )


@dataclass
class OCRRun:
    """What `vist2 eval ocr` was asked to do."""

    model: str
    data: str
    out: str
    split: str = "heldout"
    max_pages: int | None = None
    page_tokens: tuple[int, ...] = ()  # text tokens per page; () = the model's K
    batch_size: int = 16
    worst: int = 5
    control: bool = False
    device: str = "cpu"
    dtype: torch.dtype | None = None
    progress: bool = True


def ocr_at(
    page_tokens: int, docs, model, tokenizer, run: OCRRun, reader: Reader, out: Path
) -> dict:
    """Read pages of `page_tokens` tokens (compression ratio page_tokens / β) and score them."""
    beta = model.config.visual_tokens_per_page
    pages = ocr_pages(docs, tokenizer, page_tokens, beta, run.max_pages)
    if not pages:
        raise Vist2Error(
            f"{run.data}: the {run.split!r} part holds no page of more than β={beta} tokens"
        )
    check_ocr_budget(model.config, pages)
    results, skipped, seconds = read_pages(pages, reader, tokenizer, run.batch_size, run.progress)
    control = gain = None
    if run.control:
        blank = GreedyReader(model, tokenizer, blank=True)
        control = summarize(read_pages(pages, blank, tokenizer, run.batch_size, run.progress)[0])
        rendered = [r.page for r in results]
        gain = page_gain(model, blank.engine, rendered)
    renderer = PageRenderer(model.config.render_config)
    worst = write_worst(worst_pages(results, run.worst), renderer, out, prefix=f"k{page_tokens}_")
    return {
        "page_tokens": page_tokens,
        "compression_ratio": page_tokens / beta,
        "summary": summarize(results),
        "blank_page_control": control,
        "other_page_floor": other_page_floor([r.page for r in results]),
        "page_gain": gain,
        "pages_per_s": len(results) / max(seconds, 1e-9),
        "seconds": seconds,
        "skipped_pages": skipped,
        "worst": worst,
        "pages": [
            {"page": r.page.index, "source": r.page.source, "language": r.page.language}
            | r.score.to_dict()
            for r in results
        ],
    }


def run_ocr(run: OCRRun, reader: Reader | None = None) -> dict:
    """Read the pages of `run.data` back (once per `page_tokens` value) and write ocr.json,
    ocr.md, ocr_hist.png (and ocr_ratio.png for several page sizes), worst/."""
    from vist2.eval.data import describe_parts, read_eval_documents
    from vist2.eval.report import (
        environment,
        histogram_png,
        line_gain_png,
        ratio_png,
        write_json,
    )

    with model_path(run.model) as path:
        model, tokenizer = load_model(path, dtype=run.dtype, device=run.device)
    config = model.config
    docs = read_eval_documents(run.data, run.split)
    out = Path(run.out)
    out.mkdir(parents=True, exist_ok=True)
    clear_worst(out)
    read = reader or GreedyReader(model, tokenizer)
    sizes = run.page_tokens or (config.chunk_tokens,)
    report = {
        "command": "ocr",
        "model": str(run.model),
        "reader": "greedy" if reader is None else getattr(reader, "__name__", "custom"),
        "chunk_tokens": config.chunk_tokens,
        "visual_tokens_per_page": config.visual_tokens_per_page,
        "split": run.split,
        "data": describe_parts(docs, run.split),
        "runs": [ocr_at(n, docs, model, tokenizer, run, read, out) for n in sizes],
        "environment": environment(),
    }
    write_json(out / "ocr.json", report)
    by_lang: dict[str, list[float]] = {}
    for page in report["runs"][0]["pages"]:
        by_lang.setdefault(page["language"], []).append(page["character_accuracy"])
    title = f"OCR: pages of {sizes[0]} tokens read back"
    histogram_png(by_lang, "character accuracy (1 - CER)", title, out / "ocr_hist.png")
    if len(sizes) > 1:
        ratio_png(report["runs"], out / "ocr_ratio.png")
    if run.control:
        line_gain_png(
            line_curves(report["runs"]),
            out / "ocr_line_gain.png",
            real=line_curves(report["runs"], "real_nll"),
        )
    (out / "ocr.md").write_text(ocr_markdown(report), encoding="utf-8")
    return report


def _score_row(label: str, r: float, s: dict) -> list:
    from vist2.eval.report import pct

    return [
        label,
        f"{r:g}",
        s["pages"],
        pct(s.get("character_accuracy")),
        pct(s.get("exact_page_rate")),
        pct(s.get("token_accuracy")),
        f"{s['rouge_l']:.3f}" if s["pages"] else "n/a",
        f"{s['correct_prefix_tokens']:.1f}" if "correct_prefix_tokens" in s else "n/a",
    ]


def _teacher_forced(gain: dict) -> str:
    """'real / blank' teacher-forced token accuracy of a page-gain row ('-' in older reports)."""
    from vist2.eval.report import pct

    if "real_teacher_forced_accuracy" not in gain:
        return "-"
    real, blank = gain["real_teacher_forced_accuracy"], gain["blank_teacher_forced_accuracy"]
    return f"{pct(real)} / {pct(blank)}"


def line_curves(runs: Sequence[dict], key: str = "gain_nats") -> dict[str, list[float]]:
    """A per-line figure of the page-gain rows (`gain_nats`, or `real_nll`: the loss from the
    real page), one curve per language and ratio: 'en, r=4'."""
    curves = {}
    for run in runs:
        by_lang = run.get("page_gain") or {}
        langs = [lang for lang in by_lang if lang != "all"] or list(by_lang)
        for lang in langs:
            label = f"{lang}, r={run['compression_ratio']:g}"
            curves[label] = [row[key] for row in by_lang[lang]["by_line"]]
    return curves


def _line_table(curves: dict[str, list[float]]) -> str:
    from vist2.eval.report import markdown_table

    depth = max(len(c) for c in curves.values())
    rows = [
        [str(k + 1), *(f"{c[k]:.3f}" if k < len(c) else "" for c in curves.values())]
        for k in range(depth)
    ]
    return markdown_table(["line", *curves], rows)


def line_gain_lines(runs: Sequence[dict]) -> list[str]:
    """The markdown under the gain table: the gain, and the loss from the real page, line by
    line down the page."""
    return [
        "The gain line by line (line 1 = the top of the page): where on a page reading stops.",
        "",
        _line_table(line_curves(runs)),
        "",
        "The loss from the real page line by line (nats per token): the reading itself. Read the "
        "gain with it: a model that relies on its pages does worse from a blank one, which raises "
        "the gain with no better reading.",
        "",
        _line_table(line_curves(runs, "real_nll")),
        "",
        "![page gain and real-page loss by line](ocr_line_gain.png)",
    ]


def ocr_markdown(report: dict) -> str:
    from vist2.eval.report import data_lines, markdown_table

    rows = []
    for run in report["runs"]:
        r = run["compression_ratio"]
        rows += [_score_row(lang, r, s) for lang, s in run["summary"].items()]
        for lang, s in (run["blank_page_control"] or {}).items():
            rows.append(_score_row(f"{lang}, blank pages (control)", r, s))
        for lang, s in (run.get("other_page_floor") or {}).items():
            rows.append(_score_row(f"{lang}, another page's text (floor)", r, s))
    header = ["language", "r", "pages", "character accuracy", "exact pages", "token accuracy"]
    speed = ", ".join(f"{run['pages_per_s']:.2f}" for run in report["runs"])
    lines = [
        f"# OCR: `{report['model']}`",
        "",
        f"Model: K = {report['chunk_tokens']}, β = {report['visual_tokens_per_page']}; r = text "
        f"tokens per page / β; reader: {report['reader']}; {speed} pages/s on "
        f"{report['environment']['accelerator']}.",
        "",
        markdown_table([*header, "ROUGE-L", "tokens right before the first mistake"], rows),
        "",
        "![character accuracy per page](ocr_hist.png)",
    ]
    if any(run.get("other_page_floor") for run in report["runs"]):
        lines += [
            "",
            "*Floor*: each page scored against the text of another held-out page of its language, "
            "no model involved: what fluent text that is not on the page earns. A reader beats it "
            "by reading; a blank-page control can score below it (a model that writes blank lines "
            "from a blank page).",
        ]
    gains = [
        [
            lang,
            f"{run['compression_ratio']:g}",
            f"{g['real_nll']:.3f}",
            f"{g['blank_nll']:.3f}",
            f"{g['gain_nats']:.3f}",
            _teacher_forced(g),
        ]
        for run in report["runs"]
        for lang, g in (run.get("page_gain") or {}).items()
    ]
    if gains:
        lines += [
            "",
            "What the page tells the model (teacher-forced loss on the page's own text, nats per "
            "token; gain = blank - real: 0 for a model that ignores its pages), and the token "
            "accuracy with the page's own text before each token (teacher-forced; far above greedy "
            "read-back's token accuracy when the reader's own mistakes derail it):",
            "",
            markdown_table(
                [
                    "language",
                    "r",
                    "loss, real page",
                    "loss, blank page",
                    "gain",
                    "teacher-forced token accuracy, real / blank",
                ],
                gains,
            ),
        ]
    if gains:
        lines += ["", *line_gain_lines(report["runs"])]
    if len(report["runs"]) > 1:
        lines += ["", "![scores per compression ratio](ocr_ratio.png)"]
    lines += ["", f"Data ({report['split']} part):", *data_lines(report["data"])]
    for run in report["runs"]:
        if run["skipped_pages"]:
            lines += ["", f"{len(run['skipped_pages'])} page(s) could not be rendered (ocr.json)."]
    return "\n".join([*lines, *worst_page_lines(report["runs"])]) + "\n"


def worst_page_lines(runs: Sequence[dict]) -> list[str]:
    """The report's last section: each run's worst pages, image and diff."""
    from vist2.eval.report import pct

    lines = ["", "## Worst pages", "", "Diff: `[-expected, not read-]{+read, not expected+}`."]
    for run in runs:
        for w in run["worst"]:
            lines += [
                "",
                f"### r = {run['compression_ratio']:g}, {w['rank']}. page {w['page']} "
                f"({w['language']}, `{w['source']}`): character accuracy "
                f"{pct(w['character_accuracy'])}, ROUGE-L {w['rouge_l']:.3f}",
                "",
                f"![page {w['page']}]({w['image']})",
                "",
                "```text",
                w["diff"],
                "```",
            ]
    return lines
