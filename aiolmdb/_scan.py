"""Range scans: read one chunk of a key range on a worker thread.

A scan never holds a transaction between chunks: each chunk is read in its own (batched) read
transaction, re-seeking just past the last entry the previous chunk returned. So an abandoned
iterator holds no reader slot, never blocks writers or map growth, and writes made during a scan
are seen by the chunks read after them. Chunks come from py-lmdb's C iterators and are cut at the
range bound by bisection (keys are sorted), so per-entry Python work happens only for decoding.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import islice
from typing import Any

import lmdb

from ._ops import encode_key
from .coders import Coder, IdentityCoder

ITEMS = 0
KEYS = 1
VALUES = 2


def prefix_successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None  # every key >= an all-0xff prefix starts with it
    return stripped[:-1] + bytes([stripped[-1] + 1])


class ScanSpec:
    """One scan's bounds and resume point. Only the thread reading the current chunk touches
    it, and chunks are read one after another."""

    __slots__ = (
        "done",
        "dupsort",
        "encoded",
        "hi",
        "lo",
        "mode",
        "prefix",
        "resume",
        "reverse",
        "start",
        "stop",
    )

    def __init__(
        self,
        mode: int,
        start: Any,
        stop: Any,
        prefix: Any,
        reverse: bool,
        dupsort: bool,
    ) -> None:
        self.mode = mode
        self.start = start
        self.stop = stop
        self.prefix = prefix
        self.reverse = reverse
        self.dupsort = dupsort
        self.encoded = False
        self.lo: bytes | None = None
        self.hi: bytes | None = None
        # (key,) or (key, value): the last entry returned; the next chunk starts past it.
        self.resume: tuple[bytes, ...] | None = None
        self.done = False

    @property
    def unique_keys(self) -> bool:
        """keys() of a dupsort database yields each key once."""
        return self.mode == KEYS and self.dupsort

    def encode(self, kc: Coder[Any]) -> None:
        """Encode start/stop/prefix with the key coder (on the worker thread) into [lo, hi)."""
        lo = None if self.start is None else bytes(_encode_bound(kc, self.start, "start"))
        hi = None if self.stop is None else bytes(_encode_bound(kc, self.stop, "stop"))
        if self.prefix is not None:
            pre = bytes(_encode_bound(kc, self.prefix, "prefix"))
            if lo is None or lo < pre:
                lo = pre
            succ = prefix_successor(pre)
            if succ is not None and (hi is None or succ < hi):
                hi = succ
        self.lo, self.hi = lo, hi
        self.encoded = True
        if lo is not None and hi is not None and lo >= hi:
            self.done = True  # empty range (e.g. stop <= start)


def _encode_bound(kc: Coder[Any], value: Any, what: str) -> Any:
    try:
        return kc.serialize(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"cannot encode range {what} {value!r}: {exc}") from exc


def _position(cur: lmdb.Cursor, spec: ScanSpec) -> bool:
    """Put the cursor on the first entry this chunk should return; False if there is none."""
    resume = spec.resume
    pairs = spec.dupsort and not spec.unique_keys
    if not spec.reverse:
        if resume is None:
            return cur.set_range(spec.lo) if spec.lo is not None else cur.first()
        key = resume[0]
        if pairs:
            if cur.set_range_dup(key, resume[1]):
                return cur.next() if cur.value() == resume[1] else True
            if cur.set_key(key):
                return cur.next_nodup()
            return cur.set_range(key)
        if not cur.set_range(key):
            return False
        if cur.key() == key:
            return cur.next_nodup() if spec.dupsort else cur.next()
        return True
    # Reverse: the last entry before the resume point (or before hi).
    if resume is None:
        if spec.hi is not None and cur.set_range(spec.hi):
            return cur.prev()
        return cur.last()
    key = resume[0]
    if pairs:
        if cur.set_range_dup(key, resume[1]):
            return cur.prev()
        if cur.set_key(key):
            return cur.last_dup()
    if cur.set_range(key):
        return cur.prev_nodup() if spec.unique_keys else cur.prev()
    return cur.last()


def read_chunk(
    txn: lmdb.Transaction,
    db: Any,
    kc: Coder[Any],
    vc: Coder[Any],
    spec: ScanSpec,
    n: int,
) -> list[Any]:
    """Read up to n entries of the scan (fewer means the range is exhausted: spec.done)."""
    if not spec.encoded:
        spec.encode(kc)
    if spec.done:
        return []
    cur = txn.cursor(db)
    try:
        if not _position(cur, spec):
            spec.done = True
            return []
        it: Iterator[Any]
        if spec.unique_keys:
            it = (
                cur.iterprev_nodup(keys=True, values=False)
                if spec.reverse
                else cur.iternext_nodup(keys=True, values=False)
            )
        else:
            it = cur.iterprev() if spec.reverse else cur.iternext()
        raw: list[Any] = list(islice(it, n))
    finally:
        cur.close()
    if len(raw) < n:
        spec.done = True
    raw = _cut(raw, spec)
    if not raw:
        spec.done = True
        return raw
    last = raw[-1]
    spec.resume = (
        (last,) if spec.unique_keys else (last[0], last[1]) if spec.dupsort else (last[0],)
    )
    return _decode(raw, spec.mode, kc, vc)


def _cut(raw: list[Any], spec: ScanSpec) -> list[Any]:
    """Drop the entries past the range bound (they are sorted, so bisect)."""
    if not raw:
        return raw
    keys_only = spec.unique_keys
    if not spec.reverse:
        hi = spec.hi
        if hi is None:
            return raw
        last_key = raw[-1] if keys_only else raw[-1][0]
        if last_key < hi:
            return raw
        spec.done = True
        if keys_only:
            return raw[: bisect_left(raw, hi)]
        return raw[: bisect_left(raw, hi, key=_first)]
    lo = spec.lo
    if lo is None:
        return raw
    last_key = raw[-1] if keys_only else raw[-1][0]
    if last_key >= lo:
        return raw
    spec.done = True
    # Descending: the entries >= lo are a prefix. Bisect over "is it below lo?".
    below = [False, True]
    if keys_only:
        idx = bisect_left(range(len(raw)), True, key=lambda i: below[raw[i] < lo])
    else:
        idx = bisect_left(range(len(raw)), True, key=lambda i: below[raw[i][0] < lo])
    return raw[:idx]


def _first(pair: tuple[bytes, bytes]) -> bytes:
    return pair[0]


def _decode(raw: list[Any], mode: int, kc: Coder[Any], vc: Coder[Any]) -> list[Any]:
    # The built-in IdentityCoder returns bytes unchanged: skip the per-entry calls.
    plain_k = type(kc) is IdentityCoder
    plain_v = type(vc) is IdentityCoder
    if mode == KEYS:
        if isinstance(raw[0], tuple):
            raw = [k for k, _ in raw]
        if plain_k:
            return raw
        dk = kc.deserialize
        return [dk(k) for k in raw]
    if mode == VALUES:
        if plain_v:
            return [v for _, v in raw]
        dv = vc.deserialize
        return [dv(v) for _, v in raw]
    if plain_k and plain_v:
        return raw
    dk = kc.deserialize
    dv = vc.deserialize
    if plain_k:
        return [(k, dv(v)) for k, v in raw]
    if plain_v:
        return [(dk(k), v) for k, v in raw]
    return [(dk(k), dv(v)) for k, v in raw]


def first_or_last(
    txn: lmdb.Transaction, db: Any, kc: Coder[Any], vc: Coder[Any], last: bool
) -> tuple[Any, Any] | None:
    """The first (or last) (key, value) pair, decoded, or None when empty."""
    cur = txn.cursor(db)
    try:
        if not (cur.last() if last else cur.first()):
            return None
        return kc.deserialize(cur.key()), vc.deserialize(cur.value())
    finally:
        cur.close()


def get_all(
    txn: lmdb.Transaction, db: Any, kc: Coder[Any], vc: Coder[Any], mks: int, key: Any
) -> list[Any]:
    """Every value of key (sorted, in a dupsort database), decoded."""
    encoded = encode_key(kc, key, mks)
    cur = txn.cursor(db)
    try:
        if not cur.set_key(encoded):
            return []
        dv = vc.deserialize
        return [dv(v) for v in cur.iternext_dup(keys=False, values=True)]
    finally:
        cur.close()


def count_values(
    txn: lmdb.Transaction, db: Any, kc: Coder[Any], mks: int, key: Any, dupsort: bool
) -> int:
    """How many values key has (0 when absent; at most 1 in a plain database)."""
    encoded = encode_key(kc, key, mks)
    cur = txn.cursor(db)
    try:
        if not cur.set_key(encoded):
            return 0
        return int(cur.count()) if dupsort else 1
    finally:
        cur.close()
