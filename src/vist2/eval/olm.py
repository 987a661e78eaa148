"""`vist2 eval olm`: does the model continue text as well from pages as from text?

Held-out documents are cut into windows of `prefix + continue` tokens (the model's tokenizer).
Each window is scored under each reading, teacher-forced, same model:
- `global`: the stage-3 OLM layout over the whole window, [c1, v1, c2, v2, ..., cn] with the
  rule-2 mask (`olm_layout`, exactly what training builds): the prefix and the continuation's
  earlier chunks are seen only as pages;
- `none`: the window as plain text.
With `control`, a third reading, `blank`: the `global` layout with every page blank, so each
continuation token has only its own chunk's earlier text; `blank - global` (nats per token) is
what the pages carry, 0 for a model that ignores them.

Only continuation tokens are scored: the summed negative log-likelihood gives perplexity per
token and bits per character (characters of the continuation's decode), which is comparable
across tokenizers. `--baseline DIR` scores the same texts with a text-only Hugging Face causal LM
(its own tokenizer: prefix and continuation text are tokenized separately).

Sanity anchors (tests): a random-init model's perplexity is near the vocabulary size (chance);
logits that put all mass on the truth give perplexity 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vist2.chunker import split_into_chunks
from vist2.errors import Vist2Error
from vist2.eval.data import round_robin
from vist2.eval.metrics import perplexity
from vist2.eval.models import model_path
from vist2.layout import (
    IGNORE_INDEX,
    SequenceLayout,
    TextSegment,
    build_layout,
    collate_layouts,
    olm_layout,
)
from vist2.render import PageRenderer, pages_to_tensor
from vist2.training.sources import Document

POLICIES = ("global", "none")


@dataclass(frozen=True)
class Window:
    """`prefix + continue` consecutive tokens of one document."""

    source: str
    token_ids: tuple[int, ...]


def olm_windows(
    docs: Sequence[Document], tokenizer, length: int, max_windows: int | None
) -> list[Window]:
    """Non-overlapping windows of `length` tokens, taken from the documents in turn."""
    per_doc = []
    for doc in docs:
        ids = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
        starts = range(0, len(ids) - length + 1, length)
        per_doc.append([Window(doc.source, tuple(ids[i : i + length])) for i in starts])
    return round_robin(per_doc, max_windows)


def window_layout(
    window: Window, prefix: int, policy: str, tokenizer, k: int, beta: int
) -> tuple[SequenceLayout, list[str]]:
    """(layout with labels on continuation tokens only, page texts in slot order)."""
    ids = window.token_ids
    if policy == "global":
        chunks = split_into_chunks(ids, tokenizer, k, beta)
        layout = build_layout(olm_layout(chunks), beta)
        texts = [c.text for c in chunks[:-1]]
    elif policy == "none":
        layout = build_layout([TextSegment(tuple(ids), train=True)], beta)
        texts = []
    else:
        raise Vist2Error(f"olm policy must be one of {POLICIES}, got {policy!r}")
    token_index = torch.cumsum(~layout.visual, 0) - 1  # (L,): index in `ids` of each text slot
    target_index = torch.cat([token_index[1:], token_index[-1:]])  # (L,): of the slot predicted
    scored = (layout.labels != IGNORE_INDEX) & (target_index >= prefix)
    layout.labels = torch.where(scored, layout.labels, IGNORE_INDEX)
    return layout, texts


def nll_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, batch: int
) -> list[float]:
    """Summed NLL per row. logits (n, V), labels (n,), rows (n,) the batch row of each."""
    nll = F.cross_entropy(logits.float(), labels, reduction="none")  # [n]
    return (
        torch.zeros(batch, dtype=torch.float64)
        .index_add_(0, rows.cpu(), nll.double().cpu())
        .tolist()
    )


@torch.inference_mode()
def score_batch(model, renderer: PageRenderer, layouts, texts: list[str]) -> list[float]:
    """Summed continuation NLL of each laid-out window (one masked forward)."""
    device = next(model.parameters()).device
    batch = collate_layouts(layouts)
    pages = pages_to_tensor(renderer.render_batch(texts)).to(device) if texts else None  # [N, H, W]
    labels = batch["labels"].to(device)  # [B, L]
    out = model(
        input_ids=batch["input_ids"].to(device),
        visual_mask=batch["visual_mask"].to(device),
        pages=pages,
        position_ids=batch["position_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        labels=labels,
    )
    keep = labels != IGNORE_INDEX  # [B, L]
    rows = keep.nonzero()[:, 0]  # [n]
    return nll_from_logits(out.logits, labels[keep], rows, len(layouts))


def check_olm_budget(config, prefix: int, cont: int) -> None:
    """Both layouts must fit the LLM's positions (`none` is the longer one)."""
    budget = getattr(config.text_config, "max_position_embeddings", None)
    if budget is not None and prefix + cont > budget:
        raise Vist2Error(
            f"--prefix {prefix} + --continue {cont} = {prefix + cont} tokens, past the model's "
            f"max_position_embeddings ({budget}) for the plain-text (none) reading; shorten them"
        )


