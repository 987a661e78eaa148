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
