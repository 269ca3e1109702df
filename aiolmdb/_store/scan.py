"""Range scans: read one chunk of a key range on a worker thread.

A scan holds no transaction while its caller consumes: chunks are read in short read
transactions (a few back to back in one, see ranges.RangeIterator), each re-seeking just past the
last entry the previous chunk returned. So an abandoned iterator holds no reader slot, never
blocks writers or map growth, and writes made during a scan are seen by the chunks read after
them. Chunks come from py-lmdb's C iterators and are cut at the
range bound by bisection (keys are sorted), so per-entry Python work happens only for decoding.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeVar, cast

import lmdb

from .._codecs.builtin import IdentityCoder
from .._codecs.coder import Coder
from .expiry import is_expired, now_ms
from .keys import encode_key
from .large import BufferedReads, read_large, take
from .ops import DbContext, decode_value, decode_values, stored_values, value_error
from .versions import StoredValues

if TYPE_CHECKING:
    from .._engine.delivery import Txn

K = TypeVar("K")
V = TypeVar("V")

ITEMS = 0
KEYS = 1
VALUES = 2
ENTRIES = 3  # items() of a versioned database with each value's version: (key, Entry)


class ScanSpec:
    """One scan's arguments and its encoded bounds ``[lo, hi)``.

    The bounds are encoded by the first chunk read (on a worker thread); encoding is
    deterministic, so a chunk whose result is dropped (cancelled) leaves nothing wrong. Where
    the scan has got to is NOT kept here but by the caller, who passes the resume point to each
    chunk and adopts the one returned only when it receives the chunk.
    """

    __slots__ = (
        "batch",
        "dupsort",
        "empty",
        "encoded",
        "hi",
        "lo",
        "mode",
        "offset",
        "prefix",
        "reverse",
        "start",
        "stop",
    )

    def __init__(
        self, mode: int, start: Any, stop: Any, prefix: Any, reverse: bool, offset: int = 0
    ) -> None:
        self.mode = mode
        # Entries of the range skipped before the first one returned (offset=).
        self.offset = offset
        # batches(size): chunks come as lists of up to ``batch`` entries, cut on the worker
        # (the loop then hands them on untouched), and items() as (key, value) pairs read in
        # one cursor pass instead of two columns (see read_chunk). 0: not batches().
        self.batch = 0
        self.start = start
        self.stop = stop
        self.prefix = prefix
        self.reverse = reverse
        self.dupsort = False  # the database's, taken when the bounds are encoded
        self.encoded = False
        self.lo: bytes | None = None
        self.hi: bytes | None = None
        self.empty = False

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
            succ = kc.prefix_end(pre)
            if succ is not None and (hi is None or succ < hi):
                hi = succ
        self.lo, self.hi = lo, hi
        self.empty = lo is not None and hi is not None and lo >= hi  # e.g. stop <= start
        self.encoded = True


def _encode_bound(kc: Coder[Any], value: Any, what: str) -> Any:
    try:
        return kc.serialize(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"cannot encode range {what} {value!r}: {exc}") from exc


# (key,) or (key, value): the last entry a chunk returned; the next chunk starts past it.
Resume = tuple[bytes, ...]


def _position(cur: lmdb.Cursor, spec: ScanSpec, resume: Resume | None) -> bool:
    """Put the cursor on the first entry this chunk should return; False if there is none."""
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


# Chunks travel as columns (a list of keys, a list of values), not as a list of (key, value)
# tuples: thousands of fresh tuples set off the cyclic garbage collector again and again, which
# doubled the cost of a scan. Tuples are made one at a time as the caller takes them. (A batch
# must hold pairs, so batches() of items() has them made here, in chunks small enough for
# CPython's tuple free list.)


def read_chunk(
    txn: Txn,
    ctx: DbContext[Any, Any],
    spec: ScanSpec,
    resume: Resume | None,
    n: int,
) -> tuple[list[Any], list[Any] | None, Resume | None, bool]:
    """Read up to n entries of the scan after ``resume``.

    Returns ``(column, paired, new_resume, done)``, decoded: for items() the keys and the
    values; for keys() the keys and None; for values() the values and None; for batches()
    (``spec.batch``) the lists to yield, of (key, value) pairs for items(), and None. ``done``
    means the range is exhausted.
    """
    if not spec.encoded:
        # The iterator may have been made before the database finished opening.
        if spec.mode == ENTRIES:
            stored_values(ctx, "entries()")
        spec.dupsort = ctx.dupsort
        spec.encode(ctx.kc)
    if spec.empty:
        return [], None, resume, True
    if ctx.expiry is not None:
        # Expired entries are left out: a chunk that held only those is read again further
        # on (an empty chunk would end the iteration).
        while True:
            chunk = _read_chunk(txn, ctx, spec, resume, n)
            if chunk[0] or chunk[3]:
                return chunk
            resume = chunk[2]
    return _read_chunk(txn, ctx, spec, resume, n)


def _read_chunk(
    txn: Txn,
    ctx: DbContext[Any, Any],
    spec: ScanSpec,
    resume: Resume | None,
    n: int,
) -> tuple[list[Any], list[Any] | None, Resume | None, bool]:
    if resume is None and spec.offset:
        # The first chunk skips the offset (again, if a first chunk was dropped).
        resume = _skip(txn, ctx, spec)
        if resume is None:
            return [], None, None, True
    if not spec.batch:
        return _read_columns(txn, ctx, spec, resume, n)
    if (spec.mode == ITEMS or spec.mode == ENTRIES) and not ctx.large.seen:
        entries, _, resume, done = _read_pairs(txn, ctx, spec, resume, n)
    elif spec.mode == ITEMS or spec.mode == ENTRIES:
        # Large values: read as columns (their values copied without the GIL), then paired.
        column, paired, resume, done = _read_columns(txn, ctx, spec, resume, n)
        entries = list(zip(column, paired or (), strict=True))
    else:
        entries, _, resume, done = _read_columns(txn, ctx, spec, resume, n)
    return _split(entries, spec.batch), None, resume, done


def _entries(cur: lmdb.Cursor, spec: ScanSpec, values: bool) -> Iterator[Any]:
    """The cursor's entries from where it stands, in the scan's direction: keys (each key
    once for keys() of a dupsort database), or (key, value) pairs with ``values``."""
    if spec.unique_keys:
        if spec.reverse:
            return cur.iterprev_nodup(keys=True, values=False)
        return cur.iternext_nodup(keys=True, values=False)
    if values:
        return cur.iterprev() if spec.reverse else cur.iternext()
    if spec.reverse:
        return cur.iterprev(keys=True, values=False)
    return cur.iternext(keys=True, values=False)


def _skip(txn: Txn, ctx: DbContext[Any, Any], spec: ScanSpec) -> Resume | None:
    """Step over the first ``spec.offset`` entries of the range without decoding them: where
    to resume after them, or None if the range holds no more."""
    if ctx.expiry is not None:
        return _skip_live(txn, ctx, spec)
    pairs = spec.dupsort and not spec.unique_keys
    left = spec.offset
    last: Any = None
    cur = txn.cursor(ctx.dbi)
    try:
        if not _position(cur, spec, None):
            return None
        it = _entries(cur, spec, pairs)
        while left:
            want = min(left, _SKIP_CHUNK)
            skipped, cut = _cut(list(islice(it, want)), spec, _first if pairs else None)
            if len(skipped) < want or cut:
                return None  # the range ended within the offset
            last = skipped[-1]
            left -= want
    finally:
        cur.close()
    return (last[0], last[1]) if pairs else (last,)


def count_range(txn: Txn, ctx: DbContext[Any, Any], spec: ScanSpec) -> int:
    """How many entries the range holds (every value counts in a dupsort database), counted
    from LMDB's keys without decoding them."""
    spec.dupsort = ctx.dupsort
    spec.encode(ctx.kc)
    if spec.empty:
        return 0
    if ctx.expiry is not None:
        return _count_live(txn, ctx, spec)
    cur = txn.cursor(ctx.dbi)
    try:
        if not _position(cur, spec, None):
            return 0
        it = _entries(cur, spec, False)
        total = 0
        while True:
            chunk, cut = _cut(list(islice(it, _SKIP_CHUNK)), spec)
            total += len(chunk)
            if cut or len(chunk) < _SKIP_CHUNK:
                return total
    finally:
        cur.close()


