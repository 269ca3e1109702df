"""Expiring databases (``open_db(name, ttl=)``, ``put(..., ttl=)``): reads never return an
expired entry, the writer sweeps them through the expiry index (as deletes in the change log),
and expiry survives reopening, compacting copies and dump/load.

Time is a fake clock (``aiolmdb._store.expiry.clock``, replaced per test): nothing sleeps. A
sweep is triggered by ``env.sweep_expired()`` or by a write (the writer sweeps between
batches), and awaited through its result or the next write's.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lmdb
import pytest
from conftest import DB_OPERATIONS, MAP_SIZE, TIMEOUT, OpenEnv, collect, threaded_only
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiolmdb
from aiolmdb._cli.commands import main
from aiolmdb._store import expiry as _expiry

START = 1_800_000_000  # seconds since the epoch, on the fake clock


class Clock:
    """A fake wall clock for expiries, moved by hand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ns = START * 10**9
        monkeypatch.setattr(_expiry, "clock", self)

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += round(seconds * 10**9)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


async def index_entries(env: aiolmdb.Environment) -> int:
    """How many pairs the expiry index holds (0 if it does not exist)."""
    info = await env.database_info(_expiry.INDEX_NAME)
    return 0 if info is None else info.entries


async def swept(env: aiolmdb.Environment) -> int:
    """Sweep now; how many entries sweeps deleted so far. (The writer may have swept some
    itself before ``sweep_expired`` ran, between the previous operation's commit and its
    next wait: the total is what is certain.)"""
    await env.sweep_expired()
    return env.metrics().expired


async def stored_entries(db: aiolmdb.AsyncDatabase[Any, Any]) -> int:
    """Entries LMDB holds, expired or not."""
    return int((await db.stat())["entries"])


# ---------------------------------------------------------------------------- reads
async def test_exists_and_key_iteration_skip_an_expired_entry(
    env: aiolmdb.Environment, clock: Clock
) -> None:
    db = await env.open_db("cache", ttl=10)
    await db.put(b"a", b"1")
    await db.put(b"b", b"2", ttl=30)
    assert await db.exists(b"a")
    assert await db.exists(b"b")
    clock.advance(11)
    # Not swept yet (LMDB still holds both), but "a" is absent to every read.
    assert await stored_entries(db) == 2
    assert not await db.exists(b"a")
    assert await db.exists(b"b")
    assert [k async for k in db] == [b"b"]


async def test_reads_never_return_an_expired_entry(env: aiolmdb.Environment, clock: Clock) -> None:
    db = await env.open_db("cache", ttl=10, value_coder=aiolmdb.JSONCoder())
    await db.put(b"a", 1)
    await db.put(b"b", 2, ttl=30)
    await db.put(b"c", 3, ttl=None)
    await db.put(b"d", 4, ttl=datetime.timedelta(seconds=5))
    assert await collect(db.keys()) == [b"a", b"b", b"c", b"d"]

    clock.advance(10)  # a (10 s) and d (5 s) have expired: exactly at their expiry
    assert await db.get(b"a") is None
    assert await db.get(b"a", "gone") == "gone"
    assert await db.get(b"b") == 2
    assert await db.get_multi([b"a", b"b", b"d"]) == {b"a": None, b"b": 2, b"d": None}
    assert await collect(db.items()) == [(b"b", 2), (b"c", 3)]
    assert await collect(db.keys(reverse=True)) == [b"c", b"b"]
    assert await collect(db.values()) == [2, 3]
    assert await collect(db.items(offset=1)) == [(b"c", 3)]
    assert await collect(db.items(limit=1)) == [(b"b", 2)]
    assert await collect(db.items().batches(1)) == [[(b"b", 2)], [(b"c", 3)]]
    assert await db.first() == (b"b", 2)
    assert await db.last() == (b"c", 3)
    assert await db.count() == 2
    assert await db.count(b"a", b"c") == 1
    assert await db.get_all(b"a") == []
    assert await db.count_values(b"a") == 0
    assert await db.count_values(b"b") == 1
    with pytest.raises(KeyError):
        await collect(db.get_chunks(b"a"))

    clock.advance(1000)
    assert await collect(db.items()) == [(b"c", 3)]  # ttl=None never expires
    assert await db.first() == await db.last() == (b"c", 3)


