"""Versioned databases: the stored layout, the version counter, the versioned markers.

A versioned database stores every value as ``version (8 bytes, unsigned big-endian) + the value
coder's bytes``. Versions come from one counter per environment, kept in aiolmdb's metadata
database (``__aiolmdb__``, key ``last_version``; its handle's owner is ``_meta.MetaHandles``).
The writer thread draws one version per write transaction (the first versioned write of a group
commit reads and bumps the counter; the others of that transaction reuse it, so a batch costs
one get and one put, not one per write):

* the counter commits (or rolls back) with the entries it stamped, so it is never behind a
  stored version, whichever process wrote it (LMDB serialises write transactions);
* writes committed together share a version; no one outside the transaction can see the
  entries before the commit, so every committed write of an entry still gives it a version
  above every version committed before (an entry written twice in one transaction keeps the
  transaction's version, unless ``restore_entries`` raised the counter in between: the next
  write then draws again);
* it is data, not LMDB's transaction id, so a copy (plain or compacting) keeps it (transaction
  ids restart at 1 in a compacting copy), ``restore_entries`` raises it to the highest version
  restored, and ``aiolmdb dump`` writes it for ``aiolmdb load`` to restore
  (:func:`stored_counter`, :func:`restore_counter`): a version is never issued twice in the life
  of the data, even when the highest ever issued belonged to an entry since deleted;
* a new version is also at least the wall clock in microseconds (:data:`clock`, replaceable in
  tests), so an environment restored from an older backup still issues versions above those it
  issued after that backup, as long as the counter had not run ahead of the clock.

The metadata database also marks which databases are versioned (key ``db:`` + name), written in
the transaction that creates the database, so every process opening it sees the same layout.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import lmdb

from .._codecs.common import Buffer, show_bytes
from .._codecs.copyout import LARGE_VALUE, copy_out
from ..errors import ConflictError
from .headed import HeadedValues
from .meta import open_meta

if TYPE_CHECKING:
    from .._engine.delivery import Txn
    from .meta import MetaHandles

__all__ = [
    "COUNTER_KEY",
    "PREFIX_SIZE",
    "MARKER",
    "Entry",
    "StoredValues",
    "VersionSource",
    "check_version",
    "clock",
    "conflict",
    "marker_key",
    "next_version",
    "pack",
    "pack_into",
    "raise_counter",
    "restore_counter",
    "split",
    "stored_counter",
    "stored_value",
    "version_of",
]

V = TypeVar("V")

COUNTER_KEY = b"last_version"
MARKER = b"versioned:1"
_U64 = struct.Struct(">Q")
PREFIX_SIZE = _U64.size
MAX_VERSION = 2**64 - 1

clock: Callable[[], int] = time.time_ns
"""The wall clock versions are drawn from, in nanoseconds (read once per drawing write
transaction). Tests replace this attribute to skew one environment's clock against another's."""


def marker_key(name: bytes) -> bytes:
    """The metadata key saying that the database ``name`` is versioned."""
    return b"db:" + name


@dataclass(frozen=True)
class Entry(Generic[V]):
    """A value of a versioned database with its version (``get_entry``, ``entries()``).

    ``version`` is an int that changes on every write of the entry and only grows, also across
    deletes and re-inserts, processes, compacting copies and dump/load: pass it back as
    ``if_version=`` to write only if nobody wrote the entry since.
    """

    __slots__ = ("value", "version")

    value: V
    """The decoded value."""
    version: int
    """The entry's version."""

    def __reduce__(self) -> tuple[Any, ...]:
        # A frozen dataclass with slots of its own has no state pickle can set back.
        return (type(self), (self.value, self.version))


def pack(version: int, data: Any) -> bytes:
    """The stored form of a versioned value: the version, then the coder's bytes (a large
    value copied without the GIL)."""
    if len(data) >= LARGE_VALUE:
        return copy_out(data, _U64.pack(version))
    return _U64.pack(version) + data  # type: ignore[no-any-return]


def pack_into(buffer: bytearray, version: int) -> None:
    """Write ``version`` into the first PREFIX_SIZE bytes of ``buffer`` (left for it)."""
    _U64.pack_into(buffer, 0, version)


def stored_value(version: int, data: bytes) -> bytes:
    """``pack`` for bytes (what ``aiolmdb dump`` writes for a versioned value)."""
    return _U64.pack(version) + data


