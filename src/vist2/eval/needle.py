"""`vist2 eval needle`: can the model find one fact buried in a long (compressed) context?

The classic passkey test: a filler text of `length` tokens holds, at depth d (0 = start,
1 = end), the sentence "The pass key is 12345. Remember it. 12345 is the pass key."; the prompt
ends with "What is the pass key? The pass key is" and the model answers greedily. An answer is
correct when the first number it writes is the key. Keys are random 5-digit numbers (chance
1e-5). Each (length, depth) cell is asked `trials` times per policy (`global`, `prompt`, `none`:
the same model through the same engine), in batches.

The filler is a fixed set of plain sentences, or, with `--data`, the held-out text of the given
files, cut into sentences. The answer scorer is shared with the tests' ground-truth anchor: an
answerer that returns the key scores 100 % in every cell.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vist2.engine import Engine, GenerationConfig, last_position_offset
from vist2.errors import Vist2Error
from vist2.layout import build_layout

FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
)
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is"
ANSWER_TOKENS = 8  # greedy tokens generated for the answer

Answerer = Callable[[list[str], str, list[str]], list[str]]  # (prompts, policy, keys) -> answers


def sentences_of(text: str) -> list[str]:
    """`text` cut after sentence ends and line breaks; pieces keep their trailing space."""
    pieces = re.split(r"(?<=[.!?。！？\n])", text)
    return [p for p in pieces if p.strip()]


def is_correct(key: str, answer: str) -> bool:
    """The first number in `answer` is `key`."""
    found = re.search(r"\d+", answer)
    return found is not None and found.group() == key


class PromptBuilder:
    """Prompts of about `length` tokens with the needle at a depth (token counts cached)."""

    def __init__(self, tokenizer, sentences: Sequence[str]) -> None:
        if not sentences:
            raise Vist2Error("the needle filler is empty")
        self.tokenizer = tokenizer
        self.sentences = list(sentences)
        self._count: dict[str, int] = {}

    def tokens(self, text: str) -> int:
        if text not in self._count:
            self._count[text] = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._count[text]

    def build(self, length: int, depth: float, key: str) -> str:
        needle = NEEDLE.format(key=key)
        budget = length - self.tokens(needle) - self.tokens(QUESTION)
        chosen: list[str] = []
        used = 0
        while True:
            sentence = self.sentences[len(chosen) % len(self.sentences)]
            if used + self.tokens(sentence) > budget:
                break
            chosen.append(sentence)
            used += self.tokens(sentence)
        cut = round(depth * len(chosen))
        text = "".join(chosen[:cut]) + needle + "".join(chosen[cut:])
        return text.rstrip() + " " + QUESTION


def engine_answerer(engine: Engine, batch_size: int) -> Answerer:
    """Greedy answers from the engine under each policy, `batch_size` prompts at a time."""

    def answer(prompts: list[str], policy: str, keys: list[str]) -> list[str]:
        config = GenerationConfig(policy=policy, max_new_tokens=ANSWER_TOKENS, temperature=0.0)
        out: list[str] = []
        for i in range(0, len(prompts), batch_size):
            results = engine.generate(prompts[i : i + batch_size], config)
            out += [r.text for r in results]
        return out

    return answer


def oracle_answerer(prompts: list[str], policy: str, keys: list[str]) -> list[str]:
    """Answers every prompt right: the ground-truth anchor of the scoring path."""
    return [f" {key}." for key in keys]


def check_needle_budget(engine: Engine, prompt: str, policy: str) -> None:
    """The longest prompt plus its answer must fit the LLM's positions under `policy`."""
    budget = getattr(engine.config.text_config, "max_position_embeddings", None)
    if budget is None:
        return
    config = GenerationConfig(policy=policy, max_new_tokens=ANSWER_TOKENS)
    segments, _, n_tokens = engine.prompt_segments(prompt, config)
    layout = build_layout(segments, engine.beta)
    start = int(layout.position_ids[-1]) + 1
    last = start + last_position_offset(ANSWER_TOKENS, policy, engine.chunk_tokens, engine.beta)
    if last >= budget:
        raise Vist2Error(
            f"a needle prompt of {n_tokens} tokens under policy {policy!r} reaches position "
            f"{last}, past the model's max_position_embeddings ({budget}); use shorter --lengths"
        )


@dataclass
class NeedleRun:
    """What `vist2 eval needle` was asked to do."""

    model: str
    out: str
    data: str | None = None
    split: str = "heldout"
    lengths: tuple[int, ...] = (512, 1024, 2048)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    trials: int = 5
    policies: tuple[str, ...] = ("global", "prompt", "none")
    seed: int = 0
    batch_size: int = 8
    device: str = "cpu"
    dtype: torch.dtype | None = None
    progress: bool = True


