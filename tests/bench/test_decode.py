"""`vist2 bench decode`: compiled vs eager side by side (plumbing; the compile itself is tested in
tests/test_engine.py, so here the fixed-shape step runs uncompiled to keep the test fast)."""

import json

from vist2.cli import main


def test_decode_bench_reports_both_variants_per_policy(tmp_path, monkeypatch, capsys):
    from vist2.engine import Engine, _fixed_step

    monkeypatch.setattr(Engine, "_compiled_step", lambda self: _fixed_step)
    args = ["bench", "decode", "--preset", "tiny", "--new-tokens", "70", "--repeats", "1"]
    assert main([*args, "--policies", "none", "global", "--hf", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "decode.json").read_text())
    for policy in ("none", "global"):
        r = results["policies"][policy]
        assert r["eager_tokens_per_s"] > 0 and r["compiled_tokens_per_s"] > 0
        ratio = r["compiled_tokens_per_s"] / r["eager_tokens_per_s"]
        assert abs(r["compiled_over_eager"] - ratio) < 1e-9
        assert r["tokens_agree"]  # the same step uncompiled: the same greedy tokens
    assert results["policies"]["none"]["hf_static_tokens_per_s"] > 0
    assert "compiled/eager" in capsys.readouterr().out


def test_decode_bench_bad_options_are_clear_errors(capsys):
    assert main(["bench", "decode", "--new-tokens", "1"]) == 2
    assert "vist2: error: --new-tokens" in capsys.readouterr().err
