"""`llm-internals explore`: the web explorer (lesson pages, Model view, Engine view) on a local
port, served by uvicorn like `llm-internals serve`. See docs/explorer.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from llm_internals.console import console
from llm_internals.errors import LLMInternalsError

DEFAULT_PORT = 8010
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "explore",
        help="open the web explorer: lessons with editable inputs, a model's attention, the engine",
        description="Serve the web explorer on http://HOST:PORT (127.0.0.1 only unless --host "
        "says otherwise): every lesson rendered with typeset formulas, heatmaps with hover "
        "values, sortable tables and figures, rebuilt by the real code when you change its "
        "inputs; the Model view (tokens, attention per head, logit lens) of --model; the Engine "
        "view (block tables, KV pool, prefix-cache hits). Works offline. See docs/explorer.md.",
    )
    p.add_argument("--model", type=Path, metavar="PATH",
                   help="checkpoint directory for the Model and Engine views, ours or HF's "
                   "(default: the small trained model shipped with the package)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    p.add_argument("--log-level", default="warning",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise LLMInternalsError(f"--port must be in 1..65535, got {args.port}")
    if args.model is not None and not args.model.is_dir():
        raise LLMInternalsError(f"--model {args.model} is not a directory",
                                hint="give a checkpoint folder (config.json, model.safetensors, "
                                "tokenizer.json)")  # fmt: skip
    import uvicorn

    from llm_internals.web.app import create_app

    wildcard = args.host in ("0.0.0.0", "::", "")
    hosts = None if wildcard else tuple(dict.fromkeys((*LOOPBACK, args.host)))
    app = create_app(str(args.model) if args.model is not None else None, allowed_hosts=hosts)
    host = f"[{args.host}]" if ":" in args.host else args.host
    console.print(f"explorer at [bold]http://{host}:{args.port}/[/bold]  (Ctrl-C stops)",
                  soft_wrap=True)  # fmt: skip
    if args.host not in LOOPBACK:
        console.print(f"[yellow]warning:[/yellow] listening on {args.host}: other machines "
                      "can reach the explorer")  # fmt: skip
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