async def test_a_range_of_expired_entries_is_skipped_chunk_after_chunk(
    env: aiolmdb.Environment, clock: Clock
) -> None:
    db = await env.open_db("cache", ttl=10)
    await db.put_multi([(b"k%04d" % i, b"v") for i in range(300)], ttl=5)
    await db.put(b"z", b"last")
    clock.advance(6)
    # Chunks of expired entries only are read past, not taken for the end of the range.
    assert await collect(db.items()) == [(b"z", b"last")]
    assert await collect(db.keys(reverse=True, limit=5)) == [b"z"]
    assert await collect(db.items(offset=0, limit=2)) == [(b"z", b"last")]
    assert await collect(db.items(offset=1)) == []


async def test_transaction_views_hide_and_write_expiring_entries(
    env: aiolmdb.Environment, clock: Clock
) -> None:
    db = await env.open_db("cache", ttl=10)

    def write(txn: aiolmdb.Transaction[bytes, bytes]) -> None:
        txn.put(b"a", b"1")
        txn.put(b"b", b"2", ttl=100)
        txn.put_multi([(b"c", b"3")], ttl=None)

    await db.run(write, write=True)
    async with env.begin(write=True) as txn:
        await txn[db].put(b"d", b"4", ttl=1)
        assert await txn[db].get(b"d") == b"4"
    clock.advance(50)
    assert await db.run(lambda txn: list(txn.items())) == [(b"b", b"2"), (b"c", b"3")]
    async with env.begin() as snap:
        assert await snap[db].get(b"a") is None
        assert await collect(snap[db].keys()) == [b"b", b"c"]


# ---------------------------------------------------------------------------- writes
async def test_an_expired_entry_counts_as_absent_for_writes(
    env: aiolmdb.Environment, clock: Clock
) -> None:
    db = await env.open_db("cache", ttl=10, value_coder=aiolmdb.JSONCoder())
    await db.put_multi({b"a": 1, b"b": 2, b"c": 3, b"d": 4, b"e": 5, b"f": 6})
    clock.advance(10)
    assert await db.put(b"a", 10, overwrite=False)  # absent: stored
    assert await db.get(b"a") == 10
    assert not await db.put(b"b", 20, if_value=2)  # absent: the condition fails
    with pytest.raises(aiolmdb.ConflictError, match="absent"):
        await db.put(b"b", 20, if_value=2, raise_on_conflict=True)
    assert not await db.delete(b"c")  # absent
    assert not await db.delete(b"d", 4)
    assert await db.pop(b"e", "none") == "none"
    assert await db.replace(b"f", 60) is None
    assert await db.update(b"g", lambda old: (old or 0) + 1) == 1
    assert await db.delete_multi([b"c", b"f"]) == {b"c": False, b"f": True}
    assert await collect(db.items()) == [(b"a", 10), (b"g", 1)]
    clock.advance(100)
    assert await collect(db.items()) == []


async def test_update_keeps_a_live_entrys_expiry_and_put_resets_it(
    env: aiolmdb.Environment, clock: Clock
) -> None:
    db = await env.open_db("counters", ttl=60, value_coder=aiolmdb.JSONCoder())
    await db.put(b"hits", 0, ttl=10)
    clock.advance(5)
    assert await db.update(b"hits", lambda n: (n or 0) + 1) == 1  # a rate-limit window: same expiry
    clock.advance(5)
    assert await db.get(b"hits") is None
    assert await db.update(b"hits", lambda n: (n or 0) + 1) == 1  # a new window: the default
    clock.advance(59)
    assert await db.get(b"hits") == 1
    await db.put(b"hits", 7)  # a put starts its ttl again
    clock.advance(59)
    assert await db.get(b"hits") == 7
    clock.advance(1)
    assert await db.get(b"hits") is None


