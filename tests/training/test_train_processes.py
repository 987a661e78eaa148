"""Real processes: 2 CPU processes (gloo) train the same model as one process with the same
global batch; a run killed with SIGKILL resumes to the same weights.

The 2 processes are started by torchrun (`python -m torch.distributed.run`), which accelerate
reads like its own launcher; `accelerate launch --cpu` starts several CPU processes only through
MPI (mpirun), which this machine lacks.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from train_helpers import (
    make_model_dir,
    single_thread,  # noqa: F401 -- autouse: one torch thread
    tiny_train_config,
    weights,
    write_corpus,
)

from vist2.training.checkpoint import CheckpointManager
from vist2.training.metrics import read_metrics
from vist2.training.trainer import train


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(torch.get_num_threads()),
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    return env


def train_command(stage, model_dir, data, out, config_path, *extra):
    return ["train", "--stage", stage, "--model", str(model_dir), "--data", str(data), "--out", str(out),
            "--recipe", "tiny", "--config", str(config_path), *extra]  # fmt: skip


def test_two_processes_train_the_same_model_as_one(tmp_path):
    model_dir = make_model_dir(tmp_path / "model")
    corpus = write_corpus(tmp_path / "corpus")
    # 4 sequences a step: 1 process x 2 micro-batches x 2 accumulation == 2 processes x 2 x 1
    cfg = tiny_train_config("olm", max_steps=5, save_every=0)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(cfg.to_dict()))

    train(cfg, model_dir, str(corpus), tmp_path / "one")
    launch = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "vist2.training",
    ]  # fmt: skip
    proc = subprocess.run(
        launch + train_command("olm", model_dir, corpus, tmp_path / "two", config_path),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es) x 2 x 1 accumulation" in proc.stdout

    one, two = weights(tmp_path / "one" / "model"), weights(tmp_path / "two" / "model")
    changed = [name for name in one if not torch.equal(one[name], weights(model_dir)[name])]
    assert changed, "nothing trained"
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5)

    def losses(run):
        return [r["loss"] for r in read_metrics(tmp_path / run / "metrics.jsonl")]

    assert losses("two") == pytest.approx(losses("one"), rel=1e-5)


def test_sigkill_then_resume_gives_the_same_weights(tmp_path):
    model_dir = make_model_dir(tmp_path / "model")
    corpus = write_corpus(tmp_path / "corpus")
    cfg = tiny_train_config("olm", max_steps=60, save_every=1, keep_last=2)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(cfg.to_dict()))

    run = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "vist2.training",
        *train_command("olm", model_dir, corpus, run, config_path),
    ]
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manager = CheckpointManager(run / "checkpoints")
    deadline = time.monotonic() + 120
    while manager.latest() is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)  # wherever it is: mid-step, mid-save, ...
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    stopped_at = manager.latest()
    assert stopped_at is not None and not (run / "model").exists()

    resumed = train(cfg.with_overrides({"save_every": 0}), model_dir, str(corpus), run, resume=True)
    assert resumed.steps == 60
    train(cfg.with_overrides({"save_every": 0}), model_dir, str(corpus), tmp_path / "straight")
    straight, after_kill = weights(tmp_path / "straight" / "model"), weights(run / "model")
    for name in straight:
        torch.testing.assert_close(after_kill[name], straight[name], rtol=1e-4, atol=1e-5)
