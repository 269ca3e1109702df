"""Range queries and cursors: items/keys/values with start/stop/prefix/reverse/limit, chunked
fetching and batches, first/last/count/stat, dupsort, iteration inside run(fn) and snapshots,
abandoned iterators, writes during iteration, and the error paths.

Expected results come from a Python model (``sorted()`` over the encoded keys and values).
Every test using ``env``/``db``/``open_env`` runs in both read modes (threaded and inline),
except those marked ``threaded_only``.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import Any, TypeVar, cast

import pytest
from conftest import TIMEOUT, reads_inline, threaded_only
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiolmdb import (
    AsyncDatabase,
    ClosedError,
    Coder,
    Environment,
    IdentityCoder,
    RangeIterator,
    StringCoder,
    Transaction,
    UInt16Coder,
    UInt32Coder,
    UInt64Coder,
    ranges,
)
from aiolmdb._store import scan as _scan

Db = AsyncDatabase[bytes, bytes]
IntDb = AsyncDatabase[int, int]
OpenEnv = Callable[..., Environment]
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

ID = IdentityCoder()
U32 = UInt32Coder()


# --------------------------------------------------------------------------------------------
# the model and helpers
# --------------------------------------------------------------------------------------------


def model(
    pairs: Iterable[tuple[K, V]],
    kc: Coder[K],
    vc: Coder[V],
    start: K | None = None,
    stop: K | None = None,
    prefix: K | None = None,
    reverse: bool = False,
    limit: int | None = None,
) -> list[tuple[K, V]]:
    """The pairs a range query must yield: sorted by encoded (key, value), bounds on bytes."""
    lo = None if start is None else kc.serialize(start)
    hi = None if stop is None else kc.serialize(stop)
    pre = None if prefix is None else kc.serialize(prefix)
    entries = sorted(
        ((kc.serialize(k), vc.serialize(v)), (k, v)) for k, v in pairs
    )  # encodings are unique, so the originals are never compared
    out = [
        pair
        for (ek, _), pair in entries
        if (lo is None or ek >= lo)
        and (hi is None or ek < hi)
        and (pre is None or ek.startswith(pre))
    ]
    if reverse:
        out.reverse()
    return out if limit is None else out[:limit]


def model_keys(
    pairs: Iterable[tuple[K, V]],
    kc: Coder[K],
    vc: Coder[V],
    start: K | None = None,
    stop: K | None = None,
    prefix: K | None = None,
    reverse: bool = False,
    limit: int | None = None,
) -> list[K]:
    """The keys a range query must yield: each key once (also in a dupsort database)."""
    keys: list[K] = []
    for k, _ in model(pairs, kc, vc, start, stop, prefix, reverse):
        if not keys or keys[-1] != k:
            keys.append(k)
    return keys if limit is None else keys[:limit]


async def collect(it: AsyncIterator[T]) -> list[T]:
    return [x async for x in it]


def active_readers(env: Environment) -> list[str]:
    """Lines of LMDB's reader table whose slot holds a transaction (txnid is a number)."""
    lines = env.readers().splitlines()
    return [line for line in lines if len(f := line.split()) == 3 and f[2].isdigit()]


