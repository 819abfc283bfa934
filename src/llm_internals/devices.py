"""Which device and dtype to run on: "auto" picks CUDA, then Apple's MPS, then the CPU.

Every command that runs a model takes `--device` (auto, cpu, cuda, cuda:N, mps) and `--dtype`
(auto, float32, bfloat16, float16). "auto" dtype is float32: reduced precision is a choice the
user makes, and on the CPU it is refused for float16 (most CPU kernels lack it; results would be
slow and different from the tests' reference). Library functions take `device=` wherever they
create tensors (caches, block pools, masks, RoPE tables, generators) and default to the device of
the model or input they are given.
"""

from __future__ import annotations

import torch

from llm_internals.errors import LLMInternalsError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """Device kinds usable here, best first (always ends with "cpu")."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if mps_available():
        found.append("mps")
    return [*found, "cpu"]


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """A torch.device for a user's choice; "auto"/None picks the best available. A device that
    is not here is an LLMInternalsError naming it and the devices that are."""
    if isinstance(name, torch.device):
        name = str(name)
    if name is None or name == "auto":
        return torch.device(available_devices()[0])
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LLMInternalsError(
            f"unknown device {name!r}", hint="use --device auto, cpu, cuda, cuda:N or mps"
        ) from None
    here = ", ".join(available_devices())
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LLMInternalsError(
                f"--device {name!r}: this torch sees no CUDA GPU (available here: {here})",
                hint="use --device auto (the best available) or --device cpu",
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LLMInternalsError(
                f"--device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here, "
                f"numbered from 0",
                hint="use --device cuda (the current one) or cuda:N with a smaller N",
            )
    elif device.type == "mps" and not mps_available():
        raise LLMInternalsError(
            f"--device {name!r}: MPS is not available (available here: {here})",
            hint="use --device auto (the best available) or --device cpu",
        )
    elif device.type not in ("cpu", "cuda", "mps", "meta"):
        raise LLMInternalsError(
            f"unsupported device {name!r}", hint="use --device auto, cpu, cuda, cuda:N or mps"
        )
    return device


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The parameter dtype for a user's choice on `device` ("auto"/None: float32)."""
    if isinstance(name, torch.dtype):
        dtype = name
    elif name is None or name == "auto":
        return torch.float32
    else:
        key = DTYPE_ALIASES.get(name, name)
        if key not in DTYPES:
            raise LLMInternalsError(
                f"unknown dtype {name!r}",
                hint=f"use --dtype auto, {', '.join(DTYPES)} (or bf16, fp16)",
            )
        dtype = DTYPES[key]
    if dtype == torch.float16 and device.type == "cpu":
        raise LLMInternalsError(
            "float16 on the CPU is refused: most CPU kernels lack it",
            hint="use --dtype bfloat16 or float32 on the CPU, or float16 on a GPU",
        )
    return dtype


def add_device_arguments(parser, *, dtype: bool = True, dtype_help: str = "") -> None:
    """Add --device (and --dtype) to an argparse parser, with help text and choices;
    `dtype_help` says what the dtype applies to where that is not the whole command."""
    parser.add_argument(
        "--device",
        default="auto",
        help="where to run: auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps "
        "(default: auto)",
    )
    if dtype:
        parser.add_argument(
            "--dtype",
            default="auto",
            choices=["auto", *DTYPES, *DTYPE_ALIASES],
            help="parameter dtype; auto = float32. bfloat16/float16 halve memory on a GPU"
            f"{dtype_help} (default: auto)",
        )


def device_and_dtype(args) -> tuple[torch.device, torch.dtype]:
    """The device and dtype an argparse namespace from `add_device_arguments` asks for (a
    namespace without --dtype gets float32)."""
    device = resolve_device(args.device)
    return device, resolve_dtype(getattr(args, "dtype", "auto"), device)


def describe_device(device: torch.device) -> str:
    """'cpu', 'cuda:0 (NVIDIA H200)' or 'mps': for the line a command prints."""
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (for timing); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
