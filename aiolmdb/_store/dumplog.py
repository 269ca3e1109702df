"""The change log as stored, for the command line's ``dump`` and ``load``.

Both run in a transaction of their own caller with no other handle being opened meanwhile (the
CLI awaits one step at a time): a handle opened in a transaction is valid in it only. Records
travel as stored, byte for byte (either format, every kind: their commit boundaries and flags
with them); a load checks each as a follower would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lmdb

from .meta import LOG_ID_KEY, LOG_ID_SIZE, MARKER_KEY, TRIMMED_KEY, open_log, open_meta
from .records import SEQ, decode_record, log_id, trimmed_upto

__all__ = ["parse_log_id", "restore_records", "stored_log_id", "stored_records"]


def stored_records(
    env: lmdb.Environment, txn: lmdb.Transaction[Any], after: bytes | None, limit: int
) -> tuple[list[tuple[bytes, bytes]], int]:
    """Reader thread: up to ``limit`` records of the log as stored, after the key ``after``
    (None: from the first), and the trimmed high-water mark."""
    log_db = open_log(env, txn)
    meta = open_meta(env, txn)
    out: list[tuple[bytes, bytes]] = []
    cur = txn.cursor(log_db)
    try:
        found = cur.first() if after is None else cur.set_range(after)
        if found and after is not None and cur.key() == after:
            found = cur.next()
        while found and len(out) < limit:
            out.append((bytes(cur.key()), bytes(cur.value())))
            found = cur.next()
    finally:
        cur.close()
    return out, trimmed_upto(txn, meta)


def stored_log_id(env: lmdb.Environment, txn: lmdb.Transaction[Any]) -> str | None:
    """Reader thread: the log's identity in hex (None: a log older than identities)."""
    return log_id(txn, open_meta(env, txn))


def parse_log_id(text: str) -> bytes:
    """A dumped identity (hex) as stored; ValueError saying what is wrong."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != LOG_ID_SIZE:
        raise ValueError(
            f"the change log's identity {text!r} is not {LOG_ID_SIZE} bytes in hex "
            f"({2 * LOG_ID_SIZE} digits)"
        )
    return raw


def restore_records(
    env: lmdb.Environment,
    txn: lmdb.Transaction[Any],
    pairs: Sequence[tuple[bytes, bytes]],
    trimmed: int,
    mark: bool,
    identity: bytes | None = None,
) -> None:
    """Writer thread: append records to the log as stored (creating it), raise the trimmed
    high-water mark to ``trimmed``, keep the dumped log's ``identity`` (so followers see the
    same log); ``mark``: record that the environment has a log (last, so that the loading
    process, which opened it without one, can write until then). Every record is checked as a
    follower reads it (either format, every kind): a damaged one raises ChangeRecordError (a
    ValueError) naming its sequence number (the caller's transaction then rolls back)."""
    log_db = open_log(env, txn, True)
    meta = open_meta(env, txn, True)
    for key, value in pairs:
        if len(key) != SEQ.size:
            raise ValueError(f"a change log record's key must be 8 bytes, got {key!r}")
        decode_record(SEQ.unpack(key)[0], value)
        txn.put(key, value, db=log_db, append=True)
    if trimmed > trimmed_upto(txn, meta):
        txn.put(TRIMMED_KEY, SEQ.pack(trimmed), db=meta)
    if identity is not None:
        txn.put(LOG_ID_KEY, identity, db=meta)
    if mark and txn.get(MARKER_KEY, None, meta) is None:
        txn.put(MARKER_KEY, b"1", db=meta)
