"""The write runner's one policy, on every kind of caller (``_txnrunner``).

Every write transaction of the writer thread goes through one runner: a map grown by another
process is adopted (``MapResizedError``), a full map is grown and the work run again
(``MapFullError``). Each caller is checked here, with the one metric that counts both:
``env.metrics().map_resizes``.

* adopted: another process grows the map; the next write transaction of each kind (a group
  commit, an exclusive session, opening a database, deleting one, trimming the change log)
  adopts its size;
* grown: a small map fills in a group commit, a session (grown after it, for the next run),
  a group of opens; for deleting a database and trimming the log, which free pages and do not
  fill a map on demand, the first commit is made to fail as a full map would (LMDB closes a
  deleted database's handle at the drop, so running the delete again must open it anew).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import lmdb
import pytest
from conftest import TIMEOUT, OpenEnv, WriterBlocker, gather_bounded

import aiolmdb
from aiolmdb._engine import txnrunner as _txnrunner

KiB = 1024
MiB = 1024 * KiB

GROW_SCRIPT = """
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=128)
env.set_mapsize(int(sys.argv[2]))
with env.begin(write=True) as txn:  # beyond the old map: its writers must adopt the size
    for i in range(40):
        txn.put(b"ext%03d" % i, b"e" * 65536)
env.close()
"""

CALLERS = ["batch", "session", "open", "delete", "trim"]


async def grow_from_another_process(path: str, size: int) -> None:
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", GROW_SCRIPT, path, str(size)],
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr.decode()


async def trim_step(env: aiolmdb.Environment) -> int:
    """Run one trim step of the change log on the writer thread (as commits queue them)."""
    engine, recorder = env._engine, env._recorder
    return int(await asyncio.wrap_future(engine.call_solo(recorder._trim_step)))


def log_size(env: aiolmdb.Environment) -> int:
    with env.lmdb_environment.begin() as txn:
        raw = env.lmdb_environment
        return int(txn.stat(raw.open_db(b"__aiolmdb_changes__", txn=txn, create=False))["entries"])


async def prepare(env: aiolmdb.Environment, caller: str) -> dict[str, Any]:
    """What each caller needs before the map changes under it."""
    db = await env.open_db("a")
    await db.put(b"k", b"v")
    made: dict[str, Any] = {"db": db}
    if caller == "delete":
        victim = await env.open_db("victim", versioned=True)
        await victim.put(b"k", b"v")
        made["victim"] = victim
    if caller == "trim":
        await db.put_multi([(b"%04d" % i, b"v") for i in range(50)])
        await db.put(b"last", b"v")  # after the trim the commit before queued
    return made


async def run_caller(env: aiolmdb.Environment, caller: str, made: dict[str, Any]) -> None:
    """One write transaction of the given kind; checks that it did its job."""
    db = made["db"]
    if caller == "batch":
        assert await db.put(b"after", b"2") is True
        assert await db.get(b"after") == b"2"
    elif caller == "session":
        async with env.begin(write=True) as txn:
            await txn[db].put(b"after", b"2")
        assert await db.get(b"after") == b"2"
    elif caller == "open":
        fresh = await env.open_db("fresh", versioned=True)
        await fresh.put(b"x", b"y")
        assert await fresh.get(b"x") == b"y"
    elif caller == "delete":
        await made["victim"].drop()
        assert "victim" not in [info.name for info in await env.databases()]
        again = await env.open_db("victim")  # anew, empty, not versioned
        assert await again.get(b"k") is None
    else:
        await trim_step(env)
        assert log_size(env) <= 10


def caller_env(open_env: OpenEnv, caller: str, map_size: int) -> aiolmdb.Environment:
    if caller == "trim":
        return open_env(map_size=map_size, changelog=True, changelog_retention=10)
    return open_env(map_size=map_size)


@pytest.mark.parametrize("caller", CALLERS)
async def test_a_map_grown_by_another_process_is_adopted(open_env: OpenEnv, caller: str) -> None:
    env = caller_env(open_env, caller, 1 * MiB)
    made = await prepare(env, caller)
    before = env.metrics().map_resizes
    await grow_from_another_process(env.path, 8 * MiB)
    await run_caller(env, caller, made)
    assert env.metrics().map_resizes == before + 1  # adopted once, by that caller
    assert await made["db"].get(b"k") == b"v"
    assert env.metrics().map_size == env.info()["map_size"] == 8 * MiB


# --------------------------------------------------------------------------------------------
# a full map
# --------------------------------------------------------------------------------------------


async def test_a_group_commit_that_fills_the_map_grows_it(open_env: OpenEnv) -> None:
    env = open_env(map_size=1 * MiB)
    db = env.get_default_database()
    async with WriterBlocker(env) as blocker:
        puts = [db.put(b"big%d" % i, b"x" * (256 * KiB)) for i in range(8)]
        blocker.release_after_pending_tasks()
    assert await gather_bounded(*puts) == [True] * 8
    m = env.metrics()
    assert m.map_resizes >= 1
    assert m.map_size == env.info()["map_size"] > 2 * MiB


async def test_a_session_that_fills_the_map_grows_it_for_the_next_run(open_env: OpenEnv) -> None:
    env = open_env(map_size=1 * MiB)
    db = env.get_default_database()
    with pytest.raises(lmdb.MapFullError, match="run the transaction again"):
        async with env.begin(write=True) as txn:
            await txn[db].put(b"big", b"x" * (1536 * KiB))
    assert env.metrics().map_resizes == 1  # grown once the transaction ended
    async with env.begin(write=True) as txn:
        await txn[db].put(b"big", b"x" * (1536 * KiB))
    assert await db.get(b"big") == b"x" * (1536 * KiB)


async def test_a_group_of_opens_that_fills_the_map_grows_it(open_env: OpenEnv) -> None:
    env = open_env(map_size=64 * KiB)
    main = env.get_default_database()
    for i in range(40):
        await main.put(b"fill%05d" % i, b"x" * KiB)
    async with WriterBlocker(env) as blocker:
        dbs = [env.open_db(f"db{i:03d}") for i in range(120)]
        blocker.release_after_pending_tasks()
    results = await gather_bounded(*dbs)
    assert not [r for r in results if isinstance(r, BaseException)]
    assert env.metrics().map_resizes >= 1


class _FullAtCommit:
    """A write transaction whose commit fails as a full map's does (LMDB's commit writes the
    free-page list: a delete's or a trim's commit can be the one that does not fit)."""

    def __init__(self, txn: Any) -> None:
        self._txn = txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)

    def commit(self) -> None:
        raise lmdb.MapFullError("mdb_txn_commit: MDB_MAP_FULL: Environment mapsize limit reached")


@pytest.mark.parametrize("caller", ["delete", "trim"])
async def test_a_delete_or_trim_whose_commit_finds_the_map_full_grows_it(
    open_env: OpenEnv, caller: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = caller_env(open_env, caller, 1 * MiB)
    made = await prepare(env, caller)
    failed = 0
    runner = env._engine._writer.runner
    real_logged = runner._begin_write
    real_plain = _txnrunner.plain_write

    def wrap(pair: tuple[Any, Any]) -> tuple[Any, Any]:
        nonlocal failed
        if failed:
            return pair
        failed += 1
        return _FullAtCommit(pair[0]), pair[1]

    monkeypatch.setattr(runner, "_begin_write", lambda: wrap(real_logged()))
    monkeypatch.setattr(_txnrunner, "plain_write", lambda lmdb_env: wrap(real_plain(lmdb_env)))
    size = env.info()["map_size"]
    before = env.metrics().map_resizes
    await run_caller(env, caller, made)
    assert failed == 1
    assert env.metrics().map_resizes == before + 1
    assert env.info()["map_size"] == 2 * size


META_SCRIPT = """
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=128)
with env.begin(write=True) as txn:
    env.open_db(b"__aiolmdb__", txn=txn, create=True)
env.close()
"""


async def test_delete_after_another_process_made_the_metadata_database(
    open_env: OpenEnv,
) -> None:
    """The delete's write transaction holds the handle lock from its beginning; beginning it
    checks that no log appeared, which opens the metadata database's handle (under that same
    lock) when another process created the database after this one opened its own."""
    env = open_env()
    plain = await env.open_db("plain")
    await plain.put(b"k", b"v")
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", META_SCRIPT, env.path],
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    await asyncio.wait_for(plain.drop(), TIMEOUT)
    assert "plain" not in [info.name for info in await env.databases()]
    assert await env.get_default_database().put(b"after", b"1") is True
