"""The operations: small functions the engine runs inside a transaction on a worker thread.

Each takes the transaction, then the database's :class:`DbContext`, then plain arguments (a
tuple, not a closure, keeps the per-operation cost low). Coders run here, on the worker thread,
never on the event loop. The same functions back the synchronous views that ``run(fn)`` hands to
user code and the awaitable operations of every async view.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import isawaitable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast

from .._codecs.builtin import IdentityCoder
from .._codecs.coder import Coder
from .._codecs.copyout import LARGE_VALUE
from .._engine.delivery import Counted
from . import expiry as _expiry
from .expiry import ExpiringValues, Expiry, expiry_of, is_expired, now_ms
from .keys import encode_key
from .large import BufferedReads, LargeValues, read_large
from .versions import (
    PREFIX_SIZE,
    Entry,
    StoredValues,
    VersionSource,
    check_version,
    conflict,
    pack,
    pack_into,
    split,
)

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")
R = TypeVar("R")

DB = Any  # an lmdb _Database handle (py-lmdb does not export its type)
if TYPE_CHECKING:
    from .._engine.delivery import Txn
_IDENTITY = IdentityCoder()


class _Missing:
    """The type of MISSING: "no value given" where None is a value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


# Typed Any so that it can stand as the default of a parameter of any type.
MISSING: Any = _Missing()


class DbContext(Generic[K, V]):
    """One open database as the operations see it: LMDB's handle, the coders, the
    environment's max key size, whether LMDB stores the database as dupsort, and for a
    versioned database the environment's version counter (``versions``), for an expiring
    one its :class:`~aiolmdb._store.expiry.Expiry` (``expiry``).

    Made once a database is open (its handle and stored flags are known) and remade when a
    coder is replaced, so an operation gets everything it needs in one argument. In a
    versioned database ``vc`` is a :class:`~aiolmdb._store.versions.StoredValues` around the
    user's coder (``coder``): every read path strips the version as it decodes. In an
    expiring database ``vc`` is an :class:`~aiolmdb._store.expiry.ExpiringValues`: it strips
    the expiry, which each read checks first.
    """

    __slots__ = (
        "coder",
        "dbi",
        "dupsort",
        "expiry",
        "kc",
        "large",
        "max_key_size",
        "vc",
        "versioned",
        "versions",
    )

    def __init__(
        self,
        dbi: DB,
        kc: Coder[K],
        vc: Coder[V],
        max_key_size: int,
        dupsort: bool,
        versions: VersionSource | None = None,
        large: LargeValues | None = None,
        expiry: Expiry | None = None,
    ) -> None:
        self.dbi = dbi
        self.kc = kc
        self.coder = vc
        self.max_key_size = max_key_size
        self.dupsort = dupsort
        self.versions = versions
        self.versioned = versions is not None
        self.vc: Coder[V] = StoredValues(vc) if versions is not None else vc
        # An expiring database's default ttl, index id and sweeper (None: it never expires).
        self.expiry = expiry
        if expiry is not None:
            self.vc = ExpiringValues(vc)
        # Whether the database is known to hold large values (shared by its contexts): reads
        # then copy them without the GIL (see _large).
        self.large = LargeValues() if large is None else large

    def with_coders(self, kc: Coder[Any], vc: Coder[Any]) -> DbContext[Any, Any]:
        """This context with other coders (itself when they are the same objects)."""
        if kc is self.kc and vc is self.coder:
            return self
        return DbContext(
            self.dbi,
            kc,
            vc,
            self.max_key_size,
            self.dupsort,
            self.versions,
            self.large,
            self.expiry,
        )


def _draw(txn: Txn, ctx: DbContext[Any, Any]) -> int:
    """The version of this write transaction's writes (a versioned database's context)."""
    return ctx.versions.draw(txn)  # type: ignore[union-attr]


def value_error(exc: ValueError, key: object) -> ValueError:
    """A stored value that would not decode, named by its key (its coder saw only bytes)."""
    return ValueError(f"the value stored under key {key!r} cannot be decoded: {exc}")


def decode_value(vc: Coder[V], buf: bytes, key: object) -> V:
    """``vc.deserialize(buf)``, with a decoding error naming ``key``."""
    try:
        return vc.deserialize(buf)
    except ValueError as exc:
        raise value_error(exc, key) from exc


def shown_key(kc: Coder[Any], encoded: bytes) -> object:
    """A stored key as an error message shows it: decoded if its coder can, else its bytes."""
    try:
        return kc.deserialize(encoded)
    except Exception:
        return bytes(encoded)


def decode_values(kc: Coder[Any], vc: Coder[V], keys: list[bytes], values: list[bytes]) -> list[V]:
    """Decode a column of values; a value that would not decode is named by its key."""
    dv = vc.deserialize
    try:
        return [dv(v) for v in values]
    except ValueError as first:
        # Rare: find which one, to say whose value it is.
        for key, value in zip(keys, values, strict=False):
            try:
                dv(value)
            except ValueError as exc:
                raise value_error(exc, shown_key(kc, key)) from exc
        raise first