async def test_rewriting_an_entry_moves_it_in_the_index(
    env: aiolmdb.Environment, clock: Clock
) -> None:
    db = await env.open_db("cache", ttl=10)
    await db.put(b"a", b"1")
    await db.put(b"a", b"2", ttl=100)
    await db.put(b"b", b"1")
    await db.put(b"b", b"2", ttl=None)
    await db.put(b"c", b"1")
    await db.delete(b"c")
    assert await index_entries(env) == 1  # only a's latest expiry
    clock.advance(50)
    assert await swept(env) == 0
    assert await collect(db.items()) == [(b"a", b"2"), (b"b", b"2")]
    clock.advance(50)
    assert await swept(env) == 1
    assert await collect(db.items()) == [(b"b", b"2")]
    assert await index_entries(env) == 0


async def test_ttl_is_refused_where_it_cannot_apply(env: aiolmdb.Environment) -> None:
    plain = await env.open_db("plain")
    with pytest.raises(ValueError, match="ttl= needs an expiring database"):
        await plain.put(b"k", b"v", ttl=5)
    with pytest.raises(ValueError, match="ttl= needs an expiring database"):
        await plain.put(b"k", b"v", ttl=5, overwrite=False, raise_on_conflict=True)
    with pytest.raises(ValueError, match="ttl= needs an expiring database"):
        await plain.put_multi([(b"k", b"v")], ttl=None)
    assert await plain.get(b"k") is None
    cache = await env.open_db("cache", ttl=1)
    for bad in (0, -1, math.nan, math.inf, datetime.timedelta(0)):
        with pytest.raises(ValueError, match="ttl must be a positive, finite number"):
            await cache.put(b"k", b"v", ttl=bad)
    for wrong in ("5", True, [1]):
        with pytest.raises(TypeError, match="ttl must be a number of seconds"):
            await cache.put(b"k", b"v", ttl=wrong)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl must be a positive"):
        env.open_db("other", ttl=0)
    with pytest.raises(ValueError, match="ttl must be below"):
        env.open_db("other", ttl=1e300)
    with pytest.raises(ValueError, match="cannot be versioned or dupsort"):
        env.open_db("v", ttl=5, versioned=True)
    with pytest.raises(ValueError, match="cannot be versioned or dupsort"):
        env.open_db("d", ttl=5, dupsort=True)
    with pytest.raises(ValueError, match="default database cannot expire"):
        env.open_db(None, ttl=5)
    with pytest.raises(ValueError, match="aiolmdb's metadata database"):
        env.open_db(_expiry.INDEX_NAME)
    with pytest.raises(ValueError, match="does not expire"):
        await env.open_db("plain", ttl=5)
    with pytest.raises(ValueError, match="open it with ttl=seconds"):
        await env.open_db("cache")
    with pytest.raises(ValueError, match="already open with ttl=1"):
        env.open_db("cache", ttl=2)


async def test_every_operation_works_on_an_expiring_database(
    env: aiolmdb.Environment, clock: Clock
) -> None:
    db = await env.open_db("cache", ttl=10)
    for operation in DB_OPERATIONS:
        if operation is DB_OPERATIONS[12]:
            continue  # drop() deletes the database: tested below
        await db.put(b"k", b"v")
        await operation(db)
        clock.advance(1)
    assert db.ttl == 10.0
    assert (await env.database_info("cache")) is not None


async def test_large_values_expire(env: aiolmdb.Environment, clock: Clock) -> None:
    db = await env.open_db("blobs", ttl=10)
    big = bytes(range(256)) * (5 << 12)  # over 1 MiB: copied without the GIL
    await db.put(b"big", big)
    assert await db.get(b"big") == big
    assert b"".join(await collect(db.get_chunks(b"big", 1 << 18))) == big
    await db.put_chunks(b"streamed", io.BytesIO(big))
    assert await db.get(b"streamed") == big
    clock.advance(10)
    assert await db.get(b"big") is None
    with pytest.raises(KeyError):
        await collect(db.get_chunks(b"streamed"))
    assert await swept(env) == 2


