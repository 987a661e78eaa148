"""scripts/windowed_from.py: a page-wide model's weights in a windowed config (step 5 of the
shipped vist2-small's training chain), its training record carried along."""

import json
import sys

import torch
from conftest import tiny_config
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
