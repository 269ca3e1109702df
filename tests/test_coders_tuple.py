"""TupleCoder: byte-identical to FoundationDB's tuple layer (``fdb.tuple`` is the oracle), byte
order is tuple order, prefixes select exactly the keys that start with them, and stored bytes
it does not write are refused, never decoded into a wrong tuple."""

from __future__ import annotations

import asyncio
import enum
import functools
import math
import uuid
from typing import Any, NamedTuple

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_coders import decode_like_lmdb

import aiolmdb
from aiolmdb import TupleCoder

fdb_tuple = pytest.importorskip("fdb.tuple", reason="the oracle: pip install foundationdb")

CODER = TupleCoder()

# Every element type, nested tuples included; ints up to the 255-byte limit.
leaves = (
    st.none()
    | st.binary(max_size=6)
    | st.text(max_size=6)
    | st.integers()
    | st.integers(min_value=-(2**2040) + 1, max_value=2**2040 - 1)
    | st.sampled_from([0, 2**64 - 2, 2**64 - 1, 2**64, -(2**64) + 2, -(2**64) + 1, -(2**64)])
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.uuids()
)
elements = st.recursive(leaves, lambda kids: st.lists(kids, max_size=3).map(tuple), max_leaves=8)
tuples = st.lists(elements, max_size=5).map(tuple)


def typed(value: Any) -> Any:
    """``value`` with the type of every element made part of it: ``1``, ``1.0`` and ``True``
    (equal in Python) are different keys, and so are ``0.0`` and ``-0.0``."""
    if isinstance(value, tuple):
        return ("tuple", tuple(typed(v) for v in value))
    if isinstance(value, float):
        return ("float", value, math.copysign(1.0, value))
    return (type(value).__name__, value)


def assert_same(actual: Any, expected: Any) -> None:
    assert typed(actual) == typed(expected)


# ------------------------------------------------------------------------------ the oracle
@given(tuples)
@settings(max_examples=400)
def test_bytes_are_foundationdb_tuple_layer(t: tuple[Any, ...]) -> None:
    assert CODER.serialize(t) == fdb_tuple.pack(t)


@given(tuples)
@settings(max_examples=400)
def test_round_trip_keeps_types(t: tuple[Any, ...]) -> None:
    stored = CODER.serialize(t)
    assert_same(CODER.deserialize(stored), t)
    assert_same(CODER.deserialize(memoryview(stored)), t)
    assert_same(CODER.deserialize(bytearray(stored)), t)
    assert_same(decode_like_lmdb(CODER, stored), t)
    assert_same(fdb_tuple.unpack(stored), t)


