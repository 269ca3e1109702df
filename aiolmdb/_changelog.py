"""The change log: every committed write, recorded in the write transaction that makes it.

With ``changelog=True`` the engine hands the operations a :class:`LoggedTxn` wherever it begins a
write transaction (group commits, their nested children, exclusive write transactions, deleting
a database) instead of py-lmdb's transaction. It has the same ``put``/``delete``/``pop``/
``replace``/``drop`` and, for each change of a user database, appends a record to the reserved
database ``__aiolmdb_changes__`` in the same transaction, so the log can never disagree with
the data: it commits or rolls back with the change.

Records
    key: the sequence number, 8 bytes big-endian (so LMDB keeps them in order and appends);
    value: ``_HEAD`` (commit time in microseconds, kind, name length, key length), the
    database's name, the key, then the value (``changelog="values"``, the default). Kinds:
    put, delete (with the value for one pair of a dupsort database), and one ``drop`` for a
    database emptied or deleted.

Sequence numbers
    A write transaction takes the next number from the log's last key, or from the high-water
    mark kept in the metadata database when trimming removed everything (``changes_trimmed``:
    the highest number trimmed), so numbers only grow, also across a compacting copy (they are
    data, not LMDB's transaction id). A nested transaction shares its parent's counter and
    records; its abort rolls both back with its writes.

Hooks and followers
    After a top-level commit with changes, the records are posted to the event loop (one
    ``call_soon_threadsafe``), where ``on_commit`` callbacks run and followers of
    ``env.changes()`` wake. With hooks and no log, changes are recorded in memory only (``seq``
    None). With neither, the engine uses py-lmdb's transactions directly: no cost.

Retention
    After commits, when the log may exceed ``changelog_retention``, a trim is queued to the
    writer thread as its own write transactions of at most ``TRIM_STEP`` deletions, between
    user batches.

Runs on the writer thread, except :meth:`Recorder.deliver` (loop) and :func:`read_log` (reader
threads).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import logging
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

import lmdb

from ._versions import META_NAME

if TYPE_CHECKING:
    from ._config import EngineConfig
    from ._ops import Txn

__all__ = [
    "LOG_NAME",
    "Change",
    "ChangeKind",
    "LoggedTxn",
    "Recorder",
    "Retention",
    "has_log",
    "read_log",
    "restore_records",
    "stored_records",
]

log = logging.getLogger("aiolmdb")

LOG_NAME: Final = b"__aiolmdb_changes__"
"""The change log's database (reserved: ``open_db`` refuses the name)."""
MARKER_KEY: Final = b"changelog"
TRIMMED_KEY: Final = b"changes_trimmed"
TRIM_STEP: Final = 1000
# How often (in sequence numbers, or seconds) a commit checks whether the log exceeds retention.
_CHECK_EVERY = 256
_CHECK_SECONDS = 1.0

_SEQ = struct.Struct(">Q")
_HEAD = struct.Struct(">QBHH")
_DEFAULT_DB = 0xFFFF  # name length that stands for the default database

# Kinds as stored.
_PUT, _PUT_VALUE, _DELETE, _DELETE_VALUE, _DROP = 1, 2, 3, 4, 5

ChangeKind = Literal["put", "delete", "drop"]
_KIND_NAMES: dict[int, tuple[ChangeKind, bool]] = {
    _PUT: ("put", False),
    _PUT_VALUE: ("put", True),
    _DELETE: ("delete", False),
    _DELETE_VALUE: ("delete", True),
    _DROP: ("drop", False),
}


class Change(NamedTuple):
    """One committed change, as ``env.changes()`` and ``on_commit`` callbacks see it."""

    seq: int | None
    """Its sequence number in the log (only grows); None for an ``on_commit`` callback of an
    environment without a log."""
    db: str | None
    """The database's name (None: the default database)."""
    key: Any
    """The key (bytes, or decoded by the coder of the database given as ``changes(db=)``);
    None for a drop."""
    kind: ChangeKind
    """``"put"``, ``"delete"``, or ``"drop"`` (the database was emptied or deleted)."""
    value: Any
    """A put's value (``changelog="values"``); for a delete of one pair of a dupsort database,
    that pair's value; else None. Stored bytes: a versioned database's value starts with its
    8-byte version unless decoded by ``changes(db=...)``."""


