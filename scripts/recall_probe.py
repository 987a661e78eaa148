"""How well a model recalls a key from its pages, teacher-forced, on held-out text.

Builds the OLM stage's recall samples (`vist2.training.recall`: a fact with a five-digit key on a
page, its question and answer later) from held-out spans, runs one forward pass of the training
layout and scores the answer's key tokens: how many samples get every key token right (argmax)
and the mean loss on them. A control swaps the key on the page for another one, the answer left
as it was: a model that reads the key off the page loses there; one that guesses does not.
The two kinds of sample are scored apart: the answer in the question's chunk, or beginning the
chunk after the question's page (as `vist2 eval needle` asks under `global`).

    python scripts/recall_probe.py /work/runs/r45-olm-recall-paged/model --samples 64
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import re

import torch

from vist2.engine import Engine
from vist2.errors import Vist2Error
from vist2.eval.data import read_eval_documents
from vist2.layout import collate_layouts
from vist2.training.config import recipe
from vist2.training.datasets import OLMDataset, SkipRecord, encode
from vist2.training.recall import FACTS, recall_ids


def find(ids: list[int], part: list[int]) -> int:
    """Where `part` starts in `ids` (-1 if nowhere)."""
    return next((i for i in range(len(ids) - len(part) + 1) if ids[i : i + len(part)] == part), -1)


def find_answer(ids: list[int], tokenizer) -> dict | None:
    """The answer's place, key and key tokens in a recall sample (None if it holds no question)."""
    enc = functools.partial(encode, tokenizer)
    for fact, question in FACTS:
        ask = enc(" " + question)
        at = find(ids, ask)
        found = re.match(r" (\d{5})\.", tokenizer.decode(ids[at + len(ask) :])) if at >= 0 else None
        if found:
            key = found.group(1)
            answer = enc(f" {key}.")
            digits = enc(f" {key}")
            scored = len(digits) if answer[: len(digits)] == digits else len(answer)
            return {"fact": fact, "key": key, "start": at + len(ask), "key_tokens": scored}
    return None


def swap_key(ids: list[int], sample: dict, enc, rng: random.Random) -> list[int] | None:
    """`ids` with the key in its fact replaced by another of the same token length."""
    old = enc(" " + sample["fact"].format(key=sample["key"]) + " ")
    at = find(ids, old)
    if at < 0:
        return None
    for _ in range(50):
        other = f"{rng.randrange(100_000):05d}"
        new = enc(" " + sample["fact"].format(key=other) + " ")
        if other != sample["key"] and len(new) == len(old):
            return ids[:at] + new + ids[at + len(old) :]
    return None


def score(engine: Engine, dataset: OLMDataset, ids: list[int], sample: dict) -> tuple[bool, float]:
    """(every key token right, mean loss on them) of one forward pass over `ids`' OLM layout."""
    example = dataset.olm_example(ids, "recall sample", None)
    layout, pages = example.layout, example.pages
    batch = collate_layouts([layout])
    text_slots = (~layout.visual).nonzero().flatten().tolist()  # slot of each text token
    wanted = range(sample["start"], sample["start"] + sample["key_tokens"])
    with torch.no_grad():
        out = engine.model(
            input_ids=batch["input_ids"],
            visual_mask=batch["visual_mask"],
            pages=pages,
            position_ids=batch["position_ids"],
            attention_mask=batch["attention_mask"],
        )
    logits = out.logits[0]  # [L, V]
    right, losses = True, []
    for i in wanted:  # a trained token is predicted by the slot just before it
        slot = text_slots[i] - 1
        if int(layout.labels[slot]) != ids[i]:
            raise Vist2Error(f"recall_probe.py: slot {slot} does not predict text token {i}")
        logp = torch.log_softmax(logits[slot].float(), -1)
        losses.append(-float(logp[ids[i]]))
        right &= int(logp.argmax()) == ids[i]
    return right, sum(losses) / len(losses)


def run(args: argparse.Namespace) -> dict:
    engine = Engine.from_pretrained(args.model)
    config = engine.model.config
    train = recipe("olm", "tiny").with_overrides({"max_length": args.max_length})
    dataset = OLMDataset(read_eval_documents(args.data, "heldout"), config, engine.tokenizer, train)
    enc = functools.partial(encode, engine.tokenizer)
    rng = random.Random(args.seed)
    tally: dict[str, dict[str, list]] = {}  # where the answer is -> variant -> scores
    scored = skipped = 0
    for unit in rng.sample(range(dataset.num_units), dataset.num_units):
        ids = recall_ids(dataset.span_ids(unit)[0], enc, config.chunk_tokens, rng)
        answer = find_answer(ids, engine.tokenizer) if ids else None
        swapped = swap_key(ids, answer, enc, rng) if answer else None
        if swapped is None:
            continue
        try:
            real = score(engine, dataset, ids, answer)
            other = score(engine, dataset, swapped, answer)
        except SkipRecord:  # a page too full to draw: the next span
            skipped += 1
            continue
        where = "next chunk" if answer["start"] % config.chunk_tokens == 0 else "same chunk"
        cell = tally.setdefault(where, {"real": [], "swapped": []})
        cell["real"].append(real)
        cell["swapped"].append(other)
        scored += 1
        if scored == args.samples:
            break
    if scored < args.samples:
        print(
            f"recall_probe.py: only {scored} of {args.samples} samples ({skipped} pages too full)"
        )
    return {"model": args.model, "skipped": skipped, **summarise(tally)}


def summarise(tally: dict[str, dict[str, list]]) -> dict:
    """Samples, and the share with every key token right and the mean loss on them, per place of
    the answer (same chunk / next chunk) and variant (real / swapped key on the page)."""
    return {
        "samples": {where: len(cell["real"]) for where, cell in tally.items()},
        "answer": {
            where: {
                variant: {
                    "key_right": sum(right for right, _ in scores) / len(scores),
                    "key_loss": sum(loss for _, loss in scores) / len(scores),
                }
                for variant, scores in cell.items()
            }
            for where, cell in tally.items()
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a model directory or name")
    p.add_argument("--data", default="../shared/corpora/en", help="a corpus folder (held-out part)")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--max-length", type=int, default=640, help="slots a sample (as in training)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the figures here as JSON")
    args = p.parse_args()
    try:
        result = run(args)
    except Vist2Error as err:  # a missing model or corpus: one line
        raise SystemExit(f"recall_probe.py: {err}") from None
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
