"""Recall samples: a fact on a page, its question and key at the end, the length kept."""

import functools
import random
import re

import pytest
from train_helpers import english_text

from vist2.training.datasets import encode
from vist2.training.recall import FACTS, recall_ids

K = 32


@pytest.fixture(scope="module")
def enc(tiny_tokenizer):
    return functools.partial(encode, tiny_tokenizer)


def contains(ids: list[int], part: list[int]) -> bool:
    return any(ids[i : i + len(part)] == part for i in range(len(ids) - len(part) + 1))


def find(ids: list[int], part: list[int]) -> int:
    return next(i for i in range(len(ids) - len(part) + 1) if ids[i : i + len(part)] == part)


def test_the_fact_is_on_a_page_before_the_chunk_of_its_answer(enc, tiny_tokenizer):
    filler = enc(english_text(3_000))[:300]
    templates, answer_ends = set(), []
    for seed in range(40):
        ids = recall_ids(filler, enc, K, random.Random(seed))
        assert len(ids) == len(filler)
        fact, question = next(((f, q) for f, q in FACTS if contains(ids, enc(f" {q}"))), (0, 0))
        assert fact, "no question of FACTS in the sample"
        templates.add(fact)
        ask = enc(f" {question}")
        answer_start = find(ids, ask) + len(ask)
        key = re.match(r" (\d{5})\.", tiny_tokenizer.decode(ids[answer_start:])).group(1)
        answer = enc(f" {key}.")
        assert ids[answer_start : answer_start + len(answer)] == answer
        fact_ids = enc(f" {fact.format(key=key)} ")
        at = find(ids, fact_ids)
        assert at // K == (at + len(fact_ids) - 1) // K < answer_start // K  # on one page
        rest = ids[:at] + ids[at + len(fact_ids) : answer_start - len(ask)]
        rest += ids[answer_start + len(answer) :]
        assert rest == filler[: len(rest)]  # the filler, in order, with nothing else
        if answer_start + len(answer) == len(ids):
            answer_ends.append("sample")
        else:  # the question ends a page, the answer begins the next chunk, filler follows
            assert answer_start % K == 0
            answer_ends.append("chunk")
    assert len(templates) > 1
    assert 0 < answer_ends.count("chunk") < len(answer_ends)


def test_a_span_too_short_for_a_page_before_the_answer_is_left_alone(enc):
    filler = enc(english_text(400))[:20]
    assert all(recall_ids(filler, enc, K, random.Random(s)) is None for s in range(10))


def test_a_fact_longer_than_a_page_still_ends_before_the_answers_chunk(enc, tiny_tokenizer):
    k = 8  # every fact is longer than a page here: it may cross pages, never into the answer's
    filler = enc(english_text(3_000))[:120]
    for seed in range(20):
        ids = recall_ids(filler, enc, k, random.Random(seed))
        fact, question = next((f, q) for f, q in FACTS if contains(ids, enc(f" {q}")))
        ask = enc(f" {question}")
        answer_start = find(ids, ask) + len(ask)
        key = re.match(r" (\d{5})\.", tiny_tokenizer.decode(ids[answer_start:])).group(1)
        fact_ids = enc(f" {fact.format(key=key)} ")
        assert len(fact_ids) > k
        assert (find(ids, fact_ids) + len(fact_ids) - 1) // k < answer_start // k
