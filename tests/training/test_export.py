"""Exporting a checkpoint or a run as a model directory (what scripts/ship_small_model.sh does)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import (
    make_model_dir,
    single_thread,  # noqa: F401 -- autouse: one torch thread
    tiny_train_config,
    write_corpus,
)

from vist2.errors import Vist2Error
from vist2.loading import load_model, shipped_model_path
from vist2.training.export import chain_runs, export, main, provenance, started_from
from vist2.training.trainer import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model_dir = make_model_dir(root / "tiny")
    corpus = write_corpus(root / "corpus")
    run = root / "run"
    train(tiny_train_config("olm", max_steps=4, save_every=2), model_dir, str(corpus), run)
    return run


def test_a_checkpoint_exports_with_its_weights_and_provenance(run_dir, tmp_path):
    checkpoint = run_dir / "checkpoints" / "step-00000002"
    out = export(checkpoint, tmp_path / "model")
    model, tokenizer = load_model(out)
    saved = load_file(str(checkpoint / "model.safetensors"))
    for name, tensor in model.state_dict().items():
        if name in saved:
            torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    info = json.loads((out / "training.json").read_text())
    assert info["step"] == 2 and info["stage"] == "olm" and info["loss"] > 0
    assert info["labelled_tokens_seen"] > 0 and info["train_config"]["max_steps"] == 4
    assert tokenizer("hello")["input_ids"]


def test_a_finished_run_exports_its_model_and_bf16_halves_the_file(run_dir, tmp_path):
    full = export(run_dir, tmp_path / "fp32")
    half = export(run_dir, tmp_path / "bf16", dtype=torch.bfloat16)
    assert json.loads((full / "training.json").read_text())["step"] == 4
    a, b = (p / "model.safetensors" for p in (full, half))
    assert b.stat().st_size < 0.6 * a.stat().st_size
    model, _ = load_model(half, dtype=torch.float32)  # upcast on load
    assert next(model.parameters()).dtype == torch.float32


def test_a_run_that_continues_another_exports_the_whole_chain(run_dir, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    second = tmp_path / "second"
    train(tiny_train_config("olm", max_steps=2), run_dir / "model", str(corpus), second)
    info = json.loads((export(second, tmp_path / "out") / "training.json").read_text())
    assert info["run"] == str(second) and info["step"] == 2
    first = info["started_from"]
    assert first["run"] == str(run_dir) and first["step"] == 4
    assert first["started_from"] is None  # the first run began from `vist2 init` weights
    # an exported model (with its training.json) as the start of a further run
    third = tmp_path / "third"
    train(tiny_train_config("olm", max_steps=1), tmp_path / "out", str(corpus), third)
    assert provenance(third, third / "model")["started_from"] == info
    assert chain_runs(tmp_path / "out") == [str(run_dir), str(second)]
    # a shipped model by name: its own training.json
    shipped = json.loads((shipped_model_path("vist2-small") / "training.json").read_text())
    assert started_from("vist2-small") == shipped


def test_print_chain_and_a_size_limit(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(run_dir), "--out", str(out), "--print-chain"]) == 0
    printed = capsys.readouterr()
    assert printed.out.splitlines() == [str(run_dir)]  # only the chain on stdout, for scripts
    assert f"wrote {out}: step" in printed.err
    before = (out / "model.safetensors").read_bytes()
    assert main([str(run_dir), "--out", str(out), "--max-mb", "0.001"]) == 2
    assert "over the 0.001 MB limit" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before  # left as it was
    assert not (tmp_path / ".tmp-out").exists()
    for bad in ("0", "-1", "nan", "big"):
        with pytest.raises(SystemExit):  # argparse: one usage line, exit 2
            main([str(run_dir), "--out", str(out), "--max-mb", bad])
    assert "give a size in MB > 0" in capsys.readouterr().err


def test_bad_sources_are_one_clear_error(tmp_path, capsys):
    with pytest.raises(Vist2Error, match="neither a checkpoint"):
        export(tmp_path, tmp_path / "out")
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("vist2: error: ")
