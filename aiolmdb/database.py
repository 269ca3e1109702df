"""AsyncDatabase: the operations users await on one LMDB database."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from . import _ops
from ._engine import FALLBACK
from .coders import Coder, IdentityCoder
from .errors import DatabaseDroppedError
from .ranges import AsyncReads
from .transaction import Transaction

if TYPE_CHECKING:
    from ._engine import Engine
    from .environment import Environment

__all__ = ["AsyncDatabase"]

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")
_MISSING: Any = object()


class _DbState:
    """What every AsyncDatabase object of one named database shares."""

    __slots__ = ("dbi", "dropped", "dupsort", "error", "flags", "name", "opening")

    def __init__(self, name: bytes | None, flags: dict[str, Any]) -> None:
        self.name = name
        self.flags = flags
        self.dupsort = bool(flags.get("dupsort", False))
        self.dbi: Any = None
        self.opening: concurrent.futures.Future[Any] | None = None
        self.dropped = False
        self.error: BaseException | None = None

    def opened(self, dbi: Any, stored_flags: dict[str, bool]) -> None:
        """Take the handle and the flags the database really has (dupsort decides how
        writes and scans work, so it must not come from what the caller asked for)."""
        self.flags = stored_flags
        self.dupsort = bool(stored_flags.get("dupsort", False))
        self.dbi = dbi

    async def wait_opened(self, engine: Engine) -> None:
        """Wait for a queued open (on the writer thread) and take its handle or error."""
        fut = self.opening
        if fut is None:
            return
        if not fut.done():
            # Creating it needs the writer: waiting for that while holding the writer's
            # transaction would never end.
            engine.check_not_holding(f"waiting for database {self.name!r} to be created")
            try:
                # Shielded: a cancelled waiter must not cancel the opening shared by all.
                await asyncio.shield(asyncio.wrap_future(fut))
            except Exception:
                pass  # taken below
        if self.opening is fut:
            self.opening = None
            exc = fut.exception()
            if exc is None:
                self.opened(*fut.result())
                # A reused inline read transaction may predate the handle: start a fresh one.
                engine.release_inline()
            else:
                self.error = exc


def _delete_database(env: Any, state: _DbState, dbi: Any) -> None:
    """Writer thread, between batches: delete a named database in its own transaction."""
    with env.begin(write=True) as txn:
        txn.drop(dbi, delete=True)
    state.dropped = True
    state.dbi = None


class AsyncDatabase(AsyncReads[K, V]):
    """One database of an :class:`Environment`; every operation is awaitable.

    Keys and values go through :attr:`key_coder` and :attr:`value_coder` (plain attributes you
    may replace) on the worker threads. Reads issued together share one thread hop and one
    read transaction; writes issued together share one write transaction and one commit, and
    each write's await returns only once that commit is done.

    An ``AsyncDatabase`` is also awaitable: ``db = await env.open_db("name")`` waits until LMDB
    has opened (or created) the database and raises its error if that failed. Without the
    ``await`` the first operation waits instead.
    """

    __slots__ = (
        "__weakref__",
        "_engine",
        "_env",
        "_inline",
        "_kc",
        "_max_key",
        "_raw",
        "_state",
        "_vc",
    )

    def __init__(
        self,
        env: Environment,
        state: _DbState,
        key_coder: Coder[K],
        value_coder: Coder[V],
    ) -> None:
        self._env = env
        self._engine = env._engine
        self._inline = env._inline_reads
        self._state = state
        self._max_key: int = env._engine.max_key_size
        self._kc: Coder[K] = key_coder
        self._vc: Coder[V] = value_coder
        # Both coders the built-in IdentityCoder: bytes operations may skip them (the hot
        # paths test this one flag instead of the two coders' types on every call).
        self._raw = type(key_coder) is IdentityCoder and type(value_coder) is IdentityCoder

    @property
    def key_coder(self) -> Coder[K]:
        """The coder of this database's keys; you may replace it."""
        return self._kc

    @key_coder.setter
    def key_coder(self, coder: Coder[K]) -> None:
        self._kc = coder
        self._raw = type(coder) is IdentityCoder and type(self._vc) is IdentityCoder

    @property
    def value_coder(self) -> Coder[V]:
        """The coder of this database's values; you may replace it."""
        return self._vc

    @value_coder.setter
    def value_coder(self, coder: Coder[V]) -> None:
        self._vc = coder
        self._raw = type(self._kc) is IdentityCoder and type(coder) is IdentityCoder

    def __repr__(self) -> str:
        name = self._state.name
        shown = "default" if name is None else repr(name.decode("utf-8", "backslashreplace"))
        return (
            f"<AsyncDatabase {shown} key_coder={self.key_coder!r} value_coder={self.value_coder!r}>"
        )

    @property
    def name(self) -> str | None:
        """The database's name (None for the default database)."""
        name = self._state.name
        return None if name is None else name.decode("utf-8", "backslashreplace")

    @property
    def environment(self) -> Environment:
        """The environment this database belongs to."""
        return self._env

    @property
    def dupsort(self) -> bool:
        """True if the database keeps several sorted values per key (``dupsort=True``)."""
        return self._state.dupsort

    # ----------------------------------------------------------------- readiness
    def __await__(self) -> Generator[Any, None, AsyncDatabase[K, V]]:
        return self._await_self().__await__()

    async def _await_self(self) -> AsyncDatabase[K, V]:
        await self._ready()
        return self

    async def _ready(self) -> Any:
        st = self._state
        if st.dropped:
            raise DatabaseDroppedError(f"database {self.name!r} was dropped (deleted)")
        if st.opening is not None:
            self._engine.check_open()
            await st.wait_opened(self._engine)
        if st.error is not None:
            raise st.error
        return st.dbi

    def _handle(self) -> Any:
        """The LMDB handle, for code already on a worker thread (must be open by then)."""
        st = self._state
        if st.dropped:
            raise DatabaseDroppedError(f"database {self.name!r} was dropped (deleted)")
        if st.dbi is None:
            if st.error is not None:
                raise st.error
            raise RuntimeError(f"database {self.name!r} is not open yet: await it first")
        return st.dbi

    async def _read(self, fn: Callable[..., R], *args: Any) -> R:
        dbi = self._state.dbi
        if dbi is None or self._state.dropped:
            dbi = await self._ready()
        if self._inline:
            result = self._engine.read_inline(fn, (dbi, *args))
            if result is not FALLBACK:
                return result
        return await self._engine.submit_read(fn, (dbi, *args))

    def _mks(self) -> int:
        return self._max_key

    def _stream(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        on_item: Callable[[Any], None],
        on_end: Callable[[BaseException | None], None],
    ) -> bool:
        # Range iterators read ahead this way. Not in inline mode (reads run on the loop
        # there), nor before the handle is open (the next read waits for the open).
        st = self._state
        if self._inline or st.dbi is None or st.dropped:
            return False
        self._engine.submit_stream(fn, (st.dbi, *args), on_item, on_end)
        return True

    async def _write(self, fn: Callable[..., R], *args: Any) -> R:
        dbi = self._state.dbi
        if dbi is None or self._state.dropped:
            dbi = await self._ready()
        return await self._engine.submit_write(fn, (dbi, *args))

    # ----------------------------------------------------------------- reads
    async def get(self, key: K, default: V | None = None) -> V | None:
        """The value stored under ``key`` (the first one in a dupsort database), or ``default``."""
        st = self._state
        dbi = st.dbi
        if dbi is None or st.dropped:
            dbi = await self._ready()
        fn: Callable[..., Any]
        args: tuple[Any, ...]
        if self._raw and type(key) is bytes:
            fn, args = _ops.get_bytes, (dbi, self._max_key, key, default)
        else:
            fn, args = _ops.get, (dbi, self._kc, self._vc, self._max_key, key, default)
        if self._inline:
            result = self._engine.read_inline(fn, args)
            if result is not FALLBACK:
                return result  # type: ignore[no-any-return]
        return await self._engine.submit_read(fn, args)

    async def get_multi(self, keys: Iterable[K], default: V | None = None) -> dict[K, V | None]:
        """Read many keys in one transaction: a dict holding every requested key, missing
        ones mapped to ``default``."""
        return await self._read(
            _ops.get_multi,
            self.key_coder,
            self.value_coder,
            self._max_key,
            list(keys),
            default,
        )

    # ----------------------------------------------------------------- writes
    async def put(self, key: K, value: V, *, overwrite: bool = True) -> bool:
        """Store ``value`` under ``key``; returns once the write is committed.

        Returns False when nothing was stored: ``overwrite=False`` and the key exists, or (in
        a dupsort database) that exact pair exists.
        """
        st = self._state
        dbi = st.dbi
        if dbi is None or st.dropped:
            dbi = await self._ready()
        if self._raw and type(key) is bytes and type(value) is bytes and not st.dupsort:
            return await self._engine.submit_write(
                _ops.put_bytes, (dbi, self._max_key, key, value, overwrite)
            )
        return await self._engine.submit_write(
            _ops.put,
            (dbi, self._kc, self._vc, self._max_key, key, value, overwrite, st.dupsort),
        )

    async def put_multi(self, items: Iterable[tuple[K, V]] | Mapping[K, V]) -> int:
        """Store every ``(key, value)`` pair (or a mapping's items) atomically: all or nothing.

        Returns how many pairs were added (in a dupsort database, exact pairs that already
        existed do not count).
        """
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        await self._ready()  # dupsort is known once the database is open
        return await self._write(
            _ops.put_multi,
            self.key_coder,
            self.value_coder,
            self._max_key,
            pairs,
            self._state.dupsort,
        )

    async def delete(self, key: K, value: V = _MISSING) -> bool:
        """Delete ``key``; True if it existed. With ``value``, only that exact pair goes (in a
        dupsort database one of the key's values; in a plain one, the key only if it holds
        that value); without it, every value of the key goes."""
        has_value = value is not _MISSING
        await self._ready()  # dupsort is known once the database is open
        return await self._write(
            _ops.delete,
            self.key_coder,
            self.value_coder,
            self._max_key,
            key,
            value if has_value else None,
            has_value,
            self._state.dupsort,
        )

    async def delete_multi(self, keys: Iterable[K]) -> dict[K, bool]:
        """Delete many keys atomically; a dict of key -> whether it existed."""
        return await self._write(
            _ops.delete_multi,
            self.key_coder,
            self.value_coder,
            self._max_key,
            list(keys),
        )

    async def pop(self, key: K, default: V | None = None) -> V | None:
        """Delete ``key`` and return its old value, or ``default`` if it was absent."""
        return await self._write(
            _ops.pop, self.key_coder, self.value_coder, self._max_key, key, default
        )

    async def replace(self, key: K, value: V) -> V | None:
        """Store ``value`` under ``key`` and return the previous value, or None."""
        return await self._write(
            _ops.replace, self.key_coder, self.value_coder, self._max_key, key, value
        )

    async def update(self, key: K, fn: Callable[[V | None], V], default: V | None = None) -> V:
        """Atomically store ``fn(old)`` under ``key`` and return it.

        ``fn`` runs on the writer thread inside the write transaction (``old`` is ``default``
        when the key is absent), so no other write can slip in between the read and the
        write: a compare-and-set without a retry loop. Keep ``fn`` short and free of I/O.
        """
        return await self._write(
            _ops.update,
            self.key_coder,
            self.value_coder,
            self._max_key,
            key,
            fn,
            default,
        )

    async def drop(self, delete: bool = True) -> None:
        """Delete this named database (``delete=True``), or just empty it.

        The default database cannot be deleted: ``drop()`` empties it. After a named database
        is deleted, every operation on it raises :class:`~aiolmdb.DatabaseDroppedError`;
        ``env.open_db(name)`` creates a new, empty one.
        """
        st = self._state
        if not (delete and st.name is not None):
            await self._write(_ops.drop, False)
            return
        # Deleting closes LMDB's handle at once, before the commit, so it cannot share a batch
        # that might be run again (map growth, writemap): it gets a transaction of its own.
        dbi = await self._ready()
        engine = self._engine
        engine.check_open()
        engine.check_not_holding("deleting a database")
        await asyncio.wrap_future(engine.call_solo(_delete_database, st, dbi))
        self._env._forget_db(st)

    # ----------------------------------------------------------------- counts
    async def count(self) -> int:
        """The number of entries (every value counts in a dupsort database)."""
        return await self._read(_ops.count)

    async def stat(self) -> dict[str, Any]:
        """LMDB's statistics for this database (``psize``, ``depth``, ``entries``, ...)."""
        return await self._read(_ops.stat)

    # ----------------------------------------------------------------- transactions
    def run(self, fn: Callable[[Transaction[K, V]], R], write: bool = False) -> Awaitable[R]:
        """Run ``fn(txn)`` in one transaction on a worker thread and return its result.

        ``txn`` offers this database's operations synchronously, with its coders
        (``txn.get``, ``txn.put``, ...), ``txn[other_db]`` for other databases, ``txn.id()``
        and ``txn.raw`` (the ``lmdb.Transaction``). With ``write=True`` it runs on the writer
        thread, in its own nested transaction of the current group commit: returning commits
        it, raising rolls back only its own changes and the exception reaches you. Without
        ``write``, any write raises :class:`~aiolmdb.ReadOnlyError`.
        """
        return self._env._run(fn, write, self)