@dataclasses.dataclass(frozen=True)
class Retention:
    """How much of the change log to keep: at most ``entries`` changes and/or changes younger
    than ``age``. Older ones are trimmed on the writer thread after commits."""

    entries: int | None = None
    """The most changes kept (None: no limit by count)."""
    age: datetime.timedelta | None = None
    """How long changes are kept (None: no limit by age)."""

    def __post_init__(self) -> None:
        entries, age = self.entries, self.age
        if entries is not None and (type(entries) is not int or entries < 0):
            raise ValueError(f"Retention.entries must be an int >= 0 or None, got {entries!r}")
        if age is not None and (
            not isinstance(age, datetime.timedelta) or age <= datetime.timedelta(0)
        ):
            raise ValueError(f"Retention.age must be a positive timedelta or None, got {age!r}")
        if entries is None and age is None:
            raise ValueError("Retention needs entries= or age= (or both)")

    @classmethod
    def of(cls, value: object) -> Retention | None:
        """``changelog_retention=`` as given: None, an int, a timedelta or a Retention."""
        if value is None or isinstance(value, Retention):
            return value
        if isinstance(value, datetime.timedelta):
            if value <= datetime.timedelta(0):
                raise ValueError(f"changelog_retention must be a positive timedelta, got {value!r}")
            return cls(age=value)
        if type(value) is int:
            if value < 0:
                raise ValueError(f"changelog_retention must be an int >= 0, got {value!r}")
            return cls(entries=value)
        raise TypeError(
            "changelog_retention must be an int (entries), a datetime.timedelta (age), an "
            f"aiolmdb.Retention or None, got {value!r}"
        )


def encode(kind: int, name: bytes | None, key: bytes, value: bytes, ts: int) -> bytes:
    """A record's stored value."""
    if name is None:
        return _HEAD.pack(ts, kind, _DEFAULT_DB, len(key)) + key + value
    return _HEAD.pack(ts, kind, len(name), len(key)) + name + key + value


def decode(seq: int, raw: bytes) -> tuple[Change, int]:
    """A stored record as a Change (bytes keys and values) and its commit time (µs)."""
    ts, code, name_len, key_len = _HEAD.unpack_from(raw)
    at = _HEAD.size
    name: str | None = None
    if name_len != _DEFAULT_DB:
        name = raw[at : at + name_len].decode("utf-8", "backslashreplace")
        at += name_len
    kind, has_value = _KIND_NAMES[code]
    key = None if code == _DROP else raw[at : at + key_len]
    value = raw[at + key_len :] if has_value else None
    return Change(seq, name, key, kind, value), ts


def _db_label(name: bytes | None) -> str | None:
    return None if name is None else name.decode("utf-8", "backslashreplace")


class _TxnLog:
    """What a top-level write transaction and its children record: the next sequence number
    (None until the first change loads it), the commit time, the changes for hooks."""

    __slots__ = ("records", "seq", "ts")

    def __init__(self) -> None:
        self.seq: int | None = None
        self.ts = 0
        self.records: list[Change] = []


# A handle's name and whether it is dupsort; None for aiolmdb's own databases (not logged).
_Named = tuple[bytes | None, bool] | None
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
            self._record(db, _PUT, key, value)
        return bool(done)

    def delete(self, key: bytes, value: bytes = b"", db: Any = None) -> bool:
        """As ``lmdb.Transaction.delete``, recorded when it deleted something."""
        done = self.raw.delete(key, value, db)
        if done:
            self._record(db, _DELETE_VALUE if value else _DELETE, key, value)
        return bool(done)

    def pop(self, key: bytes, db: Any = None) -> Any:
        """As ``lmdb.Transaction.pop``, recorded when the key existed."""
        old = self.raw.pop(key, db)
        if old is not None:
            self._record(db, _DELETE, key, b"")
        return old

    def replace(self, key: bytes, value: bytes, db: Any = None) -> Any:
        """As ``lmdb.Transaction.replace`` (a dupsort key loses every value first)."""
        old = self.raw.replace(key, value, db)
        named = self._named(db)
        if named is not None and named[1] and old is not None:
            self._record(db, _DELETE, key, b"")
        self._record(db, _PUT, key, value)
        return old

    def drop(self, db: Any, delete: bool = True) -> None:
        """As ``lmdb.Transaction.drop``: one ``drop`` change."""
        self.raw.drop(db, delete)
        self._record(db, _DROP, b"", b"")

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
            seq = recorder.first_seq(self.raw)
            txn_log.ts = time.time_ns() // 1000
        txn_log.seq = seq + 1
        name = named[0]
        log_db = recorder.log_db
        if log_db is not None:
            if recorder.values and kind in (_PUT, _DELETE_VALUE):
                code, data = (_PUT_VALUE if kind == _PUT else _DELETE_VALUE), value
            else:  # keys only: a pair's delete is the key's
                code, data = (_DELETE if kind == _DELETE_VALUE else kind), b""
            self.raw.put(
                _SEQ.pack(seq), encode(code, name, key, data, txn_log.ts), True, True, True, log_db
            )
        if recorder.hooks:
            kind_name, _ = _KIND_NAMES[kind]
            txn_log.records.append(
                Change(
                    seq if log_db is not None else None,
                    _db_label(name),
                    None if kind == _DROP else bytes(key),
                    kind_name,
                    bytes(value) if kind in (_PUT, _DELETE_VALUE) else None,
                )
            )


