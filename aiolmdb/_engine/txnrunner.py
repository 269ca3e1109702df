"""The write runner: the one place the writer thread begins write transactions, and the one
policy for a map that another process grew or that is full.

Beginning
    :meth:`WriteRunner.begin` begins a top-level write transaction through the
    :class:`WriteSource` the engine was given (the store's change-log recorder, which decides
    once, there, whether this transaction records its changes) and returns it with the
    function that begins a child of it. A child is always begun by its parent's function, so
    it records exactly when its parent does: no flag is read twice. Without the log or hooks
    the source returns py-lmdb's transaction and ``functools.partial(env.begin, ...)``, as
    :func:`plain_write` does for aiolmdb's own writes (``logged=False``: nothing to record).

The policy (:meth:`WriteRunner.run`)
    ``work(txn, begin_child)`` runs in a fresh top-level transaction, which commits after it.

    * ``MapResizedError`` (another process grew the map; LMDB reports it when a transaction
      begins): adopt its size (``resize(0)`` through the gate) and begin again.
    * ``MapFullError`` (the work or the commit did not fit): abort, double the map through the
      gate while ``map_growth`` is on and below ``max_map_size``, and run the work again; when
      it cannot grow, raise :meth:`WriteRunner.map_full_error`, whose message says which
      setting stopped the growth. A caller with several units (a group commit, a group of
      database opens) catches it and runs them one at a time.
    * :class:`RunAgain` raised by the work: abort and run it again (``writemap=True``, which
      has no nested transactions, replays a batch without an operation that failed).

    Anything else aborts the transaction and propagates. ``work`` must be safe to run again:
    operations are functions of the transaction alone.

Every write transaction of the writer thread goes through it: group commits, exclusive write
sessions (:meth:`begin`, and :meth:`grow_after` when their commit did not fit), database opens
and deletes, the change log's creation and trimming. Before the writer thread exists,
:func:`before_engine` is the same adoption for the reads that open an environment.

It touches the ``lmdb.Environment`` (write transactions, info, stat) and resizes only through
the callable it was given (the gate's resize). It imports nothing above the engine.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import lmdb

from .config import EngineConfig

__all__ = ["BeginChild", "IdleWork", "RunAgain", "WriteRunner", "WriteSource", "before_engine"]

log = logging.getLogger("aiolmdb")

R = TypeVar("R")
# Begins a child (nested write transaction) of the transaction it was returned with.
BeginChild = Callable[[], Any]
# What a runner runs: work(txn, begin_child) -> result.
Work = Callable[[Any, BeginChild], R]


class WriteSource(Protocol):
    """What begins the top-level write transactions of the writer thread (the store's
    change-log recorder), handed in to the engine."""

    def begin_write(self) -> tuple[Any, BeginChild]:
        """A top-level write transaction and the function that begins a child of it."""

    def set_loop(self, loop: Any) -> None:
        """The event loop the engine was bound to (changes are delivered there)."""


class IdleWork(Protocol):
    """Work the writer thread does between batches when it is due (the store's sweeper of
    expired entries), handed in to the engine. Both methods run on the writer thread."""

    def due(self) -> float | None:
        """Seconds until the work is due (<= 0: now); None when none is scheduled."""

    def run(self) -> None:
        """Do one bounded step of the work (its writes go through the runner's ``run``); it
        reports its own failures."""


def plain_write(env: lmdb.Environment) -> tuple[Any, BeginChild]:
    """A py-lmdb write transaction and the function that begins a child of it."""
    txn = env.begin(write=True)
    return txn, functools.partial(env.begin, write=True, parent=txn)


class RunAgain(Exception):
    """Raised by a runner's work: abort the transaction and run the work again."""


class WriteRunner:
    """Begins and runs the writer thread's write transactions (see the module docstring)."""

    def __init__(
        self,
        env: lmdb.Environment,
        config: EngineConfig,
        resize: Callable[[int], None],
        source: WriteSource,
    ) -> None:
        self._env = env
        self._resize = resize
        self._begin_write = source.begin_write
        self._map_growth = config.map_growth
        self._max_map_size = config.max_map_size

    def begin(self, *, logged: bool = True) -> tuple[Any, BeginChild]:
        """A top-level write transaction (through the source when ``logged``, else
        py-lmdb's) and its child-beginning function, adopting a map another process grew."""
        while True:
            try:
                return self._begin_once(logged)
            except lmdb.MapResizedError:
                self._resize(0)

    def _begin_once(self, logged: bool) -> tuple[Any, BeginChild]:
        return self._begin_write() if logged else plain_write(self._env)

    def run(
        self,
        work: Work[R],
        *,
        logged: bool = True,
        guard: contextlib.AbstractContextManager[Any] | None = None,
    ) -> R:
        """Run ``work(txn, begin_child)`` in a top-level write transaction and commit it,
        under the policy of the module docstring. ``logged=False`` for aiolmdb's own writes
        (nothing to record); ``guard`` is held from begin to commit (never while resizing)."""
        if guard is None:
            guard = contextlib.nullcontext()
        while True:
            try:
                with guard:
                    txn, begin_child = self._begin_once(logged)
                    try:
                        result = work(txn, begin_child)
                        txn.commit()
                    except BaseException:
                        txn.abort()
                        raise
                return result
            except RunAgain:
                continue
            except lmdb.MapResizedError:
                self._resize(0)  # outside the guard, as growing is
            except lmdb.MapFullError as exc:
                if not self.grow_map():
                    raise self.map_full_error(exc) from exc

    def grow_after(self, exc: lmdb.MapFullError) -> lmdb.MapFullError:
        """A transaction that cannot run again (an exclusive session) did not fit and was
        rolled back: the error to give its caller, and the map grown for the next one.
        Writer thread, with no write transaction open."""
        err = self.map_full_error(exc)
        self.grow_map()
        return err

    def map_full_error(self, exc: lmdb.MapFullError) -> lmdb.MapFullError:
        """LMDB's MapFullError says to raise ``map_size``, which aiolmdb may have outgrown
        already: say what happens next (the map grows, or which of aiolmdb's settings stopped
        the growth) and the size reached."""
        size = self._env.info()["map_size"]
        if not self._map_growth:
            advice = (
                f"the map is full at {size} bytes and map_growth=False: open the environment "
                "with a larger map_size=, or with map_growth=True"
            )
        elif self._max_map_size is not None and size >= self._max_map_size:
            advice = (
                f"the map reached max_map_size={self._max_map_size} ({size} bytes) and cannot "
                "grow further: open the environment with a larger max_map_size="
            )
        else:
            # Only a write transaction held across awaits gets here: it is rolled back, and
            # the map grows once it has ended.
            advice = (
                f"the write transaction filled the map ({size} bytes) and was rolled back; "
                "the map grows when it ends: run the transaction again"
            )
        err = lmdb.MapFullError(f"{advice} (LMDB: {exc})")
        err.__cause__ = exc
        return err

    def grow_map(self) -> bool:
        """Double the map size (up to max_map_size); False if growth is off or capped."""
        if not self._map_growth:
            return False
        size = self._env.info()["map_size"]
        limit = self._max_map_size
        if limit is not None and size >= limit:
            return False
        new = size * 2
        page = self._env.stat()["psize"]
        new = -(-new // page) * page
        if limit is not None:
            new = min(new, limit)
        self._resize(new)
        log.info("map grown from %d to %d bytes (%s)", size, new, self._env.path())
        return True


def before_engine(env: lmdb.Environment, fn: Callable[[], R]) -> R:
    """``fn()`` (a read that begins its own transaction) before the engine starts, with no
    transaction of this process open: if another process grew the map, adopt its size
    and call it again."""
    try:
        return fn()
    except lmdb.MapResizedError:
        env.set_mapsize(0)
        return fn()
