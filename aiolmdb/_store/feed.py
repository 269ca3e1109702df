"""Following the change log: :class:`ChangeFeed` (``env.changes()``: one change at a time) and
:class:`CommitFeed` (``env.commits()``: whole commits).

The feed reads the log in chunks on the reader threads (one read transaction per chunk, held
only while the chunk is read), so a slow follower holds no transaction and loses nothing: it
reads the log, not a buffer in memory. Caught up, it waits for the next commit of this process
(the recorder wakes it from the loop) or, at most ``POLL_INTERVAL`` later, asks on a reader
thread whether LMDB's last transaction id moved (another process committed) before reading
again. Nothing polls when nobody follows.

The first read checks the position: ``since`` beyond the log's last sequence number, or a
``log_id`` that is not this log's, raises :class:`~aiolmdb.errors.ChangesPositionError` (a
restored environment, or another environment's position) rather than skip changes silently.

A commit feed groups the records by the commit each names (``records``): it yields a commit once
it has read its last record, which it knows when the next record names another commit or the
read reached the log's end (a commit's records become visible all at once). So a commit larger
than one chunk is read over several reads, and held in memory until whole.

Closing the environment ends the iteration (``StopAsyncIteration``): the changes already read
are yielded first. Cancelling a follower leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from ..errors import ChangeRecordError, ChangesPositionError, ChangesTrimmedError, ClosedError
from .catalogue import is_database
from .records import (
    Change,
    Commit,
    Record,
    group,
    last_seq,
    log_id,
    read_log,
    read_records,
    same_commit,
)

if TYPE_CHECKING:
    from .._engine.engine import Engine
    from ..database import AsyncDatabase
    from .ops import DbContext
    from .recorder import Recorder

__all__ = ["POLL_INTERVAL", "ChangeFeed", "CommitFeed", "read_last_seq", "read_log_id"]

POLL_INTERVAL = 0.05
"""How often (seconds) a caught-up follower checks for commits of other processes."""
CHUNK = 256
"""The most log records one read transaction scans."""

T = TypeVar("T")


class _Feed(Generic[T]):
    """What both feeds share: the position and its check, reading chunks on reader threads,
    waiting for commits. A subclass reads one chunk (:meth:`_chunk`)."""

    def __init__(
        self,
        engine: Engine,
        recorder: Recorder,
        since: int | None,
        follow: bool,
        expected_id: str | None,
    ) -> None:
        self._engine = engine
        self._follow = follow
        self._recorder = recorder
        # The last sequence number read (the next read starts after it), and the one
        # last_seq reports.
        self._scan = since
        self._after = since
        self._buffer: collections.deque[T] = collections.deque()
        self._seen_txnid: int | None = None
        self._expected_id = expected_id
        # Set by the first read, which checks the position (reader thread, before its result
        # reaches the loop).
        self._checked = False
        self._log_id: str | None = None

    @property
    def log_id(self) -> str | None:
        """The identity (hex) of the log this feed reads, known from its first read (or
        :meth:`start`); None before, or for a log created before aiolmdb gave logs one and
        not opened for writing since."""
        return self._log_id

    async def start(self) -> int:
        """Fix where the feed starts now rather than at the first iteration (with
        ``since=None``: after the newest change at this moment) and check the position;
        returns that sequence number. Changes committed after it returns are sure to be
        yielded."""
        await self._recorder.ready()
        await self._prepare()
        if self._scan is None:
            found = await self._engine.run_blocking(self._read, None, None)
            assert found is not None
            self._scan = self._after = found[1]
        elif not self._checked:
            await self._engine.run_blocking(self._check_only, self._scan)
        return self._scan

    async def _prepare(self) -> None:
        """Loop, before the first read: what the feed needs first."""

    async def __anext__(self) -> T:
        buffer = self._buffer
        while not buffer:
            if not await self._fill():
                raise StopAsyncIteration
        return buffer.popleft()

    async def _fill(self) -> bool:
        """Read until something arrives; False once the environment is closed."""
        engine, recorder = self._engine, self._recorder
        await recorder.ready()
        await self._prepare()
        force = True
        while not engine.closed:
            commits = recorder.commits
            before = self._scan
            try:
                found = await engine.run_blocking(
                    self._read, self._scan, None if force else self._seen_txnid
                )
            except ClosedError:
                return False
            if found is not None:
                items, self._scan = found
                if items:
                    self._buffer.extend(items)
                    return True
                if self._scan != before:
                    continue  # only changes filtered out, or a commit not whole yet: read on
            if not self._follow:
                return False
            # Caught up: wait for a commit of this process, or poll for other processes'.
            force = recorder.commits != commits
            if force:
                continue
            waiter = recorder.waiter(engine.loop())
            done, _ = await asyncio.wait((waiter,), timeout=POLL_INTERVAL)
            force = bool(done)
        return False

    def _read(self, after: int | None, seen_txnid: int | None) -> tuple[list[T], int] | None:
        """Reader thread: what follows ``after`` (None: nothing yet, start at the newest) and
        the last sequence number read, or None if LMDB's last transaction id is still
        ``seen_txnid``."""
        engine = self._engine
        txnid = int(engine.env.info()["last_txnid"])
        if seen_txnid is not None and txnid == seen_txnid:
            return None
        log_db, meta = _handles(engine, self._recorder)
        txn = engine.begin_in_gate()
        try:
            if not self._checked:
                self._check(txn, log_db, meta, after)
            if after is None:
                result: tuple[list[T], int] = ([], last_seq(txn, log_db, meta))
            else:
                result = self._chunk(txn, log_db, meta, after)
        finally:
            txn.abort()
            del txn
        self._seen_txnid = txnid
        return result

    def _chunk(self, txn: Any, log_db: Any, meta: Any, after: int) -> tuple[list[T], int]:
        """Reader thread: one chunk after ``after`` and the last sequence number read."""
        raise NotImplementedError

    def _check_only(self, after: int) -> None:
        """Reader thread: :meth:`_check` in a read transaction of its own."""
        engine = self._engine
        log_db, meta = _handles(engine, self._recorder)
        txn = engine.begin_in_gate()
        try:
            self._check(txn, log_db, meta, after)
        finally:
            txn.abort()
            del txn

    def _check(self, txn: Any, log_db: Any, meta: Any, after: int | None) -> None:
        """Reader thread, the feed's first read: learn the log's identity; refuse a position
        beyond the log's end or from another log, whose changes would be skipped silently."""
        found = log_id(txn, meta)
        last = last_seq(txn, log_db, meta)
        expected = self._expected_id
        if expected is not None and found != expected:
            raise ChangesPositionError(
                f"changes(since={after}, log_id={expected!r}) is a position in another change "
                f"log: this environment's log is {found!r}, with last sequence number {last} "
                "(the environment was replaced, or the position belongs to another "
                "environment); rebuild what the follower fed, then follow from "
                "changes(since=0)",
                last,
                found,
            )
        if after is not None and after > last:
            raise ChangesPositionError(
                f"changes(since={after}) is beyond the end of the change log, whose last "
                f"sequence number is {last} (log {found!r}): the environment was restored from "
                "an older backup, or the position belongs to another environment; the changes "
                "the follower saw after that are not in this log: rebuild what it fed, then "
                "follow from changes(since=0)",
                last,
                found,
            )
        self._check_more(txn)
        self._log_id = found
        self._checked = True

    def _check_more(self, txn: Any) -> None:
        """Reader thread, the first read: a subclass's own check."""


