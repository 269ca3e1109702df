"""Issue 24, points 2 to 4: async callables refused where a plain function is run, exists(),
``async for key in db``, put/delete keywords in their signatures, env.databases() as a user
sees it."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import pydoc
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import aiolmdb
from aiolmdb import (
    AsyncDatabase,
    AsyncDatabaseView,
    Change,
    DatabaseView,
    Environment,
    JSONCoder,
    StringCoder,
    Transaction,
    UInt64Coder,
)

MAP_SIZE = 1 << 24
ROOT = str(Path(__file__).resolve().parent.parent)


# ----------------------------------------------------------------------------- async callables
async def _async_fn(txn: Any) -> int:
    return 1


class _AsyncCall:
    async def __call__(self, arg: Any) -> int:
        return 1


class _SyncCall:
    def __call__(self, arg: Any) -> Any:
        return (arg or 0) + 1 if not isinstance(arg, Transaction) else "sync"


ASYNC_CALLABLES = [
    pytest.param(_async_fn, id="coroutine-function"),
    pytest.param(functools.partial(_async_fn), id="partial"),
    pytest.param(functools.partial(functools.partial(_async_fn)), id="nested-partial"),
    pytest.param(_AsyncCall(), id="async-__call__"),
]


@pytest.mark.parametrize("fn", ASYNC_CALLABLES)
@pytest.mark.parametrize("write", [False, True])
async def test_run_refuses_async_callables_at_the_call(
    env: Environment, fn: Any, write: bool
) -> None:
    db = env.get_default_database()
    begin = "env.begin(write=True)" if write else "env.begin()"
    with pytest.raises(TypeError, match=r"^env\.run\(\) got the async callable") as caught:
        env.run(fn, write=write)  # refused at the call: nothing to await, nothing submitted
    assert f"async with {begin} as txn" in str(caught.value)
    assert "pass a plain function" in str(caught.value)
    with pytest.raises(TypeError, match=r"^db\.run\(\) got the async callable"):
        db.run(fn, write=write)
    assert env.metrics().writes == 0


async def test_run_refuses_a_function_returning_a_coroutine(env: Environment) -> None:
    """A plain callable that returns a coroutine cannot be told in advance: its result is
    refused on the worker thread, the transaction rolls back, no 'never awaited' warning."""
    db = env.get_default_database()

    async def write_later(txn: Any) -> None:
        txn.put(b"k", b"v")

    def sneaky(txn: Transaction[bytes, bytes]) -> Any:
        if txn.write:
            txn.put(b"before", b"x")
        return write_later(txn)

    with pytest.raises(TypeError, match=r"fn returned the awaitable .*pass a plain function"):
        await env.run(sneaky, write=True)
    assert await db.get(b"before") is None  # rolled back
    with pytest.raises(TypeError, match=r"async with env\.begin\(\) as txn"):
        await db.run(sneaky)


async def test_plain_callables_still_run(env: Environment) -> None:
    db = env.open_db("n", key_coder=StringCoder(), value_coder=JSONCoder())
    assert await env.run(_SyncCall()) == "sync"
    assert await db.run(functools.partial(lambda tag, txn: tag, "t")) == "t"
    assert await db.update("c", _SyncCall()) == 1
    assert await db.update("c", functools.partial(lambda step, n: n + step, 2), 0) == 3


@pytest.mark.parametrize("fn", ASYNC_CALLABLES)
async def test_update_refuses_async_callables(env: Environment, fn: Any) -> None:
    db = env.open_db("n", key_coder=StringCoder(), value_coder=JSONCoder())
    with pytest.raises(TypeError, match=r"^update\(\) got the async callable") as caught:
        await db.update("c", fn)
    assert "async with env.begin(write=True) as txn" in str(caught.value)
    async with env.begin(write=True) as txn:
        with pytest.raises(TypeError, match=r"^update\(\) got the async callable"):
            await txn[db].update("c", fn)

    def in_run(txn: Transaction[str, Any]) -> None:
        txn.update("c", fn)

    with pytest.raises(TypeError, match=r"^update\(\) got the async callable"):
        await db.run(in_run, write=True)
    assert await db.get("c") is None


async def test_update_refuses_a_function_returning_a_coroutine(env: Environment) -> None:
    db = env.open_db("n", key_coder=StringCoder(), value_coder=JSONCoder())

    async def bump(n: Any) -> int:
        return 1

    with pytest.raises(TypeError, match=r"fn returned the awaitable .* for key 'c'"):
        await db.update("c", lambda n: bump(n))
    assert await db.get("c") is None


async def test_on_commit_refuses_async_callbacks(env: Environment) -> None:
    async def hook(changes: Sequence[Change]) -> None:
        pass

    with pytest.raises(TypeError, match=r"^on_commit\(\) got the async callable") as caught:
        env.on_commit(hook)
    assert "asyncio.create_task" in str(caught.value)
    with pytest.raises(TypeError, match=r"^on_commit\(\) got the async callable"):
        env.on_commit(functools.partial(hook))
    seen: list[int] = []
    remove = env.on_commit(lambda changes: seen.append(len(changes)))
    await env.get_default_database().put(b"k", b"v")
    remove()
    assert seen == [1]


# ----------------------------------------------------------------------------- exists
async def test_exists_everywhere(env: Environment) -> None:
    db = env.open_db("e", key_coder=UInt64Coder(), value_coder=JSONCoder())
    await db.put(1, {"big": "x" * 100})
    await db.put(2, None)  # a stored None is stored: exists() says so, get() cannot
    assert await db.exists(1) is True
    assert await db.exists(2) is True
    assert await db.get(2) is None
    assert await db.exists(3) is False
    async with env.begin(write=True) as txn:
        assert await txn[db].exists(3) is False
        await txn[db].put(3, 3)
        assert await txn[db].exists(3) is True  # its own write
        assert await db.exists(3) is False  # outside the transaction: not committed yet
    assert await db.run(lambda txn: (txn.exists(3), txn.exists(4))) == (True, False)
    async with env.begin() as snap:
        assert await snap[db].exists(1) is True


async def test_exists_checks_the_key_and_never_decodes(env: Environment) -> None:
    db = env.open_db("e", key_coder=StringCoder(), value_coder=JSONCoder())
    await env.open_db("e").put(b"raw", b"not json")  # a value its coder cannot decode
    assert await db.exists("raw") is True
    with pytest.raises(ValueError, match="cannot be decoded"):
        await db.get("raw")
    with pytest.raises(aiolmdb.InvalidKeyError):
        await db.exists("")
    tags = await env.open_db("tags", dupsort=True)
    await tags.put_multi([(b"a", b"1"), (b"a", b"2")])
    assert await tags.exists(b"a") is True
    await tags.delete(b"a")
    assert await tags.exists(b"a") is False


# ----------------------------------------------------------------------------- async for
async def test_async_for_key_in_db(env: Environment) -> None:
    db = env.open_db("i", key_coder=UInt64Coder(), value_coder=JSONCoder())
    await db.put_multi({3: "c", 1: "a", 2: "b"})
    assert [key async for key in db] == [1, 2, 3]  # key order, keys only
    async with env.begin() as snap:
        assert [key async for key in snap[db]] == [1, 2, 3]
    assert await db.run(lambda txn: list(txn)) == [1, 2, 3]
    assert await db.run(lambda txn: list(txn[db])) == [1, 2, 3]
    empty = env.open_db("empty")
    assert [key async for key in empty] == []


async def test_async_for_yields_each_dupsort_key_once(env: Environment) -> None:
    tags = await env.open_db("tags", dupsort=True)
    await tags.put_multi([(b"a", b"1"), (b"a", b"2"), (b"b", b"1")])
    assert [key async for key in tags] == [b"a", b"b"]
    assert await tags.count() == 3  # every value counts in count(); iteration is per key


async def test_async_for_while_writing(env: Environment) -> None:
    """Iteration reads in short transactions: writers go on meanwhile, and keys written
    behind the iterator's position are not revisited."""
    db = env.open_db("w", key_coder=UInt64Coder(), value_coder=JSONCoder())
    await db.put_multi({i: i for i in range(0, 20000, 2)})
    seen: list[int] = []
    async for key in db:
        seen.append(key)
        if key == 100:
            await asyncio.gather(db.put(1, 1), db.put(20001, 1))
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen))
    assert 1 not in seen
    assert 20001 in seen