def split(key: object, stored: Buffer) -> tuple[int, Buffer]:
    """The version and the coder's bytes of a stored versioned value."""
    if len(stored) < PREFIX_SIZE:
        raise ValueError(
            f"the value stored under key {key!r} is not a versioned value "
            f"({show_bytes(stored)} is shorter than its {PREFIX_SIZE}-byte version)"
        )
    return _U64.unpack_from(stored)[0], stored[PREFIX_SIZE:]


def version_of(stored: Buffer) -> int:
    """The version of a stored versioned value (at least PREFIX_SIZE bytes)."""
    return int(_U64.unpack_from(stored)[0])


class StoredValues(HeadedValues[V]):
    """The value coder a versioned database's operations use: ``deserialize`` drops the
    version before the user's coder runs (so every read path strips it as it decodes);
    ``serialize`` is the user's (the write operations add the version, which they draw)."""

    __slots__ = ()
    HEAD = PREFIX_SIZE
    WHAT = ("a versioned value", "version")

    def entry(self, buffer: Buffer) -> Entry[V]:
        """The decoded value and its version."""
        value = self.deserialize(buffer)
        return Entry(value, version_of(buffer))


class VersionSource:
    """The version counter of one environment, as the writer thread draws from it.

    ``draw`` keeps the version of the last transaction it was called with: a later write in
    that same transaction gets the same version without touching the counter. (A write in a
    nested transaction is another transaction: it draws from the counter, which its parent's
    draw has already bumped, so it can only get a higher version.) Only the writer thread
    calls it, so it needs no lock.
    """

    __slots__ = ("_handles", "_txn", "_version")

    def __init__(self, handles: MetaHandles) -> None:
        # The metadata database's owner (its handle is known before a versioned database
        # opens).
        self._handles = handles
        self._txn: object = None
        self._version = 0

    def draw(self, txn: Txn) -> int:
        """The version of the writes of ``txn``."""
        if txn is self._txn:
            return self._version
        version = next_version(txn, self._handles.meta)
        # Kept alive by this reference, so no later transaction can have the same identity.
        self._txn = txn
        self._version = version
        return version

    def raise_to(self, txn: Txn, version: int) -> None:
        """Make the counter at least ``version`` (entries stored with their own versions)."""
        raise_counter(txn, self._handles.meta, version)
        # A version drawn earlier in this transaction may now be at or below the counter: the
        # next write draws again, so no write after the restored entries goes below them.
        self._txn = None


def next_version(txn: Txn, meta: Any) -> int:
    """Draw a new version and store it as the counter, in the caller's write transaction."""
    raw = txn.get(COUNTER_KEY, None, meta)
    last = 0 if raw is None else _U64.unpack(raw)[0]
    version = clock() // 1000
    if version <= last:
        version = last + 1
    txn.put(COUNTER_KEY, _U64.pack(version), True, True, False, meta)
    return version


def raise_counter(txn: Txn, meta: Any, version: int) -> None:
    """Make the counter at least ``version`` (entries stored with their own versions)."""
    raw = txn.get(COUNTER_KEY, None, meta)
    if raw is None or _U64.unpack(raw)[0] < version:
        txn.put(COUNTER_KEY, _U64.pack(version), db=meta)


def stored_counter(env: lmdb.Environment, txn: Any) -> int:
    """The version counter of ``env`` read in ``txn`` (0 when nothing was ever versioned)."""
    try:
        meta = open_meta(env, txn)
    except lmdb.NotFoundError:
        return 0
    raw = txn.get(COUNTER_KEY, None, meta)
    return 0 if raw is None else int(_U64.unpack(raw)[0])


def restore_counter(env: lmdb.Environment, txn: Any, dumped: int) -> int:
    """Writer thread: raise the counter of ``env`` to at least ``dumped`` (a dump's counter) and
    the clock, in ``txn``; the counter it holds after. Never lowers it."""
    meta = open_meta(env, txn, True)
    raise_counter(txn, meta, max(dumped, clock() // 1000))
    return int(_U64.unpack(txn.get(COUNTER_KEY, None, meta))[0])


def check_version(version: object, what: str = "if_version") -> int:
    """``version`` if it can be a version; TypeError/ValueError naming ``what`` if not."""
    if type(version) is not int:
        raise TypeError(
            f"{what} must be an int (an Entry's version) or None, "
            f"got {type(version).__name__} {version!r}"
        )
    if not 0 < version <= MAX_VERSION:
        raise ValueError(f"{what} must be between 1 and 2**64-1, got {version}")
    return version


def conflict(key: object, expected: int | None, actual: int | None, reason: str) -> ConflictError:
    """The ConflictError of a failed condition on ``key``."""
    return ConflictError(f"key {key!r} was not written: {reason}", key, expected, actual)