def get(txn: Txn, ctx: DbContext[K, V], key: K, default: D, *, _large: int = LARGE_VALUE) -> V | D:
    """The value of key, decoded, or default."""
    # The hottest coded path: encode_key's work inlined; its checks run only for a suspect size.
    kc = ctx.kc
    encoded = kc.serialize(key)
    if not 0 < len(encoded) <= ctx.max_key_size:
        encode_key(kc, key, ctx.max_key_size)
    large = ctx.large
    if not large.seen:
        buf = txn.get(encoded, None, ctx.dbi)
        if buf is None:
            return default
        if len(buf) >= _large:  # a local: a global lookup per get shows in the benchmarks
            large.seen = True
    else:
        buf = read_large(txn, large, encoded, ctx.dbi)
        if buf is None:
            return default
    if ctx.expiry is not None and is_expired(buf, now_ms()):
        return default
    try:
        return ctx.vc.deserialize(buf)
    except ValueError as exc:
        raise value_error(exc, key) from exc


def fetch(txn: Txn, ctx: DbContext[Any, Any], encoded: Any) -> bytes | None:
    """``txn.get(encoded, None, ctx.dbi)``; large values copied without the GIL once the
    database is known to hold them (and a large value read the plain way says so)."""
    large = ctx.large
    if large.seen:
        return read_large(txn, large, encoded, ctx.dbi)
    buf = txn.get(encoded, None, ctx.dbi)
    if buf is not None and len(buf) >= LARGE_VALUE:
        large.seen = True
    return buf


def get_bytes_plain(txn: Txn, db: DB, max_key_size: int, key: bytes, default: D) -> bytes | D:
    """``get_bytes`` without the large-value handling, for inline reads (they copy on the
    loop's thread whatever the size)."""
    if not 0 < len(key) <= max_key_size:
        encode_key(_IDENTITY, key, max_key_size)
    buf = txn.get(key, None, db)
    return default if buf is None else buf


def get_bytes(
    txn: Txn,
    db: DB,
    max_key_size: int,
    key: bytes,
    default: D,
    large: LargeValues,
    *,
    _large: int = LARGE_VALUE,
) -> bytes | D:
    """``get`` for bytes keys and values (IdentityCoder on both sides): no coder calls, as the
    transactions return ``bytes`` already (buffers=False)."""
    if not 0 < len(key) <= max_key_size:
        encode_key(_IDENTITY, key, max_key_size)
    if not large.seen:
        buf = txn.get(key, None, db)
        if buf is None:
            return default
        if len(buf) >= _large:  # a local: a global lookup per get shows in the benchmarks
            large.seen = True
        return buf
    buf = read_large(txn, large, key, db)
    return default if buf is None else buf


def get_multi(txn: Txn, ctx: DbContext[K, V], keys: list[K], default: D) -> dict[K, V | D]:
    """A dict with every requested key; missing keys map to default."""
    kc, vc, max_key_size = ctx.kc, ctx.vc, ctx.max_key_size
    if ctx.large.seen:
        reads = BufferedReads(txn, ctx.large.env)
        try:
            return _get_multi(reads.get, ctx, keys, default)
        finally:
            reads.close()
    if type(kc) is IdentityCoder and type(vc) is IdentityCoder and keys:
        # The checks run in C (map, set, min, max): a Python loop here is much slower.
        raw = cast("list[bytes]", keys)
        if (
            set(map(type, raw)) == {bytes}
            and min(map(len, raw)) > 0
            and max(map(len, raw)) <= max_key_size
        ):
            return _get_multi_bytes(txn, ctx, raw, default)
    return _get_multi(txn.get, ctx, keys, default)


def _get_multi(
    tget: Callable[[Any, None, DB], Any], ctx: DbContext[K, V], keys: list[K], default: D
) -> dict[K, V | D]:
    """get_multi's loop over the keys, reading with ``tget(key, None, db)``."""
    kc, vc, max_key_size, db = ctx.kc, ctx.vc, ctx.max_key_size, ctx.dbi
    large = ctx.large
    out: dict[K, V | D] = {}
    ser = kc.serialize
    des = vc.deserialize
    now = now_ms() if ctx.expiry is not None else -1
    for key in keys:
        seen = _seen(out, key, "get_multi")
        encoded = ser(key)
        if not 0 < len(encoded) <= max_key_size:
            encode_key(kc, key, max_key_size)
        if seen:
            _check_same_encoding(kc, out, key, encoded, "get_multi")
        buf = tget(encoded, None, db)
        if buf is not None and len(buf) >= LARGE_VALUE:
            large.seen = True
        if now >= 0 and buf is not None and is_expired(buf, now):
            buf = None
        try:
            out[key] = default if buf is None else des(buf)
        except ValueError as exc:
            raise value_error(exc, key) from exc
    return out


