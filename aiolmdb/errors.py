"""Exceptions raised by aiolmdb itself.

Errors raised by LMDB pass through unchanged (``except lmdb.MapFullError`` keeps working); the
classes here cover what aiolmdb adds on top. Where an aiolmdb error refines an LMDB condition it
also subclasses the matching ``lmdb`` exception, so either ``except`` clause catches it.
"""

from __future__ import annotations

import lmdb

__all__ = [
    "ChangeRecordError",
    "ChangesPositionError",
    "ChangesTrimmedError",
    "ClosedError",
    "ConflictError",
    "DatabaseDroppedError",
    "DeadlockError",
    "Error",
    "FencedError",
    "ForkedError",
    "InvalidKeyError",
    "InvalidMessageError",
    "ReadOnlyError",
    "ReplicationError",
    "SnapshotExpiredError",
    "TransactionError",
]


class Error(Exception):
    """Base class of every exception aiolmdb raises itself."""


class ClosedError(Error):
    """The environment was closed (or is closing); no further operation is accepted."""


class ForkedError(Error):
    """The environment was opened in a parent process and used after ``fork()``.

    LMDB forbids using an environment inherited across ``fork()``; open a new one in the child.
    """


class ConflictError(Error):
    """A conditional write (``if_version=``, ``if_value=``) found the entry changed.

    Raised instead of returning False when the write asked for it (``raise_on_conflict=True``).
    ``key`` is the key, ``expected`` the ``if_version`` given (None for ``if_value``) and
    ``actual`` the version stored when the write ran (None if the key was absent or the
    database is not versioned).
    """

    def __init__(self, message: str, key: object, expected: int | None, actual: int | None) -> None:
        super().__init__(message)
        self.key = key
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.key, self.expected, self.actual))


class ChangesTrimmedError(Error):
    """``env.changes(since=...)`` asked for changes the log no longer keeps (retention trimmed
    them). ``oldest`` is the oldest sequence number still available: resume from
    ``oldest - 1`` after rebuilding what the lost changes fed (a cache, an index)."""

    def __init__(self, message: str, oldest: int) -> None:
        super().__init__(message)
        self.oldest = oldest

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.oldest))


class ChangesPositionError(Error, ValueError):
    """``env.changes(since=...)`` was given a position this log never reached (``since`` beyond
    its last sequence number), or one that belongs to another log (``log_id=`` differs): the
    environment was restored from an older backup, or the position came from another
    environment. ``last_seq`` is the log's last sequence number, ``log_id`` its identity (hex).
    Rebuild what the follower fed, then resume from ``changes(since=0)``."""

    def __init__(self, message: str, last_seq: int, log_id: str | None) -> None:
        super().__init__(message)
        self.last_seq = last_seq
        self.log_id = log_id

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.last_seq, self.log_id))


class ChangeRecordError(Error, ValueError):
    """A record of the change log is damaged (its lengths or kind disagree with its bytes).
    ``seq`` is its sequence number."""

    def __init__(self, message: str, seq: int) -> None:
        super().__init__(message)
        self.seq = seq

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.seq))


class DatabaseDroppedError(Error):
    """The database was deleted with ``drop(delete=True)`` and can no longer be used."""


class ReadOnlyError(Error, lmdb.ReadonlyError):
    """A write was attempted in a read-only transaction (``run(fn)`` without ``write=True``)."""


class InvalidKeyError(Error, lmdb.BadValsizeError, ValueError):
    """A key is empty or longer than the environment's ``max_key_size()``."""


class DeadlockError(Error):
    """The awaited operation could never complete: the calling task holds the write transaction
    that the operation would have to wait for."""


class TransactionError(Error):
    """An interactive transaction was used after it ended, or after an error made it unusable
    (for example ``lmdb.MapFullError``, which LMDB leaves no way to recover from)."""


class SnapshotExpiredError(TransactionError):
    """A read snapshot was used after the map was grown: LMDB invalidates read transactions
    when the map size changes. Begin a new snapshot."""


class ReplicationError(Error):
    """Replication (``aiolmdb.replication``) cannot go on: a replica stopped, was not caught
    up, or could not reach or use its NATS server; the message says what to do."""


class InvalidMessageError(ReplicationError):
    """A replica met a message in its stream that is malformed or not from its leader's log
    (a stranger published on the stream's subject, or the sequence skips): it stopped before
    applying any of it. ``stream_seq`` is the message's sequence in the stream."""

    def __init__(self, message: str, stream_seq: int) -> None:
        super().__init__(message)
        self.stream_seq = stream_seq

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.stream_seq))


class FencedError(ReplicationError):
    """This environment's Publisher stopped because another one published to its stream
    (the stream's last sequence was not the one it expected): another leader took over, so
    this one refuses writes. Promote or rebuild it as a replica."""
