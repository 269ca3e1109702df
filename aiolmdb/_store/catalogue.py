"""The database catalogue of an environment: which databases are open, opening, or deleted.

LMDB opens a named database in a write transaction (py-lmdb uses one even for an existing
database), so opening is queued to the writer thread between batches and every view of that
database waits for it (:class:`DatabaseEntry`). Opens queued together share one write
transaction and one commit: the first queues one item for the writer, which takes every open
queued by the time it runs. A database that fails to open (``create=False``, ``max_dbs``, the
wrong flags) fails alone: those errors leave the transaction usable; any other error makes each
open of the group run again in a transaction of its own. Deleting a database also runs on the
writer thread, alone. Both go through the engine's write runner (``run_write``: a map grown by
another process is adopted, a full one grown, and the work run again), holding the handle lock
of :class:`~aiolmdb._store.meta.MetaHandles` from begin to commit. Listing the databases
(:meth:`Catalogue.databases`) runs on a reader thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

import lmdb

from .._engine.config import check_flag
from .._engine.txnrunner import BeginChild, before_engine
from ..errors import DatabaseDroppedError
from . import expiry as _expiry
from .expiry import INDEX_NAME, Expiry, Sweeper
from .large import LargeValues
from .meta import (
    INTERNAL_PREFIX,
    LARGE_MARK,
    LOG_NAME,
    META_NAME,
    MetaHandles,
    large_key,
    stored_before_engine,
)
from .recorder import Recorder
from .versions import MARKER, VersionSource, marker_key

if TYPE_CHECKING:
    from .._engine.delivery import Txn
    from .._engine.engine import Engine

__all__ = [
    "DB_FLAGS",
    "Catalogue",
    "DatabaseEntry",
    "DatabaseInfo",
    "encode_name",
    "is_database",
    "open_main",
]

R = TypeVar("R")

# Flags of lmdb.Environment.open_db that describe a database (create only says what to do).
DB_FLAGS = ("reverse_key", "dupsort", "integerkey", "integerdup", "dupfixed")
# A named database's record in the main database is LMDB's MDB_db struct: two 16-bit and one
# 32-bit field, then five size_t/pgno_t fields.
_DB_RECORD_SIZE = 8 + 5 * struct.calcsize("N")


@dataclass(frozen=True)
class DatabaseInfo:
    """One database of an environment, as :meth:`Environment.databases` lists it."""

    key: bytes | None
    """The name exactly as LMDB stores it (None: the default database); ``env.open_db``
    accepts it."""
    flags: frozenset[str]
    """The py-lmdb flags LMDB stored for it (``dupsort``, ``integerkey``, ...), and
    ``versioned`` for a versioned database: ``open_db(key, **dict.fromkeys(flags, True))``
    opens it."""
    entries: int
    """How many entries it holds (every value counts in a dupsort database). For the default
    database, the user's keys only: the records LMDB keeps there for the named databases are
    left out (``stat["entries"]``, LMDB's own count, includes them)."""
    stat: Mapping[str, int] = field(repr=False, compare=False)
    """LMDB's statistics for it (``psize``, ``depth``, ``branch_pages``, ...)."""
    ttl: float | None = None
    """An expiring database's default time to live in seconds (``open_db(name, ttl=)``);
    None for a database whose entries never expire. ``entries`` counts expired entries not
    yet swept."""

    @property
    def name(self) -> str | None:
        """The name as text (undecodable bytes shown as backslash escapes)."""
        return None if self.key is None else self.key.decode("utf-8", "backslashreplace")


def encode_name(name: str | bytes | None) -> bytes | None:
    """A database name as LMDB takes it, or a clear error for one it cannot."""
    if name is None:
        return None
    if isinstance(name, str):
        encoded = name.encode("utf-8")
    elif isinstance(name, bytes):
        encoded = name
    else:
        raise TypeError(f"database name must be str, bytes or None, got {name!r}")
    if not encoded:
        raise ValueError(
            f"database name must not be empty, got {name!r}: use None for the default database"
        )
    if b"\0" in encoded:
        # LMDB names are C strings: it would silently open the name cut at the NUL.
        raise ValueError(f"database name must not contain a NUL byte; got {name!r}")
    return encoded


# What an open gives a DatabaseEntry: the handle, the flags LMDB stored, the version counter,
# whether its large-values marker is stored, an expiring database's Expiry.
Opened = tuple[Any, dict[str, bool], VersionSource | None, bool, Expiry | None]
Opening = concurrent.futures.Future[Opened]


@dataclass(frozen=True)
class _PendingOpen:
    """An open queued for the writer thread."""

    name: bytes
    flags: dict[str, Any]
    versioned: bool
    ttl_ms: int | None
    future: Opening


class DatabaseEntry:
    """What every AsyncDatabase object of one database shares: LMDB's handle once open, the
    flags LMDB stored, and the state of its opening."""

    __slots__ = (
        "dbi",
        "dropped",
        "dupsort",
        "error",
        "expiry",
        "flags",
        "large",
        "name",
        "opening",
        "ttl_ms",
        "versioned",
        "versions",
    )

    def __init__(
        self,
        name: bytes | None,
        flags: dict[str, bool],
        versioned: bool = False,
        env: lmdb.Environment | None = None,
        ttl_ms: int | None = None,
    ) -> None:
        self.name = name
        self.flags = flags
        self.dupsort = bool(flags.get("dupsort", False))
        # Asked for at open; the open fails unless the stored marker says the same.
        self.versioned = versioned
        self.dbi: Any = None
        # A versioned database's: the environment's version counter.
        self.versions: VersionSource | None = None
        # Asked for at open (an expiring database's default ttl, ms); once open, its Expiry.
        self.ttl_ms = ttl_ms
        self.expiry: Expiry | None = None
        # The queued open on the writer thread: the handle, stored flags and version counter,
        # or its error.
        self.opening: Opening | None = None
        self.dropped = False
        self.error: BaseException | None = None
        # Whether it is known to hold large values: shared by every context of the database.
        self.large = LargeValues(env)

    @property
    def label(self) -> str | None:
        """The name as text, for messages."""
        return None if self.name is None else self.name.decode("utf-8", "backslashreplace")

    def opened(
        self,
        dbi: Any,
        stored_flags: dict[str, bool],
        versions: VersionSource | None = None,
        large: bool = False,
        expiry: Expiry | None = None,
    ) -> None:
        """Take the handle and the flags the database really has (dupsort decides how
        writes and scans work, so it must not come from what the caller asked for), for
        a versioned database the environment's version counter, and whether its
        large-values marker is stored (large values are then read without the GIL at once),
        and for an expiring database its :class:`~aiolmdb._store.expiry.Expiry`."""
        if large:
            self.large.found_stored()
        self.flags = stored_flags
        self.dupsort = bool(stored_flags.get("dupsort", False))
        self.versions = versions
        self.expiry = expiry
        self.dbi = dbi

    def record_flags(self) -> set[str]:
        """Its flags as change log records carry them: LMDB's, ``versioned``,
        ``large_values``, ``expiring``."""
        flags = {name for name, on in self.flags.items() if on}
        if self.versions is not None or self.versioned:
            flags.add("versioned")
        if self.large.stored:
            flags.add("large_values")
        if self.expiry is not None:
            flags.add("expiring")
        return flags

    def check_usable(self) -> None:
        """Raise DatabaseDroppedError, or the open's error."""
        if self.dropped:
            raise DatabaseDroppedError(f"database {self.label!r} was dropped (deleted)")
        if self.error is not None:
            raise self.error

    async def wait_opened(self, engine: Engine) -> None:
        """Wait for a queued open (on the writer thread) and take its handle or error."""
        fut = self.opening
        if fut is None:
            return
        if not fut.done():
            engine.check_open()
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


class Catalogue:
    """The databases of one environment: opens, deletes and lists them."""

    __slots__ = (
        "_engine",
        "_entries",
        "_handles",
        "_lmdb",
        "_lock",
        "_pending",
        "_pending_lock",
        "_readonly",
        "_recorder",
        "_sweeper",
        "_versions",
        "main",
    )

    def __init__(
        self,
        env: lmdb.Environment,
        engine: Engine,
        main: tuple[Any, dict[str, bool]],
        handles: MetaHandles,
        recorder: Recorder,
        sweeper: Sweeper,
    ) -> None:
        self._lmdb = env
        self._engine = engine
        self._readonly = bool(env.flags().get("readonly"))
        # The metadata database's handle and the lock every handle is opened under.
        self._handles = handles
        self._lock = handles.lock
        self._recorder = recorder
        # Sweeps the expiring databases opened here; owns the expiry index's handle.
        self._sweeper = sweeper
        self._entries: dict[bytes, DatabaseEntry] = {}
        # The version counter (one per environment: its versioned databases share it).
        self._versions: VersionSource | None = None
        # Opens queued for the writer, taken all at once by _open_pending.
        self._pending: list[_PendingOpen] = []
        self._pending_lock = threading.Lock()
        self.main = DatabaseEntry(None, {}, env=env)
        self.main.large.mark = self._marker(self.main)
        self.main.opened(*main, None, self._main_marked(), None)
        recorder.attach(self.main.dbi, engine.call_solo, engine.run_write)
        recorder.name_handle(self.main.dbi, None, self.main.record_flags(), main=True)

    def open(self, name: bytes, flags: dict[str, Any]) -> DatabaseEntry:
        """The entry of the named database ``name``, opening (or creating) it if needed.

        Returns at once: the open is queued to the writer thread (views wait for it), except
        in a read-only environment, where it runs on the spot in a read transaction.
        """
        flags = dict(flags)
        versioned = flags.pop("versioned", False)
        ttl = flags.pop("ttl", None)
        ttl_ms = None if ttl is None else _expiry.check_ttl(ttl)
        unknown = sorted(set(flags) - {*DB_FLAGS, "create"})
        if unknown:
            raise TypeError(f"unknown open_db flag(s): {', '.join(map(repr, unknown))}")
        if not isinstance(versioned, bool):
            raise TypeError(f"open_db flag 'versioned' must be a bool, got {versioned!r}")
        for flag, value in flags.items():
            check_flag(flag, value)
        if name in (META_NAME, LOG_NAME, INDEX_NAME):
            raise ValueError(f"{name!r} is aiolmdb's metadata database: choose another name")
        flags = {k: bool(v) for k, v in flags.items()}
        db_flags = {k: True for k, v in flags.items() if k in DB_FLAGS and v}
        if versioned and db_flags.get("dupsort"):
            raise ValueError("a versioned database cannot be dupsort: versions are per key")
        if ttl_ms is not None and (versioned or db_flags.get("dupsort")):
            raise ValueError(
                "an expiring database (ttl=) cannot be versioned or dupsort: expiry is per "
                "key, stored before the value; keep the two in separate databases"
            )
        entry = self._entries.get(name)
        if entry is not None and (entry.error is not None or entry.dropped):
            entry = None  # its opening failed (e.g. create=False), or it was deleted: anew
        if entry is not None:
            if db_flags and entry.flags != db_flags:
                raise ValueError(
                    f"database {entry.label!r} is already open with flags {entry.flags}; "
                    f"cannot open it again with {db_flags}"
                )
            if entry.versioned != versioned:
                raise _layout_error(entry.label, entry.versioned)
            if entry.ttl_ms != ttl_ms:
                raise _ttl_error(entry.label, entry.ttl_ms, ttl_ms, "is already open")
            return entry
        entry = DatabaseEntry(name, db_flags, versioned, self._lmdb, ttl_ms)
        entry.large.mark = self._marker(entry)
        if self._readonly:
            # py-lmdb opens it with a read transaction, which never waits for a writer.
            meta = self._handles.existing_meta(self._lmdb.begin)
            with self._lock:
                dbi = self._lmdb.open_db(name, create=False, **db_flags)  # type: ignore[arg-type]
                expires: tuple[int, int] | None = None
                if meta is None:
                    marked = large = False
                else:
                    with self._lmdb.begin() as txn:
                        marked = txn.get(marker_key(name), None, meta) is not None
                        large = txn.get(large_key(name), None, meta) is not None
                        expires = _expiry.read_marker(txn, meta, name)
            if marked != versioned:
                raise _layout_error(entry.label, marked)
            if (expires is None) != (ttl_ms is None):
                raise _ttl_error(entry.label, None if expires is None else expires[1], ttl_ms)
            entry.opened(
                dbi,
                _stored_flags(self._lmdb, dbi),
                self._source() if versioned else None,
                large,
                None if expires is None else Expiry(expires[0], expires[1], self._sweeper),
            )
            # As for a queued open: a reused inline read transaction predates the handle.
            self._engine.release_inline()
        else:
            entry.opening = self._queue_open(name, {**db_flags, **flags}, versioned, ttl_ms)
        self._entries[name] = entry
        return entry

    def _queue_open(
        self, name: bytes, flags: dict[str, Any], versioned: bool, ttl_ms: int | None
    ) -> Opening:
        """Queue an open for the writer thread; the first of a group queues the writer item
        that opens the whole group in one transaction."""
        item = _PendingOpen(name, flags, versioned, ttl_ms, concurrent.futures.Future())
        with self._pending_lock:
            self._pending.append(item)
            first = len(self._pending) == 1
        if first:
            try:
                solo = self._engine.call_solo(self._open_pending)
            except BaseException:
                with self._pending_lock:
                    self._pending.remove(item)
                raise
            # Failed without running (the environment closed first): fail what it would take.
            solo.add_done_callback(self._fail_pending)
        return item.future

    def _take_pending(self) -> list[_PendingOpen]:
        with self._pending_lock:
            taken, self._pending = self._pending, []
        return taken

    def _fail_pending(self, solo: concurrent.futures.Future[None]) -> None:
        error = solo.exception() if not solo.cancelled() else None
        if error is None and not solo.cancelled():
            return
        for item in self._take_pending():
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(error or RuntimeError("database open cancelled"))

    def _open_pending(self, env: lmdb.Environment) -> None:
        """Writer thread: open (and create) every queued database in one write transaction;
        if that fails as a whole, each in a transaction of its own."""
        group = self._take_pending()
        group = [item for item in group if item.future.set_running_or_notify_cancel()]
        if not group:
            return
        results = self._open_grouped(env, group)
        for item, (ok, value) in zip(group, results, strict=True):
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)

    def _open_grouped(
        self, env: lmdb.Environment, group: list[_PendingOpen]
    ) -> list[tuple[bool, Any]]:
        """The group in one transaction (through the write runner: the map is adopted or
        grown and the group run again); when that fails as a whole, each open alone, so only
        those that cannot succeed fail."""
        try:
            return self._open_group(group)
        except BaseException:
            pass
        # Nothing was committed: each alone.
        results: list[tuple[bool, Any]] = []
        for item in group:
            try:
                ok, value = self._open_group([item])[0]
            except BaseException as exc:
                results.append((False, exc))
            else:
                results.append((ok, value))
        return results

    def _open_group(self, group: list[_PendingOpen]) -> list[tuple[bool, Any]]:
        """Open ``group`` in one write transaction, checking each stored versioned marker
        against ``versioned`` and writing it with a new versioned database (in the
        transaction that creates the database): ``(True, opened)`` or ``(False, error)`` per
        open. An error that may have made the transaction unusable is raised.

        Under the handle lock from begin to commit; the map is resized only outside it (a
        listing holds the lock in a read transaction, which a resize waits for)."""
        handles = self._handles
        meta, results = self._engine.run_write(
            lambda txn, _: self._open_group_in(txn, group), logged=False, guard=self._lock
        )
        recorder = self._recorder
        sweeper = self._sweeper
        if meta is not None:
            handles.keep(meta=meta)  # committed: valid from now on
            recorder.name_handle(meta, None)
        opened: list[tuple[bool, Any]] = []
        for item, (ok, value) in zip(group, results, strict=True):
            if not ok:
                opened.append((ok, value))
                continue
            flags = {
                *value[1],
                *(("versioned",) if value[2] else ()),
                *(("large_values",) if value[3] else ()),
                *(("expiring",) if value[4] is not None else ()),
            }
            recorder.name_handle(value[0], item.name, flags)
            expiry = None
            if value[4] is not None:
                db_id, default_ms, earliest, index = value[4]
                if sweeper.index is None:
                    sweeper.keep(index)  # committed: valid from now on
                    recorder.name_handle(index, None)
                expiry = Expiry(db_id, default_ms, sweeper)
                sweeper.register(value[0], expiry, earliest)
            source = self._source() if value[2] else None
            opened.append((True, (value[0], value[1], source, value[3], expiry)))
        return opened

    def _open_group_in(
        self, txn: Txn, group: list[_PendingOpen]
    ) -> tuple[Any, list[tuple[bool, Any]]]:
        """The group's opens in ``txn``: the metadata database's handle (None: none yet) and
        ``(True, (dbi, stored flags, versioned, large-values marker stored, expiring: its id,
        default ttl, earliest expiry and the index handle, or None))`` or ``(False, error)``
        per open."""
        env = self._lmdb
        meta = self._handles.meta
        results: list[tuple[bool, Any]] = []
        for item in group:
            try:
                if meta is None:
                    meta = self._handles.meta_in(txn)
                dbi, stored, meta, expires = self._open_in(env, txn, item, meta)
                large = meta is not None and txn.get(large_key(item.name), None, meta) is not None
            except (
                ValueError,
                lmdb.NotFoundError,
                lmdb.DbsFullError,
                lmdb.IncompatibleError,
            ) as exc:
                # Refused before LMDB changed anything: the others go on.
                results.append((False, exc))
            else:
                results.append((True, (dbi, stored, item.versioned, large, expires)))
        return meta, results

    def _open_in(
        self, env: lmdb.Environment, txn: Txn, item: _PendingOpen, meta: Any
    ) -> tuple[Any, dict[str, bool], Any, Any]:
        """Open ``item`` in ``txn``: its handle, the flags LMDB stored for it, the metadata
        database's handle (``meta``, or the one made for a new versioned or expiring
        database), and for an expiring database what ``Sweeper.open_in`` returns."""
        name, versioned, ttl_ms = item.name, item.versioned, item.ttl_ms
        label = name.decode("utf-8", "backslashreplace")
        marked = meta is not None and txn.get(marker_key(name), None, meta) is not None
        if marked != versioned:
            # An existing plain database asked for as versioned: never relabel its values.
            if marked or txn.get(name, None, self.main.dbi) is not None:
                raise _layout_error(label, marked)
        expires = _expiry.read_marker(txn, meta, name)
        if (expires is None) != (ttl_ms is None):
            # Nor read an expiring database's values without their expiry, or the reverse.
            if expires is not None or txn.get(name, None, self.main.dbi) is not None:
                raise _ttl_error(label, None if expires is None else expires[1], ttl_ms)
        if (versioned or ttl_ms is not None) and meta is None:
            meta = self._handles.meta_in(txn, create=True)
        dbi: Any = env.open_db(name, txn=txn, **item.flags)
        if versioned and not marked:
            txn.put(marker_key(name), MARKER, db=meta)
        found = None
        if ttl_ms is not None:
            found = self._sweeper.open_in(env, txn, meta, name, ttl_ms)
        return dbi, {k: True for k, v in dbi.flags(txn).items() if v}, meta, found

    def _marker(self, entry: DatabaseEntry) -> Callable[[Txn], None]:
        """``entry``'s ``LargeValues.mark``: store its large-values marker (writer thread, in
        the transaction of a large write). With the metadata database known, in that
        transaction (it commits with the value); else queued as a write of its own, once,
        which creates the metadata database (a handle must not be opened in a batch that
        may abort) -- but never for the default database, where the new database's name
        would appear among the user's keys. A marker whose value then aborts only costs
        buffered reads."""
        key = large_key(entry.name)
        handles = self._handles
        queued: list[bool] = []

        def mark(txn: Txn) -> None:
            meta = handles.meta
            if meta is not None:
                try:
                    present = txn.get(key, None, meta) is not None
                except lmdb.Error:
                    # A handle a reader thread opened after txn began is not txn's (LMDB
                    # refuses it, leaving txn usable): a write of its own, below.
                    present = None
                if present is not None:
                    if not present:
                        # The raw transaction: the change log records user databases only.
                        getattr(txn, "raw", txn).put(key, LARGE_MARK, db=meta)
                        self._recorder.add_flag(entry.dbi, "large_values")
                    return
            if queued or (meta is None and entry.name is None):
                return
            queued.append(True)
            try:
                self._engine.call_solo(self._store_marker, entry)
            except Exception:  # closing: the flag stays in memory, as for a read
                pass

        return mark

    def _store_marker(self, env: lmdb.Environment, entry: DatabaseEntry) -> None:
        """Writer thread, between batches: write ``entry``'s large-values marker in a
        transaction of its own, creating the metadata database if needed."""
        handles = self._handles
        key = large_key(entry.name)

        def work(txn: Txn, _: BeginChild) -> Any:
            meta = handles.meta_in(txn, create=True)
            if txn.get(key, None, meta) is None:
                txn.put(key, LARGE_MARK, db=meta)
            return meta

        meta = self._engine.run_write(work, logged=False, guard=self._lock)
        if handles.meta is None:
            handles.keep(meta=meta)  # committed: valid from now on
            self._recorder.name_handle(meta, None)
        entry.large.stored = True
        self._recorder.add_flag(entry.dbi, "large_values")

    def _main_marked(self) -> bool:
        """Whether the default database's large-values marker is stored (read before any
        operation, as ``open_main`` reads its flags); the handle opened here is not kept."""
        with self._lock:
            return stored_before_engine(self._lmdb, large_key(None))

    def _source(self) -> VersionSource:
        """The environment's version counter (the metadata database's handle is known)."""
        if self._versions is None:
            self._versions = VersionSource(self._handles)
        return self._versions

    async def wait_named(self, name: bytes) -> None:
        """Wait for a queued open of the database ``name`` in this process, if any (so a
        database opened just before is found; its failure is left to its own users)."""
        entry = self._entries.get(name)
        if entry is not None:
            await entry.wait_opened(self._engine)

    async def wait_all_opened(self) -> None:
        """Wait for every queued open (so a transaction's ``txn[db]`` finds them open)."""
        for entry in list(self._entries.values()):
            await entry.wait_opened(self._engine)

    async def delete(self, entry: DatabaseEntry) -> None:
        """Delete the named database of ``entry`` (open by now) in a transaction of its own.

        Deleting closes LMDB's handle at once, before the commit, so it cannot share a batch
        that might be run again (map growth, writemap).
        """
        engine = self._engine
        engine.check_writable()
        engine.check_not_holding("deleting a database")
        # Bound first: its delete_db change is handed to this loop (hooks, followers) even
        # when it is the environment's first write.
        engine.loop()
        await asyncio.wrap_future(engine.call_solo(self._delete, entry))
        if entry.name is not None and self._entries.get(entry.name) is entry:
            del self._entries[entry.name]

    def _delete(self, env: lmdb.Environment, entry: DatabaseEntry) -> None:
        """Writer thread, between batches: delete a named database in its own transaction
        (recording a drop when the change log is on), through the write runner.

        LMDB closes the handle at the drop, even if the transaction then aborts (a full map
        at the commit): a run again opens the database anew by its name, under the handle
        lock held meanwhile."""
        recorder = self._recorder
        handles: list[Any] = []

        def work(txn: Any, begin_child: BeginChild) -> None:
            if handles:
                dbi = env.open_db(entry.name, txn=txn, create=False)
                recorder.name_handle(dbi, entry.name, entry.record_flags())
            else:
                dbi = entry.dbi
            handles.append(dbi)
            if entry.versions is not None and entry.name is not None:
                txn.delete(marker_key(entry.name), db=self._handles.meta)
            if entry.expiry is not None and entry.name is not None:
                # A database made again under the name starts without expiring entries.
                getattr(txn, "raw", txn).delete(
                    _expiry.marker_key(entry.name), db=self._handles.meta
                )
                entry.expiry.clear(txn)
            if self._handles.meta is not None and entry.name is not None:
                # A database made again under the name starts without large values (the raw
                # transaction: the change log records user databases only).
                getattr(txn, "raw", txn).delete(large_key(entry.name), db=self._handles.meta)
            txn.drop(dbi, delete=True)

        try:
            self._engine.run_write(work, guard=self._lock)
        finally:
            for dbi in handles[1:]:
                recorder.forget(dbi)
        recorder.forget(entry.dbi)
        if entry.expiry is not None:
            self._sweeper.forget(entry.expiry.db_id)
        entry.dropped = True
        entry.dbi = None

    # ----------------------------------------------------------------- raw access
    # For a replica (aiolmdb.replication): its commits are applied as stored, and its
    # position read, through these two, which own the handle lock and the metadata handle.
    async def write_raw(self, work: Callable[[lmdb.Environment, Txn, Any], R]) -> R:
        """Run ``work(env, txn, meta)`` in a write transaction of its own on the writer thread
        (not recorded, and allowed under a write guard), the metadata database created in it
        if needed; returns its result once committed."""
        handles = self._handles
        env = self._lmdb

        def solo(_: lmdb.Environment) -> R:
            def run(txn: Txn, __: BeginChild) -> tuple[Any, R]:
                meta = handles.meta_in(txn, create=True)
                return meta, work(env, txn, meta)

            meta, result = self._engine.run_write(run, logged=False, guard=self._lock)
            if handles.meta is None:
                handles.keep(meta=meta)  # committed: valid from now on
                self._recorder.name_handle(meta, None)
            return result

        return await asyncio.wrap_future(self._engine.call_solo(solo))

    async def read_raw(self, work: Callable[[Txn, Any], R]) -> R:
        """Run ``work(txn, meta)`` in a read transaction on a reader thread (``meta`` None
        when the environment has no metadata database)."""
        handles = self._handles
        begin = self._engine.begin_in_gate  # the read gate's policy (a resize, a full table)

        def job() -> R:
            meta = handles.existing_meta(begin)
            txn = begin()
            try:
                return work(txn, meta)
            finally:
                txn.abort()
                del txn

        return await self._engine.run_blocking(job)

    async def empty_default(self, entry: DatabaseEntry) -> None:
        """Empty the default database (``entry``): its own keys go, the records LMDB keeps
        there for the named databases stay. LMDB's drop of the main database would delete
        those too, and with them every named database, aiolmdb's own included."""
        engine = self._engine
        engine.check_open()
        engine.check_not_holding("emptying the default database")
        engine.loop()  # bound first, as for delete: the deletes reach this loop's hooks
        await asyncio.wrap_future(engine.call_solo(self._empty_default, entry))

    def _empty_default(self, env: lmdb.Environment, entry: DatabaseEntry) -> None:
        """Writer thread, between batches: delete the default database's plain keys, one by
        one (the change log records each delete), under the handle lock (telling a named
        database's record from a plain key opens its handle)."""

        def work(txn: Any, begin_child: BeginChild) -> None:
            raw = getattr(txn, "raw", txn)
            main = entry.dbi
            cursor = raw.cursor(main)
            try:
                plain = [
                    bytes(key)
                    for key, value in cursor.iternext_nodup(keys=True, values=True)
                    if not _names_a_database(env, raw, key, value)
                ]
            finally:
                cursor.close()
            for key in plain:
                txn.delete(key, db=main)

        self._engine.run_write(work, guard=self._lock)

    async def databases(self, include_internal: bool = False) -> list[DatabaseInfo]:
        """The default database first, then every named database, in key order (aiolmdb's
        own only with ``include_internal``)."""
        return await self._engine.run_blocking(self._list, None, include_internal)

    async def info(self, name: bytes) -> DatabaseInfo | None:
        """The named database ``name``, or None if there is none; ValueError if ``name`` is
        a plain key of the default database."""
        found = await self._engine.run_blocking(self._list, name, True)
        return found[0] if found else None

    def _list(self, only: bytes | None, include_internal: bool) -> list[DatabaseInfo]:
        """Reader thread, in one read transaction: the default database and the named ones
        (keys of the default database that LMDB opens as databases), or just ``only``."""
        env = self._lmdb
        # The read transaction lives under the handle lock: LMDB lets a transaction open a
        # handle only if no other was opened since it began, and aborting it frees the
        # handles it opened, which another thread opening the same name would share.
        while True:
            with self._lock:
                try:
                    txn = env.begin()
                except (lmdb.ReadersFullError, lmdb.MapResizedError):
                    pass  # wait below, without the lock (the writer may need it to resize)
                else:
                    try:
                        return self._list_in(env, txn, only, include_internal)
                    finally:
                        txn.abort()
                        del txn  # py-lmdb frees the reader slot only with the Transaction
            self._engine.begin_in_gate().abort()

    def _list_in(
        self, env: lmdb.Environment, txn: Txn, only: bytes | None, include_internal: bool
    ) -> list[DatabaseInfo]:
        marked = self._versioned_names(env, txn)
        ttls = _expiry.marked_names(txn, self._handles.meta_in(txn))
        if only is not None:
            try:
                handle = env.open_db(only, txn=txn, create=False)
                return [_info(txn, only, handle, only in marked, ttls.get(only))]
            except lmdb.NotFoundError:
                return []
            except lmdb.IncompatibleError:
                raise ValueError(
                    f"{only!r} is a key of the default database, not a database"
                ) from None
        return _list_all(env, txn, marked, ttls, include_internal)

    def _versioned_names(self, env: lmdb.Environment, txn: Txn) -> set[bytes]:
        """The names the metadata database marks as versioned databases."""
        meta = self._handles.meta_in(txn)
        if meta is None:
            return set()
        names: set[bytes] = set()
        cursor = txn.cursor(meta)
        try:
            prefix = marker_key(b"")
            if cursor.set_range(prefix):
                for key in cursor.iternext(keys=True, values=False):
                    if not key.startswith(prefix):
                        break
                    names.add(bytes(key[len(prefix) :]))
        finally:
            cursor.close()
        return names


