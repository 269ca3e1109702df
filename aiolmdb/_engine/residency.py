"""What ``reads="auto"`` measures: the data file's residency, and the loop thread's major faults.

Residency
    :func:`resident_fraction` maps the used part of ``data.mdb`` read-only, window by window
    (:data:`WINDOW` bytes each, so a 100 GB file never needs one huge mapping), and asks the
    kernel with ``mincore(2)`` which of its pages are in the page cache. It runs on a reader
    thread, never on the loop: ``mincore`` walks the page cache, costing time proportional to
    the file's size (docs/performance.md has the figures). ``None`` means "cannot tell": no
    ``mincore`` (not Linux or macOS), no ctypes, a mapping that failed.

Faults
    :data:`major_faults` is ``getrusage(RUSAGE_THREAD).ru_majflt`` of the calling thread (Linux
    only; ``None`` elsewhere): the readers take it when the loop iteration's inline read
    transaction begins and when it ends, two system calls per loop iteration.

Both are module attributes read when an engine is built, so a test can replace them
(``monkeypatch.setattr(residency, "probe", ...)``) without evicting the page cache.
"""

from __future__ import annotations

import mmap
import os
import sys
from collections.abc import Callable
from typing import Any, Final

try:
    import ctypes
    import ctypes.util
except ImportError:  # pragma: no cover - a Python built without ctypes: auto reads threaded
    ctypes = None  # type: ignore[assignment]

__all__ = [
    "RESIDENT",
    "WINDOW",
    "major_faults",
    "physical_memory",
    "probe",
    "resident_fraction",
]

# The share of the used part of the map that must be in the page cache for reads to go inline:
# a few cold pages are tolerated (a fault there is caught by the fault counter), a cold
# region is not.
RESIDENT: Final = 0.99
# Bytes mapped (and asked about) at a time.
WINDOW: Final = 1 << 30

_PROT_READ = 1
_MAP_SHARED = 1


def _load_mincore() -> tuple[Callable[..., int], Callable[..., int], Callable[..., int]] | None:
    """libc's mmap, mincore and munmap through ctypes, or None where that is uncertain."""
    if ctypes is None or not (sys.platform.startswith("linux") or sys.platform == "darwin"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        c_mmap, c_mincore, c_munmap = libc.mmap, libc.mincore, libc.munmap
    except (OSError, AttributeError):
        return None
    c_mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int64,  # off_t: 64 bits on the 64-bit platforms LMDB maps large files on
    ]
    c_mmap.restype = ctypes.c_void_p
    c_mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    c_mincore.restype = ctypes.c_int
    c_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    c_munmap.restype = ctypes.c_int
    return c_mmap, c_mincore, c_munmap


_LIBC = _load_mincore() if sys.maxsize > 2**32 else None


def _create_buffer(size: int) -> Any:
    return ctypes.create_string_buffer(size)


# mincore's vector: bit 0 says "resident"; macOS sets other bits too (referenced, modified,
# paged out), so only bit 0 is counted.
_LOW_BIT: Final = bytes(b & 1 for b in range(256))


def resident_fraction(path: str, length: int) -> float | None:
    """The share of the first ``length`` bytes of the file at ``path`` that is in the page
    cache (1.0 for an empty length), or None when it cannot be measured here."""
    if _LIBC is None:
        return None
    c_mmap, c_mincore, c_munmap = _LIBC
    page = mmap.PAGESIZE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        length = min(length, os.fstat(fd).st_size)
        if length <= 0:
            return 1.0
        pages = -(-length // page)
        resident = 0
        vec = _create_buffer(min(WINDOW // page, pages))
        offset = 0
        while offset < length:
            size = min(WINDOW, length - offset)
            addr = c_mmap(None, size, _PROT_READ, _MAP_SHARED, fd, offset)
            if addr is None or addr == (1 << 64) - 1:  # MAP_FAILED
                return None
            try:
                n = -(-size // page)
                if c_mincore(addr, size, vec) != 0:
                    return None
            finally:
                c_munmap(addr, size)
            resident += vec.raw[:n].translate(_LOW_BIT).count(1)
            offset += size
        return resident / pages
    finally:
        os.close(fd)


def physical_memory() -> int | None:
    """The machine's memory in bytes, or None if unknown (data larger than this can never be
    resident)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _thread_major_faults() -> Callable[[], int] | None:
    try:
        import resource

        who = resource.RUSAGE_THREAD  # Linux only
        getrusage = resource.getrusage
        getrusage(who)
    except (ImportError, AttributeError, OSError):
        return None

    def faults() -> int:
        """Major page faults of the calling thread so far."""
        return getrusage(who).ru_majflt

    return faults


# What engines use (replaceable in tests; read when an engine is built).
probe: Callable[[str, int], float | None] = resident_fraction
major_faults: Callable[[], int] | None = _thread_major_faults()