@given(tuples, tuples)
@settings(max_examples=400)
def test_byte_order_is_the_tuple_layers_order(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    ea, eb = CODER.serialize(a), CODER.serialize(b)
    assert (ea > eb) - (ea < eb) == fdb_tuple.compare(a, b)


@given(st.lists(tuples, max_size=12))
def test_sorting_by_bytes_is_sorting_the_tuples(keys: list[tuple[Any, ...]]) -> None:
    by_bytes = sorted(keys, key=CODER.serialize)
    by_tuples = sorted(keys, key=functools.cmp_to_key(fdb_tuple.compare))
    assert [CODER.serialize(k) for k in by_bytes] == [CODER.serialize(k) for k in by_tuples]


# Same type at each position: byte order is Python's own order.
_LEAF = {
    "none": st.none(),
    "bytes": st.binary(max_size=4),
    "str": st.text(max_size=4),
    "int": st.integers() | st.integers(min_value=-(2**100), max_value=2**100),
    "float": st.floats(allow_nan=False),
    "bool": st.booleans(),
    "uuid": st.uuids(),
}
_shape = st.lists(
    st.sampled_from(sorted(_LEAF)) | st.lists(st.sampled_from(sorted(_LEAF)), max_size=3),
    max_size=4,
)


def _of_shape(shape: list[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    parts = [st.tuples(*(_LEAF[n] for n in s)) if isinstance(s, list) else _LEAF[s] for s in shape]
    return st.tuples(*parts)


def _signed_zeros(value: Any) -> Any:
    """``value`` with each float ``x`` as ``(x, sign)``: Python finds ``-0.0 == 0.0``, while
    the encoding puts ``-0.0`` just before ``0.0`` (two keys, as in FoundationDB)."""
    if isinstance(value, float):
        return (value, math.copysign(1.0, value))
    if isinstance(value, tuple):
        return tuple(_signed_zeros(v) for v in value)
    return value


@given(_shape.flatmap(lambda shape: st.lists(_of_shape(shape), min_size=2, max_size=10)))
def test_same_types_sort_as_python_sorts(keys: list[tuple[Any, ...]]) -> None:
    for a in keys:
        for b in keys:
            if _signed_zeros(a) < _signed_zeros(b):
                assert CODER.serialize(a) < CODER.serialize(b), (a, b)


def test_type_order_and_special_values() -> None:
    ordered: list[tuple[Any, ...]] = [
        (),
        (None,),
        (None, None),
        (b"",),
        (b"\x00",),
        (b"a",),
        ("",),
        ("\x00",),
        ("A",),
        ("a",),
        ("é",),
        ((),),
        ((None,),),
        (("a",),),
        (("a", "b"),),
        (-(2**2040) + 1,),
        (-(2**64),),
        (-(2**64) + 1,),
        (-(2**64) + 2,),
        (-1,),
        (0,),
        (1,),
        (2**64 - 2,),
        (2**64 - 1,),
        (2**2040 - 1,),
        (-math.inf,),
        (-1.5,),
        (-0.0,),
        (0.0,),
        (5e-324,),
        (math.inf,),
        (False,),
        (True,),
        (uuid.UUID(int=0),),
        (uuid.UUID(int=2**128 - 1),),
    ]
    encoded = [CODER.serialize(t) for t in ordered]
    assert encoded == sorted(encoded)
    assert len(set(encoded)) == len(encoded)


# ------------------------------------------------------------------------------ prefixes
@given(tuples, st.integers(min_value=0, max_value=5))
def test_a_packed_prefix_is_a_byte_prefix(t: tuple[Any, ...], k: int) -> None:
    assert CODER.serialize(t).startswith(CODER.serialize(t[:k]))


def in_prefix_range(key: tuple[Any, ...], prefix: tuple[Any, ...]) -> bool:
    """Whether ``items(prefix=prefix)`` scans ``key`` (the range it reads)."""
    start = CODER.serialize(prefix)
    end = CODER.prefix_end(start)
    assert end is not None
    return start <= CODER.serialize(key) < end


@given(tuples, tuples)
def test_prefix_range_holds_exactly_the_element_prefixes(
    a: tuple[Any, ...], b: tuple[Any, ...]
) -> None:
    assert in_prefix_range(b, a) == (typed(b[: len(a)]) == typed(a))
    assert in_prefix_range(a + b, a)


@pytest.mark.parametrize(
    ("prefix", "key"),
    [
        # Byte prefixes that are not element prefixes: the key continues an escaped 0x00.
        (((),), ((None,),)),
        ((("a",),), (("a", None),)),
        (("a",), ("a\x00b",)),
        ((b"a",), (b"a\x00",)),
    ],
)
def test_escaped_continuations_are_outside_the_prefix_range(
    prefix: tuple[Any, ...], key: tuple[Any, ...]
) -> None:
    assert CODER.serialize(key).startswith(CODER.serialize(prefix))  # the trap
    assert not in_prefix_range(key, prefix)


@pytest.mark.parametrize(
    ("prefix", "key"),
    [
        (("user", 42), ("user", 420)),
        (("user", 42), ("user", 4200)),
        (("user", 4), ("user", 42)),
        (("user",), ("username",)),
        ((b"a",), (b"ab",)),
        ((("a",),), (("a", "b"),)),
        ((("a",),), (("ab",),)),
        (("a", None), ("a", ((None,),))),
        ((1,), (1.0,)),
        ((1,), (True,)),
        ((0.0,), (-0.0,)),
    ],
)
def test_similar_keys_do_not_match_a_prefix(prefix: tuple[Any, ...], key: tuple[Any, ...]) -> None:
    assert not CODER.serialize(key).startswith(CODER.serialize(prefix))


# ------------------------------------------------------------------------------ accepted types
class Color(enum.IntEnum):
    RED = 7


class Point(NamedTuple):
    x: int
    y: int


class Name(str):
    pass


def test_subclasses_are_stored_as_their_base_type() -> None:
    t = (Color.RED, Point(1, 2), Name("n"), bytearray(b"b"), memoryview(b"m"), True)
    assert CODER.serialize(t) == CODER.serialize((7, (1, 2), "n", b"b", b"m", True))
    assert_same(CODER.deserialize(CODER.serialize(t)), (7, (1, 2), "n", b"b", b"m", True))
    assert CODER.serialize(Point(3, 4)) == CODER.serialize((3, 4))


def test_largest_ints_and_beyond() -> None:
    for v in (2**2040 - 1, -(2**2040) + 1):
        assert CODER.deserialize(CODER.serialize((v,))) == (v,)
    for v in (2**2040, -(2**2040)):
        with pytest.raises(ValueError, match="too large") as info:
            CODER.serialize(("x", v))
        assert "TupleCoder" in str(info.value)


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        ([1, 2], TypeError, "expected a tuple"),
        ("abc", TypeError, "expected a tuple"),
        (None, TypeError, "expected a tuple"),
        ((1, [2]), TypeError, "a list element"),
        (({"a": 1},), TypeError, "a dict element"),
        ((1, (2, {3})), TypeError, "a set element"),
        ((object(),), TypeError, "expected None, bytes, str"),
        ((math.nan,), ValueError, "NaN"),
        (("a", (float("-nan"),)), ValueError, "NaN"),
        (("\ud800",), ValueError, "not valid UTF-8"),
    ],
    ids=repr,
)
def test_serialize_rejects(value: Any, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match="TupleCoder") as info:
        CODER.serialize(value)
    assert words in str(info.value)


def test_serialize_too_deep_is_value_error() -> None:
    deep: tuple[Any, ...] = ()
    for _ in range(100_000):
        deep = (deep,)
    with pytest.raises(ValueError, match="nested too deeply"):
        CODER.serialize(deep)


# ------------------------------------------------------------------------------ strict decoding
@pytest.mark.parametrize(
    ("stored", "words"),
    [
        (b"user:42", "type code 0x75"),
        (b"\x00\x00\x00\x2a", "type code 0x2a"),  # a UInt32Coder key
        (b"\x02abc", "unterminated"),
        (b"\x01ab\x00\xff", "unterminated"),
        (b"\x02\xff\xfe\x00", "not valid UTF-8"),
        (b"\x05\x02a\x00", "unterminated nested tuple"),
        (b"\x15", "truncated int"),
        (b"\x1c\x01\x02", "truncated int"),
        (b"\x15\x00", "shortest form"),  # 0 is 0x14
        (b"\x16\x00\x01", "shortest form"),
        (b"\x13\xff", "shortest form"),
        (b"\x1c" + b"\xff" * 8, "shortest form"),  # 2**64 - 1 takes the 0x1d form
        (b"\x0c" + b"\x00" * 8, "shortest form"),
        (b"\x1d\x09\x00" + b"\xff" * 8, "shortest form"),
        (b"\x1d\x07" + b"\xff" * 7, "shortest form"),
        (b"\x1d", "truncated int"),
        (b"\x1d\x09\x01", "truncated int"),
        (b"\x21\x00", "truncated float"),
        (b"\x30" + b"\x00" * 15, "truncated UUID"),
        (b"\x20\x80\x00\x00\x00", "type code 0x20"),  # FoundationDB's 32-bit float
        (b"\x33" + b"\x00" * 12, "type code 0x33"),  # a versionstamp
        (b"\x14\xff", "type code 0xff"),
    ],
    ids=repr,
)
def test_deserialize_refuses_foreign_bytes(stored: bytes, words: str) -> None:
    for kind in (bytes, bytearray, memoryview):
        with pytest.raises(ValueError, match="TupleCoder cannot decode") as info:
            CODER.deserialize(kind(stored))
        assert words in str(info.value)
        assert repr(stored[:48]) in str(info.value)  # names the key


def test_deserialize_refuses_nan() -> None:
    for nan in (math.nan, -math.nan):
        stored = fdb_tuple.pack(("a", nan))
        with pytest.raises(ValueError, match="NaN"):
            CODER.deserialize(stored)


def test_deserialize_refuses_foundationdb_only_types() -> None:
    single = fdb_tuple.pack(("k", fdb_tuple.SingleFloat(1.5)))
    versionstamp = b"\x02k\x00\x33" + b"\x01" * 12  # fdb packs these only with its client
    for stored in (single, versionstamp):
        with pytest.raises(ValueError, match="not one TupleCoder writes"):
            CODER.deserialize(stored)


def test_deserialize_long_key_is_shown_cut() -> None:
    stored = b"\x02" + b"x" * 200
    with pytest.raises(ValueError, match=r"\.\.\. \(201 bytes\)"):
        CODER.deserialize(stored)


def test_deserialize_too_deep_is_value_error() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        CODER.deserialize(b"\x05" * 100_000)


@given(st.binary(max_size=40))
@settings(max_examples=1000)
def test_any_bytes_decode_to_exactly_their_tuple_or_fail(stored: bytes) -> None:
    try:
        t = CODER.deserialize(stored)
    except ValueError:
        return
    assert CODER.serialize(t) == stored


@given(tuples, st.data())
def test_damaged_keys_never_decode_to_another_tuple(
    t: tuple[Any, ...], data: st.DataObject
) -> None:
    stored = bytearray(CODER.serialize(t))
    assume(stored)
    i = data.draw(st.integers(min_value=0, max_value=len(stored) - 1))
    how = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if how == "flip":
        stored[i] ^= data.draw(st.integers(min_value=1, max_value=255))
    elif how == "cut":
        del stored[i:]
    else:
        stored.insert(i, data.draw(st.integers(min_value=0, max_value=255)))
    try:
        decoded = CODER.deserialize(bytes(stored))
    except ValueError:
        return
    assert CODER.serialize(decoded) == bytes(stored)


def test_repr_eq_hash() -> None:
    assert repr(CODER) == "TupleCoder()"
    assert TupleCoder() == CODER
    assert hash(TupleCoder()) == hash(CODER)
    assert aiolmdb.JSONCoder() != CODER


# ------------------------------------------------------------------------------ in a database
KEYS: list[tuple[Any, ...]] = [
    ("user", 42),
    ("user", 42, "email"),
    ("user", 42, "name"),
    ("user", 42, ("nested", 1)),
    ("user", 420),
    ("user", 420, "name"),
    ("user", 4200),
    ("user", 43),
    ("user", -1),
    ("user", None),
    ("user", 42.0),
    ("users", 1),
    ("group", uuid.UUID(int=5), True),
    (("a",), 1),
    (("a", "b"), 2),
    ((), 3),
    (None,),
]


def _sorted_keys(keys: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(keys, key=functools.cmp_to_key(fdb_tuple.compare))


async def test_keys_sort_in_tuple_order(env: aiolmdb.Environment) -> None:
    db = env.open_db("t", key_coder=TupleCoder(), value_coder=aiolmdb.StringCoder())
    await db.put_multi([(k, repr(k)) for k in KEYS])
    listed = [k async for k in db.keys(None)]
    assert [typed(k) for k in listed] == [typed(k) for k in _sorted_keys(KEYS)]
    assert await db.get(("user", 42, "name")) == repr(("user", 42, "name"))
    assert await db.get(("user", 42.0)) == repr(("user", 42.0))
    assert await db.get(("user", 41)) is None
    found = await db.get_multi([("user", 42), ("nope",), (None,)])
    assert found == {("user", 42): repr(("user", 42)), ("nope",): None, (None,): "(None,)"}
    assert [k async for k in db.keys(reverse=True)] == listed[::-1]
    first = await db.run(lambda txn: txn.first())
    assert first == ((None,), "(None,)")


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (
            ("user", 42),
            [
                ("user", 42),
                ("user", 42, "email"),
                ("user", 42, "name"),
                ("user", 42, ("nested", 1)),
            ],
        ),
        (("user", 420), [("user", 420), ("user", 420, "name")]),
        (("user", 42, ("nested",)), []),
        (("user", 42, ("nested", 1)), [("user", 42, ("nested", 1))]),
        ((("a",),), [(("a",), 1)]),
        (("user", None), [("user", None)]),
        (("users",), [("users", 1)]),
        ((None,), [(None,)]),
        ((), None),  # every key
    ],
    ids=repr,
)
async def test_prefix_selects_keys_starting_with_its_elements(
    env: aiolmdb.Environment, prefix: tuple[Any, ...], expected: list[tuple[Any, ...]] | None
) -> None:
    db = env.open_db("t", key_coder=TupleCoder())
    await db.put_multi([(k, b"") for k in KEYS])
    want = _sorted_keys(KEYS) if expected is None else expected
    assert [k async for k in db.keys(prefix=prefix)] == want
    assert [k async for k in db.keys(prefix=prefix, reverse=True)] == want[::-1]
    assert [k for k, _ in await db.run(lambda txn: list(txn.items(prefix=prefix)))] == want


