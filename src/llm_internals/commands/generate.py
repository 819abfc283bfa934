"""`llm-internals generate --model PATH --prompt TEXT`: stream a model's continuation (or, for an
encoder-decoder such as Marian, its translation of the prompt)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from llm_internals.adapters import load_adapter, merge_and_unload
from llm_internals.console import console
from llm_internals.devices import add_device_arguments, describe_device, device_and_dtype
from llm_internals.errors import LLMInternalsError
from llm_internals.inference.decode_layout import use_decode_layout
from llm_internals.inference.generate import Timing, stream
from llm_internals.inference.generation_request import is_seq2seq
from llm_internals.inference.params import SamplingParams
from llm_internals.inference.speculative.config import DEFAULT_NGRAM, check_same_tokenizer
from llm_internals.inference.speculative.stats import SpeculativeStats
from llm_internals.models.loading import load_model_and_tokenizer


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate text from a checkpoint, streaming it to the terminal",
        description="Continue --prompt with a model: our checkpoint directory (from `train`, a "
        "step-* folder or the run folder) or an HF checkpoint directory (config.json + "
        "safetensors; GPT-2, Llama, Mistral, Qwen2, Qwen3, and Marian encoder-decoders). The "
        "tokenizer is the directory's tokenizer.json unless --tokenizer is given. Marian "
        "directories ship sentencepiece files (source.spm, vocab.json) that our tokenizer does "
        "not read: give the source as --prompt-ids and the output is printed as token ids. "
        "Prints tokens/s at the end; --no-cache recomputes the whole sequence at every step, "
        "for comparison.",
    )
    p.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="text to continue (or to translate)")
    source.add_argument(
        "--prompt-ids",
        help="the prompt as token ids, e.g. '12,7,99' (no tokenizer needed; output as ids)",
    )
    p.add_argument("--tokenizer", type=Path, help="tokenizer file (default: MODEL/tokenizer.json)")
    p.add_argument(
        "--adapter",
        type=Path,
        help="a LoRA adapter folder (from `finetune --out DIR`, or PEFT's) merged into --model",
    )
    p.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate (100)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in (0, 1] (1 = off)")
    p.add_argument("--min-p", type=float, default=0.0, help="min-p in [0, 1] (0 = off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 0 (1 = off)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, help="seed for reproducible sampling")
    p.add_argument("--no-cache", action="store_true", help="recompute everything at every step")
    p.add_argument(
        "--sliding-window",
        action="store_true",
        help="past the model's context, keep its last max_seq_len tokens and go on (as "
        "nanoGPT's sample does; each step then recomputes the window without a cache); "
        "default: stop when the context window is full",
    )
    draft = p.add_mutually_exclusive_group()
    draft.add_argument(
        "--draft-model",
        type=Path,
        help="speculative decoding with this smaller checkpoint (same tokenizer) as the draft; "
        "the output distribution stays the target's",
    )
    draft.add_argument(
        "--ngram",
        action="store_true",
        help="speculative decoding with prompt lookup: draft the tokens that followed the last "
        "n-gram earlier in the text (no draft model)",
    )
    p.add_argument(
        "--num-speculative-tokens",
        type=int,
        default=4,
        help="draft tokens per round, gamma (with --adaptive-gamma: the most) (default: 4)",
    )
    p.add_argument(
        "--adaptive-gamma",
        action="store_true",
        help="follow the running acceptance rate: draft fewer tokens when they are rejected",
    )
    p.add_argument(
        "--ngram-min",
        type=int,
        default=DEFAULT_NGRAM[0],
        help=f"shortest n-gram --ngram matches (default: {DEFAULT_NGRAM[0]})",
    )
    p.add_argument(
        "--ngram-max",
        type=int,
        default=DEFAULT_NGRAM[1],
        help=f"longest n-gram --ngram matches (default: {DEFAULT_NGRAM[1]})",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_device_arguments(p)
    p.set_defaults(func=run)


def parse_prompt_ids(text: str) -> list[int]:
    """'12,7 99' -> [12, 7, 99] (commas and/or spaces)."""
    parts = text.replace(",", " ").split()
    try:
        ids = [int(part) for part in parts]
    except ValueError:
        raise LLMInternalsError(
            f"--prompt-ids must be integers separated by commas or spaces, got {text!r}"
        ) from None
    if not ids or any(i < 0 for i in ids):
        raise LLMInternalsError(f"--prompt-ids must be non-negative token ids, got {text!r}")
    return ids


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads <= 0:
            raise LLMInternalsError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    params = SamplingParams(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        stop=tuple(args.stop),
    )
    prompt_ids = None if args.prompt_ids is None else parse_prompt_ids(args.prompt_ids)
    device, dtype = device_and_dtype(args)
    model, tokenizer, eos = load_model_and_tokenizer(
        args.model, args.tokenizer, allow_seq2seq=True, require_tokenizer=prompt_ids is None,
        device=device, dtype=dtype,
    )  # fmt: skip
    if args.adapter is not None:
        load_adapter(model, args.adapter)
        model = merge_and_unload(model)
    if device.type == "cpu":  # a CPU BLAS layout choice (see decode_layout.py)
        model = use_decode_layout(model)
    if prompt_ids is not None:
        tokenizer = None  # ids in, ids out
    if tokenizer is None and params.stop:
        raise LLMInternalsError("--stop needs a tokenizer (it matches text)")
    draft_model = None if args.draft_model is None else load_draft(args, tokenizer, device, dtype)
    stats = SpeculativeStats()
    timing = Timing()
    chunks = stream(
        model,
        tokenizer,
        args.prompt if prompt_ids is None else prompt_ids,
        max_new_tokens=args.max_new_tokens,
        params=params,
        use_cache=not args.no_cache,
        eos_token_id=eos,
        timing=timing,
        sliding_window=args.sliding_window,
        draft_model=draft_model,
        ngram=(args.ngram_min, args.ngram_max) if args.ngram else False,
        num_speculative_tokens=args.num_speculative_tokens,
        adaptive_gamma=args.adaptive_gamma,
        speculative_stats=stats,
    )
    shown_prompt = args.prompt if prompt_ids is None else " ".join(map(str, prompt_ids))
    separator = "\n" if is_seq2seq(model) else ("" if prompt_ids is None else " ")
    console.print(shown_prompt + separator, style="dim", end="", markup=False, highlight=False)
    started = time.perf_counter()
    reason = None
    for chunk in chunks:
        text = chunk.text if tokenizer is not None else f"{chunk.token_id} "
        if tokenizer is None and chunk.finish_reason in ("eos", "stop"):
            text = ""  # the eos/stop token is not part of the output
        console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
        reason = chunk.finish_reason or reason
    wall = time.perf_counter() - started
    console.print()
    if reason == "context":
        reason = (f"context window ({model.config.max_seq_len} tokens) reached; pass "
                  "--sliding-window to continue")  # fmt: skip
    decode_rate = timing.decode_steps / timing.decode_s if timing.decode_s > 0 else 0.0
    console.print(
        f"[dim]{timing.tokens} tokens in {wall:.2f} s: {timing.tokens / wall:.1f} tokens/s "
        f"(prefill {timing.prefill_s * 1e3:.0f} ms, decode {decode_rate:.1f} "
        f"{'target forwards' if stats.rounds else 'tokens'}/s, "
        f"{'no cache' if args.no_cache else 'KV cache'}, {describe_device(device)}, "
        f"{str(dtype).removeprefix('torch.')}); finished: {reason}[/dim]",
        soft_wrap=True,
    )
    if draft_model is not None or args.ngram:
        console.print(f"[dim]{stats.summary()}[/dim]", soft_wrap=True)
    return 0


def load_draft(
    args: argparse.Namespace, tokenizer: Any | None, device: torch.device, dtype: torch.dtype
) -> torch.nn.Module:
    """The --draft-model checkpoint, on the target's device and dtype; its tokenizer (if the
    folder has one) must match the target's."""
    draft, draft_tokenizer, _ = load_model_and_tokenizer(
        args.draft_model, require_tokenizer=False, device=device, dtype=dtype
    )
    if tokenizer is not None and draft_tokenizer is not None:
        check_same_tokenizer(tokenizer, draft_tokenizer, draft.config.vocab_size)
    return use_decode_layout(draft) if device.type == "cpu" else draft