# ---------------------------------------------------------------------------- sweeping
@threaded_only
async def test_a_sweep_deletes_expired_entries_and_logs_them(
    open_env: OpenEnv, clock: Clock
) -> None:
    env = open_env(changelog=True)
    db = await env.open_db("cache", ttl=10)
    plain = await env.open_db("plain")
    await db.put_multi([(b"a", b"1"), (b"b", b"2")])
    await db.put(b"c", b"3", ttl=20)
    await plain.put(b"p", b"q")
    assert await swept(env) == 0
    clock.advance(15)
    assert await swept(env) == 2
    assert await stored_entries(db) == 1
    assert await index_entries(env) == 1
    feed = env.changes(since=0, db=db)
    changes = []
    async for change in feed:
        changes.append(change)
        if len(changes) == 5:  # 3 puts, 2 deletes (the plain database's put is not asked)
            break
    assert [(c.kind, c.key) for c in changes[-2:]] == [("delete", b"a"), ("delete", b"b")]
    assert changes[0].value == b"1"  # decoded with the database's coder: no expiry bytes


@threaded_only
async def test_the_writer_sweeps_between_batches_when_an_expiry_is_due(
    open_env: OpenEnv, clock: Clock
) -> None:
    env = open_env()
    db = await env.open_db("cache", ttl=10)
    other = await env.open_db("other")
    swept: list[Sequence[aiolmdb.Change]] = []
    env.on_commit(lambda changes: swept.append(changes))
    await db.put_multi([(b"k%d" % i, b"v") for i in range(20)])
    clock.advance(11)
    # The writer looks at the earliest expiry before it takes each item: after this write's
    # batch it sweeps, so the next write is committed after the sweep.
    await other.put(b"x", b"1")
    await other.put(b"y", b"1")
    assert env.metrics().expired == 20
    assert await stored_entries(db) == 0
    deletes = [c for commit in swept for c in commit if c.kind == "delete"]
    assert sorted(c.key for c in deletes) == sorted(b"k%d" % i for i in range(20))


@threaded_only
async def test_sweeps_are_bounded_steps(
    open_env: OpenEnv, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_expiry, "SWEEP_STEP", 3)
    env = open_env()
    db = await env.open_db("cache", ttl=10)
    await db.put_multi([(b"k%02d" % i, b"v") for i in range(10)])
    commits: list[int] = []
    env.on_commit(lambda changes: commits.append(len(changes)))
    clock.advance(10)
    assert await swept(env) == 10
    # One write transaction per step of at most 3 (the writer may have done the first steps
    # itself, before the call's).
    assert commits == [3, 3, 3, 1]


@threaded_only
async def test_the_sweep_timer_fires_by_itself(open_env: OpenEnv) -> None:
    # The real clock: the writer waits for the earliest expiry and sweeps without any write.
    env = open_env(changelog=True)
    db = await env.open_db("cache", ttl=3600)
    feed = env.changes()
    await db.put(b"soon", b"v", ttl=0.05)

    async def first_delete() -> aiolmdb.Change:
        async for change in feed:
            if change.kind == "delete":
                return change
        raise AssertionError("the feed ended")

    change = await asyncio.wait_for(first_delete(), TIMEOUT)
    assert change.key == b"soon"
    assert env.metrics().expired == 1


