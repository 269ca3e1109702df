"""The operations: small functions the engine runs inside a transaction on a worker thread.

Each takes the transaction first, then plain arguments (a tuple, not a closure, keeps the
per-operation cost low). Coders run here, on the worker thread, never on the event loop.
The same functions back the synchronous views that ``run(fn)`` hands to user code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lmdb

from .coders import Coder, IdentityCoder
from .errors import InvalidKeyError

DB = Any  # an lmdb _Database handle (py-lmdb does not export its type)
_IDENTITY = IdentityCoder()


def key_error(key: object, encoded: Any, max_key_size: int) -> Exception | None:
    """Diagnose LMDB's BadValsizeError for a key: an InvalidKeyError naming what is wrong."""
    size = len(encoded)
    if size == 0:
        return InvalidKeyError(f"empty key ({key!r} encodes to 0 bytes); LMDB keys need >= 1 byte")
    if size > max_key_size:
        return InvalidKeyError(
            f"key of {size} bytes is longer than this environment's max_key_size() "
            f"({max_key_size} bytes)"
        )
    return None


def encode_key(kc: Coder[Any], key: Any, max_key_size: int) -> Any:
    """Serialize a key and check its size, raising InvalidKeyError with the reason."""
    encoded = kc.serialize(key)
    if not 0 < len(encoded) <= max_key_size:
        err = key_error(key, encoded, max_key_size)
        if err is not None:
            raise err
    return encoded


def get(
    txn: lmdb.Transaction, db: DB, kc: Coder[Any], vc: Coder[Any], mks: int, key: Any, default: Any
) -> Any:
    """The value of key, decoded, or default."""
    # The hottest path: encode_key's work inlined; its checks run only for a suspect size.
    encoded = kc.serialize(key)
    if not 0 < len(encoded) <= mks:
        encode_key(kc, key, mks)
    buf = txn.get(encoded, None, db)
    if buf is None:
        return default
    return vc.deserialize(buf)


def get_bytes(txn: lmdb.Transaction, db: DB, mks: int, key: bytes, default: Any) -> Any:
    """``get`` for bytes keys and values (IdentityCoder on both sides): no coder calls, as the
    transactions return ``bytes`` already (buffers=False)."""
    if not 0 < len(key) <= mks:
        encode_key(_IDENTITY, key, mks)
    buf = txn.get(key, None, db)
    return default if buf is None else buf


def get_multi(
    txn: lmdb.Transaction,
    db: DB,
    kc: Coder[Any],
    vc: Coder[Any],
    mks: int,
    keys: list[Any],
    default: Any,
) -> dict[Any, Any]:
    """A dict with every requested key; missing keys map to default."""
    if (
        type(kc) is IdentityCoder
        and type(vc) is IdentityCoder
        and keys
        # The checks run in C (map, set, min, max): a Python loop here cost 1.5 ms per 20k.
        and set(map(type, keys)) == {bytes}
        and min(map(len, keys)) > 0
        and max(map(len, keys)) <= mks
    ):
        # bytes in, bytes out: LMDB's own loop (Cursor.getmulti, in C) does all the work.
        cur = txn.cursor(db)
        try:
            pairs = cur.getmulti(keys)
        finally:
            cur.close()
        # getmulti returns the keys found, in the order asked: when that is every key (and
        # none twice) the dict is complete as it is; otherwise lay out every key first.
        if len(pairs) == len(keys):
            found = dict(pairs)
            if len(found) == len(keys):
                return found
        found = dict.fromkeys(keys, default)
        found.update(pairs)
        return found
    out: dict[Any, Any] = {}
    tget = txn.get
    ser = kc.serialize
    des = vc.deserialize
    for key in keys:
        seen = _seen(out, key, "get_multi")
        encoded = ser(key)
        if not 0 < len(encoded) <= mks:
            encode_key(kc, key, mks)
        if seen:
            _check_same_encoding(kc, out, key, encoded, "get_multi")
        buf = tget(encoded, None, db)
        out[key] = default if buf is None else des(buf)
    return out


def _seen(out: dict[Any, Any], key: Any, op: str) -> bool:
    """Whether an equal key came earlier; TypeError naming the problem if it is unhashable."""
    try:
        return key in out
    except TypeError:
        raise TypeError(
            f"{op} keys must be hashable (they key the returned dict); got a {type(key).__name__}"
        ) from None


def _check_same_encoding(
    kc: Coder[Any], out: dict[Any, Any], key: Any, encoded: Any, op: str
) -> None:
    # Python-equal keys share one slot of the returned dict; if they are stored under
    # different bytes (1 and 1.0 with JSONCoder), the answer for that slot would be ambiguous.
    earlier = next(k for k in out if k == key)
    if bytes(kc.serialize(earlier)) != bytes(encoded):
        raise ValueError(
            f"{op} keys {earlier!r} and {key!r} are equal in Python but encode to different "
            "bytes: they would share one entry of the returned dict; pass only one of them"
        )


def put(
    txn: lmdb.Transaction,
    db: DB,
    kc: Coder[Any],
    vc: Coder[Any],
    mks: int,
    key: Any,
    value: Any,
    overwrite: bool,
    dupsort: bool,
) -> bool:
    """Store value under key; False when it was not stored (key or exact pair exists)."""
    encoded = encode_key(kc, key, mks)
    data = vc.serialize(value)
    if dupsort:
        # In a dupsort database put adds a value; an exact pair that exists is reported False.
        return bool(txn.put(encoded, data, dupdata=False, overwrite=overwrite, db=db))
    return bool(txn.put(encoded, data, overwrite=overwrite, db=db))


