"""`vist2 eval ocr|olm|needle` from the command line: outputs, and one clear error line (exit 2,
no traceback) for each bad input the issue names."""

import json

import eval_helpers
import pytest
from eval_helpers import single_thread  # noqa: F401 -- autouse: one torch thread

from vist2.cli import main

data_dir = eval_helpers.data_dir  # fixture
model_dir = eval_helpers.model_dir  # fixture


def test_ocr_command_writes_its_reports(model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "ocr"
    args = ["eval", "ocr", "--model", str(model_dir), "--data", str(data_dir), "--out", str(out)]
    assert (
        main([*args, "--pages", "6", "--batch-size", "3", "--split", "all", "--no-progress"]) == 0
    )
    printed = capsys.readouterr().out
    assert "character accuracy" in printed and "zh.txt`: the whole file" in printed
    assert {"ocr.json", "ocr.md", "ocr_hist.png", "worst"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "ocr.json").read_text())["summary"]["all"]["pages"] == 6


def test_olm_command_reads_the_heldout_part_by_default(model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "olm"
    args = ["eval", "olm", "--model", str(model_dir), "--data", str(data_dir), "--out", str(out)]
    assert (
        main([*args, "--prefix", "16", "--continue", "8", "--windows", "2", "--no-progress"]) == 0
    )
    report = json.loads((out / "olm.json").read_text())
    assert report["split"] == "heldout" and report["windows"] == 2
    assert all("held out: the last 10%" in part["part"] for part in report["data"])
    assert "global / none" in capsys.readouterr().out


def test_needle_command_draws_a_heat_map(model_dir, tmp_path):
    out = tmp_path / "needle"
    args = ["eval", "needle", "--model", str(model_dir), "--out", str(out), "--no-progress"]
    assert main([*args, "--lengths", "48", "--depths", "0", "1", "--trials", "1"]) == 0
    assert (out / "needle.png").stat().st_size > 0
    assert json.loads((out / "needle.json").read_text())["accuracy"]["global"] == [[0.0, 0.0]]


def _error_of(args, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("vist2: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("command", ["ocr", "olm"])
def test_missing_model_is_one_error_line(command, data_dir, tmp_path, capsys):
    args = ["eval", command, "--model", str(tmp_path / "nope"), "--data", str(data_dir)]
    err = _error_of([*args, "--out", str(tmp_path / "o")], capsys)
    assert "does not exist" in err


def test_model_without_weights_is_one_error_line(model_dir, data_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((model_dir / name).read_bytes())
    args = ["eval", "ocr", "--model", str(broken), "--data", str(data_dir), "--out", str(tmp_path)]
    assert "model.safetensors" in _error_of(args, capsys)


def test_empty_data_is_one_error_line(model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    args = ["eval", "ocr", "--model", str(model_dir), "--data", str(empty), "--out", str(tmp_path)]
    assert "empty" in _error_of(args, capsys)


@pytest.mark.parametrize("encoding", ["gbk", "latin-1"])
def test_a_file_in_another_encoding_is_one_error_line(encoding, model_dir, tmp_path, capsys):
    text = "满纸荒唐言，一把辛酸泪。\n" * 50 if encoding == "gbk" else "Café déjà vu, naïve.\n" * 50
    bad = tmp_path / f"{encoding}.txt"
    bad.write_bytes(text.encode(encoding))
    args = ["eval", "olm", "--model", str(model_dir), "--data", str(bad), "--out", str(tmp_path)]
    err = _error_of([*args, "--split", "all"], capsys)
    assert "not UTF-8" in err and "iconv" in err


def test_lengths_beyond_the_position_budget_are_one_error_line(
    model_dir, data_dir, tmp_path, capsys
):
    args = ["eval", "needle", "--model", str(model_dir), "--out", str(tmp_path)]
    assert "max_position_embeddings" in _error_of([*args, "--lengths", "8000"], capsys)
    args = [
        "eval",
        "olm",
        "--model",
        str(model_dir),
        "--data",
        str(data_dir),
        "--out",
        str(tmp_path),
    ]
    assert "max_position_embeddings" in _error_of(
        [*args, "--prefix", "4000", "--continue", "200"], capsys
    )
