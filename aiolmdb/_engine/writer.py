"""The writer: one thread that runs every write of an environment, in group commits.

LMDB write transactions belong to the thread that began them, so one dedicated thread runs
them all.

Buffering
    :meth:`Writer.submit_write` buffers the writes made during one loop iteration and hands
    them to the writer thread at its end, in one queue item. The thread takes everything queued,
    up to ``max_batch``, and has the batch committed as one write transaction (group commit and
    map growth: see ``commit``). Futures are resolved only after that commit. A write says on
    its request whether it is atomic (``submit_write``'s ``atomic``): the committer runs an
    atomic one without a child transaction.

Solo items and exclusive write transactions
    :meth:`Writer.call_solo` runs ``fn(env)`` on the thread between batches (opening a database,
    adopting another process's map size). An exclusive write transaction
    (``env.begin(write=True)``, a :class:`WriteSession`) is a solo item that runs the session's
    commands, in order, until COMMIT or ABORT; other writes wait meanwhile. A task that holds
    one and waits for the writer otherwise would wait for itself: :meth:`Writer.check_not_holding`
    raises DeadlockError instead.

Cancellation: a write whose future is already cancelled when its batch starts is skipped; once
started it runs to completion and its result is dropped.

Every write transaction it begins goes through the write runner (``txnrunner``): batches,
sessions, and the solo items of the layers above (``run_write``).

It touches the ``lmdb.Environment`` (write transactions; set_mapsize only through the gate),
the committer, its own queue and thread, and the loop (results go back through
``_delivery.post``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import queue
import threading
from collections.abc import Callable
from typing import Any, Final, NoReturn, TypeVar

import lmdb

from ..errors import ConflictError, DeadlockError, TransactionError
from .commit import Committer
from .config import EngineConfig
from .delivery import (
    CLOSING,
    GUARDED,
    OPEN,
    Counted,
    EngineHooks,
    Op,
    Part,
    Result,
    State,
    WriteRequest,
    as_settable,
    broken_error,
    post,
)
from .gate import Gate
from .txnrunner import BeginChild, WriteRunner, WriteSource

__all__ = ["ABORT", "COMMIT", "SessionCommand", "WriteSession", "Writer"]

R = TypeVar("R")


class SessionCommand(enum.Enum):
    """Commands that end an exclusive write transaction."""

    COMMIT = "commit"
    ABORT = "abort"


COMMIT: Final = SessionCommand.COMMIT
ABORT: Final = SessionCommand.ABORT

# (future or None, operation or command, args)
SessionItem = tuple["asyncio.Future[Any] | None", Op | SessionCommand, tuple[Any, ...]]


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
        self.commands: queue.SimpleQueue[SessionItem] = queue.SimpleQueue()
        self.broken: BaseException | None = None
        self.finished = False
        # Orders "queue a command" against "the session ended", so no command is stranded.
        self.lock = threading.Lock()

    def send(
        self, fut: asyncio.Future[Any] | None, fn: Op | SessionCommand, args: tuple[Any, ...]
    ) -> bool:
        """Queue a command; False if the session already ended."""
        with self.lock:
            if self.finished:
                return False
            self.commands.put((fut, fn, args))
            return True

    def end(self) -> list[SessionItem]:
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


class _Stop(enum.Enum):
    STOP = "stop"


# The writer queue's last item: the thread ends after it.
_STOP: Final = _Stop.STOP
# What the writer queue holds: a burst of writes from one loop iteration, a solo item, the stop.
_Item = list[WriteRequest] | _Solo | _Stop


class Writer(Part):
    """The writer thread of one environment and the queue that feeds it."""

    def __init__(
        self,
        env: lmdb.Environment,
        gate: Gate,
        config: EngineConfig,
        engine: EngineHooks,
        source: WriteSource,
    ) -> None:
        super().__init__(env, gate, config, engine)
        self._writemap = bool(env.flags().get("writemap"))
        # Begins every write transaction of this thread (see _txnrunner).
        runner = self.runner = WriteRunner(env, config, gate.resize, source)
        committer = self.committer = Committer(env, runner)
        self._run_batch = committer.run_batch
        # Metrics: writes handed to the queue (loop thread), taken from it, interactive
        # write transactions ended and committed, conflicts met in them (writer thread).
        self.flushed = 0
        self.taken = 0
        self.write_transactions = 0
        self.session_commits = 0
        self.session_conflicts = 0
        self._loop_thread: int | None = None
        # Writes submitted during the current loop iteration, passed on by _flush_writes.
        self._write_buf: list[WriteRequest] = []
        self._writes: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._sessions: set[WriteSession] = set()
        # The exclusive write transaction that has begun and not ended (deadlock guard).
        self._active_session: WriteSession | None = None
        # Runs on this thread once it has taken the stop (the engine closes everything).
        self._on_stop = engine.finish
        # The write guard (set_guard): while set, the state this part checks is GUARDED, so
        # submit_write's one state check also refuses guarded writes (no cost when open).
        self._guard: Callable[[], BaseException] | None = None
        self._engine_state = OPEN
        self._raise_engine_state = self._raise_state
        self._raise_state = self._refuse
        self._thread = threading.Thread(
            target=self._main, name=f"aiolmdb-writer:{env.path()}", daemon=True
        )
        self._thread.start()

    def set_state(self, state: State) -> None:
        """Engine only: the engine's state changed (GUARDED while open with a guard)."""
        self._engine_state = state
        self._state = GUARDED if state is OPEN and self._guard is not None else state

    def set_guard(self, refuse: Callable[[], BaseException] | None) -> None:
        """Refuse every write submitted from now on (plain writes, write sessions) with the
        error ``refuse()`` makes; None accepts them again. Solo items still run."""
        self._guard = refuse
        self.set_state(self._engine_state)

    def check_writable(self) -> None:
        """Raise the guard's error (or the closed/forked one) unless writes are accepted."""
        if self._state is not OPEN:
            self._refuse()

    def _refuse(self) -> NoReturn:
        guard = self._guard
        if self._state is GUARDED and guard is not None:
            raise guard()
        self._raise_engine_state()

    def set_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Engine only: the engine was bound to ``loop``, running on the current thread."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    # ----------------------------------------------------------------- loop side
    def submit_write(
        self, fn: Callable[..., R], args: tuple[Any, ...], atomic: bool
    ) -> asyncio.Future[R]:
        """Queue ``fn(write_txn, *args)`` for the next group commit; ``atomic``: it makes at
        most one change and fails, if at all, before making it (no child transaction)."""
        if self._state is not OPEN:
            self._raise_state()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            loop = self._bind_loop(loop)
        if self._active_session is not None:
            self.check_not_holding("a plain database write")
        fut = loop.create_future()
        buf = self._write_buf
        buf.append((fut, fn, args, atomic))
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
            self.flushed += len(buf)
            self._writes.put(buf)

    def call_solo(self, fn: Callable[..., R], *args: Any) -> concurrent.futures.Future[R]:
        """Run ``fn(env, *args)`` on the writer thread between batches (no loop needed)."""
        if self._state is not OPEN and self._state is not CLOSING and self._state is not GUARDED:
            self._raise_engine_state()
        solo = _Solo(fn, args)
        if self._write_buf and threading.get_ident() == self._loop_thread:
            self._flush_writes()  # writes submitted before it go first
        self._writes.put(solo)
        return solo.future

    def stop(self) -> None:
        """Close: the writes submitted so far run, then the thread stops (calling on_stop)."""
        self._flush_writes()
        self._writes.put(_STOP)

    def fail_queued(self, error: BaseException) -> None:
        """Writer thread, stopped: fail whatever was queued after the stop with ``error``."""
        while True:
            try:
                item = self._writes.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Solo):
                if item.future.set_running_or_notify_cancel():
                    item.future.set_exception(error)
            elif item is not _STOP:
                post(self._loop, [(req[0], False, error) for req in item])

    def write_queue(self) -> int:
        """Writes submitted and not yet taken by the writer thread (loop thread)."""
        return self.flushed + len(self._write_buf) - self.taken

    def open_sessions(self) -> int:
        """Interactive write transactions not yet ended."""
        return len(self._sessions)

    def join(self) -> None:
        """Wait for the writer thread to exit (unless called on it)."""
        if self._thread is not threading.current_thread():
            self._thread.join()

    # ----------------------------------------------------------------- sessions, loop side
    def start_session(self, session: WriteSession, started: asyncio.Future[None]) -> None:
        """Queue an exclusive write transaction for the writer thread."""
        self.check_writable()
        self._sessions.add(session)
        self.call_solo(self._serve_session, session, started)

    def abort_sessions(self) -> None:
        """Roll back every open exclusive write transaction (used by close)."""
        for session in list(self._sessions):
            session.send(None, ABORT, ())

    def hold_session(self, session: WriteSession) -> None:
        """The session has begun: its owner task now holds the write transaction."""
        self._active_session = session

    def release_session(self, session: WriteSession) -> None:
        """The session is ending: nobody holds the write transaction any more."""
        if self._active_session is session:
            self._active_session = None

    def check_not_holding(self, what: str) -> None:
        """Raise DeadlockError if the current task holds this engine's write transaction."""
        held = self._active_session
        if held is not None and not held.finished and held.owner is asyncio.current_task():
            raise DeadlockError(
                f"this task holds an open write transaction (env.begin(write=True)); {what} "
                "would wait for it forever: use the transaction (await txn[db].put(...)) or "
                "finish it first"
            )

    # ----------------------------------------------------------------- writer thread
    def _main(self) -> None:
        q = self._writes
        max_batch = self._max_batch
        run_batch = self._run_batch
        pending: _Item | None = None
        while True:
            item = pending if pending is not None else q.get()
            pending = None
            if item is _STOP:
                break
            if isinstance(item, _Solo):
                self._run_solo(item)
                continue
            batch = item  # a burst of writes from one loop iteration
            while len(batch) < max_batch:
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP or isinstance(nxt, _Solo):
                    pending = nxt
                    break
                batch.extend(nxt)
            self.taken += len(batch)
            if len(batch) <= max_batch:
                post(self._loop, run_batch(batch))
            else:  # one huge burst: bounded transactions
                for at in range(0, len(batch), max_batch):
                    post(self._loop, run_batch(batch[at : at + max_batch]))
        self._on_stop()

    def _run_solo(self, solo: _Solo) -> None:
        if not solo.future.set_running_or_notify_cancel():
            return
        try:
            solo.future.set_result(solo.fn(self._env, *solo.args))
        except BaseException as exc:
            solo.future.set_exception(exc)

    # ----------------------------------------------------------------- sessions, writer thread
    def _serve_session(
        self, env: lmdb.Environment, session: WriteSession, started: asyncio.Future[None]
    ) -> None:
        """Writer thread (as a solo item): run one exclusive write transaction to its end."""
        try:
            txn, begin_child = self.runner.begin()
        except BaseException as exc:
            self._end_session(session, [(started, False, as_settable(exc))])
            return
        post(self._loop, [(started, True, None)])
        while True:
            fut, fn, args = session.commands.get()
            if isinstance(fn, SessionCommand):
                result: tuple[asyncio.Future[Any] | None, bool, Any] = (fut, True, None)
                if fn is COMMIT and session.broken is None:
                    try:
                        txn.commit()
                        self.session_commits += 1
                    except BaseException as exc:
                        txn.abort()
                        if isinstance(exc, lmdb.MapFullError):
                            exc = self.runner.grow_after(exc)
                        result = (fut, False, as_settable(exc))
                else:
                    txn.abort()
                    if fn is COMMIT:
                        result = (fut, False, broken_error(session.broken))
                    if isinstance(session.broken, lmdb.MapFullError):
                        # Before the end is reported: running the transaction again fits.
                        self.runner.grow_map()
                self.write_transactions += 1
                self._end_session(session, [result])
                break
            assert fut is not None  # only commands are sent without a future
            if session.broken is not None:
                post(self._loop, [(fut, False, broken_error(session.broken))])
                continue
            post(self._loop, [self._run_in_session(txn, begin_child, session, fut, fn, args)])

    def _end_session(
        self, session: WriteSession, results: list[tuple[asyncio.Future[Any] | None, bool, Any]]
    ) -> None:
        self._sessions.discard(session)
        ended = TransactionError("the transaction has already ended")
        results.extend((late[0], False, ended) for late in session.end())
        post(self._loop, [(fut, ok, value) for fut, ok, value in results if fut is not None])

    def _run_in_session(
        self,
        txn: Any,
        begin_child: BeginChild,
        session: WriteSession,
        fut: asyncio.Future[Any],
        fn: Op,
        args: tuple[Any, ...],
    ) -> Result:
        if self._writemap:  # no nested transactions: a failure may leave partial writes
            try:
                value = fn(txn, *args)
            except BaseException as exc:
                if isinstance(exc, lmdb.MapFullError):
                    exc = self.runner.map_full_error(exc)
                session.broken = exc
                return self._failed(fut, exc)
        else:
            child = begin_child()
            try:
                value = fn(child, *args)
            except BaseException as exc:
                child.abort()
                if isinstance(exc, lmdb.MapFullError):
                    exc = self.runner.map_full_error(exc)  # LMDB's advice names the wrong setting
                    session.broken = exc  # LMDB leaves the whole transaction unusable
                return self._failed(fut, exc)
            child.commit()
        if type(value) is Counted:
            self.session_conflicts += value.conflicts
            value = value.value
        return (fut, True, value)

    def _failed(self, fut: asyncio.Future[Any], exc: BaseException) -> Result:
        if isinstance(exc, ConflictError):
            self.session_conflicts += 1
        return (fut, False, as_settable(exc))