# ----------------------------------------------------------------------------- signatures
@pytest.mark.parametrize("cls", [AsyncDatabase, AsyncDatabaseView, DatabaseView])
def test_put_and_delete_show_their_keywords(cls: Any) -> None:
    put = inspect.signature(cls.put)
    assert not any(p.kind is p.VAR_KEYWORD for p in put.parameters.values())
    assert {
        name: (p.kind, p.default)
        for name, p in put.parameters.items()
        if name in ("overwrite", "if_version", "raise_on_conflict")
    } == {
        "overwrite": (inspect.Parameter.KEYWORD_ONLY, True),
        "if_version": (inspect.Parameter.KEYWORD_ONLY, None),
        "raise_on_conflict": (inspect.Parameter.KEYWORD_ONLY, False),
    }
    assert put.parameters["if_value"].kind is inspect.Parameter.KEYWORD_ONLY
    delete = inspect.signature(cls.delete)
    assert not any(p.kind is p.VAR_KEYWORD for p in delete.parameters.values())
    assert {"if_version", "if_value", "raise_on_conflict"} <= set(delete.parameters)
    # What help() shows (Python 3.13 spreads a long signature over several lines).
    shown = " ".join(pydoc.plain(pydoc.render_doc(cls.put)).split())
    for keyword in ("*, overwrite", "= True", "if_version", "if_value", "raise_on_conflict"):
        assert keyword in shown, shown
    assert "**" not in shown


