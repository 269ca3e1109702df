"""Synchronous transaction objects handed to user code by ``run(fn)``.

``fn(txn)`` runs on a worker thread (the writer thread for ``write=True``) inside one LMDB
transaction. ``txn[db]`` is a :class:`DatabaseView` of any database of the environment, with that
database's coders; the transaction given by ``db.run`` is also bound to ``db`` itself, so
``txn.get(key)`` works as in aiolmdb 0.1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import lmdb

from ._engine.delivery import Counted
from ._store import ops as _ops
from ._store import scan as _scan
from ._store.ops import MISSING, DbContext
from ._store.versions import Entry
from ._surface import RangeSurface, check_chunk_size, count_spec, pairs_of, pieces
from .coders import Coder
from .errors import ConflictError, ReadOnlyError
from .ranges import iterate_sync, scan_args

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._engine.delivery import Txn
    from ._engine.engine import Engine
    from ._surface import DeleteOptions, PutOptions, RangeOptions
    from .database import AsyncDatabase

__all__ = ["DatabaseView", "Transaction", "run_in_transaction"]

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")
K2 = TypeVar("K2")
V2 = TypeVar("V2")


class DatabaseView(
    RangeSurface[
        K, V, Iterator[tuple[K, V]], Iterator[K], Iterator[V], Iterator[tuple[K, Entry[V]]]
    ]
):
    """One database seen through a transaction: synchronous, coder-aware operations.

    Only valid inside the function given to ``run``; values it returns are decoded copies, so
    they stay valid after the transaction ends. Its coders start as the database's; you may
    replace them on the view, for the rest of the transaction.
    """

    __slots__ = ("_ctx", "_entry", "_env", "_tally", "_txn", "_writable")

    def __init__(
        self,
        txn: Txn,
        writable: bool,
        ctx: DbContext[K, V],
        database: AsyncDatabase[K, V],
        tally: _Tally | None = None,
    ) -> None:
        self._txn = txn
        self._writable = writable
        self._ctx = ctx
        self._entry = database._entry
        self._env = database.environment
        # The conflicts met in this transaction (shared by its views), for the engine's count.
        self._tally = tally if tally is not None else _Tally()

    @property
    def key_coder(self) -> Coder[K]:
        """The coder of keys in this view; you may replace it (for this transaction)."""
        return self._ctx.kc

    @key_coder.setter
    def key_coder(self, coder: Coder[K]) -> None:
        self._ctx = self._ctx.with_coders(coder, self._ctx.vc)

    @property
    def value_coder(self) -> Coder[V]:
        """The coder of values in this view; you may replace it (for this transaction)."""
        return self._ctx.vc

    @value_coder.setter
    def value_coder(self, coder: Coder[V]) -> None:
        self._ctx = self._ctx.with_coders(self._ctx.kc, coder)

    def _conditional(self, fn: Callable[..., Any], ctx: DbContext[K, V], args: Any) -> bool:
        """A put or delete that may have conditions: its result, its conflicts tallied."""
        try:
            result = fn(self._txn, ctx, *args)
        except ConflictError:
            self._tally.conflicts += 1
            raise
        if type(result) is Counted:
            self._tally.conflicts += result.conflicts
            return bool(result.value)
        return bool(result)

    def _writing(self, what: str) -> DbContext[K, V]:
        if not self._writable:
            raise ReadOnlyError(
                f"cannot {what} in a read-only transaction: use run(fn, write=True)"
            )
        return self._ctx

    def _range(self, mode: int, start: Any, stop: Any, options: RangeOptions[Any]) -> Iterator[Any]:
        return iterate_sync(self._txn, self._ctx, *scan_args(mode, start, stop, options))

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value stored under key (the first one in a dupsort database), or default."""
        return _ops.get(self._txn, self._ctx, key, default)

    def get_multi(self, keys: Iterable[K], default: V | None = None) -> dict[K, V | None]:
        """A dict with every requested key; missing keys map to default."""
        found = _ops.get_multi(self._txn, self._ctx, list(keys), default)
        return found

    def get_entry(self, key: K) -> Entry[V] | None:
        """The value of key with its version, or None (versioned databases)."""
        return _ops.get_entry(self._txn, self._ctx, key)

    def get_multi_entries(self, keys: Iterable[K]) -> dict[K, Entry[V] | None]:
        """A dict with every requested key: its Entry, or None when absent."""
        return _ops.get_multi_entries(self._txn, self._ctx, list(keys))

    def put(self, key: K, value: V, **options: Unpack[PutOptions[V]]) -> bool:
        """Store value under key. False if not stored (key exists and overwrite=False, the
        exact pair exists in a dupsort database, or a condition failed); options as for
        ``AsyncDatabase.put``."""
        fn, args = _ops.put_call(key, value, options)
        return self._conditional(fn, self._writing("put"), args)

    def put_multi(self, items: Iterable[tuple[K, V]] | Mapping[K, V]) -> int:
        """Store every pair; returns how many were added."""
        return _ops.put_multi(self._txn, self._writing("put_multi"), pairs_of(items))

    def delete(self, key: K, value: V = MISSING, **options: Unpack[DeleteOptions]) -> bool:
        """Delete key (or one (key, value) pair of a dupsort database); True if it existed.
        Options as for ``AsyncDatabase.delete``."""
        fn, args = _ops.delete_call(key, value, options)
        return self._conditional(fn, self._writing("delete"), args)

    def restore_entries(self, entries: Iterable[tuple[K, Entry[V]]]) -> int:
        """Store entries with the versions they carry (as ``AsyncDatabase.restore_entries``)."""
        return _ops.restore_entries(self._txn, self._writing("restore_entries"), list(entries))

    def delete_multi(self, keys: Iterable[K]) -> dict[K, bool]:
        """Delete every key; a dict of key -> whether it existed."""
        return _ops.delete_multi(self._txn, self._writing("delete_multi"), list(keys))

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Delete key and return its old value, or default."""
        return _ops.pop(self._txn, self._writing("pop"), key, default)

    def replace(self, key: K, value: V) -> V | None:
        """Store value under key and return the old value, or None."""
        return _ops.replace(self._txn, self._writing("replace"), key, value)

    def update(self, key: K, fn: Callable[[V | None], V], default: V | None = None) -> V:
        """Store fn(old) under key (old is default when absent) and return it."""
        return _ops.update(self._txn, self._writing("update"), key, fn, default)

    def get_chunks(self, key: K, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The stored bytes of ``key``'s value in pieces of ``chunk_size`` bytes (as
        ``AsyncDatabase.get_chunks``, read in this transaction); KeyError if absent."""
        check_chunk_size(chunk_size)
        data = _ops.get_stored(self._txn, self._ctx, key)
        if data is None:
            raise KeyError(key)
        return pieces(data, chunk_size)

    def stat(self) -> dict[str, Any]:
        """LMDB's statistics for this database (as ``AsyncDatabase.stat``)."""
        return _ops.stat(self._txn, self._ctx)

    def first(self) -> tuple[K, V] | None:
        """The pair with the smallest key, or None."""
        return _scan.first_or_last(self._txn, self._ctx, False)

    def last(self) -> tuple[K, V] | None:
        """The pair with the largest key, or None."""
        return _scan.first_or_last(self._txn, self._ctx, True)

    def get_all(self, key: K) -> list[V]:
        """Every value of key (sorted in a dupsort database)."""
        return _scan.get_all(self._txn, self._ctx, key)

    def count_values(self, key: K) -> int:
        """How many values key has."""
        return _scan.count_values(self._txn, self._ctx, key)

    def count(
        self, start: K | None = None, stop: K | None = None, *, prefix: K | None = None
    ) -> int:
        """The number of entries, or of those in a range (as ``AsyncDatabase.count``)."""
        if start is None and stop is None and prefix is None:
            return _ops.count(self._txn, self._ctx)
        return _scan.count_range(self._txn, self._ctx, count_spec(start, stop, prefix))


