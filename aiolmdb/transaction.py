"""Synchronous transaction objects handed to user code by ``run(fn)``.

``fn(txn)`` runs on a worker thread (the writer thread for ``write=True``) inside one LMDB
transaction. ``txn[db]`` is a :class:`DatabaseView` of any database of the environment, with that
database's coders; the transaction given by ``db.run`` is also bound to ``db`` itself, so
``txn.get(key)`` works as in aiolmdb 0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import lmdb

from . import _ops, _scan
from ._engine import ABORT, COMMIT, WriteSession
from .coders import Coder
from .errors import (
    ClosedError,
    ReadOnlyError,
    SnapshotExpiredError,
    TransactionError,
)
from .ranges import AsyncReads, check_range_args, iterate_sync

if TYPE_CHECKING:
    from .database import AsyncDatabase
    from .environment import Environment

__all__ = [
    "AsyncDatabaseView",
    "AsyncTransaction",
    "DatabaseView",
    "Snapshot",
    "Transaction",
    "WriteTransaction",
]

K = TypeVar("K")
V = TypeVar("V")
_MISSING: Any = object()


class DatabaseView(Generic[K, V]):
    """One database seen through a transaction: synchronous, coder-aware operations.

    Only valid inside the function given to ``run``; values it returns are decoded copies, so
    they stay valid after the transaction ends.
    """

    __slots__ = ("_db", "_dupsort", "_kc", "_mks", "_raw", "_vc", "_write")

    def __init__(self, raw: lmdb.Transaction, write: bool, database: AsyncDatabase[K, V]) -> None:
        self._raw = raw
        self._write = write
        self._db = database._handle()
        self._kc = database.key_coder
        self._vc = database.value_coder
        self._mks = database._engine.max_key_size
        self._dupsort = database._state.dupsort

    def _require_write(self, what: str) -> None:
        if not self._write:
            raise ReadOnlyError(
                f"cannot {what} in a read-only transaction: use run(fn, write=True)"
            )

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value stored under key (the first one in a dupsort database), or default."""
        return _ops.get(self._raw, self._db, self._kc, self._vc, self._mks, key, default)  # type: ignore[no-any-return]

    def get_multi(self, keys: Iterable[K], default: V | None = None) -> dict[K, V | None]:
        """A dict with every requested key; missing keys map to default."""
        return _ops.get_multi(
            self._raw, self._db, self._kc, self._vc, self._mks, list(keys), default
        )

    def put(self, key: K, value: V, *, overwrite: bool = True) -> bool:
        """Store value under key. False if not stored (key exists and overwrite=False, or the
        exact pair exists in a dupsort database)."""
        self._require_write("put")
        return _ops.put(
            self._raw,
            self._db,
            self._kc,
            self._vc,
            self._mks,
            key,
            value,
            overwrite,
            self._dupsort,
        )

    def put_multi(self, items: Iterable[tuple[K, V]] | Mapping[K, V]) -> int:
        """Store every pair; returns how many were added."""
        self._require_write("put_multi")
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        return _ops.put_multi(
            self._raw, self._db, self._kc, self._vc, self._mks, pairs, self._dupsort
        )

    def delete(self, key: K, value: V = _MISSING) -> bool:
        """Delete key (or one (key, value) pair of a dupsort database); True if it existed."""
        self._require_write("delete")
        has_value = value is not _MISSING
        return _ops.delete(
            self._raw,
            self._db,
            self._kc,
            self._vc,
            self._mks,
            key,
            value if has_value else None,
            has_value,
            self._dupsort,
        )

    def delete_multi(self, keys: Iterable[K]) -> dict[K, bool]:
        """Delete every key; a dict of key -> whether it existed."""
        self._require_write("delete_multi")
        return _ops.delete_multi(self._raw, self._db, self._kc, self._vc, self._mks, list(keys))

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Delete key and return its old value, or default."""
        self._require_write("pop")
        return _ops.pop(self._raw, self._db, self._kc, self._vc, self._mks, key, default)  # type: ignore[no-any-return]

    def replace(self, key: K, value: V) -> V | None:
        """Store value under key and return the old value, or None."""
        self._require_write("replace")
        return _ops.replace(self._raw, self._db, self._kc, self._vc, self._mks, key, value)  # type: ignore[no-any-return]

    def update(self, key: K, fn: Callable[[V | None], V], default: V | None = None) -> V:
        """Store fn(old) under key (old is default when absent) and return it."""
        self._require_write("update")
        return _ops.update(  # type: ignore[no-any-return]
            self._raw, self._db, self._kc, self._vc, self._mks, key, fn, default
        )

    def _iterate(
        self,
        mode: int,
        start: Any,
        stop: Any,
        prefix: Any,
        reverse: bool,
        limit: int | None,
        chunk_size: int | None,
    ) -> Iterator[Any]:
        size = check_range_args(limit, chunk_size)
        spec = _scan.ScanSpec(mode, start, stop, prefix, reverse, self._dupsort)
        return iterate_sync(self._raw, self._db, self._kc, self._vc, spec, limit, size)

    def items(
        self,
        start: K | None = None,
        stop: K | None = None,
        *,
        prefix: K | None = None,
        reverse: bool = False,
        limit: int | None = None,
        chunk_size: int | None = None,
    ) -> Iterator[tuple[K, V]]:
        """Iterate ``(key, value)`` pairs in ``[start, stop)``, as ``AsyncDatabase.items``."""
        return self._iterate(_scan.ITEMS, start, stop, prefix, reverse, limit, chunk_size)

    def keys(
        self,
        start: K | None = None,
        stop: K | None = None,
        *,
        prefix: K | None = None,
        reverse: bool = False,
        limit: int | None = None,
        chunk_size: int | None = None,
    ) -> Iterator[K]:
        """Iterate keys in ``[start, stop)``, as ``AsyncDatabase.keys``."""
        return self._iterate(_scan.KEYS, start, stop, prefix, reverse, limit, chunk_size)

    def values(
        self,
        start: K | None = None,
        stop: K | None = None,
        *,
        prefix: K | None = None,
        reverse: bool = False,
        limit: int | None = None,
        chunk_size: int | None = None,
    ) -> Iterator[V]:
        """Iterate values of keys in ``[start, stop)``, as ``AsyncDatabase.values``."""
        return self._iterate(_scan.VALUES, start, stop, prefix, reverse, limit, chunk_size)

    def first(self) -> tuple[K, V] | None:
        """The pair with the smallest key, or None."""
        return _scan.first_or_last(self._raw, self._db, self._kc, self._vc, False)

    def last(self) -> tuple[K, V] | None:
        """The pair with the largest key, or None."""
        return _scan.first_or_last(self._raw, self._db, self._kc, self._vc, True)

    def get_all(self, key: K) -> list[V]:
        """Every value of key (sorted in a dupsort database)."""
        return _scan.get_all(self._raw, self._db, self._kc, self._vc, self._mks, key)

    def count_values(self, key: K) -> int:
        """How many values key has."""
        return _scan.count_values(self._raw, self._db, self._kc, self._mks, key)

    def count(self) -> int:
        """The number of entries in the database."""
        return _ops.count(self._raw, self._db)


class Transaction(DatabaseView[K, V]):
    """The transaction given to ``fn`` by ``db.run(fn)`` and ``env.run(fn)``.

    ``txn[db]`` gives a :class:`DatabaseView` of any database of the same environment;
    ``txn.get(...)`` and the other operations act on the database ``run`` was called on
    (for ``env.run``, the default database). ``txn.raw`` is the underlying
    ``lmdb.Transaction`` (opened with ``buffers=False``, so what it returns are ``bytes``
    copies; do not keep it, or cursors of it, beyond ``fn``).
    """

    __slots__ = ("_env", "_views")

    def __init__(self, raw: lmdb.Transaction, write: bool, database: AsyncDatabase[K, V]) -> None:
        super().__init__(raw, write, database)
        self._env = database._env
        self._views: dict[int, DatabaseView[Any, Any]] = {}

    @property
    def raw(self) -> lmdb.Transaction:
        """The underlying py-lmdb transaction."""
        return self._raw

    @property
    def write(self) -> bool:
        """True for a write transaction."""
        return self._write

    def id(self) -> int:
        """LMDB's transaction ID."""
        return int(self._raw.id())

    def __getitem__(self, database: AsyncDatabase[Any, Any]) -> DatabaseView[Any, Any]:
        """A view of ``database`` (of this environment) inside this transaction."""
        if database._env is not self._env:
            raise ValueError("that database belongs to another environment")
        view = self._views.get(id(database))
        if view is None:
            view = DatabaseView(self._raw, self._write, database)
            self._views[id(database)] = view
        return view


