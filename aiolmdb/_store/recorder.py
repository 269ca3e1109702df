"""The change log's recorder: the write transactions that record, the hooks, the followers.

With ``changelog=True`` the engine begins every write transaction of the writer thread through
:meth:`Recorder.begin_write` (group commits, exclusive write transactions, deleting a
database), which hands out a :class:`LoggedTxn` instead of py-lmdb's transaction. It has the
same ``put``/``delete``/``pop``/``replace``/``drop`` and, for each change of a user database,
appends a record (``records``) to the reserved database ``__aiolmdb_changes__`` in the same
transaction, so the log can never disagree with the data: it commits or rolls back with the
change.

Once per transaction
    Whether a top-level transaction records is decided once, when it begins (after LMDB granted
    the write lock), and its children are begun by it (:meth:`LoggedTxn.begin_child`, or
    py-lmdb's ``env.begin(parent=...)`` for a plain one), so a child always records exactly
    when its parent does. An ``on_commit`` hook registered while a transaction is already open
    does not see that transaction's changes; one registered while the writer waits for LMDB's
    write lock does.

Sequence numbers and commits
    A write transaction takes the next number from the log's last key, or from the trimmed
    high-water mark. A nested transaction shares its parent's counter and records; its abort
    rolls both back with its writes. Every record carries its offset from the transaction's
    first number and the database's flags (``records``), so followers see whole commits.

Hooks and followers
    After a top-level commit with changes, the records are posted to the event loop (one
    ``call_soon_threadsafe``), where ``on_commit`` callbacks run and followers of
    ``env.changes()`` wake. With hooks and no log, changes are recorded in memory only (``seq``
    None). With neither, the engine gets py-lmdb's transactions directly: no cost.

Retention
    After commits, when the log may exceed ``changelog_retention``, a trim (``trim``) is
    queued to the writer thread, between user batches, through the engine's write runner.

Runs on the writer thread, except :meth:`Recorder.deliver` and the hooks' registration (loop)
and :meth:`Recorder.handles` (reader threads).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, Final

import lmdb

from .._engine.txnrunner import BeginChild
from .meta import LOG_ID_KEY, LOG_ID_SIZE, MARKER_KEY, META_NAME, MetaHandles
from .records import (
    DELETE,
    DELETE_DB,
    DELETE_VALUE,
    DROP,
    KIND_NAMES,
    PUT,
    PUT_VALUE,
    SEQ,
    Change,
    db_label,
    encode,
    flags_of,
    last_seq,
)
from .trim import TRIM_STEP, LogMode, Retention, trim

if TYPE_CHECKING:
    from .._engine.delivery import Txn

__all__ = ["Hook", "LoggedTxn", "Recorder"]

log = logging.getLogger("aiolmdb")

# How often (in sequence numbers, or seconds) a commit checks whether the log exceeds retention.
_CHECK_EVERY = 256
_CHECK_SECONDS = 1.0


class _TxnLog:
    """What a top-level write transaction and its children record: the next sequence number
    (None until the first change loads it), the first one, the commit time, the changes for
    hooks."""

    __slots__ = ("first", "records", "seq", "ts")

    def __init__(self) -> None:
        self.seq: int | None = None
        self.first = 0
        self.ts = 0
        self.records: list[Change] = []


# A handle's name, whether it is dupsort, and its flags as records carry them (records.FLAG_BITS);
# None for aiolmdb's own databases (not logged).
_Named = tuple[bytes | None, bool, int] | None
_UNKNOWN: Final = object()


class LoggedTxn:
    """A py-lmdb write transaction that records each change of a user database (see the module
    docstring). Methods it does not define (``get``, ``cursor``, ``stat``, ``id``...) are the
    transaction's own; writes through a cursor are not recorded."""

    __slots__ = ("_log", "_mark", "_parent", "_recorder", "raw")

    def __init__(
        self, recorder: Recorder, raw: Txn, txn_log: _TxnLog, parent: LoggedTxn | None
    ) -> None:
        self._recorder = recorder
        self.raw = raw
        self._log = txn_log
        self._parent = parent
        # Where this (child) transaction began, to roll back on abort.
        self._mark = (txn_log.seq, len(txn_log.records))

    def begin_child(self) -> LoggedTxn:
        """A nested write transaction that records into this one's log."""
        raw = self._recorder.env.begin(write=True, parent=self.raw)
        return LoggedTxn(self._recorder, raw, self._log, self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def get(self, key: bytes, default: Any = None, db: Any = None) -> Any:
        """As ``lmdb.Transaction.get``."""
        return self.raw.get(key, default, db)

    def put(
        self,
        key: bytes,
        value: bytes,
        dupdata: bool = True,
        overwrite: bool = True,
        append: bool = False,
        db: Any = None,
    ) -> bool:
        """As ``lmdb.Transaction.put``, recorded when it stored something."""
        done = self.raw.put(key, value, dupdata, overwrite, append, db)
        if done:
            self._record(db, PUT, key, value)
        return bool(done)

    def delete(self, key: bytes, value: bytes = b"", db: Any = None) -> bool:
        """As ``lmdb.Transaction.delete``, recorded when it deleted something."""
        done = self.raw.delete(key, value, db)
        if done:
            self._record(db, DELETE_VALUE if value else DELETE, key, value)
        return bool(done)

    def pop(self, key: bytes, db: Any = None) -> Any:
        """As ``lmdb.Transaction.pop``, recorded when the key existed."""
        old = self.raw.pop(key, db)
        if old is not None:
            self._record(db, DELETE, key, b"")
        return old

    def replace(self, key: bytes, value: bytes, db: Any = None) -> Any:
        """As ``lmdb.Transaction.replace`` (a dupsort key loses every value first)."""
        old = self.raw.replace(key, value, db)
        named = self._named(db)
        if named is not None and named[1] and old is not None:
            self._record(db, DELETE, key, b"")
        self._record(db, PUT, key, value)
        return old

    def drop(self, db: Any, delete: bool = True) -> None:
        """As ``lmdb.Transaction.drop``: one ``delete_db`` change (a named database deleted)
        or one ``drop`` (emptied)."""
        self.raw.drop(db, delete)
        named = self._named(db)
        self._record(db, DELETE_DB if delete and named is not None and named[0] else DROP, b"", b"")

    def commit(self) -> None:
        """Commit; a top-level transaction then hands its changes to the loop."""
        self.raw.commit()
        if self._parent is None:
            self._recorder.committed(self._log)

    def abort(self) -> None:
        """Abort; a child's records and sequence numbers are rolled back with it."""
        self.raw.abort()
        txn_log = self._log
        txn_log.seq, size = self._mark
        del txn_log.records[size:]

    def __enter__(self) -> LoggedTxn:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def _named(self, db: Any) -> _Named:
        found: Any = self._recorder.names.get(db, _UNKNOWN)
        if found is _UNKNOWN:
            raise ValueError(
                "this environment records its changes (changelog=True), and this write uses a "
                "database handle aiolmdb did not open, so it cannot be recorded: write "
                "through aiolmdb's databases (txn[db] in run())"
            )
        return found  # type: ignore[no-any-return]

    def _record(self, db: Any, kind: int, key: bytes, value: bytes) -> None:
        named = self._named(db)
        if named is None:
            return  # aiolmdb's own metadata
        recorder = self._recorder
        txn_log = self._log
        seq = txn_log.seq
        if seq is None:
            seq = txn_log.first = recorder.first_seq(self.raw)
            txn_log.ts = time.time_ns() // 1000
        txn_log.seq = seq + 1
        name = named[0]
        log_db = recorder.meta_handles.log
        if log_db is not None:
            if recorder.values and kind in (PUT, DELETE_VALUE):
                code, data = (PUT_VALUE if kind == PUT else DELETE_VALUE), value
            else:  # keys only: a pair's delete is the key's
                code, data = (DELETE if kind == DELETE_VALUE else kind), b""
            record = encode(code, name, key, data, txn_log.ts, seq - txn_log.first, named[2])
            self.raw.put(SEQ.pack(seq), record, True, True, True, log_db)
        if recorder.hooks:
            kind_name, _ = KIND_NAMES[kind]
            txn_log.records.append(
                Change(
                    seq if log_db is not None else None,
                    db_label(name),
                    None if kind in (DROP, DELETE_DB) else bytes(key),
                    kind_name,
                    bytes(value) if kind in (PUT, DELETE_VALUE) else None,
                )
            )


Hook = Callable[[Sequence[Change]], object]


class Recorder:
    """The change log of one environment as the engine sees it: which handles are which
    database, the log's handles, the ``on_commit`` hooks, the followers waiting, trimming."""

    def __init__(
        self,
        env: lmdb.Environment,
        mode: LogMode,
        retention: Retention | None,
        meta_handles: MetaHandles,
    ) -> None:
        self.env = env
        self.mode = mode
        self.values = mode == "values"
        self.retention = retention
        self._readonly = bool(env.flags().get("readonly"))
        # Handle -> (name, dupsort, flags), or None for aiolmdb's own databases.
        self.names: dict[Any, _Named] = {}
        # The metadata database's and the log's handles (their one owner).
        self.meta_handles = meta_handles
        self.hooks: tuple[Hook, ...] = ()
        self.active = mode is not None and not self._readonly
        # Without the log: whether each write transaction checks that no other process has
        # given the environment a log since (its writes would be missing from it).
        self._check_marker = mode is None and not self._readonly
        self._loop: asyncio.AbstractEventLoop | None = None
        self._call_solo: Callable[..., Any] | None = None
        self._run_write: Callable[..., Any] | None = None
        # Loop side: commits delivered so far, followers waiting for the next.
        self.commits = 0
        self._waiter: asyncio.Future[None] | None = None
        self._setup_done: concurrent.futures.Future[None] | None = None
        # Writer side: trimming.
        self._trim_queued = False
        self._checked_seq = 0
        self._checked_at = 0.0

    # ----------------------------------------------------------------- setup
    def attach(
        self, main: Any, call_solo: Callable[..., Any], run_write: Callable[..., Any]
    ) -> None:
        """The default database's handle and the engine's writer-thread entry points (a solo
        item; a write transaction under the runner's policy); queue the log's creation."""
        self._call_solo = call_solo
        self._run_write = run_write
        self.names[None] = (None, False, 0)
        self.names[main] = (None, False, 0)
        if self.active:
            self._setup_done = call_solo(self._setup)

    def _setup(self, env: lmdb.Environment) -> None:
        """Writer thread, before any write: create the log, give it its identity and mark the
        environment as having one (so that a process opening it without changelog=True is
        refused)."""
        assert self._run_write is not None
        handles = self.meta_handles
        meta, log_db = self._run_write(self._create, logged=False, guard=handles.lock)
        handles.keep(meta, log_db)
        self.name_handle(meta, None)
        self.name_handle(log_db, None)

    def _create(self, txn: Txn, begin_child: object) -> tuple[Any, Any]:
        meta, log_db = self.meta_handles.create_in(txn)
        if txn.get(MARKER_KEY, None, meta) is None:
            txn.put(MARKER_KEY, b"1", db=meta)
        # Logs created before identities existed get theirs at the first writable open.
        if txn.get(LOG_ID_KEY, None, meta) is None:
            txn.put(LOG_ID_KEY, os.urandom(LOG_ID_SIZE), db=meta)
        return meta, log_db

    def name_handle(
        self, handle: Any, name: bytes | None, flags: Collection[str] = (), main: bool = False
    ) -> None:
        """Writer thread: ``handle`` is the database ``name`` (None: aiolmdb's own, not
        logged; ``main``: the default database) with ``flags`` (as ``DatabaseInfo.flags``
        names them), which its records carry."""
        if name is None and not main:
            self.names[handle] = None
            return
        found = (name, "dupsort" in flags, flags_of(flags))
        self.names[handle] = found
        if main:
            self.names[None] = found

    def add_flag(self, handle: Any, flag: str) -> None:
        """Writer thread: the database of ``handle`` gained ``flag`` (its large-values
        marker): its next records carry it."""
        found = self.names.get(handle) if handle is not None else None
        if found is not None:
            self.names[handle] = (found[0], found[1], found[2] | flags_of((flag,)))
            if found[0] is None:
                self.names[None] = self.names[handle]

    def forget(self, handle: Any) -> None:
        """The database of ``handle`` was deleted."""
        self.names.pop(handle, None)

    def set_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Engine only: the loop changes are delivered to."""
        self._loop = loop

    # ----------------------------------------------------------------- writer thread
    def begin_write(self) -> tuple[Any, BeginChild]:
        """A top-level write transaction and the function that begins its children. Whether
        it records (the log is on, or hooks are registered) is decided here, once, after LMDB
        granted the write lock; its children follow it."""
        txn = self.env.begin(write=True)
        if self._check_marker:
            txn = self._refuse_if_logged(txn)
        if not (self.active or self.hooks):
            return txn, functools.partial(self.env.begin, write=True, parent=txn)
        logged = LoggedTxn(self, txn, _TxnLog(), None)
        return logged, logged.begin_child

    def _refuse_if_logged(self, txn: Txn) -> Txn:
        """Changelog off: ``txn`` if the environment still has no log (one get), else abort
        it and raise. Opens the metadata database's handle once it exists, outside a write
        transaction (one opened in a transaction that aborts is freed with it)."""
        meta = self.meta_handles.meta
        if meta is None:
            if txn.get(META_NAME) is None:
                return txn
            txn.abort()
            meta = self.meta_handles.existing_meta(self.env.begin)
            txn = self.env.begin(write=True)
        if txn.get(MARKER_KEY, None, meta) is None:
            return txn
        txn.abort()
        raise ValueError(
            f"{self.env.path()!r} now records its changes in a change log (another process "
            "opened it with changelog=True after this one opened it without): this write was "
            "refused, since it would be missing from the log; reopen the environment with "
            "aiolmdb.open(path, changelog=True)"
        )

    def first_seq(self, txn: Txn) -> int:
        """The first sequence number of a write transaction."""
        handles = self.meta_handles
        if handles.log is None:
            if self.active:
                raise RuntimeError(
                    "the change log could not be created when the environment opened"
                )
            return 1
        return last_seq(txn, handles.log, handles.meta) + 1

    def committed(self, txn_log: _TxnLog) -> None:
        """Writer thread, after a top-level commit: hand the changes to the loop."""
        if txn_log.seq is None:
            return
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self.deliver, tuple(txn_log.records))
            except RuntimeError:
                pass  # the loop is closed: nobody is left to tell
        if self.retention is not None and self.meta_handles.log is not None:
            self._maybe_trim(txn_log.seq)

    # ----------------------------------------------------------------- loop side
    def deliver(self, records: tuple[Change, ...]) -> None:
        """Loop: a commit of this process: wake followers, call the hooks."""
        self.commits += 1
        self.wake()
        if records:
            for hook in self.hooks:
                try:
                    hook(records)
                except Exception:
                    log.exception("an on_commit callback raised (ignored)")

    def wake(self) -> None:
        """Loop: wake every follower waiting for a commit."""
        fut, self._waiter = self._waiter, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def waiter(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """Loop: a future set by the next commit of this process (or by close), shared by
        every follower waiting."""
        fut = self._waiter
        if fut is None or fut.done():
            fut = self._waiter = loop.create_future()
        return fut

    async def ready(self) -> None:
        """Loop: wait until the log is created (queued to the writer at open); its error if
        that failed."""
        done = self._setup_done
        if done is not None and not done.done():
            await asyncio.shield(asyncio.wrap_future(done))
        if done is not None:
            done.result()

    def add_hook(self, hook: Hook) -> Callable[[], None]:
        """Register an ``on_commit`` callback; returns the function that unregisters it."""
        if not callable(hook):
            raise TypeError(f"on_commit needs a callable taking the changes; got {hook!r}")
        self.hooks = (*self.hooks, hook)

        def remove() -> None:
            self.hooks = tuple(h for h in self.hooks if h is not hook)

        return remove

    # ----------------------------------------------------------------- reader threads
    def handles(self, begin: Callable[[], Txn]) -> tuple[Any, Any]:
        """The log's and the metadata database's handles (None, None: no log); ``begin``
        begins a read transaction (through the gate) to look."""
        return self.meta_handles.existing_log(begin)

    # ----------------------------------------------------------------- trimming
    def _maybe_trim(self, seq: int) -> None:
        now = time.monotonic()
        if self._trim_queued or (
            seq - self._checked_seq < _CHECK_EVERY and now - self._checked_at < _CHECK_SECONDS
        ):
            return
        self._checked_seq, self._checked_at = seq, now
        self._queue_trim()

    def _queue_trim(self) -> None:
        assert self._call_solo is not None
        self._trim_queued = True
        try:
            self._call_solo(self._trim_step)
        except Exception:
            self._trim_queued = False  # closing: the next open trims

    def _trim_step(self, env: lmdb.Environment) -> int:
        """Writer thread, between batches: delete at most TRIM_STEP changes beyond retention
        in one write transaction; queue the next step if there may be more. Returns how many
        were deleted."""
        self._trim_queued = False
        assert self._run_write is not None
        handles, retention = self.meta_handles, self.retention
        try:
            deleted: int = self._run_write(
                lambda txn, _: trim(txn, handles.log, handles.meta, retention, TRIM_STEP),
                logged=False,
            )
        except Exception:
            log.exception("trimming the change log failed")
            return 0
        if deleted >= TRIM_STEP:
            self._queue_trim()
        return deleted
