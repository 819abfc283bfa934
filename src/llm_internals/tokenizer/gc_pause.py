"""Pausing Python's cyclic garbage collector during allocation-heavy loops.

Encoding a corpus or training BPE allocates millions of small lists and strings and creates no
reference cycles. The cyclic collector still runs every few hundred container allocations and
re-scans the growing heap: encoding 187k lines into lists ran 2-3x slower with it, training
about 20% slower. Reference counting frees everything anyway.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic GC inside the block; restore the previous state afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
