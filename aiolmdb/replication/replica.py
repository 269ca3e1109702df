"""The replica's side: :class:`Replica` follows a stream and applies the leader's commits.

Each message (or a commit's pieces, gathered until the last) is checked whole before anything
is applied: its headers, its format and checksum, that it comes from the leader's log (or from
a log that says it follows it: a promoted replica), and that its first change sequence is the
one after the last applied. A message that fails stops the replica with
:class:`~aiolmdb.errors.InvalidMessageError` naming its stream sequence; nothing of it is
applied. A commit is applied in one write transaction with the replica's position.

Bootstrap: a replica without a position, or whose position the stream no longer reaches
(retention removed the messages after it), restores the stream's latest snapshot (the Object
Store), in :meth:`Replica.start`, before ``rep.env`` is opened; a replica started before its
leader waits there for the stream (and its first snapshot) to appear. The snapshot is the one
of the log the stream's last message comes from; while the stream is empty (the leader's
publisher started, nothing written yet), the bucket's snapshot if it holds only one (with
several, e.g. a fenced leader's beside its successor's, the replica waits for the stream's
next message: it names the leader).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import time
from collections.abc import Mapping
from typing import Any

from .._store.replicated import Position, apply_commit, prepare_restored, promote_in, read_position
from ..environment import Environment
from ..environment import open as open_environment
from ..errors import InvalidMessageError, ReadOnlyError, ReplicationError
from . import wire
from ._connect import bucket_of, cancel_and_wait, connect, subject_of
from .publisher import check_stream_name, snapshot_name

__all__ = ["Replica", "replica_status", "stream_status"]

_STREAM_WAIT = 0.25  # how often a replica started before its leader looks for the stream
_STATUS_INTERVAL = 1.0  # how often the replica reads the stream's end (lag metrics)
_PENDING_BYTES = 1 << 30
_STOP: Any = object()  # put in the inbox to end the applier
_INBOX = 1024  # messages received and not yet taken by the applier
_BATCH_COMMITS = 256  # the most leader commits applied in one write transaction
_BATCH_BYTES = 16 << 20  # ... and about the most bytes
_IDLE_HEARTBEAT = 1.0  # seconds between the server's heartbeats on an idle subscription


class Replica:
    """A read-only copy of a leader's environment at ``path``, kept up to date from the
    JetStream stream ``stream`` (``async with Replica(path, servers=..., stream=...) as rep``).

    ``rep.env`` is an :class:`~aiolmdb.Environment` for reads: writes raise
    :class:`~aiolmdb.ReadOnlyError`. ``env_options`` go to :func:`aiolmdb.open` (not
    ``changelog``: a replica records nothing); other keyword arguments to ``nats.connect``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        servers: str | list[str],
        stream: str,
        env_options: Mapping[str, Any] | None = None,
        **connect_options: Any,
    ) -> None:
        self._path = os.fspath(path)
        self._servers = servers
        self._stream = check_stream_name(stream)
        self._subject = subject_of(stream)
        options = dict(env_options or {})
        if options.get("changelog"):
            raise ValueError("a replica records no change log: leave changelog out of env_options")
        self._env_options = options
        self._options = connect_options
        self._env: Environment | None = None
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._status_task: asyncio.Task[None] | None = None
        self._position: Position | None = None
        self._handles: dict[bytes | None, Any] = {}
        self._progress = asyncio.Event()
        self._error: BaseException | None = None
        self._stream_last = 0  # the last change sequence the stream holds (lag)
        self._stream_last_seq = 0  # the stream's last message sequence
        self._promoted = False
        self._inbox: asyncio.Queue[Any] = asyncio.Queue(_INBOX)

    # ----------------------------------------------------------------- public
    @property
    def env(self) -> Environment:
        """The replica's environment, for reads (started replicas only)."""
        if self._env is None:
            raise ReplicationError(f"the Replica of stream {self._stream!r} is not started")
        return self._env

    @property
    def applied(self) -> int:
        """The leader's last change sequence applied here (0: none)."""
        return 0 if self._position is None else self._position.seq

    @property
    def error(self) -> BaseException | None:
        """Why the replica stopped following, or None."""
        return self._error

    async def start(self) -> None:
        """Connect, bootstrap from the latest snapshot if needed (waiting for the stream to
        appear), open ``env`` and start applying."""
        self._nc = await connect(self._servers, self._options)
        try:
            self._js = self._nc.jetstream()
            await self._wait_for_stream()
            await self._open()
            position = self._position
            if position is None or not await self._stream_reaches(position):
                await self._bootstrap()
        except BaseException:
            await self._close_parts()
            raise
        env = self.env
        env._set_replication_metrics(self._metrics)
        self._task = asyncio.create_task(self._follow(), name=f"aiolmdb-replica:{self._stream}")
        self._status_task = asyncio.create_task(self._watch_stream())

    async def close(self) -> None:
        """Stop following and close ``env``."""
        await self._close_parts()

    async def __aenter__(self) -> Replica:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def wait_for(self, seq: int, timeout: float | None = None) -> None:
        """Wait until the leader's change ``seq`` (``pub.sync()``'s result) is applied here.
        Raises the replica's error if it stopped, TimeoutError after ``timeout`` seconds."""
        await asyncio.wait_for(self._wait_until(lambda: self.applied >= seq), timeout)

    async def caught_up(self, timeout: float | None = None) -> int:
        """Wait until every message the stream holds now is applied; returns ``applied``."""
        info = await self._js.stream_info(self._stream)
        last = int(info.state.last_seq)

        def done() -> bool:
            position = self._position
            return position is not None and position.stream_seq >= last

        await asyncio.wait_for(self._wait_until(done), timeout)
        return self.applied

    async def promote(self, timeout: float | None = None) -> Environment:
        """Make this caught-up replica a leader: stop following, close ``env`` and return the
        environment reopened writable with a change log that continues the leader's sequence
        numbers (start a :class:`Publisher` on it to take the stream over; close it when
        done). Raises ReplicationError if the replica cannot catch up within ``timeout``."""
        try:
            await self.caught_up(timeout)
        except asyncio.TimeoutError:  # TimeoutError's alias from Python 3.11 on
            raise ReplicationError(
                f"replica of stream {self._stream!r} at {self._path!r} did not catch up "
                f"within {timeout} s (applied {self.applied}): promote it once it has"
            ) from None
        await self._stop_following()
        await self.env._write_raw(lambda _env, txn, meta: promote_in(txn, meta))
        await self._close_parts()
        self._promoted = True
        return open_environment(self._path, changelog=True, **self._env_options)

    # ----------------------------------------------------------------- internals
    async def _wait_until(self, done: Any) -> None:
        while not done():
            if self._error is not None:
                raise self._error
            if self._task is None or self._task.done():
                raise ReplicationError(f"the Replica of stream {self._stream!r} is not running")
            await self._progress.wait()

    def _wake(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    def _metrics(self) -> Mapping[str, float]:
        position = self._position
        applied = 0 if position is None else position.seq
        lag = max(self._stream_last - applied, 0)
        seconds = 0.0
        if lag and position is not None:
            seconds = max(time.time() - position.time_us / 1e6, 0.0)
        return {
            "applied_seq": float(applied),
            "stream_leader_seq": float(self._stream_last),
            "lag_changes": float(lag),
            "lag_seconds": seconds,
        }

    async def _close_parts(self) -> None:
        await self._stop_following()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None
        if self._env is not None:
            env, self._env = self._env, None
            await env.close()
        self._wake()

    async def _stop_following(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._inbox.put_nowait(_STOP)  # ends the applier if a cancellation is lost
        await cancel_and_wait(self._task, self._status_task)
        self._task = self._status_task = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _open(self) -> None:
        env = open_environment(self._path, **self._env_options)
        stream = self._stream
        env._guard_writes(
            lambda: ReadOnlyError(
                f"this environment is a replica of stream {stream!r}: it takes no writes; "
                "the leader takes writes (write there, then rep.wait_for(pub.sync()))"
            )
        )
        self._env = env
        self._position = await env._read_raw(read_position)
        if self._position is not None and self._position.stream != stream:
            raise ReplicationError(
                f"{self._path!r} replicates stream {self._position.stream!r}, not {stream!r}"
            )

    async def _wait_for_stream(self) -> None:
        from nats.js.errors import NotFoundError

        while True:
            try:
                await self._js.stream_info(self._stream)
                return
            except NotFoundError:
                await asyncio.sleep(_STREAM_WAIT)

    async def _stream_reaches(self, position: Position) -> bool:
        """Whether the stream still holds the messages after ``position``."""
        info = await self._js.stream_info(self._stream)
        return int(info.state.first_seq) <= position.stream_seq + 1

    async def _bootstrap(self) -> None:
        """Replace the environment with the latest snapshot (waiting for one)."""
        from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError

        while True:
            # The snapshot of the log the stream ends with (its leader's), or with an empty
            # stream the only one: once the stream exists and a leader stored its snapshot.
            try:
                owner = await _stream_owner(self._js, self._stream)
                if owner is not None:
                    store = await self._js.object_store(bucket_of(self._stream))
                    info = await store.get_info(snapshot_name(owner))
                    break
            except (BucketNotFoundError, ObjectNotFoundError, NotFoundError):
                pass
            await asyncio.sleep(_STREAM_WAIT)
        meta = json.loads(info.description or "{}")
        position = Position(
            self._stream,
            str(meta["log_id"]),
            int(meta["seq"]),
            int(meta["time_us"]),
            int(meta["stream_seq"]),
        )
        if self._env is not None:
            env, self._env = self._env, None
            await env.close()
        os.makedirs(self._path, exist_ok=True)
        target = os.path.join(self._path, "data.mdb")
        partial = target + ".restoring"
        out = await asyncio.to_thread(open, partial, "wb")
        try:
            await store.get(snapshot_name(owner), writeinto=out)
            await asyncio.to_thread(out.flush)
            await asyncio.to_thread(os.fsync, out.fileno())
        finally:
            out.close()
        await asyncio.to_thread(os.replace, partial, target)
        await asyncio.to_thread(
            prepare_restored, self._path, position, self._env_options.get("map_size")
        )
        await self._open()

    async def _watch_stream(self) -> None:
        """Keep the stream's end known (for the lag metrics) while following."""
        while True:
            with contextlib.suppress(Exception):
                info = await self._js.stream_info(self._stream)
                last = int(info.state.last_seq)
                if last and last != self._stream_last_seq:
                    msg = await self._js.get_msg(self._stream, seq=last)
                    self._stream_last = wire.parse_headers(msg.headers).last
                    self._stream_last_seq = last
            await asyncio.sleep(_STATUS_INTERVAL)

    async def _follow(self) -> None:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        position = self._position
        assert position is not None
        batch: list[tuple[wire.WireCommit, Position]] = []
        try:
            # The client hands messages to this queue (bounded: a replica that lags leaves
            # them in the client's buffer); this task takes them, so cancelling it is clean.
            inbox = self._inbox
            self._sub = await self._js.subscribe(
                self._subject,
                stream=self._stream,
                cb=inbox.put,
                ordered_consumer=True,
                # Two missed heartbeats re-create the consumer (a restarted server lost it):
                # nats-py's default of 5 s let a replica resume ~18 s after a server restart.
                idle_heartbeat=_IDLE_HEARTBEAT,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=position.stream_seq + 1,
                ),
                pending_bytes_limit=_PENDING_BYTES,
            )
            pieces: list[bytes] = []
            gathering: wire.CommitHeader | None = None
            size = 0
            while True:
                if batch and (
                    inbox.empty() or len(batch) >= _BATCH_COMMITS or size >= _BATCH_BYTES
                ):
                    # The commits that arrived together go in one write transaction: each
                    # is whole in it, and the position stored is the last one's.
                    await self._apply(batch)
                    batch, size = [], 0
                msg = await inbox.get()
                if msg is _STOP:
                    return
                stream_seq = int(msg.metadata.sequence.stream)
                try:
                    header = wire.parse_headers(msg.headers)
                except ValueError as exc:
                    raise self._invalid(stream_seq, str(exc)) from None
                base = batch[-1][1] if batch else self._position
                assert base is not None
                if header.last <= base.seq:
                    # In a snapshot restored, or applied before a restart. The position moves
                    # past it (in memory: the next commit stores it), else caught_up() waits
                    # for a stream sequence nothing advances.
                    if not batch and header.complete and base.stream_seq < stream_seq:
                        self._position = dataclasses.replace(base, stream_seq=stream_seq)
                        self._wake()
                    continue
                if header.piece == 0:
                    pieces, gathering = [], header
                elif gathering is None or (
                    (gathering.log_id, gathering.first, gathering.last, gathering.pieces)
                    != (header.log_id, header.first, header.last, header.pieces)
                    or header.piece != len(pieces)
                ):
                    raise self._invalid(
                        stream_seq,
                        f"piece {header.piece} of {header.pieces} does not follow the piece "
                        "before it",
                    )
                pieces.append(msg.data)
                if not header.complete:
                    continue
                payload = wire.join(pieces)
                pieces, gathering = [], None
                commit = self._check(stream_seq, header, payload, base)
                batch.append(
                    (
                        commit,
                        Position(
                            self._stream, commit.log_id, commit.last, commit.time_us, stream_seq
                        ),
                    )
                )
                size += len(payload)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if batch and isinstance(exc, InvalidMessageError):
                # The valid commits before the invalid message are applied; none of it.
                with contextlib.suppress(Exception):
                    await self._apply(batch)
            self._error = exc
            self._wake()
            if not isinstance(exc, ReplicationError):
                raise

    def _invalid(self, stream_seq: int, why: str) -> InvalidMessageError:
        return InvalidMessageError(
            f"stream {self._stream!r}, message {stream_seq}: {why}; the replica at "
            f"{self._path!r} stopped before applying any of it (applied: {self.applied}). "
            "Find who publishes to the stream's subject besides the leader",
            stream_seq,
        )

    def _check(
        self, stream_seq: int, header: wire.CommitHeader, payload: bytes, base: Position
    ) -> wire.WireCommit:
        """The commit of ``payload`` if it is whole, well formed and the next after ``base``;
        else InvalidMessageError."""
        try:
            commit = wire.decode(payload)
        except ValueError as exc:
            raise self._invalid(stream_seq, f"it is no valid commit: {exc}") from None
        if (commit.log_id, commit.first, commit.last) != (header.log_id, header.first, header.last):
            raise self._invalid(stream_seq, "its headers and its payload disagree")
        if commit.log_id != base.log_id and commit.follows != base.log_id:
            raise self._invalid(
                stream_seq,
                f"it comes from change log {commit.log_id}, not from this stream's leader "
                f"({base.log_id})",
            )
        if commit.first != base.seq + 1:
            raise self._invalid(
                stream_seq,
                f"it holds changes {commit.first}-{commit.last}, but the next to apply is "
                f"{base.seq + 1}",
            )
        return commit

    async def _apply(self, batch: list[tuple[wire.WireCommit, Position]]) -> None:
        changes = [change for commit, _ in batch for change in commit.changes]
        # The newest default of each expiring database (a default may change within a batch).
        ttls = {name: ms for commit, _ in batch for name, ms in commit.ttls}
        position = batch[-1][1]
        work = functools.partial(_apply_work, self._handles, changes, position, ttls)
        opened = await self.env._write_raw(work)
        self._handles.update(opened)
        self._position = position
        self._stream_last = max(self._stream_last, position.seq)
        self._wake()


async def _stream_owner(js: Any, stream: str) -> str | None:
    """The change log whose snapshot a new replica restores (None: none yet, or the stream
    ends with a stranger's message): the one the stream's last message comes from; with an
    empty stream (a leader's publisher started, nothing written yet), the log of the only
    snapshot in the stream's bucket. Raises NotFoundError while the bucket has none."""
    info = await js.stream_info(stream)
    if info.state.messages:
        msg = await js.get_msg(stream, seq=info.state.last_seq)
        try:
            return wire.parse_headers(msg.headers).log_id
        except ValueError:
            return None
    # Several snapshots (a fenced or former leader's beside the current one's): nothing says
    # which leader the stream goes on with, so wait for its next message, which names it.
    store = await js.object_store(bucket_of(stream))
    logs = set()
    for obj in await store.list(ignore_deletes=True):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            log_id = str(json.loads(obj.description or "{}")["log_id"])
            if obj.name == snapshot_name(log_id):
                logs.add(log_id)
    return logs.pop() if len(logs) == 1 else None


def _apply_work(
    handles: dict[bytes | None, Any],
    changes: Any,
    position: Position,
    ttls: dict[bytes, int],
    env: Any,
    txn: Any,
    meta: Any,
) -> dict[bytes | None, Any]:
    return apply_commit(env, txn, meta, handles, changes, position, ttls)


async def stream_status(
    servers: str | list[str], stream: str, **connect_options: Any
) -> dict[str, Any]:
    """The stream's state as JSON-able data: its message sequences and size, the last change
    sequence and log it holds, and its snapshot (None if none)."""
    from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError

    check_stream_name(stream)
    nc = await connect(servers, connect_options)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            return {"stream": stream, "exists": False}
        state = info.state
        result: dict[str, Any] = {
            "stream": stream,
            "exists": True,
            "first_seq": int(state.first_seq),
            "last_seq": int(state.last_seq),
            "messages": int(state.messages),
            "bytes": int(state.bytes),
            "leader_seq": None,
            "log_id": None,
            "snapshot": None,
        }
        if state.messages:
            msg = await js.get_msg(stream, seq=state.last_seq)
            with contextlib.suppress(ValueError):
                header = wire.parse_headers(msg.headers)
                result["leader_seq"] = header.last if header.complete else header.first - 1
                result["log_id"] = header.log_id
        with contextlib.suppress(BucketNotFoundError, ObjectNotFoundError, NotFoundError):
            # An empty stream: the snapshot a new replica would restore.
            owner = result["log_id"] if state.messages else await _stream_owner(js, stream)
            if owner is not None:
                store = await js.object_store(bucket_of(stream))
                snap = await store.get_info(snapshot_name(owner))
                result["snapshot"] = {**json.loads(snap.description or "{}"), "bytes": snap.size}
        return result
    finally:
        await nc.close()


async def replica_status(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A replica's stored position (stream, leader log id, seq, stream_seq, time_us), read on
    a worker thread without opening it for writing; None if ``path`` is no replica."""
    return await asyncio.to_thread(_stored_position, os.fspath(path))


def _stored_position(path: str) -> dict[str, Any] | None:
    import lmdb

    from .._store.meta import META_NAME, open_meta

    env = lmdb.open(path, readonly=True, max_dbs=4, lock=False)
    try:
        with env.begin() as txn:
            if txn.get(META_NAME) is None:
                return None
        meta = open_meta(env)
        with env.begin() as txn:
            position = read_position(txn, meta)
    finally:
        env.close()
    if position is None:
        return None
    return dataclasses.asdict(position)
