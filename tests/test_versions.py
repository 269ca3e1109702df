"""Versioned databases and conditional writes: versions, if_version/if_value, ConflictError,
the stored layout and marker, and versions across reopen, compacting copies and restores."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import lmdb
import pytest
from conftest import MAP_SIZE, OpenEnv, collect
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiolmdb
from aiolmdb import ConflictError, Entry, JSONCoder
from aiolmdb._store import versions as _versions

VDB = aiolmdb.AsyncDatabase[bytes, bytes]


async def vdb(env: aiolmdb.Environment, name: str = "v") -> VDB:
    return await env.open_db(name, versioned=True)


async def version(db: aiolmdb.AsyncDatabase[Any, Any], key: Any) -> int:
    entry = await db.get_entry(key)
    assert entry is not None
    return entry.version


# ----------------------------------------------------------------------------- basics
async def test_put_and_get_entry(env: aiolmdb.Environment) -> None:
    db = await vdb(env)
    assert db.versioned
    assert await db.get_entry(b"k") is None
    assert await db.put(b"k", b"one")
    first = await db.get_entry(b"k")
    assert first is not None
    assert first.value == b"one"
    assert first.version > 0
    assert await db.get(b"k") == b"one"  # plain reads see the value without its version
    assert await db.put(b"k", b"two")
    second = await db.get_entry(b"k")
    assert second is not None
    assert second == Entry(b"two", second.version)
    assert second.version > first.version
    assert not (await env.open_db("plain")).versioned


async def test_if_version(env: aiolmdb.Environment) -> None:
    db = await vdb(env)
    await db.put(b"k", b"a")
    seen = await version(db, b"k")
    assert await db.put(b"k", b"b", if_version=seen)
    assert not await db.put(b"k", b"c", if_version=seen)  # stale
    assert await db.get(b"k") == b"b"
    current = await version(db, b"k")
    with pytest.raises(ConflictError) as info:
        await db.put(b"k", b"c", if_version=seen, raise_on_conflict=True)
    assert (info.value.key, info.value.expected, info.value.actual) == (b"k", seen, current)
    assert await db.get(b"k") == b"b"
    # Absent key: a condition on a version cannot hold.
    assert not await db.put(b"new", b"x", if_version=seen)
    with pytest.raises(ConflictError) as absent:
        await db.put(b"new", b"x", if_version=seen, raise_on_conflict=True)
    assert absent.value.actual is None
    assert await db.get(b"new") is None
    # None is "no condition".
    assert await db.put(b"k", b"d", if_version=None)
    assert await db.get(b"k") == b"d"


async def test_conditional_delete(env: aiolmdb.Environment) -> None:
    db = await vdb(env)
    await db.put(b"k", b"a")
    stale = await version(db, b"k")
    await db.put(b"k", b"b")
    assert not await db.delete(b"k", if_version=stale)
    with pytest.raises(ConflictError):
        await db.delete(b"k", if_version=stale, raise_on_conflict=True)
    assert not await db.delete(b"k", b"a", if_version=await version(db, b"k"))  # wrong value
    assert await db.delete(b"k", if_version=await version(db, b"k"))
    assert await db.get_entry(b"k") is None
    assert not await db.delete(b"k", if_version=stale)
    assert not await db.delete(b"k", raise_on_conflict=True)  # no condition: just absent
    # delete with a value compares the value, not the version.
    await db.put(b"k", b"x")
    assert not await db.delete(b"k", b"y")
    assert await db.delete(b"k", b"x")


async def test_overwrite_false_and_raise(env: aiolmdb.Environment) -> None:
    db = await vdb(env)
    assert await db.put(b"k", b"a", overwrite=False)
    v = await version(db, b"k")
    assert not await db.put(b"k", b"b", overwrite=False)
    assert await version(db, b"k") == v  # a refused insert draws no version
    with pytest.raises(ConflictError, match="exists"):
        await db.put(b"k", b"b", overwrite=False, raise_on_conflict=True)
    with pytest.raises(ValueError, match="overwrite=False"):
        await db.put(b"k", b"b", overwrite=False, if_version=v)


async def test_update_bumps_version(env: aiolmdb.Environment) -> None:
    db = await env.open_db("n", versioned=True, value_coder=JSONCoder())
    assert await db.update(b"c", lambda old: (old or 0) + 1) == 1
    v1 = await version(db, b"c")
    assert await db.update(b"c", lambda old: (old or 0) + 1) == 2
    assert await db.get_entry(b"c") == Entry(2, (await version(db, b"c")))
    assert await version(db, b"c") > v1


async def test_every_write_form_stamps_and_strips(env: aiolmdb.Environment) -> None:
    db = await env.open_db("n", versioned=True, value_coder=JSONCoder())
    await db.put_multi({b"a": 1, b"b": 2, b"c": 3})
    entries = await db.get_multi_entries([b"a", b"b", b"c", b"zz"])
    assert entries[b"zz"] is None
    stamped = {k: e for k, e in entries.items() if e is not None}
    assert {k: e.value for k, e in stamped.items()} == {b"a": 1, b"b": 2, b"c": 3}
    assert len({e.version for e in stamped.values()}) == 1  # one atomic write, one version
    assert await db.get_multi([b"a", b"c"]) == {b"a": 1, b"c": 3}
    assert await db.replace(b"a", 10) == 1
    assert await version(db, b"a") > stamped[b"a"].version
    assert await db.pop(b"b") == 2
    assert await db.first() == (b"a", 10)
    assert await db.last() == (b"c", 3)
    assert await db.get_all(b"c") == [3]
    assert await collect(db.items()) == [(b"a", 10), (b"c", 3)]
    assert await collect(db.values(reverse=True)) == [3, 10]
    assert await collect(db.keys()) == [b"a", b"c"]
    assert await collect(db.items().batches(1)) == [[(b"a", 10)], [(b"c", 3)]]
    found = await collect(db.entries())
    assert [(k, e.value) for k, e in found] == [(b"a", 10), (b"c", 3)]
    assert found[0][1].version == await version(db, b"a")
    assert await collect(db.entries(reverse=True, limit=1)) == [found[1]]
    assert await collect(db.entries(offset=1)) == [found[1]]
    assert await collect(db.entries().batches(5)) == [found]
    assert await collect(db.values().batches(5)) == [[10, 3]]
    assert await db.count() == 2


async def test_if_value_on_plain_database(env: aiolmdb.Environment) -> None:
    db = await env.open_db("p", value_coder=JSONCoder())
    await db.put(b"k", {"n": 1})
    assert await db.put(b"k", {"n": 2}, if_value={"n": 1})
    assert not await db.put(b"k", {"n": 3}, if_value={"n": 1})
    assert await db.get(b"k") == {"n": 2}
    with pytest.raises(ConflictError, match="differs") as info:
        await db.put(b"k", {"n": 3}, if_value={"n": 1}, raise_on_conflict=True)
    assert info.value.expected is None
    assert info.value.actual is None
    assert not await db.put(b"absent", 1, if_value=0)
    raw = env.get_default_database()
    await raw.put(b"x", b"")
    assert await raw.put(b"x", b"y", if_value=b"")  # an empty value compares too
    assert await raw.get(b"x") == b"y"


async def test_if_value_on_versioned_database(env: aiolmdb.Environment) -> None:
    db = await vdb(env)
    await db.put(b"k", b"a")
    v = await version(db, b"k")
    assert not await db.put(b"k", b"b", if_value=b"zzz", if_version=v)
    assert await db.put(b"k", b"b", if_value=b"a", if_version=v)
    assert await db.get(b"k") == b"b"


async def test_dupsort_conditions(env: aiolmdb.Environment) -> None:
    db = await env.open_db("d", dupsort=True)
    await db.put(b"k", b"a")
    with pytest.raises(ValueError, match="dupsort"):
        await db.put(b"k", b"b", if_value=b"a")
    with pytest.raises(ConflictError, match="pair exists"):
        await db.put(b"k", b"a", raise_on_conflict=True)
    assert await db.put(b"k", b"b", raise_on_conflict=True)
    with pytest.raises(ConflictError, match="pair is absent"):
        await db.delete(b"k", b"zz", raise_on_conflict=True)
    assert not await db.delete(b"nokey", raise_on_conflict=True)
    assert await db.delete(b"k", b"a", raise_on_conflict=True)
    assert await db.get_all(b"k") == [b"b"]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("bad", "error"),
    [("3", TypeError), (3.0, TypeError), (True, TypeError), (0, ValueError), (-1, ValueError)],
)
async def test_bad_if_version(env: aiolmdb.Environment, bad: Any, error: type[Exception]) -> None:
    db = await vdb(env)
    await db.put(b"k", b"a")
    with pytest.raises(error, match="if_version"):
        await db.put(b"k", b"b", if_version=bad)
    with pytest.raises(error, match="if_version"):
        await db.delete(b"k", if_version=bad)
    assert await db.get(b"k") == b"a"
    assert await db.put(b"k", b"c")  # the failure was its caller's alone


async def test_versions_on_a_plain_database(env: aiolmdb.Environment) -> None:
    db = env.get_default_database()
    await db.put(b"k", b"a")
    with pytest.raises(ValueError, match="versioned database"):
        await db.put(b"k", b"b", if_version=1)
    with pytest.raises(ValueError, match="versioned database"):
        await db.delete(b"k", if_version=1)
    with pytest.raises(ValueError, match="get_entry needs a versioned"):
        await db.get_entry(b"k")
    with pytest.raises(ValueError, match="get_multi_entries needs"):
        await db.get_multi_entries([b"k"])
    with pytest.raises(ValueError, match="entries"):
        await collect(db.entries())
    with pytest.raises(ValueError, match="restore_entries needs"):
        await db.restore_entries([(b"k", Entry(b"v", 5))])
    assert await db.get(b"k") == b"a"


async def test_open_flags(env: aiolmdb.Environment) -> None:
    with pytest.raises(ValueError, match="dupsort"):
        env.open_db("x", versioned=True, dupsort=True)
    with pytest.raises(TypeError, match="versioned"):
        env.open_db("x", versioned=1)
    with pytest.raises(ValueError, match="metadata"):
        env.open_db("__aiolmdb__")
    with pytest.raises(ValueError, match="versioned"):
        env.open_db(None, versioned=True)
    await vdb(env, "v")
    with pytest.raises(ValueError, match="is versioned"):
        env.open_db("v")  # already open in this process
    plain = await env.open_db("p")
    await plain.put(b"k", b"v")
    with pytest.raises(ValueError, match="not versioned"):
        env.open_db("p", versioned=True)


async def test_layout_is_persisted(open_env: OpenEnv, tmp_path: Path) -> None:
    env = open_env()
    db = await vdb(env)
    await db.put(b"k", b"value")
    stored = await version(db, b"k")
    plain = await env.open_db("p")
    await plain.put(b"k", b"v")
    await plain.put(b"x", b"short")  # bad data for the misuse below
    path = env.path
    await env.close()
    # The documented layout: 8-byte big-endian version, then the coder's bytes.
    raw = lmdb.open(path, max_dbs=8, readonly=True)
    with raw.begin() as txn:
        value = txn.get(b"k", db=raw.open_db(b"v", txn=txn, create=False))
    raw.close()
    assert value == struct.pack(">Q", stored) + b"value"
    async with aiolmdb.open(path, map_size=MAP_SIZE) as again:
        with pytest.raises(ValueError, match="is versioned"):
            await again.open_db("v")
        with pytest.raises(ValueError, match="not versioned"):
            await again.open_db("p", versioned=True)
        reopened = await vdb(again)
        assert await reopened.get_entry(b"k") == Entry(b"value", stored)
        infos = {i.name: i.flags for i in await again.databases()}
        assert "versioned" in infos["v"]
        assert "versioned" not in infos["p"]
        found = await again.database_info("v")
        assert found is not None
        assert "versioned" in found.flags
    async with aiolmdb.open(path, map_size=MAP_SIZE, readonly=True) as ro:
        with pytest.raises(ValueError, match="is versioned"):
            ro.open_db("v")
        with pytest.raises(ValueError, match="not versioned"):
            ro.open_db("p", versioned=True)
        assert await ro.open_db("v", versioned=True).get_entry(b"k") == Entry(b"value", stored)
        assert await ro.open_db("p").get(b"k") == b"v"


async def test_short_value_is_not_misread(env: aiolmdb.Environment) -> None:
    db = await vdb(env)

    def plant(txn: aiolmdb.Transaction[bytes, bytes]) -> None:
        txn.raw.put(b"bad", b"abc", db=txn[db]._ctx.dbi)

    await env.run(plant, write=True)
    with pytest.raises(ValueError, match="not a versioned value"):
        await db.get(b"bad")
    with pytest.raises(ValueError, match="b'bad'"):
        await db.get_entry(b"bad")
    with pytest.raises(ValueError, match="b'bad'"):
        await collect(db.entries())
    with pytest.raises(ValueError, match="not a versioned value"):
        await db.put(b"bad", b"x", if_version=5)


async def test_drop_forgets_the_layout(env: aiolmdb.Environment) -> None:
    db = await vdb(env)
    await db.put(b"k", b"v")
    await db.drop(delete=False)  # emptied: still versioned
    with pytest.raises(ValueError, match="is versioned"):
        env.open_db("v")
    await db.drop()
    plain = await env.open_db("v")
    assert not plain.versioned
    await plain.put(b"k", b"v")
    assert await plain.get(b"k") == b"v"


async def test_one_version_per_write_transaction(env: aiolmdb.Environment) -> None:
    """Writes committed together share a version; the next transaction draws a higher one."""
    db = await vdb(env)

    def two(txn: aiolmdb.Transaction[bytes, bytes]) -> tuple[Any, Any]:
        txn[db].put(b"a", b"1")
        txn[db].put(b"b", b"2")
        return txn[db].get_entry(b"a"), txn[db].get_entry(b"b")

    a, b = await env.run(two, write=True)
    assert a.version == b.version
    # Submitted together: one batch, one commit, one version.
    await asyncio.gather(db.put(b"c", b"3"), db.put(b"d", b"4"))
    c, d = await version(db, b"c"), await version(db, b"d")
    assert c == d
    assert c > a.version


# ----------------------------------------------------------------------------- transactions
async def test_conditions_in_run(env: aiolmdb.Environment) -> None:
    db = await vdb(env)
    await db.put(b"k", b"a")
    seen = await version(db, b"k")

    def work(txn: aiolmdb.Transaction[bytes, bytes]) -> tuple[Any, ...]:
        view = txn[db]
        entry = view.get_entry(b"k")
        assert entry is not None
        stale = view.put(b"k", b"x", if_version=entry.version - 1)
        fresh = view.put(b"k", b"b", if_version=entry.version)
        after = view.get_entry(b"k")
        assert after is not None
        gone = view.delete(b"k", if_version=after.version)
        view.put(b"k", b"c")
        return stale, fresh, after.version > entry.version, gone, view.get_multi_entries([b"k"])

    stale, fresh, grew, gone, multi = await env.run(work, write=True)
    assert (stale, fresh, grew, gone) == (False, True, True, True)
    assert multi[b"k"] is not None
    assert multi[b"k"].value == b"c"
    assert await version(db, b"k") > seen

    def conflict(txn: aiolmdb.Transaction[bytes, bytes]) -> None:
        txn[db].put(b"k", b"lost", if_version=seen, raise_on_conflict=True)

    with pytest.raises(ConflictError):
        await env.run(conflict, write=True)
    assert await db.get(b"k") == b"c"
    reads = await env.run(lambda txn: (txn[db].get_entry(b"k"), list(txn[db].entries())))
    assert reads[0] is not None
    assert reads[1] == [(b"k", reads[0])]

    def read_only(txn: aiolmdb.Transaction[bytes, bytes]) -> None:
        txn[db].put(b"k", b"x", if_version=1)

    with pytest.raises(aiolmdb.ReadOnlyError):
        await env.run(read_only)


async def test_conditions_in_interactive_transactions(env: aiolmdb.Environment) -> None:
    db = await vdb(env)
    await db.put(b"k", b"a")
    async with env.begin(write=True) as txn:
        view = txn[db]
        assert view.versioned
        entry = await view.get_entry(b"k")
        assert entry is not None
        assert not await view.put(b"k", b"x", if_version=entry.version + 1)
        assert await view.put(b"k", b"b", if_version=entry.version)
        with pytest.raises(ConflictError):
            await view.delete(b"k", if_version=entry.version, raise_on_conflict=True)
        assert [e.value for _, e in await collect(view.entries())] == [b"b"]
    async with env.begin() as snap:
        found = await snap[db].get_entry(b"k")
        assert found is not None
        assert found.value == b"b"


async def test_conflict_fails_only_its_caller(env: aiolmdb.Environment) -> None:
    db = await vdb(env)
    await db.put(b"k", b"a")
    stale = await version(db, b"k")
    await db.put(b"k", b"b")
    # Submitted in one loop iteration: one batch, one commit.
    results = await asyncio.gather(
        db.put(b"x", b"1"),
        db.put(b"k", b"lost", if_version=stale, raise_on_conflict=True),
        db.put(b"y", b"2", if_version=None),
        db.delete(b"k", if_version=stale),
        return_exceptions=True,
    )
    assert results[0] is True
    assert results[2] is True
    assert results[3] is False
    assert isinstance(results[1], ConflictError)
    assert await db.get_multi([b"x", b"y", b"k"]) == {b"x": b"1", b"y": b"2", b"k": b"b"}


async def test_optimistic_counters(env: aiolmdb.Environment) -> None:
    """64 tasks increment 8 shared counters with get_entry + put(if_version), retrying on
    conflict: every counter ends exact."""
    db = await env.open_db("c", versioned=True, value_coder=JSONCoder())
    tasks, rounds, counters = 64, 20, 8
    conflicts = 0

    async def worker(n: int) -> None:
        nonlocal conflicts
        for i in range(rounds):
            key = b"c%d" % ((n + i) % counters)
            while True:
                entry = await db.get_entry(key)
                if entry is None:
                    if await db.put(key, 1, overwrite=False):
                        break
                elif await db.put(key, entry.value + 1, if_version=entry.version):
                    break
                conflicts += 1

    await asyncio.gather(*(worker(n) for n in range(tasks)))
    values = await db.get_multi([b"c%d" % i for i in range(counters)])
    assert values == {b"c%d" % i: tasks * rounds // counters for i in range(counters)}
    assert conflicts > 0  # the tasks really raced


# ----------------------------------------------------------------------------- monotonic
async def test_versions_grow_across_reopen_and_processes(open_env: OpenEnv) -> None:
    env = open_env()
    db = await vdb(env)
    await db.put(b"k", b"a")
    first = await version(db, b"k")
    # A far-future version restored: every later version must be above it.
    await db.restore_entries([(b"r", Entry(b"x", 2**62))])
    assert await db.get_entry(b"r") == Entry(b"x", 2**62)
    await db.put(b"k", b"b")
    assert await version(db, b"k") > 2**62 > first
    path = env.path
    await env.close()
    async with aiolmdb.open(path, map_size=MAP_SIZE) as again:
        reopened = await vdb(again)
        before = await version(reopened, b"k")
        await reopened.delete(b"k")
        await reopened.put(b"k", b"c")  # re-inserted: never an older version
        assert await version(reopened, b"k") > before


async def test_versions_grow_after_compacting_copy(open_env: OpenEnv, tmp_path: Path) -> None:
    env = open_env()
    db = await vdb(env)
    for i in range(10):
        await db.put(b"k%d" % i, b"v")
    await db.restore_entries([(b"top", Entry(b"x", 2**62))])
    highest = max(e.version for _, e in await collect(db.entries()))
    target = tmp_path / "compact"
    target.mkdir()
    await env.copy(target, compact=True)
    async with aiolmdb.open(target, map_size=MAP_SIZE) as copy:
        assert copy.info()["last_txnid"] == 1  # LMDB's transaction ids restarted
        cdb = await vdb(copy)
        assert await cdb.get_entry(b"top") == Entry(b"x", 2**62)
        await cdb.put(b"k0", b"new")
        await cdb.put(b"fresh", b"new")
        assert await version(cdb, b"k0") > highest
        assert await version(cdb, b"fresh") > highest


class Clock:
    """The versions' clock, set by hand (in microseconds): one machine's clock against
    another's, without sleeping."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, micros: int) -> None:
        self.micros = micros
        monkeypatch.setattr(_versions, "clock", self)

    def __call__(self) -> int:
        return self.micros * 1000


