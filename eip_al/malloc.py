"""Keep freed memory in the process (glibc): the model's large tensors are not re-faulted every step.

glibc's malloc serves blocks above a dynamic threshold (128 KiB at start, 32 MiB at most) with
mmap and gives them back to the OS on free; the heap top is trimmed once enough is free; each
thread gets its own arena, whose heaps are mmap'd 64 MiB regions. A model pass allocates and
frees edge tensors of megabytes (96 water molecules: ~5000 edges × 384 floats; four batched
288-atom boxes: hundreds of MiB), so every MD step or training batch page-faulted its working
set in again: on 2 cores half the wall time of a UDD step, two thirds of a training step, and
a batched 4 × 288-atom pass ran 3× slower than four single passes (BENCHMARKS.md, "allocator").
`keep_freed_memory` turns mmap off for allocations (`M_MMAP_MAX` 0: every block comes from the
heap and is reused), keeps up to 2 GiB of freed heap (`M_TRIM_THRESHOLD`), grows the heap in
64 MiB steps and lets all threads share the main arena (`M_ARENA_MAX` 1: walkers run in
Prefect's worker threads). The price: the process keeps its peak heap (up to 2 GiB of it
free) instead of returning it to the OS.

It changes no result, only where memory comes from. It is applied once per process when the
model code is imported (`eip_al.model.eip`); ``EIP_AL_MALLOC=system`` leaves glibc's defaults
(e.g. for a host application that tunes malloc itself). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8  # glibc <malloc.h>
SETTINGS = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1, M_TOP_PAD: 64 << 20, M_ARENA_MAX: 1}

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply `SETTINGS` with mallopt (once per process); True when glibc took them all."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if os.environ.get("EIP_AL_MALLOC", "").lower() == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in SETTINGS.items())
