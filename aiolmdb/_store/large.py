"""Large values: reading them without holding the GIL for the copy, streaming them in pieces.

The stall
    py-lmdb releases the GIL around ``mdb_get`` but copies the value into a new ``bytes`` with
    the GIL held. For a value of many megabytes that copy (and the page faults of the map it
    touches) stops every other thread of the process, the event loop's included.

The cure
    :func:`copy_out` fills a fresh ``bytes`` from a view into the map with one ``ctypes.memmove``:
    a ctypes foreign call releases the GIL while it runs, so the copy and its page faults run
    beside the loop. The ``bytes`` is not shared with anything until it is returned, so filling
    it in place is safe. Off CPython (no ``ctypes.pythonapi``) it is a plain copy.

Which reads take that path
    A view into the map needs a ``buffers=True`` transaction, and the engine's transactions are
    ``buffers=False`` (their values are plain ``bytes``, which coders and ``txn.raw`` users rely
    on). So a read that may meet a large value opens a second, buffered read transaction of the
    same snapshot (:class:`BufferedReads`; ids compared, else the plain read) for the time of
    one operation. That costs a transaction begin, so it is done only for databases known to
    hold large values: :class:`LargeValues` is a flag per database.

Knowing it from the first read
    The flag is stored with the database: a marker in the metadata database
    (:func:`~aiolmdb._store.meta.large_key`), read when the database is opened, so a fresh
    process copies without the GIL from its first read. The first large write of a database
    writes the marker in the write's own transaction when the metadata database exists (one
    ``get`` per large write, a ``put`` only the first time); else a write transaction of its
    own, queued to the writer after the batch, creates both (never for the default database,
    whose keys the new database's name would join). A large value met by a plain read
    (a database written by another tool, or before markers existed) raises the flag in memory
    only: a read, maybe in a read-only environment, writes nothing (that first read stalls).

Streams
    :class:`ValueStream` backs ``get_chunks``: one buffered read transaction held across the
    chunks (one value, never a mix of two writes), each chunk copied by a reader-thread job.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Final

import lmdb

from .._codecs.copyout import LARGE_VALUE, copy_out
from .._engine.held import HeldRead
from . import expiry as _expiry
from . import versions as _versions
from .keys import encode_key

if TYPE_CHECKING:
    from .._engine.delivery import Txn
    from .._engine.engine import Engine
    from .ops import DB, DbContext

__all__ = [
    "LARGE_VALUE",
    "BufferedReads",
    "LargeValues",
    "ValueStream",
    "copy_out",
]


class LargeValues:
    """Whether a database is known to hold large values (shared by its contexts), and the
    environment a buffered read transaction is begun from (None: reads stay plain).

    ``mark(txn)``, given by the catalogue, stores the fact with the database (see the module
    docstring); ``stored`` says it is known stored (read at open, or committed since)."""

    __slots__ = ("env", "mark", "seen", "stored")

    def __init__(
        self,
        env: lmdb.Environment | None = None,
        mark: Callable[[Txn], None] | None = None,
    ) -> None:
        self.env = env
        self.seen = False
        self.stored = False
        self.mark = mark

    def wrote(self, txn: Txn) -> None:
        """Writer thread: a large value was written in ``txn``: raise the flag, and store it
        with the database unless it is known stored."""
        self.seen = True
        if not self.stored and self.mark is not None:
            self.mark(txn)

    def found_stored(self) -> None:
        """The database's marker was found at open: large values from the first read."""
        self.seen = True
        self.stored = True


def take(buf: Any) -> bytes:
    """A buffered read's value as ``bytes``: large ones copied without the GIL."""
    return copy_out(buf) if len(buf) >= LARGE_VALUE else bytes(buf)


# ----------------------------------------------------------------- reads
class BufferedReads:
    """Reads from a buffered twin of ``txn`` (same snapshot): ``get`` returns ``bytes`` as
    ``txn.get`` would, large values copied without the GIL. Without a twin (another snapshot
    by now, a write transaction, no free reader slot) it reads from ``txn`` itself.

    The twin opens and ends within ``txn``'s lifetime, which the gate counts (or, for a write
    transaction, on the writer thread, which alone resizes the map): no resize can come between.
    """

    __slots__ = ("_twin", "_txn")

    def __init__(self, txn: Txn, env: lmdb.Environment | None) -> None:
        self._txn = txn
        self._twin: Any = None
        if env is None:
            return
        try:
            twin = env.begin(buffers=True)
        except lmdb.Error:
            return
        if twin.id() == txn.id():
            self._twin = twin
        else:
            twin.abort()

    @property
    def twin(self) -> Any:
        """The buffered transaction of the same snapshot, or None (read ``txn`` instead)."""
        return self._twin

    def get(self, key: Any, default: None, db: DB) -> bytes | None:
        """The value of ``key`` in ``db`` as bytes, or None (``default`` is for the signature
        of ``txn.get``)."""
        twin = self._twin
        if twin is None:
            return self._txn.get(key, None, db)
        buf = twin.get(key, None, db)
        return None if buf is None else take(buf)

    def close(self) -> None:
        """End the twin transaction."""
        twin, self._twin = self._twin, None
        if twin is not None:
            twin.abort()