# How many keys offset= and count() read at a time (bounded memory, no per-key Python work).
_SKIP_CHUNK = 4096


def _live_pairs(
    txn: Txn, ctx: DbContext[Any, Any], spec: ScanSpec
) -> Iterator[tuple[bytes, bytes]]:
    """The (key, stored value) pairs of the range that have not expired, in the scan's
    direction (an expiring database: never dupsort)."""
    now = now_ms()
    cur = txn.cursor(ctx.dbi)
    try:
        if not _position(cur, spec, None):
            return
        it = cur.iterprev() if spec.reverse else cur.iternext()
        while True:
            chunk, cut = _cut(list(islice(it, _SKIP_CHUNK)), spec, _first)
            for pair in chunk:
                if not is_expired(pair[1], now):
                    yield pair
            if cut or len(chunk) < _SKIP_CHUNK:
                return
    finally:
        cur.close()


def _skip_live(txn: Txn, ctx: DbContext[Any, Any], spec: ScanSpec) -> Resume | None:
    """``_skip`` in an expiring database: the offset counts entries that have not expired."""
    left = spec.offset
    for key, _ in _live_pairs(txn, ctx, spec):
        left -= 1
        if not left:
            return (bytes(key),)
    return None


def _count_live(txn: Txn, ctx: DbContext[Any, Any], spec: ScanSpec) -> int:
    """``count_range`` in an expiring database: the entries that have not expired."""
    return sum(1 for _ in _live_pairs(txn, ctx, spec))


