"""Expiring databases: the stored layout, the expiry index, the sweeper.

An expiring database (``open_db(name, ttl=seconds)``) stores every value as ``expiry (8 bytes,
unsigned big-endian, milliseconds since the epoch; 0: never) + the value coder's bytes``. Reads
compare the expiry with the clock (:data:`clock`, replaceable in tests) and treat an expired
entry as absent; nothing else is read per read, and databases that do not expire pay nothing.

Beside the entries, aiolmdb's internal dupsort database ``__aiolmdb_expiry__`` indexes them by
expiry: key ``db id (4 bytes) + expiry (8 bytes)``, values the entries' encoded keys (a
dupsort value is at most ``max_key_size`` bytes, as a key is). Every write of an entry keeps
it in the same write transaction (the old expiry's pair out, the new one in), so the index
never disagrees with a committed entry. The db id comes from a counter in the metadata
database; the marker ``ttl:<name>`` there holds the database's default ttl and its id, written
in the transaction that creates it, so every process (and copies, and reopens) sees the same
layout.

The :class:`Sweeper` deletes expired entries on the writer thread: the engine calls it as its
idle work (``_engine.txnrunner.IdleWork``) between batches when the earliest known expiry is
due, and it deletes at most :data:`SWEEP_STEP` entries per step, through the engine's write
runner and the change log's recording transactions (a sweep shows as deletes there). Expiries
written by other processes are found when a database opens (its earliest pair in the index)
and by the reads meanwhile, which hide them anyway.
"""

from __future__ import annotations

import datetime
import logging
import math
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import lmdb

from .._codecs.common import Buffer, show_bytes
from .._codecs.copyout import LARGE_VALUE, copy_out
from .headed import HeadedValues
from .meta import open_meta

if TYPE_CHECKING:
    from .._engine.delivery import Txn

__all__ = [
    "HEADER_SIZE",
    "INDEX_NAME",
    "SWEEP_STEP",
    "ExpiringValues",
    "Expiry",
    "Sweeper",
    "check_ttl",
    "clear_index",
    "clock",
    "create_marker",
    "expiry_of",
    "is_expired",
    "marker_key",
    "now_ms",
    "marked_names",
    "pack",
    "pack_into",
    "read_marker",
    "reindex",
    "restore_stored",
    "set_default",
    "stored_entries",
]

log = logging.getLogger("aiolmdb")

V = TypeVar("V")

INDEX_NAME: Final = b"__aiolmdb_expiry__"
"""aiolmdb's expiry index (reserved: ``open_db`` refuses the name)."""
ID_KEY: Final = b"ttl_last_id"
"""Metadata key: the last expiring database id given out."""
_U64 = struct.Struct(">Q")
_MARK = struct.Struct(">QI")  # the marker's value: default ttl (ms), db id
_ID = struct.Struct(">I")
HEADER_SIZE: Final = _U64.size
NEVER: Final = 0
"""The stored expiry of an entry that never expires (``put(..., ttl=None)``)."""
_NOTHING_DUE: Final = 2**64
SWEEP_STEP = 500
"""The most entries one automatic sweep step deletes (about a millisecond of the writer's
time), so writes queued meanwhile wait little."""
_RETRY_MS = 1000  # after a sweep that failed (logged), the next try
_MAX_TTL_MS = 2**63 // 1_000_000  # far beyond any clock, small enough to add to one

clock: Callable[[], int] = time.time_ns
"""The wall clock expiries are measured against, in nanoseconds since the epoch (read once per
read or write of an expiring database). Tests replace this attribute to move time without
sleeping."""


def now_ms() -> int:
    """The clock in milliseconds."""
    return clock() // 1_000_000


def marker_key(name: bytes) -> bytes:
    """The metadata key saying that the database ``name`` expires (its default ttl and id)."""
    return b"ttl:" + name


