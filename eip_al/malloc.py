"""Keep freed memory in the process (glibc): the model's large tensors are not re-faulted every step.

glibc's malloc serves blocks above a dynamic threshold (128 KiB at start) with mmap and gives
them back to the OS on free; the heap top is trimmed above 128 KiB free. A model pass allocates
and frees edge tensors of megabytes (96 water molecules: ~5000 edges × 384 floats), so every
MD step or training batch page-faults its working set in again: on 2 cores this was half the
wall time of a UDD step and two thirds of a training step (BENCHMARKS.md, "allocator").
`keep_freed_memory` raises the mmap threshold to glibc's maximum (32 MiB) and keeps up to
1 GiB of freed heap, so the same blocks are reused. Blocks above 32 MiB still come from mmap.

It changes no result, only where memory comes from. It is applied once per process when the
model code is imported (`eip_al.model.eip`); ``EIP_AL_MALLOC=system`` leaves glibc's defaults
(e.g. for a host application that tunes malloc itself). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc <malloc.h>
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}

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