def is_database(txn: Txn, name: bytes) -> bool:
    """Whether the default database holds ``name`` as a named database's record (a read, no
    handle opened)."""
    value = txn.get(name)
    return value is not None and len(value) == _DB_RECORD_SIZE and b"\0" not in name


def _names_a_database(env: lmdb.Environment, txn: Txn, key: bytes, value: bytes) -> bool:
    """Whether the default database's ``key`` is a named database's record, not a plain key
    (opening it is the one sure test; a failed open leaves the transaction usable)."""
    if len(value) != _DB_RECORD_SIZE or b"\0" in key:
        return False
    try:
        env.open_db(bytes(key), txn=txn, create=False)
    except lmdb.Error:
        return False
    return True


def _list_all(
    env: lmdb.Environment,
    txn: Txn,
    marked: set[bytes],
    ttls: dict[bytes, int],
    include_internal: bool,
) -> list[DatabaseInfo]:
    main = env.open_db(None, txn=txn)
    infos = [_info(txn, None, main, False, None)]
    cursor = txn.cursor(main)
    records = 0  # the named databases' records in the default database, aiolmdb's included
    try:
        for key, value in cursor.iternext_nodup(keys=True, values=True):
            if len(value) != _DB_RECORD_SIZE or b"\0" in key:
                continue  # a plain key (LMDB names are C strings, with a fixed-size record)
            try:
                handle = env.open_db(bytes(key), txn=txn, create=False)
            except lmdb.DbsFullError:
                raise lmdb.DbsFullError(
                    "the environment has more named databases than its max_dbs allows open: "
                    "open it with a larger max_dbs to list them"
                ) from None
            except lmdb.Error:
                continue  # a plain key, not a database
            records += 1
            if include_internal or not key.startswith(INTERNAL_PREFIX):
                infos.append(
                    _info(txn, bytes(key), handle, bytes(key) in marked, ttls.get(bytes(key)))
                )
    finally:
        cursor.close()
    # The default database's entries are the user's keys; its stat stays LMDB's own count.
    infos[0] = replace(infos[0], entries=infos[0].entries - records)
    return infos