def read_large(txn: Txn, large: LargeValues, key: Any, db: DB) -> bytes | None:
    """``txn.get(key, None, db)`` for a database known to hold large values."""
    reads = BufferedReads(txn, large.env)
    try:
        return reads.get(key, None, db)
    finally:
        reads.close()


# ----------------------------------------------------------------- streams
if TYPE_CHECKING:
    from typing import Protocol, TypeAlias

    from .._codecs.common import Buffer

    class _Readable(Protocol):
        def read(self, size: int, /) -> Any: ...

    ChunkSource: TypeAlias = "AsyncIterable[Buffer] | _Readable"
    """What ``put_chunks`` takes."""

READ_SIZE: Final = 1 << 20
"""How much ``put_chunks`` reads from a file-like source at a time (on a worker thread)."""


async def assemble(source: Any, room: int) -> bytearray:
    """The bytes of ``source`` (an async iterable of bytes-like pieces, or a binary file-like
    object with ``read``) after ``room`` zero bytes. Pieces are appended on the loop, which is
    let run after every READ_SIZE bytes appended (a source that never waits would otherwise
    keep it for the whole value); a file is read on a worker thread."""
    data = bytearray(room)
    read = getattr(source, "read", None)
    if read is not None:
        loop = asyncio.get_running_loop()
        is_async = inspect.iscoroutinefunction(read)
        while True:
            if is_async:
                piece = await read(READ_SIZE)
            else:
                piece = await loop.run_in_executor(None, read, READ_SIZE)
            if not piece:
                return data
            await _append(data, piece, 0)
    if not hasattr(source, "__aiter__"):
        raise TypeError(
            "put_chunks needs an async iterable of bytes-like pieces or a binary file-like "
            f"object (with read); got a {type(source).__name__}"
        )
    unyielded = 0  # bytes appended since the loop last ran
    async for piece in source:
        unyielded = await _append(data, piece, unyielded)
    return data


async def _append(data: bytearray, piece: Any, unyielded: int) -> int:
    """Append ``piece`` to ``data``, in slices of READ_SIZE with the loop let run between
    them; returns the bytes appended since the loop last ran."""
    if isinstance(piece, str):
        raise TypeError("put_chunks pieces must be bytes-like, not str (encode them first)")
    with memoryview(piece) as view, view.cast("B") as flat:
        for start in range(0, len(flat), READ_SIZE):
            part = flat[start : start + READ_SIZE]
            data += part
            unyielded += len(part)
            if unyielded >= READ_SIZE:
                await asyncio.sleep(0)
                unyielded = 0
    return unyielded


class ValueStream:
    """One stored value read in chunks from a buffered read transaction held across awaits
    (a :class:`~aiolmdb._engine.held.HeldRead`).

    Like a snapshot it holds a reader slot (and the value's pages) until it ends, and growing
    the map invalidates it (:class:`~aiolmdb.SnapshotExpiredError`).
    """

    __slots__ = ("_ctx", "_encoded", "_engine", "_held", "_key", "_skip")

    def __init__(self, engine: Engine, ctx: DbContext[Any, Any], key: object) -> None:
        self._engine = engine
        self._ctx = ctx
        self._key = key
        self._encoded: Any = None
        # The version's or the expiry's bytes before the value's.
        self._skip = _versions.PREFIX_SIZE if ctx.versioned else 0
        if ctx.expiry is not None:
            self._skip = _expiry.HEADER_SIZE
        self._held = HeldRead(engine, "value stream", "read it again")

    async def chunks(self, chunk_size: int) -> AsyncIterator[bytes]:
        """The value's bytes in pieces of ``chunk_size`` bytes (the last one shorter);
        KeyError if the key is absent."""
        engine = self._engine
        try:
            size = await engine.run_blocking(self._begin)
            if size is None:
                raise KeyError(self._key)
            offset = self._skip
            end = offset + size
            while offset < end:
                n = min(chunk_size, end - offset)
                yield await engine.run_blocking(self._held.run, self._read, offset, n)
                offset += n
        finally:
            self.release()

    def _begin(self) -> int | None:
        # Reader thread, inside the gate (a run_blocking job).

        ctx = self._ctx
        self._encoded = encode_key(ctx.kc, self._key, ctx.max_key_size)
        if not self._held.begin(buffers=True):  # released (e.g. cancelled) while starting
            return None
        buf = self._held.run(_get, self._encoded, ctx.dbi)
        if buf is None:
            return None
        if ctx.expiry is not None and _expiry.is_expired(buf, _expiry.now_ms()):
            return None  # an expired entry is absent
        if len(buf) < self._skip:
            what = (
                ("an expiring", "expiry") if ctx.expiry is not None else ("a versioned", "version")
            )
            raise ValueError(
                f"the value stored under key {self._key!r} is not {what[0]} value "
                f"(shorter than its {self._skip}-byte {what[1]})"
            )
        return len(buf) - self._skip

    def _read(self, txn: Any, offset: int, n: int) -> bytes:
        buf = txn.get(self._encoded, None, self._ctx.dbi)
        return take(buf[offset : offset + n])

    def release(self) -> None:
        """End the read transaction (idempotent)."""
        self._held.release()


def _get(txn: Any, key: bytes, dbi: Any) -> Any:
    """The stored value under ``key`` (a view into the map in a buffered transaction)."""
    return txn.get(key, None, dbi)
