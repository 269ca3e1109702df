"""Every option of ``aiolmdb.open()`` and ``env.open_db()`` is checked at the call.

A wrong type raises ``TypeError``, a value out of range ``ValueError``; the message names the
option and shows the value given (its ``repr()``), and nothing is opened (no directory, no
thread). The tables hold, for each option, wrong values and values that must be accepted.

Booleans: ``True``/``False`` and the ints ``0``/``1`` are accepted (``sync=0`` is common in
code written for py-lmdb, and it is unambiguous); anything else is refused, even if Python
finds it truthy or falsy (``sync="no"`` is truthy, ``None`` and ``2`` say nothing clear).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MAP_SIZE, TIMEOUT, aiolmdb_threads

import aiolmdb
from aiolmdb import JSONCoder

Case = tuple[str, Any, type[Exception]]

# Values no boolean option accepts (each refused with TypeError).
NOT_BOOLEANS: list[Any] = ["no", None, 2, 1.0, b"", []]

BOOLEAN_OPEN_OPTIONS = [
    "inline_reads",
    "map_growth",
    "readonly",
    "sync",
    "metasync",
    "map_async",
    "writemap",
    "subdir",
    "lock",
    "create",
    "meminit",
    "readahead",
]

OPEN_CASES: list[Case] = [
    ("executor", "pool", TypeError),
    ("executor", concurrent.futures.ThreadPoolExecutor, TypeError),  # the class, not one
    ("readers", 0, ValueError),
    ("readers", -1, ValueError),
    ("readers", 1.5, TypeError),
    ("readers", "2", TypeError),
    ("readers", True, TypeError),
    ("max_batch", 0, ValueError),
    ("max_batch", -5, ValueError),
    ("max_batch", 1.5, TypeError),
    ("max_batch", "64", TypeError),
    ("max_batch", None, TypeError),
    ("max_batch", True, TypeError),
    ("max_map_size", "big", TypeError),
    ("max_map_size", 1.5e9, TypeError),
    ("max_map_size", 0, ValueError),
    ("max_map_size", -1, ValueError),
    ("map_size", "1GB", TypeError),
    ("map_size", 1.5, TypeError),
    ("map_size", None, TypeError),
    ("map_size", -1, ValueError),
    ("max_readers", 0, ValueError),
    ("max_readers", "126", TypeError),
    ("max_dbs", -1, ValueError),
    ("max_dbs", 2.0, TypeError),
    ("max_spare_txns", -1, ValueError),
    ("max_spare_txns", "1", TypeError),
    ("mode", "0644", TypeError),
    ("mode", -1, ValueError),
    ("mode", 0o10000, ValueError),  # beyond the permission bits
    ("changelog", "all", ValueError),
    ("changelog", 2, ValueError),
    ("changelog_retention", "5", TypeError),
    ("changelog_retention", 1.5, TypeError),
    ("changelog_retention", 10, ValueError),  # without changelog=True
    ("reads", "fast", ValueError),
    ("reads", "Auto", ValueError),
    ("reads", True, TypeError),
    ("reads", 1, TypeError),
    *[
        (name, value, TypeError)
        for name in BOOLEAN_OPEN_OPTIONS
        for value in NOT_BOOLEANS
        if not (name == "inline_reads" and value is None)  # None: not given (reads= decides)
    ],
]

OPEN_ACCEPTED: list[tuple[str, Any]] = [
    ("readers", 1),
    ("max_batch", 1),
    ("max_map_size", None),
    ("max_map_size", 2 * MAP_SIZE),
    ("map_size", 0),  # LMDB's default size
    ("max_readers", 1),
    ("max_dbs", 0),
    ("max_spare_txns", 0),
    ("mode", 0o600),
    ("sync", 0),
    ("sync", 1),
    ("metasync", False),
    ("inline_reads", 1),
    ("inline_reads", None),
    ("reads", "auto"),
    ("reads", "inline"),
    ("reads", "threaded"),
    ("reads", None),
    ("map_growth", 0),
    ("changelog", True),
    ("changelog", "keys"),
    ("changelog", 0),
]


def case_id(name: str, value: Any) -> str:
    return f"{name}={value!r}"


def assert_names(exc: BaseException, name: str, value: Any) -> None:
    message = str(exc)
    assert name in message, message
    assert repr(value) in message, message


@pytest.mark.parametrize(
    ("name", "value", "error"), OPEN_CASES, ids=[case_id(n, v) for n, v, _ in OPEN_CASES]
)
async def test_open_refuses_a_bad_option(
    tmp_path: Path, name: str, value: Any, error: type[Exception]
) -> None:
    path = tmp_path / "env"
    before = aiolmdb_threads()
    options: dict[str, Any] = {"map_size": MAP_SIZE, name: value}
    try:
        env = aiolmdb.open(path, **options)
    except error as exc:
        assert_names(exc, name, value)
    else:
        await asyncio.wait_for(env.close(), TIMEOUT)
        pytest.fail(f"open() accepted {name}={value!r}")
    assert not path.exists()  # refused before LMDB created anything
    assert aiolmdb_threads() == before


def test_open_refuses_an_unknown_option(tmp_path: Path) -> None:
    path = tmp_path / "env"
    with pytest.raises(TypeError) as info:
        aiolmdb.open(path, map_size=MAP_SIZE, sycn=False)  # py-lmdb refuses it too
    assert "'sycn'" in str(info.value)
    assert not path.exists()


@pytest.mark.parametrize(
    ("name", "value"), OPEN_ACCEPTED, ids=[case_id(n, v) for n, v in OPEN_ACCEPTED]
)
async def test_open_accepts_a_good_option(tmp_path: Path, name: str, value: Any) -> None:
    options: dict[str, Any] = {"map_size": MAP_SIZE, name: value}
    env = aiolmdb.open(tmp_path / "env", **options)
    try:
        db = env.get_default_database()
        assert await db.put(b"k", b"v")
        assert await db.get(b"k") == b"v"
    finally:
        await asyncio.wait_for(env.close(), TIMEOUT)


async def test_an_executor_is_accepted(tmp_path: Path) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        async with aiolmdb.open(tmp_path / "env", map_size=MAP_SIZE, executor=pool) as env:
            db = env.get_default_database()
            assert await db.put(b"k", b"v")
            assert await db.get(b"k") == b"v"


BOOLEAN_DB_FLAGS = ["dupsort", "integerkey", "integerdup", "dupfixed", "reverse_key", "create"]

OPEN_DB_CASES: list[Case] = [
    ("name", 123, TypeError),
    ("name", ["a"], TypeError),
    ("name", "", ValueError),
    ("name", b"", ValueError),
    ("name", "a\x00b", ValueError),  # LMDB would cut it at the NUL: the database "a"
    ("key_coder", "json", TypeError),
    ("key_coder", JSONCoder, TypeError),  # the class, not a coder
    ("value_coder", "json", TypeError),
    ("value_coder", JSONCoder, TypeError),
    *[(name, value, TypeError) for name in BOOLEAN_DB_FLAGS for value in NOT_BOOLEANS],
]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[aiolmdb.Environment]:
    """One environment (threaded reads: the checks do not depend on the read mode)."""
    async with aiolmdb.open(tmp_path / "env", map_size=MAP_SIZE) as environment:
        yield environment


@pytest.mark.parametrize(
    ("name", "value", "error"), OPEN_DB_CASES, ids=[case_id(n, v) for n, v, _ in OPEN_DB_CASES]
)
async def test_open_db_refuses_a_bad_option(
    env: aiolmdb.Environment, name: str, value: Any, error: type[Exception]
) -> None:
    options: dict[str, Any] = {name: value} if name != "name" else {}
    db_name = value if name == "name" else "db"
    with pytest.raises(error) as info:
        env.open_db(db_name, **options)  # at the call, not at the first await
    assert_names(info.value, name, value)
    # Nothing was created.
    assert await env.get_default_database().count() == 0


def test_open_db_refuses_an_unknown_flag(env: aiolmdb.Environment) -> None:
    with pytest.raises(TypeError) as info:
        env.open_db("db", dupsrot=True)
    assert "'dupsrot'" in str(info.value)


async def test_open_db_accepts_zero_and_one_as_flags(env: aiolmdb.Environment) -> None:
    dup = await env.open_db("dup", dupsort=1, create=1)
    plain = await env.open_db("plain", dupsort=0)
    assert dup.dupsort
    assert not plain.dupsort
    assert await dup.put_multi([(b"k", b"1"), (b"k", b"2")]) == 2
    assert await dup.get_all(b"k") == [b"1", b"2"]