def _get_multi_bytes(
    txn: Txn, ctx: DbContext[Any, Any], keys: list[bytes], default: Any
) -> dict[Any, Any]:
    """bytes in, bytes out: LMDB's own loop (Cursor.getmulti, in C) does all the work."""
    cur = txn.cursor(ctx.dbi)
    try:
        pairs = cur.getmulti(keys)
    finally:
        cur.close()
    # getmulti returns the keys found, in the order asked: when that is every key (and none
    # twice) the dict is complete as it is; otherwise lay out every key first.
    if len(pairs) == len(keys):
        found = dict(pairs)
        if len(found) == len(keys):
            return found
    found = dict.fromkeys(keys, default)
    found.update(pairs)
    return found


def _seen(out: dict[Any, Any], key: object, op: str) -> bool:
    """Whether an equal key came earlier; TypeError naming the problem if it is unhashable."""
    try:
        return key in out
    except TypeError:
        raise TypeError(
            f"{op} keys must be hashable (they key the returned dict); got a {type(key).__name__}"
        ) from None


def _check_same_encoding(
    kc: Coder[Any], out: dict[Any, Any], key: object, encoded: Any, op: str
) -> None:
    # Python-equal keys share one slot of the returned dict; if they are stored under
    # different bytes (1 and 1.0 with JSONCoder), the answer for that slot would be ambiguous.
    earlier = next(k for k in out if k == key)
    if bytes(kc.serialize(earlier)) != bytes(encoded):
        raise ValueError(
            f"{op} keys {earlier!r} and {key!r} are equal in Python but encode to different "
            "bytes: they would share one entry of the returned dict; pass only one of them"
        )


def put(txn: Txn, ctx: DbContext[K, V], key: K, value: V, overwrite: bool) -> bool:
    """Store value under key; False when it was not stored (key or exact pair exists)."""
    if ctx.expiry is not None:
        return _put_expiring(txn, ctx, key, value, overwrite, DEFAULT_TTL)
    encoded = encode_key(ctx.kc, key, ctx.max_key_size)
    data = ctx.vc.serialize(value)
    if ctx.dupsort:
        # In a dupsort database put adds a value; an exact pair that exists is reported False.
        return bool(txn.put(encoded, data, dupdata=False, overwrite=overwrite, db=ctx.dbi))
    if len(data) >= LARGE_VALUE:
        ctx.large.wrote(txn)
    if ctx.versioned:
        if not overwrite and txn.get(encoded, None, ctx.dbi) is not None:
            return False
        # Positional arguments: py-lmdb's keyword parsing costs more.
        return bool(txn.put(encoded, pack(_draw(txn, ctx), data), True, True, False, ctx.dbi))
    return bool(txn.put(encoded, data, overwrite=overwrite, db=ctx.dbi))


def put_bytes(
    txn: Txn,
    db: DB,
    max_key_size: int,
    key: bytes,
    value: bytes,
    overwrite: bool,
    large: LargeValues,
) -> bool:
    """``put`` for bytes keys and values (IdentityCoder on both sides) in a plain database:
    no coder calls, and py-lmdb's positional arguments (its keyword parsing costs more)."""
    if not 0 < len(key) <= max_key_size:
        encode_key(_IDENTITY, key, max_key_size)
    if len(value) >= LARGE_VALUE:
        large.wrote(txn)
    return bool(txn.put(key, value, True, overwrite, False, db))


def get_stored(txn: Txn, ctx: DbContext[Any, Any], key: Any) -> bytes | None:
    """The bytes stored under key as the value coder wrote them (a versioned database's
    without the version), or None (``get_chunks`` in a transaction's view)."""
    buf = fetch(txn, ctx, encode_key(ctx.kc, key, ctx.max_key_size))
    if buf is not None and ctx.expiry is not None:
        return None if is_expired(buf, now_ms()) else bytes(buf[_expiry.HEADER_SIZE :])
    if buf is None or not ctx.versioned:
        return buf
    return bytes(split(key, buf)[1])


def stored_room(ctx: DbContext[Any, Any]) -> int:
    """How many bytes ``put_stored`` needs before the value's (room for the version or the
    expiry)."""
    if ctx.expiry is not None:
        return _expiry.HEADER_SIZE
    return PREFIX_SIZE if ctx.versioned else 0


def put_stored(txn: Txn, ctx: DbContext[Any, Any], key: Any, data: bytearray) -> bool:
    """Store ``data`` as the value's bytes, as they are (``put_chunks``); in a versioned
    database its first PREFIX_SIZE bytes are room left for the version, written here.
    LMDB copies from the bytearray itself: no ``bytes`` copy of a large value is made."""
    encoded = encode_key(ctx.kc, key, ctx.max_key_size)
    if ctx.dupsort:  # its values are at most max_key_size bytes: never large
        return bool(txn.put(encoded, data, dupdata=False, db=ctx.dbi))
    if len(data) >= LARGE_VALUE:
        ctx.large.wrote(txn)
    ex = ctx.expiry
    if ex is not None:
        old = txn.get(encoded, None, ctx.dbi)
        at = ex.expiry(DEFAULT_TTL, now_ms())
        _expiry.pack_into(data, at)
        ex.unindex(txn, encoded, old)
        txn.put(encoded, data, True, True, False, ctx.dbi)
        ex.index(txn, encoded, at)
        return True
    if ctx.versioned:
        pack_into(data, _draw(txn, ctx))
    return bool(txn.put(encoded, data, True, True, False, ctx.dbi))


