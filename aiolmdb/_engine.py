"""The engine: a reader pool and one writer thread that batch operations.

Every user operation is a small function ``fn(txn, *args)`` (see ``_ops``). The engine runs it
inside a transaction on a thread and resolves the caller's future on the event loop.

Reads
    Requests go into a deque. The first request of a burst schedules one *drain* on the reader
    executor; every request made before that drain starts joins it. A drain takes up to
    ``max_batch`` requests, runs them in ONE read transaction and hands every result back in ONE
    ``call_soon_threadsafe``. Several drains may run at once on different reader threads.

Writes
    One dedicated writer thread (LMDB write transactions belong to the thread that began them)
    takes everything queued, up to ``max_batch``, runs each operation in a nested transaction of
    one write transaction (so a failing operation rolls back alone; operations that change one
    thing and fail before changing it skip the nesting) and commits once: group commit.
    Futures are resolved only after that commit.

Map growth
    ``MapFullError`` makes a batch unusable: the writer aborts it, grows the map while no
    transaction of this process is open (readers wait at a gate) and runs the batch again.

Cancellation
    An operation whose future is already cancelled when its batch starts is skipped. Once
    started it runs to completion; its result is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final, cast

import lmdb

from ._ops import ATOMIC
from .errors import ClosedError, DeadlockError, ForkedError, TransactionError

__all__ = ["ABORT", "COMMIT", "FALLBACK", "Engine", "WriteSession"]

Op = Callable[..., Any]
# (future, fn, args): the future is an asyncio.Future for batched work.
Request = tuple["asyncio.Future[Any]", Op, tuple[Any, ...]]

_OPEN: Final = 0
_CLOSING: Final = 1
_CLOSED: Final = 2
_FORKED: Final = 3

# Items on the writer queue besides requests.
_STOP: Final = object()
# How long a read waits for a reader slot held by another process (seconds).
READERS_FULL_WAIT = 0.5
# read_inline's answer when the read must take the threaded path after all.
FALLBACK: Final = object()
# Commands that end an exclusive write transaction (see WriteSession).
COMMIT: Final = cast(Op, object())
ABORT: Final = cast(Op, object())


class WriteSession:
    """An exclusive write transaction held open across awaits (``env.begin(write=True)``).

    LMDB write transactions belong to the thread that began them, so the writer thread runs
    the whole session: it begins the transaction, then runs the session's commands, in order,
    until COMMIT or ABORT. Other writes wait in the writer's queue meanwhile.
    """

    __slots__ = ("broken", "commands", "finished", "lock", "owner")

    def __init__(self, owner: asyncio.Task[Any] | None) -> None:
        # The task that holds it: if that task waits for the writer otherwise, it waits for
        # itself (the deadlock guard checks this).
        self.owner = owner
        self.commands: queue.SimpleQueue[tuple[Any, Op, tuple[Any, ...]]] = queue.SimpleQueue()
        self.broken: BaseException | None = None
        self.finished = False
        # Orders "queue a command" against "the session ended", so no command is stranded.
        self.lock = threading.Lock()

    def send(self, fut: asyncio.Future[Any] | None, fn: Op, args: tuple[Any, ...]) -> bool:
        """Queue a command; False if the session already ended."""
        with self.lock:
            if self.finished:
                return False
            self.commands.put((fut, fn, args))
            return True

    def end(self) -> list[Any]:
        """Writer thread: mark the session ended; return commands that came too late."""
        with self.lock:
            self.finished = True
            late = []
            while True:
                try:
                    late.append(self.commands.get_nowait())
                except queue.Empty:
                    return late


class _Solo:
    """Work for the writer thread that runs outside any batch transaction: ``fn(env, *args)``.

    Used for opening databases (LMDB opens named databases with their own write transaction),
    for adopting a map size grown by another process, and for exclusive write transactions.
    """

    __slots__ = ("args", "fn", "future")

    def __init__(self, fn: Op, args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # LMDB forbids using an environment across fork(); make every call fail clearly instead.
    for engine in list(_engines):
        engine._state = _FORKED


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent only on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _deliver(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """Resolve a batch's futures on the loop thread (one callback per batch)."""
    for fut, ok, value in results:
        try:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        except asyncio.InvalidStateError:
            pass  # cancelled while it ran: its result is dropped