def make_transaction(database: AsyncDatabase[Any, Any], write: bool) -> Callable[[Any], Any]:
    """A factory the engine calls with the raw transaction, on the worker thread."""

    def build(raw: lmdb.Transaction) -> Transaction[Any, Any]:
        return Transaction(raw, write, database)

    return build


# --------------------------------------------------------------------------- async transactions
class AsyncDatabaseView(AsyncReads[K, V]):
    """One database inside an interactive transaction or a snapshot (``txn[db]``).

    Every operation is awaitable and runs inside that transaction: in a write transaction on
    the writer thread (one hop per await), in a snapshot on a reader thread.
    """

    __slots__ = ("_db", "_txn", "key_coder", "value_coder")

    def __init__(self, txn: AsyncTransaction, database: AsyncDatabase[K, V]) -> None:
        self._txn = txn
        self._db = database
        self.key_coder: Coder[K] = database.key_coder
        self.value_coder: Coder[V] = database.value_coder

    @property
    def dupsort(self) -> bool:
        """True for a dupsort database."""
        return self._db.dupsort

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        dbi = await self._db._ready()
        return await self._txn._call(fn, (dbi, *args), False)

    async def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        dbi = await self._db._ready()
        return await self._txn._call(fn, (dbi, *args), True)

    async def _write_by_dupsort(self, fn: Callable[..., Any], *args: Any) -> Any:
        # For writes whose last argument is the dupsort flag: it is known once the database
        # is open (a database takes the flags LMDB stored for it), so it is read after that.
        dbi = await self._db._ready()
        return await self._txn._call(fn, (dbi, *args, self.dupsort), True)

    def _stream(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        on_item: Callable[[Any], None],
        on_end: Callable[[BaseException | None], None],
    ) -> bool:
        return False  # one command at a time inside a transaction: no reading ahead

    def _mks(self) -> int:
        return self._db._engine.max_key_size

    async def get(self, key: K, default: V | None = None) -> V | None:
        """The value of ``key`` in this transaction, or ``default``."""
        return await self._read(  # type: ignore[no-any-return]
            _ops.get, self.key_coder, self.value_coder, self._mks(), key, default
        )

    async def get_multi(self, keys: Iterable[K], default: V | None = None) -> dict[K, V | None]:
        """A dict with every requested key; missing ones map to ``default``."""
        return await self._read(  # type: ignore[no-any-return]
            _ops.get_multi, self.key_coder, self.value_coder, self._mks(), list(keys), default
        )

    async def put(self, key: K, value: V, *, overwrite: bool = True) -> bool:
        """Store ``value`` under ``key`` (visible to this transaction at once; durable at
        commit). False when nothing was stored."""
        return await self._write_by_dupsort(  # type: ignore[no-any-return]
            _ops.put, self.key_coder, self.value_coder, self._mks(), key, value, overwrite
        )

    async def put_multi(self, items: Iterable[tuple[K, V]] | Mapping[K, V]) -> int:
        """Store every pair (all or nothing); returns how many were added."""
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        return await self._write_by_dupsort(  # type: ignore[no-any-return]
            _ops.put_multi, self.key_coder, self.value_coder, self._mks(), pairs
        )

    async def delete(self, key: K, value: V = _MISSING) -> bool:
        """Delete ``key`` (or one pair of a dupsort database); True if it existed."""
        has_value = value is not _MISSING
        return await self._write_by_dupsort(  # type: ignore[no-any-return]
            _ops.delete,
            self.key_coder,
            self.value_coder,
            self._mks(),
            key,
            value if has_value else None,
            has_value,
        )

    async def delete_multi(self, keys: Iterable[K]) -> dict[K, bool]:
        """Delete every key; a dict of key -> whether it existed."""
        return await self._write(  # type: ignore[no-any-return]
            _ops.delete_multi, self.key_coder, self.value_coder, self._mks(), list(keys)
        )

    async def pop(self, key: K, default: V | None = None) -> V | None:
        """Delete ``key`` and return its old value, or ``default``."""
        return await self._write(  # type: ignore[no-any-return]
            _ops.pop, self.key_coder, self.value_coder, self._mks(), key, default
        )

    async def replace(self, key: K, value: V) -> V | None:
        """Store ``value`` and return the old value, or None."""
        return await self._write(  # type: ignore[no-any-return]
            _ops.replace, self.key_coder, self.value_coder, self._mks(), key, value
        )

    async def update(self, key: K, fn: Callable[[V | None], V], default: V | None = None) -> V:
        """Store ``fn(old)`` and return it."""
        return await self._write(  # type: ignore[no-any-return]
            _ops.update, self.key_coder, self.value_coder, self._mks(), key, fn, default
        )

    async def count(self) -> int:
        """The number of entries, as this transaction sees them."""
        return await self._read(_ops.count)  # type: ignore[no-any-return]


