"""What ``reads="auto"`` measures: the data file's residency, and the loop thread's major faults.

Residency
    A :class:`MappedProbe` keeps one read-only mapping of the used part of ``data.mdb`` and
    asks the kernel with ``mincore(2)``, window by window (:data:`WINDOW` bytes each), which of
    its pages are in the page cache; the few missing pages of an almost resident file are read
    there and then, so that inline reads do not fault on them. It runs on a reader
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
import threading
from collections.abc import Callable
from typing import Any, Final

try:
    import ctypes
    import ctypes.util
except ImportError:  # pragma: no cover - a Python built without ctypes: auto reads threaded
    ctypes = None  # type: ignore[assignment]

__all__ = [
    "RESIDENT",
    "TOUCH_MOST",
    "WINDOW",
    "MappedProbe",
    "major_faults",
    "physical_memory",
    "probe",
    "resident_fraction",
]

# The share of the used part of the map that must be in the page cache for reads to go inline:
# a few cold pages are tolerated (a fault there is caught by the fault counter), a cold
# region is not.
RESIDENT: Final = 0.99
# Bytes asked about at a time (a closing environment stops a check between two windows).
WINDOW: Final = 1 << 30
# A probe's mapping grows in steps of this many bytes (few remappings while the file grows).
_MAP_STEP: Final = 64 << 20
# The most missing pages an almost resident file has read before its reads go inline.
TOUCH_MOST: Final = 4096

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


class MappedProbe:
    """A residency probe that keeps ONE read-only mapping of the data file between checks.

    Mapping and unmapping take the process's address-space lock for writing, which stalls
    every thread faulting a page in meanwhile (reader threads warming a cold file); ``mincore``
    takes it only for reading. So the mapping is made once, and again only when the used part
    outgrows it (rounded up to :data:`_MAP_STEP`) or the file is replaced; :meth:`close`
    unmaps it. Calls come from one reader thread at a time (a lock keeps them apart).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._addr = 0
        self._size = 0
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the mapped file
        self._closed = False

    def __call__(
        self, path: str, length: int, stop: Callable[[], bool] | None = None
    ) -> float | None:
        """The share of the first ``length`` bytes of the file at ``path`` in the page cache
        (1.0 for an empty length), after touching the few missing pages of an almost resident
        file; None when it cannot be measured here or ``stop()`` said so between windows."""
        if _LIBC is None:
            return None
        with self._lock:
            if self._closed:
                return None
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                return None
            try:
                return self._measure(fd, length, stop)
            finally:
                os.close(fd)

    def _measure(self, fd: int, length: int, stop: Callable[[], bool] | None) -> float | None:
        assert _LIBC is not None  # checked by the caller
        c_mmap, c_mincore, _ = _LIBC
        page = mmap.PAGESIZE
        st = os.fstat(fd)
        length = min(length, st.st_size)
        if length <= 0:
            return 1.0
        if (st.st_dev, st.st_ino) != self._file or length > self._size:
            self._unmap()
            size = -(-length // _MAP_STEP) * _MAP_STEP
            addr = c_mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
            if addr is None or addr == (1 << 64) - 1:  # MAP_FAILED
                return None
            self._addr, self._size, self._file = addr, size, (st.st_dev, st.st_ino)
        pages = -(-length // page)
        vec = _create_buffer(min(WINDOW // page, pages))
        resident = 0
        missing: list[int] = []  # offsets of the first pages found missing (to touch)
        offset = 0
        while offset < length:
            if stop is not None and stop():
                return None
            size = min(WINDOW, length - offset)
            n = -(-size // page)
            if c_mincore(self._addr + offset, size, vec) != 0:
                return None
            flags = vec.raw[:n].translate(_LOW_BIT)
            resident += flags.count(1)
            at = flags.find(0)
            while at >= 0 and len(missing) < TOUCH_MOST:
                missing.append(offset + at * page)
                at = flags.find(0, at + 1)
            offset += size
        if resident < pages and (resident + len(missing)) / pages >= RESIDENT:
            # Almost resident: read the missing pages here, on this thread, so that the inline
            # reads that follow a switch do not fault on them on the loop.
            for at in missing:
                if stop is not None and stop():
                    return None
                os.pread(fd, 1, at)
            resident += len(missing)
        return resident / pages

    def _unmap(self) -> None:
        if self._size:
            assert _LIBC is not None  # a mapping was made
            _LIBC[2](self._addr, self._size)
            self._addr = self._size = 0
            self._file = None

    def close(self) -> None:
        """Unmap the file (after the check under way, if any); later calls answer None."""
        with self._lock:
            self._closed = True
            self._unmap()


def resident_fraction(
    path: str, length: int, stop: Callable[[], bool] | None = None
) -> float | None:
    """The share of the first ``length`` bytes of the file at ``path`` that is in the page
    cache (1.0 for an empty length), or None when it cannot be measured here, or when
    ``stop()`` said so between two windows. A one-off :class:`MappedProbe` (an environment
    keeps its own between checks); an almost resident file has its missing pages read."""
    probe = MappedProbe()
    try:
        return probe(path, length, stop)
    finally:
        probe.close()


# Where a cgroup's memory limit is read (v2, then v1): the page cache a container may use.
_CGROUP_LIMITS: Final = (
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
)


def physical_memory() -> int | None:
    """The memory this process may fill with page cache, in bytes: the machine's, or its
    cgroup's limit if lower; None if unknown (data larger than this can never be resident)."""
    try:
        memory: int | None = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        memory = None
    for limit_file in _CGROUP_LIMITS:
        try:
            with open(limit_file) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" (v2) or a huge number (v1) means no limit
            limit = int(text)
            memory = limit if memory is None else min(memory, limit)
        break
    return memory


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


# What engines use (replaceable in tests; read when an engine is built). Left as it is, each
# engine makes its own MappedProbe (one mapping kept between checks).
probe: Callable[[str, int, Callable[[], bool]], float | None] = resident_fraction
major_faults: Callable[[], int] | None = _thread_major_faults()
