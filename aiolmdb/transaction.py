"""Synchronous transaction objects handed to user code by ``run(fn)``.

``fn(txn)`` runs on a worker thread (the writer thread for ``write=True``) inside one LMDB
transaction. ``txn[db]`` is a :class:`DatabaseView` of any database of the environment, with that
database's coders; the transaction given by ``db.run`` is also bound to ``db`` itself, so
``txn.get(key)`` works as in aiolmdb 0.1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import lmdb

from . import _ops, _scan
from .errors import ReadOnlyError
from .ranges import check_range_args, iterate_sync

if TYPE_CHECKING:
    from .database import AsyncDatabase

__all__ = ["DatabaseView", "Transaction"]

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
        return _scan.count_values(self._raw, self._db, self._kc, self._mks, key, self._dupsort)

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