class AsyncTransaction:
    """Base of :class:`WriteTransaction` and :class:`Snapshot`: ``txn[db]`` views."""

    __slots__ = ("__weakref__", "_engine", "_env", "_state")

    _NEW, _OPEN, _DONE = 0, 1, 2

    def __init__(self, env: Environment) -> None:
        self._env = env
        self._engine = env._engine
        self._state = self._NEW

    def __getitem__(self, database: AsyncDatabase[K, V]) -> AsyncDatabaseView[K, V]:
        """The view of ``database`` (of this environment) inside this transaction."""
        if database._env is not self._env:
            raise ValueError("that database belongs to another environment")
        return AsyncDatabaseView(self, database)

    def _check_usable(self) -> None:
        if self._state == self._NEW:
            raise TransactionError("the transaction has not begun: use 'async with env.begin()'")
        if self._state == self._DONE:
            raise TransactionError("the transaction has already ended")
        self._engine.check_open()

    async def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], write: bool) -> Any:
        raise NotImplementedError  # pragma: no cover - abstract

    @property
    def active(self) -> bool:
        """True between begin and commit/abort."""
        return self._state == self._OPEN


class WriteTransaction(AsyncTransaction):
    """An exclusive write transaction held across awaits: ``async with env.begin(write=True)``.

    For read-modify-write logic that must await between steps. It runs on the writer thread
    (LMDB requires it), one hop per await; other writers wait their turn until it ends, so keep
    it short. Leaving the block normally commits; an exception, including cancellation, rolls
    back. ``await txn.commit()`` / ``await txn.abort()`` end it explicitly. Writing with a plain
    ``db.put`` from the task that holds it raises :class:`~aiolmdb.DeadlockError`. If a command
    fills the map (``lmdb.MapFullError``) the transaction can only roll back; the map is grown
    afterwards, so running it again fits.
    """

    __slots__ = ("_session",)

    def __init__(self, env: Environment) -> None:
        super().__init__(env)
        self._session: WriteSession | None = None

    async def __aenter__(self) -> WriteTransaction:
        await self.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != self._OPEN:
            return
        if exc_type is None:
            await self.commit()
        else:
            await self.abort()

    async def begin(self) -> None:
        """Wait for the writer and begin the transaction (``async with`` does this)."""
        if self._state != self._NEW:
            raise TransactionError("the transaction has already begun")
        engine = self._engine
        engine.check_open()
        engine.check_not_holding("a second write transaction")
        session = WriteSession(asyncio.current_task())
        started: asyncio.Future[None] = engine.loop().create_future()
        engine.start_session(session, started)
        try:
            await started
        except BaseException:
            session.send(None, ABORT, ())  # never started, or cancelled: roll back
            self._state = self._DONE
            raise
        self._session = session
        self._state = self._OPEN
        engine.active_session = session

    async def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], write: bool) -> Any:
        self._check_usable()
        session = self._session
        assert session is not None
        fut = asyncio.get_running_loop().create_future()
        if not session.send(fut, fn, args):
            raise TransactionError("the transaction has already ended")
        return await fut

    async def _finish(self, command: Callable[..., Any]) -> None:
        if self._state != self._OPEN:
            raise TransactionError("the transaction is not active")
        session = self._session
        assert session is not None
        self._state = self._DONE
        if self._engine.active_session is session:
            self._engine.active_session = None
        fut = asyncio.get_running_loop().create_future()
        if session.send(fut, command, ()):
            await fut
        elif command is COMMIT:
            # Only close() ends a session its holder has not ended: it rolled it back.
            raise ClosedError(
                f"environment {self._env.path!r} is closed: it rolled this transaction back"
            )

    async def commit(self) -> None:
        """Commit every change made in this transaction (durable when this returns)."""
        await self._finish(COMMIT)

    async def abort(self) -> None:
        """Roll back every change made in this transaction."""
        await self._finish(ABORT)

    def __del__(self) -> None:
        session = getattr(self, "_session", None)
        if session is not None and self._state == self._OPEN:
            session.send(None, ABORT, ())  # never left the block: do not hold the writer


