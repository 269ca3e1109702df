"""A replica's side of the store: applying a leader's commit as stored, and its position.

``aiolmdb.replication`` hands :func:`apply_commit` a leader commit's changes, stored bytes
(versions' headers and coded values byte for byte, never decoded), to run in ONE write
transaction on the writer thread, together with the replica's position (:data:`POSITION_KEY`
in the metadata database): a reader sees all of a commit or none of it, and a replica that
restarts continues from the position its last commit stored.

A database is created with the flags the leader's records carry (LMDB's, and aiolmdb's
markers: versioned, large values, expiring). Emptying and deleting a database apply as what
they were. An expiring database gets its ``ttl:`` marker (the leader's default ttl, which the
commit carries, and an id of this environment's own counter) and every applied write keeps
its expiry index, so reads here hide expired entries and a promoted replica sweeps them; the
replica itself never sweeps (its writes are guarded): the leader's sweeps arrive as deletes.

:func:`prepare_restored` turns a leader's compacting copy (a snapshot) into a replica: the
leader's change log, its marker and identity go (a replica records nothing; a promoted replica
starts a log of its own), and the position the snapshot covers is stored. :func:`promote_in`
prepares a replica for a log that continues the leader's sequence numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import lmdb

from . import expiry as _expiry
from .meta import (
    LARGE_MARK,
    LOG_ID_KEY,
    LOG_NAME,
    MARKER_KEY,
    META_NAME,
    TRIMMED_KEY,
    large_key,
)
from .records import SEQ
from .versions import MARKER, PREFIX_SIZE, marker_key, raise_counter, version_of

if TYPE_CHECKING:
    from .._engine.delivery import Txn

__all__ = [
    "DB_FLAG_BITS",
    "EXPIRING_BIT",
    "FOLLOWS_KEY",
    "POSITION_KEY",
    "Position",
    "RawChange",
    "apply_commit",
    "prepare_restored",
    "promote_in",
    "read_position",
]

POSITION_KEY: Final = b"replica_position"
"""Metadata key: a replica's position (JSON: stream, the leader's log id, sequence, time)."""
FOLLOWS_KEY: Final = b"replica_follows"
"""Metadata key: a promoted replica's log continues this log id up to this sequence (JSON)."""

# LMDB's flags by bit, as the change log's records carry them (records.FLAG_BITS).
DB_FLAG_BITS: Final[dict[str, int]] = {
    "reverse_key": 1 << 0,
    "dupsort": 1 << 1,
    "integerkey": 1 << 2,
    "dupfixed": 1 << 3,
    "integerdup": 1 << 4,
}
VERSIONED_BIT: Final = 1 << 5
LARGE_BIT: Final = 1 << 6
EXPIRING_BIT: Final = 1 << 7
# The default ttl of an expiring database whose commit carries none (the leader deleted it
# before publishing the commit, so its delete follows): entries put without a ttl never expire.
_UNKNOWN_TTL_MS: Final = 2**63 // 1_000_000

_RESTORE_ROOM: Final = 64 << 20  # map room for prepare_restored beyond twice the copy's size

# Kinds of a replicated change.
PUT, DELETE, DELETE_VALUE, DROP, DELETE_DB = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class RawChange:
    """One change of a leader's commit, as stored (bytes), with its database's flags."""

    kind: int
    name: bytes | None
    flags: int
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Position:
    """Where a replica is: the stream, the leader's log id, the last change sequence applied,
    its commit time (µs) and the stream sequence of the message that held it."""

    stream: str
    log_id: str
    seq: int
    time_us: int
    stream_seq: int

    def encode(self) -> bytes:
        """The stored form (JSON)."""
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Position:
        """A stored position."""
        data = json.loads(bytes(raw))
        return cls(
            str(data["stream"]),
            str(data["log_id"]),
            int(data["seq"]),
            int(data["time_us"]),
            int(data["stream_seq"]),
        )


def _open(env: lmdb.Environment, txn: Txn, name: bytes | None, flags: int) -> Any:
    if name is None:
        return env.open_db(None, txn=txn)
    lmdb_flags = {flag: bool(flags & bit) for flag, bit in DB_FLAG_BITS.items()}
    try:
        return env.open_db(name, txn=txn, create=True, **lmdb_flags)
    except lmdb.IncompatibleError as exc:
        label = name.decode("utf-8", "backslashreplace")
        wanted = sorted(flag for flag, on in lmdb_flags.items() if on) or ["none"]
        raise ValueError(
            f"database {label!r} exists on this replica with flags other than the leader's "
            f"({', '.join(wanted)}): it was opened here before the leader's records created "
            "it; open databases on a replica after rep.wait_for(...) reached them"
        ) from exc


