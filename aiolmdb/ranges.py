"""Async iteration over key ranges: ``db.items()``, ``db.keys()``, ``db.values()``.

Ranges are half-open, ``[start, stop)``, in the order of the *encoded* keys (LMDB compares bytes):
UInt16/32/64 keys come in numeric order, StringCoder keys in UTF-8 byte order (code point order),
JSON or pickled keys in no useful order. ``prefix`` keeps the keys whose encoding starts with the
encoded prefix; ``reverse=True`` walks the same range from its end; ``limit`` caps the count.

Consistency: chunks are read in short read transactions (a reader thread reads up to _AHEAD
chunks ahead of the caller, then stops; at most _CHUNKS_PER_TXN chunks share a transaction),
each starting just past the last entry before it. Nothing is held while the caller works through
what was read, so an abandoned iterator leaks no reader slot and never holds back writers; a
scan sees writes committed while it runs once it reaches them (entries already read ahead are
not read again). For one consistent view of everything, iterate inside ``env.begin()`` (a read
snapshot) or ``run(fn)``.
"""

from __future__ import annotations

import asyncio
import collections
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._store import scan as _scan
from ._store.ops import DbContext

if TYPE_CHECKING:
    from ._engine.delivery import Txn
    from ._surface import AsyncOps, RangeOptions

__all__ = ["DEFAULT_CHUNK_SIZE", "RangeIterator"]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

DEFAULT_CHUNK_SIZE = 4096
# batches() reads about this many entries per chunk (a whole number of lists of the size asked
# for). Small enough that a chunk's tuples come from, and go back to, CPython's tuple free list
# (2000 entries) and stay in the CPU cache while the loop consumes them; larger chunks cost
# more in fresh memory and garbage-collector passes than they save in thread hops.
_BATCH_CHUNK = 2000
# The first chunk is small (a caller may want just a few entries); later ones double.
_FIRST_CHUNK = 64
# How many chunks a reader thread reads ahead of the caller before it stops.
_AHEAD = 2
# A reader thread streaming to a caller that keeps up starts a new read transaction after this
# many chunks: short transactions let map growth through and keep old pages from being pinned.
_CHUNKS_PER_TXN = 4


# How a source starts a reader-thread job for a range iterator (see AsyncOps._stream).
StreamFn = Callable[..., Any]
OnItem = Callable[[Any], None]
OnEnd = Callable[[BaseException | None], None]

_OPTIONS = frozenset(
    {"prefix", "reverse", "limit", "offset", "batch_size", "chunk_size", "prefetch"}
)


def scan_args(
    mode: int, start: Any, stop: Any, options: RangeOptions[Any]
) -> tuple[_scan.ScanSpec, int | None, int]:
    """items/keys/values arguments checked: the scan, the limit and the chunk size."""
    unknown = options.keys() - _OPTIONS
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    limit = options.get("limit")
    size = check_range_args(limit, _batch_size(options))
    offset = options.get("offset", 0)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError(f"offset must be a non-negative int, got {offset!r}")
    reverse = options.get("reverse", False)
    prefetch = options.get("prefetch", False)
    if not isinstance(prefetch, bool):
        raise TypeError(f"prefetch must be True or False, got {prefetch!r}")
    spec = _scan.ScanSpec(mode, start, stop, options.get("prefix"), bool(reverse), offset)
    return spec, limit, size


def _batch_size(options: RangeOptions[Any]) -> int | None:
    """The ``batch_size`` option, or the deprecated ``chunk_size`` it replaced (``chunk_size``
    now means bytes only: ``get_chunks``)."""
    if "chunk_size" not in options:
        return options.get("batch_size")
    if "batch_size" in options:
        raise TypeError("give batch_size only (chunk_size is its deprecated name)")
    warnings.warn(
        "the chunk_size= option of items()/keys()/values()/entries() is deprecated: use "
        "batch_size= (entries per read; chunk_size counts bytes, in get_chunks)",
        DeprecationWarning,
        stacklevel=5,  # the caller of items() and its kin
    )
    return options["chunk_size"]