def load_baseline(path: str, device: str, dtype: torch.dtype | None):
    """(causal LM, tokenizer) of a text-only model dir; a vist2 dir gives its language model."""
    import json

    from transformers import AutoModelForCausalLM

    from vist2.loading import load_model, load_tokenizer

    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise Vist2Error(
            f"--baseline {path}: no config.json there; pass a Hugging Face causal-LM directory"
        )
    if json.loads(config_file.read_text(encoding="utf-8")).get("model_type") == "vist2":
        model, tokenizer = load_model(path, dtype=dtype, device=device)
        return model.language_model, tokenizer
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, tokenizer


def baseline_sequences(
    tokenizer, baseline_tokenizer, windows: Sequence[Window], prefix: int
) -> tuple[list[tuple[list[int], int]], str]:
    """(token ids, prefix length) of each window for the baseline, and how they were made: the
    model's own ids when the vocabularies agree (perplexities then compare directly), else the
    baseline's tokenization of the prefix and continuation texts (compare bits per character)."""
    if baseline_tokenizer.get_vocab() == tokenizer.get_vocab():
        return [(list(w.token_ids), prefix) for w in windows], "the model's token ids"
    seqs = []
    for w in windows:
        p_text, c_text = (
            tokenizer.decode(w.token_ids[:prefix]),
            tokenizer.decode(w.token_ids[prefix:]),
        )
        p = baseline_tokenizer(p_text, add_special_tokens=False)["input_ids"]
        c = baseline_tokenizer(c_text, add_special_tokens=False)["input_ids"]
        seqs.append((p + c, len(p)))
    return seqs, "its own tokenizer (prefix and continuation texts)"


@torch.inference_mode()
def score_baseline(model, seqs: Sequence[tuple[list[int], int]]) -> list[tuple[float, int]]:
    """(summed NLL, scored tokens) of each (ids, prefix length) under a plain causal LM."""
    device = next(model.parameters()).device
    length = max(len(ids) for ids, _ in seqs)
    ids = torch.zeros(len(seqs), length, dtype=torch.long)  # [B, L], right padding
    labels = torch.full_like(ids, IGNORE_INDEX)  # [B, L]: the target predicted at each slot
    valid = torch.zeros_like(ids, dtype=torch.bool)
    for i, (seq, n_prefix) in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(seq)
        valid[i, : len(seq)] = True
        labels[i, max(n_prefix - 1, 0) : len(seq) - 1] = torch.tensor(seq[max(n_prefix, 1) :])
    logits = model(input_ids=ids.to(device), attention_mask=valid.long().to(device)).logits
    keep = labels != IGNORE_INDEX  # [B, L]
    sums = nll_from_logits(
        logits[keep.to(device)], labels[keep].to(device), keep.nonzero()[:, 0], len(seqs)
    )
    return list(zip(sums, keep.sum(dim=1).tolist(), strict=True))


@dataclass
class OLMRun:
    """What `vist2 eval olm` was asked to do."""

    model: str
    data: str
    out: str
    split: str = "heldout"
    prefix: int = 1024
    cont: int = 1024
    max_windows: int | None = None
    baseline: str | None = None
    batch_size: int = 4
    device: str = "cpu"
    dtype: torch.dtype | None = None
    progress: bool = True
    control: bool = False


@dataclass
class Tally:
    """Summed continuation NLL (nats), scored tokens and seconds of one reading."""

    nll: float = 0.0
    tokens: int = 0
    seconds: float = 0.0


def score_windows(
    model, tokenizer, windows: Sequence[Window], run: OLMRun, baseline, baseline_ids
) -> dict[str, Tally]:
    """Score the windows batch by batch under each policy (and the baseline), with a bar."""
    k, beta = model.config.chunk_tokens, model.config.visual_tokens_per_page
    renderer = PageRenderer(model.config.render_config)
    readings = POLICIES + (("blank",) if run.control else ())
    tallies = {r: Tally() for r in readings} | ({"baseline": Tally()} if baseline else {})
    bar = tqdm(total=len(windows), desc="olm", unit="window", disable=not run.progress)
    for i in range(0, len(windows), run.batch_size):
        batch = windows[i : i + run.batch_size]
        for reading in readings:
            policy = "global" if reading == "blank" else reading
            start, tally = time.perf_counter(), tallies[reading]
            laid = [window_layout(w, run.prefix, policy, tokenizer, k, beta) for w in batch]
            pages = [t for _, texts in laid for t in texts]
            if reading == "blank":
                pages = [""] * len(pages)  # an empty text renders as a blank page
            tally.nll += sum(score_batch(model, renderer, [lay for lay, _ in laid], pages))
            tally.tokens += sum(int((lay.labels != IGNORE_INDEX).sum()) for lay, _ in laid)
            tally.seconds += time.perf_counter() - start
        if baseline:
            start, tally = time.perf_counter(), tallies["baseline"]
            for nll, n in score_baseline(baseline, baseline_ids[i : i + run.batch_size]):
                tally.nll, tally.tokens = tally.nll + nll, tally.tokens + n
            tally.seconds += time.perf_counter() - start
        bar.update(len(batch))
    bar.close()
    return tallies


