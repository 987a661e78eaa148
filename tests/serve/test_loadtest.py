"""The load test against a live in-process server: small, bounded, and honest about failures."""

import json

import pytest
from serve_helpers import make_engine, serve

from vist2.cli import main
from vist2.serve.loadtest import (
    FALLBACK_TEXT,
    Outcome,
    check_loopback,
    make_prompts,
    parse_metrics,
    summarize,
)


@pytest.fixture(scope="module")
def live():
    with serve(make_engine()) as server:
        yield server


def test_the_load_test_reports_a_clean_run_and_writes_json_and_png(live, tmp_path, capsys):
    # a fixed text: prompts cut from it stay under the test server's prompt limit on any machine
    (tmp_path / "text.txt").write_text(FALLBACK_TEXT, encoding="utf-8")
    argv = [
        "bench",
        "serve",
        "--text",
        str(tmp_path / "text.txt"),
        "--url",
        live.url,
        "--out",
        str(tmp_path),
        "--streams",
        "4",
        "--requests",
        "6",
        "--max-tokens",
        "12",
        "--prompts",
        "3",
        "--memory-tokens",
        "20",
        "--memory-streams",
        "2",
    ]
    assert main(argv) == 0
    report = json.loads((tmp_path / "loadtest.json").read_text())
    busy = report["busy"]
    assert (busy["requests"], busy["completed"], busy["errors"], busy["lost"]) == (6, 6, 0, 0)
    assert busy["corrupted"] == 0
    assert busy["completion_tokens"] == 6 * 12
    assert report["alone"]["completion_tokens"] == 3 * 12
    mem = report["memory"]
    assert mem["global"]["sum_stream_peak_entries"] < mem["none"]["sum_stream_peak_entries"]
    assert (tmp_path / "loadtest.png").stat().st_size > 0
    assert "corrupted 0" in capsys.readouterr().out


def test_a_wrong_answer_counts_as_corrupted_and_a_cut_stream_as_lost():
    good = Outcome(0, 0.0, text="abc", finish="length", completion_tokens=3, ttft=0.1, end=1.0)
    wrong = Outcome(1, 0.0, text="abd", finish="length", completion_tokens=3, ttft=0.1, end=1.0)
    cut = Outcome(0, 0.0, text="ab", end=1.0)
    failed = Outcome(0, 0.0, error="APIError: boom", end=1.0)
    report = summarize([good, wrong, cut, failed], {0: "abc", 1: "abc"})
    assert (report["corrupted"], report["lost"], report["errors"]) == (1, 1, 1)
    assert report["completed"] == 2 and report["completion_tokens"] == 6


def test_only_loopback_servers_are_load_tested(capsys, tmp_path):
    assert check_loopback("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert main(["bench", "serve", "--url", "http://example.com/v1", "--out", str(tmp_path)]) == 2
    assert "loopback servers only" in capsys.readouterr().err


def test_prompts_and_metrics_parsing():
    prompts = make_prompts(4)
    assert len(set(prompts)) == 4
    assert len(prompts[0].split()) < len(prompts[-1].split())
    values = parse_metrics('# HELP x\nvist2_queue_length 3.0\nvist2_http{route="/"} 1.0\n')
    assert values == {"vist2_queue_length": 3.0}