def check_range_args(limit: int | None, batch_size: int | None) -> int:
    """Validate limit and batch_size; return the batch size to use (entries per read)."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    if batch_size is None:
        return DEFAULT_CHUNK_SIZE
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


# One chunk as read_chunk returns it: (column, paired, resume, done): the entries to yield
# (keys, values, or lists for batches()) and, for items(), the values paired with them.
_Chunk = tuple[list[Any], "list[Any] | None", "_scan.Resume | None", bool]


class RangeIterator(Generic[T]):
    """An async iterator over part of a database, read in chunks on worker threads.

    Use it with ``async for``; ``batches(n)`` yields lists instead (the fastest way to export).
    A reader thread reads up to two chunks ahead of you, each one handed over as soon as it is
    read. ``aclose()`` (or ``break``) stops it; it holds no transaction while you consume, so
    dropping it is also fine.
    """

    __slots__ = (
        "_buffer",
        "_chunk_size",
        "_closed",
        "_consumed",
        "_done",
        "_emitted",
        "_error",
        "_it",
        "_next_size",
        "_prefetch",
        "_remaining",
        "_resume",
        "_running",
        "_source",
        "_spec",
        "_started",
        "_waiter",
    )

    def __init__(
        self,
        source: AsyncOps[Any, Any],
        spec: _scan.ScanSpec,
        limit: int | None,
        chunk_size: int,
        *,
        prefetch: bool = False,
    ) -> None:
        self._chunk_size = chunk_size
        self._prefetch = prefetch
        self._next_size = min(_FIRST_CHUNK, chunk_size)
        self._source = source
        self._spec = spec
        self._remaining = limit
        # Over the current chunk: its entries, or (key, value) pairs zipped from its columns.
        self._it: Iterator[Any] = iter(())
        self._closed = False
        self._started = False
        # Where the scan has got to, advanced only when a chunk is received here (so a chunk
        # lost to a cancelled await is simply read again).
        self._resume: _scan.Resume | None = None
        self._done = False
        # Reading ahead: chunks received and not yet taken, the reader thread's job (one at a
        # time), and the task waiting for a chunk. _emitted is written only by the reader
        # thread and _consumed only by the loop, so their difference needs no lock.
        self._buffer: collections.deque[tuple[list[Any], list[Any] | None]] = collections.deque()
        self._running = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._emitted = 0
        self._consumed = 0

    def __aiter__(self) -> RangeIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return next(self._it)  # type: ignore[no-any-return]  # (no cast: per entry)
        except StopIteration:
            pass
        if self._spec.batch:
            raise RuntimeError("iterate what batches() returned, not the iterator it came from")
        column, paired = await self._next_chunk()
        if not column:
            raise StopAsyncIteration
        it: Iterator[Any] = iter(column) if paired is None else zip(column, paired, strict=True)
        self._it = it
        return next(it)  # type: ignore[no-any-return]

    def batches(self, size: int | None = None) -> AsyncIterator[list[T]]:
        """Iterate in lists of up to ``size`` entries (default: the ``batch_size``) instead.

        Must be called before iteration starts.
        """
        if self._started:
            raise RuntimeError("batches() must be called before iterating")
        size = self._chunk_size if size is None else check_range_args(None, size)
        self._spec.batch = size
        # Chunks of whole lists (so every list but the last is full).
        self._chunk_size = self._next_size = size * max(1, _BATCH_CHUNK // size)
        return self._iter_batches()

    async def _iter_batches(self) -> AsyncIterator[list[T]]:
        while True:
            # A chunk comes as the lists to yield (spec.batch), cut on the reader thread.
            lists, _ = await self._next_chunk()
            if not lists:
                return
            for entries in lists:
                yield entries

    async def aclose(self) -> None:
        """Stop the iteration (chunks read ahead are dropped; a reader thread stops after
        the chunk it is reading)."""
        self._closed = True
        self._it = iter(())
        self._buffer.clear()

    async def _next_chunk(self) -> tuple[list[Any], list[Any] | None]:
        self._started = True
        while True:
            if self._buffer:
                self._consumed += 1
                chunk = self._buffer.popleft()
                try:
                    self._read_ahead()
                except Exception:
                    # E.g. the environment is closing. The next call, with nothing buffered,
                    # tries again and raises; this one must not lose the chunk it took.
                    pass
                return chunk
            if self._error is not None:
                # After the chunks read before it; the next call reads from there again.
                error, self._error = self._error, None
                raise error
            if self._closed or self._done or self._remaining == 0:
                if self._closed or not self._running:
                    return [], None
                # The range ended while the reader thread's job is finishing: wait for it to
                # end its transaction, so that an iteration that has ended holds no reader slot.
            elif not self._running and not self._read_ahead():
                return await self._read_one()
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            await waiter

    def _read_ahead(self) -> bool:
        """Start a reader-thread job reading the next chunks, unless one is running or enough
        are waiting. False if the source cannot (inline reads, a transaction's view)."""
        if self._running or self._closed or self._done or self._remaining == 0:
            return self._running
        if self._emitted - self._consumed >= _AHEAD:
            return True  # the caller has chunks to take first
        args = (self._resume, self._next_size, self._remaining)
        source = self._source
        if not source._stream(
            self._read_chunks, args, self._on_chunk, self._on_end, self._prefetch
        ):
            return False
        self._running = True
        return True

    def _read_chunks(
        self,
        txn: Txn,
        emit: Callable[[tuple[_Chunk, int]], None],
        ctx: DbContext[Any, Any],
        resume: _scan.Resume | None,
        size: int,
        remaining: int | None,
    ) -> tuple[DbContext[Any, Any], _scan.Resume | None, int, int | None] | None:
        """Reader thread: read chunks one after another, handing each to the loop at once,
        until the range ends, the limit is reached, the iterator is closed or _AHEAD chunks
        are waiting. After _CHUNKS_PER_TXN chunks, return where to go on from: the engine
        calls this again in a new transaction."""
        spec, max_size = self._spec, self._chunk_size
        for _ in range(_CHUNKS_PER_TXN):
            n = size if remaining is None else min(size, remaining)
            chunk = _scan.read_chunk(txn, ctx, spec, resume, n)
            self._emitted += 1
            emit((chunk, size))
            column, _, resume, done = chunk
            if remaining is not None:
                remaining -= self._count(column)
            if done or remaining == 0 or self._closed:
                return None
            size = min(size * 2, max_size)
            if self._emitted - self._consumed >= _AHEAD:
                return None
        return ctx, resume, size, remaining

    def _on_chunk(self, item: tuple[_Chunk, int]) -> None:
        """Loop: a chunk read ahead arrived."""
        (column, paired, resume, done), size = item
        self._resume = resume
        self._done = done
        self._next_size = min(size * 2, self._chunk_size)
        if self._remaining is not None:
            self._remaining -= self._count(column)
        if not self._closed:
            self._buffer.append((column, paired))
        self._wake()

    def _on_end(self, error: BaseException | None) -> None:
        """Loop: the reader thread's job ended (after all its chunks arrived)."""
        self._running = False
        if error is not None and not self._closed:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _read_one(self) -> tuple[list[Any], list[Any] | None]:
        """Read the next chunk in one awaited read (sources that cannot read ahead)."""
        size = self._next_size
        self._next_size = min(size * 2, self._chunk_size)
        if self._remaining is not None:
            size = min(size, self._remaining)
        column, paired, self._resume, self._done = await self._source._read(
            _scan.read_chunk, self._spec, self._resume, size
        )
        if self._remaining is not None:
            self._remaining -= self._count(column)
        return column, paired

    def _count(self, column: list[Any]) -> int:
        """How many entries a chunk holds (for batches() it is a list of lists)."""
        return sum(map(len, column)) if self._spec.batch else len(column)


def iterate_sync(
    txn: Txn,
    ctx: DbContext[Any, Any],
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
        column, paired, resume, done = _scan.read_chunk(txn, ctx, spec, resume, n)
        if remaining is not None:
            remaining -= len(column)
        if paired is None:
            yield from column
        else:
            yield from zip(column, paired, strict=True)
