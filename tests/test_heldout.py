"""The held-out rule: train and held-out parts are disjoint, cover the file, and follow lines."""

import json

import pytest

from vist2.errors import ConfigError
from vist2.heldout import heldout_start, record_in_split, split_text
from vist2.training.problems import ProblemLog
from vist2.training.sources import read_documents


def test_text_parts_are_disjoint_cover_the_text_and_cut_at_a_line():
    text = "".join(f"line {i}\n" for i in range(200))
    train, held = split_text(text, "train"), split_text(text, "heldout")
    assert train + held == text == split_text(text, "all")
    assert train.endswith("\n") and held.startswith("line ")
    assert 0.08 < len(held) / len(text) <= 0.1


def test_short_text_is_all_train():
    assert heldout_start("one line, no break") == len("one line, no break")
    assert split_text("one line, no break", "heldout") == ""


def test_jsonl_records_every_tenth_is_held_out():
    held = [n for n in range(1, 31) if record_in_split(n, "heldout")]
    assert held == [10, 20, 30]
    assert not any(record_in_split(n, "train") for n in held)


def test_read_documents_skips_the_held_out_part_by_default(tmp_path):
    text = "".join(f"sentence number {i}.\n" for i in range(100))
    (tmp_path / "book.txt").write_text(text)
    (tmp_path / "docs.jsonl").write_text(
        "".join(json.dumps({"text": f"record {i}"}) + "\n" for i in range(1, 21))
    )
    train = read_documents(tmp_path, ProblemLog(10))
    held = read_documents(tmp_path, ProblemLog(10), split="heldout")
    train_text = {d.text for d in train}
    held_text = {d.text for d in held}
    assert "record 10" in held_text and "record 10" not in train_text
    book_train = next(d.text for d in train if d.line is None)
    book_held = next(d.text for d in held if d.line is None)
    assert book_train + book_held == text


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ConfigError, match="split must be one of"):
        split_text("x", "test")
