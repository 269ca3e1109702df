"""The messages of a replication stream: one leader commit per message, or its pieces.

Payload (big-endian)::

    b"ALRC", version (1 byte), first seq, last seq, commit time in µs (8 bytes each),
    change count (4), log id (1-byte length, ASCII hex), the log id it follows (same form,
    empty unless the leader is a promoted replica), then per change: kind (1), flags (2),
    name length (2; 0xFFFF: the default database), key length (4), value length (4), name,
    key, value; last a CRC-32 of everything before it (4).

Headers: ``Nats-Msg-Id`` (deduplication), ``Nats-Expected-Last-Sequence`` (fencing),
:data:`COMMIT_HEADER` (``<log id>:<first>:<last>``) and, for a commit larger than the server's
``max_payload``, :data:`PIECE_HEADER` (``<i>/<n>``): the payload cut in ``n`` consecutive
messages. A restarted publisher reads the stream's last message's headers to know where it is.

:func:`decode` checks every length, kind and the checksum, and raises ``ValueError`` saying
what is wrong; the replica turns that into an error naming the stream sequence.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from .._store.replicated import DELETE, DELETE_DB, DELETE_VALUE, DROP, PUT, RawChange

__all__ = [
    "COMMIT_HEADER",
    "PIECE_HEADER",
    "CommitHeader",
    "WireCommit",
    "decode",
    "encode",
    "parse_headers",
    "split",
]

MAGIC: Final = b"ALRC"
VERSION: Final = 1
COMMIT_HEADER: Final = "Aiolmdb-Commit"
PIECE_HEADER: Final = "Aiolmdb-Piece"
_HEAD = struct.Struct(">4sBQQQI")
_CHANGE = struct.Struct(">BHHII")
_CRC = struct.Struct(">I")
_DEFAULT_DB = 0xFFFF
_KINDS = frozenset({PUT, DELETE, DELETE_VALUE, DROP, DELETE_DB})


@dataclass(frozen=True)
class WireCommit:
    """One leader commit as replicated."""

    log_id: str
    follows: str
    first: int
    last: int
    time_us: int
    changes: tuple[RawChange, ...]


@dataclass(frozen=True)
class CommitHeader:
    """What a message's headers say: its commit, and which piece of it (0 of 1: whole)."""

    log_id: str
    first: int
    last: int
    piece: int
    pieces: int

    @property
    def complete(self) -> bool:
        """Whether this message ends its commit."""
        return self.piece == self.pieces - 1


def _short(text: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > 255:
        raise ValueError(f"log id {text!r} is longer than 255 characters")
    return bytes((len(raw),)) + raw


def encode(commit: WireCommit) -> bytes:
    """A commit's payload."""
    parts = [
        _HEAD.pack(MAGIC, VERSION, commit.first, commit.last, commit.time_us, len(commit.changes)),
        _short(commit.log_id),
        _short(commit.follows),
    ]
    for change in commit.changes:
        name = change.name
        parts.append(
            _CHANGE.pack(
                change.kind,
                change.flags,
                _DEFAULT_DB if name is None else len(name),
                len(change.key),
                len(change.value),
            )
        )
        if name is not None:
            parts.append(name)
        parts.append(change.key)
        parts.append(change.value)
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def decode(payload: bytes) -> WireCommit:
    """A payload as a commit; ValueError saying what is wrong when it is not one."""
    size = len(payload)
    if size < _HEAD.size + 2 + _CRC.size:
        raise ValueError(f"it is {size} bytes, too short for a commit")
    body = memoryview(payload)[: size - _CRC.size]
    (crc,) = _CRC.unpack_from(payload, size - _CRC.size)
    if zlib.crc32(body) != crc:
        raise ValueError("its checksum does not match its bytes")
    magic, version, first, last, time_us, count = _HEAD.unpack_from(payload)
    if magic != MAGIC:
        raise ValueError(f"it does not start with {MAGIC!r}")
    if version != VERSION:
        raise ValueError(f"its format version {version} is not {VERSION} (a newer aiolmdb?)")
    if first < 1 or last < first:
        raise ValueError(f"its sequence range {first}-{last} is empty or starts below 1")
    at = _HEAD.size
    end = len(body)
    texts = []
    for _ in range(2):
        if at >= end or at + 1 + body[at] > end:
            raise ValueError("its log id does not fit its bytes")
        length = body[at]
        texts.append(bytes(body[at + 1 : at + 1 + length]).decode("ascii", "replace"))
        at += 1 + length
    changes = []
    for index in range(count):
        if at + _CHANGE.size > end:
            raise ValueError(f"change {index} of {count} does not fit its bytes")
        kind, flags, name_len, key_len, value_len = _CHANGE.unpack_from(body, at)
        at += _CHANGE.size
        if kind not in _KINDS:
            raise ValueError(f"change {index} has the unknown kind {kind}")
        name: bytes | None = None
        if name_len != _DEFAULT_DB:
            if name_len == 0:
                raise ValueError(f"change {index} names a database with an empty name")
            name = bytes(body[at : at + name_len])
            at += name_len
        if kind in (PUT, DELETE, DELETE_VALUE) and key_len == 0:
            raise ValueError(f"change {index} has an empty key")
        if kind in (DROP, DELETE_DB) and (key_len or value_len):
            raise ValueError(f"change {index} drops a database yet carries a key or value")
        if kind == DELETE_DB and name is None:
            raise ValueError(f"change {index} deletes the default database")
        stop = at + key_len + value_len
        if stop > end:
            raise ValueError(f"change {index} does not fit its bytes")
        key = bytes(body[at : at + key_len])
        value = bytes(body[at + key_len : stop])
        at = stop
        changes.append(RawChange(kind, name, flags, key, value))
    if at != end:
        raise ValueError(f"{end - at} bytes follow its {count} changes")
    return WireCommit(texts[0], texts[1], first, last, time_us, tuple(changes))


def commit_header(log_id: str, first: int, last: int) -> str:
    """The value of :data:`COMMIT_HEADER`."""
    return f"{log_id}:{first}:{last}"


def parse_headers(headers: Mapping[str, str] | None) -> CommitHeader:
    """A message's commit and piece headers; ValueError if it has none or they are wrong."""
    if not headers or COMMIT_HEADER not in headers:
        raise ValueError(f"it has no {COMMIT_HEADER} header (not published by aiolmdb)")
    try:
        log_id, first, last = headers[COMMIT_HEADER].split(":")
        piece, pieces = headers[PIECE_HEADER].split("/") if PIECE_HEADER in headers else ("0", "1")
        header = CommitHeader(log_id, int(first), int(last), int(piece), int(pieces))
    except ValueError:
        raise ValueError(f"its {COMMIT_HEADER}/{PIECE_HEADER} headers are malformed") from None
    if not (0 <= header.piece < header.pieces) or not (1 <= header.first <= header.last):
        raise ValueError(f"its {COMMIT_HEADER}/{PIECE_HEADER} headers are out of range")
    return header


def split(payload: bytes, limit: int) -> list[bytes]:
    """The payload in pieces of at most ``limit`` bytes (one piece if it fits)."""
    if len(payload) <= limit:
        return [payload]
    return [payload[i : i + limit] for i in range(0, len(payload), limit)]


def join(pieces: Iterable[bytes]) -> bytes:
    """The payload of a commit's pieces."""
    return b"".join(pieces)
