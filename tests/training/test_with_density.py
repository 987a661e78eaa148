"""scripts/with_density.py: one model's weights at another compression ratio (the start of each
run in the r = 2 / 4 / 8 sweep), its training record carried along."""

import json
import sys

import pytest
import torch
from conftest import tiny_config
from train_helpers import load_script, make_model_dir

from vist2.loading import load_model
from vist2.model import VIST2Model


def test_same_weights_new_k_and_ratio():
    script = load_script("with_density")
    torch.manual_seed(0)
    source = VIST2Model(tiny_config()).eval()
    beta = source.config.visual_tokens_per_page
    denser = script.with_density(source, 8 * beta)
    assert (denser.config.chunk_tokens, denser.config.compression_ratio) == (8 * beta, 8.0)
    assert denser.config.visual_tokens_per_page == beta
    mine, theirs = denser.state_dict(), source.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_main_writes_a_loadable_model_with_its_training_record(tmp_path, monkeypatch):
    script = load_script("with_density")
    source_dir, out = make_model_dir(tmp_path / "r4"), tmp_path / "r2"
    record = {"run": "/runs/ocr", "stage": "ocr", "step": 100, "started_from": None}
    (source_dir / "training.json").write_text(json.dumps(record))
    beta = load_model(source_dir)[0].config.visual_tokens_per_page
    argv = ["with_density.py", str(source_dir), "--page-tokens", str(2 * beta), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    model, _ = load_model(out)
    assert model.config.chunk_tokens == 2 * beta
    assert model.config.compression_ratio == 2.0
    carried = json.loads((out / "training.json").read_text())
    assert carried == record | {"converted": f"scripts/with_density.py --page-tokens {2 * beta}"}


def test_line_height_and_margin_change_the_pages_and_are_recorded(tmp_path, monkeypatch):
    script = load_script("with_density")
    source_dir, out = make_model_dir(tmp_path / "src"), tmp_path / "aligned"
    (source_dir / "training.json").write_text(json.dumps({"run": "/runs/olm", "step": 5}))
    source = load_model(source_dir)[0]
    k, page = source.config.chunk_tokens, source.config.render["page_height"]
    pitch = page // 4
    argv = ["with_density.py", str(source_dir), "--page-tokens", str(k)]
    argv += ["--line-height", str(pitch), "--margin", "0", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    model = load_model(out)[0]
    assert (model.config.render["line_height"], model.config.render["margin"]) == (pitch, 0)
    assert model.config.render_config.line_pitch(model.config.render_config.font_size) == pitch
    assert model.config.chunk_tokens == k
    unchanged = {
        f: v for f, v in source.config.render.items() if f not in ("line_height", "margin")
    }
    assert unchanged.items() <= model.config.render.items()
    converted = json.loads((out / "training.json").read_text())["converted"]
    assert (
        converted == f"scripts/with_density.py --page-tokens {k} --line-height {pitch} --margin 0"
    )


def test_a_pitch_taller_than_the_page_is_one_clear_line(tmp_path, monkeypatch):
    script = load_script("with_density")
    source_dir = make_model_dir(tmp_path / "src")
    source = load_model(source_dir)[0]
    k, page = source.config.chunk_tokens, source.config.render["page_height"]
    argv = ["with_density.py", str(source_dir), "--page-tokens", str(k)]
    argv += ["--line-height", str(page + 1), "--out", str(tmp_path / "o")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="with_density.py: .*line_height"):
        script.main()
    assert not (tmp_path / "o").exists()


def test_a_bad_k_or_a_missing_model_is_one_clear_line(tmp_path, monkeypatch):
    script = load_script("with_density")
    source_dir = make_model_dir(tmp_path / "r4")
    for model, k, says in (
        (source_dir, "0", "chunk_tokens"),
        (tmp_path / "nope", "32", "not exist"),
    ):
        argv = ["with_density.py", str(model), "--page-tokens", k, "--out", str(tmp_path / "o")]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit, match=f"with_density.py: .*{says}"):
            script.main()
    assert not (tmp_path / "o").exists()  # nothing half-written
