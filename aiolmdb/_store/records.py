"""The change log's record format, and reading records back.

Records
    key: the sequence number, 8 bytes big-endian (so LMDB keeps them in order and appends);
    value: ``HEAD`` (commit time in microseconds, kind, name length, key length), the
    database's name, the key, then the value (``changelog="values"``, the default). Kinds:
    put, delete (with the value for one pair of a dupsort database), and one ``drop`` for a
    database emptied or deleted.

Sequence numbers
    A write transaction takes the next number from the log's last key, or from the high-water
    mark kept in the metadata database when trimming removed everything (``changes_trimmed``:
    the highest number trimmed), so numbers only grow, also across a compacting copy (they are
    data, not LMDB's transaction id).

:func:`read_log` runs on reader threads (``env.changes()``); the rest anywhere.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ..errors import ChangeRecordError
from .meta import LOG_ID_KEY, TRIMMED_KEY

if TYPE_CHECKING:
    from .._engine.delivery import Txn

__all__ = [
    "DELETE",
    "DELETE_VALUE",
    "DROP",
    "HEAD",
    "KIND_NAMES",
    "PUT",
    "PUT_VALUE",
    "SEQ",
    "Change",
    "ChangeKind",
    "db_label",
    "decode",
    "encode",
    "last_seq",
    "log_id",
    "read_log",
    "trimmed_upto",
]

SEQ = struct.Struct(">Q")
HEAD = struct.Struct(">QBHH")
_DEFAULT_DB = 0xFFFF  # name length that stands for the default database

# Kinds as stored.
PUT, PUT_VALUE, DELETE, DELETE_VALUE, DROP = 1, 2, 3, 4, 5

ChangeKind = Literal["put", "delete", "drop"]
KIND_NAMES: dict[int, tuple[ChangeKind, bool]] = {
    PUT: ("put", False),
    PUT_VALUE: ("put", True),
    DELETE: ("delete", False),
    DELETE_VALUE: ("delete", True),
    DROP: ("drop", False),
}


class Change(NamedTuple):
    """One committed change, as ``env.changes()`` and ``on_commit`` callbacks see it."""

    seq: int | None
    """Its sequence number in the log (only grows); None for an ``on_commit`` callback of an
    environment without a log."""
    db: str | None
    """The database's name (None: the default database)."""
    key: Any
    """The key (bytes, or decoded by the coder of the database given as ``changes(db=)``);
    None for a drop."""
    kind: ChangeKind
    """``"put"``, ``"delete"``, or ``"drop"`` (the database was emptied or deleted)."""
    value: Any
    """A put's value (``changelog="values"``); for a delete of one pair of a dupsort database,
    that pair's value; else None. Stored bytes: a versioned database's value starts with its
    8-byte version unless decoded by ``changes(db=...)``."""


def encode(kind: int, name: bytes | None, key: bytes, value: bytes, ts: int) -> bytes:
    """A record's stored value."""
    if name is None:
        return HEAD.pack(ts, kind, _DEFAULT_DB, len(key)) + key + value
    return HEAD.pack(ts, kind, len(name), len(key)) + name + key + value


def decode(seq: int, raw: bytes) -> tuple[Change, int]:
    """A stored record as a Change (bytes keys and values) and its commit time (µs).

    Raises :class:`~aiolmdb.errors.ChangeRecordError` naming ``seq`` when the record's kind or
    lengths disagree with its bytes: a damaged record never becomes a wrong Change."""
    size = len(raw)
    if size < HEAD.size:
        raise _damaged(seq, f"it is {size} bytes, shorter than its {HEAD.size}-byte header")
    ts, code, name_len, key_len = HEAD.unpack_from(raw)
    found = KIND_NAMES.get(code)
    if found is None:
        raise _damaged(seq, f"its kind {code} is none of 1-5")
    kind, has_value = found
    at = HEAD.size
    name: str | None = None
    if name_len != _DEFAULT_DB:
        if name_len == 0 or at + name_len > size:
            raise _damaged(seq, f"its name length {name_len} does not fit its {size} bytes")
        name = raw[at : at + name_len].decode("utf-8", "backslashreplace")
        at += name_len
    end = at + key_len
    if code == DROP:
        if key_len or end != size:
            raise _damaged(seq, "a drop carries no key and no value")
        return Change(seq, name, None, kind, None), ts
    if key_len == 0 or end > size:
        raise _damaged(seq, f"its key length {key_len} does not fit its {size} bytes")
    if not has_value and end != size:
        raise _damaged(seq, f"its kind {kind!r} carries no value, yet {size - end} bytes follow")
    key = raw[at:end]
    value = raw[end:] if has_value else None
    return Change(seq, name, key, kind, value), ts


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
    trimmed = trimmed_upto(txn, meta)
    out: list[Change] = []
    last = after
    if after < trimmed:
        return out, last, trimmed
    cur = txn.cursor(log_db)
    try:
        if not cur.set_range(SEQ.pack(after + 1)):
            return out, last, trimmed
        for scanned, (key, raw) in enumerate(cur.iternext(keys=True, values=True), 1):
            seq = SEQ.unpack(key)[0]
            try:
                change, _ = decode(seq, raw)
            except ChangeRecordError:
                if last != after:
                    break  # the changes before it first; the next read raises
                raise
            last = seq
            if (name is False or change.db == name) and (
                prefix is None
                or change.kind == "drop"
                or (change.key is not None and change.key.startswith(prefix))
            ):
                out.append(change)
            if scanned >= limit:
                break
    finally:
        cur.close()
    return out, last, trimmed
