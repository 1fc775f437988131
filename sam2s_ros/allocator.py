"""glibc malloc tuning applied at process start (``sam2s_node`` and ``sam2s``), issue #17.

Why: with glibc's defaults the batched memory attention's temporaries (tens of MiB at 512²
with 3 instruments) are served by ``mmap`` and returned with ``munmap`` on every call, so
each frame page-faults them in again: ~750k minor faults per frame were measured on the
2-core AMD EPYC development machine, and element-wise ops ran 5-25x slower for it
(docs/backends.md). Keeping freed memory in the heap removes the faults.

The settings, with their source (glibc 2.36 ``malloc/malloc.c`` and mallopt(3)):

* ``M_MMAP_THRESHOLD`` (-3) = :data:`MMAP_THRESHOLD` = 32 MiB: blocks below it come from
  the heap, not from a fresh ``mmap``. 32 MiB is glibc's largest accepted value on 64-bit
  (``DEFAULT_MMAP_THRESHOLD_MAX`` = 4 MiB x sizeof(long)); mallopt refuses larger ones.
  Setting it also stops glibc's dynamic threshold adjustment.
* ``M_TRIM_THRESHOLD`` (-1) = :data:`TRIM_THRESHOLD` = 2 GiB - 1 (the largest value
  mallopt's ``int`` takes): free memory at the top of the heap is not given back to the
  kernel (which would fault it in again on the next frame). Resident memory then stays at
  the per-frame high-water mark, which the tracker needs every frame anyway (RSS stays
  flat, it does not grow).
* ``M_ARENA_MAX`` (-8) = :data:`ARENA_MAX` = 1: every thread allocates from the main
  (``brk``) arena. The node runs inference on a worker thread; a non-main arena grows in
  64 MiB ``mmap``'d heaps that glibc shrinks with ``MADV_DONTNEED`` and so faults in again,
  which the two settings above do not cover. One arena costs nothing measurable here: the
  model's threads allocate rarely (the intra-op GEMM threads work in place).

These equal ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647
MALLOC_ARENA_MAX=1``; a variable the user has set wins over the value here. Set
``SAM2S_MALLOC_TUNING=0`` to leave glibc's defaults (measurements, tests). Elsewhere than
glibc (musl, macOS, Windows) :func:`tune_allocator` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
from typing import Optional

log = logging.getLogger(__name__)

#: glibc ``mallopt`` parameter numbers (``malloc.h``)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
#: bytes: glibc's largest mmap threshold on 64-bit (4 MiB x sizeof(long))
MMAP_THRESHOLD = 32 * 1024 * 1024
#: bytes: never trim the heap top in practice (the largest value of mallopt's int argument)
TRIM_THRESHOLD = 2**31 - 1
#: one malloc arena for all threads
ARENA_MAX = 1
#: environment variable that turns the tuning off ("0")
DISABLE_ENV = "SAM2S_MALLOC_TUNING"
#: (mallopt parameter, value, glibc's own environment variable that takes precedence)
SETTINGS = (
    (M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"),
    (M_TRIM_THRESHOLD, TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_"),
    (M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX"),
)

_applied: Optional[dict[str, int]] = None


def _glibc() -> Optional[ctypes.CDLL]:
    """The C library when it is glibc (has ``gnu_get_libc_version``), else None."""
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (AttributeError on musl)
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def tune_allocator() -> dict[str, int]:
    """Apply the malloc settings of this module once per process (safe to call again).

    Call it at process start, before the model allocates (later calls still help: the
    settings apply to every later allocation).

    Returns:
        {environment-variable name: value} of the settings applied by this call or an
        earlier one; empty when nothing was applied (not glibc, ``SAM2S_MALLOC_TUNING=0``).
        Settings the user gave as glibc environment variables are left alone and not listed.
        Never raises: a refused setting is logged and skipped.
    """
    global _applied
    if _applied is not None:
        return dict(_applied)
    applied: dict[str, int] = {}
    libc = None if os.environ.get(DISABLE_ENV, "1") == "0" else _glibc()
    if libc is not None:
        for param, value, env in SETTINGS:
            if env in os.environ:
                continue
            if libc.mallopt(param, value):
                applied[env] = value
            else:
                log.warning("glibc refused mallopt(%d, %d) (%s)", param, value, env)
    _applied = applied
    log.debug("malloc tuning: %s", applied or "none (not glibc, or disabled)")
    return dict(applied)


__all__ = ["DISABLE_ENV", "SETTINGS", "tune_allocator"]
