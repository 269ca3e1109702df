"""Errors the engine passes through from LMDB name the setting to change (issue 16).

LMDB's own advice ("Please use a larger Environment(map_size=) parameter") is wrong for a map
that aiolmdb grows: these tests check that every path a MapFullError can take (a group-commit
batch is covered in test_engine.py; here, a write transaction held across awaits, its
operations and its commit) names ``map_growth``/``max_map_size`` and the size reached, and
that the other errors LMDB raises for a setting name the right one.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import lmdb
import pytest
from conftest import TIMEOUT, OpenEnv

import aiolmdb

MiB = 1 << 20


async def fill(view: aiolmdb.AsyncDatabaseView[bytes, bytes], count: int) -> None:
    for i in range(count):
        await view.put(b"k%03d" % i, b"x" * 40_000)


async def overfill_in_session(env: aiolmdb.Environment, count: int = 60) -> lmdb.MapFullError:
    """Put ``count`` values of 40 kB in one write transaction; the MapFullError of the put
    that did not fit (the transaction's commit is then refused)."""
    db = env.get_default_database()
    caught: list[lmdb.MapFullError] = []

    async def session() -> None:
        async with env.begin(write=True) as txn:
            with pytest.raises(lmdb.MapFullError) as info:
                await fill(txn[db], count)
            caught.append(info.value)

    with pytest.raises(aiolmdb.TransactionError, match="MapFullError"):
        await asyncio.wait_for(session(), TIMEOUT)
    return caught[0]


@pytest.mark.parametrize("writemap", [False, True], ids=["nested", "writemap"])
async def test_session_put_map_full_without_growth(open_env: OpenEnv, writemap: bool) -> None:
    env = open_env(map_size=MiB, map_growth=False, writemap=writemap)
    err = await overfill_in_session(env)
    assert f"full at {MiB} bytes and map_growth=False" in str(err)
    assert "larger map_size=" in str(err)
    assert isinstance(err.__cause__, lmdb.MapFullError)  # LMDB's own, kept as the cause
    assert env.info()["map_size"] == MiB
    assert await env.get_default_database().count() == 0  # rolled back


@pytest.mark.parametrize("writemap", [False, True], ids=["nested", "writemap"])
async def test_session_put_map_full_at_max_map_size(open_env: OpenEnv, writemap: bool) -> None:
    env = open_env(map_size=MiB, max_map_size=MiB, writemap=writemap)
    err = await overfill_in_session(env)
    assert f"max_map_size={MiB} ({MiB} bytes)" in str(err)
    assert "map_size=)" not in str(err).split("(LMDB:")[0]  # no advice to raise map_size
    assert env.info()["map_size"] == MiB


async def test_session_put_map_full_while_map_can_grow(open_env: OpenEnv) -> None:
    """Below the cap the map grows once the transaction has ended: the error says to run it
    again rather than to raise a setting."""
    env = open_env(map_size=MiB, max_map_size=8 * MiB)
    err = await overfill_in_session(env)
    assert f"filled the map ({MiB} bytes)" in str(err)
    assert "run the transaction again" in str(err)
    # The writer grows the map after the session, before this write.
    assert await env.get_default_database().put(b"after", b"1")
    assert env.info()["map_size"] == 2 * MiB


def commit_map_full_layout(path: Path) -> None:
    """An environment of 1 MiB, partly filled: a transaction that fills what is left can fit
    its puts and fail only at its commit (which needs pages of its own, for the free list)."""
    env = lmdb.open(str(path), map_size=MiB)
    try:
        with env.begin(write=True) as txn:
            for i in range(200):
                txn.put(b"a%05d" % i, b"x" * 2000)
    finally:
        env.close()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"map_growth": False}, f"full at {MiB} bytes and map_growth=False"),
        ({"max_map_size": MiB}, f"max_map_size={MiB} ({MiB} bytes)"),
    ],
    ids=["no-growth", "max_map_size"],
)
async def test_session_commit_map_full(
    tmp_path: Path, options: dict[str, object], expected: str
) -> None:
    """A MapFullError raised by the commit itself (not by a put) names the setting too. How
    many puts make the commit, and only the commit, fail depends on LMDB's page layout: try
    counts until one does (each attempt on a fresh copy of the same layout)."""
    template = tmp_path / "template"
    commit_map_full_layout(template)
    seen: list[str] = []
    for count in range(20, 120):
        where = tmp_path / f"try{count}"
        shutil.copytree(template, where)
        env = aiolmdb.open(where, map_size=MiB, **options)  # type: ignore[arg-type]
        db = env.get_default_database()
        failed_at_commit: lmdb.MapFullError | None = None
        puts_done = False
        try:
            async with env.begin(write=True) as txn:
                for i in range(count):
                    await txn[db].put(b"b%05d" % i, b"y" * 2000)
                puts_done = True
        except lmdb.MapFullError as exc:
            if puts_done:
                failed_at_commit = exc
        finally:
            await asyncio.wait_for(env.close(), TIMEOUT)
        if failed_at_commit is not None:
            seen.append(str(failed_at_commit))
            break
    assert seen, "no transaction failed at its commit: the layout no longer provokes it"
    assert expected in seen[0]
    assert "mdb_txn_commit" in seen[0]  # LMDB's own message follows, for the record