async def wait_no_active_readers(env: Environment) -> None:
    """Wait (bounded) until no reader slot holds a transaction; a leaked one fails the test.

    A reader thread still reading ahead for an abandoned iterator ends its transaction a
    moment later, so this polls instead of checking once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while active := active_readers(env):
        assert loop.time() < deadline, f"reader slots still hold a transaction: {active}"
        await asyncio.sleep(0.002)


# --------------------------------------------------------------------------------------------
# start / stop / prefix / reverse / limit against the model (bytes keys)
# --------------------------------------------------------------------------------------------

BYTES_KEYS = [
    b"\x00",
    b"\x00\x01",
    b"a",
    b"ab",
    b"abc",
    b"abd",
    b"ac",
    b"b",
    b"ba",
    b"bb",
    b"c",
    b"\xfe",
    b"\xfe\xff",
    b"\xff",
    b"\xff\x00",
    b"\xff\xff",
    b"\xff\xff\xff",
    b"\xff\xff\xff\x01",
]
BYTES_PAIRS = [(k, b"v:" + k) for k in BYTES_KEYS]

# (start, stop, prefix)
RANGE_CASES = [
    pytest.param(None, None, None, id="everything"),
    pytest.param(b"ab", None, None, id="start-on-key"),
    pytest.param(b"abcc", None, None, id="start-between-keys"),
    pytest.param(b"\x00\x00", None, None, id="start-between-first-keys"),
    pytest.param(b"", None, None, id="start-empty-bytes"),
    pytest.param(b"\xff\xff\xff\xff", None, None, id="start-after-all"),
    pytest.param(None, b"b", None, id="stop-on-key"),
    pytest.param(None, b"abcz", None, id="stop-between-keys"),
    pytest.param(None, b"\x00", None, id="stop-at-first-key"),
    pytest.param(None, b"", None, id="stop-empty-bytes"),
    pytest.param(None, b"\xff\xff\xff\xff", None, id="stop-after-all"),
    pytest.param(b"ab", b"ba", None, id="start-stop"),
    pytest.param(b"aa", b"bab", None, id="start-stop-between-keys"),
    pytest.param(b"b", b"b", None, id="stop-equals-start"),
    pytest.param(b"abcc", b"abcc", None, id="stop-equals-start-between-keys"),
    pytest.param(b"c", b"a", None, id="stop-before-start"),
    pytest.param(b"a", None, None, id="start-first-of-prefix"),
    pytest.param(None, None, b"a", id="prefix"),
    pytest.param(None, None, b"abc", id="prefix-one-key"),
    pytest.param(None, None, b"aa", id="prefix-no-match-inside"),
    pytest.param(None, None, b"zz", id="prefix-no-match-after"),
    pytest.param(None, None, b"\x00", id="prefix-zero-byte"),
    pytest.param(None, None, b"\xff", id="prefix-ff"),
    pytest.param(None, None, b"\xff\xff", id="prefix-ff-ff"),
    pytest.param(None, None, b"\xff\xff\xff\xff", id="prefix-ff-no-match"),
    pytest.param(None, None, b"\xfe\xff", id="prefix-fe-ff"),
    pytest.param(None, None, b"", id="prefix-empty"),
    pytest.param(b"abd", None, b"a", id="prefix-start-inside"),
    pytest.param(b"a", None, b"b", id="prefix-start-before"),
    pytest.param(b"b", None, b"a", id="prefix-start-after"),
    pytest.param(None, b"abd", b"a", id="prefix-stop-inside"),
    pytest.param(None, b"z", b"a", id="prefix-stop-after"),
    pytest.param(None, b"a", b"b", id="prefix-stop-before"),
    pytest.param(b"ab", b"ac", b"a", id="prefix-start-stop"),
    pytest.param(b"\xff\x00", b"\xff\xff\xff\x01", b"\xff", id="prefix-ff-start-stop"),
]
LIMITS = [None, 0, 1, 2, 1000]


@pytest.mark.parametrize(("start", "stop", "prefix"), RANGE_CASES)
async def test_range_arguments_match_model(
    db: Db, start: bytes | None, stop: bytes | None, prefix: bytes | None
) -> None:
    await db.put_multi(BYTES_PAIRS)
    for reverse in (False, True):
        for limit in LIMITS:
            for batch_size in (None, 1, 3):
                kw: dict[str, Any] = {
                    "start": start,
                    "stop": stop,
                    "prefix": prefix,
                    "reverse": reverse,
                    "limit": limit,
                    "batch_size": batch_size,
                }
                expected = model(BYTES_PAIRS, ID, ID, start, stop, prefix, reverse, limit)
                assert await collect(db.items(**kw)) == expected, kw
                assert await collect(db.keys(**kw)) == [k for k, _ in expected], kw
                assert await collect(db.values(**kw)) == [v for _, v in expected], kw
                batches = await collect(db.items(**kw).batches(2))
                assert [p for b in batches for p in b] == expected, kw
                assert all(type(b) is list and 0 < len(b) <= 2 for b in batches), kw


@pytest.mark.parametrize(("start", "stop", "prefix"), RANGE_CASES)
async def test_range_arguments_in_run_and_snapshot(
    env: Environment, db: Db, start: bytes | None, stop: bytes | None, prefix: bytes | None
) -> None:
    await db.put_multi(BYTES_PAIRS)
    combos: list[dict[str, Any]] = [
        {
            "start": start,
            "stop": stop,
            "prefix": prefix,
            "reverse": reverse,
            "limit": limit,
            "batch_size": batch_size,
        }
        for reverse in (False, True)
        for limit in (None, 0, 2)
        for batch_size in (None, 2)
    ]

    def scan(txn: Transaction[bytes, bytes]) -> list[tuple[Any, ...]]:
        return [
            (list(txn.items(**kw)), list(txn.keys(**kw)), list(txn.values(**kw))) for kw in combos
        ]

    in_run = await db.run(scan)
    async with env.begin() as snap:
        view = snap[db]
        for kw, (items, keys, values) in zip(combos, in_run, strict=True):
            expected = model(BYTES_PAIRS, ID, ID, start, stop, prefix, kw["reverse"], kw["limit"])
            assert items == expected, kw
            assert keys == [k for k, _ in expected], kw
            assert values == [v for _, v in expected], kw
            assert await collect(view.items(**kw)) == expected, kw
            assert await collect(view.keys(**kw)) == keys, kw
            assert await collect(view.values(**kw)) == values, kw


async def test_empty_database_yields_nothing(db: Db) -> None:
    for reverse in (False, True):
        kws: list[dict[str, Any]] = [
            {},
            {"start": b"a"},
            {"stop": b"z"},
            {"prefix": b"a"},
            {"start": b"a", "stop": b"b"},
            {"limit": 5},
        ]
        for kw in kws:
            assert await collect(db.items(reverse=reverse, **kw)) == []
            assert await collect(db.keys(reverse=reverse, **kw)) == []
            assert await collect(db.values(reverse=reverse, **kw)) == []
        assert await collect(db.items(reverse=reverse).batches(3)) == []
    assert await db.first() is None
    assert await db.last() is None
    assert await db.count() == 0
    assert (await db.stat())["entries"] == 0
    assert await db.run(lambda txn: (list(txn.items()), txn.first(), txn.last())) == (
        [],
        None,
        None,
    )


async def test_limit_is_a_cap_not_a_size(db: Db) -> None:
    await db.put_multi(BYTES_PAIRS)
    n = len(BYTES_PAIRS)
    assert len(await collect(db.items(limit=n))) == n
    assert len(await collect(db.items(limit=n + 1))) == n
    assert len(await collect(db.keys(limit=n - 1, batch_size=1))) == n - 1
    assert await collect(db.items(limit=0, reverse=True)) == []
    assert await collect(db.items(prefix=b"a", limit=0).batches(2)) == []


async def test_iterator_is_its_own_async_iterator_and_stays_exhausted(db: Db) -> None:
    await db.put_multi(BYTES_PAIRS[:3])
    it = db.keys()
    assert aiter(it) is it
    assert isinstance(it, RangeIterator)
    assert await collect(it) == BYTES_KEYS[:3]
    assert await collect(it) == []
    with pytest.raises(StopAsyncIteration):
        await anext(it)


# --------------------------------------------------------------------------------------------
# random ranges (hypothesis)
# --------------------------------------------------------------------------------------------

ALPHABET = [0x00, 0x01, 0x7F, 0xFE, 0xFF]


def _all_words(max_len: int) -> list[bytes]:
    words: list[bytes] = [b""]
    out: list[bytes] = []
    for _ in range(max_len):
        words = [w + bytes([c]) for w in words for c in ALPHABET]
        out.extend(words)
    return out


# A fixed key set with gaps: every word of 1..3 letters of ALPHABET whose byte sum is not 0 mod 3.
HYP_KEYS = [w for w in _all_words(3) if sum(w) % 3]
HYP_DUP_PAIRS = [
    (k, v) for k in HYP_KEYS for v in (b"\x00", b"\x01\xff", b"\xff")[: 1 + sum(k) % 3]
]
HYP_PLAIN_PAIRS = [(k, k[::-1] + b"!") for k in HYP_KEYS]

bound = st.none() | st.lists(st.sampled_from(ALPHABET), max_size=4).map(bytes)


@pytest.mark.parametrize("dupsort", [False, True], ids=["plain", "dupsort"])
@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    start=bound,
    stop=bound,
    prefix=bound,
    reverse=st.booleans(),
    limit=st.none() | st.integers(0, 300),
    offset=st.sampled_from([0, 0, 1, 2]) | st.integers(0, 400),
    batch_size=st.sampled_from([None, 1, 2, 5, 64]),
)
async def test_random_ranges_match_model(
    env: Environment,
    dupsort: bool,
    start: bytes | None,
    stop: bytes | None,
    prefix: bytes | None,
    reverse: bool,
    limit: int | None,
    offset: int,
    batch_size: int | None,
) -> None:
    db = await env.open_db("hyp", dupsort=dupsort)
    pairs = HYP_DUP_PAIRS if dupsort else HYP_PLAIN_PAIRS
    if await db.count() == 0:
        await db.put_multi(pairs)
    kw: dict[str, Any] = {
        "start": start,
        "stop": stop,
        "prefix": prefix,
        "reverse": reverse,
        "limit": limit,
        "offset": offset,
        "batch_size": batch_size,
    }
    in_range = model(pairs, ID, ID, start, stop, prefix, reverse)
    end = None if limit is None else offset + limit
    expected = in_range[offset:end]
    assert await collect(db.items(**kw)) == expected
    assert await collect(db.values(**kw)) == [v for _, v in expected]
    keys = model_keys(pairs, ID, ID, start, stop, prefix, reverse)
    assert await collect(db.keys(**kw)) == keys[offset:end]
    assert await db.run(lambda txn: list(txn.items(**kw))) == expected
    # count() of the same range, without decoding (every value counts in a dupsort database).
    assert await db.count(start, stop, prefix=prefix) == len(in_range)


# --------------------------------------------------------------------------------------------
# key order of the coders
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coder", "extra"),
    [
        pytest.param(UInt16Coder(), [65535, 300], id="uint16"),
        pytest.param(UInt32Coder(), [65536, 2**32 - 1, 2**24 + 1], id="uint32"),
        pytest.param(UInt64Coder(), [65536, 2**40, 2**64 - 1, 2**32], id="uint64"),
    ],
)
async def test_uint_keys_iterate_in_numeric_order(
    env: Environment, coder: Coder[int], extra: list[int]
) -> None:
    db = await env.open_db("nums", key_coder=coder, value_coder=StringCoder())
    keys = [10, 256, 1, 0, 2, 255, 3, *extra]
    pairs = [(k, f"v{k}") for k in keys]
    await db.put_multi(pairs)
    ordered = sorted(keys)
    assert await collect(db.keys()) == ordered
    assert await collect(db.keys(reverse=True)) == ordered[::-1]
    assert await collect(db.items(batch_size=2)) == [(k, f"v{k}") for k in ordered]
    assert await collect(db.keys(start=2, stop=256)) == [2, 3, 10, 255]
    assert await collect(db.keys(start=2, stop=256, reverse=True)) == [255, 10, 3, 2]
    assert await collect(db.keys(start=4, stop=11)) == [10]
    assert await collect(db.values(start=256, limit=2)) == [f"v{k}" for k in ordered[6:8]]
    assert await collect(db.keys(prefix=255)) == [255]
    assert await collect(db.keys(start=11, stop=4)) == []
    assert await db.first() == (0, "v0")
    assert await db.last() == (max(keys), f"v{max(keys)}")
    for start, stop in [(None, 10), (3, None), (1, 300), (256, 256), (4, 5)]:
        for reverse in (False, True):
            assert await collect(db.items(start, stop, reverse=reverse)) == model(
                pairs, coder, StringCoder(), start, stop, None, reverse
            )


async def test_string_keys_iterate_in_utf8_byte_order(env: Environment) -> None:
    sc = StringCoder()
    db = await env.open_db("strs", key_coder=sc, value_coder=sc)
    keys = ["z", "é", "a", "ab", "aé", "Z", "日本", "😀", "\uffff", "b", "éa"]
    pairs = [(k, k.upper()) for k in keys]
    await db.put_multi(pairs)
    got = await collect(db.keys())
    assert got == sorted(keys, key=lambda s: s.encode("utf-8"))
    assert got.index("a") < got.index("z") < got.index("é")
    assert got.index("\uffff") < got.index("😀")  # EF BF BF < F0 9F 98 80
    assert await collect(db.keys(reverse=True)) == got[::-1]
    assert await collect(db.keys(prefix="a")) == ["a", "ab", "aé"]
    assert await collect(db.keys(prefix="é")) == ["é", "éa"]
    assert await collect(db.keys(prefix="é", reverse=True)) == ["éa", "é"]
    assert await collect(db.keys(start="b", stop="é")) == ["b", "z"]
    assert await collect(db.items(start="z", limit=2)) == [("z", "Z"), ("é", "É")]
    for start, stop, prefix in [("a", "zz", None), ("aa", None, "a"), (None, "日", None)]:
        for reverse in (False, True):
            assert await collect(
                db.items(start, stop, prefix=prefix, reverse=reverse, batch_size=3)
            ) == model(pairs, sc, sc, start, stop, prefix, reverse)


# --------------------------------------------------------------------------------------------
# many entries, chunk borders, batches
# --------------------------------------------------------------------------------------------

BIG = 25_013


async def big_db(env: Environment) -> IntDb:
    db = await env.open_db("big", key_coder=U32, value_coder=U32)
    await db.put_multi([(k, k * 3) for k in range(BIG)])
    return db


async def test_large_scan_in_order_across_chunk_borders(env: Environment) -> None:
    db = await big_db(env)
    pairs = [(k, k * 3) for k in range(BIG)]
    assert await db.count() == BIG
    assert (await db.stat())["entries"] == BIG
    assert await collect(db.items()) == pairs
    assert await collect(db.items(reverse=True)) == pairs[::-1]
    for batch_size in (7, 1000, 4096):
        assert await collect(db.keys(batch_size=batch_size)) == list(range(BIG))
        assert await collect(db.values(batch_size=batch_size, reverse=True)) == [
            3 * k for k in reversed(range(BIG))
        ]
    assert await collect(db.items(1000, 24_000, batch_size=7)) == pairs[1000:24_000]
    assert (
        await collect(db.items(1000, 24_000, batch_size=7, reverse=True))
        == (pairs[1000:24_000][::-1])
    )
    assert await collect(db.keys(5, 4000, batch_size=1)) == list(range(5, 4000))
    assert await collect(db.keys(5, 4000, batch_size=1, reverse=True)) == list(range(3999, 4, -1))
    assert await collect(db.keys(limit=20_001, batch_size=7)) == list(range(20_001))
    assert await collect(db.keys(limit=999, reverse=True)) == list(range(BIG - 1, BIG - 1000, -1))
    assert await db.first() == (0, 0)
    assert await db.last() == (BIG - 1, 3 * (BIG - 1))


async def test_large_scan_with_chunk_size_one(env: Environment, inline_reads: bool) -> None:
    db = await big_db(env)
    # One entry per read: every entry is a chunk border (the full 25k only inline, where a
    # read costs no thread hop, to keep the threaded run fast).
    n = BIG if inline_reads else 3001
    assert await collect(db.keys(stop=n, batch_size=1)) == list(range(n))
    assert await collect(db.keys(stop=n, batch_size=1, reverse=True)) == list(range(n))[::-1]


async def test_large_scan_in_run(env: Environment) -> None:
    db = await big_db(env)

    def scan(txn: Transaction[int, int]) -> tuple[list[int], list[tuple[int, int]], int]:
        keys = list(txn.keys(batch_size=7))
        items = list(txn.items(100, 20_000, reverse=True, batch_size=1))
        return keys, items, txn.count()

    keys, items, count = await db.run(scan)
    assert keys == list(range(BIG))
    assert items == [(k, 3 * k) for k in range(19_999, 99, -1)]
    assert count == BIG


async def test_batches_sizes_and_total(env: Environment) -> None:
    db = await big_db(env)
    batches = await collect(db.items().batches(1000))
    assert [len(b) for b in batches] == [1000] * 25 + [13]
    assert [p for b in batches for p in b] == [(k, 3 * k) for k in range(BIG)]

    batches_k = await collect(db.keys(reverse=True, limit=2500).batches(1000))
    assert [len(b) for b in batches_k] == [1000, 1000, 500]
    assert [k for b in batches_k for k in b] == list(range(BIG - 1, BIG - 2501, -1))

    default = await collect(db.values(stop=3000, batch_size=1024).batches())
    assert [len(b) for b in default] == [1024, 1024, 952]
    assert [len(b) for b in await collect(db.values(stop=9000).batches())] == [4096, 4096, 808]
    assert [v for b in default for v in b] == [3 * k for k in range(3000)]

    sized = await collect(db.keys(stop=3000, batch_size=500).batches())
    assert [len(b) for b in sized] == [500] * 6

    odd = await collect(db.keys(start=10, stop=33).batches(7))
    assert odd == [list(range(10, 17)), list(range(17, 24)), list(range(24, 31)), [31, 32]]

    assert await collect(db.keys(start=BIG).batches(7)) == []
    # The same database seen with bytes keys: the keys 0..255 share the prefix 00 00 00.
    raw = await env.open_db("big", value_coder=U32)
    by_prefix = await collect(raw.keys(prefix=b"\x00\x00\x00", reverse=True).batches(100))
    assert by_prefix == [
        [U32.serialize(k) for k in range(255, 155, -1)],
        [U32.serialize(k) for k in range(155, 55, -1)],
        [U32.serialize(k) for k in range(55, -1, -1)],
    ]


async def test_offset_and_range_count_in_every_view(env: Environment) -> None:
    db = await env.open_db("off", key_coder=U32, value_coder=U32)
    await db.put_multi([(k, k * 10) for k in range(0, 200, 2)])  # 100 even keys
    assert await collect(db.keys(offset=97)) == [194, 196, 198]
    assert await collect(db.keys(offset=100)) == []
    assert await collect(db.keys(offset=1000, reverse=True)) == []
    assert await collect(db.keys(20, 40, offset=3, limit=2)) == [26, 28]
    assert await collect(db.values(20, 40, offset=8, reverse=True)) == [220, 200]
    assert await collect(db.items(offset=95).batches(2)) == [
        [(190, 1900), (192, 1920)],
        [(194, 1940), (196, 1960)],
        [(198, 1980)],
    ]
    assert (await db.count(), await db.count(20, 40), await db.count(stop=7)) == (100, 10, 4)
    assert await db.count(41, 40) == 0
    assert await db.run(lambda txn: (txn.count(start=190), list(txn.keys(offset=98)))) == (
        5,
        [196, 198],
    )
    async with env.begin() as snap:
        assert await snap[db].count(start=100) == 50
        assert await collect(snap[db].keys(offset=99)) == [198]
    async with env.begin(write=True) as txn:
        await txn[db].put(1, 10)
        assert await txn[db].count(0, 4) == 3  # sees its own write
        assert await collect(txn[db].keys(offset=1, limit=2)) == [1, 2]
    bad: Any
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match=f"offset must be a non-negative int, got {bad!r}"):
            db.keys(offset=bad)


async def test_unknown_range_options_are_refused(db: Db) -> None:
    """The options are keyword-only and typed for mypy; at run time a misspelt one raises
    instead of being ignored (which would scan the whole database)."""
    await db.put_multi(BYTES_PAIRS)
    misspelt: Any = {"prefx": b"k"}
    for method in (db.items, db.keys, db.values):
        with pytest.raises(TypeError, match=r"unexpected keyword argument.*prefx"):
            method(**misspelt)

    def in_txn(txn: Transaction[bytes, bytes]) -> None:
        with pytest.raises(TypeError, match=r"unexpected keyword argument.*prefx"):
            txn.keys(**misspelt)

    await db.run(in_txn)
    async with db.environment.begin() as snap:
        with pytest.raises(TypeError, match=r"unexpected keyword argument.*prefx"):
            snap[db].values(**misspelt)


async def test_batches_errors(db: Db) -> None:
    await db.put_multi(BYTES_PAIRS)
    with pytest.raises(ValueError, match="batch_size"):
        db.items().batches(0)
    it = db.items()
    await anext(it)
    with pytest.raises(RuntimeError, match="batches"):
        it.batches(2)
    it = db.items()
    batches = it.batches(2)
    with pytest.raises(RuntimeError, match="batches"):
        await anext(it)  # the entries now come from batches
    assert [pair for batch in [b async for b in batches] for pair in batch] == BYTES_PAIRS


# --------------------------------------------------------------------------------------------
# dupsort
# --------------------------------------------------------------------------------------------


async def test_dupsort_operations(env: Environment) -> None:
    sc = StringCoder()
    db = await env.open_db("dups", dupsort=True, key_coder=sc, value_coder=sc)
    assert db.dupsort
    assert await db.put("k", "z") is True
    assert await db.put("k", "é") is True
    assert await db.put("k", "a") is True
    assert await db.put("k", "z") is False  # that exact pair exists
    assert await db.put("j", "x") is True
    assert await db.put("l", "m") is True
    assert await db.get_all("k") == ["a", "z", "é"]  # sorted by UTF-8 bytes
    assert await db.get_all("missing") == []
    assert await db.get("k") == "a"
    assert await db.count_values("k") == 3
    assert await db.count_values("j") == 1
    assert await db.count_values("missing") == 0
    assert await db.count() == 5
    assert (await db.stat())["entries"] == 5
    items = [("j", "x"), ("k", "a"), ("k", "z"), ("k", "é"), ("l", "m")]
    assert await collect(db.items()) == items
    assert await collect(db.items(reverse=True)) == items[::-1]
    assert await collect(db.items(batch_size=1)) == items
    assert await collect(db.items(batch_size=1, reverse=True)) == items[::-1]
    assert await collect(db.keys()) == ["j", "k", "l"]
    assert await collect(db.keys(reverse=True, batch_size=1)) == ["l", "k", "j"]
    assert await collect(db.values()) == ["x", "a", "z", "é", "m"]
    assert await collect(db.items(start="k", stop="l")) == items[1:4]
    assert await collect(db.items(prefix="k", reverse=True, limit=2)) == [("k", "é"), ("k", "z")]
    assert await collect(db.keys(start="k", limit=1)) == ["k"]
    assert await db.first() == ("j", "x")
    assert await db.last() == ("l", "m")

    def in_run(txn: Transaction[str, str]) -> tuple[Any, ...]:
        return (
            txn.get_all("k"),
            txn.count_values("k"),
            list(txn.keys(batch_size=1)),
            list(txn.keys(reverse=True, batch_size=1)),
            list(txn.items(batch_size=2)),
            txn.count(),
        )

    assert await db.run(in_run) == (
        ["a", "z", "é"],
        3,
        ["j", "k", "l"],
        ["l", "k", "j"],
        items,
        5,
    )
    async with env.begin() as snap:
        view = snap[db]
        assert view.dupsort
        assert await view.get_all("k") == ["a", "z", "é"]
        assert await collect(view.keys(batch_size=1)) == ["j", "k", "l"]
        assert await collect(view.items(reverse=True, batch_size=2)) == items[::-1]

    assert await db.delete("k", "z") is True
    assert await db.delete("k", "z") is False
    assert await db.get_all("k") == ["a", "é"]
    assert await db.count() == 4
    assert await db.delete("k") is True  # every value
    assert await db.get_all("k") == []
    assert await db.count_values("k") == 0
    assert await db.get("k") is None
    assert await db.delete("k") is False
    assert await collect(db.items()) == [("j", "x"), ("l", "m")]
    assert await collect(db.keys()) == ["j", "l"]


# Keys 0..59 with 1..19 values each, plus one key with 286 values: pairs span chunk borders.
DUP_DATA = [(k, v) for k in range(60) for v in range(0, 3 * (k % 7) + 1)] + [
    (1000, v) for v in range(0, 2000, 7)
]


async def test_dupsort_scan_across_chunk_borders(env: Environment) -> None:
    db = await env.open_db("dupbig", dupsort=True, key_coder=U32, value_coder=U32)
    await db.put_multi(DUP_DATA)
    assert await db.count() == len(DUP_DATA)
    assert await db.count_values(1000) == 286
    assert await db.get_all(1000) == list(range(0, 2000, 7))
    assert await db.get_all(13) == list(range(19))
    for reverse in (False, True):
        for batch_size in (None, 1, 7, 64):
            kw: dict[str, Any] = {"reverse": reverse, "batch_size": batch_size}
            expected = model(DUP_DATA, U32, U32, reverse=reverse)
            assert await collect(db.items(**kw)) == expected, kw
            assert await collect(db.values(**kw)) == [v for _, v in expected], kw
            assert await collect(db.keys(**kw)) == model_keys(DUP_DATA, U32, U32, reverse=reverse)
            for start, stop, limit in [(5, 1001, None), (6, 13, 30), (59, None, 100), (1, 2, 5)]:
                assert await collect(db.items(start, stop, limit=limit, **kw)) == model(
                    DUP_DATA, U32, U32, start, stop, None, reverse, limit
                ), (start, stop, limit, kw)
                assert await collect(db.keys(start, stop, limit=limit, **kw)) == model_keys(
                    DUP_DATA, U32, U32, start, stop, None, reverse, limit
                ), (start, stop, limit, kw)
    batches = await collect(db.items(start=1000).batches(100))
    assert [len(b) for b in batches] == [100, 100, 86]
    assert await db.first() == (0, 0)
    assert await db.last() == (1000, 1995)
    in_run = await db.run(lambda txn: (list(txn.items(batch_size=7)), list(txn.keys())))
    assert in_run == (model(DUP_DATA, U32, U32), model_keys(DUP_DATA, U32, U32))


PLAIN_DATA = [(k, k * 7 + 1) for k in range(0, 3000, 3)]


@pytest.mark.parametrize("hop", [1, 100, ranges._BATCH_CHUNK], ids=["hop1", "hop100", "default"])
async def test_batches_of_items_match_model_across_hops(
    env: Environment, monkeypatch: pytest.MonkeyPatch, hop: int
) -> None:
    # batches() of items() reads (key, value) pairs in one cursor pass and resumes after the
    # last pair of each hop; small hops put that resume point everywhere, also in the middle
    # of one key's duplicates.
    monkeypatch.setattr(ranges, "_BATCH_CHUNK", hop)
    dup = await env.open_db("dupbatch", dupsort=True, key_coder=U32, value_coder=U32)
    await dup.put_multi(DUP_DATA)
    plain = await env.open_db("plainbatch", key_coder=U32, value_coder=U32)
    await plain.put_multi(PLAIN_DATA)
    cases = [(None, None, None), (5, 1001, None), (6, 13, 30), (59, None, 100), (1, 2, 5)]
    for db, data in ((dup, DUP_DATA), (plain, PLAIN_DATA)):
        for reverse in (False, True):
            for size in (1, 3, 64):
                for start, stop, limit in cases:
                    it = db.items(start, stop, reverse=reverse, limit=limit)
                    batches = await collect(it.batches(size))
                    expected = model(data, U32, U32, start, stop, None, reverse, limit)
                    assert [p for b in batches for p in b] == expected, (start, stop, limit)
                    assert all(len(b) == size for b in batches[:-1])
                    assert all(type(b) is list and 0 < len(b) <= size for b in batches)


# --------------------------------------------------------------------------------------------
# first / last / count
# --------------------------------------------------------------------------------------------


async def test_first_last_count_on_empty_and_filled(env: Environment) -> None:
    db = await env.open_db("fl", key_coder=UInt64Coder(), value_coder=StringCoder())
    assert await db.first() is None
    assert await db.last() is None
    assert await db.count() == 0
    await db.put_multi([(256, "x"), (1, "a"), (2**40, "big"), (10, "t")])
    assert await db.first() == (1, "a")
    assert await db.last() == (2**40, "big")
    assert await db.count() == 4
    assert (await db.stat())["entries"] == 4
    assert await db.run(lambda txn: (txn.first(), txn.last())) == ((1, "a"), (2**40, "big"))
    async with env.begin() as snap:
        assert await snap[db].first() == (1, "a")
        assert await snap[db].last() == (2**40, "big")
        assert await snap[db].count() == 4
    await db.delete(1)
    await db.delete(2**40)
    assert await db.first() == (10, "t")
    assert await db.last() == (256, "x")


# --------------------------------------------------------------------------------------------
# transactions: run(fn), snapshots, write transactions
# --------------------------------------------------------------------------------------------


async def test_iteration_in_run_uses_coders(env: Environment) -> None:
    sc = StringCoder()
    db = await env.open_db("runs", key_coder=sc, value_coder=U32)
    await db.put_multi([(f"k{i:03d}", i) for i in range(200)])

    def fn(txn: Transaction[str, int]) -> tuple[Any, ...]:
        return (
            list(txn.items(prefix="k01", batch_size=3)),
            list(txn.keys("k195")),
            list(txn.values(stop="k003", reverse=True)),
            list(txn.keys(limit=0)),
            next(txn.keys(reverse=True)),
        )

    assert await db.run(fn) == (
        [(f"k{i:03d}", i) for i in range(10, 20)],
        ["k195", "k196", "k197", "k198", "k199"],
        [2, 1, 0],
        [],
        "k199",
    )


async def test_iteration_in_write_run_sees_its_own_writes(env: Environment) -> None:
    db = await env.open_db("wrun", key_coder=U32, value_coder=U32)
    await db.put_multi([(k, k) for k in range(0, 100, 10)])

    def fn(txn: Transaction[int, int]) -> list[int]:
        seen = []
        for k in txn.keys(batch_size=2):
            seen.append(k)
            if k == 20:
                txn.put(85, 85)  # ahead: seen (chunks are read from this transaction)
                txn.put(15, 15)  # behind: not seen
                txn.delete(90)  # ahead: not seen
        return seen

    assert await db.run(fn, write=True) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 85]
    assert await collect(db.keys()) == [0, 10, 15, 20, 30, 40, 50, 60, 70, 80, 85]


async def test_snapshot_iteration_sees_the_state_at_its_start(env: Environment) -> None:
    db = await env.open_db("snap", key_coder=U32, value_coder=U32)
    original = [(k, k) for k in range(0, 3000, 3)]
    await db.put_multi(original)
    async with env.begin() as snap:
        view = snap[db]
        it = view.items(batch_size=50)
        got = [await anext(it) for _ in range(10)]
        # Writes committed by other tasks while the snapshot iterates.
        await asyncio.wait_for(
            asyncio.gather(db.put(1, 1), db.put(2002, 2002), db.delete(2400), db.delete(6)),
            TIMEOUT,
        )
        assert await db.get(2002) == 2002
        assert await db.get(2400) is None
        concurrent = asyncio.ensure_future(db.put(2998, 2998))
        got.append(await anext(it))
        await asyncio.wait_for(concurrent, TIMEOUT)
        got += await collect(it)
        assert got == original
        assert await collect(view.keys(start=2395, stop=2405, reverse=True)) == [2403, 2400, 2397]
        assert await collect(view.values(limit=3)) == [0, 3, 6]
        assert await view.get(2002) is None
        assert await view.count() == len(original)
        assert await view.last() == (2997, 2997)
    assert await collect(db.keys(start=2395, stop=2405)) == [2397, 2403]
    assert await collect(db.keys(stop=7)) == [0, 1, 3]
    assert await db.last() == (2998, 2998)


async def test_iteration_in_write_transaction(env: Environment) -> None:
    db = await env.open_db("wtxn", key_coder=U32, value_coder=U32)
    await db.put_multi([(k, k) for k in range(10)])
    async with env.begin(write=True) as txn:
        view = txn[db]
        await view.put(100, 100)
        await view.delete(3)
        assert await collect(view.keys(batch_size=3)) == [0, 1, 2, 4, 5, 6, 7, 8, 9, 100]
        assert await collect(view.items(start=8, reverse=True)) == [(100, 100), (9, 9), (8, 8)]
    assert await collect(db.keys(start=8)) == [8, 9, 100]


# --------------------------------------------------------------------------------------------
# abandoned iterators hold nothing
# --------------------------------------------------------------------------------------------

SMALL_MAP = 1024 * 1024


@pytest.mark.parametrize("how", ["break", "aclose", "drop", "batches-break", "limit"])
async def test_abandoned_iterator_holds_no_reader_and_blocks_no_writer(
    open_env: OpenEnv, how: str
) -> None:
    env = open_env(map_size=SMALL_MAP, max_readers=16)
    db = env.get_default_database()
    await db.put_multi([(b"%06d" % i, b"x" * 40) for i in range(2000)])
    kept: list[object] = []
    # More iterators than reader slots: a leaked slot per iterator would exhaust the table.
    for i in range(40):
        it = db.items(batch_size=16, reverse=bool(i % 2))
        if how == "break":
            async for _ in it:
                break
            kept.append(it)
        elif how == "aclose":
            await anext(it)
            await it.aclose()
            assert await collect(it) == []
            kept.append(it)
        elif how == "drop":
            await anext(it)
            del it
            gc.collect()
        elif how == "batches-break":
            gen = it.batches(10)
            async for batch in gen:
                assert len(batch) == 10
                break
            kept.append(gen)
        else:
            assert len(await collect(db.keys(batch_size=16, limit=20))) == 20
    assert await db.get(b"000001") == b"x" * 40
    await wait_no_active_readers(env)
    # Writers go on, even a map resize (which waits until no read transaction is open).
    size_before = env.info()["map_size"]
    big = [(b"big%06d" % i, b"y" * 1000) for i in range(3000)]
    assert await asyncio.wait_for(db.put_multi(big), TIMEOUT) == 3000
    assert env.info()["map_size"] > size_before
    assert await db.count() == 5000
    await wait_no_active_readers(env)
    for obj in kept:
        if isinstance(obj, RangeIterator):
            await obj.aclose()
        else:
            await cast(AsyncGenerator[Any, None], obj).aclose()


async def test_no_reader_slot_held_between_chunks(env: Environment) -> None:
    db = await env.open_db("slots", key_coder=U32, value_coder=U32)
    await db.put_multi([(k, k) for k in range(500)])
    it = db.keys(batch_size=10)
    seen = [await anext(it) for _ in range(25)]
    await wait_no_active_readers(env)  # mid-iteration, between chunks
    assert await asyncio.wait_for(db.put(10_000, 1), TIMEOUT) is True
    seen += await collect(it)
    assert seen == [*range(500), 10_000]
    await wait_no_active_readers(env)


# --------------------------------------------------------------------------------------------
# writes during iteration
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
async def test_writes_far_ahead_and_behind_during_iteration(
    open_env: OpenEnv, reverse: bool
) -> None:
    """Keys inserted far ahead of the cursor (beyond anything buffered: the rest of the
    current chunk plus the chunks read ahead, at most 24 entries here) are seen, keys deleted
    there are not, and keys inserted or deleted behind it change nothing: the result is exact.
    Keys are inserted inside the range only: past its end, the reader may have found the end
    already."""
    env = open_env(sync=False)
    db = await env.open_db("w", key_coder=U32, value_coder=U32)
    original = list(range(0, 6000, 10))
    await db.put_multi([(k, k) for k in original])
    sign = -1 if reverse else 1
    inserted_ahead: set[int] = set()
    deleted_ahead: set[int] = set()
    inserted_behind: set[int] = set()
    seen: list[int] = []
    step = 0
    async for k, v in db.items(reverse=reverse, batch_size=8):
        assert v == k
        seen.append(k)
        if k % 10:
            continue  # an inserted key: act on original keys only
        step += 1
        if step % 5:
            continue
        ops: list[tuple[str, int]] = []
        if 0 <= (a := k + sign * 505) < original[-1]:
            ops.append(("put", a))
            inserted_ahead.add(a)
        if (d := k + sign * 600) >= 0 and d in original:
            ops.append(("del", d))
            deleted_ahead.add(d)
        if (b := k - sign * 45) >= 0:
            ops.append(("put", b))
            inserted_behind.add(b)
        if (e := k - sign * 30) >= 0:
            ops.append(("del", e))

        def write(txn: Transaction[int, int], ops: list[tuple[str, int]] = ops) -> None:
            for op, key in ops:
                if op == "put":
                    txn.put(key, key)
                else:
                    txn.delete(key)

        await db.run(write, write=True)
    assert inserted_ahead
    assert deleted_ahead
    assert inserted_behind
    expected = sorted((set(original) | inserted_ahead) - deleted_ahead, reverse=reverse)
    assert seen == expected
    assert not (inserted_behind - inserted_ahead) & set(seen)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("batch_size", [1, 3, None])
async def test_writes_next_to_the_cursor_never_break_iteration(
    open_env: OpenEnv, reverse: bool, batch_size: int | None
) -> None:
    """Inserting and deleting right around the cursor (including the entry just yielded, the
    resume point): no crash, no repeat, strictly monotonic, nothing inserted behind is seen."""
    env = open_env(sync=False)
    db = await env.open_db("near", key_coder=U32, value_coder=U32)
    original = list(range(100, 2100, 10))
    await db.put_multi([(k, k) for k in original])
    sign = -1 if reverse else 1
    inserted_ahead: set[int] = set()
    inserted_behind: set[int] = set()
    deleted: set[int] = set()
    seen: list[int] = []
    async for k, v in db.items(reverse=reverse, batch_size=batch_size):
        assert v == k
        seen.append(k)
        if k % 10:
            continue
        ahead, behind, nxt = k + sign * 3, k - sign * 4, k + sign * 10
        ops = [("put", ahead), ("put", behind), ("del", k)]
        inserted_ahead.add(ahead)
        inserted_behind.add(behind)
        deleted.add(k)
        if (k // 10) % 3 == 0:
            ops.append(("del", nxt))
            deleted.add(nxt)

        def write(txn: Transaction[int, int], ops: list[tuple[str, int]] = ops) -> None:
            for op, key in ops:
                if op == "put":
                    txn.put(key, key)
                else:
                    txn.delete(key)

        await db.run(write, write=True)
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen, reverse=reverse)
    assert set(seen) <= set(original) | inserted_ahead
    assert not set(seen) & inserted_behind
    # Every original key that nobody deleted before the cursor got there is seen.
    never_deleted = set(original) - {k + sign * 10 for k in original if (k // 10) % 3 == 0}
    assert never_deleted <= set(seen)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("batch_size", [1, 4])
async def test_deleting_each_yielded_entry_still_yields_everything(
    open_env: OpenEnv, reverse: bool, batch_size: int
) -> None:
    """The resume point (the last entry yielded) disappearing must not skip or repeat:
    plain keys, dupsort pairs (and whole keys at their last value), dupsort keys()."""
    env = open_env(sync=False)
    plain = await env.open_db("plain", key_coder=U32, value_coder=U32)
    dup = await env.open_db("dup", dupsort=True, key_coder=U32, value_coder=U32)
    dupk = await env.open_db("dupk", dupsort=True, key_coder=U32, value_coder=U32)
    plain_pairs = [(k, k) for k in range(0, 300, 3)]
    dup_pairs = [(k, v) for k in range(40) for v in range(0, 10 * (k % 4) + 1, 10)]
    await plain.put_multi(plain_pairs)
    await dup.put_multi(dup_pairs)
    await dupk.put_multi(dup_pairs)

    seen_plain = []
    async for k, v in plain.items(reverse=reverse, batch_size=batch_size):
        seen_plain.append((k, v))
        assert await plain.delete(k)
    assert seen_plain == model(plain_pairs, U32, U32, reverse=reverse)
    assert await plain.count() == 0

    # At the last value of a key (in scan order) delete the whole key, or only that pair while
    # earlier values remain; elsewhere delete the pair on some keys and keep it on others.
    last_in_scan = {k: v for k, v in model(dup_pairs, U32, U32, reverse=reverse)}
    kept: list[tuple[int, int]] = []
    seen_dup = []
    async for k, v in dup.items(reverse=reverse, batch_size=batch_size):
        seen_dup.append((k, v))
        if v == last_in_scan[k] and k % 2 == 0:
            assert await dup.delete(k)
            kept = [p for p in kept if p[0] != k]
        elif v == last_in_scan[k] or k % 3 == 0:
            assert await dup.delete(k, v)
        else:
            kept.append((k, v))
    assert seen_dup == model(dup_pairs, U32, U32, reverse=reverse)
    assert await collect(dup.items()) == model(kept, U32, U32)

    seen_keys = []
    async for k in dupk.keys(reverse=reverse, batch_size=batch_size):
        seen_keys.append(k)
        assert await dupk.delete(k)
    assert seen_keys == model_keys(dup_pairs, U32, U32, reverse=reverse)
    assert await dupk.count() == 0


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
async def test_dupsort_writes_far_ahead_during_iteration(open_env: OpenEnv, reverse: bool) -> None:
    env = open_env(sync=False)
    db = await env.open_db("dupw", dupsort=True, key_coder=U32, value_coder=U32)
    original = [(k, v) for k in range(30) for v in range(0, 300, 10)]  # 900 pairs
    await db.put_multi(original)
    order = model(original, U32, U32, reverse=reverse)
    index = {p: i for i, p in enumerate(order)}
    inserted_ahead: set[tuple[int, int]] = set()
    deleted_ahead: set[tuple[int, int]] = set()
    seen: list[tuple[int, int]] = []
    step = 0
    async for pair in db.items(reverse=reverse, batch_size=8):
        seen.append(pair)
        if pair not in index:
            continue
        step += 1
        if step % 4:
            continue
        i = index[pair]
        adds: list[tuple[int, int]] = []
        dels: list[tuple[int, int]] = []
        if i + 50 < len(order):  # a new value next to the entry 50 places ahead
            k, v = order[i + 50]
            adds.append((k, v + 5))
            inserted_ahead.add((k, v + 5))
        if i + 60 < len(order):
            dels.append(order[i + 60])
            deleted_ahead.add(order[i + 60])
        if i >= 5:  # behind: a new value next to an already-passed entry, and a deletion
            k, v = order[i - 5]
            adds.append((k, v + 5))
            dels.append(order[i - 3])

        def write(
            txn: Transaction[int, int],
            adds: list[tuple[int, int]] = adds,
            dels: list[tuple[int, int]] = dels,
        ) -> None:
            for k, v in adds:
                txn.put(k, v)
            for k, v in dels:
                txn.delete(k, v)

        await db.run(write, write=True)
    assert inserted_ahead
    assert deleted_ahead
    expected = model((set(original) | inserted_ahead) - deleted_ahead, U32, U32, reverse=reverse)
    assert seen == expected


async def test_clearing_the_database_during_iteration_ends_it(env: Environment) -> None:
    db = await env.open_db("clear", key_coder=U32, value_coder=U32)
    await db.put_multi([(k, k) for k in range(1000)])
    it = db.keys(batch_size=10)
    seen = [await anext(it) for _ in range(5)]
    await db.drop(delete=False)
    seen += await collect(it)
    # What was read before the clear may still come: the first job's chunks (it stops _AHEAD
    # ahead), and those of a job whose read transaction began before the clear committed (up
    # to _CHUNKS_PER_TXN, if the caller takes chunks as fast as it reads them). Every later
    # chunk is read in a newer transaction, which sees the database empty.
    assert seen == list(range(len(seen)))
    assert 5 <= len(seen) <= 10 * (ranges._AHEAD + ranges._CHUNKS_PER_TXN)
    assert await collect(db.keys()) == []


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


async def drain(make: Callable[..., Any], **kw: Any) -> None:
    """Create an iterator (async or sync) with make(**kw) and exhaust it."""
    it = make(**kw)
    if isinstance(it, RangeIterator):
        await collect(it)
    else:
        list(it)


async def test_invalid_limit_and_chunk_size_raise_value_error(env: Environment) -> None:
    db = await env.open_db("errs", key_coder=U32, value_coder=U32)
    await db.put(1, 1)
    bad: list[dict[str, Any]] = [
        {"limit": -1},
        {"limit": -100, "reverse": True},
        {"batch_size": 0},
        {"batch_size": -3},
        {"limit": 5, "batch_size": 0},
    ]
    async with env.begin() as snap:
        view = snap[db]
        for kw in bad:
            what = "limit" if "limit" in kw and kw["limit"] < 0 else "batch_size"
            for make in (db.items, db.keys, db.values, view.items, view.keys, view.values):
                with pytest.raises(ValueError, match=what):
                    await drain(make, **kw)

    def in_run(txn: Transaction[int, int]) -> list[str]:
        errors = []
        for kw in bad:
            for make in (txn.items, txn.keys, txn.values):
                try:
                    list(make(**kw))
                except ValueError as exc:
                    errors.append(str(exc))
        return errors

    assert len(await db.run(in_run)) == 3 * len(bad)


async def test_wrong_key_type_raises_type_error_naming_the_argument(env: Environment) -> None:
    nums = await env.open_db("n", key_coder=U32, value_coder=U32)
    raw = await env.open_db("r")
    text = await env.open_db("t", key_coder=StringCoder())
    await nums.put(1, 1)
    await raw.put(b"a", b"1")
    await text.put("a", b"1")
    s: Any = "1"
    by: Any = b"1"
    cases: list[tuple[AsyncDatabase[Any, Any], str, Any]] = [
        (nums, "start", s),
        (nums, "stop", s),
        (nums, "prefix", s),
        (nums, "start", 1.5),
        (raw, "start", s),
        (raw, "stop", 7),
        (raw, "prefix", s),
        (text, "start", by),
        (text, "stop", by),
    ]
    for db, arg, value in cases:
        for reverse in (False, True):
            for make in (db.items, db.keys, db.values):
                with pytest.raises(TypeError, match=arg):
                    await drain(make, **{arg: value, "reverse": reverse})
    with pytest.raises(ValueError, match="start"):
        await collect(nums.items(start=-1))
    with pytest.raises(TypeError, match="start"):
        await nums.run(lambda txn: list(txn.items(start=s)))
    with pytest.raises(TypeError, match="stop"):
        await raw.run(lambda txn: list(txn.keys(stop=s, reverse=True)))
    async with env.begin() as snap:
        with pytest.raises(TypeError, match="start"):
            await collect(snap[nums].items(start=s))
        with pytest.raises(TypeError, match="prefix"):
            await collect(snap[text].keys(prefix=by))
    # The database is still usable afterwards.
    assert await collect(nums.items()) == [(1, 1)]


async def test_iterator_on_closed_environment_raises_closed_error(env: Environment) -> None:
    db = await env.open_db("closed", key_coder=U32, value_coder=U32)
    await db.put_multi([(k, k) for k in range(500)])
    fresh = db.items()
    started = db.keys(batch_size=10)
    assert await anext(started) == 0
    batches = db.values(reverse=True).batches(10)
    await env.close()
    with pytest.raises(ClosedError):
        await anext(fresh)
    with pytest.raises(ClosedError):
        await collect(started)  # what was already read may come first, then the error
    with pytest.raises(ClosedError):
        await anext(batches)
    with pytest.raises(ClosedError):
        await collect(db.keys(reverse=True))
    with pytest.raises(ClosedError):
        await db.first()
    with pytest.raises(ClosedError):
        await db.count()


class CountingCoder(Coder[int]):
    """UInt32 keys that count their decodes (one per entry read) and can fail once, at one
    key, on the reader thread: a chunk read ahead that raises."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.decoded = 0
        self.fail_at = fail_at

    def serialize(self, obj: int) -> bytes:
        return U32.serialize(obj)

    def deserialize(self, buffer: Any) -> int:
        self.decoded += 1
        key = U32.deserialize(buffer)
        if key == self.fail_at:
            self.fail_at = None
            raise ValueError(f"cannot decode key {key}")
        return key


