"""The change log's record format, and reading records back.

Records
    key: the sequence number, 8 bytes big-endian (so LMDB keeps them in order and appends);
    value: a header, the database's name, the key, then the value (``changelog="values"``,
    the default). The header (:data:`HEAD`) is the commit time in microseconds, the kind, the
    name's and the key's lengths, then -- in records of this format, whose kind has the
    :data:`FORMAT2` bit -- the record's offset in its commit (its sequence number minus the
    commit's first) and the database's flags (:data:`FLAG_BITS`; unknown bits are kept).
    Kinds: put, delete (with the value for one pair of a dupsort database), ``drop`` (the
    database emptied: ``drop(delete=False)``) and ``delete_db`` (the named database deleted).

Commits
    Every record of one write transaction carries the transaction's first sequence number (as
    its offset), so a follower groups records into whole commits exactly, and a commit whose
    first records are missing (trimmed, or a position inside it) is seen as partial. Records of
    an older aiolmdb (no :data:`FORMAT2` bit, :data:`HEAD1`: no offset, no flags) are grouped by
    their commit time, which every record of one transaction shares: that never splits a commit,
    and joins two only when they committed in the same microsecond. Their ``drop`` said not
    whether the database was emptied or deleted; it reads as ``drop`` (emptied).

Sequence numbers
    A write transaction takes the next number from the log's last key, or from the high-water
    mark kept in the metadata database when trimming removed everything (``changes_trimmed``:
    the highest number trimmed), so numbers only grow, also across a compacting copy (they are
    data, not LMDB's transaction id).

:func:`read_log` runs on reader threads (``env.changes()``); the rest anywhere.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from ..errors import ChangeRecordError
from .meta import LOG_ID_KEY, TRIMMED_KEY

if TYPE_CHECKING:
    from .._engine.delivery import Txn

__all__ = [
    "DELETE",
    "DELETE_DB",
    "DELETE_VALUE",
    "DROP",
    "FLAG_BITS",
    "FORMAT2",
    "HEAD",
    "HEAD1",
    "KIND_NAMES",
    "PUT",
    "PUT_VALUE",
    "SEQ",
    "Change",
    "ChangeKind",
    "Commit",
    "Record",
    "db_label",
    "decode",
    "decode_record",
    "encode",
    "flag_names",
    "flags_of",
    "group",
    "same_commit",
    "last_seq",
    "log_id",
    "read_log",
    "read_records",
    "trimmed_upto",
]

SEQ = struct.Struct(">Q")
HEAD = struct.Struct(">QBHHIH")
"""A record's header: commit time (µs), kind (with FORMAT2), name length, key length, offset in
its commit, the database's flags. The commit time comes first in both formats (trims read it)."""
HEAD1 = struct.Struct(">QBHH")
"""The header of an older aiolmdb's record: commit time, kind, name length, key length."""
_TAIL = struct.Struct(">IH")  # what HEAD adds to HEAD1: offset in the commit, flags
_DEFAULT_DB = 0xFFFF  # name length that stands for the default database

FORMAT2: Final = 0x80
"""The kind's bit that says the record carries its commit offset and flags (:data:`HEAD`)."""
# Kinds as stored (without FORMAT2). DELETE_DB only in FORMAT2 records.
PUT, PUT_VALUE, DELETE, DELETE_VALUE, DROP, DELETE_DB = 1, 2, 3, 4, 5, 6

ChangeKind = Literal["put", "delete", "drop", "delete_db"]
KIND_NAMES: dict[int, tuple[ChangeKind, bool]] = {
    PUT: ("put", False),
    PUT_VALUE: ("put", True),
    DELETE: ("delete", False),
    DELETE_VALUE: ("delete", True),
    DROP: ("drop", False),
    DELETE_DB: ("delete_db", False),
}

FLAG_BITS: Final[dict[str, int]] = {
    # LMDB's flags of the database, as py-lmdb's open_db names them.
    "reverse_key": 1 << 0,
    "dupsort": 1 << 1,
    "integerkey": 1 << 2,
    "dupfixed": 1 << 3,
    "integerdup": 1 << 4,
    # aiolmdb's markers in its metadata database.
    "versioned": 1 << 5,
    "large_values": 1 << 6,
    "expiring": 1 << 7,
}
"""The flags a record carries, by name (as ``DatabaseInfo.flags`` names them). Bits 8-15 are
free for later options: a reader keeps unknown bits (``flag<N>`` in :func:`flag_names`)."""


def flags_of(names: Iterable[str]) -> int:
    """The bits of the flags named in ``names`` (``flag<N>``: bit N; other names ignored)."""
    bits = 0
    for name in names:
        bit = FLAG_BITS.get(name)
        if bit is None and name.startswith("flag") and name[4:].isdigit() and int(name[4:]) < 16:
            bit = 1 << int(name[4:])
        bits |= bit or 0
    return bits


def flag_names(bits: int) -> frozenset[str]:
    """The flags of ``bits`` by name; a bit without a name as ``flag<N>``."""
    names = {name for name, bit in FLAG_BITS.items() if bits & bit}
    known = flags_of(names)
    names.update(f"flag{n}" for n in range(16) if bits & ~known & (1 << n))
    return frozenset(names)


