"""Keep freed memory in the process: glibc malloc settings for tensor-sized allocations (no torch import).

Every operator of a forward or backward pass allocates its output afresh, and on CPUs those buffers
come from the C library's ``malloc``. glibc serves a request above its mmap threshold (128 KiB at
first, raised as large blocks are freed, at most 32 MiB) with freshly mapped pages and unmaps them
on free; it also hands freed memory at the top of its heap back to the kernel once more than the
trim threshold (128 KiB) is free there. Either way the next tensor of that size lands on fresh
pages, which the kernel zeroes one 4 KiB page fault at a time on first touch. On the 2-core CPU
this project is developed on, ``benchmarks/allocator.py`` measured a U-Net forward at batch 100 (the
ARDM codec's calls) 1.26x faster with the settings below, a WaveGrad network call 1.11x and a U-Net
training step 1.13x.

:func:`keep_freed_memory` fixes the mmap threshold at 32 MiB, the trim threshold at 1 GiB and the
heap's top pad at 256 MiB, so buffers up to 32 MiB are reused from the heap instead. The cost: the
process keeps the heap of its peak until it exits (its resident size does not shrink after a
peak). Results are unchanged. The ``difflab`` command calls it at start, as do the benchmark
scripts (``benchmarks/common.py``); set ``DIFFLAB_MALLOC=default`` to keep glibc's own behaviour.
It does nothing where the C library is not glibc (macOS, Windows, musl). A preloaded jemalloc or
tcmalloc, which the PyTorch performance guides suggest for CPUs, serves the same purpose by other
means; with one preloaded, glibc's malloc no longer serves the tensors and these settings do not
matter.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 256 << 20}

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply :data:`SETTINGS` through glibc's ``mallopt`` once per process; True if they are in effect.
    False without glibc, or with ``DIFFLAB_MALLOC=default`` in the environment."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("DIFFLAB_MALLOC", "").strip().lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (present in glibc only: musl has mallopt but ignores these)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
    return _applied
