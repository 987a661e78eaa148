"""The `vist2` command line: the happy paths and one clear error line for each bad input."""

import json

import pytest
from conftest import CORPORA

from vist2.cli import main


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    assert main(["init", "--preset", "tiny", "--out", str(out), "--overwrite"]) == 0
    return out


def test_init_writes_a_loadable_model(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names


def test_render_reports_the_compression(tiny_dir, tmp_path, capsys):
    text = (CORPORA / "en" / "pride_and_prejudice.txt").read_text(encoding="utf-8")[:6000]
    src = tmp_path / "in.txt"
    src.write_text(text, encoding="utf-8")
    assert (
        main(["render", str(src), "--model", str(tiny_dir), "--out", str(tmp_path / "pages")]) == 0
    )
    out = capsys.readouterr().out
    assert "visual tokens" in out and "ratio" in out and "pages/s" in out
    pngs = sorted((tmp_path / "pages").glob("page_*.png"))
    assert pngs
    n_pages = int(out.split(" visual tokens on ")[1].split(" pages")[0])
    assert len(pngs) == n_pages


def test_render_takes_a_shipped_model_by_name(tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("Call me Ishmael. " * 40, encoding="utf-8")
    out_dir = tmp_path / "pages"
    args = ["render", str(src), "--model", "vist2-small", "--out", str(out_dir), "--max-pages", "1"]
    assert main(args) == 0
    assert "(K=64, β=16)" in capsys.readouterr().out
    assert len(list(out_dir.glob("page_*.png"))) == 1


def test_generate_json_reports_a_bounded_cache(tiny_dir, capsys):
    k, beta = 64, 16
    args = [
        "generate",
        "--model",
        str(tiny_dir),
        "--prompt",
        "Call me Ishmael.",
        "--max-new-tokens",
        "300",
        "--json",
    ]
    assert main([*args, "--policy", "global"]) == 0
    glob = json.loads(capsys.readouterr().out)
    assert main([*args, "--policy", "none"]) == 0
    none = json.loads(capsys.readouterr().out)
    for key in (
        "prompt_tokens",
        "visual_tokens",
        "generated_tokens",
        "pages",
        "peak_cache_entries",
        "peak_cache_bytes",
        "ttft_s",
        "decode_tokens_per_s",
    ):
        assert key in glob["stats"]
    s = glob["stats"]
    persistent = s["prompt_tokens"] + s["visual_tokens"]  # a short prompt stays raw text
    assert s["peak_cache_entries"] <= persistent + k + beta
    assert none["stats"]["peak_cache_entries"] == none["stats"]["prompt_tokens"] + 300 - 1


def test_generate_streams_text_and_stats(tiny_dir, capsys):
    assert (
        main(["generate", "--model", str(tiny_dir), "--prompt", "Hello", "--max-new-tokens", "8"])
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out.strip() and "generated_tokens=8" in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["init", "--preset", "huge", "--out", "{tmp}/x"], "unknown preset"),
        (["render", "{tmp}/missing.txt", "--out", "{tmp}/p"], "no such file"),
        (["render", "{tmp}/empty.txt", "--out", "{tmp}/p"], "empty"),
        (["render", "{tmp}/latin1.txt", "--out", "{tmp}/p"], "not UTF-8"),
        (["generate", "--model", "{tmp}/nomodel", "--prompt", "x"], "does not exist"),
        (["generate", "--model", "{tiny}", "--prompt", " "], "prompt is empty"),
        (["generate", "--model", "{tiny}", "--prompt", "x", "--policy", "partial"], "policy"),
        (["generate", "--model", "{tiny}", "--prompt", "x", "--stop", ""], "stop_strings"),
        (["generate", "--model", "{tiny}", "--prompt", "x", "--temperature", "nan"], "temperature"),
        (["generate", "--model", "{tiny}", "--prompt", "x", "--device", "gpu"], "unknown device"),
        (["render", "{tmp}/ok.txt", "--out", "{tmp}/ok.txt"], "is a file"),
        (["init", "--preset", "tiny", "--out", "{tmp}/latin1.txt"], "is a file"),
        (
            [
                "generate",
                "--model",
                "{tiny}",
                "--prompt",
                "x",
                "--policy",
                "none",
                "--max-new-tokens",
                "50000",
            ],
            "max_position_embeddings",
        ),
    ],
)
def test_bad_input_gets_one_clear_line(argv, message, tiny_dir, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    (tmp_path / "ok.txt").write_text("some text", encoding="utf-8")
    argv = [a.format(tmp=tmp_path, tiny=tiny_dir) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vist2: error:") and message in err[0]


def test_page_size_the_patch_does_not_divide_is_a_clear_error(tiny_dir, tmp_path, capsys):
    config = json.loads((tiny_dir / "config.json").read_text())
    config["render"]["page_width"] = 120
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in tiny_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "config.json").write_text(json.dumps(config))
    (tmp_path / "t.txt").write_text("some text")
    assert (
        main(["render", str(tmp_path / "t.txt"), "--model", str(bad), "--out", str(tmp_path / "p")])
        == 2
    )
    err = capsys.readouterr().err
    assert "render.page_width (120) is not divisible by vision_config.patch_size (16)" in err