def put_multi(
    txn: Txn, ctx: DbContext[K, V], items: list[tuple[K, V]], ttl: int | None = -1
) -> int:
    """Store every (key, value) pair; the engine's child transaction makes it all or nothing.

    Returns how many pairs were added (overwrites count; in a dupsort database an exact pair
    that already exists does not). ``ttl``: as :func:`put_ttl`'s, for every pair.
    """
    if ctx.expiry is not None:
        return _put_multi_expiring(txn, ctx, items, ttl)
    if ttl != DEFAULT_TTL:
        raise _not_expiring()
    tput = txn.put
    kc, max_key_size, db, dupsort = ctx.kc, ctx.max_key_size, ctx.dbi, ctx.dupsort
    ser_k = kc.serialize
    ser_v = ctx.vc.serialize
    # A versioned database: one version for the whole call (one atomic write).
    version = _draw(txn, ctx) if ctx.versioned and items else 0
    large = LARGE_VALUE  # a local: the loop tests every value against it
    added = 0
    for index, pair in enumerate(items):
        try:
            key, value = pair
        except (TypeError, ValueError):
            raise TypeError(
                f"put_multi item {index} must be a (key, value) pair; got a {type(pair).__name__}"
            ) from None
        encoded = ser_k(key)
        if not 0 < len(encoded) <= max_key_size:
            encode_key(kc, key, max_key_size)
        if dupsort:  # its values are at most max_key_size bytes: never large
            added += tput(encoded, ser_v(value), dupdata=False, db=db)
            continue
        data = ser_v(value)
        if len(data) >= large:  # what aiolmdb load writes with: it marks too
            ctx.large.wrote(txn)
        if version:
            added += tput(encoded, pack(version, data), db=db)
        else:
            added += tput(encoded, data, db=db)
    return added


def delete(txn: Txn, ctx: DbContext[K, V], key: K, value: Any = MISSING) -> bool:
    """Delete key, or only the pair (key, value) when a value is given; True if found.

    Without a value every value of a dupsort key goes. With one, only that exact pair: in a
    plain database the key is deleted only if it holds that value (LMDB would ignore it).
    """
    db = ctx.dbi
    encoded = encode_key(ctx.kc, key, ctx.max_key_size)
    if ctx.expiry is not None:
        return _delete_expiring(txn, ctx, encoded, value)
    if value is MISSING:
        return bool(txn.delete(encoded, db=db))
    data = ctx.vc.serialize(value)
    if ctx.versioned:
        stored = txn.get(encoded, None, db)
        if stored is None or split(key, stored)[1] != bytes(data):
            return False
        return bool(txn.delete(encoded, db=db))
    if not len(data):
        # py-lmdb reads an empty value as "no value" and would delete every value of the key;
        # LMDB never stores an empty duplicate, so there is no such pair.
        if ctx.dupsort:
            return False
        return txn.get(encoded, None, db) == b"" and bool(txn.delete(encoded, db=db))
    if ctx.dupsort:
        return bool(txn.delete(encoded, data, db=db))
    return txn.get(encoded, None, db) == bytes(data) and bool(txn.delete(encoded, db=db))


def delete_multi(txn: Txn, ctx: DbContext[K, V], keys: list[K]) -> dict[K, bool]:
    """Delete every key; a dict of key -> whether it existed."""
    out: dict[K, bool] = {}
    tdel = txn.delete
    kc, max_key_size, db = ctx.kc, ctx.max_key_size, ctx.dbi
    for key in keys:
        seen = _seen(out, key, "delete_multi")
        encoded = encode_key(kc, key, max_key_size)
        if seen:
            _check_same_encoding(kc, out, key, encoded, "delete_multi")
        if ctx.expiry is not None:
            out[key] = _delete_expiring(txn, ctx, encoded, MISSING) or out.get(key, False)
            continue
        out[key] = bool(tdel(encoded, db=db)) or out.get(key, False)
    return out


def exists(txn: Txn, ctx: DbContext[K, Any], key: K) -> bool:
    """Whether key is stored: a cursor lookup, the value neither copied nor decoded."""
    cur = txn.cursor(ctx.dbi)
    try:
        if not cur.set_key(encode_key(ctx.kc, key, ctx.max_key_size)):
            return False
        # An expired entry not yet swept is absent (its 8-byte expiry heads the value).
        return ctx.expiry is None or not is_expired(cur.value(), now_ms())
    finally:
        cur.close()


