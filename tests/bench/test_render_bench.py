"""The render benchmark runs end to end and writes its JSON, table and chart (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from vist2.bench.render import bench_render_main, run_glyph_renderer

ENGLISH = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, "
    "it was the age of foolishness.\n"
) * 60
CHINESE = "满纸荒唐言，一把辛酸泪！都云作者痴，谁解其中味？\r\n" * 120


def test_bench_render_writes_json_table_and_chart(tmp_path: Path) -> None:
    en, zh = tmp_path / "english.txt", tmp_path / "chinese.txt"
    en.write_text(ENGLISH, encoding="utf-8")
    zh.write_bytes(CHINESE.encode("utf-8"))
    out = tmp_path / "out"
    argv = [
        "--text",
        str(en),
        "--text",
        str(zh),
        "--seconds",
        "0.01",
        "--max-pages",
        "3",
        "--min-rounds",
        "1",
    ]
    assert bench_render_main([*argv, "--out", str(out)]) == 0

    result = json.loads((out / "render_bench.json").read_text(encoding="utf-8"))
    assert set(result["texts"]) == {"english", "chinese"}
    assert result["texts"]["chinese"]["lang"] == "zh"
    assert result["glyph"] is None
    for entry in result["texts"].values():
        assert set(entry["paths"]) == {"atlas", "pillow"}
        for r in entry["paths"].values():
            assert r["pages_per_s"] > 0 and r["chars_per_s"] > 0
            assert r["pages"] == entry["chunks"] >= 1
        assert entry["ratios"]["atlas/pillow"] > 0

    table = (out / "render_bench.md").read_text(encoding="utf-8")
    assert "| english | atlas |" in table and "| chinese | pillow |" in table
    assert "Glyph: not run" in table
    if importlib.util.find_spec("matplotlib") is not None:
        png = out / "render_bench.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size < 100_000


# A stand-in with the interface of Glyph's scripts/word2png_function.py (not its code): it checks
# the harness plumbing (job file, config, timing wrappers, result) without reportlab or poppler.
FAKE_GLYPH = """
import json, os
from PIL import Image


def load_config(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def TTFont(name, path):
    return (name, path)


def text_to_images(text, output_dir, config_path=None, config_dict=None, unique_id=None):
    TTFont("f", config_dict["font-path"])
    root = os.path.join(output_dir, unique_id)
    os.makedirs(root, exist_ok=True)
    paths = []
    for i in range(0, len(text), 500):
        path = os.path.join(root, "page_%03d.png" % (i // 500 + 1))
        Image.new("L", (60, 80), 255).save(path, "PNG")
        paths.append(path)
    return paths
"""


@pytest.fixture
def fake_glyph(tmp_path: Path) -> Path:
    glyph = tmp_path / "glyph"
    (glyph / "scripts").mkdir(parents=True)
    (glyph / "config").mkdir()
    (glyph / "scripts" / "word2png_function.py").write_text(FAKE_GLYPH, encoding="utf-8")
    config = {"page-size": "595,842", "dpi": 72, "font-size": 9, "font-path": "../config/x.ttf"}
    for lang in ("en", "zh"):
        (glyph / "config" / f"config_{lang}.json").write_text(json.dumps(config), encoding="utf-8")
    return glyph


def test_run_glyph_renderer_plumbing_with_a_stand_in(fake_glyph: Path, tmp_path: Path) -> None:
    texts = ["a" * 1200, "b" * 300]
    r = run_glyph_renderer(fake_glyph, texts, tmp_path / "work", python=sys.executable, seconds=0)
    assert r["pages"] == 4 and r["chars"] == 1500 and r["calls"] == 2 and r["repeats"] == 1
    assert r["pages_per_s"] > 0 and r["chars_per_s"] > 0
    assert r["page_px"] == [60, 80]
    assert r["config"]["dpi"] == 72
    assert set(r["fractions"]) == {"font", "reportlab", "poppler", "png"}
    assert abs(sum(r["fractions"].values()) - 1) < 1e-6
    assert set(r["startup"]) == {"interpreter_s", "import_s", "warmup_s"}


def test_bench_render_side_by_side_with_a_stand_in(fake_glyph: Path, tmp_path: Path) -> None:
    text = tmp_path / "english.txt"
    text.write_text(ENGLISH, encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--text", str(text), "--seconds", "0", "--max-pages", "2", "--min-rounds", "1"]
    argv += ["--glyph-dir", str(fake_glyph), "--glyph-python", sys.executable, "--out", str(out)]
    assert bench_render_main(argv) == 0
    result = json.loads((out / "render_bench.json").read_text(encoding="utf-8"))
    entry = result["texts"]["english"]
    assert set(entry["paths"]) == {"atlas", "pillow", "glyph", "glyph-per-chunk"}
    assert "glyph-own-font" in entry["skipped"]  # the config's font file is not there
    assert entry["paths"]["glyph"]["chars"] == entry["paths"]["glyph-per-chunk"]["chars"]
    assert entry["ratios"]["atlas/glyph chars/s"] > 0
    table = (out / "render_bench.md").read_text(encoding="utf-8")
    assert "| english | glyph-per-chunk |" in table


def test_run_glyph_renderer_needs_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="thu-coai/Glyph"):
        run_glyph_renderer(tmp_path, ["text"], tmp_path / "work")