def _split(entries: list[Any], size: int) -> list[list[Any]]:
    """A chunk for batches(): its entries in lists of ``size`` (the last may be shorter).

    Cut here, on the worker, where the entries were just made (in this core's cache): the
    loop thread hands the lists on as they are instead of touching every entry again.
    """
    if len(entries) <= size:
        return [entries] if entries else []
    return [entries[at : at + size] for at in range(0, len(entries), size)]


def _read_columns(
    txn: Txn, ctx: DbContext[Any, Any], spec: ScanSpec, resume: Resume | None, n: int
) -> tuple[list[Any], list[Any] | None, Resume | None, bool]:
    """read_chunk's columns, read in two cursor passes (no tuples are made here)."""
    unique = spec.unique_keys
    cur = txn.cursor(ctx.dbi)
    try:
        if not _position(cur, spec, resume):
            return [], None, resume, True
        if unique:
            it = (
                cur.iterprev_nodup(keys=True, values=False)
                if spec.reverse
                else cur.iternext_nodup(keys=True, values=False)
            )
        else:
            it = (
                cur.iterprev(keys=True, values=False)
                if spec.reverse
                else cur.iternext(keys=True, values=False)
            )
        keys: list[Any] = list(islice(it, n))
        done = len(keys) < n
        keys, cut = _cut(keys, spec)
        values: list[Any] | None = None
        if keys and (spec.mode != KEYS or ctx.expiry is not None):
            # Same transaction, same start: the values of exactly those entries (keys() needs
            # none: its resume point is a key, as it is not a dupsort database's).
            values = _values(txn, ctx, cur, spec, resume, len(keys))
    finally:
        cur.close()
    if not keys:
        return keys, None, resume, True
    if unique:
        resume = (keys[-1],)
    elif spec.dupsort:
        assert values is not None
        resume = (keys[-1], values[-1])
    else:
        resume = (keys[-1],)
    if ctx.expiry is not None:
        assert values is not None
        keys, values = _unexpired(keys, values)
        if spec.mode == KEYS:
            values = None
    column, paired = _decode(keys, values, spec.mode, ctx.kc, ctx.vc)
    return column, paired, resume, done or cut


