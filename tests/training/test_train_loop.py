"""The training loop on tiny models: each stage, freezing, resume equality, atomic checkpoints,
NaN stop, bad-data budget, run-directory rules."""

import json

import pytest
import torch
from train_helpers import (
    make_model_dir,
    single_thread,  # noqa: F401 -- autouse: one torch thread
    tiny_train_config,
    weights,
    write_captions,
    write_chats,
    write_corpus,
)

from vist2.errors import ConfigError, Vist2Error
from vist2.loading import load_model
from vist2.model import VIST2Model
from vist2.training.checkpoint import CheckpointManager
from vist2.training.metrics import read_metrics
from vist2.training.trainer import (
    NonFiniteLossError,
    cpu_has_native_bf16,
    resolve_model_dir,
    slow_bf16_warning,
    train,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return {
        "caption": "synthetic",
        "ocr": str(write_corpus(root / "corpus")),
        "olm": str(root / "corpus"),
        "sft": str(write_chats(root / "chats.jsonl")),
    }


def group_weights(state: dict, prefix: str) -> dict:
    return {k: v for k, v in state.items() if k.startswith(prefix)}


@pytest.mark.parametrize("stage", ["caption", "ocr", "olm", "sft"])
def test_each_stage_trains_and_writes_a_loadable_model(stage, model_dir, data, tmp_path):
    run = tmp_path / "run"
    result = train(tiny_train_config(stage, max_steps=6), model_dir, data[stage], run)
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 7))
    losses = [r["loss"] for r in records]
    assert all(torch.isfinite(torch.tensor(losses)))
    if stage in ("olm", "sft"):  # the LLM trains: a few steps of a high learning rate already help
        assert min(losses[-2:]) < losses[0]
    # (stages 1-2 train only the encoder side against a frozen random-init LLM: finite is all we ask)
    assert {"lr", "grad_norm", "tokens_per_s", "labelled_tokens", "pages"} <= set(records[0])
    assert result.model_dir == run / "model" and result.steps == 6
    model, _ = load_model(run / "model")  # the next stage's starting point
    assert isinstance(model, VIST2Model)
    assert resolve_model_dir(run) == run / "model"  # a run dir works as --model too
    assert (run / "checkpoints" / "step-00000006" / "checkpoint.json").is_file()
    assert json.loads((run / "summary.json").read_text())["steps"] == 6


def test_ocr_with_plain_text_mixed_in_trains(model_dir, data, tmp_path):
    """`ocr_text_fraction`: micro-batches of pages and text, some of text alone (no pages), with
    the anti-collapse term on."""
    config = tiny_train_config(
        "ocr",
        max_steps=6,
        ocr_text_fraction=0.75,
        visual_variance_weight=1.0,
        learning_rates={"language_model": 1e-3},
    )
    train(config, model_dir, data["ocr"], tmp_path / "run")
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 7))
    assert all(torch.isfinite(torch.tensor([r["loss"] for r in records])))
    assert any(r["pages"] < 4 for r in records)  # some samples of the step were text


def test_frozen_modules_are_really_unchanged(model_dir, tmp_path):
    before = weights(model_dir)
    train(tiny_train_config("caption", max_steps=3), model_dir, "synthetic", tmp_path / "run")
    after = weights(tmp_path / "run" / "model")
    assert before.keys() == after.keys()
    for name in before:
        same = torch.equal(before[name], after[name])
        assert same == (not name.startswith("aligner.")), name  # stage 1: the aligner only


def test_resume_after_a_crash_gives_the_same_weights(model_dir, data, tmp_path):
    cfg = tiny_train_config("olm", max_steps=6, save_every=3)
    train(cfg, model_dir, data["olm"], tmp_path / "straight")

    def crash(step):
        if step == 4:  # one step past the checkpoint: that step's work is lost, as in a real crash
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, model_dir, data["olm"], tmp_path / "resumed", on_step_end=crash)
    assert CheckpointManager(tmp_path / "resumed" / "checkpoints").latest().name == "step-00000003"
    assert not (tmp_path / "resumed" / "model").exists()
    train(cfg, model_dir, data["olm"], tmp_path / "resumed", resume=True)

    straight, resumed = (
        weights(tmp_path / "straight" / "model"),
        weights(tmp_path / "resumed" / "model"),
    )
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-5, atol=1e-6)
    a = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    b = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["step"] for r in b] == list(range(1, 7))  # step 4 logged once, not twice
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-5)


