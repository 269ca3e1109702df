"""The readers: read operations on a pool of reader threads, or inline on the loop thread.

Batched reads
    Requests go into a deque. The first request of a burst schedules one *drain* on the reader
    executor; every request made before that drain starts joins it. A drain takes up to
    ``max_batch`` requests, runs them in ONE read transaction and hands every result back in ONE
    ``call_soon_threadsafe``. Several drains may run at once on different reader threads.

Inline reads (``inline_reads=True``)
    :meth:`Readers.read_inline` runs the operation on the loop thread itself, in a read
    transaction reused until the end of the loop iteration; it answers FALLBACK when the read
    must take the threaded path after all (the map is being resized, no reader slot is free).

Jobs
    :meth:`Readers.run_blocking` (one call alone on a reader thread, e.g. copy, sync or a
    snapshot's command) and :meth:`Readers.submit_stream` (a range read that emits items while
    it goes on reading) run outside the batches.

A read transaction that cannot begin fails every read of its batch: each gets its own copy of
the failure (``delivery.own_error``: the same class and message, chained to it), never one
shared object, and none is tried alone, since no read can make a begin fail.

Cancellation: a read whose future is already cancelled when its batch starts is skipped; once
started it runs to completion and its result is dropped.

It touches the executor (its own unless the user passed one), the gate (every read
transaction begins and ends there; every job is counted there for close) and the loop (results
go back through ``_delivery.post``).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import enum
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import lmdb

from .config import EngineConfig
from .delivery import (
    OPEN,
    EngineHooks,
    Part,
    Request,
    Result,
    as_settable,
    drop_frame_locals,
    own_error,
    post,
)
from .gate import Gate
from .metrics import ReaderCounts

if TYPE_CHECKING:
    from .delivery import Txn

__all__ = ["FALLBACK", "Fallback", "Readers"]

R = TypeVar("R")


class Fallback(enum.Enum):
    """The type of FALLBACK (an enum, so that ``result is not FALLBACK`` narrows)."""

    FALLBACK = "fallback"


# read_inline's answer when the read must take the threaded path after all.
FALLBACK: Final = Fallback.FALLBACK


class Readers(Part):
    """Runs read operations and reader-thread jobs for one environment."""

    def __init__(
        self, env: lmdb.Environment, gate: Gate, config: EngineConfig, engine: EngineHooks
    ) -> None:
        super().__init__(env, gate, config, engine)
        self._own_executor = config.executor is None
        self._executor: concurrent.futures.Executor = config.executor or (
            concurrent.futures.ThreadPoolExecutor(
                config.reader_threads, thread_name_prefix="aiolmdb-reader"
            )
        )
        self._inline_txn: Txn | None = None
        self._reads: collections.deque[Request] = collections.deque()
        self._read_scheduled = False
        # The gate's methods, bound once: a drain calls them as if they were its own.
        self._begin_read = gate.begin_read
        self._try_begin_read = gate.try_begin_read
        self._end_read = gate.end_read
        self._enter_gate = gate.enter
        self._leave_gate = gate.leave
        self._job_started = gate.job_started
        self._job_ended = gate.job_ended
        # Metrics: each reader thread counts its batches in its own ReaderCounts (no lock on
        # the way); the loop thread counts inline read transactions (one per loop iteration:
        # an inline read is too cheap to count one by one).
        self._local = threading.local()
        self.reader_counts: list[ReaderCounts] = []
        self._counts_lock = threading.Lock()
        self.inline_transactions = 0
        # The read mode ("auto" switches inline_now; the other two never change it).
        self.mode = config.read_mode
        self.inline_now = self.mode == "inline"
        self.mode_switches = 0
        self.residency = -1.0
        self.residency_checks = 0
        self.read_faults = 0
        self.deferred_reads = 0

    # ----------------------------------------------------------------- batched reads
    def submit_read(self, fn: Callable[..., R], args: tuple[Any, ...]) -> asyncio.Future[R]:
        """Queue ``fn(read_txn, *args)``; the returned future resolves on the loop."""
        if self._state is not OPEN:
            self._raise_state()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            loop = self._bind_loop(loop)
        fut = loop.create_future()
        self._reads.append((fut, fn, args))
        if not self._read_scheduled:
            self._read_scheduled = True
            self._schedule_drain()
        return fut

    def _schedule_drain(self) -> None:
        self._job_started()
        try:
            self._executor.submit(self._drain_reads)
        except BaseException:
            self._job_ended()
            self._read_scheduled = False
            raise

    def _drain_reads(self) -> None:
        """Reader thread: run up to max_batch queued reads in one read transaction."""
        try:
            reads = self._reads
            # Clear the flag BEFORE taking requests: a request appended after this point either
            # is taken by this drain or schedules a new one, so none is ever stranded.
            self._read_scheduled = False
            batch: list[Request] = []
            take = reads.popleft
            try:
                for _ in range(self._max_batch):
                    batch.append(take())
            except IndexError:
                pass
            if reads and not self._read_scheduled:
                # More than one batch is waiting: let another reader thread take the rest.
                self._read_scheduled = True
                try:
                    self._schedule_drain()
                except RuntimeError:  # executor shut down: drain the rest here
                    self._read_scheduled = False
                    batch.extend(reads)
                    reads.clear()
            if batch:
                self._run_read_batch(batch)
        finally:
            self._job_ended()

    def _thread_counts(self) -> ReaderCounts:
        """This reader thread's counts (made on its first batch)."""
        counts = ReaderCounts()
        with self._counts_lock:
            self.reader_counts = [*self.reader_counts, counts]
        self._local.counts = counts
        return counts

    def _run_read_batch(self, batch: list[Request]) -> None:
        try:
            counts: ReaderCounts = self._local.counts
        except AttributeError:
            counts = self._thread_counts()
        counts.batches += 1
        counts.reads += len(batch)
        counts.sizes.observe(len(batch))
        results: list[Result] = []
        try:
            txn = self._begin_read()
        except BaseException as exc:
            # No read of the batch caused it, so none is tried alone (a full reader table
            # already waited): each reader gets its own copy, chained to the one failure.
            results = [(fut, False, own_error(exc)) for fut, _, _ in batch]
        else:
            try:
                for fut, fn, args in batch:
                    if fut.cancelled():
                        continue
                    try:
                        results.append((fut, True, fn(txn, *args)))
                    except BaseException as exc:
                        results.append((fut, False, as_settable(exc)))
            finally:
                self._end_read(txn)
                # This frame is in the tracebacks handed over: it must not keep the
                # Transaction object (and with it the reader slot) alive.
                del txn
        post(self._loop, results)

    # ----------------------------------------------------------------- inline reads
    def read_inline(self, fn: Callable[..., R], args: tuple[Any, ...]) -> R | Fallback:
        """inline_reads mode: run ``fn`` on the loop thread in a read transaction reused until
        the end of this loop iteration; FALLBACK when it must go through a reader thread."""
        if self._state is not OPEN:
            self._raise_state()
        txn = self._inline_txn
        if txn is None:
            loop = asyncio.get_running_loop()
            if loop is not self._loop:
                loop = self._bind_loop(loop)
            txn = self._try_begin_read()
            if txn is None:
                return FALLBACK
            self._inline_txn = txn
            self.inline_transactions += 1
            # Released on the next loop iteration. A write acknowledged after this transaction
            # began is delivered by a callback queued after this one, so a task resumed by it
            # never reads from this (older) snapshot: read-your-writes holds.
            loop.call_soon(self.release_inline)
        try:
            return fn(txn, *args)
        except BaseException as exc:
            del txn  # as in _run_read_batch: the exception must not keep the transaction
            drop_frame_locals(exc)
            raise

    def release_inline(self) -> None:
        """End the reused inline read transaction, if any."""
        txn = self._inline_txn
        if txn is not None:
            self._inline_txn = None
            self._end_read(txn)

    # ----------------------------------------------------------------- jobs
    def run_blocking(self, fn: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        """Run ``fn(*args)`` alone on a reader thread (e.g. copy, sync), counted at the gate as
        a read transaction (a resize waits for it) and as a job (close waits for it)."""
        if self._state is not OPEN:
            self._raise_state()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            loop = self._bind_loop(loop)
        fut: asyncio.Future[R] = loop.create_future()

        def job() -> None:
            self._enter_gate()
            try:
                result: Result = (fut, True, fn(*args))
            except BaseException as exc:
                result = (fut, False, as_settable(exc))
            finally:
                self._leave_gate()
            post(self._loop, [result])

        self._submit_counted(job)
        return fut

    def submit_stream(
        self,
        fn: Callable[..., tuple[Any, ...] | None],
        args: tuple[Any, ...],
        on_item: Callable[[Any], None],
        on_end: Callable[[BaseException | None], None],
    ) -> None:
        """Run ``fn(read_txn, emit, *args)`` alone on a reader thread, in its own read
        transaction. Each ``emit(x)`` calls ``on_item(x)`` on the loop as soon as it is made
        (so the loop consumes while the thread goes on reading). ``fn`` should return within a
        few milliseconds (map growth waits for every read transaction to end): to go on, it
        returns the next arguments and is called again with them in a new transaction, on the
        same thread; None ends the job. Then ``on_end(None)``, or ``on_end(exc)`` if ``fn``
        raised, follows the items. Counted for close."""
        if self._state is not OPEN:
            self._raise_state()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            loop = self._bind_loop(loop)
        post_soon = loop.call_soon_threadsafe

        def emit(item: Any) -> None:
            post_soon(on_item, item)  # RuntimeError once the loop is closed: fn stops

        def job() -> None:
            error: BaseException | None = None
            todo: tuple[Any, ...] | None = args
            while todo is not None:
                try:
                    txn = self._begin_read()  # a pending map resize goes first
                except BaseException as exc:
                    error = exc
                    break
                try:
                    todo = fn(txn, emit, *todo)
                except BaseException as exc:
                    error = as_settable(exc)
                    todo = None
                finally:
                    self._end_read(txn)
                # py-lmdb frees the reader slot only with the Transaction object itself.
                del txn
            try:
                post_soon(on_end, error)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting

        self._submit_counted(job)

    def _submit_counted(self, job: Callable[[], None]) -> None:
        """Run job() on a reader thread, counted as a job at the gate (like the drains)."""

        def counted() -> None:
            try:
                job()
            finally:
                self._job_ended()

        self._job_started()
        try:
            self._executor.submit(counted)
        except BaseException:
            self._job_ended()
            raise

    def submit_quiet(self, fn: Callable[[], Any]) -> None:
        """Run fn() on a reader thread, ignoring its result (cleanup work)."""
        try:
            self._executor.submit(fn)
        except RuntimeError:  # executor already shut down: run it here
            fn()

    def read_queue(self) -> int:
        """Batched reads submitted and not yet taken by a reader thread."""
        return len(self._reads)

    def shutdown(self) -> None:
        """Close: shut the executor down if it is aiolmdb's own (a user's is left running)."""
        if self._own_executor:
            self._executor.shutdown(wait=True)