def pop(txn: Txn, ctx: DbContext[K, V], key: K, default: D) -> V | D:
    """Delete key and return its old value, decoded, or default."""
    ex = ctx.expiry
    if ex is not None:
        encoded = encode_key(ctx.kc, key, ctx.max_key_size)
        old = txn.get(encoded, None, ctx.dbi)
        if old is None:
            return default
        ex.unindex(txn, encoded, old)
        txn.delete(encoded, db=ctx.dbi)
        if is_expired(old, now_ms()):
            return default
        return decode_value(ctx.vc, old, key)
    buf = txn.pop(encode_key(ctx.kc, key, ctx.max_key_size), db=ctx.dbi)
    if buf is None:
        return default
    return decode_value(ctx.vc, buf, key)


def replace(txn: Txn, ctx: DbContext[K, V], key: K, value: V) -> V | None:
    """Store value under key and return the old value, decoded, or None."""
    encoded = encode_key(ctx.kc, key, ctx.max_key_size)
    data = ctx.vc.serialize(value)
    ex = ctx.expiry
    if ex is not None:
        now = now_ms()
        old = txn.get(encoded, None, ctx.dbi)
        _store_expiring(txn, ctx, encoded, data, old, ex.expiry(DEFAULT_TTL, now))
        if old is None or is_expired(old, now):
            return None
        return decode_value(ctx.vc, old, key)
    if ctx.versioned:
        data = pack(_draw(txn, ctx), data)
    old = txn.replace(encoded, data, db=ctx.dbi)
    if old is None:
        return None
    return decode_value(ctx.vc, old, key)


def update(txn: Txn, ctx: DbContext[K, V], key: K, fn: Callable[[V | D], V], default: D) -> V:
    """Apply fn(old) -> new atomically and return new (old is default when absent)."""
    encoded = encode_key(ctx.kc, key, ctx.max_key_size)
    buf = txn.get(encoded, None, ctx.dbi)
    ex = ctx.expiry
    if ex is not None:
        # A live entry keeps its expiry (as a counter under Redis's INCR does); an absent or
        # expired one gets the database's default.
        now = now_ms()
        live = None if buf is None or is_expired(buf, now) else buf
        new = fn(default if live is None else decode_value(ctx.vc, live, key))
        at = ex.expiry(DEFAULT_TTL, now) if live is None else expiry_of(live)
        _store_expiring(txn, ctx, encoded, ctx.vc.serialize(new), buf, at)
        return new
    new = fn(default if buf is None else decode_value(ctx.vc, buf, key))
    if isawaitable(new):  # a callable returning an awaitable that the caller could not spot
        close = getattr(new, "close", None)
        if close is not None:
            close()  # no "never awaited" warning on top of this error
        raise TypeError(
            f"update()'s fn returned the awaitable {new!r} for key {key!r}: fn runs on the "
            "writer thread inside the transaction and must return the new value itself; "
            "to await things, use 'async with env.begin(write=True) as txn'"
        )
    data = ctx.vc.serialize(new)
    if ctx.versioned:
        data = pack(_draw(txn, ctx), data)
    txn.put(encoded, data, db=ctx.dbi)
    return new


# ----------------------------------------------------------------- versions and conditions
def stored_values(ctx: DbContext[Any, V], op: str) -> StoredValues[V]:
    """The versioned database's value coder; ValueError naming ``op`` if not versioned."""
    vc = ctx.vc
    if not isinstance(vc, StoredValues):
        raise ValueError(
            f"{op} needs a versioned database: open it with open_db(name, versioned=True) "
            "(a database is versioned from its creation)"
        )
    return vc


def get_entry(txn: Txn, ctx: DbContext[K, V], key: K) -> Entry[V] | None:
    """The value of key with its version, or None (versioned databases)."""
    vc = stored_values(ctx, "get_entry")
    buf = fetch(txn, ctx, encode_key(ctx.kc, key, ctx.max_key_size))
    if buf is None:
        return None
    try:
        return vc.entry(buf)
    except ValueError as exc:
        raise value_error(exc, key) from exc


def get_multi_entries(txn: Txn, ctx: DbContext[K, V], keys: list[K]) -> dict[K, Entry[V] | None]:
    """A dict with every requested key: its Entry, or None when absent."""
    vc = stored_values(ctx, "get_multi_entries")
    kc, max_key_size, db, large = ctx.kc, ctx.max_key_size, ctx.dbi, ctx.large
    reads = BufferedReads(txn, ctx.large.env) if large.seen else None
    tget = txn.get if reads is None else reads.get
    out: dict[K, Entry[V] | None] = {}
    try:
        for key in keys:
            seen = _seen(out, key, "get_multi_entries")
            encoded = encode_key(kc, key, max_key_size)
            if seen:
                _check_same_encoding(kc, out, key, encoded, "get_multi_entries")
            buf = tget(encoded, None, db)
            if buf is not None and len(buf) >= LARGE_VALUE:
                large.seen = True
            try:
                out[key] = None if buf is None else vc.entry(buf)
            except ValueError as exc:
                raise value_error(exc, key) from exc
    finally:
        if reads is not None:
            reads.close()
    return out


# A conditional write whose condition failed: False, with the conflict counted (the engine, or
# the synchronous view, unwraps it). A raised ConflictError counts as one as well.
NOT_WRITTEN: Final = Counted(False)


