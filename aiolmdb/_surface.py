"""The operation surface, written once.

:class:`RangeSurface` declares ``items``/``keys``/``values`` (their signatures and docs) for
every view, synchronous or not: only what they return differs. :class:`AsyncOps` is every
awaitable operation of a database, shared by :class:`~aiolmdb.AsyncDatabase` and the views of
interactive transactions and snapshots; each is one line over ``_read``/``_write``, which a
subclass implements (how it reaches a transaction). The operations themselves are the functions
of ``_store.ops`` and ``_store.scan``.
"""

from __future__ import annotations

import datetime
import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from ._store import large as _large
from ._store import ops as _ops
from ._store import scan as _scan
from ._store.ops import MISSING, DbContext
from ._store.versions import Entry
from .coders import Coder
from .ranges import OnEnd, OnItem, RangeIterator, StreamFn, scan_args

__all__ = [
    "AsyncOps",
    "RangeSurface",
    "check_chunk_size",
    "check_sync_callable",
    "count_spec",
    "is_async_callable",
    "pairs_of",
    "pieces",
]

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")
D = TypeVar("D")
P = ParamSpec("P")
# What items(), keys() and values() return.
ItemsT = TypeVar("ItemsT")
KeysT = TypeVar("KeysT")
ValuesT = TypeVar("ValuesT")
EntriesT = TypeVar("EntriesT")

if TYPE_CHECKING:
    from typing import TypeAlias, TypedDict

    from typing_extensions import Unpack

    from ._engine.delivery import Txn
    from ._store.catalogue import DatabaseEntry
    from .environment import Environment

    # An operation as the surface hands it over: fn(txn, ctx, *args).
    Op: TypeAlias = Callable[Concatenate[Txn, DbContext[K, V], P], R]

    class RangeOptions(TypedDict, Generic[K], total=False):
        """The keyword options of items/keys/values (see RangeSurface.items)."""

        prefix: K | None
        reverse: bool
        limit: int | None
        offset: int
        batch_size: int | None
        prefetch: bool
        chunk_size: int | None  # deprecated: batch_size


def count_spec(start: Any, stop: Any, prefix: Any) -> _scan.ScanSpec:
    """The range ``count(start, stop, prefix=)`` counts."""
    return _scan.ScanSpec(_scan.ITEMS, start, stop, prefix, False)