# Frames of generators and coroutines: clearing one would close it.
_SUSPENDABLE: Final = (
    inspect.CO_GENERATOR
    | inspect.CO_COROUTINE
    | inspect.CO_ASYNC_GENERATOR
    | inspect.CO_ITERABLE_COROUTINE
)


def drop_frame_locals(exc: BaseException) -> None:
    """Clear the local variables of the finished function frames in the tracebacks of ``exc``
    and of the exceptions chained to it (file names and lines stay). Those frames hold the
    transaction the operation ran in, and py-lmdb frees a read transaction's reader slot only
    with the Transaction object: a caller keeping the exception would keep a reader slot."""
    todo: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if not frame.f_code.co_flags & _SUSPENDABLE:
                try:
                    frame.clear()
                except RuntimeError:
                    pass  # still running (the frame that caught it): it drops its own
            tb = tb.tb_next
        todo += (e.__cause__, e.__context__)


def _broken_error(cause: BaseException | None) -> BaseException:
    err = TransactionError(
        f"the transaction can no longer be used after {cause!r}; it was rolled back"
    )
    err.__cause__ = cause
    return err


def _as_settable(exc: BaseException) -> BaseException:
    """The exception of an operation, made ready for its caller (see drop_frame_locals); a
    future cannot carry StopIteration, so that one is wrapped."""
    drop_frame_locals(exc)
    if isinstance(exc, StopIteration):
        err = RuntimeError(f"operation raised StopIteration: {exc!r}")
        err.__cause__ = exc
        return err
    return exc