def check_ttl(ttl: object, what: str = "ttl") -> int:
    """``ttl`` (seconds: int, float or ``datetime.timedelta``) in milliseconds (at least 1);
    TypeError/ValueError naming ``what`` if it cannot be one."""
    if isinstance(ttl, datetime.timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise TypeError(
            f"{what} must be a number of seconds (int or float) or a datetime.timedelta, "
            f"got {type(ttl).__name__} {ttl!r}"
        )
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{what} must be a positive, finite number of seconds, got {ttl!r}")
    ms = max(1, math.ceil(seconds * 1000))
    if ms > _MAX_TTL_MS:
        raise ValueError(f"{what} must be below {_MAX_TTL_MS // 1000} seconds, got {ttl!r}")
    return ms


def expiry_of(stored: Buffer) -> int:
    """The expiry of a stored value (ms since the epoch; 0: never); 0 if too short to have
    one (its decoding then fails, naming the key)."""
    if len(stored) < HEADER_SIZE:
        return NEVER
    return int(_U64.unpack_from(stored)[0])


def is_expired(stored: Buffer, now: int) -> bool:
    """Whether the stored value has expired at ``now`` (ms)."""
    if len(stored) < HEADER_SIZE:
        return False
    expiry: int = _U64.unpack_from(stored)[0]
    return expiry != NEVER and expiry <= now


def pack(expiry: int, data: Any) -> bytes:
    """The stored form of a value expiring at ``expiry``: the expiry, then the coder's bytes (a
    large value copied without the GIL)."""
    if len(data) >= LARGE_VALUE:
        return copy_out(data, _U64.pack(expiry))
    return _U64.pack(expiry) + data  # type: ignore[no-any-return]


def pack_into(buffer: bytearray, expiry: int) -> None:
    """Write ``expiry`` into the first HEADER_SIZE bytes of ``buffer`` (left for it)."""
    _U64.pack_into(buffer, 0, expiry)


class ExpiringValues(HeadedValues[V]):
    """The value coder an expiring database's operations use: ``deserialize`` drops the
    expiry before the user's coder runs; ``serialize`` is the user's (the writes add the
    expiry). Whether an entry has expired is checked before decoding, where it is read."""

    __slots__ = ()
    HEAD = HEADER_SIZE
    WHAT = ("an expiring value", "expiry")


class Expiry:
    """One expiring database as its operations see it (``DbContext.expiry``): its id in the
    index, its default ttl, and the environment's sweeper (which owns the index's handle)."""

    __slots__ = ("db_id", "default_ms", "prefix", "sweeper")

    def __init__(self, db_id: int, default_ms: int, sweeper: Sweeper) -> None:
        self.db_id = db_id
        self.default_ms = default_ms
        self.prefix = _ID.pack(db_id)
        self.sweeper = sweeper

    def expiry(self, ttl: int | None, now: int) -> int:
        """The expiry of a write at ``now``: ``ttl`` ms later (the default if ``ttl`` is -1),
        never if None."""
        if ttl is None:
            return NEVER
        return now + (self.default_ms if ttl < 0 else ttl)

    def index_key(self, expiry: int) -> bytes:
        """The index key of this database's entries expiring at ``expiry``."""
        return _index_key(self.prefix, expiry)

    def unindex(self, txn: Txn, encoded: Any, old: Buffer | None) -> None:
        """Writer thread: take the index pair of the entry ``old`` (its stored value) out."""
        if old is None:
            return
        expiry = expiry_of(old)
        if expiry != NEVER:
            raw = getattr(txn, "raw", txn)  # the index is aiolmdb's, not logged
            raw.delete(self.index_key(expiry), encoded, self.sweeper.index)

    def index(self, txn: Txn, encoded: Any, expiry: int) -> None:
        """Writer thread: index the entry ``encoded`` expiring at ``expiry``."""
        if expiry != NEVER:
            raw = getattr(txn, "raw", txn)
            raw.put(self.index_key(expiry), encoded, True, True, False, self.sweeper.index)
            self.sweeper.note(expiry)

    def clear(self, txn: Txn) -> None:
        """Writer thread: every index pair of this database out (it was emptied)."""
        index = self.sweeper.index
        if index is None:
            return
        clear_index(getattr(txn, "raw", txn), index, self.db_id)


def clear_index(txn: Any, index: Any, db_id: int) -> None:
    """Every index pair of the expiring database ``db_id`` out of ``index`` (it was emptied
    or deleted)."""
    prefix = _ID.pack(db_id)
    keys: list[bytes] = []
    cur = txn.cursor(index)
    try:
        if cur.set_range(prefix):
            for key in cur.iternext_nodup(keys=True, values=False):
                if not bytes(key).startswith(prefix):
                    break
                keys.append(bytes(key))
    finally:
        cur.close()
    for key in keys:
        txn.delete(key, b"", index)  # every value of the key


def _index_key(prefix: bytes, expiry: int) -> bytes:
    """The index key of the entries expiring at ``expiry`` of the database whose packed id
    is ``prefix``."""
    return prefix + _U64.pack(expiry)


def reindex(
    txn: Any, index: Any, db_id: int, key: bytes, old: Buffer | None, new: Buffer | None
) -> int:
    """Keep ``index`` in step with a write of ``key`` in the expiring database ``db_id``: the
    pair of its ``old`` stored value out, the one of its ``new`` stored value in (None: no
    value). Returns the new value's expiry (0: none or never)."""
    prefix = _ID.pack(db_id)
    if old is not None and expiry_of(old) != NEVER:
        txn.delete(_index_key(prefix, expiry_of(old)), key, index)
    if new is None:
        return NEVER
    expiry = expiry_of(new)
    if expiry != NEVER:
        txn.put(_index_key(prefix, expiry), key, True, True, False, index)
    return expiry


def create_marker(txn: Any, meta: Any, name: bytes, default_ms: int) -> int:
    """Writer thread, in the transaction that creates the expiring database ``name``: give it
    the next db id and store its marker (default ttl, id); the id."""
    raw = txn.get(ID_KEY, None, meta)
    db_id = 1 if raw is None else _ID.unpack(raw)[0] + 1
    txn.put(ID_KEY, _ID.pack(db_id), db=meta)
    txn.put(marker_key(name), _MARK.pack(default_ms, db_id), db=meta)
    return db_id


def set_default(txn: Any, meta: Any, name: bytes, db_id: int, default_ms: int) -> None:
    """Store ``default_ms`` as the expiring database ``name``'s (id ``db_id``) default ttl."""
    txn.put(marker_key(name), _MARK.pack(default_ms, db_id), db=meta)


class Sweeper:
    """Deletes the expired entries of the expiring databases this process opened, on the writer
    thread (the engine's idle work: :meth:`due`, :meth:`run`), and counts them (``swept``).

    Only the writer thread touches it (opens, writes and sweeps all run there), so it needs no
    lock: ``note`` keeps the earliest expiry written, a sweep step recomputes it from the index.
    """

    __slots__ = ("_dbs", "_next", "_run_write", "held", "index", "swept")

    def __init__(self, run_write: Callable[..., Any]) -> None:
        # The engine's write runner (begins through the change log's recorder).
        self._run_write = run_write
        self.index: Any = None
        # db id -> (LMDB handle, Expiry) of the expiring databases open here.
        self._dbs: dict[int, tuple[Any, Expiry]] = {}
        self._next = _NOTHING_DUE
        self.swept = 0
        # Set while the environment takes no writes (a replica: the leader's sweeps arrive
        # as deletes; a fenced leader): no sweeps, and sweep_all raises this error.
        self.held: Callable[[], BaseException] | None = None

    # ----------------------------------------------------------------- writer thread
    def register(self, dbi: Any, expiry: Expiry, earliest: int) -> None:
        """An expiring database opened (committed); ``earliest``: its first indexed expiry."""
        self._dbs[expiry.db_id] = (dbi, expiry)
        if earliest:
            self.note(earliest)

    def forget(self, db_id: int) -> None:
        """The database ``db_id`` was deleted."""
        self._dbs.pop(db_id, None)

    def note(self, expiry: int) -> None:
        """An entry expiring at ``expiry`` was written (its transaction may yet abort: a sweep
        that finds nothing only recomputes)."""
        if expiry < self._next:
            self._next = expiry

    def due(self) -> float | None:
        """Seconds until a sweep is due (<= 0: now); None when nothing is scheduled."""
        if self._next == _NOTHING_DUE or not self._dbs or self.held is not None:
            return None
        return (self._next - now_ms()) / 1000

    def run(self) -> None:
        """One bounded sweep step (the engine's idle work); a failure is logged and the step
        tried again a second later."""
        try:
            self.step(SWEEP_STEP)
        except Exception:
            log.exception("sweeping expired entries failed; trying again in a second")
            self._next = now_ms() + _RETRY_MS

    def sweep_all(self, env: lmdb.Environment) -> int:
        """A solo item (``env.sweep_expired()``): sweep until nothing expired is left; how many
        entries were deleted."""
        held = self.held
        if held is not None:
            raise held()
        total = 0
        while True:
            swept, more = self.step(SWEEP_STEP)
            total += swept
            if not more:
                return total

    def step(self, budget: int) -> tuple[int, bool]:
        """Delete up to ``budget`` expired entries in one write transaction: how many, and
        whether more are due."""
        if not self._dbs or self.index is None:
            self._next = _NOTHING_DUE
            return 0, False
        swept, more, following = self._run_write(lambda txn, _: self._sweep(txn, budget))
        self.swept += swept
        self._next = following
        return swept, more

    def _sweep(self, txn: Txn, budget: int) -> tuple[int, bool, int]:
        raw = getattr(txn, "raw", txn)
        index = self.index
        now = now_ms()
        swept = 0
        following = _NOTHING_DUE
        for dbi, expiry in list(self._dbs.values()):
            prefix = expiry.prefix
            found: list[tuple[bytes, bytes, int]] = []
            cur = raw.cursor(index)
            try:
                if cur.set_range(prefix):
                    for key, encoded in cur.iternext():
                        key = bytes(key)
                        if not key.startswith(prefix):
                            break
                        at = _U64.unpack_from(key, len(prefix))[0]
                        if at > now or len(found) >= budget:
                            following = min(following, at)
                            break
                        found.append((key, bytes(encoded), at))
            finally:
                cur.close()
            for key, encoded, at in found:
                raw.delete(key, encoded, index)
                stored = raw.get(encoded, None, dbi)
                # The index agrees with committed entries; the check costs little and keeps
                # an entry that a newer write gave another expiry.
                if stored is not None and expiry_of(stored) == at:
                    txn.delete(encoded, b"", dbi)  # recorded in the change log
                    swept += 1
            budget -= len(found)
            if budget <= 0:
                return swept, True, min(following, now)
        return swept, False, following

    # ----------------------------------------------------------------- opening
    def open_in(
        self, env: lmdb.Environment, txn: Txn, meta: Any, name: bytes, default_ms: int | None
    ) -> tuple[int, int, int, Any] | None:
        """Writer thread, in the transaction that opens ``name``: its (db id, default ttl in
        ms, earliest indexed expiry, the index handle), creating its marker and the index
        when ``default_ms`` is given and it has none; None if it does not expire. Keep the
        index handle with :meth:`keep` after the commit. A default that differs from the
        stored one replaces it."""
        stored = None if meta is None else txn.get(marker_key(name), None, meta)
        if stored is None:
            if default_ms is None:
                return None
            db_id = create_marker(txn, meta, name, default_ms)
        else:
            old_default, db_id = _MARK.unpack(stored)
            if default_ms is None:
                default_ms = int(old_default)
            elif default_ms != old_default:
                set_default(txn, meta, name, db_id, default_ms)
        index = self.index
        if index is None:
            index = env.open_db(INDEX_NAME, txn=txn, create=True, dupsort=True)
        return int(db_id), default_ms, _earliest(txn, index, _ID.pack(db_id)), index

    def keep(self, index: Any) -> None:
        """The index handle, opened in a transaction that has committed."""
        if self.index is None:
            self.index = index


def _earliest(txn: Txn, index: Any, prefix: bytes) -> int:
    """The earliest expiry indexed under ``prefix`` (0: none)."""
    cur = txn.cursor(index)
    try:
        if cur.set_range(prefix):
            key = bytes(cur.key())
            if key.startswith(prefix):
                return int(_U64.unpack_from(key, len(prefix))[0])
    finally:
        cur.close()
    return 0


def read_marker(txn: Txn, meta: Any, name: bytes) -> tuple[int, int] | None:
    """The database ``name``'s (db id, default ttl in ms), or None if it does not expire."""
    if meta is None:
        return None
    stored = txn.get(marker_key(name), None, meta)
    if stored is None:
        return None
    default_ms, db_id = _MARK.unpack(stored)
    return int(db_id), int(default_ms)


def marked_names(txn: Txn, meta: Any) -> dict[bytes, int]:
    """Every expiring database's name and default ttl (ms), from the metadata database."""
    out: dict[bytes, int] = {}
    if meta is None:
        return out
    prefix = marker_key(b"")
    cur = txn.cursor(meta)
    try:
        if cur.set_range(prefix):
            for key, value in cur.iternext():
                if not bytes(key).startswith(prefix):
                    break
                out[bytes(key[len(prefix) :])] = int(_MARK.unpack(value)[0])
    finally:
        cur.close()
    return out


# ----------------------------------------------------------------- dump and load
def stored_entries(
    env: lmdb.Environment, txn: Any, name: bytes, after: bytes | None, limit: int
) -> list[tuple[bytes, bytes]]:
    """``aiolmdb dump``: up to ``limit`` entries of the expiring database ``name`` after the key
    ``after``, as stored (expiry first), expired ones left out."""
    dbi = env.open_db(name, txn=txn, create=False)
    now = now_ms()
    out: list[tuple[bytes, bytes]] = []
    cur = txn.cursor(dbi)
    try:
        found = cur.set_range(after) if after is not None else cur.first()
        if found and after is not None and bytes(cur.key()) == after:
            found = cur.next()
        if not found:
            return out
        for key, value in cur.iternext():
            if not is_expired(value, now):
                out.append((bytes(key), bytes(value)))
                if len(out) >= limit:
                    break
    finally:
        cur.close()
    return out


def restore_stored(
    env: lmdb.Environment, txn: Any, name: bytes, pairs: list[tuple[bytes, bytes]]
) -> int:
    """``aiolmdb load``, in a write transaction: store entries of the expiring database
    ``name`` (open by now) as dumped (expiry first), indexed; expired ones are left out. How
    many were stored."""
    dbi = env.open_db(name, txn=txn, create=False)
    meta = open_meta(env, txn)
    found = read_marker(txn, meta, name)
    if found is None:
        raise ValueError(f"database {name!r} does not expire: open it with ttl= first")
    db_id = found[0]
    index = env.open_db(INDEX_NAME, txn=txn, create=False, dupsort=True)
    now = now_ms()
    stored = 0
    for key, value in pairs:
        if len(value) < HEADER_SIZE:
            raise ValueError(
                f"the value dumped under key {key!r} is not an expiring value "
                f"({show_bytes(value)} is shorter than its {HEADER_SIZE}-byte expiry)"
            )
        if is_expired(value, now):
            continue
        reindex(txn, index, db_id, key, txn.get(key, None, dbi), value)
        txn.put(key, value, True, True, False, dbi)
        stored += 1
    return stored
