"""A device out-of-memory in training: one clear error naming the step, the shape and the settings
to lower; the last checkpoint intact; resuming with a smaller micro-batch gives the same run."""

import pytest
import torch
from train_helpers import (
    make_model_dir,
    single_thread,  # noqa: F401 -- autouse: one torch thread
    tiny_train_config,
    weights,
    write_corpus,
)

from vist2.cli import main
from vist2.model import VIST2Model
from vist2.training.checkpoint import CheckpointManager
from vist2.training.trainer import TrainingOutOfMemoryError, train


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return str(write_corpus(tmp_path_factory.mktemp("data") / "corpus"))


def oom_from_call(monkeypatch, first_bad_call: int):
    """Patch VIST2Model.forward to raise torch.OutOfMemoryError from its `first_bad_call`-th call."""
    real_forward = VIST2Model.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= first_bad_call:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.64 GiB")
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(VIST2Model, "forward", forward)
    return real_forward


def test_oom_names_step_shape_and_settings_and_keeps_the_checkpoint(
    model_dir, corpus, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    cfg = tiny_train_config("olm", max_steps=4, save_every=2)
    real_forward = oom_from_call(monkeypatch, first_bad_call=5)  # steps 1-2: 2 micro-batches each
    with pytest.raises(TrainingOutOfMemoryError) as caught:
        train(cfg, model_dir, corpus, run)
    message = str(caught.value)
    assert message.startswith("step 3: out of device memory in a micro-batch of 2 sequence(s) x ")
    for setting in ("micro_batch_size (now 2", "max_length (now 64", "gradient_checkpointing"):
        assert setting in message
    assert "step-00000002 is intact" in message and "--resume" in message
    latest = CheckpointManager(run / "checkpoints").latest()
    assert latest.name == "step-00000002"
    assert not (run / "model").exists()

    # the advice works: resume with a smaller micro-batch; same weights as a run that never failed
    monkeypatch.setattr(VIST2Model, "forward", real_forward)
    train(cfg.with_overrides({"micro_batch_size": 1}), model_dir, corpus, run, resume=True)
    train(cfg, model_dir, corpus, tmp_path / "straight")
    straight, resumed = weights(tmp_path / "straight" / "model"), weights(run / "model")
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-5, atol=1e-6)


def test_cli_prints_one_line_and_exits_2(model_dir, corpus, tmp_path, monkeypatch, capsys):
    oom_from_call(monkeypatch, first_bad_call=1)
    config = tmp_path / "cfg.json"
    config.write_text('{"batch_size": 2, "micro_batch_size": 2, "max_length": 64, '
                      '"num_workers": 0, "progress": false, "cpu": true}')  # fmt: skip
    code = main(["train", "--stage", "olm", "--recipe", "tiny", "--model", str(model_dir),
                 "--data", corpus, "--out", str(tmp_path / "run"), "--config", str(config),
                 "--max-steps", "2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("vist2: error: step 1: out of device memory") and "Traceback" not in err
    assert "(none yet)" in err