def run_olm(run: OLMRun) -> dict:
    """Score every window under `global` and `none` (and the baseline); write olm.json, olm.md."""
    from vist2.eval.data import describe_parts, read_eval_documents
    from vist2.eval.report import environment, write_json
    from vist2.loading import load_model

    with model_path(run.model) as path:
        model, tokenizer = load_model(path, dtype=run.dtype, device=run.device)
    config = model.config
    k, beta = config.chunk_tokens, config.visual_tokens_per_page
    check_olm_budget(config, run.prefix, run.cont)
    docs = read_eval_documents(run.data, run.split)
    windows = olm_windows(docs, tokenizer, run.prefix + run.cont, run.max_windows)
    if not windows:
        raise Vist2Error(
            f"{run.data}: no document in the {run.split!r} part holds --prefix {run.prefix} + "
            f"--continue {run.cont} tokens; shorten them"
        )
    baseline, baseline_ids, baseline_tokens = None, [], None
    if run.baseline:
        baseline, baseline_tokenizer = load_baseline(run.baseline, run.device, run.dtype)
        baseline_ids, baseline_tokens = baseline_sequences(
            tokenizer, baseline_tokenizer, windows, run.prefix
        )
    pairs = [
        (tokenizer.decode(w.token_ids[: run.prefix]), tokenizer.decode(w.token_ids[run.prefix :]))
        for w in windows
    ]
    tallies = score_windows(model, tokenizer, windows, run, baseline, baseline_ids)
    chars = sum(len(cont) for _, cont in pairs)
    results = {
        name: {
            "perplexity": perplexity(t.nll, t.tokens),
            "nll_per_token": t.nll / max(t.tokens, 1),
            "bits_per_character": t.nll / max(chars, 1) / math.log(2),
            "scored_tokens": t.tokens,
            "seconds": t.seconds,
        }
        for name, t in tallies.items()
    }
    report = {
        "command": "olm",
        "model": str(run.model),
        "baseline": run.baseline,
        "baseline_tokens": baseline_tokens,
        "chunk_tokens": k,
        "visual_tokens_per_page": beta,
        "compression_ratio": k / beta,
        "vocab_size": config.text_config.vocab_size,
        "prefix_tokens": run.prefix,
        "continue_tokens": run.cont,
        "windows": len(windows),
        "continuation_characters": chars,
        "split": run.split,
        "data": describe_parts(docs, run.split),
        "results": results,
        "ratio_global_over_none": results["global"]["perplexity"] / results["none"]["perplexity"],
        "gain_from_pages_nats_per_token": (
            results["blank"]["nll_per_token"] - results["global"]["nll_per_token"]
            if run.control
            else None
        ),
        "environment": environment(),
    }
    out = Path(run.out)
    write_json(out / "olm.json", report)
    (out / "olm.md").write_text(olm_markdown(report), encoding="utf-8")
    return report


def gain_lines(report: dict) -> list[str]:
    """The control's sentence: what the pages carry, in nats per continuation token."""
    gain = report.get("gain_from_pages_nats_per_token")
    if gain is None:
        return []
    return [
        "",
        f"Gain from the pages (blank - global): **{gain:.3f} nats per token** (0 = the model "
        "ignores its pages and writes from its chunk's own text).",
    ]


def olm_markdown(report: dict) -> str:
    from vist2.eval.report import data_lines, markdown_table

    what = {
        "global": "prefix as pages (OLM layout)",
        "none": "prefix as text",
        "blank": "prefix as blank pages (control): each chunk's own text only",
        "baseline": f"text-only model `{report['baseline']}`, {report['baseline_tokens']}",
    }
    rows = [
        [name, what[name], r["perplexity"], r["bits_per_character"], r["scored_tokens"]]
        for name, r in report["results"].items()
    ]
    header = ["reading", "context", "perplexity", "bits / character", "scored tokens"]
    return (
        "\n".join(
            [
                f"# Optical LM: `{report['model']}`",
                "",
                f"{report['windows']} windows of {report['prefix_tokens']} prefix + "
                f"{report['continue_tokens']} continuation tokens; K = {report['chunk_tokens']}, "
                f"β = {report['visual_tokens_per_page']} (r = {report['compression_ratio']:g}); "
                f"vocabulary {report['vocab_size']:,} (chance perplexity).",
                "",
                markdown_table(header, rows),
                "",
                f"Perplexity ratio global / none: **{report['ratio_global_over_none']:.3f}** "
                "(1.0 = pages keep everything text keeps).",
                *gain_lines(report),
                "",
                f"Data ({report['split']} part):",
                *data_lines(report["data"]),
            ]
        )
        + "\n"
    )