class Change(NamedTuple):
    """One committed change, as ``env.changes()`` and ``on_commit`` callbacks see it."""

    seq: int | None
    """Its sequence number in the log (only grows); None for an ``on_commit`` callback of an
    environment without a log."""
    db: str | None
    """The database's name (None: the default database)."""
    key: Any
    """The key (bytes, or decoded by the coder of the database given as ``changes(db=)``);
    None for a ``drop`` or ``delete_db``."""
    kind: ChangeKind
    """``"put"``, ``"delete"``, ``"drop"`` (the database was emptied: ``drop(delete=False)``;
    in a record of aiolmdb before 0.9, emptied or deleted) or ``"delete_db"`` (the named
    database was deleted: ``drop()``)."""
    value: Any
    """A put's value (``changelog="values"``); for a delete of one pair of a dupsort database,
    that pair's value; else None. Stored bytes: a versioned database's value starts with its
    8-byte version unless decoded by ``changes(db=...)``."""


def encode(
    kind: int,
    name: bytes | None,
    key: bytes,
    value: bytes,
    ts: int,
    offset: int = 0,
    flags: int = 0,
) -> bytes:
    """A record's stored value: ``offset`` is its place in its commit (its sequence number
    minus the commit's first), ``flags`` the database's (:data:`FLAG_BITS`)."""
    if name is None:
        return HEAD.pack(ts, kind | FORMAT2, _DEFAULT_DB, len(key), offset, flags) + key + value
    return HEAD.pack(ts, kind | FORMAT2, len(name), len(key), offset, flags) + name + key + value


class Record(NamedTuple):
    """A record decoded with what groups it into commits."""

    change: Change
    """The change (bytes keys and values)."""
    ts: int
    """Its commit's time, microseconds since the epoch."""
    first: int | None
    """Its commit's first sequence number; None for a record of an older aiolmdb."""
    flags: int | None
    """The database's flags (:data:`FLAG_BITS`); None for a record of an older aiolmdb."""


@dataclasses.dataclass(frozen=True)
class Commit:
    """One committed write transaction, as ``env.commits()`` yields it: its changes, all of
    them, in order, with keys and values as stored (bytes, never decoded)."""

    first: int
    """The sequence number of the commit's first change."""
    last: int
    """The sequence number of its last change (a position at a commit boundary, for
    ``env.commits(since=last)``)."""
    timestamp: float
    """When it committed, in seconds since the epoch (as ``time.time()``; microseconds)."""
    changes: tuple[Change, ...]
    """Its changes in order (``first`` to ``last`` unless ``partial``): bytes keys and values
    exactly as stored (a versioned database's values with their version header, coded values
    as their coder wrote them)."""
    databases: Mapping[str | None, frozenset[str]]
    """The flags of each database it changed, as ``DatabaseInfo.flags`` names them
    (``dupsort``, ``integerkey``, ``dupfixed``, ``integerdup``, ``reverse_key``,
    ``versioned``), plus ``large_values`` once the database is known to hold large values,
    ``expiring`` for an expiring one, and ``flag<N>`` for a bit this aiolmdb has no name for.
    A database whose records come from an aiolmdb older than commit boundaries is absent."""
    partial: bool = False
    """True when the commit's first changes are not here: the log's retention trimmed them,
    or ``since`` fell inside the commit. Never true for records of an older aiolmdb, whose
    commits cannot tell (see the changes guide)."""


def same_commit(before: Record, record: Record) -> bool:
    """Whether ``record`` belongs to the commit of ``before`` (the record before it): the same
    first sequence number, or, for records of an older aiolmdb, the same commit time."""
    if record.first is not None:
        return record.first == before.first
    return before.first is None and record.ts == before.ts


def group(records: Sequence[Record], partial: bool) -> Commit:
    """The commit of ``records`` (one commit's, in order); ``partial``: its first records are
    known to be missing."""
    head = records[0]
    seq = head.change.seq
    assert seq is not None
    return Commit(
        first=seq if head.first is None else head.first,
        last=records[-1].change.seq or seq,
        timestamp=head.ts / 1e6,
        changes=tuple(record.change for record in records),
        databases={
            record.change.db: flag_names(record.flags)
            for record in records
            if record.flags is not None
        },
        partial=partial,
    )


def decode(seq: int, raw: bytes) -> tuple[Change, int]:
    """A stored record as a Change (bytes keys and values) and its commit time (µs); see
    :func:`decode_record`."""
    record = decode_record(seq, raw)
    return record.change, record.ts


