"""Interactive transactions held across awaits: ``env.begin(write=True)`` and snapshots.

``txn[db]`` is an :class:`AsyncDatabaseView`: the awaitable operations of
:class:`~aiolmdb.AsyncDatabase`, run inside the transaction. The synchronous views that
``run(fn)`` hands to user code (:class:`DatabaseView`, :class:`Transaction`) live in
``aiolmdb._views`` and are re-exported here.
"""

from __future__ import annotations

import asyncio
import enum
import warnings
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from ._engine.engine import ABORT, COMMIT, SessionCommand, WriteSession
from ._engine.held import HeldRead
from ._store.ops import DbContext
from ._surface import AsyncOps
from ._views import DatabaseView, Transaction
from .coders import Coder
from .errors import ClosedError, ReadOnlyError, TransactionError

if TYPE_CHECKING:
    from ._engine.engine import Engine
    from ._surface import Op, P
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
R = TypeVar("R")


# --------------------------------------------------------------------------- async transactions
class AsyncDatabaseView(AsyncOps[K, V]):
    """One database inside an interactive transaction or a snapshot (``txn[db]``).

    Every operation is awaitable and runs inside that transaction: in a write transaction on
    the writer thread (one hop per await), in a snapshot on a reader thread. Its coders start
    as the database's; you may replace them on the view, for the rest of the transaction
    (``txn[db]`` is the same view each time within one transaction).
    """

    __slots__ = ("_database", "_entry", "_env", "_txn", "key_coder", "value_coder")

    def __init__(self, txn: AsyncTransaction, database: AsyncDatabase[K, V]) -> None:
        self._txn = txn
        self._database = database
        self._entry = database._entry
        self._env = database.environment
        self.key_coder: Coder[K] = database.key_coder
        self.value_coder: Coder[V] = database.value_coder

    async def _context(self) -> DbContext[K, V]:
        ctx = await self._database._context()
        return ctx.with_coders(self.key_coder, self.value_coder)

    async def _read(self, fn: Op[K, V, P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._txn._call(fn, (await self._context(), *args), False)

    async def _write(self, fn: Op[K, V, P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._txn._call(fn, (await self._context(), *args), True)


class _Phase(enum.Enum):
    """Where an interactive transaction is in its life."""

    NEW = "new"
    ACTIVE = "active"
    DONE = "done"


class AsyncTransaction:
    """Base of :class:`WriteTransaction` and :class:`Snapshot`: ``txn[db]`` views."""

    __slots__ = ("__weakref__", "_engine", "_env", "_phase", "_views")

    def __init__(self, env: Environment, engine: Engine) -> None:
        self._env = env
        self._engine = engine
        self._phase = _Phase.NEW
        # One view per database for the whole transaction, so coders set on it stay set
        # (the view keeps its database alive, so the id is not reused meanwhile).
        self._views: dict[int, AsyncDatabaseView[Any, Any]] = {}

    def __getitem__(self, database: AsyncDatabase[K, V]) -> AsyncDatabaseView[K, V]:
        """The view of ``database`` (of this environment) inside this transaction: the same
        object each time, so coders set on it last as long as the transaction."""
        view: AsyncDatabaseView[K, V] | None = self._views.get(id(database))
        if view is None:
            if database.environment is not self._env:
                raise ValueError("that database belongs to another environment")
            view = self._views[id(database)] = AsyncDatabaseView(self, database)
        return view

    async def begin(self) -> None:
        """Begin the transaction (``async with`` and ``await`` do this)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _check_usable(self) -> None:
        if self._phase is _Phase.NEW:
            raise TransactionError(
                "the transaction has not begun: use 'async with env.begin()' or 'await env.begin()'"
            )
        if self._phase is _Phase.DONE:
            raise TransactionError("the transaction has already ended")
        self._engine.check_open()

    async def _call(self, fn: Callable[..., R], args: tuple[Any, ...], write: bool) -> R:
        """Run ``fn(txn, *args)`` inside this transaction."""
        raise NotImplementedError  # pragma: no cover - abstract

    @property
    def active(self) -> bool:
        """True between begin and commit/abort."""
        return self._phase is _Phase.ACTIVE


class WriteTransaction(AsyncTransaction):
    """An exclusive write transaction held across awaits: ``async with env.begin(write=True)``.

    For read-modify-write logic that must await between steps. It runs on the writer thread
    (LMDB requires it), one hop per await; other writers wait their turn until it ends, so keep
    it short. Leaving the block normally commits; an exception, including cancellation, rolls
    back. ``await txn.commit()`` / ``await txn.abort()`` end it explicitly.
    ``txn = await env.begin(write=True)`` begins it without a block: then end it yourself
    with ``commit()`` or ``abort()``. Writing with a plain
    ``db.put`` from the task that holds it raises :class:`~aiolmdb.DeadlockError`. If a command
    fills the map (``lmdb.MapFullError``) the transaction can only roll back; the map is grown
    afterwards, so running it again fits.
    """

    __slots__ = ("_session",)

    def __init__(self, env: Environment, engine: Engine) -> None:
        super().__init__(env, engine)
        self._session: WriteSession | None = None

    def __await__(self) -> Generator[Any, None, WriteTransaction]:
        return self._begun().__await__()

    async def _begun(self) -> WriteTransaction:
        await self.begin()
        return self

    async def __aenter__(self) -> WriteTransaction:
        if self._phase is not _Phase.ACTIVE:  # 'async with await env.begin(...)' takes it over
            await self.begin()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._phase is not _Phase.ACTIVE:
            return
        if exc_info[0] is None:  # the block ended normally
            await self.commit()
        else:
            await self.abort()

    async def begin(self) -> None:
        """Wait for the writer and begin the transaction (``async with`` and ``await`` do
        this)."""
        if self._phase is not _Phase.NEW:
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
            self._phase = _Phase.DONE
            raise
        self._session = session
        self._phase = _Phase.ACTIVE
        engine.hold_session(session)

    async def _call(self, fn: Callable[..., R], args: tuple[Any, ...], write: bool) -> R:
        self._check_usable()
        session = self._session
        assert session is not None
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        if not session.send(fut, fn, args):
            raise TransactionError("the transaction has already ended")
        return await fut

    async def _finish(self, command: SessionCommand) -> None:
        if self._phase is not _Phase.ACTIVE:
            raise TransactionError("the transaction is not active")
        session = self._session
        assert session is not None
        self._phase = _Phase.DONE
        self._engine.release_session(session)
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
        if session is not None and self._phase is _Phase.ACTIVE:
            session.send(None, ABORT, ())  # never left the block: do not hold the writer


class Snapshot(AsyncTransaction):
    """A consistent read-only view across databases: ``async with env.begin() as snap``.

    Commits made after it began are not visible in it. Each await is one hop to a reader
    thread. It holds an LMDB reader slot (and old pages) until it ends, so keep it reasonably
    short; it ends on exit, including on cancellation. ``snap = await env.begin()`` begins it
    without a block: then end it with ``await snap.close()``. Growing the map invalidates it
    (:class:`~aiolmdb.SnapshotExpiredError`): begin a new one.
    """

    __slots__ = ("_held", "_opened")

    def __init__(
        self, env: Environment, engine: Engine, opened: Callable[[], Awaitable[object]]
    ) -> None:
        super().__init__(env, engine)
        self._held = HeldRead(engine, "snapshot", "begin a new snapshot")
        # Waits for the databases opened so far: a read transaction begun before a database
        # was created cannot use its handle (LMDB: EINVAL at the first cursor).
        self._opened = opened

    def __await__(self) -> Generator[Any, None, Snapshot]:
        return self._begun().__await__()

    async def _begun(self) -> Snapshot:
        await self.begin()
        return self

    async def __aenter__(self) -> Snapshot:
        if self._phase is not _Phase.ACTIVE:  # 'async with await env.begin()' takes it over
            await self.begin()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._end()

    async def begin(self) -> None:
        """Begin the snapshot (``async with`` and ``await`` do this)."""
        if self._phase is not _Phase.NEW:
            raise TransactionError("the snapshot has already begun")
        self._phase = _Phase.ACTIVE
        try:
            await self._opened()
            await self._engine.run_blocking(self._held.begin)
        except BaseException:
            self._end()
            raise

    async def _call(self, fn: Callable[..., R], args: tuple[Any, ...], write: bool) -> R:
        if write:
            raise ReadOnlyError("cannot write in a read snapshot: use env.begin(write=True)")
        if self._held.ended:  # ended by the environment's close
            self._phase = _Phase.DONE
        self._check_usable()
        return await self._engine.run_blocking(self._held.run, fn, *args)

    def _end(self) -> None:
        self._phase = _Phase.DONE
        self._held.release()

    @property
    def active(self) -> bool:
        """True between begin and its end (``close()``, the block's exit, or the
        environment's close)."""
        return self._phase is _Phase.ACTIVE and not self._held.ended

    async def close(self) -> None:
        """End the snapshot and free its reader slot (idempotent; leaving ``async with``
        does this)."""
        self._end()

    def release(self) -> None:
        """Deprecated: ``await snap.close()`` (every method that ends a transaction is a
        coroutine)."""
        warnings.warn(
            "Snapshot.release() is deprecated: use 'await snap.close()'",
            DeprecationWarning,
            stacklevel=2,
        )
        self._end()
