"""`vist2 serve` and `vist2 bench serve`: argument building and handlers.

fastapi/uvicorn (and openai for the load test) are an extra: `pip install 'vist2[serve]'`. Their
absence is one clear error, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
from pathlib import Path

from vist2.errors import Vist2Error

SERVE_DEPS = ("fastapi", "uvicorn", "prometheus_client")
LOADTEST_DEPS = ("fastapi", "uvicorn", "openai", "httpx")


def require(modules: tuple[str, ...], what: str) -> None:
    """Raise a `Vist2Error` naming the extra to install if a module is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise Vist2Error(
            f"{what} needs {', '.join(missing)}, not installed here; pip install 'vist2[serve]'"
        )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def check_port_free(host: str, port: int) -> None:
    """A `Vist2Error` now rather than a uvicorn traceback later if `port` is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise Vist2Error(
                f"cannot listen on {host}:{port}: {err.strerror}; pick another --port"
            ) from None


def cmd_serve(args: argparse.Namespace) -> int:
    require(SERVE_DEPS, "vist2 serve")
    import torch
    import uvicorn

    from vist2.cli import torch_device
    from vist2.engine import Engine
    from vist2.serve.app import create_app

    device = torch_device(args.device)
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    check_port_free(args.host, args.port)
    engine = Engine.from_pretrained(args.model, dtype=dtype, device=str(device))
    name = args.served_model_name or Path(args.model).resolve().name
    app = create_app(
        engine,
        name,
        policy=args.policy,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_prompt_tokens=args.max_prompt_tokens,
        default_max_tokens=args.default_max_tokens,
    )
    print(
        f"vist2 serve: model {name!r} (policy {args.policy}) on http://{args.host}:{args.port}/v1"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_bench_serve(args: argparse.Namespace) -> int:
    require(LOADTEST_DEPS, "vist2 bench serve")
    from vist2.serve.loadtest import loadtest_main

    return loadtest_main(args)


def add_serve_command(sub) -> None:
    """Register `vist2 serve` on the top-level sub-parsers."""
    from vist2.engine import POLICIES

    p = sub.add_parser("serve", help="OpenAI-compatible server with continuous batching")
    p.add_argument("--model", required=True, help="model directory (or a training run directory)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--policy", default="global", choices=POLICIES, help="default context policy")
    p.add_argument("--max-batch", type=_positive, default=64, help="rows in the running batch")
    p.add_argument("--max-queue", type=_positive, default=256, help="waiting requests (then 429)")
    p.add_argument("--max-prompt-tokens", type=_positive, default=32768)
    p.add_argument(
        "--default-max-tokens",
        type=_positive,
        default=256,
        help="max_tokens of a chat request that gives none",
    )
    p.add_argument("--served-model-name", help="the `model` clients send (default: dir name)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info"])
    p.set_defaults(func=cmd_serve)


def add_bench_serve(bench) -> None:
    """Register `vist2 bench serve` (the load test) on the bench sub-parsers."""
    from vist2.engine import POLICIES

    p = bench.add_parser("serve", help="load test: N concurrent streaming openai clients")
    p.add_argument("--model", help="model directory to serve (a server on a free loopback port)")
    p.add_argument("--url", help="use a running server instead, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--out", required=True, help="results directory (JSON + PNG)")
    p.add_argument("--streams", type=_positive, default=64, help="concurrent clients")
    p.add_argument(
        "--requests", type=_positive, help="requests in the busy phase (default 2x streams)"
    )
    p.add_argument("--max-tokens", type=_positive, default=128)
    p.add_argument("--prompts", type=_positive, default=8, help="distinct prompts (greedy refs)")
    p.add_argument("--policy", default="global", choices=POLICIES, help="policy of the requests")
    p.add_argument("--text", help="UTF-8 text to cut prompts from (default: ../shared Moby-Dick)")
    p.add_argument("--duration", type=float, default=300.0, help="stop launching after this (s)")
    p.add_argument(
        "--memory-tokens",
        type=int,
        default=0,
        help="also run 8 streams of this many tokens under global and none (0 = skip)",
    )
    p.add_argument("--memory-streams", type=_positive, default=8)
    p.set_defaults(func=cmd_bench_serve)
