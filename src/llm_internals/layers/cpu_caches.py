"""This CPU's data caches, read from the operating system: the CPU's "SRAM" for the IO model.

On Linux each cache of cpu0 is a folder /sys/devices/system/cpu/cpu0/cache/indexN holding `level`
(1, 2, 3), `type` (Data, Instruction, Unified) and `size` ("48K", "2048K", "300M"). Instruction
caches hold code, not tensors, and are left out. Where that folder is missing or unreadable
(macOS, Windows, some containers) the result is empty and `source` says so; callers then show
"unknown" rather than guessing a size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SYSFS_CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


@dataclass(frozen=True)
class CpuCache:
    """One data (or unified) cache level of one core: `size_bytes` as the OS reports it."""

    level: int
    kind: str
    size_bytes: int

    @property
    def label(self) -> str:
        return f"L{self.level}{'d' if self.kind == 'Data' else ''}"


@dataclass(frozen=True)
class CpuCaches:
    caches: tuple[CpuCache, ...]
    source: str

    def size(self, level: int) -> int | None:
        """Bytes of the data cache at `level`, or None when the OS did not report it."""
        return next((c.size_bytes for c in self.caches if c.level == level), None)


def parse_size(text: str) -> int:
    """'48K' -> 49152, '2048K' -> 2097152, '300M' -> 314572800, '512' -> 512 (sysfs units are
    binary: K = 1024)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, flags=re.IGNORECASE)
    if match is None:
        raise ValueError(f"cache size {text!r} is not a number with an optional K/M/G unit")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def read_cpu_caches(cache_dir: Path = SYSFS_CACHE_DIR) -> CpuCaches:
    """The data and unified caches under `cache_dir` (cpu0), smallest level first; an empty
    result with the reason in `source` when the folder cannot be read."""
    caches = []
    try:
        folders = sorted(cache_dir.glob("index*"))
        for folder in folders:
            kind = (folder / "type").read_text().strip()
            if kind == "Instruction":
                continue
            level = int((folder / "level").read_text().strip())
            caches.append(CpuCache(level, kind, parse_size((folder / "size").read_text())))
    except (OSError, ValueError) as error:
        return CpuCaches((), f"not readable from {cache_dir} ({error})")
    if not caches:
        return CpuCaches((), f"no cache folders under {cache_dir}")
    return CpuCaches(tuple(sorted(caches, key=lambda c: c.level)), str(cache_dir))
