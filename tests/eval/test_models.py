"""`vist2.eval.models`: a run's checkpoint is evaluated with the config and tokenizer of the
model the run started from."""

import json
import shutil

import eval_helpers
import pytest
import torch
from eval_helpers import single_thread  # noqa: F401 -- autouse: one torch thread

from vist2.errors import Vist2Error
from vist2.eval.models import model_path
from vist2.loading import load_model

model_dir = eval_helpers.model_dir  # fixture


def test_a_checkpoint_loads_with_the_start_model_config(model_dir, tmp_path):
    run = tmp_path / "run"
    step = run / "checkpoints" / "step-00000010"
    step.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"stage": "ocr", "model": str(model_dir)}))
    (step / "checkpoint.json").write_text(json.dumps({"step": 10}))
    trained, _ = load_model(model_dir)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)  # weights that differ from the start model's
    trained.save_pretrained(str(tmp_path / "trained"))
    shutil.copy(tmp_path / "trained" / "model.safetensors", step / "model.safetensors")
    with model_path(step) as path:
        model, tokenizer = load_model(path)
    assert len(tokenizer) > 0
    for a, b in zip(model.parameters(), trained.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_checkpoint_outside_a_run_is_an_error(tmp_path):
    step = tmp_path / "step-00000010"
    step.mkdir()
    (step / "checkpoint.json").write_text("{}")
    with pytest.raises(Vist2Error, match="outside a run directory"), model_path(step):
        pass