async def counter(env: aiolmdb.Environment) -> int:
    lmdb_env = env.lmdb_environment
    return await env.run(lambda txn: _versions.stored_counter(lmdb_env, txn.raw))


async def test_versions_follow_the_injected_clock(
    env: aiolmdb.Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, 5_000)
    db = await vdb(env)
    await db.put(b"a", b"1")
    assert await version(db, b"a") == 5_000
    clock.micros = 1_000  # the clock went back: the counter still grows
    await db.put(b"a", b"2")
    assert await version(db, b"a") == 5_001
    assert await counter(env) == 5_001


@pytest.mark.parametrize("compact", [False, True], ids=["plain", "compact"])
async def test_copy_keeps_the_counter_of_a_deleted_entry(
    open_env: OpenEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compact: bool
) -> None:
    """The metadata database is copied with the data: a copy opened where the clock is behind
    the source's never reissues the version of an entry deleted before the copy."""
    clock = Clock(monkeypatch, 1_000_000)
    env = open_env()
    db = await vdb(env)
    await db.put(b"keep", b"k")
    clock.micros = 5_000_000  # the source's clock runs ahead
    await db.put(b"doc", b"v1")
    stale = await version(db, b"doc")
    await db.delete(b"doc")
    target = tmp_path / "copy"
    target.mkdir()
    await env.copy(target, compact=compact)
    clock.micros = 2_000_000
    async with aiolmdb.open(target, map_size=MAP_SIZE) as copy:
        assert await counter(copy) == stale
        cdb = await vdb(copy)
        await cdb.put(b"doc", b"v2")
        assert await version(cdb, b"doc") == stale + 1
        assert not await cdb.put(b"doc", b"stale", if_version=stale)


