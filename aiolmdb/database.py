"""AsyncDatabase: the operations users await on one LMDB database.

The operations are :class:`~aiolmdb._surface.AsyncOps`'s, shared with the views of interactive
transactions; this class says how they reach the engine, and keeps hand-written fast paths for
``get`` and ``put`` of bytes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from ._engine.engine import FALLBACK
from ._store import ops as _ops
from ._store.large import ValueStream
from ._store.ops import DbContext
from ._surface import AsyncOps
from ._views import Transaction, run_in_transaction
from .coders import Coder, IdentityCoder

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._engine.engine import Engine
    from ._store.catalogue import Catalogue, DatabaseEntry
    from ._surface import Op, P, PutOptions
    from .environment import Environment
    from .ranges import OnEnd, OnItem, StreamFn

__all__ = ["AsyncDatabase"]

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")


class AsyncDatabase(AsyncOps[K, V]):
    """One database of an :class:`Environment`; every operation is awaitable.

    Keys and values go through :attr:`key_coder` and :attr:`value_coder` (which you may
    replace) on the worker threads. Reads issued together share one thread hop and one read
    transaction; writes issued together share one write transaction and one commit, and each
    write's await returns only once that commit is done.

    An ``AsyncDatabase`` is also awaitable: ``db = await env.open_db("name")`` waits until LMDB
    has opened (or created) the database and raises its error if that failed. Without the
    ``await`` the first operation waits instead.
    """

    __slots__ = (
        "__weakref__",
        "_bytes_only",
        "_catalogue",
        "_ctx",
        "_engine",
        "_entry",
        "_env",
        "_inline",
        "_kc",
        "_vc",
    )

    def __init__(
        self,
        env: Environment,
        engine: Engine,
        catalogue: Catalogue,
        entry: DatabaseEntry,
        key_coder: Coder[K],
        value_coder: Coder[V],
    ) -> None:
        self._env = env
        self._engine = engine
        self._catalogue = catalogue
        self._inline = engine.inline_reads
        self._entry = entry
        self._kc: Coder[K] = key_coder
        self._vc: Coder[V] = value_coder
        # What operations take, made once the database is open (and again after a coder
        # is replaced).
        self._ctx: DbContext[K, V] | None = None
        # Both coders the built-in IdentityCoder: bytes operations may skip them (the hot
        # paths test this one flag instead of the two coders' types on every call).
        self._bytes_only = _bytes_only(entry, key_coder, value_coder)

    def _set_coders(self, key_coder: Coder[K], value_coder: Coder[V]) -> None:
        self._kc = key_coder
        self._vc = value_coder
        self._ctx = None
        self._bytes_only = _bytes_only(self._entry, key_coder, value_coder)

    @property
    def key_coder(self) -> Coder[K]:
        """The coder of this database's keys; you may replace it."""
        return self._kc

    @key_coder.setter
    def key_coder(self, coder: Coder[K]) -> None:
        self._set_coders(coder, self._vc)

    @property
    def value_coder(self) -> Coder[V]:
        """The coder of this database's values; you may replace it."""
        return self._vc

    @value_coder.setter
    def value_coder(self, coder: Coder[V]) -> None:
        self._set_coders(self._kc, coder)

    def __repr__(self) -> str:
        name = self._entry.name
        shown = "default" if name is None else repr(name.decode("utf-8", "backslashreplace"))
        return (
            f"<AsyncDatabase {shown} key_coder={self.key_coder!r} value_coder={self.value_coder!r}>"
        )

    # ----------------------------------------------------------------- readiness
    def __await__(self) -> Generator[Any, None, AsyncDatabase[K, V]]:
        return self._await_self().__await__()

    async def _await_self(self) -> AsyncDatabase[K, V]:
        await self._context()
        return self

    async def _context(self) -> DbContext[K, V]:
        entry = self._entry
        entry.check_usable()
        if entry.opening is not None:
            self._engine.check_open()
            await entry.wait_opened(self._engine)
            entry.check_usable()
        return self._context_now()

    def _context_now(self) -> DbContext[K, V]:
        """The context, for code already on a worker thread (the database must be open)."""
        entry = self._entry
        entry.check_usable()
        if entry.dbi is None:
            raise RuntimeError(f"database {self.name!r} is not open yet: await it first")
        ctx = self._ctx
        if ctx is None:  # an entry's handle never changes once open
            max_key_size = self._engine.max_key_size
            ctx = self._ctx = DbContext(
                entry.dbi,
                self._kc,
                self._vc,
                max_key_size,
                entry.dupsort,
                entry.versions,
                entry.large,
            )
        return ctx

    async def _read(self, fn: Op[K, V, P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        ctx = self._ctx
        if ctx is None or self._entry.dropped:
            ctx = await self._context()
        if self._inline:
            result = self._engine.read_inline(fn, (ctx, *args))
            if result is not FALLBACK:
                return result
        return await self._engine.submit_read(fn, (ctx, *args))

    async def _write(self, fn: Op[K, V, P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        ctx = self._ctx
        if ctx is None or self._entry.dropped:
            ctx = await self._context()
        return await self._engine.submit_write(fn, (ctx, *args), fn in _ops.ATOMIC)

    def _stream(self, fn: StreamFn, args: tuple[Any, ...], on_item: OnItem, on_end: OnEnd) -> bool:
        # Range iterators read ahead this way. Not in inline mode (reads run on the loop
        # there), nor before the database is open (the next read waits for the open).
        ctx = self._ctx
        if ctx is None or self._entry.dropped or (self._inline and self._engine.reads_inline_now()):
            return False
        self._engine.submit_stream(fn, (ctx, *args), on_item, on_end)
        return True

    # ----------------------------------------------------------------- fast paths
    async def get(self, key: K, default: V | None = None) -> V | None:
        """The value stored under ``key`` (the first one in a dupsort database), or ``default``."""
        ctx = self._ctx
        if ctx is None or self._entry.dropped:
            ctx = await self._context()
        fn: Callable[..., Any]
        args: tuple[Any, ...]
        if self._inline:
            # An inline read copies on the loop thread anyway: no large-value handling.
            if self._bytes_only and type(key) is bytes:
                fn, args = _ops.get_bytes_plain, (ctx.dbi, ctx.max_key_size, key, default)
            else:
                fn, args = _ops.get, (ctx, key, default)
            result = self._engine.read_inline(fn, args)
            if result is not FALLBACK:
                return result  # type: ignore[no-any-return]  # (no cast: the hottest path)
        # Threaded (or deferred to the next loop iteration by reads="auto").
        if self._bytes_only and type(key) is bytes:
            fn, args = _ops.get_bytes, (ctx.dbi, ctx.max_key_size, key, default, ctx.large)
        else:
            fn, args = _ops.get, (ctx, key, default)
        return await self._engine.submit_read(fn, args)  # type: ignore[no-any-return]

    async def put(self, key: K, value: V, **options: Unpack[PutOptions[V]]) -> bool:
        """Store ``value`` under ``key``; returns once the write is committed.

        With ``overwrite=False`` it stores only if the key is absent, with ``if_version=v``
        (a versioned database) only if the entry's version is still ``v``, with ``if_value=x``
        only if the stored value's bytes are ``x``'s: checked on the writer thread, in the
        write's transaction. False when nothing was stored (also: that exact pair exists in a
        dupsort database); ``raise_on_conflict=True`` raises :class:`~aiolmdb.ConflictError`
        instead.
        """
        ctx = self._ctx
        if ctx is None or self._entry.dropped:
            ctx = await self._context()
        # _bytes_only is False for a versioned database: its values carry a version.
        if not options and self._bytes_only and type(key) is bytes and type(value) is bytes:
            if not ctx.dupsort:
                return await self._engine.submit_write(
                    _ops.put_bytes, (ctx.dbi, ctx.max_key_size, key, value, True, ctx.large), True
                )
        fn, args = _ops.put_call(key, value, options)
        return await self._engine.submit_write(fn, (ctx, *args), True)  # put or put_if

    async def _value_chunks(self, key: K, chunk_size: int) -> AsyncGenerator[bytes, None]:
        # One buffered read transaction held across the chunks: one value, pieces copied
        # without the GIL, nothing proportional to the value held.
        ctx = await self._context()
        async for piece in ValueStream(self._engine, ctx, key).chunks(chunk_size):
            yield piece

    # ----------------------------------------------------------------- the database itself
    async def drop(self, delete: bool = True) -> None:
        """Delete this named database (``delete=True``), or just empty it.

        The default database cannot be deleted: ``drop()`` empties it. After a named database
        is deleted, every operation on it raises :class:`~aiolmdb.DatabaseDroppedError`;
        ``env.open_db(name)`` creates a new, empty one.
        """
        if not (delete and self._entry.name is not None):
            await self._write(_ops.drop, False)
            return
        await self._context()
        await self._catalogue.delete(self._entry)

    def run(self, fn: Callable[[Transaction[K, V]], R], write: bool = False) -> Awaitable[R]:
        """Run ``fn(txn)`` in one transaction on a worker thread and return its result.

        ``txn`` offers this database's operations synchronously, with its coders
        (``txn.get``, ``txn.put``, ...), ``txn[other_db]`` for other databases, ``txn.id()``
        and ``txn.raw`` (the ``lmdb.Transaction``). With ``write=True`` it runs on the writer
        thread, in its own nested transaction of the current group commit: returning commits
        it, raising rolls back only its own changes and the exception reaches you. Without
        ``write``, any write raises :class:`~aiolmdb.ReadOnlyError`.
        """
        return run_in_transaction(self._engine, self, fn, write, self._catalogue.wait_all_opened)


def _bytes_only(entry: DatabaseEntry, key_coder: Coder[Any], value_coder: Coder[Any]) -> bool:
    """Whether bytes operations may skip the coders: both coders the built-in IdentityCoder,
    and values stored as they are (not behind a version)."""
    return (
        type(key_coder) is IdentityCoder
        and type(value_coder) is IdentityCoder
        and not entry.versioned
    )
