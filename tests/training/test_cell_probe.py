"""scripts/cell_probe.py: which letters are drawn on each line of each cell, and the share of
their uncertainty a probe removes."""

import torch
from conftest import tiny_config
from train_helpers import load_script

from vist2.model import VIST2Model
from vist2.render import PageRenderer, RenderConfig

PITCH16 = RenderConfig(page_width=128, page_height=128, font_size=12, line_height=16, margin=0)


def test_letters_land_in_their_cell_and_line():
    script = load_script("cell_probe")
    renderer = PageRenderer(PITCH16)
    targets = script.cell_targets(renderer, "ab\ncd\n\nxy", (32, 32), 16, (4, 4))  # (16, 2, 26)
    assert targets.shape == (16, 2, 26)
    on = {(cell, line, script.LETTERS[k]) for cell, line, k in zip(*targets.nonzero(), strict=True)}
    # line 1 and 2 of the page: cell 0, its top and second line; line 4: cell 4 (row 1), line 1
    assert on == {(0, 0, "a"), (0, 0, "b"), (0, 1, "c"), (0, 1, "d"), (4, 1, "x"), (4, 1, "y")}


def test_rectangular_cells_hold_one_line_each():
    script = load_script("cell_probe")
    renderer = PageRenderer(PITCH16)
    # 16 x 64 px cells: 8 rows of 2; page lines 1, 2, 4 land in rows 0, 1, 3 (left cell)
    targets = script.cell_targets(renderer, "ab\ncd\n\nxy", (16, 64), 16, (8, 2))
    assert targets.shape == (16, 1, 26)
    on = {(cell, line, script.LETTERS[k]) for cell, line, k in zip(*targets.nonzero(), strict=True)}
    assert on == {(0, 0, "a"), (0, 0, "b"), (2, 0, "c"), (2, 0, "d"), (6, 0, "x"), (6, 0, "y")}


def test_a_probe_that_knows_the_letters_explains_them_and_a_blind_one_does_not():
    script = load_script("cell_probe")
    torch.manual_seed(0)
    y = (torch.rand(2000, 2, 26) < 0.15).float()  # (cells, lines, letters)
    prior = y.mean(0, keepdim=True)
    seeing = torch.cat([y[:, 0], torch.zeros(2000, 26)], 1)  # line 0's letters, nothing of line 1
    for hidden, steps, floor in ((512, 400, 0.8), (0, 3000, 0.6)):  # MLP; linear (slower)
        probe = script.fit_probe(seeing[:1500], y[:1500], steps=steps, seed=0, hidden=hidden)
        top, second = script.explained(probe, seeing[1500:], y[1500:], prior)
        assert top > floor
        assert abs(second) < 0.1


def test_encoder_features_are_the_patches_each_token_is_merged_from():
    script = load_script("cell_probe")
    torch.manual_seed(0)
    model = VIST2Model(tiny_config()).eval()
    caught = script.EncoderFeatures(model.aligner)
    pages = torch.rand(2, model.config.render["page_height"], model.config.render["page_width"])
    with torch.no_grad():
        tokens = model.encode_pages(pages * 2 - 1)  # [2, β, D_text]
    caught.handle.remove()
    (mr, mc), width = model.config.merge_shape, model.config.vision_config.hidden_size
    assert caught.last.shape == (2, tokens.shape[1], mr * mc * width)
    with torch.no_grad():  # the aligner's own input, merged: what makes the tokens
        made = model.aligner.proj(caught.last)
    if model.config.aligner == "tanh":
        made = torch.tanh(made)
    assert torch.allclose(made, tokens, atol=1e-6)