class Snapshot(AsyncTransaction):
    """A consistent read-only view across databases: ``async with env.begin() as snap``.

    Commits made after it began are not visible in it. Each await is one hop to a reader
    thread. It holds an LMDB reader slot (and old pages) until it ends, so keep it reasonably
    short; it is released on exit, including on cancellation. Growing the map invalidates it
    (:class:`~aiolmdb.SnapshotExpiredError`): begin a new one.
    """

    __slots__ = ("_generation", "_lock", "_txn")

    def __init__(self, env: Environment) -> None:
        super().__init__(env)
        self._txn: lmdb.Transaction | None = None
        self._generation = -1
        self._lock = threading.Lock()

    async def __aenter__(self) -> Snapshot:
        await self.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def begin(self) -> None:
        """Begin the snapshot (``async with`` does this)."""
        if self._state != self._NEW:
            raise TransactionError("the snapshot has already begun")
        self._state = self._OPEN
        try:
            await self._engine.run_blocking(self._begin)
        except BaseException:
            self.release()
            raise
        self._engine.snapshots.add(self)

    def _begin(self) -> None:
        # Reader thread, inside the gate: no resize can run between these two lines.
        txn = self._engine.begin_in_gate()
        with self._lock:
            if self._state == self._DONE:  # released (e.g. cancelled) while starting
                txn.abort()
                return
            self._txn = txn
            self._generation = self._engine.map_generation

    async def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], write: bool) -> Any:
        if write:
            raise ReadOnlyError("cannot write in a read snapshot: use env.begin(write=True)")
        self._check_usable()
        return await self._engine.run_blocking(self._run, fn, args)

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        with self._lock:
            txn = self._txn
            if txn is None:
                raise TransactionError("the snapshot has already ended")
            if self._generation != self._engine.map_generation:
                raise SnapshotExpiredError(
                    "the map was grown while this snapshot was open, which invalidates it; "
                    "begin a new snapshot"
                )
            return fn(txn, *args)

    def release(self) -> None:
        """End the snapshot and free its reader slot (idempotent; exit does this)."""
        self._state = self._DONE
        if not self._lock.acquire(blocking=False):
            # A command is still running on a reader thread: release right after it.
            self._engine.submit_quiet(self.release)
            return
        try:
            txn, self._txn = self._txn, None
        finally:
            self._lock.release()
        if txn is not None:
            with contextlib.suppress(lmdb.Error):
                txn.abort()

    def __del__(self) -> None:
        if getattr(self, "_txn", None) is not None:
            self.release()
