"""The gate: every read transaction of this process passes it, so the map can be resized.

LMDB allows ``set_mapsize`` only while no transaction of this process is open (it invalidates
open read transactions). The gate counts read transactions open; :meth:`Gate.resize` (the
writer thread, between write transactions) holds new ones back, waits for the count to reach
zero, resizes and bumps :attr:`Gate.map_generation` (a snapshot held across awaits compares it
to know it was invalidated).

Reader slots: when LMDB's reader table is full, a reader thread frees stale slots and waits for
this process's own read transactions to end; slots held only by other processes fail the read
after READERS_FULL_WAIT seconds.

Jobs: the gate also counts the work queued on reader threads (read drains, blocking and
streaming jobs), so that close can wait for all of it to end before closing LMDB.

It touches the ``lmdb.Environment`` (begin, reader_check, set_mapsize) and nothing else; when
another process grew the map, it asks the writer (through the callable it was given) to adopt
the new size.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import lmdb

if TYPE_CHECKING:
    from .delivery import Txn

__all__ = ["READERS_FULL_WAIT", "Gate"]

log = logging.getLogger("aiolmdb")

# How long a read waits for a reader slot held by another process (seconds).
READERS_FULL_WAIT = 0.5


class Gate:
    """Read-transaction accounting, map resizing and job counting for one environment."""

    def __init__(self, env: lmdb.Environment, ask_writer_to_adopt: Callable[[], None]) -> None:
        self._env = env
        # Reader thread: have the writer run resize(0) and wait for it.
        self._ask_writer_to_adopt = ask_writer_to_adopt
        self._cond = threading.Condition(threading.Lock())
        self._jobs = 0  # reader-thread jobs scheduled or running (drains, blocking, streams)
        self._open_txns = 0
        self._slot_waiters = 0  # reader threads waiting for a free reader slot
        self._full_logged = False  # the current wait for a slot was logged
        # True while resize waits for open transactions or runs; new ones wait meanwhile.
        self.resizing = False
        # Bumped by every resize: it invalidates read transactions held across awaits.
        self.map_generation = 0
        # Metrics: the map size (set by the writer thread), waits for a reader slot.
        self.map_size: int = env.info()["map_size"]
        self.readers_full_waits = 0

    # ----------------------------------------------------------------- read transactions
    def begin_read(self) -> Txn:
        """Begin a read transaction through the gate (waits while the map is being resized)."""
        cond = self._cond
        with cond:
            while self.resizing:
                cond.wait()
            self._open_txns += 1
        try:
            try:
                return self._env.begin()
            except (lmdb.ReadersFullError, lmdb.MapResizedError) as exc:
                return self._begin_again(exc)
        except BaseException:
            self.leave()
            raise

    def try_begin_read(self) -> Txn | None:
        """Like begin_read but never waits: None while the map is being resized (loop thread)."""
        cond = self._cond
        if not cond.acquire(blocking=False):
            return None
        try:
            if self.resizing:
                return None
            self._open_txns += 1
        finally:
            cond.release()
        try:
            return self._env.begin()
        except (lmdb.MapResizedError, lmdb.ReadersFullError):
            self.leave()
            return None  # the threaded path adopts the new size or waits for a slot
        except BaseException:
            self.leave()
            raise

    def end_read(self, txn: Txn, *, commit: bool = False) -> None:
        """End a read transaction from begin_read/try_begin_read and leave the gate (commit
        keeps database handles opened in it)."""
        try:
            if commit:
                txn.commit()
            else:
                txn.abort()
        finally:
            with self._cond:
                self._open_txns -= 1
                if self.resizing or self._slot_waiters:
                    self._cond.notify_all()

    @property
    def open_read_transactions(self) -> int:
        """Read transactions of this process open now (counted at the gate)."""
        return self._open_txns

    def enter(self) -> None:
        """Count a read transaction about to begin; wait while the map is being resized."""
        with self._cond:
            while self.resizing:
                self._cond.wait()
            self._open_txns += 1

    def leave(self) -> None:
        """Uncount a read transaction counted by enter (it has ended, or never began)."""
        with self._cond:
            self._open_txns -= 1
            if self.resizing or self._slot_waiters:
                self._cond.notify_all()

    def begin_in_gate(self, buffers: bool = False) -> Txn:
        """Begin a read transaction, already counted by enter (run_blocking jobs); with
        ``buffers=True`` its reads return views into the map (``get_chunks``)."""
        try:
            return self._env.begin(buffers=buffers)  # type: ignore[call-overload, no-any-return]
        except (lmdb.ReadersFullError, lmdb.MapResizedError) as exc:
            return self._begin_again(exc, buffers)

    def _begin_again(self, exc: BaseException, buffers: bool = False) -> Txn:
        """Counted at the gate, begin failed with ``exc``: wait for a free reader slot or adopt
        the map size another process set, then begin (still counted, also when it fails)."""
        if isinstance(exc, lmdb.ReadersFullError):
            return self._begin_when_slot_free(buffers)
        # Another process grew the map. Only the writer may resize (no transaction of this
        # process may be open meanwhile): ask it, wait, then try again.
        self.leave()
        try:
            self._ask_writer_to_adopt()
        finally:
            self.enter()
        return self._env.begin(buffers=buffers)  # type: ignore[call-overload, no-any-return]

    def _begin_when_slot_free(self, buffers: bool = False) -> Txn:
        """Reader thread, the reader table full: free stale slots (crashed processes), and
        wait for this process's own read transactions to end (more reader threads than
        ``max_readers`` is legal). When only other processes hold slots, raise after a short
        grace period instead of waiting for them."""
        deadline = time.monotonic() + READERS_FULL_WAIT
        env = self._env
        cond = self._cond
        while True:
            env.reader_check()
            try:
                txn: Txn = env.begin(buffers=buffers)  # type: ignore[call-overload]
            except lmdb.ReadersFullError:
                with cond:
                    # _open_txns counts this attempt too.
                    if self._open_txns <= 1 and time.monotonic() >= deadline:
                        raise
                    if not self._full_logged:
                        # Once per wait: the first thread to find the table full says so; the
                        # next one after a slot was had says it again.
                        self._full_logged = True
                        self.readers_full_waits += 1
                        log.warning(
                            "LMDB's reader table is full (max_readers=%d): reads wait for a "
                            "free slot (%s)",
                            env.max_readers(),
                            env.path(),
                        )
                    self._slot_waiters += 1
                    try:
                        cond.wait(0.05)
                    finally:
                        self._slot_waiters -= 1
            else:
                self._full_logged = False
                return txn

    # ----------------------------------------------------------------- map size
    def resize(self, size: int) -> None:
        """Writer thread, no write transaction open: set the map size with readers held back
        (0 adopts the size another process set)."""
        with self._cond:
            self.resizing = True
            try:
                while self._open_txns:
                    self._cond.wait()
                self._env.set_mapsize(size)
                self.map_generation += 1
                self.map_size = self._env.info()["map_size"]
                if not size:
                    log.info(
                        "map size of %d bytes adopted: another process grew the map (%s)",
                        self.map_size,
                        self._env.path(),
                    )
            finally:
                self.resizing = False
                self._cond.notify_all()

    def adopt_map_size(self, env: lmdb.Environment) -> None:
        """Writer thread (as a solo item): adopt the map size another process set."""
        self.resize(0)

    # ----------------------------------------------------------------- jobs (for close)
    def job_started(self) -> None:
        """Count a job queued for a reader thread."""
        with self._cond:
            self._jobs += 1

    def job_ended(self) -> None:
        """Uncount a job (it ended, or was never queued)."""
        with self._cond:
            self._jobs -= 1
            self._cond.notify_all()

    def no_jobs_or_wait(self, timeout: float) -> bool:
        """True if no job is queued or running; else False after waiting up to ``timeout``
        seconds (or until a job ends)."""
        with self._cond:
            if not self._jobs:
                return True
            self._cond.wait(timeout)
            return False
