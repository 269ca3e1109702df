"""Following the change log: :class:`ChangeFeed`, what ``env.changes()`` returns.

The feed reads the log in chunks on the reader threads (one read transaction per chunk, held
only while the chunk is read), so a slow follower holds no transaction and loses nothing: it
reads the log, not a buffer in memory. Caught up, it waits for the next commit of this process
(the recorder wakes it from the loop) or, at most ``POLL_INTERVAL`` later, asks on a reader
thread whether LMDB's last transaction id moved (another process committed) before reading
again. Nothing polls when nobody follows.

The first read checks the position: ``since`` beyond the log's last sequence number, or a
``log_id`` that is not this log's, raises :class:`~aiolmdb.errors.ChangesPositionError` (a
restored environment, or another environment's position) rather than skip changes silently.

Closing the environment ends the iteration (``StopAsyncIteration``): the changes already read
are yielded first. Cancelling a follower leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ChangesPositionError, ChangesTrimmedError, ClosedError
from .records import Change, last_seq, log_id, read_log

if TYPE_CHECKING:
    from .._engine.engine import Engine
    from ..database import AsyncDatabase
    from .ops import DbContext
    from .recorder import Recorder

__all__ = ["POLL_INTERVAL", "ChangeFeed", "read_log_id"]

POLL_INTERVAL = 0.05
"""How often (seconds) a caught-up follower checks for commits of other processes."""
CHUNK = 256
"""The most log records one read transaction scans."""


class ChangeFeed:
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
    ) -> None:
        self._engine = engine
        self._follow = follow
        self._recorder = recorder
        self._after = since
        self._db = db
        self._database = database
        self._context: DbContext[Any, Any] | None = None
        self._prefix = prefix
        self._buffer: collections.deque[Change] = collections.deque()
        self._seen_txnid: int | None = None
        self._expected_id = expected_id
        # Set by the first read, which checks the position (reader thread, before its result
        # reaches the loop).
        self._checked = False
        self._log_id: str | None = None

    @property
    def last_seq(self) -> int | None:
        """The sequence number of the last change scanned (None before the first read of a
        feed started with ``since=None``)."""
        return self._after

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
        if self._after is None:
            found = await self._engine.run_blocking(self._read, None, None)
            assert found is not None
            self._after = found[1]
        elif not self._checked:
            await self._engine.run_blocking(self._check_only, self._after)
        return self._after

    def __aiter__(self) -> ChangeFeed:
        return self

    async def __anext__(self) -> Change:
        buffer = self._buffer
        while not buffer:
            if not await self._fill():
                raise StopAsyncIteration
        return buffer.popleft()

    async def _fill(self) -> bool:
        """Read until some change arrives; False once the environment is closed."""
        engine, recorder = self._engine, self._recorder
        await recorder.ready()
        if self._database is not None and self._context is None:
            self._context = await self._database._context()
        force = True
        while not engine.closed:
            commits = recorder.commits
            before = self._after
            try:
                found = await engine.run_blocking(
                    self._read, self._after, None if force else self._seen_txnid
                )
            except ClosedError:
                return False
            if found is not None:
                changes, self._after = found
                if changes:
                    self._buffer.extend(changes)
                    return True
                if self._after != before:
                    continue  # only changes filtered out: there may be more
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

    def _read(self, after: int | None, seen_txnid: int | None) -> tuple[list[Change], int] | None:
        """Reader thread: the changes after ``after`` (None: none yet, start at the newest),
        or None if LMDB's last transaction id is still ``seen_txnid``."""
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
                result: tuple[list[Change], int] = ([], last_seq(txn, log_db, meta))
            else:
                changes, last, trimmed = read_log(
                    txn, log_db, meta, after, CHUNK, self._db, self._prefix
                )
                if after < trimmed:
                    raise ChangesTrimmedError(
                        f"changes after {after} were trimmed by the log's retention; the "
                        f"oldest kept is {trimmed + 1}: resume from changes(since={trimmed}) "
                        "after rebuilding what the lost changes fed",
                        trimmed + 1,
                    )
                result = (self._decode(changes), last)
        finally:
            txn.abort()
            del txn
        self._seen_txnid = txnid
        return result

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
        self._log_id = found
        self._checked = True

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
