"""Exceptions raised by aiolmdb itself.

Errors raised by LMDB pass through unchanged (``except lmdb.MapFullError`` keeps working); the
classes here cover what aiolmdb adds on top. Where an aiolmdb error refines an LMDB condition it
also subclasses the matching ``lmdb`` exception, so either ``except`` clause catches it.
"""

from __future__ import annotations

import lmdb

__all__ = [
    "ClosedError",
    "DatabaseDroppedError",
    "DeadlockError",
    "Error",
    "ForkedError",
    "InvalidKeyError",
    "ReadOnlyError",
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
