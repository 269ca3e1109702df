"""A read transaction held across awaits, begun and ended in one place.

A snapshot (``env.begin()``) and a value stream (``get_chunks`` on a database) keep one LMDB
read transaction while their user awaits between reads. :class:`HeldRead` is that
transaction's one owner:

- it begins on a reader thread inside the gate (a ``run_blocking`` job), so no map resize runs
  between the begin and reading the map generation, and tells the engine, which ends it before
  the environment closes;
- every use runs on a reader thread under its lock and first compares the map generation: a
  resize since the begin invalidates the transaction (:class:`~aiolmdb.SnapshotExpiredError`);
- :meth:`HeldRead.release` ends it from any thread without waiting: when a reader thread is
  using it right now, the release is queued to run right after that job instead.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import lmdb

from ..errors import SnapshotExpiredError, TransactionError

if TYPE_CHECKING:
    from .delivery import Txn
    from .engine import Engine

__all__ = ["HeldRead"]

R = TypeVar("R")


class HeldRead:
    """One read transaction held across awaits (see the module docstring).

    ``what`` names the holder in its errors ("snapshot"), ``again`` says what to do when a
    resize invalidated it ("begin a new snapshot").
    """

    __slots__ = (
        "__weakref__",
        "_again",
        "_ended",
        "_engine",
        "_generation",
        "_lock",
        "_txn",
        "_what",
    )

    def __init__(self, engine: Engine, what: str, again: str) -> None:
        self._engine = engine
        self._what = what
        self._again = again
        self._txn: Txn | None = None
        self._generation = -1
        self._ended = False
        # Held by the reader thread using the transaction, so release never aborts it mid-use.
        self._lock = threading.Lock()

    @property
    def ended(self) -> bool:
        """True once :meth:`release` has been called."""
        return self._ended

    def begin(self, buffers: bool = False) -> bool:
        """Reader thread, inside the gate: begin the transaction (``buffers=True``: reads
        return views into the map). False if it was released meanwhile (e.g. cancelled while
        starting): nothing is held then."""
        engine = self._engine
        txn = engine.begin_in_gate(buffers=buffers)
        with self._lock:
            if self._ended:
                txn.abort()
                return False
            self._txn = txn
            self._generation = engine.map_generation
        # From the reader job: close waits for reader jobs, so it cannot miss this one.
        engine.track_snapshot(self)
        return True

    def run(self, fn: Callable[..., R], *args: Any) -> R:
        """Reader thread: ``fn(txn, *args)`` in the held transaction, under its lock.

        TransactionError once released; SnapshotExpiredError if the map was grown since the
        begin (the transaction's view of the map is gone)."""
        with self._lock:
            txn = self._txn
            if txn is None:
                raise TransactionError(f"the {self._what} has already ended")
            if self._generation != self._engine.map_generation:
                raise SnapshotExpiredError(
                    f"the map was grown while this {self._what} was open, which invalidates "
                    f"it; {self._again}"
                )
            return fn(txn, *args)

    def release(self) -> None:
        """End the transaction (idempotent, any thread, never waits): if a reader thread is
        using it right now, the end is queued to run right after it."""
        self._ended = True
        if not self._lock.acquire(blocking=False):
            self._engine.submit_quiet(self.release)
            return
        try:
            txn, self._txn = self._txn, None
        finally:
            self._lock.release()
        if txn is not None:
            with contextlib.suppress(lmdb.Error):  # the environment may have closed under it
                txn.abort()

    def __del__(self) -> None:
        if getattr(self, "_txn", None) is not None:
            self.release()