def _values(
    txn: Txn,
    ctx: DbContext[Any, Any],
    cur: lmdb.Cursor,
    spec: ScanSpec,
    resume: Resume | None,
    n: int,
) -> list[Any]:
    """The values of the n entries from the chunk's start. In a database known to hold large
    values they are read from a buffered twin of ``txn`` (same snapshot) and copied without the
    GIL; else with ``cur``."""
    reads = BufferedReads(txn, ctx.large.env) if ctx.large.seen else None
    try:
        twin = None if reads is None else reads.twin
        if twin is not None:
            cur = twin.cursor(ctx.dbi)
        _position(cur, spec, resume)
        it = (
            cur.iterprev(keys=False, values=True)
            if spec.reverse
            else cur.iternext(values=True, keys=False)
        )
        if twin is None:
            return list(islice(it, n))
        values = [take(v) for v in islice(it, n)]
        cur.close()
        return values
    finally:
        if reads is not None:
            reads.close()


def _read_pairs(
    txn: Txn, ctx: DbContext[Any, Any], spec: ScanSpec, resume: Resume | None, n: int
) -> tuple[list[Any], None, Resume | None, bool]:
    """read_chunk for batches of items(): one list of (key, value) pairs.

    A batch is a list of pairs anyway, so the pairs are made here, in one cursor pass (py-lmdb
    builds them in C), rather than as two columns zipped on the loop: half the cursor steps.
    """
    cur = txn.cursor(ctx.dbi)
    try:
        if not _position(cur, spec, resume):
            return [], None, resume, True
        it = cur.iterprev() if spec.reverse else cur.iternext()
        pairs: list[Any] = list(islice(it, n))
    finally:
        cur.close()
    done = len(pairs) < n
    pairs, cut = _cut(pairs, spec, _first)
    if not pairs:
        return pairs, None, resume, True
    last = pairs[-1]
    resume = (last[0], last[1]) if spec.dupsort else (last[0],)
    if ctx.expiry is not None:
        now = now_ms()
        pairs = [pair for pair in pairs if not is_expired(pair[1], now)]
    kc, vc = ctx.kc, ctx.vc
    if spec.mode == ENTRIES:
        keys = [k for k, _ in pairs]
        entries = _decode_entries(kc, vc, keys, [v for _, v in pairs])
        if type(kc) is not IdentityCoder:
            dk = kc.deserialize
            keys = [dk(k) for k in keys]
        pairs = list(zip(keys, entries, strict=True))
    elif type(kc) is not IdentityCoder or type(vc) is not IdentityCoder:
        dk = kc.deserialize
        dv = vc.deserialize
        try:
            pairs = [(dk(k), dv(v)) for k, v in pairs]
        except ValueError:
            # Rare: say whose value would not decode (a key that would not is raised as is).
            keys = [k for k, _ in pairs]
            decode_values(kc, vc, keys, [v for _, v in pairs])
            raise
    return pairs, None, resume, done or cut


def _unexpired(keys: list[Any], values: list[Any]) -> tuple[list[Any], list[Any]]:
    """The keys and values of the entries that have not expired (an expiring database)."""
    now = now_ms()
    kept = [i for i, value in enumerate(values) if not is_expired(value, now)]
    if len(kept) == len(values):
        return keys, values
    return [keys[i] for i in kept], [values[i] for i in kept]


def _first(pair: tuple[bytes, bytes]) -> bytes:
    return pair[0]


def _same(key: bytes) -> bytes:
    return key