def decode_record(seq: int, raw: bytes) -> Record:
    """A stored record (either format) decoded.

    Raises :class:`~aiolmdb.errors.ChangeRecordError` naming ``seq`` when the record's kind,
    lengths or commit offset disagree with its bytes: a damaged record never becomes a wrong
    Change."""
    size = len(raw)
    if size < HEAD1.size:
        raise _damaged(seq, f"it is {size} bytes, shorter than its {HEAD1.size}-byte header")
    ts, stored, name_len, key_len = HEAD1.unpack_from(raw)
    first: int | None = None
    flags: int | None = None
    code = stored & ~FORMAT2
    if stored & FORMAT2:
        if size < HEAD.size:
            raise _damaged(seq, f"it is {size} bytes, shorter than its {HEAD.size}-byte header")
        offset, flags = _TAIL.unpack_from(raw, HEAD1.size)
        if offset >= seq:
            raise _damaged(seq, f"its offset {offset} in its commit goes before the log's start")
        first = seq - offset
        at = HEAD.size
        found = KIND_NAMES.get(code)
    else:
        at = HEAD1.size
        found = KIND_NAMES.get(code) if code != DELETE_DB else None
    if found is None:
        raise _damaged(seq, f"its kind {stored} is none of 1-5, 129-134")
    kind, has_value = found
    name: str | None = None
    if name_len != _DEFAULT_DB:
        if name_len == 0 or at + name_len > size:
            raise _damaged(seq, f"its name length {name_len} does not fit its {size} bytes")
        name = raw[at : at + name_len].decode("utf-8", "backslashreplace")
        at += name_len
    elif code == DELETE_DB:
        raise _damaged(seq, "it deletes the default database, which cannot be deleted")
    end = at + key_len
    if code in (DROP, DELETE_DB):
        if key_len or end != size:
            raise _damaged(seq, f"a {kind} carries no key and no value")
        return Record(Change(seq, name, None, kind, None), ts, first, flags)
    if key_len == 0 or end > size:
        raise _damaged(seq, f"its key length {key_len} does not fit its {size} bytes")
    if not has_value and end != size:
        raise _damaged(seq, f"its kind {kind!r} carries no value, yet {size - end} bytes follow")
    key = raw[at:end]
    value = raw[end:] if has_value else None
    return Record(Change(seq, name, key, kind, value), ts, first, flags)


def _damaged(seq: int, why: str) -> ChangeRecordError:
    return ChangeRecordError(
        f"change log record {seq} is damaged: {why}; restore the environment from a backup, "
        f"or skip that change knowingly with changes(since={seq})",
        seq,
    )


def db_label(name: bytes | None) -> str | None:
    return None if name is None else name.decode("utf-8", "backslashreplace")


def last_seq(txn: Txn, log_db: Any, meta: Any) -> int:
    """The highest sequence number ever issued (0: none)."""
    cur = txn.cursor(log_db)
    try:
        last = SEQ.unpack(cur.key())[0] if cur.last() else 0
    finally:
        cur.close()
    return max(last, trimmed_upto(txn, meta))


def log_id(txn: Txn, meta: Any) -> str | None:
    """The log's identity in hex (None: a log created before aiolmdb gave logs one, not yet
    opened for writing with the log since)."""
    raw = txn.get(LOG_ID_KEY, None, meta)
    return None if raw is None else bytes(raw).hex()


def trimmed_upto(txn: Txn, meta: Any) -> int:
    """The highest sequence number trimmed (0: none)."""
    raw = txn.get(TRIMMED_KEY, None, meta)
    return 0 if raw is None else int(SEQ.unpack(raw)[0])


def read_records(
    txn: Txn, log_db: Any, meta: Any, after: int, limit: int
) -> tuple[list[Record], int, bool]:
    """Reader thread: up to ``limit`` records after ``after``, the highest sequence number
    trimmed, and whether they reach the log's end in this snapshot (so the last commit read is
    whole: a commit's records all become visible at once). Nothing when ``after`` is below the
    trimmed mark. A damaged record ends the chunk before it, and raises when it comes first."""
    trimmed = trimmed_upto(txn, meta)
    out: list[Record] = []
    if after < trimmed:
        return out, trimmed, False
    cur = txn.cursor(log_db)
    try:
        if not cur.set_range(SEQ.pack(after + 1)):
            return out, trimmed, True
        found = True
        for key, raw in cur.iternext(keys=True, values=True):
            seq = SEQ.unpack(key)[0]
            try:
                out.append(decode_record(seq, raw))
            except ChangeRecordError:
                if out:
                    return out, trimmed, False  # the changes before it first; the next read raises
                raise
            if len(out) >= limit:
                found = cur.next()
                break
        else:
            found = False
    finally:
        cur.close()
    return out, trimmed, not found


def read_log(
    txn: Txn,
    log_db: Any,
    meta: Any,
    after: int,
    limit: int,
    name: str | Literal[False] | None,
    prefix: bytes | None,
) -> tuple[list[Change], int, int]:
    """Reader thread: the changes after ``after`` (at most ``limit`` scanned), those of the
    database ``name`` only (False: all) and keys starting with ``prefix``; the last sequence
    number scanned (``after`` if none) and the highest trimmed. A damaged record ends the
    chunk before it, and raises when it comes first."""
    records, trimmed, _ = read_records(txn, log_db, meta, after, limit)
    out: list[Change] = []
    for record in records:
        change = record.change
        if (name is False or change.db == name) and (
            prefix is None or change.key is None or change.key.startswith(prefix)
        ):
            out.append(change)
    last = records[-1].change.seq if records else after
    assert last is not None
    return out, last, trimmed
