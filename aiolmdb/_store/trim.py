"""The change log's retention: how much of it to keep, and trimming what is beyond.

``changelog_retention=`` (checked here, by :func:`log_options`, with ``changelog=``) becomes a
:class:`Retention`. After commits, when the log may exceed it, the recorder queues a trim to the
writer thread: write transactions of at most ``TRIM_STEP`` deletions each (:func:`trim`), run
between user batches through the engine's write runner.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from typing import TYPE_CHECKING, Any, Final, Literal

from .meta import TRIMMED_KEY
from .records import HEAD, SEQ, trimmed_upto

if TYPE_CHECKING:
    from .._engine.delivery import Txn

__all__ = ["TRIM_STEP", "LogMode", "Retention", "log_options", "trim"]

TRIM_STEP: Final = 1000
# None (no log), "keys" or "values".
LogMode = Literal["keys", "values"] | None


@dataclasses.dataclass(frozen=True)
class Retention:
    """How much of the change log to keep: at most ``entries`` changes and/or changes younger
    than ``age``. Older ones are trimmed on the writer thread after commits."""

    entries: int | None = None
    """The most changes kept (None: no limit by count)."""
    age: datetime.timedelta | None = None
    """How long changes are kept (None: no limit by age)."""

    def __post_init__(self) -> None:
        entries, age = self.entries, self.age
        if entries is not None and (type(entries) is not int or entries < 0):
            raise ValueError(f"Retention.entries must be an int >= 0 or None, got {entries!r}")
        if age is not None and (
            not isinstance(age, datetime.timedelta) or age <= datetime.timedelta(0)
        ):
            raise ValueError(f"Retention.age must be a positive timedelta or None, got {age!r}")
        if entries is None and age is None:
            raise ValueError("Retention needs entries= or age= (or both)")

    @classmethod
    def of(cls, value: object) -> Retention | None:
        """``changelog_retention=`` as given: None, an int, a timedelta or a Retention."""
        if value is None or isinstance(value, Retention):
            return value
        if isinstance(value, datetime.timedelta):
            if value <= datetime.timedelta(0):
                raise ValueError(f"changelog_retention must be a positive timedelta, got {value!r}")
            return cls(age=value)
        if type(value) is int:
            if value < 0:
                raise ValueError(f"changelog_retention must be an int >= 0, got {value!r}")
            return cls(entries=value)
        raise TypeError(
            "changelog_retention must be an int (entries), a datetime.timedelta (age), an "
            f"aiolmdb.Retention or None, got {value!r}"
        )


def trim(txn: Txn, log_db: Any, meta: Any, retention: Retention | None, limit: int) -> int:
    """Delete up to ``limit`` of the oldest changes beyond ``retention`` in the write
    transaction ``txn``, raising the trimmed high-water mark; how many were deleted."""
    if retention is None:
        return 0
    cutoff = None
    if retention.age is not None:
        cutoff = time.time_ns() // 1000 - int(retention.age / datetime.timedelta(microseconds=1))
    deleted = 0
    excess = 0
    if retention.entries is not None:
        excess = int(txn.stat(log_db)["entries"]) - retention.entries
    doomed: list[bytes] = []
    cur = txn.cursor(log_db)
    try:
        for key, raw in cur.iternext(keys=True, values=True):
            if len(doomed) >= limit:
                break
            if len(doomed) < excess or (cutoff is not None and HEAD.unpack_from(raw)[0] < cutoff):
                doomed.append(bytes(key))
            else:
                break
    finally:
        cur.close()
    for key in doomed:
        txn.delete(key, db=log_db)
        deleted += 1
    if doomed:
        top = doomed[-1]
        if trimmed_upto(txn, meta) < SEQ.unpack(top)[0]:
            txn.put(TRIMMED_KEY, top, db=meta)
    return deleted


def log_options(changelog: object, retention: object) -> tuple[LogMode, Retention | None]:
    """``changelog=`` and ``changelog_retention=`` of ``aiolmdb.open``, checked: the log's
    mode (None: no log, "keys" or "values"; True is "values") and its retention."""
    mode = _log_mode(changelog)
    kept = Retention.of(retention)
    if kept is not None and mode is None:
        raise ValueError(f"changelog_retention={retention!r} needs changelog=True")
    return mode, kept


def _log_mode(value: object) -> LogMode:
    if value is None or value is False or (type(value) is int and value == 0):
        return None
    if value is True or (type(value) is int and value == 1):
        return "values"
    if value == "keys":
        return "keys"
    if value == "values":
        return "values"
    raise ValueError(f'changelog must be True, False, "keys" or "values", got {value!r}')