def put_call(
    key: K,
    value: V,
    overwrite: bool,
    if_version: int | None,
    if_value: Any,
    raise_on_conflict: bool,
    ttl: object = MISSING,
) -> tuple[Callable[..., bool], tuple[Any, ...]]:
    """What ``put(key, value, overwrite=, if_version=, if_value=, raise_on_conflict=, ttl=)``
    runs: the operation and its arguments after the context. The plain put unless a condition
    or a ttl is given; all are ATOMIC."""
    ttl = ttl_arg(ttl)
    if if_version is None and if_value is MISSING and not raise_on_conflict:
        if ttl == DEFAULT_TTL:
            return put, (key, value, overwrite)
        return put_ttl, (key, value, overwrite, ttl)
    return put_if, (key, value, overwrite, if_version, if_value, raise_on_conflict, ttl)


def delete_call(
    key: K, value: Any, if_version: int | None, if_value: Any, raise_on_conflict: bool
) -> tuple[Callable[..., bool], tuple[Any, ...]]:
    """What ``delete(key, value, if_version=, if_value=, raise_on_conflict=)`` runs (as
    ``put_call``)."""
    if if_value is not MISSING:  # put's name for the condition a value is in a plain database
        if value is not MISSING:
            raise TypeError("delete() takes a value or if_value=, not both")
        return delete_if_value, (key, if_value, if_version, raise_on_conflict)
    if if_version is None and not raise_on_conflict:
        return delete, (key, value)
    return delete_if, (key, value, if_version, raise_on_conflict)


def _check_condition(ctx: DbContext[Any, Any], if_version: int | None) -> None:
    if if_version is None:
        return
    check_version(if_version)
    if not ctx.versioned:
        raise ValueError(
            "if_version needs a versioned database (open_db(name, versioned=True)); "
            "this one is not: use if_value= to compare the stored value instead"
        )


def put_if(
    txn: Txn,
    ctx: DbContext[K, V],
    key: K,
    value: V,
    overwrite: bool,
    if_version: int | None,
    if_value: Any,
    raise_on_conflict: bool,
    ttl: int | None = -1,
) -> bool:
    """``put`` with conditions: store only if the stored version is ``if_version`` and the
    stored value encodes as ``if_value`` does (each when given), or, with overwrite=False,
    if the key is absent. When a condition fails: ``NOT_WRITTEN`` (False, with the conflict
    counted), or ConflictError with ``raise_on_conflict``. ``ttl``: as :func:`put_ttl`'s."""
    _check_condition(ctx, if_version)
    if ttl != DEFAULT_TTL and ctx.expiry is None:
        raise _not_expiring()
    conditional = if_version is not None or if_value is not MISSING
    if ctx.dupsort and conditional:
        raise ValueError("if_version/if_value are not supported in a dupsort database")
    if conditional and not overwrite:
        raise ValueError(
            "overwrite=False (insert if absent) cannot be combined with if_version/if_value "
            "(write if present and unchanged)"
        )
    if ctx.dupsort:  # raise_on_conflict alone: put, raising when nothing was stored
        if put(txn, ctx, key, value, overwrite):
            return True
        raise conflict(key, None, None, "that pair exists")
    db = ctx.dbi
    encoded = encode_key(ctx.kc, key, ctx.max_key_size)
    data = ctx.vc.serialize(value)
    expected = None if if_value is MISSING else bytes(ctx.vc.serialize(if_value))
    stored = old = txn.get(encoded, None, db)
    now = now_ms() if ctx.expiry is not None else 0
    if now and stored is not None and is_expired(stored, now):
        stored = None  # an expired entry is absent
    if not overwrite:
        actual = _stored_version(ctx, key, stored)
        reason = "" if stored is None else "it exists (overwrite=False)"
    elif conditional:
        actual, reason = _unmet(ctx, key, stored, if_version, expected, "if_value")
    else:  # raise_on_conflict alone: no condition, so nothing to conflict with
        actual, reason = None, ""
    if reason:
        if raise_on_conflict:
            raise conflict(key, if_version, actual, reason)
        return NOT_WRITTEN  # type: ignore[return-value]  # the engine or the view unwraps it
    if ctx.expiry is not None:
        _store_expiring(txn, ctx, encoded, data, old, ctx.expiry.expiry(ttl, now))
        return True
    if ctx.versioned:
        data = pack(_draw(txn, ctx), data)
    txn.put(encoded, data, db=db)
    return True


def _stored_version(ctx: DbContext[Any, Any], key: object, stored: bytes | None) -> int | None:
    """The version of a stored entry (None: absent, or a plain database)."""
    if stored is None or not ctx.versioned:
        return None
    return split(key, stored)[0]


