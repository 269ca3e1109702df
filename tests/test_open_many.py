"""Databases opened together share one write transaction (issue 16).

``open_db`` queues its open for the writer thread; every open queued before the writer takes
the first one joins it, in one write transaction and one commit. The writer is held
(``WriterBlocker``) while the opens are queued, so the group is exactly the opens of the test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import lmdb
import pytest
from conftest import TIMEOUT, OpenEnv, WriterBlocker, gather_bounded

import aiolmdb

KiB = 1024


def txnid(env: aiolmdb.Environment) -> int:
    return int(env.info()["last_txnid"])


async def test_opens_queued_together_share_one_commit(open_env: OpenEnv) -> None:
    env = open_env()
    before = txnid(env)
    async with WriterBlocker(env) as blocker:  # it writes nothing: no transaction id
        plain = [env.open_db(f"plain{i}") for i in range(40)]
        versioned = [env.open_db(f"ver{i}", versioned=True) for i in range(5)]
        dups = env.open_db("dups", dupsort=True)
        blocker.release_after_pending_tasks()
    opened = await gather_bounded(*(db for db in [*plain, *versioned, dups]))
    assert not [r for r in opened if isinstance(r, BaseException)]
    assert txnid(env) == before + 1  # one commit for all 46 databases
    await gather_bounded(*(db.put(b"k", b"v") for db in [*plain, *versioned]))
    await dups.put(b"k", b"1")
    await dups.put(b"k", b"2")
    assert await dups.count() == 2
    assert (await versioned[0].get_entry(b"k")) is not None
    infos = {info.name: info for info in await env.databases()}
    assert infos["ver3"].flags == {"versioned"}
    assert infos["dups"].flags == {"dupsort"}
    assert infos["plain7"].entries == 1


async def test_a_failing_open_fails_alone(path: Path) -> None:
    raw = lmdb.open(str(path), max_dbs=4)
    with raw.begin(write=True) as txn:
        txn.put(b"k", b"v", db=raw.open_db(b"plain", txn=txn))
    raw.close()
    env = aiolmdb.open(path)
    try:
        before = txnid(env)
        async with WriterBlocker(env) as blocker:
            missing = env.open_db("missing", create=False)
            relabel = env.open_db("plain", versioned=True)
            good = [env.open_db(f"new{i}") for i in range(3)]
            blocker.release_after_pending_tasks()
        with pytest.raises(lmdb.NotFoundError):
            await asyncio.wait_for(missing, TIMEOUT)
        with pytest.raises(ValueError, match="exists and is not versioned"):
            await asyncio.wait_for(relabel, TIMEOUT)
        for db in good:
            await asyncio.wait_for(db.put(b"k", b"v"), TIMEOUT)
        assert txnid(env) == before + 1 + len(good)  # the group, then the puts
        names = [info.name for info in await env.databases()]
        assert names == [None, "new0", "new1", "new2", "plain"]
        assert await env.open_db("plain").get(b"k") == b"v"  # opened again, as it is
    finally:
        await asyncio.wait_for(env.close(), TIMEOUT)


async def test_max_dbs_reached_within_a_group(open_env: OpenEnv) -> None:
    env = open_env(max_dbs=3)
    async with WriterBlocker(env) as blocker:
        dbs = [env.open_db(f"db{i}") for i in range(5)]
        blocker.release_after_pending_tasks()
    results = await gather_bounded(*dbs)
    assert [type(r) for r in results[:3]] == [aiolmdb.AsyncDatabase] * 3
    for err in results[3:]:
        assert isinstance(err, lmdb.DbsFullError)
        assert "max_dbs=" in str(err)  # LMDB names the right setting
    await gather_bounded(*(db.put(b"k", b"v") for db in dbs[:3]))
    assert len(await env.databases()) == 4


async def test_a_group_that_fills_the_map_grows_it(open_env: OpenEnv) -> None:
    env = open_env(map_size=64 * KiB)
    main = env.get_default_database()
    for i in range(40):
        await main.put(b"fill%05d" % i, b"x" * KiB)
    size = env.info()["map_size"]
    async with WriterBlocker(env) as blocker:
        dbs = [env.open_db(f"db{i:03d}") for i in range(120)]
        blocker.release_after_pending_tasks()
    results = await gather_bounded(*dbs)
    assert not [r for r in results if isinstance(r, BaseException)]
    assert env.info()["map_size"] > size
    assert len(await env.databases()) == 121


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"map_growth": False}, "map_growth=False"),
        ({"max_map_size": 64 * KiB}, f"max_map_size={64 * KiB}"),
    ],
    ids=["no-growth", "max_map_size"],
)
async def test_a_group_that_cannot_fit_fails_only_the_rest(
    open_env: OpenEnv, options: dict[str, Any], expected: str
) -> None:
    env = open_env(map_size=64 * KiB, sync=False, max_dbs=1000, **options)
    main = env.get_default_database()
    # A sixth of the map, in one commit.
    await gather_bounded(*(main.put(b"fill%05d" % i, b"x" * KiB) for i in range(10)))
    async with WriterBlocker(env) as blocker:  # more databases than the rest holds
        dbs = [env.open_db(f"database-{i:04d}") for i in range(600)]
        blocker.release_after_pending_tasks()
    results = await gather_bounded(*dbs)
    opened = [db for db, r in zip(dbs, results, strict=True) if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert failed
    assert opened  # those that fit, each in a transaction of its own
    for err in failed:
        assert isinstance(err, lmdb.MapFullError)
        assert expected in str(err)
    names = {info.name for info in await env.databases()} - {None}
    assert names == {db.name for db in opened}


async def test_opens_fail_when_their_writer_item_fails(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the writer item that would open a group fails without running (the environment
    closing under it), every open of the group gets its error instead of waiting forever."""
    env = open_env()
    failed: concurrent.futures.Future[Any] = concurrent.futures.Future()
    failed.set_exception(aiolmdb.ClosedError("closed under it"))
    monkeypatch.setattr(env._engine, "call_solo", lambda *args: failed)
    dbs = [env.open_db(f"db{i}") for i in range(3)]
    for db in dbs:
        with pytest.raises(aiolmdb.ClosedError, match="closed under it"):
            await asyncio.wait_for(db.put(b"k", b"v"), TIMEOUT)