def put_bytes(
    txn: lmdb.Transaction, db: DB, mks: int, key: bytes, value: bytes, overwrite: bool
) -> bool:
    """``put`` for bytes keys and values (IdentityCoder on both sides) in a plain database:
    no coder calls, and py-lmdb's positional arguments (its keyword parsing costs more)."""
    if not 0 < len(key) <= mks:
        encode_key(_IDENTITY, key, mks)
    return bool(txn.put(key, value, True, overwrite, False, db))


def put_multi(
    txn: lmdb.Transaction,
    db: DB,
    kc: Coder[Any],
    vc: Coder[Any],
    mks: int,
    items: list[Any],
    dupsort: bool,
) -> int:
    """Store every (key, value) pair; the engine's child transaction makes it all or nothing.

    Returns how many pairs were added (overwrites count; in a dupsort database an exact pair
    that already exists does not).
    """
    tput = txn.put
    ser_k = kc.serialize
    ser_v = vc.serialize
    added = 0
    for index, pair in enumerate(items):
        try:
            key, value = pair
        except (TypeError, ValueError):
            raise TypeError(
                f"put_multi item {index} must be a (key, value) pair; got a {type(pair).__name__}"
            ) from None
        encoded = ser_k(key)
        if not 0 < len(encoded) <= mks:
            encode_key(kc, key, mks)
        if dupsort:
            added += tput(encoded, ser_v(value), dupdata=False, db=db)
        else:
            added += tput(encoded, ser_v(value), db=db)
    return added


def delete(
    txn: lmdb.Transaction,
    db: DB,
    kc: Coder[Any],
    vc: Coder[Any],
    mks: int,
    key: Any,
    value: Any,
    has_value: bool,
    dupsort: bool,
) -> bool:
    """Delete key, or only the pair (key, value) when a value is given; True if found.

    Without a value every value of a dupsort key goes. With one, only that exact pair: in a
    plain database the key is deleted only if it holds that value (LMDB would ignore it).
    """
    encoded = encode_key(kc, key, mks)
    if not has_value:
        return bool(txn.delete(encoded, db=db))
    data = vc.serialize(value)
    if not len(data):
        # py-lmdb reads an empty value as "no value" and would delete every value of the key;
        # LMDB never stores an empty duplicate, so there is no such pair.
        if dupsort:
            return False
        return txn.get(encoded, None, db) == b"" and bool(txn.delete(encoded, db=db))
    if dupsort:
        return bool(txn.delete(encoded, data, db=db))
    return txn.get(encoded, None, db) == bytes(data) and bool(txn.delete(encoded, db=db))


def delete_multi(
    txn: lmdb.Transaction, db: DB, kc: Coder[Any], vc: Coder[Any], mks: int, keys: list[Any]
) -> dict[Any, bool]:
    """Delete every key; a dict of key -> whether it existed."""
    out: dict[Any, bool] = {}
    tdel = txn.delete
    for key in keys:
        seen = _seen(out, key, "delete_multi")
        encoded = encode_key(kc, key, mks)
        if seen:
            _check_same_encoding(kc, out, key, encoded, "delete_multi")
        out[key] = bool(tdel(encoded, db=db)) or out.get(key, False)
    return out


def pop(
    txn: lmdb.Transaction, db: DB, kc: Coder[Any], vc: Coder[Any], mks: int, key: Any, default: Any
) -> Any:
    """Delete key and return its old value, decoded, or default."""
    buf = txn.pop(encode_key(kc, key, mks), db=db)
    if buf is None:
        return default
    return vc.deserialize(buf)


def replace(
    txn: lmdb.Transaction, db: DB, kc: Coder[Any], vc: Coder[Any], mks: int, key: Any, value: Any
) -> Any:
    """Store value under key and return the old value, decoded, or None."""
    encoded = encode_key(kc, key, mks)
    data = vc.serialize(value)
    old = txn.replace(encoded, data, db=db)
    if old is None:
        return None
    return vc.deserialize(old)


def update(
    txn: lmdb.Transaction,
    db: DB,
    kc: Coder[Any],
    vc: Coder[Any],
    mks: int,
    key: Any,
    fn: Callable[[Any], Any],
    default: Any,
) -> Any:
    """Apply fn(old) -> new atomically and return new (old is default when absent)."""
    encoded = encode_key(kc, key, mks)
    buf = txn.get(encoded, None, db)
    new = fn(default if buf is None else vc.deserialize(buf))
    txn.put(encoded, vc.serialize(new), db=db)
    return new


def drop(txn: lmdb.Transaction, db: DB, delete: bool) -> None:
    """Empty the database, or delete it when delete is True."""
    txn.drop(db, delete=delete)


def count(txn: lmdb.Transaction, db: DB) -> int:
    """Number of entries (from the database's stat)."""
    return int(txn.stat(db)["entries"])


def stat(txn: lmdb.Transaction, db: DB) -> dict[str, Any]:
    """The database's LMDB stat."""
    return dict(txn.stat(db))


def call(txn: lmdb.Transaction, fn: Callable[[Any], Any], make_view: Callable[[Any], Any]) -> Any:
    """Run user code: fn(view) where view wraps txn (``run``)."""
    return fn(make_view(txn))


# Operations that make at most one LMDB change and raise, if at all, before making it (coder
# and size errors come first; LMDB checks sizes before modifying). The writer runs them without
# a child transaction: a failure leaves the batch's transaction as it was. (pop and replace are
# not among them: they decode the old value after changing it, and decoding may fail.)
ATOMIC: frozenset[Callable[..., Any]] = frozenset({put, put_bytes, delete, update, drop})