async def test_reading_ahead_is_bounded(env: Environment) -> None:
    """A caller that stops consuming holds its chunk and at most _AHEAD chunks read ahead:
    the reader thread stops instead of reading the whole range into memory."""
    counting = CountingCoder()
    db = await env.open_db("ahead", key_coder=counting, value_coder=U32)
    await db.put_multi([(k, k) for k in range(10_000)])
    it = db.keys(batch_size=10)
    assert await anext(it) == 0
    await wait_no_active_readers(env)  # the reader thread's job has ended: no more decoding
    if reads_inline(env):
        assert counting.decoded == 10  # read on the loop, when asked for: nothing ahead
    else:
        assert 10 <= counting.decoded <= 10 * (1 + ranges._AHEAD)
    assert [k async for k in it] == list(range(1, 10_000))


async def test_error_in_a_chunk_read_ahead_comes_in_order_and_iteration_resumes(
    env: Environment,
) -> None:
    """The entries before the failing chunk come first, then its error; the next call reads
    that chunk again (here it decodes), so nothing is skipped or repeated."""
    db = await env.open_db("fail", key_coder=CountingCoder(fail_at=25), value_coder=U32)
    await db.put_multi([(k, k) for k in range(100)])
    it = db.keys(batch_size=10)
    got = [await anext(it) for _ in range(20)]
    with pytest.raises(ValueError, match="cannot decode key 25"):
        await anext(it)
    assert got == list(range(20))
    assert [k async for k in it] == list(range(20, 100))