@threaded_only
async def test_concurrent_writes_and_sweeps_keep_the_index_in_step(
    open_env: OpenEnv, clock: Clock
) -> None:
    env = open_env()
    db = await env.open_db("cache", ttl=100)

    async def writer(n: int) -> None:
        for i in range(50):
            await db.put(b"%d-%d" % (n, i % 10), b"v", ttl=1 + (i % 7))
            if i % 10 == 0:
                clock.advance(1)

    sweeps = [env.sweep_expired() for _ in range(5)]
    await asyncio.gather(*(writer(n) for n in range(8)), *sweeps)
    live = await db.count()
    assert live == len(await collect(db.keys()))
    await env.sweep_expired()  # then nothing is due: the writer leaves both counts alone
    assert await stored_entries(db) == live
    assert await index_entries(env) == live
    clock.advance(100)
    await env.sweep_expired()
    assert await stored_entries(db) == 0
    assert await index_entries(env) == 0


async def test_drop_takes_the_index_entries_with_it(env: aiolmdb.Environment, clock: Clock) -> None:
    db = await env.open_db("cache", ttl=10)
    keep = await env.open_db("keep", ttl=10)
    await db.put_multi([(b"a", b"1"), (b"b", b"2")])
    await keep.put(b"k", b"v")
    await db.drop(delete=False)
    assert await index_entries(env) == 1
    await db.put(b"c", b"3")
    await db.drop()
    assert await index_entries(env) == 1
    plain = await env.open_db("cache")  # made again: no longer expiring
    assert plain.ttl is None
    await plain.put(b"x", b"y")
    clock.advance(20)
    assert await swept(env) == 1
    assert await plain.get(b"x") == b"y"


# ---------------------------------------------------------------------------- persistence
async def test_expiry_survives_reopening(path: Path, clock: Clock) -> None:
    async with aiolmdb.open(path, map_size=MAP_SIZE) as env:
        db = await env.open_db("cache", ttl=10)
        await db.put(b"a", b"1")
        await db.put(b"b", b"2", ttl=100)
    async with aiolmdb.open(path, map_size=MAP_SIZE) as env:
        with pytest.raises(ValueError, match="expires"):
            await env.open_db("cache")
        info = await env.database_info("cache")
        assert info is not None
        assert info.ttl == 10.0
        db = await env.open_db("cache", ttl=30)  # a new default from now on
        assert (await env.database_info("cache")).ttl == 30.0  # type: ignore[union-attr]
        clock.advance(10)
        assert await collect(db.keys()) == [b"b"]
        # The earliest expiry was read at the open: the writer sweeps after the next batch.
        other = await env.open_db("other")
        await other.put(b"x", b"1")
        await other.put(b"y", b"1")
        assert env.metrics().expired == 1
        await db.put(b"c", b"3")
        clock.advance(29)
        assert await db.get(b"c") == b"3"
        clock.advance(1)
        assert await db.get(b"c") is None


async def test_expiry_survives_a_compacting_copy(path: Path, tmp_path: Path, clock: Clock) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    async with aiolmdb.open(path, map_size=MAP_SIZE) as env:
        db = await env.open_db("cache", ttl=10)
        await db.put(b"a", b"1")
        await db.put(b"b", b"2", ttl=100)
        await env.copy(copy, compact=True)
    async with aiolmdb.open(copy, map_size=MAP_SIZE) as env:
        db = await env.open_db("cache", ttl=10)
        clock.advance(50)
        assert await collect(db.keys()) == [b"b"]
        assert await swept(env) == 1
        clock.advance(50)
        assert await swept(env) == 2
        assert await index_entries(env) == 0


