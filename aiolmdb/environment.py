"""Environment: opening and closing, databases, environment-wide operations."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime
import functools
import os
import warnings
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar, overload

import lmdb

from ._engine.config import (
    DEFAULT_MAX_BATCH,
    EngineConfig,
    ReadMode,
    check_lmdb_options,
    unknown_lmdb_options,
)
from ._engine.engine import Engine
from ._engine.metrics import Metrics
from ._store.catalogue import Catalogue, DatabaseInfo, encode_name, open_main
from ._store.expiry import Sweeper
from ._store.feed import ChangeFeed, CommitFeed, read_last_seq, read_log_id
from ._store.meta import MetaHandles, has_log
from ._store.recorder import Recorder
from ._store.records import Change
from ._store.trim import LogMode, Retention, log_options
from ._surface import check_sync_callable
from ._views import Transaction, check_run, run_in_transaction
from .coders import Coder, IdentityCoder
from .database import AsyncDatabase
from .transaction import Snapshot, WriteTransaction

__all__ = ["Environment", "StatCall", "open"]

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")

DEFAULT_MAX_DBS = 128

# What to pass to on_commit() instead of an async callback, said by the TypeError refusing one.
ON_COMMIT_INSTEAD = (
    "on_commit() calls callback(changes) on the event loop after each commit and awaits "
    "nothing: pass a plain function (it may start a task with asyncio.create_task), or follow "
    "the changes with 'async for change in env.changes()'"
)


def open(
    path: str | os.PathLike[str],
    *,
    executor: concurrent.futures.Executor | None = None,
    readers: int | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    reads: ReadMode | None = None,
    inline_reads: bool | None = None,
    map_growth: bool = True,
    max_map_size: int | None = None,
    changelog: bool | Literal["keys", "values"] = False,
    changelog_retention: int | datetime.timedelta | Retention | None = None,
    **lmdb_kwargs: Any,
) -> Environment:
    """Open an LMDB environment for asyncio use; returns at once.

    Takes the keyword arguments of :func:`lmdb.open` (``map_size``, ``sync``, ``readonly``,
    ``max_readers``, ``mode``, ...), except that ``max_dbs`` defaults to 128 rather than 0, so
    named databases work without configuration. aiolmdb's own options:

    executor
        Runs the read batches (a ``ThreadPoolExecutor`` of ``readers`` threads by default,
        shut down on close; an executor you pass is left running).
    readers
        Size of the default reader pool (default: the CPU count, between 2 and 8).
    max_batch
        The most operations one read or write transaction takes (default 1024): a burst of a
        million writes becomes many bounded commits, not one giant transaction.
    reads
        Where reads run (writes always go to the writer thread). ``"auto"`` (the default):
        inline on the loop thread while the data file is in the page cache, on reader threads
        as soon as it is not or an inline read met a major page fault, and the loop gets a
        turn about every millisecond of inline reads. ``"inline"``: always on the loop
        thread, in a read transaction reused for the rest of that loop iteration, skipping the
        thread hop (like lmdb-js); fastest when the data fits in memory, but a page fault
        blocks the loop, coders run on the loop, and a task awaiting gets in a loop never lets
        another task run until it stops. ``"threaded"``: always on reader threads. See the
        inline reads guide.
    inline_reads
        The older name of ``reads``: True is ``reads="inline"``, False ``reads="threaded"``
        (giving both, they must agree).
    map_growth
        When a write batch fills the map, double the map size and run the batch again (default
        True). With False, ``lmdb.MapFullError`` reaches exactly the writes that did not fit.
    max_map_size
        Upper bound for map growth (bytes); None for no bound.
    changelog
        Record every committed write in a log kept in the environment, in the same write
        transaction (see the changes guide and :meth:`Environment.changes`): True or
        ``"values"`` records keys and values, ``"keys"`` keys only. Once an environment has a
        log, every process that opens it for writing must pass ``changelog=True`` (others
        are refused, since their writes would be missing from it).
    changelog_retention
        How much of the log to keep: an int (the most changes), a ``datetime.timedelta``
        (how long), or a :class:`Retention` with both. Trimmed after commits, on the writer
        thread, in bounded steps. None (the default): keep everything.

    An option of the wrong type (``TypeError``) or out of range (``ValueError``) is rejected
    here, with an error naming it. Use ``async with aiolmdb.open(...) as env:`` or
    ``await env.close()``.
    """
    config = EngineConfig(
        executor=executor,
        readers=readers,
        max_batch=max_batch,
        reads=reads,
        inline_reads=inline_reads,
        map_growth=map_growth,
        max_map_size=max_map_size,
    )
    log_mode, retention = log_options(changelog, changelog_retention)
    check_lmdb_options(lmdb_kwargs)
    lmdb_kwargs.setdefault("max_dbs", DEFAULT_MAX_DBS)
    try:
        env = lmdb.open(os.fspath(path), **lmdb_kwargs)
    except TypeError as exc:
        unknown = unknown_lmdb_options(lmdb_kwargs)
        if unknown:  # py-lmdb's "unrecognized keyword argument" does not say which
            raise TypeError(f"open() got unknown options: {', '.join(unknown)}") from exc
        raise
    except lmdb.ReadersFullError as exc:
        # py-lmdb takes a reader slot while opening, before reader_check can free stale ones.
        raise lmdb.ReadersFullError(
            f"cannot open {os.fspath(path)!r}: LMDB's reader table is full. If processes that "
            "used it crashed, their slots are stale: `mdb_stat -rr PATH` (lmdb-utils) frees "
            "them, as does any process that has it open; otherwise raise max_readers"
        ) from exc
    with contextlib.suppress(lmdb.Error):
        # Free reader slots left by crashed processes (they pin old pages and fill the table).
        env.reader_check()
    try:
        readonly = lmdb_kwargs.get("readonly")
        if log_mode is None and not readonly and has_log(env):
            raise ValueError(
                f"{os.fspath(path)!r} records its changes in a change log: open it with "
                "aiolmdb.open(path, changelog=True) (or readonly=True), or this process's "
                "writes would be missing from the log"
            )
        return Environment(env, config, log_mode, retention)
    except BaseException:
        env.close()
        raise


def _encoded_prefix(coder: Coder[Any], prefix: Any) -> bytes:
    """``changes(db=database, prefix=key)``'s prefix encoded by the database's key coder (a
    short key, encoded once, on the loop). Stored bytes that the coder cannot encode were
    aiolmdb 0.x's meaning: still accepted, deprecated."""
    try:
        return bytes(coder.serialize(prefix))
    except (TypeError, ValueError) as exc:
        if not isinstance(prefix, bytes):
            raise type(exc)(f"cannot encode prefix {prefix!r} with {coder!r}: {exc}") from exc
    warnings.warn(
        "changes(db=database, prefix=...) takes a key of that database, encoded by its key "
        "coder, as items(prefix=...) does; stored bytes its coder cannot encode are "
        "deprecated: pass the key",
        DeprecationWarning,
        stacklevel=3,
    )
    return prefix