def check_chunk_size(chunk_size: object) -> None:
    """get_chunks' piece size: a positive int (bytes)."""
    if type(chunk_size) is not int or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def pieces(data: bytes, chunk_size: int) -> Iterator[bytes]:
    """``data`` in pieces of ``chunk_size`` bytes (the last one shorter)."""
    view = memoryview(data)
    for start in range(0, len(data), chunk_size):
        yield bytes(view[start : start + chunk_size])


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` gives a coroutine, as far as can be told without calling it: a
    coroutine function, a ``functools.partial`` of one, an object with an async ``__call__``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isroutine(fn) or isinstance(fn, type):
        return False
    return inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))  # noqa: B004


def check_sync_callable(fn: object, where: str, instead: str) -> None:
    """Refuse an async callable where a plain function runs on a worker thread (it would only
    make an un-awaited coroutine there): a TypeError naming ``where`` and what to pass."""
    if is_async_callable(fn):
        raise TypeError(f"{where} got the async callable {fn!r}: {instead}")


def pairs_of(items: Iterable[tuple[K, V]] | Mapping[K, V]) -> list[tuple[K, V]]:
    """put_multi's argument as a list of pairs (made on the caller's thread)."""
    return list(items.items()) if isinstance(items, Mapping) else list(items)


# What to pass instead of an async callable, said by the TypeError refusing one.
UPDATE_INSTEAD = (
    "update() runs fn(old) on the writer thread inside the write transaction, so fn must be a "
    "plain function returning the new value; to await things between the read and the write, "
    "use 'async with env.begin(write=True) as txn' (await txn[db].get(k), then "
    "await txn[db].put(k, v))"
)


class RangeSurface(Generic[K, V, ItemsT, KeysT, ValuesT, EntriesT]):
    """What every database view shares, written once: its properties (``name``,
    ``environment``, ``dupsort``, ``versioned``, the coders) and ``items``/``keys``/``values``/
    ``entries``; ``_range`` makes the iterator. Subclasses set ``_entry`` (the database's
    catalogue entry) and ``_env``."""

    __slots__ = ()

    _entry: DatabaseEntry
    _env: Environment
    key_coder: Coder[K]
    value_coder: Coder[V]

    @property
    def name(self) -> str | None:
        """The database's name (None for the default database)."""
        return self._entry.label

    @property
    def environment(self) -> Environment:
        """The environment this database belongs to."""
        return self._env

    @property
    def dupsort(self) -> bool:
        """True if the database keeps several sorted values per key (``dupsort=True``)."""
        return self._entry.dupsort

    @property
    def versioned(self) -> bool:
        """True if every entry carries a version (``versioned=True``)."""
        return self._entry.versioned

    @property
    def ttl(self) -> float | None:
        """An expiring database's default time to live in seconds (``open_db(name, ttl=)``);
        None if its entries never expire."""
        ttl_ms = self._entry.ttl_ms
        return None if ttl_ms is None else ttl_ms / 1000

    def _range(self, mode: int, start: Any, stop: Any, options: RangeOptions[Any]) -> Any:
        raise NotImplementedError  # pragma: no cover - provided by subclasses

    def items(
        self, start: K | None = None, stop: K | None = None, **options: Unpack[RangeOptions[K]]
    ) -> ItemsT:
        """Iterate ``(key, value)`` pairs with keys in ``[start, stop)``, in encoded-key order.

        Options: ``prefix`` keeps keys whose encoding starts with the encoded prefix;
        ``reverse=True`` walks the range from its end; ``offset`` skips that many entries first
        (on the reader thread, without decoding them); ``limit`` caps the count;
        ``batch_size`` (default 4096; the first reads take fewer, from 64) is how many
        entries one read takes (``chunk_size``, its old name, is deprecated: a chunk counts
        bytes, in ``get_chunks``); ``prefetch=True`` reads the range on reader threads, ahead
        of you, even while reads run inline (its pages are read off the loop: for a range
        that may not be in memory). In a dupsort database every pair is yielded. See
        :mod:`aiolmdb.ranges` for ordering and consistency.
        """
        return cast(ItemsT, self._range(_scan.ITEMS, start, stop, options))

    def keys(
        self, start: K | None = None, stop: K | None = None, **options: Unpack[RangeOptions[K]]
    ) -> KeysT:
        """Iterate the keys in ``[start, stop)`` (each key once, also in a dupsort database);
        options as for :meth:`items`."""
        return cast(KeysT, self._range(_scan.KEYS, start, stop, options))

    def values(
        self, start: K | None = None, stop: K | None = None, **options: Unpack[RangeOptions[K]]
    ) -> ValuesT:
        """Iterate the values of the keys in ``[start, stop)``; options as for :meth:`items`."""
        return cast(ValuesT, self._range(_scan.VALUES, start, stop, options))

    def entries(
        self, start: K | None = None, stop: K | None = None, **options: Unpack[RangeOptions[K]]
    ) -> EntriesT:
        """Iterate ``(key, Entry(value, version))`` pairs of a versioned database; options as
        for :meth:`items` (ValueError in a database that is not versioned)."""
        return cast(EntriesT, self._range(_scan.ENTRIES, start, stop, options))


class AsyncOps(
    RangeSurface[
        K,
        V,
        RangeIterator[tuple[K, V]],
        RangeIterator[K],
        RangeIterator[V],
        RangeIterator[tuple[K, Entry[V]]],
    ]
):
    """Every awaitable operation on one database. Subclasses say how an operation reaches a
    transaction (``_read``, ``_write``, ``_stream``) and where the database's context comes
    from (``_context``)."""

    __slots__ = ()

    async def _context(self) -> DbContext[K, V]:
        """The database's context, once it is open (waits for the open)."""
        raise NotImplementedError  # pragma: no cover - provided by subclasses

    async def _read(self, fn: Op[K, V, P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(txn, ctx, *args)`` in a read transaction and return its result."""
        raise NotImplementedError  # pragma: no cover - provided by subclasses

    async def _write(self, fn: Op[K, V, P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(txn, ctx, *args)`` in a write transaction and return its result."""
        raise NotImplementedError  # pragma: no cover - provided by subclasses

    def _stream(
        self,
        fn: StreamFn,
        args: tuple[Any, ...],
        on_item: OnItem,
        on_end: OnEnd,
        prefetch: bool = False,
    ) -> bool:
        """Start ``fn(txn, emit, *args)`` on a reader thread (see the engine's submit_stream);
        False if this source cannot (a range iterator then reads chunk by chunk with _read).
        ``prefetch``: the range asked to be read on reader threads even when reads are
        inline."""
        return False

    def _range(
        self, mode: int, start: Any, stop: Any, options: RangeOptions[Any]
    ) -> RangeIterator[Any]:
        prefetch = options.get("prefetch", False)
        return RangeIterator(self, *scan_args(mode, start, stop, options), prefetch=prefetch)

    # ----------------------------------------------------------------- reads
    @overload
    async def get(self, key: K) -> V | None: ...
    @overload
    async def get(self, key: K, default: D) -> V | D: ...
    async def get(self, key: K, default: Any = None) -> Any:
        """The value stored under ``key`` (the first one in a dupsort database), or ``default``
        (None unless given; typed ``V | None``, or ``V | D`` for a default of type ``D``)."""
        return await self._read(_ops.get, key, default)

    async def exists(self, key: K) -> bool:
        """True if ``key`` is stored (has a value, in a dupsort database at least one). Cheap:
        the value is neither copied nor decoded."""
        return await self._read(_ops.exists, key)

    def __aiter__(self) -> RangeIterator[K]:
        """``async for key in db``: every key in key order, each once (also in a dupsort
        database), as iterating a dict gives its keys; the same as ``keys()``."""
        return self._range(_scan.KEYS, None, None, {})

    @overload
    async def get_multi(self, keys: Iterable[K]) -> dict[K, V | None]: ...
    @overload
    async def get_multi(self, keys: Iterable[K], default: D) -> dict[K, V | D]: ...
    async def get_multi(self, keys: Iterable[K], default: Any = None) -> dict[K, Any]:
        """Read many keys in one transaction: a dict holding every requested key, missing
        ones mapped to ``default``."""
        return await self._read(_ops.get_multi, list(keys), default)

    async def get_entry(self, key: K) -> Entry[V] | None:
        """The value stored under ``key`` with its version, ``Entry(value, version)``, or
        None if absent (versioned databases)."""
        return await self._read(_ops.get_entry, key)

    async def get_multi_entries(self, keys: Iterable[K]) -> dict[K, Entry[V] | None]:
        """Read many keys with their versions in one transaction: a dict holding every
        requested key, missing ones mapped to None (versioned databases)."""
        return await self._read(_ops.get_multi_entries, list(keys))

    def get_chunks(self, key: K, chunk_size: int = 1 << 20) -> AsyncGenerator[bytes, None]:
        """Stream the value stored under ``key`` as ``bytes`` pieces of ``chunk_size`` (the
        last one shorter), without holding the whole value in memory; KeyError if absent.

        The pieces are the stored bytes, as the value coder wrote them (the value itself with
        IdentityCoder; a versioned database's without the version), all of one value: a write
        made meanwhile is not seen. On a database it holds a read transaction (and the value's
        pages) until the iteration ends; growing the map meanwhile ends it with
        :class:`~aiolmdb.SnapshotExpiredError`. In a transaction's or snapshot's view it reads
        the value in that transaction, whole, and hands it out in pieces.
        """
        check_chunk_size(chunk_size)
        return self._value_chunks(key, chunk_size)

    async def _value_chunks(self, key: K, chunk_size: int) -> AsyncGenerator[bytes, None]:
        """get_chunks in a view's own transaction: one read, handed out in pieces."""
        data = await self._read(_ops.get_stored, key)
        if data is None:
            raise KeyError(key)
        for piece in pieces(data, chunk_size):
            yield piece

    async def first(self) -> tuple[K, V] | None:
        """The ``(key, value)`` pair with the smallest key, or None if the database is empty."""
        return await self._read(_scan.first_or_last, False)

    async def last(self) -> tuple[K, V] | None:
        """The ``(key, value)`` pair with the largest key, or None if the database is empty."""
        return await self._read(_scan.first_or_last, True)

    async def get_all(self, key: K) -> list[V]:
        """Every value of ``key``, in sorted order in a dupsort database ([] if absent)."""
        return await self._read(_scan.get_all, key)

    async def count_values(self, key: K) -> int:
        """How many values ``key`` has (0 if absent; at most 1 outside dupsort databases)."""
        return await self._read(_scan.count_values, key)

    async def count(
        self, start: K | None = None, stop: K | None = None, *, prefix: K | None = None
    ) -> int:
        """The number of entries, or of those in the range ``[start, stop)`` / under
        ``prefix`` (every value counts in a dupsort database). The whole database's count
        comes from LMDB's statistics; a range is counted from its keys, without decoding. In
        an expiring database only the entries that have not expired count: each value's
        expiry is read (``stat()`` counts every stored entry)."""
        if start is None and stop is None and prefix is None:
            return await self._read(_ops.count)
        return await self._read(_scan.count_range, count_spec(start, stop, prefix))

    async def stat(self) -> dict[str, Any]:
        """LMDB's statistics for this database (``psize``, ``depth``, ``entries``, ...)."""
        return await self._read(_ops.stat)

    # ----------------------------------------------------------------- writes
    async def put(
        self,
        key: K,
        value: V,
        *,
        overwrite: bool = True,
        if_version: int | None = None,
        if_value: V = MISSING,
        raise_on_conflict: bool = False,
        ttl: float | datetime.timedelta | None = MISSING,
    ) -> bool:
        """Store ``value`` under ``key``; returns once the write is committed (in a
        transaction: visible to it at once, durable at its commit).

        ``overwrite=False`` stores only if the key is absent; ``if_version=v``
        (versioned databases) only if the entry's version is still ``v``; ``if_value=x`` only
        if the stored value encodes to the same bytes as ``x``. Conditions are checked on the
        writer thread, in the write's own transaction. Returns False when nothing was stored
        (a condition failed, or in a dupsort database that exact pair exists);
        ``raise_on_conflict=True`` raises :class:`~aiolmdb.ConflictError` instead (without a
        condition a put always stores: it has nothing to conflict with). ``ttl=seconds``
        (an expiring database only) makes the entry expire that long after the write instead
        of after the database's default; ``ttl=None`` makes it never expire.
        """
        fn, args = _ops.put_call(
            key, value, overwrite, if_version, if_value, raise_on_conflict, ttl
        )
        return await self._write(fn, *args)

    async def put_chunks(self, key: K, source: _large.ChunkSource) -> bool:
        """Store the bytes of ``source`` under ``key``: an async iterable of bytes-like pieces,
        or a binary file-like object (its ``read`` runs on a worker thread, or is awaited if
        it is a coroutine function). The bytes are stored as they are, as ``get_chunks``
        returns them (with a value coder other than IdentityCoder they must be what it would
        write). LMDB has no way to write a value in pieces through py-lmdb, so the pieces are
        gathered in memory (appended on the loop, a large piece in slices) and written in one
        put, without a further copy. Returns as ``put`` does.
        """
        room = _ops.stored_room(await self._context())
        data = await _large.assemble(source, room)
        return await self._write(_ops.put_stored, key, data)

    async def put_multi(
        self,
        items: Iterable[tuple[K, V]] | Mapping[K, V],
        *,
        ttl: float | datetime.timedelta | None = MISSING,
    ) -> int:
        """Store every ``(key, value)`` pair (or a mapping's items) atomically: all or nothing.

        Returns how many pairs were added (in a dupsort database, exact pairs that already
        existed do not count). In an expiring database every pair expires after ``ttl``
        seconds (default: the database's; None: never); ValueError elsewhere.
        """
        if ttl is MISSING:
            return await self._write(_ops.put_multi, pairs_of(items))
        return await self._write(_ops.put_multi, pairs_of(items), _ops.ttl_arg(ttl))

    async def delete(
        self,
        key: K,
        value: V = MISSING,
        *,
        if_version: int | None = None,
        if_value: V = MISSING,
        raise_on_conflict: bool = False,
    ) -> bool:
        """Delete ``key``; True if it existed. With ``value``, only that exact pair goes (in a
        dupsort database one of the key's values; in a plain one, the key only if it holds
        that value); without it, every value of the key goes. ``if_version=v``
        (versioned databases) deletes only if the entry's version is still ``v``;
        ``if_value=x`` only if the stored value encodes to the same bytes as ``x`` (as
        ``put``'s; not in a dupsort database); ``raise_on_conflict=True`` raises
        :class:`~aiolmdb.ConflictError` when a condition (``value``, ``if_value``,
        ``if_version``) fails instead of returning False. Without a condition there is
        nothing to conflict with: an absent key returns False."""
        fn, args = _ops.delete_call(key, value, if_version, if_value, raise_on_conflict)
        return await self._write(fn, *args)

    async def delete_multi(self, keys: Iterable[K]) -> dict[K, bool]:
        """Delete many keys atomically; a dict of key -> whether it existed."""
        return await self._write(_ops.delete_multi, list(keys))

    async def restore_entries(self, entries: Iterable[tuple[K, Entry[V]]]) -> int:
        """Store ``(key, Entry)`` pairs with the versions they carry, atomically, and raise
        the environment's version counter to the highest, so later writes draw higher
        versions (versioned databases; for restoring a dump: ``aiolmdb load``). Returns how
        many were stored."""
        return await self._write(_ops.restore_entries, list(entries))

    @overload
    async def pop(self, key: K) -> V | None: ...
    @overload
    async def pop(self, key: K, default: D) -> V | D: ...
    async def pop(self, key: K, default: Any = None) -> Any:
        """Delete ``key`` and return its old value, or ``default`` if it was absent."""
        return await self._write(_ops.pop, key, default)

    async def replace(self, key: K, value: V) -> V | None:
        """Store ``value`` under ``key`` and return the previous value, or None."""
        return await self._write(_ops.replace, key, value)

    @overload
    async def update(self, key: K, fn: Callable[[V | None], V]) -> V: ...
    @overload
    async def update(self, key: K, fn: Callable[[V], V], default: V) -> V: ...
    async def update(self, key: K, fn: Callable[[Any], V], default: V | None = None) -> V:
        """Atomically store ``fn(old)`` under ``key`` and return it: the tool for
        read-modify-write (a counter, appending to a list, a balance).

        ``fn`` runs on the writer thread inside the write transaction (``old`` is ``default``
        when the key is absent, None unless given), so no other write, of this process or of
        any other (LMDB has one writer at a time), can slip in between the read and the
        write: no retry loop, no conflict. Keep ``fn`` a short plain function, free of I/O
        (an async function is refused with TypeError). For a change that spans a round trip
        to a user (an edit form, an HTTP ``If-Match``/ETag), read ``get_entry`` and write
        with ``put(..., if_version=)`` instead: see the versions guide and the recipes page.
        """
        check_sync_callable(fn, "update()", UPDATE_INSTEAD)
        return await self._write(_ops.update, key, fn, default)
