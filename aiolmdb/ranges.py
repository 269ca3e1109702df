"""Async iteration over key ranges: ``db.items()``, ``db.keys()``, ``db.values()``.

Ranges are half-open, ``[start, stop)``, in the order of the *encoded* keys (LMDB compares bytes):
UInt16/32/64 keys come in numeric order, StringCoder keys in UTF-8 byte order (code point order),
JSON or pickled keys in no useful order. ``prefix`` keeps the keys whose encoding starts with the
encoded prefix; ``reverse=True`` walks the same range from its end; ``limit`` caps the count.

Consistency: each chunk is read in its own read transaction, starting just past the last entry
of the previous chunk. Nothing is held between chunks, so an abandoned iterator leaks no reader
slot and never holds back writers; a scan sees writes committed while it runs once it reaches
them. For one consistent view of everything, iterate inside ``env.begin()`` (a read snapshot)
or ``run(fn)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, Generic, Protocol, TypeVar

import lmdb

from . import _scan
from .coders import Coder

__all__ = ["DEFAULT_CHUNK_SIZE", "AsyncReads", "RangeIterator"]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

DEFAULT_CHUNK_SIZE = 4096
# batches() reads about this many entries per hop, cut into lists of the size asked for.
_BATCH_HOP = 8192
# The first chunk is small (a caller may want just a few entries); later ones double.
_FIRST_CHUNK = 64


def check_range_args(limit: int | None, chunk_size: int | None) -> int:
    """Validate limit and chunk_size; return the chunk size to use."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    if chunk_size is None:
        return DEFAULT_CHUNK_SIZE
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return chunk_size


class RangeSource(Protocol):
    """What a RangeIterator reads from: a database, or a database inside a transaction."""

    key_coder: Coder[Any]
    value_coder: Coder[Any]

    @property
    def dupsort(self) -> bool:
        """Whether the database is dupsort."""

    def _read(self, fn: Any, *args: Any) -> Awaitable[Any]:
        """Run fn(txn, dbi, *args) in a read transaction."""

    def _prefetch(self, fn: Any, *args: Any) -> asyncio.Future[Any] | None:
        """Start fn(txn, dbi, *args) now and return its future, or None if unsupported."""


