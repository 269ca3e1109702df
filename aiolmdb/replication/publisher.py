"""The leader's side: :class:`Publisher` publishes the change log to a JetStream stream.

One commit of the environment (any process's: it follows the log, not this process's writes)
becomes one message, or ``n`` consecutive pieces when it is larger than the server's
``max_payload``. Every publish carries ``Nats-Msg-Id`` (``<log id>:<first seq>``; a piece adds
``:<i>/<n>:<run>``, a value of this run, so a commit cut short by a crash is published whole
again) and ``Nats-Expected-Last-Sequence``: JetStream stores it only if nothing else was
stored since this publisher's last message.

Fencing: a publish refused with "wrong last sequence" means another publisher wrote to the
stream (unless the stored message is this very one, whose acknowledgement was lost: then it
counts as published). The publisher stops and the environment's writes raise
:class:`~aiolmdb.errors.FencedError` from then on.

Restart (also after ``kill -9``): the stream's last message says which commit of which log it
holds; the publisher publishes the log's tail after it (a commit whose last piece is missing,
whole again). An empty stream first gets a snapshot, so a new replica has a start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import lmdb

from .._store.meta import open_log, open_meta
from .._store.records import Change, last_seq
from .._store.replicated import (
    DB_FLAG_BITS,
    DELETE,
    DELETE_DB,
    DELETE_VALUE,
    DROP,
    FOLLOWS_KEY,
    LARGE_BIT,
    PUT,
    VERSIONED_BIT,
    RawChange,
)
from ..environment import Environment
from ..errors import ChangesTrimmedError, ClosedError, FencedError, ReplicationError
from . import wire
from ._connect import bucket_of, cancel_and_wait, connect, subject_of

__all__ = ["Publisher", "check_stream_name", "snapshot_name"]


def snapshot_name(log_id: str) -> str:
    """The Object Store name of the snapshot of change log ``log_id`` (each replaces the one
    before): a replica takes the one of the log its stream ends with, so a snapshot stored by
    a publisher that lost a race for the stream is never restored."""
    return f"log-{log_id}"


_HEADROOM = 1024  # max_payload counts the headers too
_PUBLISH_TIMEOUT = 5.0
_RETRY_WAIT = 0.5
_WINDOW = 64  # publishes awaiting their acknowledgement at once
_WRONG_LAST = (10071, 10070)  # JetStream: wrong last sequence, wrong last message id
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_FLAG_BITS = {**DB_FLAG_BITS, "versioned": VERSIONED_BIT, "large_values": LARGE_BIT}
_KINDS = {"put": PUT, "drop": DROP, "delete_db": DELETE_DB}


# A publish awaiting its acknowledgement: the future, the commit's last sequence if the message
# ends it, the message's id.
_InFlight = tuple["asyncio.Future[Any]", "int | None", str]


class _Duplicate(Exception):
    """A publish acknowledged as a duplicate (stored before): the stream decides."""


def check_stream_name(stream: object) -> str:
    """``stream`` if it is a usable JetStream stream name, else ValueError/TypeError."""
    if not isinstance(stream, str):
        raise TypeError(f"stream must be a str, got {stream!r}")
    if not _STREAM_NAME.match(stream):
        raise ValueError(
            f"stream {stream!r} is no JetStream stream name: use letters, digits, '-' and '_'"
        )
    return stream


def _flags(names: frozenset[str] | None) -> int:
    bits = 0
    for name in names or ():
        bits |= _FLAG_BITS.get(name, 0)
    return bits


def _raw_change(change: Change, flags: int) -> RawChange:
    name = None if change.db is None else change.db.encode("utf-8", "surrogateescape")
    if change.kind == "delete":
        if change.value is None:
            return RawChange(DELETE, name, flags, bytes(change.key), b"")
        return RawChange(DELETE_VALUE, name, flags, bytes(change.key), bytes(change.value))
    kind = _KINDS[change.kind]
    if kind == PUT:
        if change.value is None:
            raise ReplicationError(
                f"change {change.seq} records a key without its value (changelog='keys'): a "
                "replica needs the values; open the leader with changelog=True"
            )
        return RawChange(PUT, name, flags, bytes(change.key), bytes(change.value))
    return RawChange(kind, name, flags, b"", b"")


class Publisher:
    """Publishes an environment's commits to the JetStream stream ``stream``
    (``async with Publisher(env, servers=..., stream=...) as pub:``).

    ``env`` must record its changes (``aiolmdb.open(path, changelog=True)``). ``max_age``
    (seconds), ``max_bytes`` and ``replicas`` configure the stream when this publisher
    creates it; ``snapshot_every`` takes a snapshot each time that many changes were
    published since the last one. Other keyword arguments go to ``nats.connect`` (``user``,
    ``password``, ``user_credentials``, ``nkeys_seed``, ``tls``, ...).
    """

    def __init__(
        self,
        env: Environment,
        *,
        servers: str | list[str],
        stream: str,
        max_age: float | None = None,
        max_bytes: int | None = None,
        replicas: int = 1,
        snapshot_every: int | None = None,
        **connect_options: Any,
    ) -> None:
        self._env = env
        self._servers = servers
        self._stream = check_stream_name(stream)
        self._subject = subject_of(stream)
        if snapshot_every is not None and (type(snapshot_every) is not int or snapshot_every < 1):
            raise ValueError(f"snapshot_every must be an int >= 1 or None, got {snapshot_every!r}")
        if type(replicas) is not int or replicas < 1:
            raise ValueError(f"replicas must be an int >= 1, got {replicas!r}")
        self._max_age = max_age
        self._max_bytes = max_bytes
        self._replicas = replicas
        self._snapshot_every = snapshot_every
        self._options = connect_options
        self._nc: Any = None
        self._js: Any = None
        self._task: asyncio.Task[None] | None = None
        self._log_id = ""
        self._follows = ""
        self._run = secrets.token_hex(4)
        self._published = 0
        self._seen = 0
        self._expected = 0  # the stream's last sequence, as far as this publisher knows
        self._snapshot_seq = 0
        self._snapshot_lock = asyncio.Lock()
        self._snapshot_task: asyncio.Task[Any] | None = None
        self._progress = asyncio.Event()
        self._error: BaseException | None = None
        self._max_payload = 1 << 20
        self._attempt = 0
        self._last_id: str | None = None  # the id of the stream's last message (ours)
        self._closing = False  # a cancellation nats-py swallows must not keep it running
        # The ids of the messages of the current window: a failed publish may have stored one.
        self._sent: dict[str, None] = {}

    # ----------------------------------------------------------------- public
    @property
    def stream(self) -> str:
        """The stream's name."""
        return self._stream

    @property
    def published(self) -> int:
        """The last change sequence of the log stored in the stream (0: none)."""
        return self._published

    @property
    def error(self) -> BaseException | None:
        """Why the publisher stopped (a FencedError once fenced), or None."""
        return self._error

    async def start(self) -> None:
        """Connect, create the stream if needed, find where it ends and start publishing."""
        env = self._env
        try:
            log_id = await env.changelog_id()
        except ValueError as exc:
            raise ValueError(
                f"a Publisher needs an environment with a change log: open {env.path!r} with "
                "aiolmdb.open(path, changelog=True)"
            ) from exc
        if log_id is None:
            raise ValueError(
                f"{env.path!r} has a change log without an identity (an older aiolmdb): open "
                "it once with changelog=True for writing to give it one"
            )
        self._log_id = log_id
        follows = await env._read_raw(_read_follows)
        self._follows = "" if follows is None else str(follows["log_id"])
        self._nc = await connect(self._servers, self._options)
        try:
            self._js = self._nc.jetstream()
            self._max_payload = int(self._nc.max_payload)
            empty = await self._ensure_stream()
            await self._find_position(follows)
            if empty:
                await self.snapshot()
        except BaseException:
            await self._nc.close()
            raise
        env._set_replication_metrics(self._metrics)
        self._task = asyncio.create_task(
            self._publish_log(), name=f"aiolmdb-publish:{self._stream}"
        )

    async def close(self) -> None:
        """Stop publishing (what is not published yet is published by the next start)."""
        self._closing = True
        await cancel_and_wait(self._task, self._snapshot_task)
        self._task = self._snapshot_task = None
        if not self._env.closed:
            self._env._set_replication_metrics(None)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None
        self._progress.set()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def sync(self, timeout: float | None = None) -> int:
        """Wait until every commit made before the call is stored in the stream; returns the
        last change sequence stored (for ``rep.wait_for``). Raises the publisher's error
        (FencedError, ...) if it stopped."""
        target = await self._env.last_seq()

        async def reached() -> None:
            while self._published < target:
                self._check_running()
                await self._progress.wait()

        await asyncio.wait_for(reached(), timeout)
        self._check_running(allow_done=True)
        return self._published

    async def snapshot(self) -> int:
        """Store a compacting copy of the environment in the stream's Object Store bucket,
        with the change sequence it covers (returned): a new replica starts from it."""
        async with self._snapshot_lock:
            return await self._snapshot()

    # ----------------------------------------------------------------- internals
    def _check_running(self, allow_done: bool = False) -> None:
        if self._error is not None:
            raise self._error
        if not allow_done and (self._task is None or self._task.done()):
            raise ReplicationError(f"the Publisher of stream {self._stream!r} is not running")

    def _metrics(self) -> Mapping[str, float]:
        return {
            "published_seq": float(self._published),
            "leader_seq": float(max(self._seen, self._published)),
            "lag_changes": float(max(self._seen - self._published, 0)),
        }

    async def _ensure_stream(self) -> bool:
        """Create the stream if it does not exist; whether it is empty."""
        from nats.js.api import StreamConfig
        from nats.js.errors import NotFoundError

        try:
            info = await self._js.stream_info(self._stream)
        except NotFoundError:
            config = StreamConfig(
                name=self._stream,
                subjects=[self._subject],
                max_age=self._max_age,
                max_bytes=self._max_bytes,
                num_replicas=self._replicas,
            )
            info = await self._js.add_stream(config)
        return bool(info.state.messages == 0)

    async def _find_position(
        self, follows: Mapping[str, Any] | None, *, current: bool = False
    ) -> None:
        """The last commit of this log in the stream, and the stream's last sequence
        (``current``: after a failed publish, while publishing)."""
        info = await self._js.stream_info(self._stream)
        last = int(info.state.last_seq)
        published = self._published if current else 0
        last_id: str | None = None
        if info.state.messages:
            msg = await self._js.get_msg(self._stream, seq=last)
            last_id = (msg.headers or {}).get("Nats-Msg-Id")
            try:
                header = wire.parse_headers(msg.headers)
            except ValueError as exc:
                error = FencedError if current else ReplicationError
                raise error(
                    f"stream {self._stream!r}: its last message (sequence {last}) was not "
                    f"published by aiolmdb ({exc}): give this environment a stream of its own"
                ) from None
            ours = header.log_id == self._log_id
            if current and last != self._expected:
                # Something was stored after our last acknowledged message: ours only if it
                # is one of the messages this window sent (a stranger may copy our headers).
                ours = ours and (msg.headers or {}).get("Nats-Msg-Id") in self._sent
            if ours:
                published = header.last if header.complete else header.first - 1
            elif not current and follows is not None and header.log_id == follows["log_id"]:
                published = int(follows["seq"])
                if header.last != published or not header.complete:
                    raise FencedError(
                        f"stream {self._stream!r} went on after this environment was promoted "
                        f"(it holds log {header.log_id} up to {header.last}, this environment "
                        f"took over at {published}): another leader publishes there"
                    )
            else:
                raise FencedError(
                    f"stream {self._stream!r} holds the commits of another change log "
                    f"({header.log_id}, this environment's is {self._log_id}) at its end "
                    f"(sequence {last}): another leader publishes there; use a stream of its "
                    "own, or make this a replica"
                )
        elif not current and follows is not None:
            published = int(follows["seq"])
        mine = await self._env.last_seq()
        if published > mine:
            raise ReplicationError(
                f"stream {self._stream!r} holds this log up to sequence {published}, but the "
                f"environment's log ends at {mine}: it was restored from an older copy; "
                "publish it to a new stream"
            )
        self._expected = last
        self._last_id = last_id
        self._published = self._seen = published
        if not current:
            self._snapshot_seq = published

    async def _publish_log(self) -> None:
        try:
            while not self._closing:
                failure = await self._publish_window()
                # A publish failed (refused, timed out, the server restarted): wait until the
                # stream can be read, then go on after what it holds, if it holds our last.
                await self._recover(failure)
        except asyncio.CancelledError:
            raise
        except ClosedError:
            self._wake()  # the environment closed: nothing more to publish
        except BaseException as exc:
            self._error = exc
            if isinstance(exc, FencedError) and not self._env.closed:
                message = str(exc)
                self._env._guard_writes(lambda: FencedError(message))
            self._wake()
            if not isinstance(exc, (FencedError, ReplicationError, ChangesTrimmedError)):
                raise

    def _wake(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def _publish_window(self) -> BaseException:
        """Publish the log after ``published`` with up to ``_WINDOW`` messages awaiting their
        acknowledgement (each expects the sequence the one before it gets); returns the first
        failure, once nothing is in flight any more."""
        window: asyncio.Queue[_InFlight] = asyncio.Queue(_WINDOW)
        self._sent = {}
        producer = asyncio.create_task(self._produce(window))
        acker = asyncio.create_task(self._acknowledge(window))
        try:
            done, _ = await asyncio.wait({producer, acker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(producer, acker)
            while not window.empty():
                fut, _, _ = window.get_nowait()
                if isinstance(fut, asyncio.Task):
                    await cancel_and_wait(fut)
        task = done.pop()
        failure = None if task.cancelled() else task.exception()
        if failure is None and task is producer:
            raise ClosedError(f"the environment published to stream {self._stream!r} closed")
        if failure is None:
            # A request cancelled under it (the client reconnecting): see where the stream is.
            return _Duplicate("a publish was cancelled")
        if isinstance(failure, (ChangesTrimmedError, ReplicationError)) or not isinstance(
            failure, Exception
        ):
            raise failure
        return failure

    async def _produce(self, window: asyncio.Queue[_InFlight]) -> None:
        expected = self._expected
        last_id = self._last_id
        self._attempt += 1
        first = True
        async for commit in self._env.commits(since=self._published, log_id=self._log_id):
            if commit.partial:
                raise ChangesTrimmedError(
                    f"stream {self._stream!r}: commit {commit.first}-{commit.last} was "
                    "trimmed from the log before it was published; raise "
                    "changelog_retention and start a new stream",
                    commit.last,
                )
            self._seen = commit.last
            messages = self._messages(commit)
            for index, (data, headers) in enumerate(messages):
                self._sent[headers["Nats-Msg-Id"]] = None
                headers["Nats-Expected-Last-Sequence"] = str(expected)
                # Chained to our message before it: with several in flight, a message whose
                # predecessor was refused must be refused too, even if a stranger's message
                # brought the stream to the sequence it expects.
                if last_id is not None:
                    headers["Nats-Expected-Last-Msg-Id"] = last_id
                last_id = headers["Nats-Msg-Id"]
                expected += 1
                fut = asyncio.ensure_future(
                    self._js.publish(self._subject, data, timeout=_PUBLISH_TIMEOUT, headers=headers)
                )
                await window.put(
                    (fut, commit.last if index == len(messages) - 1 else None, last_id)
                )
                if first:
                    # The first request sets the connection's reply subscription up: alone,
                    # so the ones after it go out in order.
                    await asyncio.wait({fut})
                    first = False

    async def _acknowledge(self, window: asyncio.Queue[_InFlight]) -> None:
        while True:
            fut, last, msg_id = await window.get()
            ack = await fut
            if ack.duplicate:
                raise _Duplicate(ack.seq)  # not stored: see where the stream is
            self._expected = int(ack.seq)
            self._last_id = msg_id
            if last is not None:
                self._published = last
                self._wake()
                self._maybe_snapshot()

    def _maybe_snapshot(self) -> None:
        every = self._snapshot_every
        if (
            every is not None
            and self._published - self._snapshot_seq >= every
            and (self._snapshot_task is None or self._snapshot_task.done())
        ):
            self._snapshot_task = asyncio.create_task(self.snapshot())

    def _messages(self, commit: Any) -> list[tuple[bytes, dict[str, str]]]:
        """A commit's message, or its pieces, with their headers (but the expected one)."""
        changes = tuple(
            _raw_change(change, _flags(commit.databases.get(change.db)))
            for change in commit.changes
        )
        payload = wire.encode(
            wire.WireCommit(
                self._log_id,
                self._follows,
                commit.first,
                commit.last,
                int(commit.timestamp * 1e6),
                changes,
            )
        )
        pieces = wire.split(payload, max(self._max_payload - _HEADROOM, 1024))
        n = len(pieces)
        msg_id = f"{self._log_id}:{commit.first}"
        out = []
        for i, piece in enumerate(pieces):
            headers = {
                # A piece's id names this attempt: a commit cut short is published whole again.
                "Nats-Msg-Id": msg_id
                if n == 1
                else f"{msg_id}:{i}/{n}:{self._run}.{self._attempt}",
                wire.COMMIT_HEADER: wire.commit_header(self._log_id, commit.first, commit.last),
            }
            if n > 1:
                headers[wire.PIECE_HEADER] = f"{i}/{n}"
            out.append((piece, headers))
        return out

    async def _recover(self, failure: BaseException) -> None:
        """After a failed publish: where the stream is. Its last message ours: go on after it
        (our publish stored it, or nothing got in); another's: fenced."""
        from nats.js.errors import APIError

        refused = isinstance(failure, APIError)
        if refused and getattr(failure, "err_code", None) not in _WRONG_LAST:
            raise failure
        while not self._closing:
            try:
                await self._find_position(None, current=True)
                return
            except FencedError as exc:
                why = getattr(failure, "description", None) or repr(failure)
                raise FencedError(
                    f"stream {self._stream!r}: another publisher stored a message after this "
                    f"one's last ({exc}; the server said: {why}); this leader stopped "
                    "publishing and refuses writes (another leader took over): make this "
                    "environment a replica"
                ) from None
            except (ReplicationError, ValueError, ClosedError):
                raise
            except Exception:
                await asyncio.sleep(_RETRY_WAIT)  # the server is away: ask again

    async def _check_owner(self) -> None:
        """FencedError unless the stream is empty or ends with a message of this log (or of
        the log this one follows)."""
        info = await self._js.stream_info(self._stream)
        if not info.state.messages:
            return
        msg = await self._js.get_msg(self._stream, seq=info.state.last_seq)
        try:
            found = wire.parse_headers(msg.headers).log_id
        except ValueError:
            found = "(none: not published by aiolmdb)"
        if found not in (self._log_id, self._follows):
            raise _owner_error(self._stream, self._log_id, found)

    async def _snapshot(self) -> int:
        from nats.js.api import ObjectMeta, ObjectStoreConfig
        from nats.js.errors import BucketNotFoundError

        env = self._env
        stream_seq = self._expected  # messages up to here hold commits the copy has
        folder = await asyncio.to_thread(tempfile.mkdtemp, prefix="aiolmdb-snapshot-")
        try:
            await env.copy(folder, compact=True)
            covered, log_id = await asyncio.to_thread(_copy_position, folder)
            try:
                store = await self._js.object_store(bucket_of(self._stream))
            except BucketNotFoundError:
                store = await self._js.create_object_store(
                    bucket_of(self._stream), config=ObjectStoreConfig(replicas=self._replicas)
                )
            await self._check_owner()  # a fenced leader's snapshot must not replace the new one's
            description = json.dumps(
                {
                    "log_id": log_id,
                    "seq": covered,
                    "stream_seq": stream_seq,
                    "time_us": int(time.time() * 1e6),
                }
            )
            data = await asyncio.to_thread(open, os.path.join(folder, "data.mdb"), "rb")
            try:
                await store.put(
                    snapshot_name(log_id),
                    data,
                    meta=ObjectMeta(name=snapshot_name(log_id), description=description),
                )
            finally:
                data.close()
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        self._snapshot_seq = max(self._snapshot_seq, covered)
        return covered


def _owner_error(stream: str, log_id: str, found: str) -> FencedError:
    return FencedError(
        f"stream {stream!r} ends with a message of change log {found}, not of this "
        f"environment's ({log_id}): another leader publishes there; this snapshot was not stored"
    )


def _read_follows(txn: Any, meta: Any) -> dict[str, Any] | None:
    raw = None if meta is None else txn.get(FOLLOWS_KEY, None, meta)
    return None if raw is None else dict(json.loads(bytes(raw)))


def _copy_position(folder: str) -> tuple[int, str]:
    """A worker thread: the last change sequence and log id of the copy in ``folder``."""
    env = lmdb.open(folder, readonly=True, max_dbs=4, lock=False)
    try:
        log_db, meta = open_log(env), open_meta(env)
        with env.begin() as txn:
            from .._store.records import log_id

            return last_seq(txn, log_db, meta), log_id(txn, meta) or ""
    finally:
        env.close()
