"""The engine: a reader pool and one writer thread that batch operations.

Every user operation is a small function ``fn(txn, *args)`` (see ``_store.ops``). The engine runs it
inside a transaction on a thread and resolves the caller's future on the event loop. It is made
of parts, each in its own module, which say how they work:

``readers``
    Reads: batched in one read transaction per drain on the reader pool, or run inline on the
    loop thread; blocking and streaming jobs on reader threads.
``writer``
    Writes: buffered per loop iteration, group-committed by the writer thread (``commit``);
    exclusive write transactions; the deadlock guard.
``txnrunner``
    The one place the writer thread begins write transactions, and the one policy for a map
    grown by another process or full (adopt, grow, run again).
``gate``
    Every read transaction of the process passes it, so the writer can resize the map when no
    transaction is open; it counts reader-thread jobs for close.
``delivery``
    The lifecycle state, the request types, and how results reach the loop.

Cancellation: an operation whose future is already cancelled when its batch starts is skipped.
Once started it runs to completion; its result is dropped.

The engine imports nothing above it: the store hands in what begins its write transactions
(a :class:`~aiolmdb._engine.txnrunner.WriteSource`: the change-log recorder), and each write request
says whether its operation is atomic.

This module is the facade: it builds the parts, binds their per-operation methods as its own
attributes (a call costs what a method of its own would), and owns the lifecycle: the state
(kept in the parts too, set only here), the loop binding, fork handling and closing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import weakref
from typing import Any, NoReturn

import lmdb

from ..errors import ClosedError, ForkedError
from .config import EngineConfig
from .delivery import CLOSED, CLOSING, FORKED, OPEN, State
from .gate import READERS_FULL_WAIT, Gate
from .metrics import BATCH_SIZE_BOUNDS, Buckets, Metrics
from .readers import FALLBACK, Fallback, Readers
from .txnrunner import WriteSource
from .writer import ABORT, COMMIT, SessionCommand, Writer, WriteSession

__all__ = [
    "ABORT",
    "COMMIT",
    "FALLBACK",
    "READERS_FULL_WAIT",
    "Engine",
    "Fallback",
    "SessionCommand",
    "WriteSession",
]

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # LMDB forbids using an environment across fork(); make every call fail clearly instead.
    for engine in list(_engines):
        engine._set_state(FORKED)


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent only on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Engine:
    """Runs operations for one ``lmdb.Environment`` on a reader pool and one writer thread."""

    def __init__(self, env: lmdb.Environment, config: EngineConfig, source: WriteSource) -> None:
        self.env = env
        self.max_key_size: int = env.max_key_size()
        self._name: str = env.path()
        self._state = OPEN
        self._loop: asyncio.AbstractEventLoop | None = None
        self.inline_reads = config.inline_reads
        # Open read snapshots (objects with release()), ended before the environment closes.
        self._snapshots: weakref.WeakSet[Any] = weakref.WeakSet()
        self._writer_done: concurrent.futures.Future[None] = concurrent.futures.Future()

        # Begins the writer's write transactions (the store's recorder: the change log and
        # on_commit hooks).
        self._source = source
        gate = self._gate = Gate(env, self._adopt_map_size)
        readers = self._readers = Readers(env, gate, config, self)
        # Last: it starts the writer thread.
        writer = self._writer = Writer(env, gate, config, self, self._source)
        _engines.add(self)

        # The parts' methods, bound as the engine's own (the per-operation ones first).
        self.submit_read = readers.submit_read
        self.read_inline = readers.read_inline
        self.submit_write = writer.submit_write
        self.release_inline = readers.release_inline
        self.run_blocking = readers.run_blocking
        self.submit_stream = readers.submit_stream
        self.submit_quiet = readers.submit_quiet
        self.call_solo = writer.call_solo
        self.start_session = writer.start_session
        self.hold_session = writer.hold_session
        self.release_session = writer.release_session
        self.check_not_holding = writer.check_not_holding
        self.begin_read = gate.begin_read
        self.try_begin_read = gate.try_begin_read
        self.end_read = gate.end_read
        self.begin_in_gate = gate.begin_in_gate
        self.resize = gate.resize
        # Writer thread only (solo items: opening and deleting databases, the change log's
        # upkeep): a write transaction under the one policy for a full or grown map.
        self.run_write = writer.runner.run
        # A write guard (replication's read-only replica, its fenced leader): see Writer.
        self.set_write_guard = writer.set_guard
        self.check_writable = writer.check_writable

    # ----------------------------------------------------------------- state
    @property
    def closed(self) -> bool:
        """True once close has begun."""
        return self._state is not OPEN

    @property
    def map_generation(self) -> int:
        """Bumped by every map resize: read transactions begun before it are invalid."""
        return self._gate.map_generation

    def check_open(self) -> None:
        """Raise ClosedError/ForkedError unless operations are accepted."""
        if self._state is not OPEN:
            self.raise_state()

    def raise_state(self) -> NoReturn:
        """Raise ClosedError or ForkedError, as the state says."""
        if self._state is FORKED:
            raise ForkedError(
                f"environment {self._name!r} was opened in another process (before fork()); "
                "LMDB forbids using it here: open environments after forking (in each "
                "process), or start processes with the 'spawn' method"
            )
        raise ClosedError(f"environment {self._name!r} is closed")

    def _set_state(self, state: State) -> None:
        self._state = state
        self._readers.set_state(state)
        self._writer.set_state(state)

    def track_snapshot(self, snapshot: Any) -> None:
        """Remember an open read snapshot (an object with release()) to end it on close."""
        self._snapshots.add(snapshot)

    # ----------------------------------------------------------------- metrics
    def metrics(self) -> Metrics:
        """A snapshot of the parts' counters (see _metrics) and of the gauges now."""
        readers, writer, committer, gate = (
            self._readers,
            self._writer,
            self._writer.committer,
            self._gate,
        )
        counts = readers.reader_counts
        read_batches = sum(c.batches for c in counts)
        table = str(self.env.readers()).splitlines()[1:]  # a header, then one line per slot
        return Metrics(
            reads=sum(c.reads for c in counts),
            read_batches=read_batches,
            inline_read_transactions=readers.inline_transactions,
            writes=committer.writes,
            write_batches=committer.batches,
            commits=committer.commits + writer.session_commits,
            write_transactions=writer.write_transactions,
            conflicts=committer.conflicts + writer.session_conflicts,
            map_resizes=gate.map_generation,
            readers_full_waits=gate.readers_full_waits,
            write_batch_sizes=committer.batch_sizes.snapshot(),
            read_batch_sizes=(
                counts[0].sizes.snapshot(*(c.sizes for c in counts[1:]))
                if counts
                else Buckets(BATCH_SIZE_BOUNDS).snapshot()
            ),
            commit_seconds=committer.commit_seconds.snapshot(),
            map_size=gate.map_size,
            read_transactions=gate.open_read_transactions,
            # A free slot shows "-" as its transaction id.
            reader_slots_used=sum(1 for line in table if not line.rstrip().endswith("-")),
            max_readers=self.env.max_readers(),
            write_queue=writer.write_queue(),
            read_queue=readers.read_queue(),
            open_write_transactions=writer.open_sessions(),
        )

    # ----------------------------------------------------------------- loop
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, bound to this engine (results are delivered to it)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            loop = self.bind_loop(loop)
        return loop

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
        """Bind ``loop`` to the engine and its parts (results are delivered to it)."""
        old = self._loop
        if old is not None and old is not loop and old.is_running() and not old.is_closed():
            raise RuntimeError(
                "this aiolmdb Environment is in use by another running event loop; "
                "use one environment per loop (or close it first)"
            )
        self._loop = loop
        self._readers.set_loop(loop)
        self._writer.set_loop(loop)
        self._source.set_loop(loop)
        return loop

    def _adopt_map_size(self) -> None:
        # Reader thread: another process grew the map; only the writer thread may resize.
        self._writer.call_solo(self._gate.adopt_map_size).result()

    # ----------------------------------------------------------------- shutdown
    def begin_close(self) -> concurrent.futures.Future[None]:
        """Stop accepting work; the writer finishes what was queued, waits for the readers,
        closes the environment. Returns a future that is done when all of that is."""
        if self._state is OPEN:
            self._set_state(CLOSING)
            self._readers.release_inline()
            self._writer.abort_sessions()
            self._writer.stop()  # submitted writes run before the stop
        elif self._state is FORKED:
            # Inherited across fork(): the threads are not ours and the environment must not be
            # touched; nothing to wait for.
            if not self._writer_done.done():
                self._writer_done.set_result(None)
        return self._writer_done

    def finish(self) -> None:
        """Writer thread, after the stop: wait for the reader jobs, close everything."""
        try:
            # A reader thread may still queue a solo (adopting another process's map size)
            # and wait for it: keep failing queued work until every reader is done.
            closed = ClosedError(f"environment {self._name!r} is closed")
            while True:
                self._writer.fail_queued(closed)
                if self._gate.no_jobs_or_wait(0.05):
                    break
            for snapshot in list(self._snapshots):
                snapshot.release()
            self._readers.shutdown()
            self.env.close()
        finally:
            self._set_state(CLOSED)
            self._writer_done.set_result(None)

    def join_writer(self) -> None:
        """Wait for the writer thread to exit (it has already signalled it is finishing)."""
        self._writer.join()