def _trimmed(after: int, trimmed: int) -> ChangesTrimmedError:
    return ChangesTrimmedError(
        f"changes after {after} were trimmed by the log's retention; the oldest kept is "
        f"{trimmed + 1}: resume from changes(since={trimmed}) after rebuilding what the lost "
        "changes fed",
        trimmed + 1,
    )


class ChangeFeed(_Feed[Change]):
    """An async iterator of :class:`~aiolmdb.Change`, in commit order (``env.changes()``).

    ``last_seq`` is the sequence number of the last change it has scanned (also of changes
    filtered out by ``db=``/``prefix=``): store it with ``log_id`` to resume with
    ``changes(since=last_seq, log_id=log_id)``.
    """

    def __init__(
        self,
        engine: Engine,
        recorder: Recorder,
        since: int | None,
        db: str | Literal[False] | None,
        database: AsyncDatabase[Any, Any] | None,
        prefix: bytes | None,
        follow: bool = True,
        expected_id: str | None = None,
        db_key: bytes | None = None,
        opened: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(engine, recorder, since, follow, expected_id)
        self._db = db
        self._db_key = db_key  # db= a name: as stored
        self._opened = opened  # waits for a queued open of that name in this process
        self._database = database
        self._context: DbContext[Any, Any] | None = None
        self._prefix = prefix

    @property
    def last_seq(self) -> int | None:
        """The sequence number of the last change scanned (None before the first read of a
        feed started with ``since=None``)."""
        return self._scan

    def __aiter__(self) -> ChangeFeed:
        return self

    async def __anext__(self) -> Change:
        """The next change (waiting for one while following)."""
        return await super().__anext__()

    async def _prepare(self) -> None:
        if self._opened is not None:
            await self._opened()
            self._opened = None
        if self._database is not None and self._context is None:
            self._context = await self._database._context()

    def _check_more(self, txn: Any) -> None:
        """``db=`` a name: that database must exist (a typo would follow nothing, forever)."""
        name, key = self._db, self._db_key
        if self._database is None and key is not None:
            if not is_database(txn, key):
                raise ValueError(
                    f"changes(db={name!r}): the environment has no database named {name!r}: "
                    f"create it first (env.open_db({name!r})), or follow every database "
                    "(changes() without db=) and keep the changes whose .db is that name"
                )

    def _chunk(self, txn: Any, log_db: Any, meta: Any, after: int) -> tuple[list[Change], int]:
        changes, last, trimmed = read_log(txn, log_db, meta, after, CHUNK, self._db, self._prefix)
        if after < trimmed:
            raise _trimmed(after, trimmed)
        return self._decode(changes), last

    def _decode(self, changes: list[Change]) -> list[Change]:
        """Keys and values decoded by the coders of the database given as ``db=``."""
        ctx = self._context
        if ctx is None:
            return changes
        kc, vc = ctx.kc, ctx.vc
        out = []
        for change in changes:
            key = None if change.key is None else kc.deserialize(change.key)
            value = change.value
            if value is not None:
                try:
                    value = vc.deserialize(value)
                except ValueError as exc:
                    raise ValueError(
                        f"the value of change {change.seq} (key {key!r}) cannot be decoded: {exc}"
                    ) from exc
            out.append(change._replace(key=key, value=value))
        return out


class CommitFeed(_Feed[Commit]):
    """An async iterator of :class:`~aiolmdb.Commit`: whole commits, in order
    (``env.commits()``).

    ``last_seq`` is the last sequence number of the last commit yielded (a commit boundary):
    store it with ``log_id`` to resume with ``commits(since=last_seq, log_id=log_id)``.
    """

    def __init__(
        self,
        engine: Engine,
        recorder: Recorder,
        since: int | None,
        follow: bool = True,
        expected_id: str | None = None,
    ) -> None:
        super().__init__(engine, recorder, since, follow, expected_id)
        # Reader threads, one read at a time: the records of a commit not read whole yet.
        self._pending: list[Record] = []
        self._read_any = False  # whether a record was read: only the first may be partial

    @property
    def last_seq(self) -> int | None:
        """The last sequence number of the last commit yielded (before any: where the feed
        started; None before the first read of a feed started with ``since=None``)."""
        return self._after

    def __aiter__(self) -> CommitFeed:
        return self

    async def __anext__(self) -> Commit:
        """The next whole commit (waiting for one while following)."""
        commit = await super().__anext__()
        self._after = commit.last
        return commit

    async def start(self) -> int:
        """Fix where the feed starts now rather than at the first iteration (with
        ``since=None``: after the newest commit at this moment) and check the position;
        returns that sequence number. Commits made after it returns are sure to be yielded."""
        return await super().start()

    def _chunk(self, txn: Any, log_db: Any, meta: Any, after: int) -> tuple[list[Commit], int]:
        records, trimmed, at_end = read_records(txn, log_db, meta, after, CHUNK)
        if after < trimmed:
            raise _trimmed(after, trimmed)
        pending = self._pending
        out: list[Commit] = []
        for record in records:
            if pending and not same_commit(pending[-1], record):
                out.append(_whole(pending))
                pending = []
            if (
                not pending
                and self._read_any
                and record.first is not None
                and record.first != record.change.seq
            ):
                # Only the first commit read may lack its start (trimmed, or since= inside it).
                self._pending = []
                if out:
                    return out, out[-1].last  # the commits before it first
                raise _misplaced(record)
            self._read_any = True
            pending.append(record)
        if at_end and pending:
            out.append(_whole(pending))
            pending = []
        self._pending = pending
        last = records[-1].change.seq if records else after
        assert last is not None
        return out, last


def _whole(records: list[Record]) -> Commit:
    head = records[0]
    return group(records, head.first is not None and head.first != head.change.seq)


def _misplaced(record: Record) -> ChangeRecordError:
    seq = record.change.seq
    assert seq is not None
    return ChangeRecordError(
        f"change log record {seq} is damaged: it says its commit began at {record.first}, "
        f"yet the record before it ended another commit; restore the environment from a "
        f"backup, or skip that commit knowingly with commits(since={seq})",
        seq,
    )


def _handles(engine: Engine, recorder: Recorder) -> tuple[Any, Any]:
    """Reader thread: the log's and the metadata database's handles; ValueError without a
    log."""
    log_db, meta = recorder.handles(engine.begin_in_gate)
    if log_db is None:
        raise ValueError(
            f"environment {engine.env.path()!r} has no change log: open it with "
            "aiolmdb.open(path, changelog=True) to record one"
        )
    return log_db, meta


async def read_last_seq(engine: Engine, recorder: Recorder) -> int:
    """The log's last sequence number (``env.last_seq()``; 0: none yet); ValueError without a
    log."""
    await recorder.ready()

    def read() -> int:
        log_db, meta = _handles(engine, recorder)
        txn = engine.begin_in_gate()
        try:
            return last_seq(txn, log_db, meta)
        finally:
            txn.abort()
            del txn

    return await engine.run_blocking(read)


async def read_log_id(engine: Engine, recorder: Recorder) -> str | None:
    """The identity (hex) of the environment's change log (``env.changelog_id()``); None
    for a log created before identities and not opened for writing with the log since."""
    await recorder.ready()

    def read() -> str | None:
        _, meta = _handles(engine, recorder)
        txn = engine.begin_in_gate()
        try:
            return log_id(txn, meta)
        finally:
            txn.abort()
            del txn

    return await engine.run_blocking(read)
