"""The pipeline can learn to read: render -> encode_pages -> aligner -> splice -> LLM -> loss.

A tiny model trained on pages showing one random digit in a large font must drive the loss on
real pages far below the loss on blank pages (a model that does not read cannot beat ln 10 on a
random digit). Uses scripts/ocr_sanity.py, the same check at any size.
"""

from __future__ import annotations

import math

import pytest
from train_helpers import load_script


@pytest.mark.slow
def test_tiny_model_learns_to_read_a_digit():
    sanity = load_script("ocr_sanity")
    args = sanity.parse_args(
        ["--tokens", "1", "--steps", "400", "--eval-every", "400", "--eval-samples", "64"]
        + ["--no-progress", "--seed", "0"]
    )
    rows = sanity.run(args)
    first, last = rows[0], rows[-1]
    # untrained: the page makes no difference yet
    assert abs(first["real"] - first["blank"]) < 0.1
    # trained: reads the digit; blank pages leave it guessing (or worse)
    assert last["real"] < 1.0 < math.log(10) < last["blank"], last
    assert last["real_acc"] > 0.9, last