def _unmet(
    ctx: DbContext[Any, Any],
    key: object,
    stored: bytes | None,
    if_version: int | None,
    expected: bytes | None,
    what: str,
) -> tuple[int | None, str]:
    """The stored entry's version, and why the write's conditions fail ("" if they hold): the
    entry must exist, with version ``if_version`` and value bytes ``expected`` (each when
    given)."""
    if stored is None:
        return None, "it is absent"
    actual: int | None = None
    current: Any = stored
    if ctx.versioned:
        actual, current = split(key, stored)
    elif ctx.expiry is not None:
        current = stored[_expiry.HEADER_SIZE :]
    if if_version is not None and actual != if_version:
        return actual, f"its version is {actual}, not {if_version}"
    if expected is not None and bytes(current) != expected:
        return actual, f"its value differs from {what}"
    return actual, ""


def delete_if(
    txn: Txn,
    ctx: DbContext[K, V],
    key: K,
    value: Any,
    if_version: int | None,
    raise_on_conflict: bool,
) -> bool:
    """``delete`` with conditions: only if the stored version is ``if_version`` (and, with a
    value, the key holds it). False when it was not deleted (``NOT_WRITTEN`` when a condition
    failed: the conflict is counted), or ConflictError with ``raise_on_conflict``."""
    _check_condition(ctx, if_version)
    if ctx.dupsort:  # no version: raise_on_conflict for a pair that is absent
        if delete(txn, ctx, key, value):
            return True
        if raise_on_conflict and value is not MISSING:
            raise conflict(key, None, None, "that pair is absent")
        return False
    db = ctx.dbi
    encoded = encode_key(ctx.kc, key, ctx.max_key_size)
    expected = None if value is MISSING else bytes(ctx.vc.serialize(value))
    stored = old = txn.get(encoded, None, db)
    if ctx.expiry is not None and stored is not None and is_expired(stored, now_ms()):
        stored = None  # an expired entry is absent
    actual, reason = _unmet(ctx, key, stored, if_version, expected, "the value given")
    if reason:
        conditional = if_version is not None or expected is not None
        if raise_on_conflict and conditional:
            raise conflict(key, if_version, actual, reason)
        return NOT_WRITTEN if conditional else False  # type: ignore[return-value]
    if ctx.expiry is not None:
        ctx.expiry.unindex(txn, encoded, old)
    return bool(txn.delete(encoded, db=db))


def delete_if_value(
    txn: Txn,
    ctx: DbContext[K, V],
    key: K,
    if_value: Any,
    if_version: int | None,
    raise_on_conflict: bool,
) -> bool:
    """``delete(key, if_value=x)``: delete only if the stored value encodes as ``x`` does (as
    ``delete(key, x)`` in a plain database; refused in a dupsort one, as ``put``'s
    ``if_value`` is, since there a value names one pair rather than a condition)."""
    if ctx.dupsort:
        raise ValueError(
            "if_value is not supported in a dupsort database: delete(key, value) deletes "
            "that one pair"
        )
    return delete_if(txn, ctx, key, if_value, if_version, raise_on_conflict)


def restore_entries(txn: Txn, ctx: DbContext[K, V], items: list[tuple[K, Entry[V]]]) -> int:
    """Store entries with the versions they carry (restoring a dump) and raise the version
    counter to the highest, so later writes draw higher ones. Returns how many were stored."""
    stored_values(ctx, "restore_entries")
    kc, max_key_size, db, ser_v = ctx.kc, ctx.max_key_size, ctx.dbi, ctx.vc.serialize
    highest = 0
    for index, pair in enumerate(items):
        try:
            key, entry = pair
        except (TypeError, ValueError):
            raise TypeError(
                f"restore_entries item {index} must be a (key, Entry) pair; "
                f"got a {type(pair).__name__}"
            ) from None
        if not isinstance(entry, Entry):
            raise TypeError(
                f"restore_entries item {index} must hold an aiolmdb.Entry; "
                f"got a {type(entry).__name__}"
            )
        version = check_version(entry.version, "an Entry's version")
        txn.put(encode_key(kc, key, max_key_size), pack(version, ser_v(entry.value)), db=db)
        highest = max(highest, version)
    if highest:
        versions = ctx.versions
        assert versions is not None  # stored_values() checked it
        versions.raise_to(txn, highest)
    return len(items)


# ----------------------------------------------------------------- expiring databases
# A write's ttl in an operation's arguments: milliseconds, None (never expires), or this: the
# database's default.
DEFAULT_TTL: Final = -1


def ttl_arg(ttl: object) -> int | None:
    """A write's ``ttl=`` as the operations take it (checked on the caller's thread)."""
    if ttl is MISSING:
        return DEFAULT_TTL
    if ttl is None:
        return None
    return _expiry.check_ttl(ttl)


def _not_expiring() -> ValueError:
    return ValueError(
        "ttl= needs an expiring database, and this one does not expire: open it with "
        "open_db(name, ttl=seconds) (a database expires from its creation)"
    )


def put_ttl(
    txn: Txn, ctx: DbContext[K, V], key: K, value: V, overwrite: bool, ttl: int | None
) -> bool:
    """``put`` with its own ``ttl`` (ms; None: never expires) in an expiring database."""
    if ctx.expiry is None:
        raise _not_expiring()
    return _put_expiring(txn, ctx, key, value, overwrite, ttl)