def test_a_run_stopped_early_and_resumed_gives_the_same_weights(model_dir, data, tmp_path):
    cfg = tiny_train_config("olm", max_steps=5, save_every=0)
    train(cfg, model_dir, data["olm"], tmp_path / "straight")
    run = tmp_path / "pieces"
    first = train(cfg, model_dir, data["olm"], run, stop_after=2)
    assert first.steps == 2 and (run / "model" / "model.safetensors").is_file()
    assert CheckpointManager(run / "checkpoints").latest().name == "step-00000002"
    assert train(cfg, model_dir, data["olm"], run, resume=True).steps == 5

    straight, pieces = weights(tmp_path / "straight" / "model"), weights(run / "model")
    for name in straight:
        torch.testing.assert_close(pieces[name], straight[name], rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="stop_after"):
        train(cfg, model_dir, data["olm"], tmp_path / "bad", stop_after=0)


def test_a_crash_while_saving_leaves_the_previous_checkpoint(
    model_dir, data, tmp_path, monkeypatch
):
    from accelerate import Accelerator

    run = tmp_path / "run"
    cfg = tiny_train_config("olm", max_steps=4, save_every=2)
    real_save = Accelerator.save_state

    def save_then_die(self, output_dir, **kwargs):
        real_save(self, output_dir, **kwargs)  # files written, not yet renamed into place
        if "00000004" in str(output_dir):
            raise OSError("disk full (simulated)")

    monkeypatch.setattr(Accelerator, "save_state", save_then_die)
    with pytest.raises(OSError, match="disk full"):
        train(cfg, model_dir, data["olm"], run)
    manager = CheckpointManager(run / "checkpoints")
    assert [step for step, _ in manager.complete()] == [2]  # step 4 never became a checkpoint
    assert (run / "checkpoints" / ".tmp-step-00000004").is_dir()  # the torn save, ignored
    monkeypatch.setattr(Accelerator, "save_state", real_save)
    result = train(cfg, model_dir, data["olm"], run, resume=True)
    assert result.steps == 4
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-00000002",
        "step-00000004",
    ]


def test_keep_last_n_checkpoints(model_dir, data, tmp_path):
    run = tmp_path / "run"
    train(
        tiny_train_config("olm", max_steps=5, save_every=1, keep_last=2),
        model_dir,
        data["olm"],
        run,
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-00000004",
        "step-00000005",
    ]


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    model_dir, data, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    real_forward = VIST2Model.forward
    calls = {"n": 0}

    def forward_with_nan(self, *args, **kwargs):
        out = real_forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 4:  # steps 1-2 (2 micro-batches each) are fine, step 3 blows up
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(VIST2Model, "forward", forward_with_nan)
    with pytest.raises(NonFiniteLossError, match=r"step 3: the loss is nan.*step-00000002"):
        train(tiny_train_config("olm", max_steps=6, save_every=1), model_dir, data["olm"], run)
    latest = CheckpointManager(run / "checkpoints").latest()
    assert latest.name == "step-00000002"
    assert all(torch.isfinite(w).all() for w in weights(latest).values())
    assert not (run / "model").exists()


def test_bad_records_in_workers_are_counted_and_budgeted(model_dir, tmp_path):
    captions = write_captions(tmp_path / "caps", n=6, broken=(1, 4))
    cfg = tiny_train_config(
        "caption", max_steps=2, batch_size=6, micro_batch_size=3
    )  # one epoch: all 6 images
    result = train(cfg, model_dir, str(captions), tmp_path / "run")
    assert result.bad_records == 2
    bad = [
        json.loads(line) for line in (tmp_path / "run" / "bad_data.jsonl").read_text().splitlines()
    ]
    assert sorted(b["line"] for b in bad) == [2, 5] and all(
        "cannot open image" in b["reason"] for b in bad
    )
    assert read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]["bad_records"] == 2
    with pytest.raises(Vist2Error, match="more than max_bad_records=1"):
        train(
            cfg.with_overrides({"max_bad_records": 1}), model_dir, str(captions), tmp_path / "run2"
        )