@threaded_only  # inline reads read each chunk in the loop's own transaction
async def test_a_reader_thread_streaming_ends_its_transaction_every_few_chunks(
    env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However long a reader thread streams to a caller that keeps up, no read transaction
    serves more than _CHUNKS_PER_TXN chunks (map growth waits for read transactions)."""
    db = await env.open_db("renew", key_coder=U32, value_coder=U32)
    await db.put_multi([(k, k) for k in range(2000)])
    used: list[object] = []  # each chunk's transaction (kept alive: identities stay unique)
    read_chunk = _scan.read_chunk

    def recording(txn: Any, *args: Any) -> Any:
        used.append(txn)
        return read_chunk(txn, *args)

    monkeypatch.setattr(_scan, "read_chunk", recording)
    monkeypatch.setattr(ranges, "_AHEAD", 1000)  # the thread never waits for the caller
    assert [k async for k in db.keys(batch_size=50)] == list(range(2000))
    assert len(used) >= 2000 // 50
    per_txn = [sum(1 for u in used if u is txn) for txn in {id(u): u for u in used}.values()]
    assert max(per_txn) == ranges._CHUNKS_PER_TXN


# --------------------------------------------------------------------------------------------
# cancellation
# --------------------------------------------------------------------------------------------


class GateCoder(Coder[int]):
    """UInt32 keys whose ``deserialize`` (run on the reader thread, while a chunk is decoded)
    blocks at its ``trigger``-th call until released, so a read can be caught in flight."""

    def __init__(self) -> None:
        self.calls = 0
        self.trigger = -1
        self.entered = threading.Event()
        self.release = threading.Event()

    def serialize(self, obj: int) -> bytes:
        return U32.serialize(obj)

    def deserialize(self, buffer: Any) -> int:
        self.calls += 1
        if self.calls == self.trigger:
            self.entered.set()
            assert self.release.wait(TIMEOUT)
        return U32.deserialize(buffer)


@pytest.mark.parametrize(
    ("source", "trigger"),
    [
        pytest.param("database", 1, id="database-first-read"),
        pytest.param("database", 11, id="database-read-ahead"),
        pytest.param("snapshot", 1, id="snapshot-first-read"),
    ],
)
async def test_cancelled_anext_does_not_skip_entries(
    env: Environment, source: str, trigger: int
) -> None:
    if source == "database" and reads_inline(env):
        pytest.skip("inline reads run on the loop thread: no read is in flight to cancel")
    gate = GateCoder()
    db = await env.open_db("cancel", key_coder=gate, value_coder=U32)
    keys = list(range(100))
    await db.put_multi([(k, k) for k in keys])
    async with env.begin() as snap:
        it = snap[db].keys(batch_size=10) if source == "snapshot" else db.keys(batch_size=10)
        gate.calls = 0
        gate.trigger = trigger
        got: list[int] = []
        if trigger > 10:  # the first chunk arrives; reading the second one ahead blocks
            got = [await anext(it) for _ in range(10)]
        task = asyncio.ensure_future(anext(it))
        assert await asyncio.to_thread(gate.entered.wait, TIMEOUT)
        task.cancel()  # while the read is in flight on the reader thread
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.release.set()
        rest = await collect(it)
    # Nothing may be skipped: the iteration either goes on where it was or ends.
    assert got + rest in (keys, got)


async def test_chunk_size_is_the_deprecated_name_of_batch_size(db: Db) -> None:
    """``chunk_size`` counts bytes (get_chunks); ranges count entries with ``batch_size``."""
    await db.put_multi([(b"k%d" % i, b"v") for i in range(10)])
    with pytest.warns(DeprecationWarning, match="batch_size") as caught:
        it = db.keys(chunk_size=3)
    assert caught[0].filename == __file__  # it points at the caller
    assert len(await collect(it)) == 10

    def in_txn(txn: Transaction[bytes, bytes]) -> int:
        with pytest.warns(DeprecationWarning, match="batch_size"):
            return len(list(txn.keys(chunk_size=3)))

    assert await db.run(in_txn) == 10
    with pytest.raises(TypeError, match="batch_size only"):
        db.keys(batch_size=3, chunk_size=3)
    with pytest.raises(ValueError, match="batch_size"):
        db.keys(batch_size=0)
