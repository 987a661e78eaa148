"""`vist2 serve` as a command: missing extras, a taken port, SIGTERM drains the streams in flight."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from serve_helpers import free_port

from vist2.cli import main

PROMPT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


def test_missing_extras_name_the_pip_install(monkeypatch, capsys, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    assert main(["serve", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vist2: error: vist2 serve needs uvicorn")
    assert "pip install 'vist2[serve]'" in err


def test_a_taken_port_is_one_clear_error(capsys, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main(["serve", "--model", str(tmp_path), "--port", str(port)]) == 2
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


def test_a_missing_model_directory_is_one_clear_error(capsys, tmp_path):
    assert main(["serve", "--model", str(tmp_path / "nope"), "--port", str(free_port())]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_finishes_the_streams_in_flight_then_exits(tmp_path):
    assert main(["init", "--preset", "tiny", "--out", str(tmp_path / "m")]) == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "vist2.cli",
        "serve",
        "--model",
        str(tmp_path / "m"),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.ConnectError:
                time.sleep(0.1)
        body = {
            "model": "m",
            "prompt": PROMPT,
            "max_tokens": 2000,
            "stream": True,
            "ignore_eos": True,
            "stream_options": {"include_usage": True},
        }
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as resp:
            lines = resp.iter_lines()
            first = next(line for line in lines if line)
            proc.send_signal(signal.SIGTERM)  # mid-stream
            refused = False
            for _ in range(100):  # new connections are refused while the stream goes on
                try:
                    httpx.get(url + "/health", timeout=1)
                except httpx.TransportError:
                    refused = True
                    break
                time.sleep(0.05)
            rest = [line for line in lines if line]
        assert refused
        assert first.startswith("data: ")
        assert rest[-1] == "data: [DONE]"
        usage = json.loads(rest[-2].removeprefix("data: "))["usage"]
        assert usage["completion_tokens"] == 2000
        # uvicorn re-raises the signal once it has shut down gracefully
        assert proc.wait(60) in (0, -signal.SIGTERM)
        assert b"Traceback" not in proc.stderr.read()
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
