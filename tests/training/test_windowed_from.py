"""scripts/windowed_from.py: a page-wide model's weights in a windowed config (step 5 of the
shipped vist2-small's training chain), its training record carried along."""

import json
import sys

import pytest
import torch
from conftest import tiny_config, windowed_config
from train_helpers import load_script, make_model_dir

from vist2.loading import load_model
from vist2.model import VIST2Model


def test_keeps_the_weights_and_crops_the_position_table():
    script = load_script("windowed_from")
    torch.manual_seed(0)
    source = VIST2Model(tiny_config()).eval()  # 64 px page, patch 16: a 4 x 4 patch grid
    windowed = script.windowed_from(source, 32)  # 32 px windows: 2 x 2 patches each
    assert windowed.config.vision_window == 32
    assert windowed.config.vision_config.image_size == 32
    for name in ("language_model", "aligner"):
        mine, theirs = getattr(windowed, name).state_dict(), getattr(source, name).state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), name
    table = source.vision_model.state_dict()[script.POSITIONS]  # [16, D]
    cropped = windowed.vision_model.state_dict()[script.POSITIONS]  # [4, D]
    assert torch.equal(cropped, table[[0, 1, 4, 5]])  # the top-left 2 x 2 block of the grid


def test_main_writes_a_loadable_model_with_its_training_record(tmp_path, monkeypatch):
    script = load_script("windowed_from")
    source_dir, out = make_model_dir(tmp_path / "page-wide"), tmp_path / "windowed"
    record = {"run": "/runs/olm", "stage": "olm", "step": 600, "started_from": None}
    (source_dir / "training.json").write_text(json.dumps(record))
    argv = ["windowed_from.py", str(source_dir), "--window", "32", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    model, _ = load_model(out)
    assert model.config.vision_window == 32
    carried = json.loads((out / "training.json").read_text())
    assert carried == record | {"converted": "scripts/windowed_from.py --window 32"}


def test_square_windows_become_strips_with_the_same_table():
    script = load_script("windowed_from")
    torch.manual_seed(0)
    source = VIST2Model(windowed_config()).eval()  # 32 px windows: 2 x 2 patches, merge 2 x 2
    strips = script.windowed_from(source, [16, 64], [1, 4])  # 1 x 4 patches, one token a strip
    assert strips.config.window_shape == (16, 64) and strips.config.merge_shape == (1, 4)
    assert strips.config.vision_config.image_size == 32  # the square with as many patches
    mine, theirs = strips.state_dict(), source.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)  # every weight, table included
    tokens = strips.encode_pages(torch.rand(2, 64, 64) * 2 - 1)
    assert tokens.shape == (2, 4, source.config.text_config.hidden_size)


def test_main_takes_rectangles_and_refuses_a_window_siglip_cannot_hold(tmp_path, monkeypatch):
    script = load_script("windowed_from")
    source_dir, out = make_model_dir(tmp_path / "page-wide"), tmp_path / "strips"
    record = {"run": "/runs/olm", "stage": "olm", "converted": "scripts/with_density.py --margin 0"}
    (source_dir / "training.json").write_text(json.dumps(record))
    argv = ["windowed_from.py", str(source_dir), "--window", "16x64", "--merge", "1x4"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    script.main()
    model, _ = load_model(out)
    source, _ = load_model(source_dir)
    assert model.config.window_shape == (16, 64)
    table = source.vision_model.state_dict()[script.POSITIONS]  # [16, D]: the page's 4 x 4
    kept = model.vision_model.state_dict()[script.POSITIONS]  # [4, D]: the top row of it
    assert torch.equal(kept, table[:4])
    assert json.loads((out / "training.json").read_text())["converted"] == (
        "scripts/with_density.py --margin 0; then scripts/windowed_from.py --window 16x64 --merge 1x4"
    )  # both conversions since the last training run, in order
    argv = ["windowed_from.py", str(source_dir), "--window", "16x32", "--merge", "1x2"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit, match="square number of 16 px patches"):
        script.main()
    assert not (tmp_path / "bad").exists()