Hook = Callable[[Sequence[Change]], object]


class Recorder:
    """The change log of one environment as the engine sees it: which handles are which
    database, the log's handles, the ``on_commit`` hooks, the followers waiting, trimming."""

    def __init__(self, env: lmdb.Environment, config: EngineConfig) -> None:
        self._env = env
        self.mode = config.changelog
        self.values = self.mode == "values"
        self.retention = config.changelog_retention
        self._readonly = bool(env.flags().get("readonly"))
        # Handle -> (name, dupsort), or None for aiolmdb's own databases.
        self.names: dict[Any, _Named] = {}
        self.log_db: Any = None
        # The metadata database's handle, once known (the log's, or the check's below).
        self._meta: Any = None
        self.hooks: tuple[Hook, ...] = ()
        self.active = self.mode is not None and not self._readonly
        # Without the log: whether each write transaction checks that no other process has
        # given the environment a log since (its writes would be missing from it).
        self._check_marker = self.mode is None and not self._readonly
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: threading.Lock = threading.Lock()
        self._call_solo: Callable[..., Any] | None = None
        self._resize: Callable[[int], None] | None = None
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
        self,
        lock: threading.Lock,
        main: Any,
        call_solo: Callable[..., Any],
        resize: Callable[[int], None],
    ) -> None:
        """The catalogue's handle lock and default database; queue the log's creation."""
        self._lock = lock
        self._call_solo = call_solo
        self._resize = resize
        self.names[None] = (None, False)
        self.names[main] = (None, False)
        if self.active:
            self._setup_done = call_solo(self._setup)

    def _setup(self, env: lmdb.Environment) -> None:
        """Writer thread, before any write: create the log and mark the environment as
        having one (so that a process opening it without changelog=True is refused)."""
        try:
            self._create(env)
        except lmdb.MapResizedError:
            assert self._resize is not None
            self._resize(0)
            self._create(env)

    def _create(self, env: lmdb.Environment) -> None:
        with self._lock:
            txn = env.begin(write=True)
            try:
                meta = env.open_db(META_NAME, txn=txn, create=True)
                log_db = env.open_db(LOG_NAME, txn=txn, create=True)
                if txn.get(MARKER_KEY, None, meta) is None:
                    txn.put(MARKER_KEY, b"1", db=meta)
                txn.commit()
            except BaseException:
                txn.abort()
                raise
        self.name_handle(meta, None)
        self.name_handle(log_db, None)
        self._meta, self.log_db = meta, log_db

    def name_handle(self, handle: Any, name: bytes | None, dupsort: bool = False) -> None:
        """Writer thread: ``handle`` is the database ``name`` (None: aiolmdb's own, not
        logged)."""
        self.names[handle] = None if name is None else (name, dupsort)

    def forget(self, handle: Any) -> None:
        """The database of ``handle`` was deleted."""
        self.names.pop(handle, None)

    def set_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Engine only: the loop changes are delivered to."""
        self._loop = loop

    # ----------------------------------------------------------------- writer thread
    def begin(self, write: bool = True, parent: Any = None) -> Any:
        """A write transaction: recording when the log is on or hooks are registered (a
        child records whenever its parent does)."""
        if parent is None:
            txn = self._env.begin(write=True)
            if self._check_marker:
                txn = self._refuse_if_logged(txn)
            if not (self.active or self.hooks):
                return txn
            return LoggedTxn(self, txn, _TxnLog(), None)
        if isinstance(parent, LoggedTxn):
            raw = self._env.begin(write=True, parent=parent.raw)
            return LoggedTxn(self, raw, parent._log, parent)
        return self._env.begin(write=True, parent=parent)

    def _refuse_if_logged(self, txn: Txn) -> Txn:
        """Changelog off: ``txn`` if the environment still has no log (one get), else abort
        it and raise. Opens the metadata database's handle once it exists, outside a write
        transaction (one opened in a transaction that aborts is freed with it)."""
        meta = self._meta
        if meta is None:
            if txn.get(META_NAME) is None:
                return txn
            txn.abort()
            with self._lock:
                meta = self._meta = self._env.open_db(META_NAME, create=False)
            txn = self._env.begin(write=True)
        if txn.get(MARKER_KEY, None, meta) is None:
            return txn
        txn.abort()
        raise ValueError(
            f"{self._env.path()!r} now records its changes in a change log (another process "
            "opened it with changelog=True after this one opened it without): this write was "
            "refused, since it would be missing from the log; reopen the environment with "
            "aiolmdb.open(path, changelog=True)"
        )

    @property
    def recording(self) -> bool:
        """Whether new write transactions record their changes."""
        return self.active or bool(self.hooks)

    def first_seq(self, txn: Txn) -> int:
        """The first sequence number of a write transaction."""
        if self.log_db is None:
            if self.active:
                raise RuntimeError(
                    "the change log could not be created when the environment opened"
                )
            return 1
        return last_seq(txn, self.log_db, self._meta) + 1

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
        if self.retention is not None and self.log_db is not None:
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
        """The log's and the metadata database's handles (None, None: no log)."""
        if self.log_db is not None:
            return self.log_db, self._meta
        with self._lock:
            if self.log_db is None:
                txn = begin()
                try:
                    exists = txn.get(LOG_NAME) is not None
                finally:
                    txn.abort()
                    del txn
                if not exists:
                    return None, None
                # Without a transaction: one opened in a read transaction of a read-only
                # environment does not outlive it.
                meta = self._env.open_db(META_NAME, create=False)
                self.log_db = self._env.open_db(LOG_NAME, create=False)
                self._meta = meta
        return self.log_db, self._meta

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
        try:
            deleted = trim(env, self.log_db, self._meta, self.retention, TRIM_STEP)
        except lmdb.MapResizedError:
            assert self._resize is not None
            self._resize(0)
            deleted = TRIM_STEP  # try again
        except Exception:
            log.exception("trimming the change log failed")
            return 0
        if deleted >= TRIM_STEP:
            self._queue_trim()
        return deleted


def last_seq(txn: Txn, log_db: Any, meta: Any) -> int:
    """The highest sequence number ever issued (0: none)."""
    cur = txn.cursor(log_db)
    try:
        last = _SEQ.unpack(cur.key())[0] if cur.last() else 0
    finally:
        cur.close()
    return max(last, trimmed_upto(txn, meta))


def trimmed_upto(txn: Txn, meta: Any) -> int:
    """The highest sequence number trimmed (0: none)."""
    raw = txn.get(TRIMMED_KEY, None, meta)
    return 0 if raw is None else int(_SEQ.unpack(raw)[0])


def trim(
    env: lmdb.Environment, log_db: Any, meta: Any, retention: Retention | None, limit: int
) -> int:
    """Delete up to ``limit`` of the oldest changes beyond ``retention`` in one write
    transaction, raising the trimmed high-water mark; how many were deleted."""
    if retention is None:
        return 0
    cutoff = None
    if retention.age is not None:
        cutoff = time.time_ns() // 1000 - int(retention.age / datetime.timedelta(microseconds=1))
    deleted = 0
    with env.begin(write=True) as txn:
        excess = 0
        if retention.entries is not None:
            excess = int(txn.stat(log_db)["entries"]) - retention.entries
        doomed: list[bytes] = []
        cur = txn.cursor(log_db)
        try:
            for key, raw in cur.iternext(keys=True, values=True):
                if len(doomed) >= limit:
                    break
                if len(doomed) < excess or (
                    cutoff is not None and _HEAD.unpack_from(raw)[0] < cutoff
                ):
                    doomed.append(bytes(key))
                else:
                    break
        finally:
            cur.close()
        for key in doomed:
            txn.delete(key, db=log_db)
            deleted += 1
        if doomed:
            top = doomed[-1]
            if trimmed_upto(txn, meta) < _SEQ.unpack(top)[0]:
                txn.put(TRIMMED_KEY, top, db=meta)
    return deleted


def has_log(env: lmdb.Environment) -> bool:
    """Whether the environment is marked as having a change log (read before the engine
    starts, as ``open_main`` reads the default database)."""
    try:
        txn = env.begin()
    except lmdb.MapResizedError:
        env.set_mapsize(0)  # another process grew the map; no transaction is open yet
        txn = env.begin()
    with txn:
        if txn.get(META_NAME) is None:
            return False
        try:
            meta = env.open_db(META_NAME, txn=txn, create=False)
        except lmdb.Error:
            return False
        return txn.get(MARKER_KEY, None, meta) is not None


def read_log(
    txn: Txn,
    log_db: Any,
    meta: Any,
    after: int,
    limit: int,
    name: str | Literal[False] | None,
    prefix: bytes | None,
) -> tuple[list[Change], int, int]:
    """Reader thread: the changes after ``after`` (at most ``limit`` scanned), those of the
    database ``name`` only (False: all) and keys starting with ``prefix``; the last sequence
    number scanned (``after`` if none) and the highest trimmed."""
    trimmed = trimmed_upto(txn, meta)
    out: list[Change] = []
    last = after
    if after < trimmed:
        return out, last, trimmed
    cur = txn.cursor(log_db)
    try:
        if not cur.set_range(_SEQ.pack(after + 1)):
            return out, last, trimmed
        for scanned, (key, raw) in enumerate(cur.iternext(keys=True, values=True), 1):
            seq = _SEQ.unpack(key)[0]
            last = seq
            change, _ = decode(seq, raw)
            if (name is False or change.db == name) and (
                prefix is None
                or change.kind == "drop"
                or (change.key is not None and change.key.startswith(prefix))
            ):
                out.append(change)
            if scanned >= limit:
                break
    finally:
        cur.close()
    return out, last, trimmed


# ----------------------------------------------------------------- dump and load (the CLI)
# Both run in a transaction of their own caller with no other handle being opened meanwhile
# (the CLI awaits one step at a time): a handle opened in a transaction is valid in it only.


def stored_records(
    env: lmdb.Environment, txn: lmdb.Transaction[Any], after: bytes | None, limit: int
) -> tuple[list[tuple[bytes, bytes]], int]:
    """Reader thread: up to ``limit`` records of the log as stored, after the key ``after``
    (None: from the first), and the trimmed high-water mark."""
    log_db = env.open_db(LOG_NAME, txn=txn, create=False)
    meta = env.open_db(META_NAME, txn=txn, create=False)
    out: list[tuple[bytes, bytes]] = []
    cur = txn.cursor(log_db)
    try:
        found = cur.first() if after is None else cur.set_range(after)
        if found and after is not None and cur.key() == after:
            found = cur.next()
        while found and len(out) < limit:
            out.append((bytes(cur.key()), bytes(cur.value())))
            found = cur.next()
    finally:
        cur.close()
    return out, trimmed_upto(txn, meta)


def restore_records(
    env: lmdb.Environment,
    txn: lmdb.Transaction[Any],
    pairs: Sequence[tuple[bytes, bytes]],
    trimmed: int,
    mark: bool,
) -> None:
    """Writer thread: append records to the log as stored (creating it), raise the trimmed
    high-water mark to ``trimmed``; ``mark``: record that the environment has a log (last, so
    that the loading process, which opened it without one, can write until then)."""
    log_db = env.open_db(LOG_NAME, txn=txn, create=True)
    meta = env.open_db(META_NAME, txn=txn, create=True)
    for key, value in pairs:
        if len(key) != _SEQ.size:
            raise ValueError(f"a change log record's key must be 8 bytes, got {key!r}")
        txn.put(key, value, db=log_db, append=True)
    if trimmed > trimmed_upto(txn, meta):
        txn.put(TRIMMED_KEY, _SEQ.pack(trimmed), db=meta)
    if mark and txn.get(MARKER_KEY, None, meta) is None:
        txn.put(MARKER_KEY, b"1", db=meta)