async def test_restore_entries_never_lowers_the_counter(
    env: aiolmdb.Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, 5_000)
    db = await vdb(env)
    await db.put(b"a", b"1")
    await db.restore_entries([(b"old", Entry(b"o", 10))])
    assert await counter(env) == 5_000
    clock.micros = 1
    await db.put(b"b", b"2")
    assert await version(db, b"b") == 5_001
    await db.restore_entries([(b"new", Entry(b"n", 9_000)), (b"low", Entry(b"l", 7))])
    assert await counter(env) == 9_000
    await db.put(b"b", b"3")
    assert await version(db, b"b") == 9_001


async def test_write_after_restore_entries_in_one_transaction(
    env: aiolmdb.Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write after restore_entries in the same transaction draws above the restored
    versions (the transaction's version drawn before them is not reused)."""
    Clock(monkeypatch, 1_000)
    db = await vdb(env)

    def work(txn: aiolmdb.Transaction[bytes, bytes]) -> None:
        view = txn[db]
        view.put(b"a", b"1")  # draws 1_000 for this transaction
        view.restore_entries([(b"r", Entry(b"x", 8_000))])
        view.put(b"r", b"rewritten")  # must go above 8_000, not back to 1_000

    await env.run(work, write=True)
    assert await version(db, b"a") == 1_000
    assert await version(db, b"r") == 8_001
    assert await counter(env) == 8_001

    async with env.begin(write=True) as txn:
        view = txn[db]
        await view.put(b"a", b"2")
        assert await view.restore_entries([(b"s", Entry(b"y", 9_000))]) == 1
        await view.put(b"s", b"rewritten")
    assert await version(db, b"s") == 9_001


async def test_restored_backup_continues_from_its_counter_and_the_clock(
    open_env: OpenEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup (a copy made earlier) reopened after later writes elsewhere: it draws above
    its own counter and the clock, so above every later version drawn from the clock."""
    clock = Clock(monkeypatch, 1_000_000)
    env = open_env()
    db = await vdb(env)
    await db.put(b"doc", b"v1")
    backup = tmp_path / "backup"
    backup.mkdir()
    await env.copy(backup)
    clock.micros = 3_000_000
    await db.put(b"doc", b"v2")  # after the backup: lost with the original
    later = await version(db, b"doc")
    await env.close()
    clock.micros = 3_000_500  # the restoring machine's clock is right
    async with aiolmdb.open(backup, map_size=MAP_SIZE) as restored:
        rdb = await vdb(restored)
        assert await version(rdb, b"doc") == 1_000_000
        assert not await rdb.put(b"doc", b"stale", if_version=later)
        await rdb.put(b"doc", b"v3")
        assert await version(rdb, b"doc") > later


async def test_restore_entries_errors(env: aiolmdb.Environment) -> None:
    db = await vdb(env)
    with pytest.raises(TypeError, match="item 0 must be a"):
        await db.restore_entries([b"k"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"aiolmdb\.Entry"):
        await db.restore_entries([(b"k", (b"v", 3))])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="version"):
        await db.restore_entries([(b"k", Entry(b"v", 0))])
    with pytest.raises(TypeError, match="version"):
        await db.restore_entries([(b"k", Entry(b"v", "3"))])  # type: ignore[arg-type]
    assert await db.count() == 0
    assert await db.restore_entries([]) == 0


# ----------------------------------------------------------------------------- the model
_KEYS = st.sampled_from([b"a", b"b", b"c"])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _KEYS, st.binary(max_size=4)),
        st.tuples(st.just("delete"), _KEYS, st.none()),
        st.tuples(st.just("put_if"), _KEYS, st.binary(max_size=4), st.booleans()),
        st.tuples(st.just("delete_if"), _KEYS, st.booleans()),
        st.tuples(st.just("update"), _KEYS, st.binary(max_size=4)),
        st.tuples(st.just("insert"), _KEYS, st.binary(max_size=4)),
    ),
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_version_model(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[Any, ...]]
) -> None:
    """A model of the stored values and versions: conditions hold exactly when the model says
    so, every write draws a version above every version drawn before (so a deleted and
    re-inserted key never gets an older one), and reads match the model."""

    async def run() -> None:
        path = tmp_path_factory.mktemp("model")
        async with aiolmdb.open(path, map_size=MAP_SIZE, sync=False) as env:
            db = await vdb(env)
            model: dict[bytes, tuple[bytes, int]] = {}
            issued = 0  # the highest version seen so far

            def fresh(key: bytes) -> int:
                return model[key][1]

            for op in ops:
                kind, key = op[0], op[1]
                held = model.get(key)
                wrote = False
                if kind == "put":
                    assert await db.put(key, op[2])
                    wrote = True
                elif kind == "insert":
                    assert await db.put(key, op[2], overwrite=False) == (held is None)
                    wrote = held is None
                elif kind == "update":
                    tail: bytes = op[2]

                    def grow(old: bytes | None, tail: bytes = tail) -> bytes:
                        return (old or b"") + tail

                    assert await db.update(key, grow) == (held[0] if held else b"") + tail
                    wrote = True
                elif kind == "put_if":
                    guess = (held[1] if op[3] else held[1] - 1) if held else issued + 1
                    ok = await db.put(key, op[2], if_version=guess)
                    assert ok == (held is not None and op[3])
                    wrote = ok
                elif kind == "delete":
                    assert await db.delete(key) == (held is not None)
                    model.pop(key, None)
                else:
                    guess = (held[1] if op[2] else held[1] + 1) if held else issued + 1
                    ok = await db.delete(key, if_version=guess)
                    assert ok == (held is not None and op[2])
                    if ok:
                        del model[key]
                if wrote:
                    entry = await db.get_entry(key)
                    assert entry is not None
                    assert entry.version > issued
                    issued = entry.version
                    value = op[2] if kind != "update" else (held[0] if held else b"") + op[2]
                    model[key] = (value, entry.version)
                    assert fresh(key) == entry.version
            found = {k: (e.value, e.version) for k, e in await collect(db.entries())}
            assert found == model

    asyncio.run(run())


async def test_plain_databases_can_use_every_max_dbs_slot(tmp_path: Path) -> None:
    """Checking for the versioned marker must not take a database handle when the
    environment has no metadata database: LMDB refuses even a failed open when every
    max_dbs slot is taken."""
    path = tmp_path / "full"
    async with aiolmdb.open(path, map_size=MAP_SIZE, max_dbs=2) as env:
        first = await env.open_db("a")
        second = await env.open_db("b")
        await first.put(b"k", b"1")
        await second.put(b"k", b"2")
        assert [info.name for info in await env.databases()] == [None, "a", "b"]
        info = await env.database_info("b")
        assert info is not None
        assert info.entries == 1
    async with aiolmdb.open(path, map_size=MAP_SIZE, max_dbs=2, readonly=True) as env:
        assert await (await env.open_db("b")).get(b"k") == b"2"
        assert await (await env.open_db("a")).get(b"k") == b"1"


# ----------------------------------------------------------------------------- raise_on_conflict
@pytest.mark.parametrize("kind", ["plain", "versioned", "dupsort"])
async def test_raise_on_conflict_is_symmetric(env: aiolmdb.Environment, kind: str) -> None:
    """raise_on_conflict=True turns exactly the False that a failed condition returns into
    ConflictError, for put and delete alike; without a condition there is nothing to
    conflict with."""
    flags: dict[str, Any] = {kind: True} if kind != "plain" else {}
    db = await env.open_db(kind, **flags)
    # No condition: a put always stores (also a new key); a delete of an absent key is False.
    assert await db.put(b"new", b"a", raise_on_conflict=True)
    assert await db.get(b"new") == b"a"
    assert not await db.delete(b"absent", raise_on_conflict=True)
    assert await db.delete(b"new", raise_on_conflict=True)
    await db.put(b"k", b"a")
    # overwrite=False (put) and the value (delete) are conditions: False, or ConflictError.
    if kind != "dupsort":
        assert not await db.put(b"k", b"b", overwrite=False)
        with pytest.raises(ConflictError, match="exists"):
            await db.put(b"k", b"b", overwrite=False, raise_on_conflict=True)
    assert not await db.delete(b"k", b"zz")
    with pytest.raises(ConflictError, match="absent" if kind == "dupsort" else "differs"):
        await db.delete(b"k", b"zz", raise_on_conflict=True)
    assert await db.get(b"k") == b"a"
    if kind == "dupsort":  # a value names a pair: if_value is refused, for put and delete
        with pytest.raises(ConflictError, match="pair exists"):
            await db.put(b"k", b"a", raise_on_conflict=True)
        for call in (
            db.put(b"k", b"b", if_value=b"a"),
            db.delete(b"k", if_value=b"a"),
            db.delete(b"k", if_value=b"a", raise_on_conflict=True),
        ):
            with pytest.raises(ValueError, match="dupsort"):
                await call
        return
    # if_value: the same condition on put and delete, on a differing and on an absent entry.
    for key, reason in ((b"k", "differs"), (b"absent", "absent")):
        assert not await db.put(key, b"b", if_value=b"zz")
        assert not await db.delete(key, if_value=b"zz")
        with pytest.raises(ConflictError, match=reason) as put_info:
            await db.put(key, b"b", if_value=b"zz", raise_on_conflict=True)
        with pytest.raises(ConflictError, match=reason) as delete_info:
            await db.delete(key, if_value=b"zz", raise_on_conflict=True)
        assert put_info.value.key == delete_info.value.key == key
    assert await db.get(b"k") == b"a"
    assert await db.delete(b"k", if_value=b"a", raise_on_conflict=True)
    assert await db.get(b"k") is None
    with pytest.raises(TypeError, match="not both"):
        await db.delete(b"k", b"a", if_value=b"a")
    if kind != "versioned":
        for call in (db.put(b"k", b"b", if_version=1), db.delete(b"k", if_version=1)):
            with pytest.raises(ValueError, match="versioned"):
                await call
        return
    # if_version: the same on put and delete, on a stale and on an absent entry.
    await db.put(b"k", b"a")
    stale = await version(db, b"k")
    await db.put(b"k", b"b")
    for key in (b"k", b"absent"):
        assert not await db.put(key, b"c", if_version=stale)
        assert not await db.delete(key, if_version=stale)
        with pytest.raises(ConflictError) as put_info:
            await db.put(key, b"c", if_version=stale, raise_on_conflict=True)
        with pytest.raises(ConflictError) as delete_info:
            await db.delete(key, if_version=stale, raise_on_conflict=True)
        assert (put_info.value.expected, put_info.value.actual) == (
            delete_info.value.expected,
            delete_info.value.actual,
        )
    current = await version(db, b"k")
    assert await db.delete(b"k", if_version=current, if_value=b"b", raise_on_conflict=True)


async def test_delete_if_value_in_a_run_view(env: aiolmdb.Environment) -> None:
    db = env.get_default_database()
    await db.put(b"k", b"a")

    def fn(txn: aiolmdb.Transaction[bytes, bytes]) -> tuple[bool, bool]:
        return txn.delete(b"k", if_value=b"zz"), txn.delete(b"k", if_value=b"a")

    assert await db.run(fn, write=True) == (False, True)
