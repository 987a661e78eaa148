"""`vist2 train` / `vist2 plot` through their argparse handlers, and freezing as data."""

import argparse
import json

import pytest
import torch
from PIL import Image
from train_helpers import (
    make_model_dir,
    single_thread,  # noqa: F401 -- autouse: one torch thread
    tiny_train_config,
    write_corpus,
)

from vist2.model import VIST2Model
from vist2.training.cli import add_commands, main
from vist2.training.config import MODULES
from vist2.training.trainer import param_groups


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vist2")
    add_commands(p.add_subparsers(dest="command", required=True))
    return p


def test_train_then_plot_through_the_cli(tmp_path, capsys):
    model_dir = make_model_dir(tmp_path / "model")
    corpus = write_corpus(tmp_path / "corpus")
    config = tmp_path / "tiny.json"
    overrides = {
        k: v
        for k, v in tiny_train_config("olm").to_dict().items()
        if k not in ("stage", "learning_rates")
    }
    overrides["learning_rates"] = {"language_model": 0.0007}
    config.write_text(json.dumps(overrides))
    run = tmp_path / "run"
    argv = [
        "train",
        "--stage",
        "olm",
        "--model",
        str(model_dir),
        "--data",
        str(corpus),
        "--out",
        str(run),
    ]
    argv += ["--recipe", "tiny", "--config", str(config), "--max-steps", "3"]
    argv += [
        "--set",
        "max_steps=7",
        "--set",
        "seed=11",
        "--set",
        'learning_rates={"aligner": 0.001}',
    ]
    args = parser().parse_args(argv)
    assert args.func(args) == 0
    assert (run / "model" / "model.safetensors").is_file()
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["max_steps"] == 3  # --max-steps wins over --set, --set over --config
    assert saved["seed"] == 11 and saved["learning_rates"]["aligner"] == 0.001
    assert saved["learning_rates"]["language_model"] == 0.0007  # --config's rate kept: merged

    args = parser().parse_args(["plot", str(run), str(run), "--out", str(tmp_path / "loss.png")])
    assert args.func(args) == 0
    with Image.open(tmp_path / "loss.png") as png:
        assert png.size[0] > png.size[1] > 100  # two panels side by side
    assert (tmp_path / "loss.png").stat().st_size < 200_000
    args = parser().parse_args(["plot", *[str(run)] * 5, "--out", str(tmp_path / "five.png")])
    assert args.func(args) == 0
    with Image.open(tmp_path / "five.png") as five, Image.open(tmp_path / "loss.png") as two:
        assert five.size == (2 * two.size[0], 2 * two.size[1])  # four to a row, then a second row
    assert main(["plot", str(run)]) == 0 and (run / "loss.png").is_file()

    # the next stage starts from the run directory
    argv = [
        "train",
        "--stage",
        "sft",
        "--model",
        str(run),
        "--data",
        str(tmp_path / "none.jsonl"),
        "--out",
        str(tmp_path / "sft"),
    ]
    assert main(argv) == 2
    assert "vist2: error:" in capsys.readouterr().err


def test_text_baseline_stage_trains_the_llm_only(tmp_path):
    model_dir = make_model_dir(tmp_path / "model")
    before = VIST2Model.from_pretrained(model_dir)
    config = tmp_path / "tiny.json"
    config.write_text(
        json.dumps({"max_length": 64, "batch_size": 2, "micro_batch_size": 2, "save_every": 100})
    )
    argv = [
        "train",
        "--stage",
        "text",
        "--model",
        str(model_dir),
        "--recipe",
        "tiny",
        "--data",
        str(write_corpus(tmp_path / "corpus")),
        "--out",
        str(tmp_path / "run"),
        "--config",
        str(config),
        "--max-steps",
        "2",
    ]
    assert main(argv) == 0
    after = VIST2Model.from_pretrained(tmp_path / "run" / "model")
    for name in ("vision_model", "aligner", "language_model"):
        old, new = getattr(before, name).state_dict(), getattr(after, name).state_dict()
        changed = any(not torch.equal(old[k], new[k]) for k in old)
        assert changed == (name == "language_model"), name
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in metrics]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["train", "--stage", "olm", "--model", "{model}", "--out", "{tmp}/r"],
            "--stage olm needs --data",
        ),
        (
            ["train", "--stage", "olm", "--model", "{tmp}/nope", "--data", "x", "--out", "{tmp}/r"],
            "does not exist",
        ),
        (
            [
                "train",
                "--stage",
                "ocr",
                "--model",
                "{model}",
                "--data",
                "x",
                "--out",
                "{tmp}/r",
                "--config",
                "{tmp}/bad.json",
            ],
            "no field",
        ),
        (["plot", "{tmp}"], "no metrics.jsonl"),
        (
            ["train", "--stage", "olm", "--model", "{model}", "--data", "x", "--out", "{tmp}/r"]
            + ["--set", "micro_batch_size"],
            "write FIELD=VALUE",
        ),
        (
            ["train", "--stage", "olm", "--model", "{model}", "--data", "x", "--out", "{tmp}/r"]
            + ["--set", "micro_batch=4"],
            "no field",
        ),
        (  # the shell ate the JSON's quotes
            ["train", "--stage", "olm", "--model", "{model}", "--data", "x", "--out", "{tmp}/r"]
            + ["--set", "learning_rates={{aligner:0.001}}"],  # argv is str.format-ed
            "not valid JSON",
        ),
        (
            ["train", "--stage", "olm", "--model", "{model}", "--data", "x", "--out", "{tmp}/r"]
            + ["--set", "learning_rates=abc"],
            "must map modules to rates",
        ),
    ],
)
def test_user_mistakes_exit_2_with_one_line(argv, message, tmp_path, capsys):
    model_dir = make_model_dir(tmp_path / "model")
    (tmp_path / "bad.json").write_text('{"learning_rate": 1}')
    code = main([a.format(model=model_dir, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vist2: error:") and message in err and err.count("\n") == 1


def test_param_groups_freeze_by_learning_rate():
    from conftest import tiny_config

    model = VIST2Model(tiny_config())
    rates = {"vision_model": 0.0, "aligner": 1e-3, "language_model": 0.0}
    groups = param_groups(model, rates, weight_decay=0.1)
    in_optimizer = {id(p) for g in groups for p in g["params"]}
    for name in MODULES:
        for p in getattr(model, name).parameters():
            assert p.requires_grad == (name == "aligner")
            assert (id(p) in in_optimizer) == (name == "aligner")
    assert {g["name"]: g["weight_decay"] for g in groups} == {
        "aligner": 0.1,
        "aligner.no_decay": 0.0,
    }
    assert all(p.ndim < 2 for p in groups[1]["params"])  # biases are not decayed
    torch.testing.assert_close(torch.tensor(groups[0]["lr"]), torch.tensor(1e-3))


def test_tensorboard_is_optional_and_says_what_is_missing(tmp_path):
    import importlib.util

    from vist2.errors import ConfigError
    from vist2.training.metrics import MetricsLog

    if importlib.util.find_spec("tensorboard") is not None:
        log = MetricsLog(tmp_path, tensorboard=True)
        log.log({"step": 1, "loss": 1.0})
        log.close()
        assert (tmp_path / "tensorboard").is_dir()
    else:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            MetricsLog(tmp_path, tensorboard=True)
