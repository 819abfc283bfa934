"""`llm-internals serve --model PATH`: the OpenAI-compatible HTTP server over the paged engine."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from llm_internals.console import console
from llm_internals.devices import add_device_arguments, describe_device, device_and_dtype
from llm_internals.errors import LLMInternalsError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
API_KEY_VARIABLE = "LLM_INTERNALS_API_KEY"
# The defaults of GuardSettings and ConnectionLimits, repeated so that `--help` need not import
# the server (and torch); a test checks they agree.
MAX_BODY_BYTES = 4 * 2**20
BODY_TIMEOUT_S = 30.0
HEADER_TIMEOUT_S = 10.0
TIMEOUT_KEEP_ALIVE_S = 5.0
MAX_CONNECTIONS = 1024


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API (completions, chat, streaming)",
        description="Serve --model (our checkpoint directory, a training run folder or an HF "
        "checkpoint directory with tokenizer.json) with the paged-KV engine: continuous "
        "batching, prefix caching. Endpoints: /v1/completions, /v1/chat/completions (with "
        "stream: true for server-sent events), /v1/models, /health, /metrics (Prometheus text; "
        "?format=json). Listens on 127.0.0.1 only unless --host says otherwise. If the engine "
        "fails, the requests in flight end with an error and a fresh engine serves the rest "
        "(after 3 failures within a minute, serve exits with status 1). Speculative decoding: "
        "--speculative-model PATH or --speculative-ngram. See docs/serving.md.",
    )
    p.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    p.add_argument("--tokenizer", type=Path, help="tokenizer file (default: MODEL/tokenizer.json)")
    p.add_argument("--served-model-name", help="the name clients use (default: the folder name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    engine = p.add_argument_group("engine")
    engine.add_argument("--kv-cache-gb", type=float, help="GiB for the KV block pool")
    engine.add_argument("--num-blocks", type=int, help="KV blocks in the pool (instead of GiB)")
    engine.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    engine.add_argument("--max-num-seqs", type=int, default=32,
                        help="sequences in a batch at most")  # fmt: skip
    engine.add_argument("--max-num-batched-tokens", type=int, default=1024,
                        help="tokens in one forward at most")  # fmt: skip
    engine.add_argument("--no-prefix-caching", action="store_true",
                        help="do not reuse the KV blocks of shared prompt prefixes")  # fmt: skip
    add_device_arguments(engine)
    spec = p.add_argument_group("speculative decoding (greedy and sampled outputs keep the "
                                "target's distribution; n > 1 requests get 400)")  # fmt: skip
    spec.add_argument("--speculative-model", type=Path, metavar="PATH",
                      help="draft model checkpoint directory: a smaller model with --model's "
                      "tokenizer that proposes tokens the target verifies "
                      "(default: none)")  # fmt: skip
    spec.add_argument("--speculative-ngram", action="store_true",
                      help="draft by prompt lookup instead: copy the tokens that followed the "
                      "last 1-3 tokens where they occurred earlier (no draft model)")  # fmt: skip
    spec.add_argument("--num-speculative-tokens", type=int, metavar="N",
                      help="draft tokens per step, at least 1 (default: 4 with a "
                      "draft)")  # fmt: skip
    spec.add_argument("--adaptive-gamma", action="store_true",
                      help="adapt each sequence's draft length to its acceptance rate, up to "
                      "--num-speculative-tokens")  # fmt: skip
    limits = p.add_argument_group("limits (beyond them: 429 for concurrency, 400 otherwise)")
    limits.add_argument("--max-concurrent", type=int, default=256,
                        help="generation requests in flight at once")  # fmt: skip
    limits.add_argument("--max-prompt-tokens", type=int,
                        help="longest prompt (default: the model's context - 1)")  # fmt: skip
    limits.add_argument("--max-tokens", type=int,
                        help="largest max_tokens (default: the model's context - 1)")  # fmt: skip
    http = p.add_argument_group("HTTP: access and slow or huge requests")
    http.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every route but "
                      "/health (default: none; also read from $LLM_INTERNALS_API_KEY)")  # fmt: skip
    http.add_argument("--allowed-hosts", help="comma-separated names the Host header may carry, "
                      "'*' for any (default: the loopback names, plus --host when it is a name "
                      "or address; required with a wildcard --host such as 0.0.0.0)")  # fmt: skip
    http.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES,
                      help="largest request body in bytes; larger gets 413")  # fmt: skip
    http.add_argument("--body-timeout", type=float, default=BODY_TIMEOUT_S,
                      help="seconds for the whole request body to arrive; then 408")  # fmt: skip
    http.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT_S,
                      help="seconds for the request line and headers to arrive; later, the "
                      "connection is closed")  # fmt: skip
    http.add_argument("--timeout-keep-alive", type=float, default=TIMEOUT_KEEP_ALIVE_S,
                      help="seconds an idle keep-alive connection stays open")  # fmt: skip
    http.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                      help="connections open at once; more are closed at once")  # fmt: skip
    http.add_argument("--enable-docs", action="store_true",
                      help="serve the API schema at /openapi.json (off by default; the /docs "
                      "page is never served: it loads scripts from a CDN)")  # fmt: skip
    p.add_argument("--chat-template", type=Path,
                   help="a Jinja chat template file (default: MODEL/tokenizer_config.json's, "
                   "else the plain 'User: ... Assistant:' template)")  # fmt: skip
    p.add_argument("--lora", action="append", default=[], metavar="NAME=DIR",
                   help="serve a LoRA adapter folder under NAME (repeatable); a request's "
                   "`model` field picks it; requests with different adapters share "
                   "batches")  # fmt: skip
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level")  # fmt: skip
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise LLMInternalsError(f"--port must be in 1..65535, got {args.port}")
    for name in ("threads", "num_blocks", "max_concurrent", "max_prompt_tokens", "max_tokens"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise LLMInternalsError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.kv_cache_gb is not None and not args.kv_cache_gb > 0:
        raise LLMInternalsError(f"--kv-cache-gb must be positive, got {args.kv_cache_gb}")
    if args.num_speculative_tokens is not None and args.num_speculative_tokens < 1:
        raise LLMInternalsError(
            f"--num-speculative-tokens must be at least 1, got {args.num_speculative_tokens}",
            hint="draft at least one token per step (4 is a common choice)",
        )
    if args.speculative_model is not None and args.speculative_ngram:
        raise LLMInternalsError("--speculative-model and --speculative-ngram exclude each other",
                                hint="give one draft source")  # fmt: skip
    if (args.num_speculative_tokens is not None or args.adaptive_gamma) and (
        args.speculative_model is None and not args.speculative_ngram
    ):
        raise LLMInternalsError(
            "--num-speculative-tokens and --adaptive-gamma need a draft",
            hint="add --speculative-model PATH or --speculative-ngram",
        )
    if args.chat_template is not None and not args.chat_template.is_file():
        raise LLMInternalsError(f"chat template file {args.chat_template} does not exist")
    if args.host in WILDCARDS and args.allowed_hosts is None:
        raise LLMInternalsError(
            f"--host {args.host!r} listens on every address, so the server cannot tell which "
            "Host header names are its own",
            hint="give --allowed-hosts NAME[,NAME...] (the names clients use), or "
            "--allowed-hosts '*' to accept any",
        )


def _lora_flags(values: list[str]) -> dict[str, Path]:
    """{NAME: DIR} from repeated --lora NAME=DIR."""
    adapters: dict[str, Path] = {}
    for value in values:
        name, sep, directory = value.partition("=")
        if not sep or not name.strip() or not directory or name.strip() in adapters:
            raise LLMInternalsError(
                f"--lora {value!r}: expected NAME=DIR with a new NAME",
                hint="--lora sql=out/sql-run/adapter (repeat --lora for more adapters)",
            )
        adapters[name.strip()] = Path(directory)
    return adapters


def _guards(args: argparse.Namespace) -> Any:
    """The HTTP guards from the flags (see inference/server/guards.py)."""
    from llm_internals.inference.server.guards import GuardSettings

    if args.allowed_hosts is not None:
        hosts = tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip())
        if not hosts:
            raise LLMInternalsError("--allowed-hosts is empty", hint="give names, or '*'")
    else:
        hosts = tuple(dict.fromkeys((*LOOPBACK, args.host)))
    return GuardSettings(api_key=args.api_key or os.environ.get(API_KEY_VARIABLE) or None,
                         allowed_hosts=hosts, max_body_bytes=args.max_body_bytes,
                         body_timeout_s=args.body_timeout)  # fmt: skip


def _chat_template(args: argparse.Namespace):
    from llm_internals.inference.server import JinjaChatTemplate, load_chat_template

    if args.chat_template is not None:
        template = JinjaChatTemplate(args.chat_template.read_text(encoding="utf-8"))
        template.render([{"role": "user", "content": "check"}])  # fail now, not per request
        return template
    return load_chat_template(args.model)


def _speculation_note(engine: Any) -> str:
    spec = engine.speculation
    if spec is None:
        return ""
    source = f"draft {spec.stats.method}"
    return f", speculative: {source}, {spec.gamma} tokens" + (
        " (adaptive)" if spec.adaptive else ""
    )


def _require_server_packages() -> None:
    try:
        import fastapi  # noqa: F401
        import jinja2  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise LLMInternalsError(
            f"the server needs the package {error.name!r}, which is not installed",
            hint="reinstall the project (make demo, or pip install -e .)",
        ) from error


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    device, dtype = device_and_dtype(args)
    _require_server_packages()
    from llm_internals.inference.server.launch import ConnectionLimits

    guards = _guards(args)
    connections = ConnectionLimits(timeout_keep_alive_s=args.timeout_keep_alive,
                                   header_timeout_s=args.header_timeout,
                                   max_connections=args.max_connections)  # fmt: skip
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from llm_internals.inference.decode_layout import use_decode_layout
    from llm_internals.inference.paged import LLM
    from llm_internals.inference.server import ServerLimits, create_app, serve
    from llm_internals.models.loading import load_model_and_tokenizer

    template = _chat_template(args)
    model, tokenizer, eos = load_model_and_tokenizer(args.model, args.tokenizer, device=device,
                                                     dtype=dtype)  # fmt: skip
    if args.lora:
        from llm_internals.adapters.multi import attach_adapters

        attach_adapters(model, _lora_flags(args.lora))
    if device.type == "cpu":  # a CPU BLAS layout choice (see decode_layout.py)
        model = use_decode_layout(model)
    draft = None
    if args.speculative_model is not None:  # loaded once; checked against --model's vocabulary
        from llm_internals.inference.paged.speculation import load_draft

        draft = load_draft(args.speculative_model, model, tokenizer)

    def new_engine() -> LLM:  # also the fresh engine after a failure
        return LLM(model, tokenizer, block_size=args.block_size, num_blocks=args.num_blocks,
                   kv_cache_gb=args.kv_cache_gb, max_num_seqs=args.max_num_seqs,
                   max_num_batched_tokens=args.max_num_batched_tokens,
                   enable_prefix_caching=not args.no_prefix_caching,
                   eos_token_id=eos, speculative_model=draft,
                   speculative_ngram=args.speculative_ngram,
                   num_speculative_tokens=args.num_speculative_tokens,
                   adaptive_gamma=args.adaptive_gamma)  # fmt: skip

    engine = new_engine()
    limits = ServerLimits(max_concurrent_requests=args.max_concurrent,
                          max_prompt_tokens=args.max_prompt_tokens,
                          max_tokens=args.max_tokens)  # fmt: skip
    name = args.served_model_name or args.model.resolve().name
    app = create_app(engine, model_name=name, tokenizer=tokenizer, chat_template=template,
                     limits=limits, engine_factory=new_engine, guards=guards,
                     enable_docs=args.enable_docs)  # fmt: skip
    loop = app.state.server.loop
    stats = engine.stats()
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    console.print(
        f"serving [bold]{name}[/bold] at {url}/v1 (context {engine.max_seq_len} tokens, "
        f"KV pool {stats.num_blocks} blocks x {stats.block_size} tokens = "
        f"{stats.kv_cache_bytes / 2**20:.1f} MiB, chat template: {template.name}, "
        f"{describe_device(device)}, {str(dtype).removeprefix('torch.')}"
        f"{_speculation_note(engine)}); Ctrl-C stops",
        soft_wrap=True,
    )
    if args.host not in LOOPBACK and guards.api_key is None:
        console.print(f"[yellow]warning:[/yellow] listening on {args.host}: other machines can "
                      "reach this server and it has no --api-key")  # fmt: skip
    serve(app, host=args.host, port=args.port, log_level=args.log_level, limits=connections,
          stop_when=lambda: loop.error is not None)  # fmt: skip
    if loop.error is not None:
        raise LLMInternalsError("the engine kept failing, so the server stopped (the traceback "
                                "is in the log above)")  # fmt: skip
    console.print("server stopped")
    return 0