def _cut(
    entries: list[Any], spec: ScanSpec, key: Callable[[Any], bytes] | None = None
) -> tuple[list[Any], bool]:
    """Drop the entries past the range bound (their keys are sorted, so bisect); True if any
    were. ``key`` gets the key of an entry (the entries are keys when it is None)."""
    if not entries:
        return entries, False
    last = entries[-1] if key is None else key(entries[-1])
    if not spec.reverse:
        hi = spec.hi
        if hi is None or last < hi:
            return entries, False
        return entries[: bisect_left(entries, hi, key=key)], True
    lo = spec.lo
    if lo is None or last >= lo:
        return entries, False
    # Descending: the keys >= lo are a prefix. Bisect over "is it below lo?" (False, then True).
    key_of = _same if key is None else key
    idx = bisect_left(entries, True, key=lambda e: key_of(e) < lo)
    return entries[:idx], True


def _decode(
    keys: list[Any], values: list[Any] | None, mode: int, kc: Coder[Any], vc: Coder[Any]
) -> tuple[list[Any], list[Any] | None]:
    """The columns the iterator yields, decoded: (keys, values) for items(), (keys, None) for
    keys(), (values, None) for values(). The built-in IdentityCoder returns bytes unchanged,
    so it is skipped."""
    raw_keys = keys
    if mode != VALUES and type(kc) is not IdentityCoder:
        dk = kc.deserialize
        keys = [dk(k) for k in keys]
    if mode == KEYS or values is None:
        return keys, None
    if mode == ENTRIES:
        return keys, _decode_entries(kc, vc, raw_keys, values)
    if type(vc) is not IdentityCoder:
        values = decode_values(kc, vc, raw_keys, values)
    if mode == VALUES:
        return values, None
    return keys, values


def _decode_entries(
    kc: Coder[Any], vc: Coder[Any], keys: list[bytes], values: list[Any]
) -> list[Any]:
    """A versioned database's values as Entry objects; one that would not decode is named by
    its key."""
    entry = cast("StoredValues[Any]", vc).entry  # checked when the scan began
    try:
        return [entry(v) for v in values]
    except ValueError:
        decode_values(kc, vc, keys, values)  # raises, naming the key
        raise


def first_or_last(txn: Txn, ctx: DbContext[K, V], last: bool) -> tuple[K, V] | None:
    """The first (or last) (key, value) pair, decoded, or None when empty."""
    cur = txn.cursor(ctx.dbi)
    try:
        if not (cur.last() if last else cur.first()):
            return None
        if ctx.expiry is not None:
            now = now_ms()
            while is_expired(cur.value(), now):
                if not (cur.prev() if last else cur.next()):
                    return None
        raw = cur.key()
        key = ctx.kc.deserialize(raw)
        value = None
        if ctx.large.seen and not ctx.dupsort:
            value = read_large(txn, ctx.large, raw, ctx.dbi)  # the same snapshot's value
        if value is None:
            value = cur.value()
        return key, decode_value(ctx.vc, value, key)
    finally:
        cur.close()


def get_all(txn: Txn, ctx: DbContext[K, V], key: K) -> list[V]:
    """Every value of key (sorted, in a dupsort database), decoded."""
    encoded = encode_key(ctx.kc, key, ctx.max_key_size)
    cur = txn.cursor(ctx.dbi)
    try:
        if not cur.set_key(encoded):
            return []
        dv = ctx.vc.deserialize
        if ctx.large.seen and not ctx.dupsort:
            value = read_large(txn, ctx.large, encoded, ctx.dbi)
            values = [] if value is None else [value]
        else:
            values = list(cur.iternext_dup(keys=False, values=True))
        if ctx.expiry is not None and values and is_expired(values[0], now_ms()):
            return []
        try:
            return [dv(v) for v in values]
        except ValueError as exc:  # every value here is this key's
            raise value_error(exc, key) from exc
    finally:
        cur.close()


def count_values(txn: Txn, ctx: DbContext[K, Any], key: K) -> int:
    """How many values key has (0 when absent; at most 1 in a plain database)."""
    encoded = encode_key(ctx.kc, key, ctx.max_key_size)
    cur = txn.cursor(ctx.dbi)
    try:
        if not cur.set_key(encoded):
            return 0
        if ctx.expiry is not None and is_expired(cur.value(), now_ms()):
            return 0
        return int(cur.count()) if ctx.dupsort else 1
    finally:
        cur.close()