def _info(
    txn: Txn, key: bytes | None, handle: Any, versioned: bool, ttl_ms: int | None
) -> DatabaseInfo:
    stat = {name: cast(int, value) for name, value in txn.stat(handle).items()}
    flags = {name for name, on in handle.flags(txn).items() if on}
    if versioned:
        flags.add("versioned")
    ttl = None if ttl_ms is None else ttl_ms / 1000
    return DatabaseInfo(key, frozenset(flags), stat["entries"], stat, ttl)


def _layout_error(label: str | None, versioned: bool) -> ValueError:
    """Opening a database with the wrong ``versioned`` flag."""
    if versioned:
        return ValueError(
            f"database {label!r} is versioned (its values carry versions): "
            "open it with versioned=True"
        )
    return ValueError(
        f"database {label!r} exists and is not versioned: a database is versioned from its "
        "creation; open it without versioned=True (or copy its entries into a new one)"
    )


def _ttl_error(
    label: str | None, stored_ms: int | None, asked_ms: int | None, how: str = "exists"
) -> ValueError:
    """Opening a database with the wrong ``ttl`` setting."""
    if stored_ms is None:
        return ValueError(
            f"database {label!r} {how} and does not expire: a database expires from its "
            "creation; open it without ttl= (or copy its entries into a new one)"
        )
    if asked_ms is None:
        return ValueError(
            f"database {label!r} expires (its values carry an expiry; default ttl "
            f"{stored_ms / 1000:g} s): open it with ttl=seconds"
        )
    return ValueError(
        f"database {label!r} {how} with ttl={stored_ms / 1000:g}; open it with that ttl "
        f"(not {asked_ms / 1000:g}) in this environment"
    )


def open_main(env: lmdb.Environment) -> tuple[Any, dict[str, bool]]:
    """The default database's handle and stored flags (py-lmdb reads them in a read
    transaction): before the engine starts, so the catalogue's construction cannot fail."""
    dbi = before_engine(env, env.open_db)
    return dbi, _stored_flags(env, dbi)


def _stored_flags(env: lmdb.Environment, dbi: Any) -> dict[str, bool]:
    with env.begin() as txn:
        return {k: True for k, v in dbi.flags(txn).items() if v}
