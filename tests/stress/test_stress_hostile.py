"""Reliability: hostile and bad input (promise 5, table-driven part).

For every built-in coder and every operation: wrong types, ``None``, out-of-range integers,
unencodable strings, empty keys, keys longer than ``env.max_key_size()``, unhashable keys in
``get_multi``/``delete_multi``, stored bytes the coder cannot decode. All bad operations of a
coder are submitted at once together with good neighbours, so they share batches: each bad one
must fail with a clear exception (TypeError / ValueError / ``aiolmdb.InvalidKeyError`` / an
``lmdb.Error``) for its own caller only, every neighbour must commit, and nothing partial may be
written. Also: empty and oversized values in dupsort databases, and one value of 100 MiB.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import pytest

import aiolmdb
from aiolmdb import (
    IdentityCoder,
    InvalidKeyError,
    JSONCoder,
    PickleCoder,
    StringCoder,
    UInt16Coder,
    UInt32Coder,
    UInt64Coder,
)
from aiolmdb.coders import Coder

from ._stress_util import TIMEOUT, MiB, open_env

AnyDb = aiolmdb.AsyncDatabase[Any, Any]
MODES: dict[str, dict[str, Any]] = {
    "threaded": {"inline_reads": False},
    "inline": {"inline_reads": True},
    "auto": {"reads": "auto"},
    # writemap=True has no nested transactions: a failing operation makes the engine abort
    # the batch and run it again without it (another code path for "fails alone").
    "writemap": {"inline_reads": False, "writemap": True},
}
Exc = type[BaseException]


def _circular() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _long_hex(n: int) -> str:
    """A string of n hex digits that zlib cannot shrink much."""
    out = ""
    seed = b"seed"
    while len(out) < n:
        seed = hashlib.sha256(seed).digest()
        out += seed.hex()
    return out[:n]


@dataclass
class CoderCase:
    """A coder and the inputs it must reject, with the exception each must raise."""

    name: str
    coder: Coder[Any]
    make: Callable[[int], Any]  # a distinct valid key/value for each int
    bad_keys: list[tuple[Any, Exc]]
    bad_values: list[tuple[Any, Exc]]
    undecodable: bytes | None  # stored bytes that deserialize must reject with ValueError


def coder_cases(mks: int) -> list[CoderCase]:
    lock = threading.Lock()
    return [
        CoderCase(
            "identity",
            IdentityCoder(),
            lambda i: b"g%05d" % i,
            [
                (None, TypeError),
                ("str", TypeError),
                (1, TypeError),
                (1.5, TypeError),
                (b"", InvalidKeyError),
                (b"x" * (mks + 1), InvalidKeyError),
                (bytearray(b"y" * (mks + 1)), InvalidKeyError),  # unhashable too
            ],
            [(None, TypeError), ("str", TypeError), (1, TypeError), ([b"x"], TypeError)],
            None,
        ),
        CoderCase(
            "string",
            StringCoder(),
            lambda i: f"g{i:05d}",
            [
                (None, TypeError),
                (b"bytes", TypeError),
                (1, TypeError),
                ("\ud800", ValueError),
                ("", InvalidKeyError),
                ("é" * (mks // 2 + 1), InvalidKeyError),  # short in characters, long in bytes
            ],
            [(None, TypeError), (b"v", TypeError), (5, TypeError), ("\udfff", ValueError)],
            b"\xff\xfe not utf-8",
        ),
        CoderCase(
            "uint16",
            UInt16Coder(),
            lambda i: i,
            [
                (None, TypeError),
                ("1", TypeError),
                (1.0, TypeError),
                (True, TypeError),
                (-1, ValueError),
                (65536, ValueError),
                (2**70, ValueError),
            ],
            [(None, TypeError), (False, TypeError), (-5, ValueError), (70000, ValueError)],
            b"\x01",
        ),
        CoderCase(
            "uint32",
            UInt32Coder(),
            lambda i: i * 65537,
            [(None, TypeError), (2**32, ValueError), (-1, ValueError), (b"\x00" * 4, TypeError)],
            [(2**32, ValueError), ("7", TypeError)],
            b"\x01\x02\x03",
        ),
        CoderCase(
            "uint64",
            UInt64Coder(),
            lambda i: i * 2**40,
            [(None, TypeError), (2**64, ValueError), (-(2**63), ValueError), (3.0, TypeError)],
            [(2**64, ValueError), (None, TypeError)],
            b"\x01" * 9,
        ),
        CoderCase(
            "json",
            JSONCoder(),
            lambda i: f"g{i:05d}",
            [
                (object(), TypeError),
                (b"bytes", TypeError),
                (frozenset({1}), TypeError),
                ("\ud800", ValueError),
                ("x" * mks, InvalidKeyError),  # quotes make it mks + 2 bytes
                (_circular(), ValueError),  # unhashable too
            ],
            [(set(), TypeError), (object(), TypeError), (_circular(), ValueError)],
            b'{"unterminated',
        ),
        CoderCase(
            "pickle",
            PickleCoder(),
            lambda i: ("g", i),
            [(lambda: 0, TypeError), (lock, TypeError), ("x" * mks, InvalidKeyError)],
            [(lambda: 0, TypeError), (lock, TypeError)],
            b"\x80\x05garbage",
        ),
        CoderCase(
            "zlib-json",
            JSONCoder().compressed(6),
            lambda i: f"g{i:05d}",
            [(object(), TypeError), (_long_hex(4 * mks), InvalidKeyError)],
            [(set(), TypeError), (object(), TypeError)],
            b"not zlib data",
        ),
    ]


def constantly(value: Any) -> Callable[[Any], Any]:
    """An update function that ignores the old value."""

    def fn(old: Any) -> Any:
        return value

    return fn


def hashable(obj: object) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True


@dataclass
class Attempt:
    label: str
    coro: Awaitable[Any]
    expected: Exc
    # Called after everything finished: asserts nothing partial was written.
    untouched: Callable[[], Awaitable[None]] | None = None


async def collect(it: Any) -> list[Any]:
    return [x async for x in it]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case_name", [c.name for c in coder_cases(511)])
async def test_bad_input_fails_alone_for_every_coder_and_operation(
    tmp_path: Path, mode: str, case_name: str
) -> None:
    env = open_env(tmp_path / "env", **MODES[mode])
    mks = env.max_key_size()
    case = next(c for c in coder_cases(mks) if c.name == case_name)
    db: AnyDb = await env.open_db("db", key_coder=case.coder, value_coder=case.coder)
    raw = await env.open_db("db")  # the same database, bytes in and out
    make = case.make
    existing = {make(i): make(1000 + i) for i in range(3)}
    assert await db.put_multi(list(existing.items())) == 3
    model: dict[Any, Any] = dict(existing)
    fresh = iter(range(2000, 100000))

    def new_key() -> Any:
        return make(next(fresh))

    def absent(*keys: Any) -> Callable[[], Awaitable[None]]:
        async def check() -> None:
            for key in keys:
                assert await db.get(key) is None, key

        return check

    def unchanged(key: Any) -> Callable[[], Awaitable[None]]:
        async def check() -> None:
            assert await db.get(key) == existing[key]

        return check

    k0, k1, k2 = list(existing)
    v = make(5000)
    attempts: list[Attempt] = []
    for bad, exc in case.bad_keys:
        multi_exc: Exc = exc if hashable(bad) else TypeError
        n1, n2 = new_key(), new_key()
        attempts += [
            Attempt("get", db.get(bad), exc),
            Attempt("get_multi", db.get_multi([k0, bad]), multi_exc),
            Attempt("put", db.put(bad, v), exc),
            Attempt("put overwrite=False", db.put(bad, v, overwrite=False), exc),
            Attempt("put_multi", db.put_multi([(n1, v), (bad, v)]), exc, absent(n1)),
            Attempt("put_multi bad first", db.put_multi([(bad, v), (n2, v)]), exc, absent(n2)),
            Attempt("delete", db.delete(bad), exc),
            Attempt("delete_multi", db.delete_multi([k1, bad]), multi_exc, unchanged(k1)),
            Attempt("pop", db.pop(bad), exc),
            Attempt("replace", db.replace(bad, v), exc),
            Attempt("update", db.update(bad, lambda old: v), exc),
            Attempt("get_all", db.get_all(bad), exc),
            Attempt("count_values", db.count_values(bad), exc),
        ]
        if exc is not InvalidKeyError and bad is not None:
            # Range bounds: None means "unbounded" and sizes are not limited; bad types are.
            attempts += [
                Attempt("items(start)", collect(db.items(bad)), exc),
                Attempt("keys(stop)", collect(db.keys(k0, bad)), exc),
                Attempt("values(prefix)", collect(db.values(prefix=bad)), exc),
            ]
    for bad, exc in case.bad_values:
        n1, n2, n3 = new_key(), new_key(), new_key()
        attempts += [
            Attempt("put value", db.put(n1, bad), exc, absent(n1)),
            Attempt("put_multi value", db.put_multi([(n2, v), (n3, bad)]), exc, absent(n2, n3)),
            Attempt("replace value", db.replace(k2, bad), exc, unchanged(k2)),
            Attempt("update value", db.update(k2, constantly(bad)), exc, unchanged(k2)),
            Attempt("put value overwrite=False", db.put(k0, bad, overwrite=False), exc),
        ]
    # Not coder-specific, but hostile all the same.
    attempts += [
        Attempt("get_multi(None)", db.get_multi(None), TypeError),  # type: ignore[arg-type]
        Attempt("put_multi(None)", db.put_multi(None), TypeError),  # type: ignore[arg-type]
        Attempt("put_multi triple", db.put_multi([(new_key(), v, v)]), TypeError),  # type: ignore[list-item]
        Attempt("put_multi 1-tuple", db.put_multi([(new_key(),)]), TypeError),  # type: ignore[list-item]
        Attempt("delete_multi(None)", db.delete_multi(None), TypeError),  # type: ignore[arg-type]
        Attempt("update fn raises", db.update(k0, lambda old: 1 // 0), ZeroDivisionError),
        Attempt("items(limit=-1)", _raises_now(lambda: db.items(limit=-1)), ValueError),
        Attempt("keys(batch_size=0)", _raises_now(lambda: db.keys(batch_size=0)), ValueError),
    ]

    # Good neighbours interleaved with the bad operations, all submitted at once.
    neighbours: list[tuple[Any, Awaitable[Any], Any]] = []
    coros: list[Awaitable[Any]] = []
    for attempt in attempts:
        coros.append(attempt.coro)
        key = new_key()
        neighbours.append((key, db.put(key, make(7000)), True))
        coros.append(neighbours[-1][1])
        model[key] = make(7000)
    for _ in range(10):
        pairs = [(new_key(), make(8000)), (new_key(), make(8001))]
        neighbours.append((None, db.put_multi(pairs), 2))
        coros.append(neighbours[-1][1])
        model.update(pairs)
    results = await asyncio.wait_for(asyncio.gather(*coros, return_exceptions=True), TIMEOUT)

    n = len(attempts)
    for i, attempt in enumerate(attempts):
        got = results[2 * i]
        where = f"{case.name}: {attempt.label}"
        assert isinstance(got, attempt.expected), (
            f"{where}: expected {attempt.expected}, got {got!r}"
        )
        assert str(got), f"{where}: exception without a message"
        if attempt.expected is InvalidKeyError:
            assert isinstance(got, lmdb.BadValsizeError)
            assert isinstance(got, ValueError)
    for j, (_, _, expected) in enumerate(neighbours):
        got = results[2 * j + 1] if j < n else results[2 * n + (j - n)]
        assert got == expected, f"neighbour {j}: {got!r}"
    for attempt in attempts:
        if attempt.untouched is not None:
            await attempt.untouched()

    # Exactly the model is stored: nothing partial, nothing extra.
    assert await db.count() == len(model)
    for key, value in model.items():
        assert await db.get(key) == value, key

    # Stored bytes the coder cannot decode: ValueError for that reader only; a pop, replace or
    # update that cannot decode the old value rolls back.
    if case.undecodable is not None:
        bad_key = b"zz-undecodable"
        assert await raw.put(bad_key, case.undecodable)
        kdb: AnyDb = env.open_db("db", key_coder=IdentityCoder(), value_coder=case.coder)
        calls: list[tuple[str, Awaitable[Any]]] = [
            ("get", kdb.get(bad_key)),
            ("get_multi", kdb.get_multi([bad_key])),
            ("pop", kdb.pop(bad_key)),
            ("replace", kdb.replace(bad_key, v)),
            ("update", kdb.update(bad_key, lambda old: v)),
            ("values", collect(kdb.values(prefix=b"zz-"))),
            ("items", collect(kdb.items(b"zz-undecodable"))),
        ]
        outcome = await asyncio.wait_for(
            asyncio.gather(
                *(c for _, c in calls), raw.put(b"zz-neighbour", b"n"), return_exceptions=True
            ),
            TIMEOUT,
        )
        for (label, _), got in zip(calls, outcome, strict=False):
            assert isinstance(got, ValueError), f"{case.name} undecodable {label}: {got!r}"
        assert outcome[-1] is True
        assert await raw.get(bad_key) == case.undecodable  # nothing rolled forward
    await asyncio.wait_for(env.close(), TIMEOUT)


def _raises_now(make_iter: Callable[[], Any]) -> Awaitable[Any]:
    """A coroutine that calls make_iter (which raises synchronously) when awaited."""

    async def run() -> Any:
        return await collect(make_iter())

    return run()


# --------------------------------------------------------------------------------------------
# empty and oversized values; dupsort
# --------------------------------------------------------------------------------------------


async def test_empty_values_plain_and_dupsort(tmp_path: Path) -> None:
    env = open_env(tmp_path / "env")
    mks = env.max_key_size()
    plain = env.get_default_database()
    dup = await env.open_db("dup", dupsort=True)
    assert await dup.put_multi([(b"k", b"a"), (b"k", b"b")]) == 2

    # A plain database stores an empty value like any other (and get does not confuse it with
    # a missing key). In a dupsort database LMDB stores values as keys of a sub-database, so
    # an empty value, or one longer than max_key_size(), is refused with BadValsizeError, to
    # that caller only, and nothing partial is written.
    results = await asyncio.wait_for(
        asyncio.gather(
            plain.put(b"empty", b""),
            dup.put(b"k", b""),
            dup.put(b"k", b"x" * (mks + 1)),
            dup.put_multi([(b"k2", b"ok"), (b"k2", b"")]),
            dup.update(b"k3", lambda old: b""),
            dup.put(b"k", b"c"),  # neighbour
            plain.put_multi([(b"n1", b""), (b"n2", b"2")]),  # neighbour
            return_exceptions=True,
        ),
        TIMEOUT,
    )
    assert results[0] is True
    for got in results[1:5]:
        assert isinstance(got, lmdb.BadValsizeError), got
    assert results[5:] == [True, 2]
    assert await plain.get(b"empty", default=b"missing") == b""
    assert await plain.get_multi([b"empty", b"n1"], default=b"missing") == {
        b"empty": b"",
        b"n1": b"",
    }
    assert await dup.get_all(b"k") == [b"a", b"b", b"c"]
    assert await dup.get_all(b"k2") == []  # nothing partial
    assert await dup.get(b"k3") is None
    assert await plain.pop(b"empty", default=b"missing") == b""
    assert await plain.get(b"empty", default=b"missing") == b"missing"
    await asyncio.wait_for(env.close(), TIMEOUT)


@pytest.mark.parametrize("coder", [IdentityCoder(), StringCoder()], ids=["identity", "string"])
async def test_dupsort_delete_of_empty_value_deletes_nothing(
    tmp_path: Path, coder: Coder[Any]
) -> None:
    env = open_env(tmp_path / "env")
    try:
        dup: AnyDb = await env.open_db("dup", dupsort=True, value_coder=coder)
        a, b, empty = (b"a", b"b", b"") if isinstance(coder, IdentityCoder) else ("a", "b", "")
        assert await dup.put_multi([(b"k", a), (b"k", b)]) == 2
        assert await dup.delete(b"k", empty) is False
        assert await dup.get_all(b"k") == [a, b]
    finally:
        await asyncio.wait_for(env.close(), TIMEOUT)


@pytest.mark.timeout(120)
async def test_value_of_100_mib_with_neighbours(tmp_path: Path) -> None:
    env = open_env(tmp_path / "env", map_size=1 * MiB)  # grows to fit it
    db = env.get_default_database()
    huge = bytes(range(256)) * (100 * MiB // 256 + 1)
    assert len(huge) >= 100 * MiB
    big = asyncio.ensure_future(db.put(b"huge", huge))
    small = [asyncio.ensure_future(db.put(b"s%03d" % i, b"x" * 100)) for i in range(200)]
    assert await asyncio.wait_for(big, TIMEOUT) is True
    assert await asyncio.wait_for(asyncio.gather(*small), TIMEOUT) == [True] * 200
    assert env.info()["map_size"] > 100 * MiB
    got = await db.get(b"huge")
    assert got is not None
    assert len(got) == len(huge)
    assert got == huge
    del got
    assert await db.get_multi([b"s000", b"s199"]) == {b"s000": b"x" * 100, b"s199": b"x" * 100}
    # And a dupsort database refuses a value that large clearly, to that caller only.
    dup = await env.open_db("dup", dupsort=True)
    results = await asyncio.gather(
        dup.put(b"k", huge[: 2 * MiB]), dup.put(b"k", b"fine"), return_exceptions=True
    )
    assert isinstance(results[0], lmdb.BadValsizeError)
    assert results[1] is True
    await asyncio.wait_for(env.close(), TIMEOUT)