async def test_explicit_keywords_behave_as_before(env: Environment) -> None:
    db = env.get_default_database()
    assert await db.put(b"k", b"v", overwrite=True) is True  # the defaults, spelled out
    assert await db.put(b"k", b"w", overwrite=False) is False
    assert await db.put(b"k", b"w", if_value=b"v") is True
    assert await db.put(b"k", b"x", if_value=b"v") is False
    with pytest.raises(aiolmdb.ConflictError):
        await db.put(b"k", b"x", if_value=b"v", raise_on_conflict=True)
    assert await db.delete(b"k", if_value=b"v") is False
    assert await db.delete(b"k", if_value=b"w") is True
    with pytest.raises(TypeError, match="a value or if_value=, not both"):
        await db.delete(b"k", b"w", if_value=b"w")
    assert await db.get(b"k") is None


# ----------------------------------------------------------------------------- defaults
async def test_get_like_defaults_come_back(env: Environment) -> None:
    db = env.open_db("d", key_coder=StringCoder(), value_coder=JSONCoder())
    assert await db.get("x", default=0) == 0
    assert await db.get("x", 0) == 0
    assert await db.get_multi(["x"], default=0) == {"x": 0}
    assert await db.pop("x", default=0) == 0
    assert await db.update("x", lambda n: n + 1, default=0) == 1
    assert await db.run(lambda txn: (txn.get("y", 5), txn.pop("y", 6)), write=True) == (5, 6)


async def test_databases_in_a_readonly_copy(tmp_path: Path) -> None:
    """The default database's entries leave out named databases' records there too."""
    async with aiolmdb.open(tmp_path / "w", map_size=MAP_SIZE, changelog=True) as env:
        await env.open_db("a").put(b"k", b"v")
    async with aiolmdb.open(tmp_path / "w", map_size=MAP_SIZE, readonly=True) as env:
        listed = await env.databases()
        assert [(i.name, i.entries) for i in listed] == [(None, 0), ("a", 1)]


# ----------------------------------------------------------------------------- update, processes
_INCREMENTER = """
import asyncio, sys
import aiolmdb

async def main() -> None:
    async with aiolmdb.open(sys.argv[1], map_size=1 << 24) as env:
        db = env.open_db("n", key_coder=aiolmdb.StringCoder(), value_coder=aiolmdb.UInt64Coder())
        await asyncio.gather(*(db.update("hits", lambda n: n + 1, default=0) for _ in range(300)))

asyncio.run(main())
"""


async def test_update_is_atomic_across_processes(tmp_path: Path) -> None:
    """What the docs promise for read-modify-write: concurrent updates of one key from several
    processes lose nothing (LMDB has one writer at a time; fn runs inside its transaction)."""
    path = tmp_path / "shared"
    async with aiolmdb.open(path, map_size=MAP_SIZE) as env:
        db = env.open_db("n", key_coder=StringCoder(), value_coder=UInt64Coder())
        children = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _INCREMENTER,
                str(path),
                env={**os.environ, "PYTHONPATH": ROOT},
            )
            for _ in range(3)
        ]
        await asyncio.gather(*(db.update("hits", lambda n: n + 1, default=0) for _ in range(300)))
        codes = await asyncio.wait_for(asyncio.gather(*(c.wait() for c in children)), 120)
        assert codes == [0, 0, 0]
        assert await db.get("hits") == 1200