class Transaction(DatabaseView[K, V]):
    """The transaction given to ``fn`` by ``db.run(fn)`` and ``env.run(fn)``.

    ``txn[db]`` gives a :class:`DatabaseView` of any database of the same environment;
    ``txn.get(...)`` and the other operations act on the database ``run`` was called on
    (for ``env.run``, the default database). ``txn.raw`` is the underlying
    ``lmdb.Transaction`` (opened with ``buffers=False``, so what it returns are ``bytes``
    copies; do not keep it, or cursors of it, beyond ``fn``).
    """

    __slots__ = ("_views",)

    def __init__(
        self, txn: Txn, writable: bool, ctx: DbContext[K, V], database: AsyncDatabase[K, V]
    ) -> None:
        super().__init__(txn, writable, ctx, database)
        # One view per database for the whole transaction (with the database, so its id is
        # not reused meanwhile): coders set on a view stay set.
        self._views: dict[int, tuple[AsyncDatabase[Any, Any], DatabaseView[Any, Any]]] = {}

    @property
    def raw(self) -> lmdb.Transaction:
        """The underlying py-lmdb transaction (writes through it bypass the change log)."""
        return cast("lmdb.Transaction", getattr(self._txn, "raw", self._txn))

    @property
    def write(self) -> bool:
        """True for a write transaction."""
        return self._writable

    def id(self) -> int:
        """LMDB's transaction ID."""
        return int(self._txn.id())

    def __getitem__(self, database: AsyncDatabase[K2, V2]) -> DatabaseView[K2, V2]:
        """A view of ``database`` (of this environment) inside this transaction."""
        found = self._views.get(id(database))
        if found is not None:
            return found[1]
        if database.environment is not self._env:
            raise ValueError("that database belongs to another environment")
        view = DatabaseView(
            self._txn, self._writable, database._context_now(), database, self._tally
        )
        self._views[id(database)] = (database, view)
        return view


async def run_in_transaction(
    engine: Engine,
    database: AsyncDatabase[K, V],
    fn: Callable[[Transaction[K, V]], R],
    write: bool,
    wait_all_opened: Callable[[], Any],
) -> R:
    """``run(fn)``: ``fn(txn)`` in one transaction on a worker thread (the writer's own
    nested transaction of the current group commit for ``write=True``)."""
    if not callable(fn):
        raise TypeError(f"run() needs a callable taking the transaction; got {fn!r}")
    ctx = await database._context()
    await wait_all_opened()  # so txn[db] finds every database open

    def build(txn: Txn) -> Transaction[K, V]:
        return Transaction(txn, write, ctx, database)

    if write:
        return await engine.submit_write(_call, (fn, build), False)
    return await engine.submit_threaded(_call, (fn, build))


def _call(txn: Txn, fn: Callable[[Any], R], build: Callable[[Txn], Transaction[Any, Any]]) -> R:
    """Run user code: ``fn(txn)`` with the transaction ``build`` makes; the result comes
    back with the conflicts met in it, for the engine's count (a ConflictError raised out of
    ``fn`` is counted by the engine as one)."""
    view = build(txn)
    result = fn(view)
    conflicts = view._tally.conflicts
    if conflicts:
        return Counted(result, conflicts)  # type: ignore[return-value]  # the engine unwraps
    return result


class _Tally:
    """The conflicts met by the operations of one ``run(fn)`` transaction."""

    __slots__ = ("conflicts",)

    def __init__(self) -> None:
        self.conflicts = 0