def test_run_directory_rules(model_dir, data, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_train_config("olm", max_steps=2)
    train(cfg, model_dir, data["olm"], run)
    with pytest.raises(Vist2Error, match="already holds a run; pass --resume"):
        train(cfg, model_dir, data["olm"], run)
    with pytest.raises(ConfigError, match="max_length: 64 -> 32"):
        train(cfg.with_overrides({"max_length": 32}), model_dir, data["olm"], run, resume=True)
    # operational fields may change; a finished run resumed just re-saves its model
    assert (
        train(
            cfg.with_overrides({"num_workers": 1, "cpu_threads": 2}),
            model_dir,
            data["olm"],
            run,
            resume=True,
        ).steps
        == 2
    )
    with pytest.raises(Vist2Error, match="no such file or directory"):
        train(cfg, model_dir, str(tmp_path / "missing"), tmp_path / "run2")


def test_flex_block_mask_gives_the_dense_loss(model_dir, data, tmp_path):
    """The GPU path's BlockMask and the CPU dense mask agree (forward only: flex has no CPU backward)."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    import functools

    from vist2.training.datasets import build_dataset, collate_examples
    from vist2.training.problems import ProblemLog
    from vist2.training.trainer import FLEX_BLOCK, MODEL_INPUTS, block_mask, pad_to_multiple

    model, tokenizer = load_model(model_dir)
    cfg = tiny_train_config("olm")
    ds = build_dataset("olm", data["olm"], model.config, tokenizer, cfg, ProblemLog(10))
    batch = functools.partial(collate_examples, pad_id=0)([ds[0], ds[1]])
    padded = pad_to_multiple(batch, FLEX_BLOCK)  # as the trainer does on GPU
    assert padded["input_ids"].shape[1] == FLEX_BLOCK > batch["input_ids"].shape[1]
    padded["attention_mask"] = block_mask(padded)
    with torch.no_grad():
        dense = model(**{k: batch[k] for k in MODEL_INPUTS})
        model.language_model.set_attn_implementation("flex_attention")
        flex = model(**{k: padded[k] for k in MODEL_INPUTS})
    assert flex.num_labelled == dense.num_labelled
    torch.testing.assert_close(flex.loss, dense.loss, rtol=1e-4, atol=1e-5)


def test_data_with_nothing_usable_says_why(model_dir, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("")
    (tmp_path / "data" / "b.txt").write_bytes(b"\xff\xfe\n")
    with pytest.raises(
        Vist2Error, match=r"no usable training records .*2 bad records; first: .*a.txt: empty file"
    ):
        train(tiny_train_config("olm"), model_dir, str(tmp_path / "data"), tmp_path / "run")


AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_cpu_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16(AVX2_ONLY) is False
    assert cpu_has_native_bf16(SAPPHIRE) is True
    assert cpu_has_native_bf16(ARM_BF16) is True
    assert cpu_has_native_bf16("model name : something\n") is None  # no flags line: unknown


def test_slow_bf16_warning_only_for_emulated_bf16_on_cpu(monkeypatch):
    import vist2.training.trainer as trainer

    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    warning = slow_bf16_warning(torch.device("cpu"), "bf16")
    assert "--set mixed_precision=no" in warning
    assert slow_bf16_warning(torch.device("cpu"), "no") is None
    assert slow_bf16_warning(torch.device("cuda"), "bf16") is None
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: None)  # unknown: stay quiet
    assert slow_bf16_warning(torch.device("cpu"), "bf16") is None


def test_resume_reads_fields_added_since_the_run_began_as_their_defaults(tmp_path):
    from vist2.training.trainer import _check_resume_config

    config = tiny_train_config("ocr")
    saved = config.to_dict()
    del saved["ocr_input_noise"]  # a run saved before the field existed trained without it
    (tmp_path / "train_config.json").write_text(json.dumps(saved))
    _check_resume_config(tmp_path, config)  # no error
    with pytest.raises(ConfigError, match="ocr_input_noise: 0.0 -> 0.1"):
        _check_resume_config(tmp_path, config.with_overrides({"ocr_input_noise": 0.1}))