async def test_prefix_skips_keys_that_only_continue_an_escaped_byte(
    env: aiolmdb.Environment,
) -> None:
    """Their bytes start with the prefix's bytes, but their elements do not start with its
    elements: the scan must leave them out (a plain byte-prefix scan would not)."""
    db = env.open_db("t", key_coder=TupleCoder())
    keys = [("a",), ("a", 1), ("a\x00b",), ((),), ((None,),), (("a",),), (("a", None),)]
    await db.put_multi([(k, b"") for k in keys])
    assert [k async for k in db.keys(prefix=("a",))] == [("a",), ("a", 1)]
    assert [k async for k in db.keys(prefix=((),))] == [((),)]
    assert [k async for k in db.keys(prefix=(("a",),), reverse=True)] == [(("a",),)]
    assert await db.run(lambda txn: list(txn.keys(prefix=("a",)))) == [("a",), ("a", 1)]


async def test_start_stop_take_tuples(env: aiolmdb.Environment) -> None:
    db = env.open_db("t", key_coder=TupleCoder(), value_coder=TupleCoder())
    await db.put_multi([(("day", d, h), (d * 24 + h,)) for d in range(1, 4) for h in (0, 12)])
    got = [k async for k in db.keys(("day", 2), ("day", 3))]
    assert got == [("day", 2, 0), ("day", 2, 12)]
    got = [k async for k in db.keys(("day", 1, 12), ("day", 3), reverse=True)]
    assert got == [("day", 2, 12), ("day", 2, 0), ("day", 1, 12)]
    assert [v async for v in db.values(prefix=("day", 3))] == [(72,), (84,)]
    assert [k async for k in db.keys(("day", 2), prefix=("day",), limit=1)] == [("day", 2, 0)]


