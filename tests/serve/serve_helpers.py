"""Helpers of the server tests: a tiny engine (K=8, β=4) and a live server on a loopback port."""

import socket
import threading
import time

import torch
from conftest import tiny_config

from vist2.engine import Engine
from vist2.loading import load_tokenizer, tiny_tokenizer_path

MODEL = "tiny-serve"


def make_engine() -> Engine:
    from vist2.model import VIST2Model

    torch.manual_seed(0)
    return Engine(VIST2Model(tiny_config()).eval(), load_tokenizer(tiny_tokenizer_path()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn serving `app` in a thread on a free loopback port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def serve(engine: Engine, **kwargs) -> LiveServer:
    from vist2.serve.app import create_app

    kwargs.setdefault("max_prompt_tokens", 400)
    return LiveServer(create_app(engine, MODEL, **kwargs))