def apply_commit(
    env: lmdb.Environment,
    txn: Txn,
    meta: Any,
    handles: dict[bytes | None, Any],
    changes: Sequence[RawChange],
    position: Position,
    ttls: Mapping[bytes, int] | None = None,
) -> dict[bytes | None, Any]:
    """Writer thread: apply ``changes`` in ``txn`` and store ``position`` with them;
    ``ttls``: the default ttl (ms) of the expiring databases they touch. Returns the handles
    opened in ``txn`` (the caller keeps them once it committed)."""
    opened: dict[bytes | None, Any] = {}
    newest = 0  # the highest version stored: a promoted replica never issues one below it
    expiring = _Expiring(env, txn, meta, handles, opened, ttls or {})
    for change in changes:
        name = change.name
        handle = handles.get(name)
        if handle is None:
            handle = opened.get(name)
        if handle is None:
            handle = opened[name] = _open(env, txn, name, change.flags)
            if name is not None:
                if change.flags & VERSIONED_BIT:
                    txn.put(marker_key(name), MARKER, db=meta)
                if change.flags & LARGE_BIT:
                    txn.put(large_key(name), LARGE_MARK, db=meta)
        kind = change.kind
        db_id = 0
        if change.flags & EXPIRING_BIT and name is not None:
            db_id = expiring.db_id(name)
            if kind in (PUT, DELETE, DELETE_VALUE):
                old = txn.get(change.key, None, handle)
                new = change.value if kind == PUT else None
                _expiry.reindex(txn, expiring.index, db_id, change.key, old, new)
            else:
                _expiry.clear_index(txn, expiring.index, db_id)
        if kind == PUT:
            txn.put(change.key, change.value, db=handle)
            if change.flags & VERSIONED_BIT and len(change.value) >= PREFIX_SIZE:
                newest = max(newest, version_of(change.value))
        elif kind == DELETE:
            txn.delete(change.key, db=handle)
        elif kind == DELETE_VALUE:
            txn.delete(change.key, change.value, db=handle)
        elif kind == DROP:
            txn.drop(handle, delete=False)
        else:  # DELETE_DB (the wire format admits no other kind)
            txn.drop(handle, delete=True)
            opened.pop(name, None)
            handles.pop(name, None)
            if name is not None:
                txn.delete(marker_key(name), db=meta)
                txn.delete(large_key(name), db=meta)
                if db_id:
                    expiring.deleted(name)
    if newest:
        raise_counter(txn, meta, newest)
    txn.put(POSITION_KEY, position.encode(), db=meta)
    return opened


class _Expiring:
    """The expiring databases of one applied batch: their ids in this environment (markers
    made or updated on first sight) and the expiry index's handle."""

    __slots__ = ("_env", "_ids", "_meta", "_opened", "_ttls", "_txn", "index")

    def __init__(
        self,
        env: lmdb.Environment,
        txn: Txn,
        meta: Any,
        handles: dict[bytes | None, Any],
        opened: dict[bytes | None, Any],
        ttls: Mapping[bytes, int],
    ) -> None:
        self._env, self._txn, self._meta, self._opened, self._ttls = env, txn, meta, opened, ttls
        self._ids: dict[bytes, int] = {}
        # Kept with the databases' handles, under the index's (reserved) name.
        self.index: Any = handles.get(_expiry.INDEX_NAME)

    def db_id(self, name: bytes) -> int:
        """``name``'s id, its marker created (or its default ttl updated) on first sight."""
        found = self._ids.get(name)
        if found is not None:
            return found
        txn, meta = self._txn, self._meta
        default = self._ttls.get(name)
        marker = _expiry.read_marker(txn, meta, name)
        if marker is None:
            db_id = _expiry.create_marker(txn, meta, name, default or _UNKNOWN_TTL_MS)
        else:
            db_id = marker[0]
            if default is not None and default != marker[1]:
                _expiry.set_default(txn, meta, name, db_id, default)
        if self.index is None:
            self.index = self._opened[_expiry.INDEX_NAME] = self._env.open_db(
                _expiry.INDEX_NAME, txn=txn, create=True, dupsort=True
            )
        self._ids[name] = db_id
        return db_id

    def deleted(self, name: bytes) -> None:
        """The database ``name`` was deleted: its marker goes (a new one gets a new id)."""
        self._txn.delete(_expiry.marker_key(name), db=self._meta)
        self._ids.pop(name, None)


def read_position(txn: Txn, meta: Any) -> Position | None:
    """The replica's stored position (None: none yet)."""
    if meta is None:
        return None
    raw = txn.get(POSITION_KEY, None, meta)
    return None if raw is None else Position.decode(raw)


def prepare_restored(path: str, position: Position, map_size: int | None = None) -> None:
    """A worker thread: make the restored leader copy at ``path`` a replica at ``position``
    (its change log, marker and identity removed). Nothing else has it open. ``map_size``:
    the replica's own (its env_options'), used if larger than the room the copy needs."""
    # The copy is compact (no free pages): dropping the log needs new ones, so the map gets
    # room beyond the file (py-lmdb's default of 10 MiB fails for a larger snapshot).
    size = os.path.getsize(os.path.join(path, "data.mdb"))
    env = lmdb.open(
        path, max_dbs=8, subdir=True, map_size=max(2 * size + _RESTORE_ROOM, map_size or 0)
    )
    try:
        with env.begin(write=True) as txn:
            meta = env.open_db(META_NAME, txn=txn, create=True)
            if txn.get(LOG_NAME) is not None:
                txn.drop(env.open_db(LOG_NAME, txn=txn), delete=True)
            for key in (MARKER_KEY, LOG_ID_KEY, TRIMMED_KEY, FOLLOWS_KEY):
                txn.delete(key, db=meta)
            txn.put(POSITION_KEY, position.encode(), db=meta)
    finally:
        env.close()


def promote_in(txn: Txn, meta: Any) -> Position:
    """Writer thread: prepare a replica to become a leader whose log continues the old
    leader's sequence numbers (the trimmed mark) and says which log it follows."""
    position = read_position(txn, meta)
    if position is None:
        raise ValueError("this environment is no replica: it stores no replication position")
    txn.put(TRIMMED_KEY, SEQ.pack(position.seq), db=meta)
    follows = {"log_id": position.log_id, "seq": position.seq, "stream": position.stream}
    txn.put(FOLLOWS_KEY, json.dumps(follows).encode(), db=meta)
    txn.delete(POSITION_KEY, db=meta)
    return position