async def test_dupsort_with_tuple_values(env: aiolmdb.Environment) -> None:
    db = env.open_db("idx", key_coder=TupleCoder(), value_coder=TupleCoder(), dupsort=True)
    await db.put_multi([(("tag", "x"), (3, "c")), (("tag", "x"), (1, "a")), (("tag", "x"), (2,))])
    await db.put(("tag", "y"), (-5,))
    assert await db.run(lambda txn: txn.get_all(("tag", "x"))) == [(1, "a"), (2,), (3, "c")]
    assert [kv async for kv in db.items(prefix=("tag",))] == [
        (("tag", "x"), (1, "a")),
        (("tag", "x"), (2,)),
        (("tag", "x"), (3, "c")),
        (("tag", "y"), (-5,)),
    ]
    assert await db.delete(("tag", "x"), (2,))
    assert await db.run(lambda txn: txn.get_all(("tag", "x"))) == [(1, "a"), (3, "c")]


async def test_in_transactions(env: aiolmdb.Environment) -> None:
    db = env.open_db("t", key_coder=TupleCoder(), value_coder=aiolmdb.JSONCoder())
    async with env.begin(write=True) as txn:
        view = txn[db]
        await view.put(("order", 1, "line", 1), {"qty": 2})
        await view.put(("order", 1, "line", 2), {"qty": 5})
        await view.put(("order", 10, "line", 1), {"qty": 9})
        assert [k async for k in view.keys(prefix=("order", 1))] == [
            ("order", 1, "line", 1),
            ("order", 1, "line", 2),
        ]
    async with env.begin() as snap:
        lines = [v async for v in snap[db].values(prefix=("order", 1, "line"))]
    assert lines == [{"qty": 2}, {"qty": 5}]

    def total(txn: aiolmdb.Transaction[tuple[Any, ...], Any]) -> int:
        return sum(v["qty"] for v in txn.values(prefix=("order",)))

    assert await db.run(total) == 16


