"""The replication messages' format (aiolmdb.replication.wire): what decodes, and every way a
payload or its headers can be wrong, each refused with a reason (the replica names the
stream sequence around it)."""

from __future__ import annotations

import struct
import zlib

import pytest

from aiolmdb._store.replicated import DELETE, DELETE_DB, DELETE_VALUE, DROP, PUT, RawChange
from aiolmdb.replication import wire

CHANGES = (
    RawChange(PUT, b"orders", 2, b"k", b"v" * 10),
    RawChange(PUT, None, 0, b"default", b""),
    RawChange(DELETE, b"orders", 2, b"k", b""),
    RawChange(DELETE_VALUE, b"orders", 2, b"k", b"v"),
    RawChange(DROP, b"orders", 2, b"", b""),
    RawChange(DELETE_DB, b"gone", 0, b"", b""),
)
COMMIT = wire.WireCommit("ab" * 16, "", 5, 10, 1_700_000_000_000_000, CHANGES)


def reseal(body: bytes) -> bytes:
    """``body`` with a valid checksum (so the check after it is reached)."""
    return body + struct.pack(">I", zlib.crc32(body))


def test_a_commit_round_trips() -> None:
    assert wire.decode(wire.encode(COMMIT)) == COMMIT
    split = wire.split(wire.encode(COMMIT), 16)
    assert len(split) > 1
    assert wire.decode(wire.join(split)) == COMMIT


def change_bytes(kind: int, name: bytes | None, key: bytes, value: bytes) -> bytes:
    head = struct.pack(
        ">BHHII", kind, 0, 0xFFFF if name is None else len(name), len(key), len(value)
    )
    return head + (name or b"") + key + value


def body(
    *changes: bytes,
    count: int | None = None,
    version: int = 1,
    magic: bytes = b"ALRC",
    first: int = 1,
    last: int = 1,
) -> bytes:
    n = len(changes) if count is None else count
    return (
        struct.pack(">4sBQQQI", magic, version, first, last, 0, n)
        + b"\x02ab"
        + b"\x00"
        + b"".join(changes)
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"ALRC", "too short"),
        (wire.encode(COMMIT)[:-1] + b"\x00", "checksum"),
        (reseal(body(magic=b"XXXX")), "does not start with"),
        (reseal(body(version=9)), "format version 9"),
        (reseal(body(first=0, last=0)), "starts below 1"),
        (reseal(body(first=5, last=4)), "is empty"),
        (reseal(body(count=2)), "change 0 of 2 does not fit"),
        (reseal(body(change_bytes(9, b"x", b"k", b""))), "unknown kind 9"),
        (reseal(body(change_bytes(PUT, b"", b"k", b""))), "empty name"),
        (reseal(body(change_bytes(PUT, b"x", b"", b"v"))), "empty key"),
        (reseal(body(change_bytes(DROP, b"x", b"k", b""))), "drops a database yet"),
        (reseal(body(change_bytes(DELETE_DB, None, b"", b""))), "deletes the default"),
        (reseal(body(change_bytes(PUT, b"x", b"k", b"v")[:-1])), "does not fit"),
        (reseal(body(change_bytes(PUT, b"x", b"k", b"v") + b"!")), "1 bytes follow"),
        (reseal(struct.pack(">4sBQQQI", b"ALRC", 1, 1, 1, 0, 0) + b"\x09ab"), "log id"),
    ],
)
def test_a_damaged_payload_is_refused_saying_why(payload: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        wire.decode(payload)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (None, "no Aiolmdb-Commit header"),
        ({"Other": "x"}, "no Aiolmdb-Commit header"),
        ({"Aiolmdb-Commit": "id:1"}, "malformed"),
        ({"Aiolmdb-Commit": "id:a:b"}, "malformed"),
        ({"Aiolmdb-Commit": "id:2:1"}, "out of range"),
        ({"Aiolmdb-Commit": "id:1:1", "Aiolmdb-Piece": "3/3"}, "out of range"),
        ({"Aiolmdb-Commit": "id:1:1", "Aiolmdb-Piece": "x"}, "malformed"),
    ],
)
def test_wrong_headers_are_refused_saying_why(headers: dict[str, str] | None, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        wire.parse_headers(headers)


def test_headers_of_a_piece() -> None:
    header = wire.parse_headers({"Aiolmdb-Commit": "id:3:7", "Aiolmdb-Piece": "1/4"})
    assert (header.log_id, header.first, header.last, header.piece, header.pieces) == (
        "id",
        3,
        7,
        1,
        4,
    )
    assert not header.complete
    assert wire.parse_headers({"Aiolmdb-Commit": "id:3:7"}).complete
