"""scripts/line_shift_probe.py: the same text drawn one line lower, and where a line sits in the
encoder's cells."""

import sys

import pytest
from train_helpers import load_script

from vist2.render import PageRenderer, RenderConfig

PITCH16 = RenderConfig(page_width=128, page_height=128, font_size=12, line_height=16, margin=0)


def test_a_short_text_moves_exactly_one_line_down():
    script = load_script("line_shift_probe")
    renderer = PageRenderer(PITCH16)
    assert script.moves_one_line_down(renderer, "It was the best of times.\nIt was the", 16)
    assert not script.moves_one_line_down(renderer, "", 16)  # nothing drawn: nothing to compare


def test_a_page_that_would_reflow_or_shrink_is_left_out():
    script = load_script("line_shift_probe")
    renderer = PageRenderer(PITCH16)
    full = "\n".join(["word"] * 8)  # eight lines fill the page: a ninth makes the font shrink
    assert not script.moves_one_line_down(renderer, full, 16)


def test_place_in_cell_counts_lines_from_the_top_of_each_row_of_cells():
    script = load_script("line_shift_probe")
    assert [script.place_in_cell(k, 16, 32) for k in range(6)] == [0, 1, 0, 1, 0, 1]
    assert [script.place_in_cell(k, 8, 32) for k in range(5)] == [0, 1, 2, 3, 0]


def test_a_missing_model_is_one_clear_line(tmp_path, monkeypatch):
    for name in ("line_shift_probe", "cell_probe"):
        script = load_script(name)
        monkeypatch.setattr(sys, "argv", [f"{name}.py", str(tmp_path / "nope")])
        with pytest.raises(SystemExit, match=f"{name}.py: .*does not exist"):
            script.main()