class StatCall(Mapping[str, Any]):
    """What ``env.stat()`` returns: awaitable (the statistics as a dict, read on a reader
    thread); used as a mapping without ``await`` it reads them on the spot, deprecated."""

    __slots__ = ("_engine", "_lmdb", "_read")

    def __init__(self, engine: Engine, env: lmdb.Environment) -> None:
        self._engine = engine
        self._lmdb = env
        self._read: dict[str, Any] | None = None

    def __await__(self) -> Generator[Any, None, dict[str, Any]]:
        return self._stat().__await__()

    async def _stat(self) -> dict[str, Any]:
        return dict(await self._engine.run_blocking(self._lmdb.stat))

    def _now(self) -> dict[str, Any]:
        if self._read is None:
            warnings.warn(
                "env.stat() is a coroutine like db.stat(): use 'await env.stat()' (reading its "
                "result without await is deprecated)",
                DeprecationWarning,
                stacklevel=3,
            )
            self._engine.check_open()
            self._read = dict(self._lmdb.stat())
        return self._read

    def __getitem__(self, key: str) -> Any:
        return self._now()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._now())

    def __len__(self) -> int:
        return len(self._now())

    def __repr__(self) -> str:
        return "<env.stat(): await it>"


class Environment:
    """An open LMDB environment: hands out :class:`AsyncDatabase` objects and runs the engine
    (a pool of reader threads and one writer thread) that their operations go through."""

    def __init__(
        self,
        env: lmdb.Environment,
        config: EngineConfig,
        log_mode: LogMode = None,
        retention: Retention | None = None,
    ) -> None:
        self._lmdb = env
        self._path: str = env.path()
        main = open_main(env)
        handles = MetaHandles(env)
        # The change log and on_commit hooks: it begins the writer's write transactions.
        self._recorder = recorder = Recorder(env, log_mode, retention, handles)
        # Last: it starts the writer thread, and nothing after it may fail.
        self._engine = Engine(env, config, recorder)
        # Deletes expired entries on the writer thread, between batches.
        self._sweeper = Sweeper(self._engine.run_write)
        self._engine.set_idle(self._sweeper)
        self._catalogue = Catalogue(env, self._engine, main, handles, recorder, self._sweeper)
        self._default_db: AsyncDatabase[bytes, bytes] | None = None
        self._replication_metrics: Callable[[], Mapping[str, float]] | None = None

    def __repr__(self) -> str:
        state = "closed" if self._engine.closed else "open"
        return f"<aiolmdb.Environment {self._path!r} {state}>"

    # ----------------------------------------------------------------- properties
    @property
    def path(self) -> str:
        """The environment's directory (or file, with ``subdir=False``)."""
        return self._path

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._engine.closed

    @property
    def lmdb_environment(self) -> lmdb.Environment:
        """The underlying ``lmdb.Environment``. Using it directly bypasses the engine: never
        begin a write transaction on it from the event loop."""
        return self._lmdb

    # ----------------------------------------------------------------- databases
    @overload
    def open_db(
        self,
        name: str | bytes | None = None,
        *,
        key_coder: None = None,
        value_coder: None = None,
        **flags: Any,
    ) -> AsyncDatabase[bytes, bytes]: ...
    @overload
    def open_db(
        self,
        name: str | bytes | None = None,
        *,
        key_coder: Coder[K],
        value_coder: None = None,
        **flags: Any,
    ) -> AsyncDatabase[K, bytes]: ...
    @overload
    def open_db(
        self,
        name: str | bytes | None = None,
        *,
        key_coder: None = None,
        value_coder: Coder[V],
        **flags: Any,
    ) -> AsyncDatabase[bytes, V]: ...
    @overload
    def open_db(
        self,
        name: str | bytes | None = None,
        *,
        key_coder: Coder[K],
        value_coder: Coder[V],
        **flags: Any,
    ) -> AsyncDatabase[K, V]: ...
    def open_db(
        self,
        name: str | bytes | None = None,
        *,
        key_coder: Coder[Any] | None = None,
        value_coder: Coder[Any] | None = None,
        **flags: Any,
    ) -> AsyncDatabase[Any, Any]:
        """Open (creating it if needed) a named database and return an :class:`AsyncDatabase`.

        ``name`` is ``str`` (stored as UTF-8) or ``bytes``; ``None`` is the default database.
        ``flags`` are :meth:`lmdb.Environment.open_db`'s (``dupsort``, ``integerkey``,
        ``reverse_key``, ``create``, ...) and aiolmdb's ``versioned=True``: every entry of a
        versioned database carries a version (``get_entry``, ``put(..., if_version=)``; see
        the versions guide); it is set when the database is created and opening it with the
        other setting raises ValueError. ``ttl=seconds`` (an int, float or timedelta) makes an
        expiring database in the same way: its entries expire that long after they are
        written (``put(..., ttl=)`` per entry; reads never return an expired entry, the writer
        deletes them; see the expiry guide); reopening it with another ``ttl`` changes the
        default for later writes. Returns at once, never waiting behind a write: LMDB
        opens named databases under its write lock, so the opening is queued to the writer
        thread. ``await env.open_db(...)`` (or the first operation) waits for it and raises its
        error, e.g. ``lmdb.NotFoundError`` with ``create=False``. In a read-only environment
        the database opens on the spot (and a missing one raises at once).
        """
        self._engine.check_open()
        kc: Coder[Any] = key_coder if key_coder is not None else IdentityCoder()
        vc: Coder[Any] = value_coder if value_coder is not None else IdentityCoder()
        for label, coder in (("key_coder", kc), ("value_coder", vc)):
            if not isinstance(coder, Coder):
                raise TypeError(f"{label} must be an aiolmdb Coder instance, got {coder!r}")
        encoded = encode_name(name)
        if encoded is None:
            if flags.get("versioned"):
                raise ValueError(
                    "the default database cannot be versioned (it also holds the names of the "
                    "named databases): open a named one with versioned=True"
                )
            if flags.get("ttl") is not None:
                raise ValueError(
                    "the default database cannot expire (it also holds the names of the "
                    "named databases): open a named one with ttl=seconds"
                )
            if flags:
                raise ValueError(
                    "flags cannot be given for the default database: LMDB fixes them when the "
                    "environment is created"
                )
            entry = self._catalogue.main
        else:
            entry = self._catalogue.open(encoded, flags)
        return AsyncDatabase(self, self._engine, self._catalogue, entry, kc, vc)

    def get_default_database(self) -> AsyncDatabase[bytes, bytes]:
        """The default (unnamed) database, with bytes keys and values.

        Returns the same object each time, so coders set on it (``db.value_coder = ...``)
        stay set. Use ``open_db(None, key_coder=..., value_coder=...)`` for another view of
        it with different coders.
        """
        self._engine.check_open()
        if self._default_db is None:
            self._default_db = self.open_db(None)
        return self._default_db

    get_default_db = get_default_database  # aiolmdb 0.1's name

    async def databases(self, *, include_internal: bool = False) -> list[DatabaseInfo]:
        """Every database of the environment: the default one first (``key`` None), then the
        named ones in key order, each with its stored flags and entry count. Read in one read
        transaction on a reader thread.

        aiolmdb's own databases (names beginning with ``__aiolmdb``: its metadata, the change
        log) are left out unless ``include_internal=True``. The default database's
        ``entries`` counts the user's keys only, not the records LMDB keeps there for the
        named databases (its ``stat`` is LMDB's own, which counts them)."""
        self._engine.check_open()
        return await self._catalogue.databases(include_internal)

    async def database_info(self, name: str | bytes) -> DatabaseInfo | None:
        """The named database ``name``, or None if there is none; ValueError if ``name`` is
        a plain key of the default database rather than a database."""
        self._engine.check_open()
        encoded = encode_name(name)
        if encoded is None:
            raise TypeError("database_info() needs a name; databases()[0] is the default one")
        return await self._catalogue.info(encoded)

    # ----------------------------------------------------------------- transactions
    def run(
        self, fn: Callable[[Transaction[bytes, bytes]], R], write: bool = False
    ) -> Awaitable[R]:
        """Run ``fn(txn)`` in one transaction spanning every database of the environment.

        ``txn[db]`` gives synchronous, coder-aware access to any database ``db`` of this
        environment; ``txn.get(...)`` etc. act on the default database. With ``write=True``
        it runs on the writer thread in its own nested transaction of the current group
        commit: returning commits every database's changes at once, raising rolls all of
        them back and the exception reaches the caller unchanged.
        """
        check_run(fn, "env.run()", write)
        return run_in_transaction(
            self._engine,
            self.get_default_database(),
            fn,
            write,
            self._catalogue.wait_all_opened,
        )

    @overload
    def begin(self, write: Literal[False] = False) -> Snapshot: ...
    @overload
    def begin(self, write: Literal[True]) -> WriteTransaction: ...
    @overload
    def begin(self, write: bool) -> Snapshot | WriteTransaction: ...
    def begin(self, write: bool = False) -> Snapshot | WriteTransaction:
        """An interactive transaction spanning every database: ``async with`` it, or await it.

        ``async with env.begin() as snap:`` is a read snapshot: ``await snap[db].get(k)``,
        ``get_multi``, ``async for`` over ``snap[db].items(...)``, all seeing one consistent
        state. ``async with env.begin(write=True) as txn:`` is an exclusive write transaction
        held across awaits: ``await txn[db].get(k)``, ``await txn[db].put(k, v)``; it commits
        when the block ends normally and rolls back on an exception or cancellation.
        ``txn = await env.begin(...)`` begins it without a block: end it yourself with
        ``await txn.commit()``/``await txn.abort()``, or ``await snap.close()``.
        """
        self._engine.check_open()
        return (
            WriteTransaction(self, self._engine)
            if write
            else Snapshot(self, self._engine, self._catalogue.wait_all_opened)
        )

    # ----------------------------------------------------------------- environment-wide
    def stat(self) -> StatCall:
        """LMDB's statistics for the default database (``psize``, ``depth``, ``entries``...):
        ``await env.stat()``, read on a reader thread, as ``await db.stat()``.

        Using the result as a dict without ``await`` (aiolmdb 0.x) still works in this release
        with a :class:`DeprecationWarning`; it reads on the calling thread."""
        self._engine.check_open()
        return StatCall(self._engine, self._lmdb)

    def info(self) -> dict[str, Any]:
        """LMDB's environment information (``map_size``, ``last_pgno``, ``num_readers``...)."""
        self._engine.check_open()
        return dict(self._lmdb.info())

    def metrics(self) -> Metrics:
        """What the engine has done since the environment was opened (reads, writes, their
        batches, commits, conflicts, map resizes; batch sizes and commit times as histograms)
        and its state now (map size, reader slots in use, queued writes). Cheap, and never
        waits: the counters are kept by the threads that do the work, without locks. See the
        observability guide for exporting them."""
        self._engine.check_open()
        metrics = dataclasses.replace(self._engine.metrics(), expired=self._sweeper.swept)
        source = self._replication_metrics
        if source is not None:
            metrics = dataclasses.replace(metrics, replication=source())
        return metrics

    async def sweep_expired(self) -> int:
        """Delete every expired entry of the expiring databases opened in this environment
        now, in bounded steps on the writer thread, and return how many were deleted.

        The writer does this by itself between writes when the earliest expiry is due;
        reads never return an expired entry either way. This is for a moment you choose
        (before a copy, in tests with a replaced clock). Each step is a write transaction:
        the change log records the deletes. An environment that takes no writes (a replica,
        whose leader's sweeps arrive as deletes; a fenced leader) never sweeps: this raises
        its error (ReadOnlyError, FencedError)."""
        engine = self._engine
        engine.check_open()
        engine.check_not_holding("sweeping expired entries")
        await self._catalogue.wait_all_opened()
        return await asyncio.wrap_future(engine.call_solo(self._sweeper.sweep_all))

    def max_key_size(self) -> int:
        """The longest key LMDB accepts in this environment, in bytes."""
        self._engine.check_open()
        return self._engine.max_key_size

    def readers(self) -> str:
        """LMDB's reader lock table, one line per reader slot in use (for diagnostics)."""
        self._engine.check_open()
        return str(self._lmdb.readers())

    def flags(self) -> dict[str, Any]:
        """The flags the environment was opened with."""
        self._engine.check_open()
        return dict(self._lmdb.flags())

    async def sync(self, force: bool = False) -> None:
        """Flush the map to disk (needed only with ``sync=False`` or ``map_async=True``;
        ``force`` flushes even then)."""
        await self._engine.run_blocking(self._lmdb.sync, force)

    async def copy(self, path: str | os.PathLike[str], compact: bool = False) -> None:
        """Hot backup into the directory ``path`` (which must exist and be empty).

        ``compact=True`` omits free pages and renumbers them, which is slower but smaller.
        Runs on a reader thread; writers go on meanwhile.
        """
        await self._engine.run_blocking(self._lmdb.copy, os.fspath(path), compact)

    # ----------------------------------------------------------------- changes
    def changes(
        self,
        since: int | None = None,
        *,
        db: str | bytes | AsyncDatabase[Any, Any] | None = None,
        prefix: Any = None,
        follow: bool = True,
        log_id: str | None = None,
    ) -> ChangeFeed:
        """Follow the change log: ``async for change in env.changes(since):``.

        Yields :class:`Change` ``(seq, db, key, kind, value)`` in commit order: with
        ``since=None`` the changes committed after the feed starts, with ``since=seq`` every
        change after ``seq`` (``0``: the whole log), then new ones as they commit. Commits of
        this process wake it at once, other processes' within about 50 ms. ``db`` keeps one
        database's changes: given as a name, the changes carry the raw stored bytes (no
        coder is known; a versioned value keeps its version header); given as an
        :class:`AsyncDatabase`, its coders decode keys and values (as its reads do). A name
        that is no database raises ValueError at the first read. ``prefix`` keeps the keys
        whose encoding starts with the encoded prefix, as ``prefix=`` of ``items()`` does (and
        the whole-database changes): a key of ``db``, encoded by its key coder when ``db`` is
        an :class:`AsyncDatabase`, else ``bytes`` (stored bytes).
        ``follow=False`` ends the iteration once it has caught up with the log instead.
        ``log_id``: the log the position ``since`` came from (a feed's ``log_id``, stored
        with its ``last_seq``); another log's position is refused.
        The first read (or ``await feed.start()``) raises
        :class:`~aiolmdb.errors.ChangesPositionError` when ``since`` is beyond the log's last
        sequence number (a restored environment, or another environment's position) or
        ``log_id`` is not this log's, :class:`~aiolmdb.errors.ChangesTrimmedError` when
        retention already trimmed changes after ``since``, and ValueError if the environment
        has no log. Closing the environment ends the iteration. For whole commits (a
        transaction's changes together), see :meth:`commits`.
        """
        self._engine.check_open()
        if since is not None and (type(since) is not int or since < 0):
            raise ValueError(f"since must be an int >= 0 or None, got {since!r}")
        if log_id is not None and not isinstance(log_id, str):
            raise TypeError(f"log_id must be a str (a feed's log_id) or None, got {log_id!r}")
        name: str | Literal[False] | None = False
        database = None
        encoded: bytes | None = None
        if isinstance(db, AsyncDatabase):
            if db.environment is not self:
                raise ValueError("that database belongs to another environment")
            name = db.name
            database = db
            if prefix is not None:
                prefix = _encoded_prefix(db.key_coder, prefix)
        elif prefix is not None and not isinstance(prefix, bytes):
            raise TypeError(
                f"prefix must be bytes (a stored key's start) unless db= is an AsyncDatabase, "
                f"whose key coder encodes it; got {prefix!r}"
            )
        elif db is not None:
            encoded = encode_name(db)
            assert encoded is not None
            name = encoded.decode("utf-8", "backslashreplace")
        return ChangeFeed(
            self._engine,
            self._recorder,
            since,
            name,
            database,
            prefix,
            follow,
            None if log_id is None else log_id.lower(),
            encoded,
            None if encoded is None else functools.partial(self._catalogue.wait_named, encoded),
        )

    def commits(
        self, since: int | None = None, *, follow: bool = True, log_id: str | None = None
    ) -> CommitFeed:
        """Follow the change log by whole commits: ``async for commit in env.commits(since):``.

        Yields :class:`Commit` ``(first, last, timestamp, changes, databases, partial)``, one
        per committed write transaction (a group commit of many writers is one; so is an
        ``env.begin(write=True)`` over several databases), with every change of it, keys and
        values as stored (bytes, never decoded), and the flags of each database it changed.
        ``since``, ``follow`` and ``log_id`` are as for :meth:`changes`; ``since`` is best a
        commit's ``last`` (``feed.last_seq``): a ``since`` inside a commit, or retention that
        trimmed a commit's start, makes the first commit yielded ``partial``. The same errors
        as :meth:`changes`. A commit is held in memory until it is read whole.
        """
        self._engine.check_open()
        if since is not None and (type(since) is not int or since < 0):
            raise ValueError(f"since must be an int >= 0 or None, got {since!r}")
        if log_id is not None and not isinstance(log_id, str):
            raise TypeError(f"log_id must be a str (a feed's log_id) or None, got {log_id!r}")
        return CommitFeed(
            self._engine,
            self._recorder,
            since,
            follow,
            None if log_id is None else log_id.lower(),
        )

    async def last_seq(self) -> int:
        """The change log's last sequence number (0: nothing recorded yet; it only grows,
        also when retention trimmed the whole log): ``changes(since=await env.last_seq())``
        follows what commits from now on. Raises ValueError if the environment has no log."""
        self._engine.check_open()
        return await read_last_seq(self._engine, self._recorder)

    async def changelog_id(self) -> str | None:
        """The identity of the environment's change log, in hex: random, written when the
        log was created, kept by ``copy()`` and by ``aiolmdb dump --all``/``load``. Store it
        with a follower's position to detect a different log (``changes(since=, log_id=)``).
        None for a log created by an aiolmdb older than identities that no process has
        opened for writing with ``changelog=True`` since (that open creates one). Raises
        ValueError if the environment has no log."""
        self._engine.check_open()
        return await read_log_id(self._engine, self._recorder)

    def on_commit(self, callback: Callable[[Sequence[Change]], object]) -> Callable[[], None]:
        """Call ``callback(changes)`` on the event loop after each commit of this process
        that changed something (before the writers awaiting it resume), with the
        :class:`Change` list it made; returns a function that unregisters it.

        Needs no change log (``seq`` is then None). Writes that rolled back are not
        reported; an exception of the callback is logged on the ``aiolmdb`` logger. The
        callback is a plain function: an async one is refused with TypeError (nothing would
        await it).
        """
        self._engine.check_open()
        check_sync_callable(callback, "on_commit()", ON_COMMIT_INSTEAD)
        return self._recorder.add_hook(callback)

    # ----------------------------------------------------------------- replication
    # The contract between Environment and aiolmdb.replication (its one user): a replica and
    # a fenced leader refuse writes, a replica applies commits as stored and keeps its
    # position in the metadata database, and both report their gauges in metrics().
    def _guard_writes(self, refuse: Callable[[], BaseException] | None) -> None:
        """Refuse every write from now on (puts, deletes, ``run(write=True)``, write
        transactions, deleting databases, sweeps of expired entries) with ``refuse()``'s
        error; None accepts them."""
        self._engine.set_write_guard(refuse)
        self._sweeper.held = refuse

    def _write_raw(self, work: Callable[[lmdb.Environment, Any, Any], R]) -> Awaitable[R]:
        """``work(lmdb_env, txn, meta)`` in a write transaction of its own, unrecorded and
        past the write guard (see Catalogue.write_raw)."""
        return self._catalogue.write_raw(work)

    def _read_raw(self, work: Callable[[Any, Any], R]) -> Awaitable[R]:
        """``work(txn, meta)`` in a read transaction on a reader thread."""
        self._engine.check_open()
        return self._catalogue.read_raw(work)

    def _set_replication_metrics(self, source: Callable[[], Mapping[str, float]] | None) -> None:
        """What ``metrics().replication`` reports (None: nothing)."""
        self._replication_metrics = source

    # ----------------------------------------------------------------- closing
    async def close(self) -> None:
        """Close the environment. Idempotent.

        New operations fail with :class:`~aiolmdb.ClosedError` at once; operations already
        submitted run to completion first (their callers get their results), then the threads
        stop and LMDB's environment is closed.
        """
        engine = self._engine
        done = engine.begin_close()
        self._recorder.wake()  # followers see the close and end
        # Shielded: cancelling close() must not cancel the shutdown, which goes on regardless.
        await asyncio.shield(asyncio.wrap_future(done))
        engine.join_writer()

    async def __aenter__(self) -> Environment:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None and not engine.closed:
            warnings.warn(
                f"unclosed aiolmdb environment {self._path!r}: await env.close() "
                "(or use 'async with aiolmdb.open(...)')",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )
            engine.begin_close()