class Engine:
    """Runs operations for one ``lmdb.Environment`` on a reader pool and one writer thread."""

    def __init__(
        self,
        env: lmdb.Environment,
        *,
        executor: concurrent.futures.Executor | None,
        readers: int,
        max_batch: int,
        inline_reads: bool,
        map_growth: bool,
        max_map_size: int | None,
        name: str,
    ) -> None:
        self.env = env
        self.max_batch = max_batch
        self.inline_reads = inline_reads
        self.max_key_size: int = env.max_key_size()
        self.map_growth = map_growth
        self.max_map_size = max_map_size
        self._writemap = bool(env.flags().get("writemap"))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = _OPEN
        self._name = name

        self._own_executor = executor is None
        self._executor: concurrent.futures.Executor = executor or (
            concurrent.futures.ThreadPoolExecutor(readers, thread_name_prefix="aiolmdb-reader")
        )
        self._inline_txn: lmdb.Transaction | None = None
        self._reads: collections.deque[Request] = collections.deque()
        self._read_scheduled = False

        # The gate: counts read drains scheduled or running, and read transactions open; map
        # resizing waits for zero open transactions and holds new ones back meanwhile.
        self._gate = threading.Condition(threading.Lock())
        self._drains = 0
        self._open_txns = 0
        self._resizing = False
        self._slot_waiters = 0  # reader threads waiting for a free reader slot
        # Bumped by every resize: it invalidates read transactions held across awaits.
        self.map_generation = 0
        # LMDB: mdb_dbi_open must not run in two transactions of one process at once.
        self.dbi_lock = threading.Lock()

        # Writes submitted during the current loop iteration, passed on by _flush_writes.
        self._write_buf: list[Request] = []
        self._loop_thread: int | None = None
        self._writes: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer_done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.writer_thread_id: int | None = None
        self._sessions: set[WriteSession] = set()
        # The exclusive write transaction that has begun and not ended (deadlock guard).
        self.active_session: WriteSession | None = None
        # Open read snapshots (objects with release()), ended before the environment closes.
        self.snapshots: weakref.WeakSet[Any] = weakref.WeakSet()
        self._writer = threading.Thread(
            target=self._writer_main, name=f"aiolmdb-writer:{name}", daemon=True
        )
        self._writer.start()
        _engines.add(self)

    # ----------------------------------------------------------------- loop side: checks
    @property
    def closed(self) -> bool:
        """True once close has begun."""
        return self._state != _OPEN

    def check_open(self) -> None:
        """Raise ClosedError/ForkedError unless operations are accepted."""
        if self._state != _OPEN:
            self._raise_state()

    def _raise_state(self) -> None:
        if self._state == _FORKED:
            raise ForkedError(
                f"environment {self._name!r} was opened in another process (before fork()); "
                "LMDB forbids using it here: open environments after forking (in each "
                "process), or start processes with the 'spawn' method"
            )
        raise ClosedError(f"environment {self._name!r} is closed")

    def _bind_loop(self, loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
        old = self._loop
        if old is not None and old is not loop and old.is_running() and not old.is_closed():
            raise RuntimeError(
                "this aiolmdb Environment is in use by another running event loop; "
                "use one environment per loop (or close it first)"
            )
        self._loop = loop
        self._loop_thread = threading.get_ident()
        return loop

    # ----------------------------------------------------------------- reads
    def submit_read(self, fn: Op, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue ``fn(read_txn, *args)``; the returned future resolves on the loop."""
        if self._state != _OPEN:
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

    def read_inline(self, fn: Op, args: tuple[Any, ...]) -> Any:
        """inline_reads mode: run ``fn`` on the loop thread in a read transaction reused until
        the end of this loop iteration; FALLBACK when it must go through a reader thread."""
        if self._state != _OPEN:
            self._raise_state()
        txn = self._inline_txn
        if txn is None:
            loop = asyncio.get_running_loop()
            if loop is not self._loop:
                loop = self._bind_loop(loop)
            txn = self.try_begin_read()
            if txn is None:
                return FALLBACK
            self._inline_txn = txn
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
            self.end_read(txn)

    def _schedule_drain(self) -> None:
        with self._gate:
            self._drains += 1
        try:
            self._executor.submit(self._drain_reads)
        except BaseException:
            with self._gate:
                self._drains -= 1
                self._gate.notify_all()
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
                for _ in range(self.max_batch):
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
            with self._gate:
                self._drains -= 1
                self._gate.notify_all()

    def _run_read_batch(self, batch: list[Request]) -> None:
        results: list[tuple[asyncio.Future[Any], bool, Any]] = []
        try:
            txn = self.begin_read()
        except BaseException as exc:
            results = [(fut, False, exc) for fut, _, _ in batch]
        else:
            try:
                for fut, fn, args in batch:
                    if fut.cancelled():
                        continue
                    try:
                        results.append((fut, True, fn(txn, *args)))
                    except BaseException as exc:
                        results.append((fut, False, _as_settable(exc)))
            finally:
                self.end_read(txn)
                # This frame is in the tracebacks handed over: it must not keep the
                # Transaction object (and with it the reader slot) alive.
                del txn
        self._post(results)

    def begin_read(self) -> lmdb.Transaction:
        """Begin a read transaction through the gate (waits while the map is being resized)."""
        self._enter_gate()
        try:
            return self._begin_read_adopting()
        except BaseException:
            self._leave_gate()
            raise

    def try_begin_read(self) -> lmdb.Transaction | None:
        """Like begin_read but never waits: None while the map is being resized (loop thread)."""
        if not self._gate.acquire(blocking=False):
            return None
        try:
            if self._resizing:
                return None
            self._open_txns += 1
        finally:
            self._gate.release()
        try:
            return self.env.begin()
        except (lmdb.MapResizedError, lmdb.ReadersFullError):
            self._leave_gate()
            return None  # the threaded path adopts the new size or waits for a slot
        except BaseException:
            self._leave_gate()
            raise

    def end_read(self, txn: lmdb.Transaction, *, commit: bool = False) -> None:
        """End a read transaction from begin_read/try_begin_read and leave the gate (commit
        keeps database handles opened in it)."""
        try:
            if commit:
                txn.commit()
            else:
                txn.abort()
        finally:
            self._leave_gate()

    def _enter_gate(self) -> None:
        """Count a read transaction about to begin; wait while the map is being resized."""
        with self._gate:
            while self._resizing:
                self._gate.wait()
            self._open_txns += 1

    def _leave_gate(self) -> None:
        with self._gate:
            self._open_txns -= 1
            if self._resizing or self._slot_waiters:
                self._gate.notify_all()

    def begin_in_gate(self) -> lmdb.Transaction:
        """Begin a read transaction, already counted at the gate (run_blocking jobs)."""
        return self._begin_read_adopting()

    def _begin_read_adopting(self) -> lmdb.Transaction:
        try:
            return self.env.begin()
        except lmdb.ReadersFullError:
            return self._begin_when_slot_free()
        except lmdb.MapResizedError:
            # Another process grew the map. Only the writer may resize (no transaction of this
            # process may be open meanwhile): ask it, wait, then try again.
            self._leave_gate()
            try:
                self.call_solo(self._adopt_map_size).result()
            finally:
                self._enter_gate()
            return self.env.begin()

    def _begin_when_slot_free(self) -> lmdb.Transaction:
        """Reader thread, the reader table full: free stale slots (crashed processes), and
        wait for this process's own read transactions to end (more reader threads than
        ``max_readers`` is legal). When only other processes hold slots, raise after a short
        grace period instead of waiting for them."""
        deadline = time.monotonic() + READERS_FULL_WAIT
        while True:
            self.env.reader_check()
            try:
                return self.env.begin()
            except lmdb.ReadersFullError:
                with self._gate:
                    # _open_txns counts this attempt too.
                    if self._open_txns <= 1 and time.monotonic() >= deadline:
                        raise
                    self._slot_waiters += 1
                    try:
                        self._gate.wait(0.05)
                    finally:
                        self._slot_waiters -= 1

    def run_blocking(self, fn: Op, *args: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` alone on a reader thread (e.g. copy, sync), counted for close."""
        self.check_open()
        fut = self.loop().create_future()

        def job() -> None:
            self._enter_gate()
            try:
                result: tuple[asyncio.Future[Any], bool, Any] = (fut, True, fn(*args))
            except BaseException as exc:
                result = (fut, False, _as_settable(exc))
            finally:
                self._leave_gate()
            self._post([result])

        self._submit_counted(job)
        return fut

    def submit_stream(
        self,
        fn: Op,
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
        self.check_open()
        post = self.loop().call_soon_threadsafe

        def emit(item: Any) -> None:
            post(on_item, item)  # RuntimeError once the loop is closed: fn stops

        def job() -> None:
            error: BaseException | None = None
            todo: tuple[Any, ...] | None = args
            while todo is not None:
                try:
                    txn = self.begin_read()  # a pending map resize goes first
                except BaseException as exc:
                    error = exc
                    break
                try:
                    todo = fn(txn, emit, *todo)
                except BaseException as exc:
                    error = _as_settable(exc)
                    todo = None
                finally:
                    self.end_read(txn)
                # py-lmdb frees the reader slot only with the Transaction object itself.
                del txn
            try:
                post(on_end, error)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting

        self._submit_counted(job)

    def _submit_counted(self, job: Callable[[], None]) -> None:
        """Run job() on a reader thread; close waits for it (like the read drains)."""

        def counted() -> None:
            try:
                job()
            finally:
                with self._gate:
                    self._drains -= 1
                    self._gate.notify_all()

        with self._gate:
            self._drains += 1
        try:
            self._executor.submit(counted)
        except BaseException:
            with self._gate:
                self._drains -= 1
            raise

    def submit_quiet(self, fn: Callable[[], Any]) -> None:
        """Run fn() on a reader thread, ignoring its result (cleanup work)."""
        try:
            self._executor.submit(fn)
        except RuntimeError:  # executor already shut down: run it here
            fn()

    def _post(self, results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
        if not results:
            return
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(_deliver, results)
        except RuntimeError:
            # The loop is closed: nobody can await these futures any more.
            pass

    # ----------------------------------------------------------------- writes
    def submit_write(self, fn: Op, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue ``fn(write_txn, *args)`` for the next group commit."""
        if self._state != _OPEN:
            self._raise_state()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            loop = self._bind_loop(loop)
        if self.active_session is not None:
            self.check_not_holding("a plain database write")
        fut = loop.create_future()
        buf = self._write_buf
        buf.append((fut, fn, args))
        if len(buf) == 1:
            # Hand the writer everything this loop iteration submits at once, at its end (as
            # lmdb-js does): one wake-up, and the writer starts when the loop is about to go
            # idle instead of fighting it for the GIL while the burst is still being issued.
            loop.call_soon(self._flush_writes)
        return fut

    def _flush_writes(self) -> None:
        """Loop thread: pass the writes buffered in this loop iteration to the writer."""
        buf = self._write_buf
        if buf:
            self._write_buf = []
            self._writes.put(buf)

    def check_not_holding(self, what: str) -> None:
        """Raise DeadlockError if the current context holds this engine's write transaction."""
        held = self.active_session
        if held is not None and not held.finished and held.owner is asyncio.current_task():
            raise DeadlockError(
                f"this task holds an open write transaction (env.begin(write=True)); {what} "
                "would wait for it forever: use the transaction (await txn[db].put(...)) or "
                "finish it first"
            )

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, bound to this engine (results are delivered to it)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            loop = self._bind_loop(loop)
        return loop

    def call_solo(self, fn: Op, *args: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(env, *args)`` on the writer thread between batches (no loop needed)."""
        if self._state not in (_OPEN, _CLOSING):
            self._raise_state()
        solo = _Solo(fn, args)
        if self._write_buf and threading.get_ident() == self._loop_thread:
            self._flush_writes()  # writes submitted before it go first
        self._writes.put(solo)
        return solo.future

    def _writer_main(self) -> None:
        self.writer_thread_id = threading.get_ident()
        q = self._writes
        max_batch = self.max_batch
        pending: Any = None
        while True:
            item = pending if pending is not None else q.get()
            pending = None
            if item is _STOP:
                break
            if isinstance(item, _Solo):
                self._run_solo(item)
                continue
            batch: list[Request] = item  # a burst of writes from one loop iteration
            while len(batch) < max_batch:
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP or isinstance(nxt, _Solo):
                    pending = nxt
                    break
                batch.extend(nxt)
            if len(batch) <= max_batch:
                self._run_write_batch(batch)
            else:  # one huge burst: bounded transactions
                for at in range(0, len(batch), max_batch):
                    self._run_write_batch(batch[at : at + max_batch])
        self._finish()

    def _run_solo(self, solo: _Solo) -> None:
        if not solo.future.set_running_or_notify_cancel():
            return
        try:
            solo.future.set_result(solo.fn(self.env, *solo.args))
        except BaseException as exc:
            solo.future.set_exception(exc)

    def _run_write_batch(self, batch: list[Request]) -> None:
        live = [req for req in batch if not req[0].cancelled()]
        results: list[tuple[asyncio.Future[Any], bool, Any]] = []
        while live:
            try:
                try:
                    results = self._commit(live)
                except lmdb.MapFullError:
                    if self._grow_map():
                        continue
                    results = self._commit_one_by_one(live)
                except lmdb.MapResizedError:
                    self.resize(0)  # another process grew the map: adopt its size
                    continue
            except BaseException as exc:
                # begin/commit (or growing the map) failed: nothing in the batch landed. The
                # writer thread itself must survive, or every later write would hang.
                results = [(fut, False, _as_settable(exc)) for fut, _, _ in live]
            break
        self._post(results)

    def _commit(self, live: list[Request]) -> list[tuple[asyncio.Future[Any], bool, Any]]:
        """One write transaction for the whole batch; each operation isolated in a child.

        Transactions are opened with buffers=False: values arrive as bytes, so neither coders
        nor ``txn.raw`` users can hold a view into the map past its validity.
        """
        if self._writemap:
            return self._commit_replaying(live)
        env = self.env
        results: list[tuple[asyncio.Future[Any], bool, Any]] = []
        txn = env.begin(write=True)
        try:
            for fut, fn, args in live:
                if fn in ATOMIC:
                    # One LMDB change that fails, if at all, before changing anything: no
                    # child transaction needed (a child costs ~4 us a write here).
                    try:
                        results.append((fut, True, fn(txn, *args)))
                    except lmdb.MapFullError:
                        raise
                    except BaseException as exc:
                        results.append((fut, False, _as_settable(exc)))
                    continue
                child = env.begin(write=True, parent=txn)
                try:
                    value = fn(child, *args)
                except lmdb.MapFullError:
                    child.abort()
                    raise
                except BaseException as exc:
                    child.abort()
                    results.append((fut, False, _as_settable(exc)))
                else:
                    child.commit()
                    results.append((fut, True, value))
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        return results

    def _commit_replaying(self, live: list[Request]) -> list[tuple[asyncio.Future[Any], bool, Any]]:
        """writemap=True forbids nested transactions: run the batch plainly and, when an
        operation fails, abort and run the batch again without it (operations are functions of
        the transaction alone, so running them again is safe)."""
        failed: list[tuple[asyncio.Future[Any], bool, Any]] = []
        while True:
            results: list[tuple[asyncio.Future[Any], bool, Any]] = []
            rerun = False
            txn = self.env.begin(write=True)
            try:
                for fut, fn, args in live:
                    try:
                        results.append((fut, True, fn(txn, *args)))
                    except lmdb.MapFullError:
                        raise
                    except BaseException as exc:
                        failed.append((fut, False, _as_settable(exc)))
                        if fn in ATOMIC:
                            continue  # it changed nothing: the transaction is intact
                        rerun = True
                        break
                if not rerun:
                    txn.commit()
                    return failed + results
            except BaseException:
                txn.abort()
                raise
            txn.abort()
            gone = {id(fut) for fut, _, _ in failed}
            live = [req for req in live if id(req[0]) not in gone]

    def _commit_one_by_one(
        self, live: list[Request]
    ) -> list[tuple[asyncio.Future[Any], bool, Any]]:
        """Map full and growth is off: commit each operation alone so that exactly the ones
        that do not fit fail with MapFullError and everything that fits lands."""
        results: list[tuple[asyncio.Future[Any], bool, Any]] = []
        for req in live:
            try:
                results.extend(self._commit([req]))
            except BaseException as exc:
                results.append((req[0], False, _as_settable(exc)))
        return results

    def _grow_map(self) -> bool:
        if not self.map_growth:
            return False
        size = self.env.info()["map_size"]
        limit = self.max_map_size
        if limit is not None and size >= limit:
            return False
        new = size * 2
        page = self.env.stat()["psize"]
        new = -(-new // page) * page
        if limit is not None:
            new = min(new, limit)
        self.resize(new)
        return True

    def resize(self, size: int) -> None:
        """Writer thread, no write transaction open: set the map size with readers held back."""
        with self._gate:
            self._resizing = True
            try:
                while self._open_txns:
                    self._gate.wait()
                self.env.set_mapsize(size)
                self.map_generation += 1
            finally:
                self._resizing = False
                self._gate.notify_all()

    def serve_session(
        self, env: lmdb.Environment, session: WriteSession, started: asyncio.Future[None]
    ) -> None:
        """Writer thread (as a solo item): run one exclusive write transaction to its end."""
        try:
            try:
                txn = env.begin(write=True)
            except lmdb.MapResizedError:
                self.resize(0)
                txn = env.begin(write=True)
        except BaseException as exc:
            self._end_session(session, [(started, False, _as_settable(exc))])
            return
        self._post([(started, True, None)])
        grow = False
        while True:
            fut, fn, args = session.commands.get()
            if fn is COMMIT or fn is ABORT:
                result: tuple[asyncio.Future[Any], bool, Any] = (fut, True, None)
                if fn is COMMIT and session.broken is None:
                    try:
                        txn.commit()
                    except BaseException as exc:
                        txn.abort()
                        grow = isinstance(exc, lmdb.MapFullError)
                        result = (fut, False, _as_settable(exc))
                else:
                    txn.abort()
                    if fn is COMMIT:
                        result = (fut, False, _broken_error(session.broken))
                self._end_session(session, [result])
                break
            if session.broken is not None:
                self._post([(fut, False, _broken_error(session.broken))])
                continue
            self._post([self._run_in_session(txn, session, fut, fn, args)])
            grow = grow or isinstance(session.broken, lmdb.MapFullError)
        if grow and self.map_growth:
            self._grow_map()  # so that running the transaction again fits

    def _end_session(self, session: WriteSession, results: list[tuple[Any, bool, Any]]) -> None:
        self._sessions.discard(session)
        ended = TransactionError("the transaction has already ended")
        results.extend((late[0], False, ended) for late in session.end())
        self._post([r for r in results if r[0] is not None])

    def start_session(self, session: WriteSession, started: asyncio.Future[None]) -> None:
        """Queue an exclusive write transaction for the writer thread."""
        self._sessions.add(session)
        self.call_solo(self.serve_session, session, started)

    def abort_sessions(self) -> None:
        """Roll back every open exclusive write transaction (used by close)."""
        for session in list(self._sessions):
            session.send(None, ABORT, ())

    def _run_in_session(
        self,
        txn: lmdb.Transaction,
        session: WriteSession,
        fut: asyncio.Future[Any],
        fn: Op,
        args: tuple[Any, ...],
    ) -> tuple[asyncio.Future[Any], bool, Any]:
        if self._writemap:  # no nested transactions: a failure may leave partial writes
            try:
                return (fut, True, fn(txn, *args))
            except BaseException as exc:
                session.broken = exc
                return (fut, False, _as_settable(exc))
        child = self.env.begin(write=True, parent=txn)
        try:
            value = fn(child, *args)
        except BaseException as exc:
            child.abort()
            if isinstance(exc, lmdb.MapFullError):
                session.broken = exc  # LMDB leaves the whole transaction unusable
            return (fut, False, _as_settable(exc))
        child.commit()
        return (fut, True, value)

    def _adopt_map_size(self, env: lmdb.Environment) -> None:
        self.resize(0)

    # ----------------------------------------------------------------- shutdown
    def begin_close(self) -> concurrent.futures.Future[None]:
        """Stop accepting work; the writer finishes what was queued, waits for the readers,
        closes the environment. Returns a future that is done when all of that is."""
        if self._state == _OPEN:
            self._state = _CLOSING
            self.release_inline()
            self.abort_sessions()
            self._flush_writes()  # submitted writes run before the stop
            self._writes.put(_STOP)
        elif self._state == _FORKED:
            # Inherited across fork(): the threads are not ours and the environment must not be
            # touched; nothing to wait for.
            if not self._writer_done.done():
                self._writer_done.set_result(None)
        return self._writer_done

    def _finish(self) -> None:
        try:
            # A reader thread may still queue a solo (adopting another process's map size)
            # and wait for it: keep failing queued work until every reader is done.
            while True:
                self._fail_queued()
                with self._gate:
                    if not self._drains:
                        break
                    self._gate.wait(0.05)
            for snapshot in list(self.snapshots):
                snapshot.release()
            if self._own_executor:
                self._executor.shutdown(wait=True)
            self.env.close()
        finally:
            self._state = _CLOSED
            self._writer_done.set_result(None)

    def _fail_queued(self) -> None:
        closed = ClosedError(f"environment {self._name!r} is closed")
        while True:
            try:
                item = self._writes.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Solo):
                if item.future.set_running_or_notify_cancel():
                    item.future.set_exception(closed)
            elif item is not _STOP:
                self._post([(req[0], False, closed) for req in item])

    def join_writer(self) -> None:
        """Wait for the writer thread to exit (it has already signalled it is finishing)."""
        if self._writer is not threading.current_thread():
            self._writer.join()
