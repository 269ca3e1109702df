"""The readers: read operations on a pool of reader threads, or inline on the loop thread.

Batched reads
    Requests go into a deque. The first request of a burst schedules one *drain* on the reader
    executor; every request made before that drain starts joins it. A drain takes up to
    ``max_batch`` requests, runs them in ONE read transaction and hands every result back in ONE
    ``call_soon_threadsafe``. Several drains may run at once on different reader threads.

Inline reads (``reads="inline"``)
    :meth:`Readers.read_inline` runs the operation on the loop thread itself, in a read
    transaction reused until the end of the loop iteration; it answers FALLBACK when the read
    must take the threaded path after all (the map is being resized, no reader slot is free).

Adaptive reads (``reads="auto"``, the default)
    :meth:`Readers.read_auto` reads inline while ``inline_now`` is set, else answers FALLBACK.
    ``inline_now`` follows the data file's residency, measured by a *check*: a job on a reader
    thread (``mincore`` over the used part of ``data.mdb``, see ``residency``) whose answer is
    applied on the loop. It starts False (threaded) and turns True when a check finds at least
    ``residency.RESIDENT`` of the file in the page cache; it turns False again when a check
    finds less, or when the loop thread's major-fault count (taken when the iteration's inline
    read transaction begins and when it is released) rose meanwhile: then a check runs at once.
    Checks repeat on a timer, often while threaded (to come back soon) and rarely while inline
    (a fault is the quicker signal there), never more than about 1 % of one thread's time.

    Fairness: an inline read completes without suspending its task, so a task awaiting gets in
    a loop would keep every other task and timer waiting. Every ``_CHECK_EVERY`` inline reads,
    ``read_auto`` looks at the clock; once the iteration's inline work passed ``_BUDGET``
    seconds, each later read of the iteration is *deferred*: ``submit_read_auto`` reads it at
    once, inline, but parks its result; ``_unpark`` hands parked results over, oldest first,
    their tasks resuming in the next iteration, after the loop's timers and I/O: one at a
    time in an iteration that spent its budget, twice as many as the last time in one that
    did not. So tasks reading without pause take turns of about a budget each (a turn
    costs one suspension, however many tasks wait), and many light tasks parked together
    drain in a few iterations. (Read at once, a deferred read is never stranded by a close.)

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
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from threading import get_ident
from typing import TYPE_CHECKING, Any, Final, TypeVar

import lmdb

from . import residency
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

_log = logging.getLogger("aiolmdb")

# Fairness in auto mode: the loop gets a turn after about this much inline work per iteration,
_BUDGET: Final = 0.001
# looking at the clock once every this many inline reads (a read costs about a microsecond).
_CHECK_EVERY: Final = 32
# The most parked reads handed back in one loop iteration.
_UNPARK_MOST: Final = 1024
# Residency checks: the least time between two (seconds) while threaded and while inline, and
# how many times its own duration a check waits before the next (so checks of a large file
# stay near 1 % of one reader thread). While threaded, the wait is capped at
# _THREADED_RECHECK_MOST (or 10 times the check's duration, if longer), so that reads of a
# warming file return inline within about half a second of its being cached.
_THREADED_RECHECK: Final = 0.25
_THREADED_RECHECK_MOST: Final = 0.5
_INLINE_RECHECK: Final = 5.0
_RECHECK_COST_FACTOR: Final = 100
_THREADED_COST_FACTOR: Final = 10


def recheck_delay(inline: bool, cost: float) -> float:
    """Seconds until the next residency check, after one that took ``cost`` seconds."""
    if inline:
        return max(_INLINE_RECHECK, cost * _RECHECK_COST_FACTOR)
    return min(
        max(_THREADED_RECHECK, cost * _RECHECK_COST_FACTOR),
        max(_THREADED_RECHECK_MOST, cost * _THREADED_COST_FACTOR),
    )


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
        # Auto mode's machinery (loop thread only, but for the check job itself).
        # The default probe keeps one mapping of the data file for this environment's life.
        self._mapped_probe: residency.MappedProbe | None = None
        self._probe = residency.probe
        if self.mode == "auto" and self._probe is residency.resident_fraction:
            self._probe = self._mapped_probe = residency.MappedProbe()
        self._major_faults = residency.major_faults if self.mode == "auto" else None
        self._faults_at_begin = 0
        self._deadline = 0.0
        self._countdown = _CHECK_EVERY
        self._deferring = False
        self._parked: collections.deque[Result] = collections.deque()
        self._unpark_scheduled = False
        self._unpark_count = 1
        self._check_timer: asyncio.TimerHandle | None = None
        self._checking = False
        self._check_again = False
        self._data_file: str | None = None

    def set_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Engine only: the engine was bound to ``loop`` (auto mode: check residency now)."""
        super().set_loop(loop)
        if self.mode == "auto":
            # A check begun under another loop answers to that one, and reads parked there
            # had their tasks on it: start afresh.
            self.stop_checks()
            self._checking = False
            self._parked.clear()
            self._unpark_scheduled = False
            self._unpark_count = 1
            self._recheck(0.0)

    # ----------------------------------------------------------------- batched reads
    def submit_read(self, fn: Callable[..., R], args: tuple[Any, ...]) -> asyncio.Future[R]:
        """Queue ``fn(read_txn, *args)``; the returned future resolves on the loop."""
        if self._state is not OPEN:
            self._raise_state()
        loop = self._loop
        # An asyncio loop running in this thread is the running loop (one per thread): cheaper
        # to tell than asyncio.get_running_loop(), a getpid() system call before Python 3.12.
        if loop is None or getattr(loop, "_thread_id", None) != get_ident():
            running = asyncio.get_running_loop()
            if running is not loop:
                loop = self._bind_loop(running)
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
        """End the reused inline read transaction, if any (auto mode: a major fault on the loop
        thread since it began moves the reads to the reader threads)."""
        txn = self._inline_txn
        if txn is not None:
            self._inline_txn = None
            self._end_read(txn)
            self._deferring = False
            faults = self._major_faults
            if faults is not None and faults() != self._faults_at_begin:
                self.read_faults += 1
                self._switch(False, "an inline read transaction saw a major page fault")
                self._recheck(0.0)

    # ----------------------------------------------------------------- adaptive reads
    def read_auto(self, fn: Callable[..., R], args: tuple[Any, ...]) -> R | Fallback:
        """auto mode: :meth:`read_inline` while the data is resident, with a time budget per
        loop iteration; FALLBACK when the read goes through :meth:`submit_read_auto`."""
        if self._state is not OPEN:
            self._raise_state()
        txn = self._inline_txn
        if txn is None:
            if not self.inline_now:
                return FALLBACK
            loop = asyncio.get_running_loop()
            if loop is not self._loop:
                loop = self._bind_loop(loop)
            txn = self._try_begin_read()
            if txn is None:
                return FALLBACK
            self._inline_txn = txn
            self.inline_transactions += 1
            faults = self._major_faults
            if faults is not None:
                self._faults_at_begin = faults()
            self._deadline = time.perf_counter() + _BUDGET
            self._countdown = _CHECK_EVERY
            loop.call_soon(self.release_inline)
        else:
            n = self._countdown - 1
            if n:
                self._countdown = n
            elif self._over_budget():
                return FALLBACK
        try:
            return fn(txn, *args)
        except BaseException as exc:
            del txn
            drop_frame_locals(exc)
            raise

    def _over_budget(self) -> bool:
        """Whether this iteration's inline work is past its budget (then every later read of
        the iteration comes here, and is deferred)."""
        if self._deferring:
            return True
        if time.perf_counter() < self._deadline:
            self._countdown = _CHECK_EVERY
            return False
        self._deferring = True
        self._countdown = 1
        return True

    def submit_read_auto(self, fn: Callable[..., R], args: tuple[Any, ...]) -> Awaitable[R]:
        """auto mode's :meth:`submit_read`: a read past the iteration's inline budget is read
        inline at once (as inline reads are, so a close never strands it) and *parked*: its
        result is handed over in turn, in a later loop iteration (see _unpark)."""
        txn = self._inline_txn
        if not self._deferring or txn is None:
            return self.submit_read(fn, args)
        loop = self._loop
        assert loop is not None  # an inline transaction is open: the loop is bound
        self.deferred_reads += 1
        fut: asyncio.Future[R] = loop.create_future()
        try:
            parked: Result = (fut, True, fn(txn, *args))
        except BaseException as exc:
            del txn
            drop_frame_locals(exc)
            parked = (fut, False, as_settable(exc))
        self._parked.append(parked)
        if not self._unpark_scheduled:
            self._unpark_scheduled = True
            loop.call_soon(self._unpark)
        return fut

    def _unpark(self) -> None:
        """Loop, once per iteration while reads are parked: hand parked reads their results,
        oldest first. How many at a time adapts: one in an iteration that spent its budget
        (its task resumes in the next iteration, after the loop's timers and I/O: tasks that
        read without pause take turns of about a budget each, one turn per iteration, and a
        turn costs one suspension however many wait), twice as many as last time in one that
        did not (light tasks drain fast)."""
        parked = self._parked
        loop = self._loop
        assert loop is not None
        if self._deferring:
            # The next turn: its task runs in the next iteration, after the loop's timers and
            # I/O, with a budget of its own (one iteration per turn, not two).
            n = self._unpark_count = 1
        else:
            n = self._unpark_count
            self._unpark_count = min(2 * n, _UNPARK_MOST)
        while parked and n:
            fut, ok, value = parked.popleft()
            if fut.cancelled():
                continue
            n -= 1
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        if parked:
            loop.call_soon(self._unpark)
        else:
            self._unpark_scheduled = False
            self._unpark_count = 1

    def _switch(self, inline: bool, why: str) -> None:
        """Loop thread: auto mode's reads go inline (True) or to the reader threads."""
        if inline is self.inline_now:
            return
        self.inline_now = inline
        self.mode_switches += 1
        _log.debug(
            "aiolmdb: reads of %r now %s: %s",
            self._env.path(),
            "inline" if inline else "threaded",
            why,
        )

    def _recheck(self, delay: float) -> None:
        """Loop thread: run a residency check in ``delay`` seconds (a sooner one replaces a
        later one; one runs at a time)."""
        loop = self._loop
        if loop is None or self._state is not OPEN:
            return
        if self._checking:
            self._check_again = self._check_again or delay == 0.0
            return
        timer = self._check_timer
        if timer is not None:
            if delay and timer.when() <= loop.time() + delay:
                return
            timer.cancel()
        self._check_timer = loop.call_later(delay, self._start_check)

    def _start_check(self) -> None:
        self._check_timer = None
        if self._state is not OPEN or self._checking:
            return
        self._checking = True
        try:
            self._submit_counted(self._check)
        except RuntimeError:  # the executor is shut down: the engine is closing
            self._checking = False

    def _check(self) -> None:
        """Reader thread: measure the data file's residency; apply it on the loop."""
        started = time.perf_counter()
        fraction: float | None
        try:
            fraction = self._measure()
        except Exception:  # a closed environment, a file gone: cannot tell
            fraction = None
        cost = time.perf_counter() - started
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._checked, fraction, cost)
            except RuntimeError:
                pass  # the loop is closed

    def _measure(self) -> float | None:
        env = self._env
        if self._data_file is None:
            path = env.path()
            self._data_file = os.path.join(path, "data.mdb") if env.flags()["subdir"] else path
        self._enter_gate()  # a map resize moves LMDB's meta pages: not while reading them
        try:
            used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        finally:
            self._leave_gate()
        memory = residency.physical_memory()
        if memory is not None and used > memory:
            return 0.0  # can never be resident
        return self._probe(self._data_file, used, self._stopping)

    def _stopping(self) -> bool:
        """Any thread: whether the environment is closing (a check stops early then)."""
        return self._state is not OPEN

    def _checked(self, fraction: float | None, cost: float) -> None:
        """Loop thread: a check's answer."""
        self._checking = False
        if self._state is not OPEN:
            return
        self.residency_checks += 1
        self.residency = -1.0 if fraction is None else fraction
        if fraction is None:
            self._switch(False, "the data file's residency cannot be measured")
        elif fraction >= residency.RESIDENT:
            self._switch(True, f"{fraction:.1%} of the data file is in the page cache")
        else:
            self._switch(False, f"only {fraction:.1%} of the data file is in the page cache")
        if self._check_again:
            self._check_again = False
            self._recheck(0.0)
            return
        self._recheck(recheck_delay(self.inline_now, cost))

    def stop_checks(self) -> None:
        """Close: no more residency checks."""
        timer = self._check_timer
        if timer is not None:
            self._check_timer = None
            timer.cancel()

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

    def reads_inline_now(self) -> bool:
        """Whether reads run inline now ("inline", or "auto" while resident)."""
        return self.inline_now

    def read_queue(self) -> int:
        """Batched reads submitted and not yet taken by a reader thread."""
        return len(self._reads)

    def shutdown(self) -> None:
        """Close: shut the executor down if it is aiolmdb's own (a user's is left running)."""
        if self._own_executor:
            self._executor.shutdown(wait=True)
        if self._mapped_probe is not None:
            self._mapped_probe.close()  # waits for a check under way: it stops at its next window