async def test_foreign_key_in_a_database_gives_a_clear_error(env: aiolmdb.Environment) -> None:
    raw = env.open_db("t")
    await raw.put(b"plain-key", b"v")
    db = env.open_db("t", key_coder=TupleCoder())
    with pytest.raises(ValueError, match=r"TupleCoder cannot decode b'plain-key'"):
        [k async for k in db.keys(None)]
    with pytest.raises(ValueError, match="plain-key"):
        await db.run(lambda txn: txn.first())


async def test_invalid_keys_fail_only_their_call(env: aiolmdb.Environment) -> None:
    db = env.open_db("t", key_coder=TupleCoder())
    results = await asyncio.gather(
        db.put(("ok", 1), b""),
        db.put(("bad", math.nan), b""),
        db.put(("bad", [1]), b""),
        db.put((), b""),  # empty key
        db.put(("x" * 600,), b""),  # longer than max_key_size
        return_exceptions=True,
    )
    assert results[0] is True
    assert isinstance(results[1], ValueError)
    assert isinstance(results[2], TypeError)
    assert isinstance(results[3], aiolmdb.InvalidKeyError)
    assert isinstance(results[4], aiolmdb.InvalidKeyError)
    with pytest.raises(ValueError, match="cannot encode range prefix"):
        [k async for k in db.keys(prefix=("a", math.nan))]
    assert [k async for k in db.keys(None)] == [("ok", 1)]