def _put_expiring(
    txn: Txn, ctx: DbContext[K, V], key: K, value: V, overwrite: bool, ttl: int | None
) -> bool:
    ex = ctx.expiry
    assert ex is not None
    encoded = encode_key(ctx.kc, key, ctx.max_key_size)
    data = ctx.vc.serialize(value)
    now = now_ms()
    old = txn.get(encoded, None, ctx.dbi)
    if old is not None and not overwrite and not is_expired(old, now):
        return False  # an expired entry counts as absent
    _store_expiring(txn, ctx, encoded, data, old, ex.expiry(ttl, now))
    return True


def _store_expiring(
    txn: Txn, ctx: DbContext[Any, Any], encoded: Any, data: Any, old: Any, at: int
) -> None:
    """Store ``data`` expiring ``at``, replacing ``old`` (the stored value, or None) in the
    index."""
    ex = ctx.expiry
    assert ex is not None
    if len(data) + _expiry.HEADER_SIZE >= LARGE_VALUE:
        ctx.large.wrote(txn)
    ex.unindex(txn, encoded, old)
    txn.put(encoded, _expiry.pack(at, data), True, True, False, ctx.dbi)
    ex.index(txn, encoded, at)


def _put_multi_expiring(
    txn: Txn, ctx: DbContext[K, V], items: list[tuple[K, V]], ttl: int | None
) -> int:
    ex = ctx.expiry
    assert ex is not None
    kc, max_key_size, db, ser_v = ctx.kc, ctx.max_key_size, ctx.dbi, ctx.vc.serialize
    now = now_ms()
    at = ex.expiry(ttl, now)
    for index, pair in enumerate(items):
        try:
            key, value = pair
        except (TypeError, ValueError):
            raise TypeError(
                f"put_multi item {index} must be a (key, value) pair; got a {type(pair).__name__}"
            ) from None
        encoded = encode_key(kc, key, max_key_size)
        data = ser_v(value)
        _store_expiring(txn, ctx, encoded, data, txn.get(encoded, None, db), at)
    return len(items)


def _delete_expiring(txn: Txn, ctx: DbContext[Any, Any], encoded: Any, value: Any) -> bool:
    """Delete an entry of an expiring database (only if it holds ``value``, when given); an
    expired one goes too, but counts as absent (False)."""
    old = txn.get(encoded, None, ctx.dbi)
    if old is None:
        return False
    live = not is_expired(old, now_ms())
    if value is not MISSING:
        data = ctx.vc.serialize(value)
        if not live or bytes(old[_expiry.HEADER_SIZE :]) != bytes(data):
            return False
    assert ctx.expiry is not None
    ctx.expiry.unindex(txn, encoded, old)
    txn.delete(encoded, db=ctx.dbi)
    return live


def drop(txn: Txn, ctx: DbContext[Any, Any], delete: bool) -> None:
    """Empty the database, or delete it when delete is True."""
    if ctx.expiry is not None:
        ctx.expiry.clear(txn)
    txn.drop(ctx.dbi, delete=delete)


def count(txn: Txn, ctx: DbContext[Any, Any]) -> int:
    """Number of entries (from the database's stat; in an expiring database, the entries
    that have not expired, counted from their expiries)."""
    if ctx.expiry is not None:
        now = now_ms()
        cur = txn.cursor(ctx.dbi)
        try:
            return sum(1 for v in cur.iternext(keys=False, values=True) if not is_expired(v, now))
        finally:
            cur.close()
    return int(txn.stat(ctx.dbi)["entries"])


def stat(txn: Txn, ctx: DbContext[Any, Any]) -> dict[str, Any]:
    """The database's LMDB stat."""
    return dict(txn.stat(ctx.dbi))


def prefetch(txn: Txn, ctx: DbContext[Any, Any], keys: list[Any]) -> int:
    """Read each key's value and drop it, so that its pages (branch, leaf and a large value's
    overflow pages) are in the page cache; the number of keys found. Nothing is decoded."""
    kc, max_key_size, found = ctx.kc, ctx.max_key_size, 0
    for key in keys:
        if fetch(txn, ctx, encode_key(kc, key, max_key_size)) is not None:
            found += 1
    return found


# Operations that make at most one LMDB change and raise, if at all, before making it (coder
# and size errors come first; LMDB checks sizes before modifying). The writer runs them without
# a child transaction: a failure leaves the batch's transaction as it was. The surface says so
# on the write's request (``submit_write(fn, args, fn in ATOMIC)``): the engine never sees this
# set. (pop and replace are
# not among them: they decode the old value after changing it, and decoding may fail.) In a
# versioned database a write also bumps the version counter first: if the write then failed,
# the counter would have skipped a version, which is harmless (versions need only grow).
#
# In an expiring database a write also changes the expiry index (the old pair out, the new one
# in), after every check that can fail: what could fail after the first change is a full map,
# which aborts the whole batch anyway.
ATOMIC: frozenset[Callable[..., Any]] = frozenset(
    {put, put_bytes, put_if, put_stored, put_ttl, delete, delete_if, update, drop}
)
