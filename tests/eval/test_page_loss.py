"""`vist2.eval.page_loss`: which line each token is drawn on, and the page gain line by line."""

import eval_helpers
import numpy as np
import pytest
from eval_helpers import single_thread  # noqa: F401 -- autouse: one torch thread

from vist2.chunker import decode_pieces
from vist2.engine import Engine
from vist2.eval.page_loss import page_gain, token_lines
from vist2.loading import load_model, load_tokenizer, tiny_tokenizer_path
from vist2.render import PageRenderer, RenderConfig

model_dir = eval_helpers.model_dir  # fixture


def drawn_line(pieces: list[str], i: int) -> int | None:
    """Independent oracle: the line of token i's first non-space character, counted by the
    newlines before it in the text (the page is wide enough that nothing wraps)."""
    before = "".join(pieces[:i])
    for offset, ch in enumerate(pieces[i]):
        if not ch.isspace():
            return (before + pieces[i][:offset]).count("\n")
    return None


class Page:
    """A held-out page as the measures read it: its text, token ids and language."""

    language = "en"

    def __init__(self, text: str, tokenizer) -> None:
        self.text = text
        self.token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]


def two_pages(tokenizer) -> list[Page]:
    return [
        Page("a cat sat on the mat today", tokenizer),
        Page("it rained all day long", tokenizer),
    ]


def test_tokens_are_placed_on_the_lines_their_characters_are_drawn_on():
    tokenizer = load_tokenizer(tiny_tokenizer_path())
    renderer = PageRenderer(RenderConfig(page_width=512, page_height=128, font_size=12))
    text = "The whale\nwas white and\n\nvery large indeed"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = decode_pieces(tokenizer, [[t] for t in ids])
    lines = token_lines(renderer, tokenizer, ids)
    assert lines.shape == (len(ids),)
    assert (np.diff(lines) >= 0).all()  # reading order runs down the page
    assert lines[0] == 0 and lines[-1] == 3  # the blank line is a line of its own
    for i in range(len(ids)):
        want = drawn_line(pieces, i)
        if want is not None:
            assert lines[i] == want, (pieces[i], lines[i], want)


def test_a_page_that_wraps_spreads_its_tokens_over_lines():
    tokenizer = load_tokenizer(tiny_tokenizer_path())
    renderer = PageRenderer(RenderConfig(page_width=96, page_height=96, font_size=12))
    ids = tokenizer("one two three four five six seven", add_special_tokens=False)["input_ids"]
    lines = token_lines(renderer, tokenizer, ids)
    assert lines[0] == 0 and lines[-1] >= 2 and (np.diff(lines) >= 0).all()


def test_the_gain_by_line_adds_up_to_the_page_gain(model_dir):
    model, tokenizer = load_model(model_dir)
    engine = Engine(model, tokenizer)

    pages = two_pages(tokenizer)
    gain = page_gain(model, engine, pages)["en"]
    rows = gain["by_line"]
    assert len(rows) >= 2 and sum(r["tokens"] for r in rows) == gain["tokens"]
    mean = sum(r["gain_nats"] * r["tokens"] for r in rows) / gain["tokens"]
    assert mean == pytest.approx(gain["gain_nats"], abs=1e-5)


def test_teacher_forced_hits_match_greedy_reading_up_to_its_first_mistake(model_dir):
    from vist2.eval.ocr import GreedyReader
    from vist2.eval.page_loss import page_token_scores

    model, tokenizer = load_model(model_dir)
    reader = GreedyReader(model, tokenizer)

    pages = two_pages(tokenizer)
    scores = page_token_scores(model, reader.engine, pages, blank=False)
    for page, read, (nll, hit) in zip(pages, reader(pages), scores, strict=True):
        assert nll.shape == hit.shape == (len(page.token_ids),)
        # until greedy reading first goes wrong it was given the page's own text, as teacher
        # forcing is: there, and at that first mistake, a hit is a token greedy read right
        right = [a == b for a, b in zip(read, page.token_ids, strict=True)]
        first_wrong = right.index(False) if False in right else len(right) - 1
        assert hit[: first_wrong + 1].tolist() == right[: first_wrong + 1]
    gain = page_gain(model, reader.engine, pages)["en"]
    hits = [bool(h) for _, hit in scores for h in hit]
    assert gain["real_teacher_forced_accuracy"] == pytest.approx(sum(hits) / len(hits))
    assert 0.0 <= gain["blank_teacher_forced_accuracy"] <= 1.0
