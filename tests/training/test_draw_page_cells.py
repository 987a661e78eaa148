"""scripts/draw_page_cells.py: the encoder's cells, square or rectangular, drawn over pages."""

import argparse

import pytest
from PIL import Image
from train_helpers import load_script


def test_cells_parse_as_square_or_rectangle():
    script = load_script("draw_page_cells")
    assert script.parse_cell("32") == (32, 32)
    assert script.parse_cell("16x64") == (16, 64)
    for bad in ("0", "16x", "a", "1x2x3"):
        with pytest.raises(argparse.ArgumentTypeError, match="N or HxW"):
            script.parse_cell(bad)


def test_rectangular_cells_draw_lines_where_they_end(tmp_path):
    script = load_script("draw_page_cells")
    Image.new("L", (128, 128), 255).save(tmp_path / "page.png")
    page = str(tmp_path / "page.png")
    figure = script.page_cells_figure([page, page], ["square", "strips"], [(32, 32), (16, 64)])
    s, top = script.SCALE, script.TITLE_HEIGHT
    second = 128 * s + script.GAP  # x of the second page

    def red(x, y):
        return figure.getpixel((x, y)) == (220, 60, 60)

    # square cells: a line at 32 px down and across; strips: at 16 px down, at 64 px across only
    assert red(5, top + 32 * s) and red(32 * s, top + 5) and not red(5, top + 16 * s)
    assert red(second + 5, top + 16 * s) and red(second + 64 * s, top + 5)
    assert not red(second + 32 * s, top + 5)
