"""Keeping freed memory in the process while a loop allocates the same large blocks again and again.

Why: glibc's ``malloc`` serves blocks above its mmap threshold (128 KiB, raised
dynamically up to 32 MiB) with fresh ``mmap`` calls and hands freed heap space back to
the kernel once more than twice that threshold is free at the top. A loop that allocates
and frees the same megabyte-sized temporaries -- a flow's ``log_prob`` on a 4096-row batch
makes about twenty 1.6 MB tensors, a scored chunk some 50 MB arrays -- then takes a
page fault on every 4 KiB page of every temporary, each time. On the 2-core KVM machine
this made the flows' scoring 1.3-1.7x slower than with the memory kept (docs/benchmarks.md,
"Scoring throughput"). The arithmetic is unchanged: only where the memory comes from.

:func:`retained_heap` raises both thresholds for the duration of a ``with`` block, then
restores them and returns the free memory to the kernel (``malloc_trim``): what was kept
is given back afterwards. Peak memory is that of the loop's largest live set, as before.
On a C library other than glibc it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Iterator

# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: While retained: blocks up to this size come from the heap (a chunk of 16,384 x 1,536 float32 is 100 MB) ...
RETAIN_MMAP_BYTES = 512 * 1024**2
#: ... and up to this much free heap is kept instead of being returned to the kernel.
RETAIN_TRIM_BYTES = 2 * 1024**3
#: glibc's defaults, restored afterwards (the mmap threshold then no longer moves dynamically;
#: 32 MiB is the most the dynamic rule would have raised it to).
_DEFAULT_TRIM_BYTES = 128 * 1024
_DEFAULT_MMAP_BYTES = 32 * 1024**2


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (has ``mallopt`` and ``malloc_trim``), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError):
        return None
    return libc


@contextlib.contextmanager
def retained_heap() -> Iterator[bool]:
    """Keep freed memory in the heap inside the block (module docstring); yields whether it could.

    Process-wide while active (every thread's allocations); nested use is fine (the outermost
    exit restores).
    """
    libc = _glibc()
    if libc is None:
        yield False
        return
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, RETAIN_MMAP_BYTES)
            libc.mallopt(_M_TRIM_THRESHOLD, RETAIN_TRIM_BYTES)
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_BYTES)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_BYTES)
                libc.malloc_trim(0)


_lock = threading.Lock()
_depth = 0  # nesting level of retained_heap (the settings are process-wide)
