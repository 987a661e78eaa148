"""`vist2 bench efficiency --quick`: the figures are all there and sane (no timing asserted)."""

import json

from vist2.cli import main


def test_quick_efficiency_benchmark_writes_sane_figures(tmp_path, capsys):
    assert main(["bench", "efficiency", "--quick", "--out", str(tmp_path)]) == 0
    for name in ("efficiency.json", "efficiency.md", "long_context.png", "long_writing.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    results = json.loads((tmp_path / "efficiency.json").read_text())
    assert {"device", "dtype", "torch", "transformers"} <= set(results["environment"])

    by = {(r["context_tokens"], r["policy"]): r for r in results["long_context"]}
    longest = max(n for n, _ in by)
    none, glob = by[(longest, "none")], by[(longest, "global")]
    k, beta = results["model"]["chunk_tokens"], results["model"]["visual_tokens_per_page"]
    # the prompt's cache shrinks to about β/K of the text (plus a raw tail shorter than K)
    assert glob["peak_cache_bytes"] / none["peak_cache_bytes"] <= beta / k + 0.05
    assert glob["prefill_flops"] < none["prefill_flops"]
    for r in results["long_context"]:
        assert r["ttft_s"] > 0 and r["decode_tokens_per_s"] > 0
        if "flops_counted_over_analytic" in r:  # analytic FLOPs agree with FlopCounterMode
            assert abs(r["flops_counted_over_analytic"] - 1) < 0.01

    writing = results["long_writing"]["policies"]
    last = {p: d["at_marks"][-1] for p, d in writing.items()}
    assert (
        last["global"]["cache_bytes"] < last["prompt"]["cache_bytes"] <= last["none"]["cache_bytes"]
    )
    assert all(m["decode_tokens_per_s"] > 0 for d in writing.values() for m in d["at_marks"])
    assert "Long writing" in (tmp_path / "efficiency.md").read_text()
    assert "Crossovers" in capsys.readouterr().out


def test_a_killed_run_keeps_every_completed_point(tmp_path, monkeypatch):
    """Results are written after each point: stop the run in its second writing mark and the
    JSON holds the context sweep and the first mark, flagged partial."""
    import pytest

    from vist2.bench.efficiency import EfficiencyBench, EfficiencyConfig, run_efficiency

    text = tmp_path / "text.txt"
    text.write_text("It was the best of times, it was the worst of times. " * 400)
    config = EfficiencyConfig.quick(
        text=str(text), context_lengths=(128,), writing_new_tokens=600, policies=("none", "global")
    )
    point = EfficiencyBench._writing_point

    def killed_at_second_mark(self, run, policy, n, shape):
        if n > 256:
            raise KeyboardInterrupt
        return point(self, run, policy, n, shape)

    monkeypatch.setattr(EfficiencyBench, "_writing_point", killed_at_second_mark)
    with pytest.raises(KeyboardInterrupt):
        run_efficiency(config, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "efficiency.json").read_text())
    assert saved["complete"] is False
    assert {r["policy"] for r in saved["long_context"]} == {"none", "global"}
    marks = {p: d["at_marks"] for p, d in saved["long_writing"]["policies"].items()}
    assert [m["generated_tokens"] for m in marks["none"]] == [256]
    assert [m["generated_tokens"] for m in marks["global"]] == [256]
    assert "Partial results" in (tmp_path / "out" / "efficiency.md").read_text()


def test_scenarios_pick_what_runs(tmp_path):
    from vist2.bench.efficiency import EfficiencyConfig, run_efficiency

    text = tmp_path / "text.txt"
    text.write_text("Call me Ishmael. Some years ago, never mind how long precisely. " * 300)
    config = EfficiencyConfig.quick(
        text=str(text), context_lengths=(128,), scenarios=("context",), count_flops_up_to=128
    )
    results = run_efficiency(config, tmp_path / "out")
    assert results["complete"] and results["long_context"] and not results["long_writing"]
    assert (tmp_path / "out" / "long_context.png").is_file()
    assert not (tmp_path / "out" / "long_writing.png").exists()