def test_dump_and_load_keep_expiry(
    tmp_path: Path,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, target, dump = tmp_path / "source", tmp_path / "target", tmp_path / "dump.txt"

    async def fill() -> None:
        async with aiolmdb.open(source, map_size=MAP_SIZE) as env:
            db = await env.open_db("cache", ttl=10)
            await db.put(b"a", b"1")
            await db.put(b"b", b"2", ttl=100)
            await db.put(b"c", b"3", ttl=None)
            await db.put(b"gone", b"4", ttl=1)

    asyncio.run(fill())
    clock.advance(1)  # "gone" has expired: the dump leaves it out
    assert main(["dump", "--all", str(source), "--output", str(dump)]) == 0
    text = dump.read_text()
    assert "aiolmdb_ttl=10.0" in text
    assert "database=__aiolmdb_expiry__" not in text
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(dump.read_bytes())))
    assert main(["load", str(target)]) == 0
    capsys.readouterr()

    async def check() -> tuple[list[bytes], list[bytes], list[bytes], int]:
        async with aiolmdb.open(target, map_size=MAP_SIZE) as env:
            info = await env.database_info("cache")
            assert info is not None
            assert info.ttl == 10.0
            db = await env.open_db("cache", ttl=10)
            now = await collect(db.keys())
            clock.advance(9)  # START + 10 s: a's expiry, kept by the dump
            soon = await collect(db.keys())
            clock.advance(90)
            late = await collect(db.keys())
            return now, soon, late, await swept(env)

    now, soon, late, total = asyncio.run(check())
    assert now == [b"a", b"b", b"c"]
    assert soon == [b"b", b"c"]
    assert late == [b"c"]
    assert total == 2
    assert main(["scan", str(target), "--db", "cache"]) == 0
    assert capsys.readouterr().out == "c\t3\n"
    assert main(["get", str(target), "c", "--db", "cache"]) == 0
    assert capsys.readouterr().out == "3\n"
    assert main(["get", str(target), "b", "--db", "cache"]) == 1  # expired: not found
    assert "key not found: b" in capsys.readouterr().err


# ---------------------------------------------------------------------------- more paths
async def test_ttl_combines_with_conditions(env: aiolmdb.Environment, clock: Clock) -> None:
    db = await env.open_db("cache", ttl=10)
    await db.put(b"k", b"1")
    assert not await db.put(b"k", b"2", ttl=100, overwrite=False)
    assert await db.put(b"k", b"2", ttl=100, if_value=b"1")
    assert not await db.put(b"k", b"3", ttl=1, if_value=b"1")
    assert await db.put(b"new", b"n", ttl=100, overwrite=False, raise_on_conflict=True)
    clock.advance(50)
    assert await db.get_multi([b"k", b"new"]) == {b"k": b"2", b"new": b"n"}
    assert await db.delete(b"k", if_value=b"2")
    assert not await db.delete(b"new", b"other")
    assert await db.delete(b"new", b"n")
    assert await index_entries(env) == 0


async def test_transaction_views_stream_and_count_expiring_entries(
    env: aiolmdb.Environment, clock: Clock
) -> None:
    db = await env.open_db("cache", ttl=10)
    await db.put(b"a", b"alpha")
    await db.put(b"b", b"beta", ttl=None)
    clock.advance(10)
    async with env.begin() as snap:
        view = snap[db]
        with pytest.raises(KeyError):
            await collect(view.get_chunks(b"a"))
        assert b"".join(await collect(view.get_chunks(b"b", 2))) == b"beta"
        assert await view.count() == 1
        assert await view.first() == (b"b", b"beta")

    def read(txn: aiolmdb.Transaction[bytes, bytes]) -> tuple[list[bytes], int]:
        return list(txn.keys()), txn.count()

    assert await db.run(read) == ([b"b"], 1)


async def test_a_read_only_environment_hides_expired_entries(path: Path, clock: Clock) -> None:
    async with aiolmdb.open(path, map_size=MAP_SIZE) as env:
        db = await env.open_db("cache", ttl=10)
        await db.put(b"a", b"1")
        await db.put(b"b", b"2", ttl=100)
    clock.advance(10)
    async with aiolmdb.open(path, map_size=MAP_SIZE, readonly=True) as env:
        with pytest.raises(ValueError, match="open it with ttl=seconds"):
            env.open_db("cache")
        db = env.open_db("cache", ttl=10)
        assert db.ttl == 10.0
        assert await collect(db.items()) == [(b"b", b"2")]
        assert await db.get(b"a") is None
        assert await env.sweep_expired() == 0  # a read-only environment never sweeps