class RangeIterator(Generic[T]):
    """An async iterator over part of a database, read in chunks on worker threads.

    Use it with ``async for``; ``batches(n)`` yields lists instead (the fastest way to export).
    While you consume one chunk, the next is already being read. ``aclose()`` (or ``break``)
    stops it; it holds no transaction, so dropping it is also fine.
    """

    __slots__ = (
        "_chunk_size",
        "_closed",
        "_done",
        "_it",
        "_kc",
        "_next_size",
        "_pending",
        "_remaining",
        "_resume",
        "_source",
        "_spec",
        "_started",
        "_vc",
    )

    def __init__(
        self,
        source: RangeSource,
        mode: int,
        start: Any,
        stop: Any,
        prefix: Any,
        reverse: bool,
        limit: int | None,
        chunk_size: int | None,
    ) -> None:
        self._chunk_size = check_range_args(limit, chunk_size)
        self._next_size = min(_FIRST_CHUNK, self._chunk_size)
        self._source = source
        self._kc: Coder[Any] = source.key_coder
        self._vc: Coder[Any] = source.value_coder
        self._spec = _scan.ScanSpec(mode, start, stop, prefix, reverse, source.dupsort)
        self._remaining = limit
        # Over the current chunk: its entries, or (key, value) pairs zipped from its columns.
        self._it: Iterator[Any] = iter(())
        self._pending: asyncio.Future[Any] | None = None
        self._closed = False
        self._started = False
        # Where the scan has got to, advanced only when a chunk is received here: a chunk
        # whose await was cancelled is simply read again.
        self._resume: _scan.Resume | None = None
        self._done = False

    def __aiter__(self) -> RangeIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return next(self._it)  # type: ignore[no-any-return]
        except StopIteration:
            pass
        first, second = await self._next_chunk()
        if not first:
            raise StopAsyncIteration
        it: Iterator[Any] = iter(first) if second is None else zip(first, second, strict=True)
        self._it = it
        return next(it)  # type: ignore[no-any-return]

    def batches(self, size: int | None = None) -> AsyncIterator[list[T]]:
        """Iterate in lists of up to ``size`` entries (default: the chunk size) instead.

        Must be called before iteration starts.
        """
        if self._started:
            raise RuntimeError("batches() must be called before iterating")
        size = self._chunk_size if size is None else check_range_args(None, size)
        self._spec.pairs = True
        # Read in hops of many lists at once (a whole number of them, so every list but the
        # last is full): a hop costs tens of microseconds, slicing a list almost nothing.
        self._chunk_size = self._next_size = size * max(1, _BATCH_HOP // size)
        return self._iter_batches(size)

    async def _iter_batches(self, size: int) -> AsyncIterator[list[T]]:
        while True:
            first, second = await self._next_chunk()
            if not first:
                return
            # Items come as (key, value) pairs here (spec.pairs), keys or values as they are.
            assert second is None
            if len(first) <= size:
                yield first
                continue
            for at in range(0, len(first), size):
                yield first[at : at + size]

    async def aclose(self) -> None:
        """Stop the iteration (a chunk being read is dropped)."""
        self._closed = True
        self._it = iter(())
        pending = self._pending
        if pending is not None:
            self._pending = None
            pending.cancel()

    def __del__(self) -> None:
        pending = getattr(self, "_pending", None)
        if pending is not None:
            if pending.done():
                if not pending.cancelled():
                    pending.exception()  # retrieved: no "never retrieved" log
            else:
                pending.cancel()

    async def _next_chunk(self) -> tuple[list[Any], list[Any] | None]:
        self._started = True
        if self._closed or self._done or self._remaining == 0:
            return [], None
        pending = self._pending
        if pending is not None:
            self._pending = None
            result = await pending
        else:
            result = await self._source._read(
                _scan.read_chunk,
                self._kc,
                self._vc,
                self._spec,
                self._resume,
                self._take_size(),
            )
        first: list[Any]
        second: list[Any] | None
        first, second, self._resume, self._done = result
        if self._remaining is not None:
            if len(first) > self._remaining:
                del first[self._remaining :]
                if second is not None:
                    del second[self._remaining :]
            self._remaining -= len(first)
        if not self._done and self._remaining != 0:
            # Read the next chunk on a reader thread while the caller consumes this one.
            self._pending = self._source._prefetch(
                _scan.read_chunk,
                self._kc,
                self._vc,
                self._spec,
                self._resume,
                self._take_size(),
            )
        return first, second

    def _take_size(self) -> int:
        n = self._next_size
        self._next_size = min(n * 2, self._chunk_size)
        if self._remaining is not None:
            n = min(n, self._remaining)
        return n


def iterate_sync(
    txn: lmdb.Transaction,
    db: Any,
    kc: Coder[Any],
    vc: Coder[Any],
    spec: _scan.ScanSpec,
    limit: int | None,
    chunk_size: int,
) -> Iterator[Any]:
    """The synchronous form for ``run(fn)``: chunks read from the caller's transaction."""
    remaining = limit
    resume: _scan.Resume | None = None
    done = False
    while not done and remaining != 0:
        n = chunk_size if remaining is None else min(chunk_size, remaining)
        first, second, resume, done = _scan.read_chunk(txn, db, kc, vc, spec, resume, n)
        if remaining is not None:
            remaining -= len(first)
        if second is None:
            yield from first
        else:
            yield from zip(first, second, strict=True)


class AsyncReads(Generic[K, V]):
    """Range iteration and cursor reads, shared by :class:`~aiolmdb.AsyncDatabase` and the
    database views of interactive transactions and snapshots."""

    __slots__ = ()

    key_coder: Coder[K]
    value_coder: Coder[V]

    @property
    def dupsort(self) -> bool:
        """True if the database keeps several sorted values per key (``dupsort=True``)."""
        raise NotImplementedError  # pragma: no cover - provided by subclasses

    def _read(self, fn: Any, *args: Any) -> Awaitable[Any]:
        raise NotImplementedError  # pragma: no cover - provided by subclasses

    def _prefetch(self, fn: Any, *args: Any) -> asyncio.Future[Any] | None:
        raise NotImplementedError  # pragma: no cover - provided by subclasses

    def _mks(self) -> int:
        raise NotImplementedError  # pragma: no cover - provided by subclasses

    def items(
        self,
        start: K | None = None,
        stop: K | None = None,
        *,
        prefix: K | None = None,
        reverse: bool = False,
        limit: int | None = None,
        chunk_size: int | None = None,
    ) -> RangeIterator[tuple[K, V]]:
        """Iterate ``(key, value)`` pairs with keys in ``[start, stop)``, in encoded-key order.

        ``prefix`` keeps keys whose encoding starts with the encoded prefix; ``reverse`` walks
        the range from its end; ``limit`` caps the count; ``chunk_size`` (default 4096; the
        first hops read fewer, from 64) is how many entries one thread hop reads. In a dupsort
        database every pair is yielded. See :mod:`aiolmdb.ranges` for ordering and
        consistency.
        """
        return RangeIterator(self, _scan.ITEMS, start, stop, prefix, reverse, limit, chunk_size)

    def keys(
        self,
        start: K | None = None,
        stop: K | None = None,
        *,
        prefix: K | None = None,
        reverse: bool = False,
        limit: int | None = None,
        chunk_size: int | None = None,
    ) -> RangeIterator[K]:
        """Iterate the keys in ``[start, stop)`` (each key once, also in a dupsort database);
        arguments as for :meth:`items`."""
        return RangeIterator(self, _scan.KEYS, start, stop, prefix, reverse, limit, chunk_size)

    def values(
        self,
        start: K | None = None,
        stop: K | None = None,
        *,
        prefix: K | None = None,
        reverse: bool = False,
        limit: int | None = None,
        chunk_size: int | None = None,
    ) -> RangeIterator[V]:
        """Iterate the values of the keys in ``[start, stop)``; arguments as for
        :meth:`items`."""
        return RangeIterator(self, _scan.VALUES, start, stop, prefix, reverse, limit, chunk_size)

    async def first(self) -> tuple[K, V] | None:
        """The ``(key, value)`` pair with the smallest key, or None if the database is empty."""
        return await self._read(  # type: ignore[no-any-return]
            _scan.first_or_last, self.key_coder, self.value_coder, False
        )

    async def last(self) -> tuple[K, V] | None:
        """The ``(key, value)`` pair with the largest key, or None if the database is empty."""
        return await self._read(  # type: ignore[no-any-return]
            _scan.first_or_last, self.key_coder, self.value_coder, True
        )

    async def get_all(self, key: K) -> list[V]:
        """Every value of ``key``, in sorted order in a dupsort database ([] if absent)."""
        return await self._read(  # type: ignore[no-any-return]
            _scan.get_all, self.key_coder, self.value_coder, self._mks(), key
        )

    async def count_values(self, key: K) -> int:
        """How many values ``key`` has (0 if absent; at most 1 outside dupsort databases)."""
        return await self._read(  # type: ignore[no-any-return]
            _scan.count_values, self.key_coder, self._mks(), key
        )