def needle_cells(run: NeedleRun, builder: PromptBuilder) -> list[dict]:
    """Every (length, depth) cell with its keys and prompts (the same for every policy)."""
    cells = []
    for length in run.lengths:
        for depth in run.depths:
            rng = random.Random(f"{run.seed}/{length}/{depth}")
            keys = [str(rng.randrange(10_000, 100_000)) for _ in range(run.trials)]
            prompts = [builder.build(length, depth, key) for key in keys]
            cells.append({"length": length, "depth": depth, "keys": keys, "prompts": prompts})
    return cells


def run_needle(run: NeedleRun, answerer: Answerer | None = None) -> dict:
    """Ask every cell under every policy; write needle.json, needle.md, needle.png."""
    from vist2.engine import POLICIES
    from vist2.eval.data import describe_parts, read_eval_documents
    from vist2.eval.report import environment, heatmap_png, write_json

    bad = [p for p in run.policies if p not in POLICIES]
    if bad:
        raise Vist2Error(f"unknown policy {bad[0]!r}; use {', '.join(POLICIES)}")
    engine = Engine.from_pretrained(run.model, dtype=run.dtype, device=run.device)
    docs = read_eval_documents(run.data, run.split) if run.data else []
    filler = sentences_of("".join(d.text for d in docs)) if docs else sentences_of(FILLER)
    builder = PromptBuilder(engine.tokenizer, filler)
    cells = needle_cells(run, builder)
    longest = max(cells, key=lambda c: c["length"])["prompts"][0]
    for policy in run.policies:
        check_needle_budget(engine, longest, policy)
    answer = answerer or engine_answerer(engine, run.batch_size)
    bar = tqdm(
        total=len(cells) * len(run.policies), desc="needle", unit="cell", disable=not run.progress
    )
    grids: dict[str, list[list[float]]] = {}
    records = []
    seconds: dict[str, float] = {}
    for policy in run.policies:
        start = time.perf_counter()
        accuracy = []
        for cell in cells:
            answers = answer(cell["prompts"], policy, cell["keys"])
            right = [is_correct(k, a) for k, a in zip(cell["keys"], answers, strict=True)]
            accuracy.append(sum(right) / len(right))
            records.append(
                {
                    "policy": policy,
                    "length": cell["length"],
                    "depth": cell["depth"],
                    "accuracy": accuracy[-1],
                    "keys": cell["keys"],
                    "answers": answers,
                }
            )
            bar.update(1)
        n_depths = len(run.depths)
        grids[policy] = [accuracy[i : i + n_depths] for i in range(0, len(accuracy), n_depths)]
        seconds[policy] = time.perf_counter() - start
    bar.close()
    prompt_tokens = {
        str(length): builder.tokens(next(c for c in cells if c["length"] == length)["prompts"][0])
        for length in run.lengths
    }
    report = {
        "command": "needle",
        "model": str(run.model),
        "answerer": "engine (greedy)"
        if answerer is None
        else getattr(answerer, "__name__", "custom"),
        "chunk_tokens": engine.chunk_tokens,
        "visual_tokens_per_page": engine.beta,
        "lengths": list(run.lengths),
        "prompt_tokens": prompt_tokens,
        "depths": list(run.depths),
        "trials": run.trials,
        "chance": 1e-5,
        "filler": "held-out text" if docs else "fixed sentences (FILLER)",
        "split": run.split if docs else None,
        "data": describe_parts(docs, run.split) if docs else [],
        "accuracy": grids,
        "mean_accuracy": {p: sum(map(sum, g)) / (len(g) * len(g[0])) for p, g in grids.items()},
        "seconds": seconds,
        "cells": records,
        "environment": environment(),
    }
    out = Path(run.out)
    write_json(out / "needle.json", report)
    heatmap_png(
        grids,
        run.lengths,
        run.depths,
        f"passkey retrieval: {Path(run.model).name}",
        out / "needle.png",
    )
    (out / "needle.md").write_text(needle_markdown(report), encoding="utf-8")
    return report


def needle_markdown(report: dict) -> str:
    from vist2.eval.report import data_lines, markdown_table, pct

    lines = [
        f"# Needle (passkey): `{report['model']}`",
        "",
        f"K = {report['chunk_tokens']}, β = {report['visual_tokens_per_page']}; "
        f"{report['trials']} keys per cell; filler: {report['filler']}; answerer: "
        f"{report['answerer']}; chance {report['chance']:g}.",
        "",
        markdown_table(
            ["policy", "mean accuracy"],
            [[p, pct(a)] for p, a in report["mean_accuracy"].items()],
        ),
        "",
        "![accuracy per length and depth](needle.png)",
    ]
    header = ["context tokens"] + [f"depth {d:g}" for d in report["depths"]]
    for policy, grid in report["accuracy"].items():
        rows = [
            [f"{length} ({report['prompt_tokens'][str(length)]})"] + [pct(v) for v in row]
            for length, row in zip(report["lengths"], grid, strict=True)
        ]
        lines += ["", f"## {policy}", "", markdown_table(header, rows)]
    if report["data"]:
        lines += ["", f"Filler data ({report['split']} part):", *data_lines(report["data"])]
    return "\n".join(lines) + "\n"