@threaded_only
async def test_a_failing_sweep_is_logged_and_writes_go_on(
    open_env: OpenEnv,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = open_env()
    db = await env.open_db("cache", ttl=10)
    await db.put(b"a", b"1")
    failures: list[int] = []

    def broken(self: _expiry.Sweeper, txn: Any, budget: int) -> tuple[int, bool, int]:
        failures.append(budget)
        raise RuntimeError("disk on fire")

    with monkeypatch.context() as patch:
        patch.setattr(_expiry.Sweeper, "_sweep", broken)
        clock.advance(10)
        await db.put(b"b", b"2")  # the writer tries to sweep after this batch
        await db.put(b"c", b"3")
        assert failures
        with pytest.raises(RuntimeError, match="disk on fire"):
            await env.sweep_expired()  # a sweep asked for reports its failure
    assert "sweeping expired entries failed" in caplog.text
    assert await collect(db.keys()) == [b"b", b"c"]
    clock.advance(1)  # past the retry delay the writer tries again
    await db.put(b"d", b"4")
    assert await swept(env) == 1


def test_loading_an_expiring_dump_checks_its_target(
    tmp_path: Path,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = tmp_path / "target"

    async def make_plain() -> None:
        async with aiolmdb.open(target, map_size=MAP_SIZE) as env:
            await (await env.open_db("cache")).put(b"k", b"v")

    asyncio.run(make_plain())
    header = "VERSION=3\nformat=bytevalue\ndatabase=cache\ntype=btree\n"

    def load(text: str, *argv: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
        code = main(["load", str(target), *argv])
        return code, capsys.readouterr().err

    code, err = load(header + "aiolmdb_ttl=10.0\nHEADER=END\nDATA=END\n")
    assert code == 2
    assert "the dump's database is expiring" in err
    code, err = load(header + "aiolmdb_ttl=soon\nHEADER=END\nDATA=END\n", "--db", "other")
    assert code == 2
    assert "aiolmdb_ttl='soon' is not a number of seconds" in err
    code, err = load(header + "aiolmdb_ttl=10\nHEADER=END\n 6b\n 00\nDATA=END\n", "--db", "c2")
    assert code == 2
    assert "not an expiring value" in err


# ---------------------------------------------------------------------------- the model
_KEYS = st.sampled_from([b"a", b"b", b"c", b"d"])
_TTLS = st.one_of(st.none(), st.just(-1), st.integers(min_value=1, max_value=30))
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _KEYS, _TTLS),
        st.tuples(st.just("insert"), _KEYS, _TTLS),
        st.tuples(st.just("delete"), _KEYS),
        st.tuples(st.just("pop"), _KEYS),
        st.tuples(st.just("update"), _KEYS),
        st.tuples(st.just("advance"), st.integers(min_value=0, max_value=20)),
        st.tuples(st.just("sweep")),
        st.tuples(st.just("drop")),
    ),
    max_size=30,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_expiry_model(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    ops: list[tuple[Any, ...]],
) -> None:
    """A model of values and expiries (a fake clock in seconds): every read agrees with it,
    and the index holds exactly one pair per stored entry that expires."""
    clock = Clock(monkeypatch)

    async def run() -> None:
        path = tmp_path_factory.mktemp("model")
        async with aiolmdb.open(path, map_size=MAP_SIZE, sync=False) as env:
            db = await env.open_db("m", ttl=10, value_coder=aiolmdb.JSONCoder())
            now = 0
            model: dict[bytes, tuple[int, float]] = {}  # key -> (value, expiry or inf)

            def live() -> dict[bytes, int]:
                return {k: v for k, (v, at) in model.items() if at > now}

            def expiry(ttl: int | None) -> float:
                if ttl is None:
                    return math.inf
                return now + (10 if ttl == -1 else ttl)

            for counter, op in enumerate(ops):
                kind = op[0]
                if kind in ("put", "insert"):
                    key, ttl = op[1], op[2]
                    options: dict[str, Any] = {} if ttl == -1 else {"ttl": ttl}
                    if kind == "insert":
                        options["overwrite"] = False
                    stored = await db.put(key, counter, **options)
                    assert stored == (kind == "put" or key not in live())
                    if stored:
                        model[key] = (counter, expiry(ttl))
                elif kind == "delete":
                    assert await db.delete(op[1]) == (op[1] in live())
                    model.pop(op[1], None)
                elif kind == "pop":
                    assert await db.pop(op[1]) == live().get(op[1])
                    model.pop(op[1], None)
                elif kind == "update":
                    key = op[1]
                    old = live().get(key)
                    assert await db.update(key, lambda v: (v or 0) + 1) == (old or 0) + 1
                    at = model[key][1] if old is not None else expiry(-1)
                    model[key] = ((old or 0) + 1, at)
                elif kind == "advance":
                    now += op[1]
                    clock.advance(op[1])
                elif kind == "sweep":
                    await env.sweep_expired()
                    model = {k: m for k, m in model.items() if m[1] > now}
                else:
                    await db.drop(delete=False)
                    model.clear()
                assert dict(await collect(db.items())) == live()
            assert await db.count() == len(live())
            # After a sweep: the live entries stored, one index pair each that expires.
            await env.sweep_expired()
            assert await stored_entries(db) == len(live())
            expiring = sum(1 for key in live() if model[key][1] != math.inf)
            assert await index_entries(env) == expiring
            clock.advance(1000)
            await env.sweep_expired()
            forever = sum(1 for _, at in model.values() if at == math.inf)
            assert await stored_entries(db) == forever
            assert await index_entries(env) == 0

    asyncio.run(run())


def test_load_restores_expiries_over_existing_entries(
    tmp_path: Path,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = tmp_path / "target"
    now_ms = START * 1000

    def block(*pairs: tuple[bytes, int, bytes]) -> str:
        lines = "".join(
            f" {key.hex()}\n {(at.to_bytes(8, 'big') + value).hex()}\n" for key, at, value in pairs
        )
        return (
            "VERSION=3\nformat=bytevalue\ndatabase=cache\ntype=btree\naiolmdb_ttl=10\n"
            f"HEADER=END\n{lines}DATA=END\n"
        )

    def load(text: str) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
        assert main(["load", str(target)]) == 0

    load(block((b"a", now_ms + 5000, b"1"), (b"b", now_ms + 5000, b"2"), (b"old", now_ms, b"x")))
    load(block((b"a", now_ms + 50_000, b"10"), (b"c", 0, b"3")))  # a again, later; c never
    capsys.readouterr()

    async def check() -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]], int]:
        async with aiolmdb.open(target, map_size=MAP_SIZE) as env:
            db = await env.open_db("cache", ttl=10)
            first = await collect(db.items())
            assert await index_entries(env) == 2  # a (its latest expiry) and b
            clock.advance(5)
            return first, await collect(db.items()), await swept(env)

    first, later, total = asyncio.run(check())
    assert first == [(b"a", b"10"), (b"b", b"2"), (b"c", b"3")]  # "old" had expired
    assert later == [(b"a", b"10"), (b"c", b"3")]
    assert total == 1


def test_a_damaged_value_is_reported_not_hidden(path: Path, clock: Clock) -> None:
    async def create() -> None:
        async with aiolmdb.open(path, map_size=MAP_SIZE) as env:
            await (await env.open_db("cache", ttl=10)).put(b"ok", b"v")

    asyncio.run(create())
    raw = lmdb.open(str(path), max_dbs=8, map_size=MAP_SIZE)
    with raw.begin(write=True) as txn:
        txn.put(b"bad", b"short", db=raw.open_db(b"cache", txn=txn))
    raw.close()

    async def read() -> None:
        async with aiolmdb.open(path, map_size=MAP_SIZE) as env:
            db = await env.open_db("cache", ttl=10)
            with pytest.raises(ValueError, match=r"key b'bad'.*not an expiring value"):
                await db.get(b"bad")
            assert await db.get(b"ok") == b"v"

    asyncio.run(read())
