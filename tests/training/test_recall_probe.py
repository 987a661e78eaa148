"""scripts/recall_probe.py: finding a recall sample's key, swapping it on the page, scoring it."""

import argparse
import functools
import random
import sys

import pytest
from train_helpers import english_text, load_script, make_model_dir, write_corpus

from vist2.training.datasets import encode
from vist2.training.recall import recall_ids

K = 8


def test_the_key_and_its_answer_are_found_and_swapped_on_the_page_only(tiny_tokenizer):
    script = load_script("recall_probe")
    enc = functools.partial(encode, tiny_tokenizer)
    filler = enc(english_text(3_000))[:120]
    for seed in range(10):
        ids = recall_ids(filler, enc, K, random.Random(seed))
        sample = script.find_answer(ids, tiny_tokenizer)
        start, key = sample["start"], sample["key"]
        assert ids[start : start + sample["key_tokens"]] == enc(f" {key}")[: sample["key_tokens"]]
        swapped = script.swap_key(ids, sample, enc, random.Random(seed))
        assert len(swapped) == len(ids) and swapped[start:] == ids[start:]  # the answer stays
        assert key not in tiny_tokenizer.decode(swapped[:start])  # the page has another key
    assert script.find_answer(filler, tiny_tokenizer) is None
    assert script.swap_key(filler, sample, enc, random.Random(0)) is None  # no fact to swap


def test_scores_each_kind_of_sample_on_a_tiny_model(tmp_path):
    script = load_script("recall_probe")
    args = argparse.Namespace(
        model=str(make_model_dir(tmp_path / "model")),
        data=str(write_corpus(tmp_path / "corpus", chars=20_000)),
        samples=8,
        max_length=200,
        seed=0,
    )
    result = script.run(args)
    assert sum(result["samples"].values()) == 8
    assert set(result["answer"]) <= {"same chunk", "next chunk"}
    for cell in result["answer"].values():
        for page in ("real", "swapped"):
            assert 0 <= cell[page]["key_right"] <= 1 and cell[page]["key_loss"] > 0


def test_a_missing_model_is_one_clear_line(tmp_path, monkeypatch):
    script = load_script("recall_probe")
    monkeypatch.setattr(sys, "argv", ["recall_probe.py", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="recall_probe.py: .*does not exist"):
        script.main()
