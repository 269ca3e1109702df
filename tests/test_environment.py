"""Environment: opening, closing, databases, environment-wide operations, loops and fork."""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import pytest
from conftest import (
    DB_OPERATIONS,
    MAP_SIZE,
    TIMEOUT,
    aiolmdb_threads,
    join_threads,
    let_tasks_start,
)

import aiolmdb
from aiolmdb import (
    AsyncDatabase,
    ClosedError,
    Environment,
    IdentityCoder,
    JSONCoder,
    StringCoder,
    TransactionError,
)

Db = AsyncDatabase[bytes, bytes]


async def call(fn: Callable[[], Any]) -> Any:
    """Call fn and await the result if awaitable (some methods raise before returning)."""
    result = fn()
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        return await result
    return result


async def make_env_with_data(path: Path) -> None:
    """Create an environment holding a named database "named" (k -> v) and main key m -> 1."""
    async with aiolmdb.open(path, map_size=MAP_SIZE) as env:
        named = await env.open_db("named")
        await named.put(b"k", b"v")
        await env.get_default_database().put(b"m", b"1")


# --------------------------------------------------------------------------------------------
# open / close
# --------------------------------------------------------------------------------------------


async def test_open_and_async_with(path: Path, inline_reads: bool) -> None:
    async with aiolmdb.open(path, map_size=MAP_SIZE, inline_reads=inline_reads) as env:
        assert isinstance(env, Environment)
        assert "open" in repr(env)
        await env.get_default_database().put(b"k", b"v")
    assert env.closed is True
    assert "closed" in repr(env)
    # The data is on disk: plain lmdb sees it.
    with lmdb.open(str(path), readonly=True) as raw, raw.begin() as txn:
        assert txn.get(b"k") == b"v"


async def test_async_with_closes_on_error(path: Path) -> None:
    with pytest.raises(KeyError):
        async with aiolmdb.open(path, map_size=MAP_SIZE) as env:
            raise KeyError("inside")
    assert env.closed


async def test_close_is_idempotent(env: Environment) -> None:
    await env.close()
    await env.close()
    assert env.closed
    await asyncio.gather(env.close(), env.close())


async def test_concurrent_close_calls(path: Path) -> None:
    env = aiolmdb.open(path, map_size=MAP_SIZE)
    await env.get_default_database().put(b"k", b"v")
    await asyncio.wait_for(asyncio.gather(env.close(), env.close(), env.close()), TIMEOUT)
    assert env.closed


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_batch": 0}, "max_batch"), ({"readers": 0}, "readers")],
    ids=["max_batch", "readers"],
)
def test_open_rejects_bad_options(path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        aiolmdb.open(path, **kwargs)


def test_open_passes_lmdb_errors(path: Path) -> None:
    # LMDB's own error reaches the caller, and no thread is left behind.
    before = aiolmdb_threads()
    with pytest.raises(lmdb.Error):
        aiolmdb.open(path, create=False)
    assert aiolmdb_threads() == before


async def test_readers_option(path: Path) -> None:
    async with aiolmdb.open(path, map_size=MAP_SIZE, readers=1) as env:
        db = env.get_default_database()
        await db.put(b"k", b"v")
        assert await asyncio.gather(*(db.get(b"k") for _ in range(50))) == [b"v"] * 50


async def test_every_call_after_close_raises_closed_error(env: Environment, tmp_path: Path) -> None:
    main = env.get_default_database()
    named = await env.open_db("named")
    await named.put(b"k", b"v")
    # Made before the close, begun after it.
    snapshot = env.begin()
    write_txn = env.begin(write=True)
    await env.close()
    dest = tmp_path / "copy"
    dest.mkdir()
    env_calls: list[Callable[[], Any]] = [
        lambda: env.open_db("named"),
        lambda: env.open_db("other"),
        lambda: env.open_db(None),
        lambda: env.open_db(),
        env.get_default_database,
        env.get_default_db,
        lambda: env.run(lambda txn: 1),
        lambda: env.run(lambda txn: 1, write=True),
        env.stat,
        env.info,
        env.readers,
        env.flags,
        env.sync,
        lambda: env.sync(force=True),
        lambda: env.copy(dest),
        lambda: env.copy(dest, compact=True),
        env.begin,
        lambda: env.begin(write=True),
        snapshot.begin,
        write_txn.begin,
    ]
    db_calls = DB_OPERATIONS
    calls = env_calls + [functools.partial(op, d) for d in (main, named) for op in db_calls]
    for fn in calls:
        with pytest.raises(ClosedError, match=r"environment .* is closed") as info:
            await call(fn)
        assert isinstance(info.value, aiolmdb.Error)


async def test_max_key_size_after_close_raises(env: Environment) -> None:
    await env.close()
    with pytest.raises(ClosedError):
        env.max_key_size()


async def test_database_being_created_when_closed(env: Environment) -> None:
    pending = env.open_db("pending")  # queued to the writer thread, not awaited
    await env.close()
    with pytest.raises(ClosedError):
        await pending.get(b"k")


async def test_close_rolls_back_an_open_write_transaction(env: Environment, path: Path) -> None:
    """close() does not wait for a task that holds env.begin(write=True) (it may never end
    it): it rolls the transaction back, and the holder's commit fails instead of pretending.
    Writes submitted before the close still land."""
    db = env.get_default_database()
    await db.put(b"kept", b"1")
    holding = asyncio.Event()
    go_on = asyncio.Event()

    async def holder() -> None:
        async with env.begin(write=True) as txn:
            await txn[db].put(b"rolled-back", b"x")
            await txn[db].delete(b"kept")
            holding.set()
            await go_on.wait()

    task = asyncio.ensure_future(holder())
    await asyncio.wait_for(holding.wait(), TIMEOUT)
    queued = asyncio.ensure_future(db.put(b"queued", b"1"))  # waits for the writer
    await let_tasks_start()
    try:
        await asyncio.wait_for(env.close(), TIMEOUT)
    finally:
        go_on.set()  # lets a close that hangs (a bug) finish, with the commit
    with pytest.raises(ClosedError, match="rolled this transaction back"):
        await asyncio.wait_for(task, TIMEOUT)
    assert await asyncio.wait_for(queued, TIMEOUT) is True
    async with aiolmdb.open(path, map_size=MAP_SIZE) as reopened:
        assert await reopened.get_default_database().get_multi(
            [b"rolled-back", b"kept", b"queued"]
        ) == {b"rolled-back": None, b"kept": b"1", b"queued": b"1"}


async def test_close_ends_open_snapshots(env: Environment) -> None:
    db = env.get_default_database()
    await db.put(b"k", b"v")
    async with env.begin() as snap:
        assert await snap[db].get(b"k") == b"v"
        await asyncio.wait_for(env.close(), TIMEOUT)
        assert not snap.active
        with pytest.raises(TransactionError, match="ended"):
            await snap[db].get(b"k")


def forget(references: list[Any]) -> None:
    """Drop the last references to objects and collect them (cycles included)."""
    references.clear()
    gc.collect()


async def test_forgotten_close_warns_and_stops_threads(path: Path) -> None:
    before = aiolmdb_threads()
    env = aiolmdb.open(path, map_size=MAP_SIZE)
    db = env.get_default_database()
    await db.put(b"k", b"v")
    assert await db.get(b"k") == b"v"  # runs on (and so starts) a reader thread
    started = aiolmdb_threads() - before
    assert any(t.name.startswith("aiolmdb-writer") for t in started)
    assert any(t.name.startswith("aiolmdb-reader") for t in started)
    references: list[Any] = [env, db]
    del env, db
    with pytest.warns(ResourceWarning, match="unclosed aiolmdb environment"):
        forget(references)
    join_threads(started)
    # The environment was closed: its data is intact for the next user.
    with lmdb.open(str(path), readonly=True) as raw, raw.begin() as txn:
        assert txn.get(b"k") == b"v"


def test_no_warning_after_close(path: Path) -> None:
    env = aiolmdb.open(path, map_size=MAP_SIZE)
    asyncio.run(env.close())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del env
        gc.collect()


# --------------------------------------------------------------------------------------------
# databases
# --------------------------------------------------------------------------------------------


async def test_str_and_bytes_names_are_the_same_database(env: Environment) -> None:
    by_str = env.open_db("naïve")
    by_bytes = env.open_db("naïve".encode())
    await by_str.put(b"k", b"v")
    assert await by_bytes.get(b"k") == b"v"
    assert by_bytes.name == "naïve"
    # Stored as a key of the main database, UTF-8 encoded.
    assert await env.get_default_database().get("naïve".encode()) is not None


async def test_await_open_db(env: Environment) -> None:
    db = await env.open_db("awaited", key_coder=StringCoder(), value_coder=JSONCoder())
    assert isinstance(db, AsyncDatabase)
    assert await db.put("k", [1])
    assert await (await env.open_db("awaited")).get(b"k") == b"[1]"


async def test_open_db_create_false_missing(env: Environment) -> None:
    with pytest.raises(lmdb.NotFoundError):
        await env.open_db("missing", create=False)
    # Not awaited: the first operation raises the error.
    missing = env.open_db("missing", create=False)
    with pytest.raises(lmdb.NotFoundError):
        await missing.get(b"k")
    with pytest.raises(lmdb.NotFoundError):
        await missing.put(b"k", b"v")
    assert await env.get_default_database().get(b"missing") is None  # not created
    # A failed opening is not remembered: opening again (creating it) works.
    created = await env.open_db("missing")
    assert await created.count() == 0
    assert await env.open_db("missing", create=False).count() == 0


async def test_open_db_create_false_open_in_this_session(env: Environment) -> None:
    await (await env.open_db("here")).put(b"k", b"v")
    assert await env.open_db("here", create=False).get(b"k") == b"v"


async def test_open_existing_database_in_new_session(path: Path, inline_reads: bool) -> None:
    await make_env_with_data(path)
    async with aiolmdb.open(path, map_size=MAP_SIZE, inline_reads=inline_reads) as env:
        named = env.open_db("named")
        assert await named.get(b"k") == b"v"
        await named.put(b"k2", b"v2")
        assert await named.count() == 2


async def test_open_existing_database_create_false(path: Path, inline_reads: bool) -> None:
    await make_env_with_data(path)
    async with aiolmdb.open(path, map_size=MAP_SIZE, inline_reads=inline_reads) as env:
        named = await env.open_db("named", create=False)
        assert await named.get(b"k") == b"v"


async def test_open_db_different_flags(env: Environment) -> None:
    await env.open_db("d", dupsort=True)
    with pytest.raises(ValueError, match="already open with flags"):
        env.open_db("d", reverse_key=True)
    with pytest.raises(ValueError, match="already open with flags"):
        env.open_db(b"d", dupsort=True, reverse_key=True)
    # The same flags (create does not count) are fine; no flags take the database as it is.
    assert env.open_db(b"d", dupsort=True, create=False).dupsort
    assert env.open_db("d").dupsort


async def test_existing_database_keeps_its_stored_flags(path: Path, inline_reads: bool) -> None:
    async with aiolmdb.open(path, map_size=MAP_SIZE) as env:
        dups = await env.open_db("dups", dupsort=True)
        await dups.put_multi([(b"k", b"1"), (b"k", b"2")])
    async with aiolmdb.open(path, map_size=MAP_SIZE, inline_reads=inline_reads) as env:
        dups = await env.open_db("dups")  # dupsort not repeated: LMDB's stored flags apply
        assert dups.dupsort
        assert await dups.count() == 2
        assert await dups.put(b"k", b"1") is False  # the exact pair exists
        assert await dups.put(b"k", b"3") is True
        assert await dups.count() == 3


async def test_stored_dupsort_applies_before_the_open_completes(
    path: Path, inline_reads: bool
) -> None:
    # Operations issued on a database whose open has not finished yet must use the flags
    # LMDB has stored for it, not the ones the (flag-less) open asked for.
    async with aiolmdb.open(path, map_size=MAP_SIZE) as env:
        dups = await env.open_db("dups", dupsort=True)
        await dups.put_multi([(b"k", b"1"), (b"k", b"2"), (b"k", b"3")])
    async with aiolmdb.open(path, map_size=MAP_SIZE, inline_reads=inline_reads) as env:
        assert await env.open_db("dups").count_values(b"k") == 3
    async with aiolmdb.open(path, map_size=MAP_SIZE, inline_reads=inline_reads) as env:
        not_awaited = env.open_db("dups")
        async with env.begin(write=True) as txn:
            view = txn[not_awaited]
            assert await view.delete(b"k", b"1") is True  # one pair, not the whole key
            assert await view.put(b"k", b"2") is False  # the exact pair exists
            assert await view.put_multi([(b"k", b"3"), (b"k", b"4")]) == 1
        assert await not_awaited.get_all(b"k") == [b"2", b"3", b"4"]


async def test_open_db_name_of_plain_key(env: Environment) -> None:
    # A key of the main database is not a database: LMDB's error passes through.
    await env.get_default_database().put(b"plain", b"value")
    with pytest.raises(lmdb.IncompatibleError):
        await env.open_db("plain")
    not_awaited = env.open_db("plain")
    with pytest.raises(lmdb.IncompatibleError):
        await not_awaited.put(b"k", b"v")
    assert await env.get_default_database().get(b"plain") == b"value"


async def test_failed_creation_reaches_every_user(open_env: Callable[..., Environment]) -> None:
    env = open_env(max_dbs=1)
    first = await env.open_db("first")
    second = env.open_db("second")  # queued; LMDB refuses it: max_dbs reached
    with pytest.raises(lmdb.DbsFullError):
        await second.put(b"k", b"v")
    with pytest.raises(lmdb.DbsFullError):
        await second
    # Transactions wait for pending openings, then work with the databases that opened.
    third = env.open_db("third")
    assert await env.run(lambda txn: txn[first].put(b"k", b"v"), write=True) is True
    with pytest.raises(lmdb.DbsFullError):
        await third.get(b"k")
    assert await first.get(b"k") == b"v"


@pytest.mark.parametrize("which", ["key_coder", "value_coder"])
@pytest.mark.parametrize("bad", [str, JSONCoder, "utf-8", 1], ids=["type", "class", "str", "int"])
async def test_open_db_bad_coder(env: Environment, which: str, bad: Any) -> None:
    with pytest.raises(TypeError, match=f"{which} must be an aiolmdb Coder"):
        env.open_db("x", **{which: bad})
    with pytest.raises(TypeError, match=f"{which} must be an aiolmdb Coder"):
        env.open_db(None, **{which: bad})


async def test_open_db_bad_name_and_flags(env: Environment) -> None:
    bad_name: Any = 42
    with pytest.raises(TypeError, match="database name must be str, bytes or None, got 42"):
        env.open_db(bad_name)
    with pytest.raises(TypeError, match=r"unknown open_db flag.*bogus"):
        env.open_db("x", bogus=True)
    with pytest.raises(ValueError, match="default database"):
        env.open_db(None, dupsort=True)


@pytest.mark.parametrize(
    ("name", "match"),
    [("", "must not be empty"), (b"", "must not be empty"), ("a\0b", "NUL byte"), (b"a\0", "NUL")],
)
async def test_open_db_rejects_names_lmdb_cannot_store(
    env: Environment, name: str | bytes, match: str
) -> None:
    # LMDB names are C strings: "a\0b" would silently open the database "a".
    with pytest.raises(ValueError, match=match):
        env.open_db(name)
    assert [info.key for info in await env.databases()] == [None]


@pytest.mark.parametrize("flag", ["dupsort", "integerkey", "reverse_key", "dupfixed", "create"])
@pytest.mark.parametrize("value", [2, "yes", None], ids=["int", "str", "none"])
async def test_open_db_flags_must_be_bools(env: Environment, flag: str, value: Any) -> None:
    with pytest.raises(TypeError, match=f"{flag} must be True or False, got {value!r}"):
        env.open_db("x", **{flag: value})
    assert await env.database_info("x") is None  # nothing was created


async def test_databases_lists_every_database_with_flags_and_entries(env: Environment) -> None:
    main = env.get_default_database()
    await main.put(b"plain", b"x" * 48)  # a main-database value the size of a DB record
    dups = await env.open_db("dups", dupsort=True)
    await dups.put_multi([(b"k", b"1"), (b"k", b"2"), (b"j", b"3")])
    await env.open_db(b"\xffraw")
    infos = await env.databases()
    assert [info.key for info in infos] == [None, b"dups", b"\xffraw"]
    by_key = {info.key: info for info in infos}
    assert by_key[None].entries == 3  # "plain" and the two database records
    assert by_key[None].name is None
    assert by_key[b"dups"].flags == frozenset({"dupsort"})
    assert by_key[b"dups"].entries == 3
    assert by_key[b"dups"].stat["entries"] == 3
    assert by_key[b"dups"].name == "dups"
    assert by_key[b"\xffraw"].name == "\\xffraw"
    assert by_key[b"\xffraw"].entries == 0
    # What it lists opens as it is.
    again = await env.open_db(by_key[b"\xffraw"].key, create=False)
    assert await again.count() == 0


async def test_database_info(env: Environment) -> None:
    await env.get_default_database().put(b"plain", b"v")
    assert await env.database_info("missing") is None
    with pytest.raises(ValueError, match=r"plain.*is a key of the default database"):
        await env.database_info("plain")
    db = await env.open_db("named", integerkey=True)
    await db.put((7).to_bytes(8, "little"), b"v")
    info = await env.database_info("named")
    assert info is not None
    assert (info.key, info.flags, info.entries) == (b"named", frozenset({"integerkey"}), 1)
    bad: Any = None
    with pytest.raises(TypeError, match="needs a name"):
        await env.database_info(bad)


async def test_databases_on_a_closed_environment(path: Path) -> None:
    env = aiolmdb.open(path, map_size=MAP_SIZE)
    await env.close()
    with pytest.raises(ClosedError):
        await env.databases()
    with pytest.raises(ClosedError):
        await env.database_info("x")


async def test_default_database(env: Environment) -> None:
    main = env.get_default_database()
    assert env.get_default_database() is main
    assert env.get_default_db() is main
    assert main.name is None
    assert isinstance(main.key_coder, IdentityCoder)
    other_view = env.open_db(None, value_coder=JSONCoder())
    assert other_view is not main
    await main.put(b"k", b'{"a": 1}')
    assert await other_view.get(b"k") == {"a": 1}
    assert await env.open_db().get(b"k") == b'{"a": 1}'


async def test_many_named_databases(env: Environment) -> None:
    dbs = [env.open_db(f"db{i}") for i in range(20)]
    await asyncio.gather(*(d.put(b"k", str(i).encode()) for i, d in enumerate(dbs)))
    assert await asyncio.gather(*(d.get(b"k") for d in dbs)) == [str(i).encode() for i in range(20)]


# --------------------------------------------------------------------------------------------
# environment-wide operations
# --------------------------------------------------------------------------------------------


async def test_env_stat_used_without_await_is_deprecated(env: Environment) -> None:
    """aiolmdb 0.x's synchronous ``env.stat()[...]`` still works, with a warning."""
    await env.get_default_database().put(b"a", b"1")
    call = env.stat()
    with pytest.warns(DeprecationWarning, match="await env.stat") as caught:
        assert call["entries"] == 1
    assert caught[0].filename == __file__
    assert dict(call) == await env.stat()  # read once: no second warning
    with pytest.warns(DeprecationWarning, match="await env.stat"):
        assert "psize" in env.stat()
    await env.close()
    with pytest.raises(aiolmdb.ClosedError):
        env.stat()


async def test_stat_info_path_flags(env: Environment, path: Path) -> None:
    assert env.path == str(path)
    assert (await env.stat())["entries"] == 0
    await env.get_default_database().put_multi([(b"a", b"1"), (b"b", b"2")])
    stat = await env.stat()
    assert type(stat) is dict
    assert stat == await env.get_default_database().stat()
    assert stat["entries"] == 2
    assert stat["psize"] >= 4096
    info = env.info()
    assert info["map_size"] == MAP_SIZE
    assert info["last_txnid"] >= 1
    assert env.max_key_size() == env.lmdb_environment.max_key_size()
    assert env.max_key_size() >= 511
    flags = env.flags()
    assert flags["readonly"] is False
    assert isinstance(env.readers(), str)
    assert isinstance(env.lmdb_environment, lmdb.Environment)


async def test_sync(path: Path) -> None:
    async with aiolmdb.open(path, map_size=MAP_SIZE, sync=False) as env:
        await env.get_default_database().put(b"k", b"v")
        await env.sync()
        await env.sync(force=True)
    with lmdb.open(str(path), readonly=True) as raw, raw.begin() as txn:
        assert txn.get(b"k") == b"v"


@pytest.mark.parametrize("compact", [False, True], ids=["plain", "compact"])
async def test_copy(env: Environment, tmp_path: Path, compact: bool) -> None:
    main = env.get_default_database()
    named = env.open_db("named", key_coder=StringCoder(), value_coder=JSONCoder())
    await main.put_multi([(b"%03d" % i, b"x" * 100) for i in range(300)])
    await main.delete_multi([b"%03d" % i for i in range(0, 300, 2)])  # leave free pages
    await named.put("doc", {"a": [1, 2]})
    dest = tmp_path / "backup"
    dest.mkdir()
    await env.copy(dest, compact=compact)
    await main.put(b"after", b"copy")  # not in the backup
    with lmdb.open(str(dest), readonly=True, max_dbs=4) as raw:
        raw_named = raw.open_db(b"named", create=False)
        with raw.begin() as txn:
            assert txn.get(b"001") == b"x" * 100
            assert txn.get(b"000") is None
            assert txn.get(b"after") is None
            assert txn.get(b"doc", db=raw_named) == b'{"a": [1, 2]}'
            assert txn.stat(raw_named)["entries"] == 1


async def test_copy_error_passes_through(env: Environment, tmp_path: Path) -> None:
    with pytest.raises(lmdb.Error):
        await env.copy(tmp_path / "does-not-exist")


async def test_copy_str_path(env: Environment, tmp_path: Path) -> None:
    await env.get_default_database().put(b"k", b"v")
    dest = tmp_path / "backup"
    dest.mkdir()
    await env.copy(str(dest))
    with lmdb.open(str(dest), readonly=True) as raw, raw.begin() as txn:
        assert txn.get(b"k") == b"v"


# --------------------------------------------------------------------------------------------
# read-only environments
# --------------------------------------------------------------------------------------------


async def test_readonly_environment(path: Path, inline_reads: bool) -> None:
    await make_env_with_data(path)
    async with aiolmdb.open(path, readonly=True, inline_reads=inline_reads) as env:
        assert env.flags()["readonly"] is True
        main = env.get_default_database()
        assert await main.get(b"m") == b"1"
        with pytest.raises(lmdb.NotFoundError):
            env.open_db("missing")  # read-only: raises at once
        with pytest.raises(lmdb.ReadonlyError):
            await main.put(b"x", b"y")
        with pytest.raises(lmdb.ReadonlyError):
            await main.run(lambda txn: None, write=True)
        assert await main.get(b"x") is None


async def test_readonly_environment_named_database(path: Path, inline_reads: bool) -> None:
    await make_env_with_data(path)
    async with aiolmdb.open(path, readonly=True, inline_reads=inline_reads) as env:
        assert await env.open_db("named").get(b"k") == b"v"


# --------------------------------------------------------------------------------------------
# event loops
# --------------------------------------------------------------------------------------------


def test_use_from_a_second_event_loop(path: Path, inline_reads: bool) -> None:
    env = aiolmdb.open(path, map_size=MAP_SIZE, inline_reads=inline_reads)
    main = env.get_default_database()
    named = env.open_db("named")

    async def first() -> None:
        await main.put(b"a", b"1")
        await named.put(b"n", b"x")
        assert await main.get(b"a") == b"1"

    async def second() -> None:
        assert await main.get(b"a") == b"1"
        assert await named.get(b"n") == b"x"
        assert await main.put(b"b", b"2")
        assert await main.get_multi([b"a", b"b"]) == {b"a": b"1", b"b": b"2"}
        assert await env.run(lambda txn: txn.get(b"b")) == b"2"
        await env.close()

    asyncio.run(first())
    asyncio.run(second())
    assert env.closed


async def test_use_from_two_running_loops_is_refused(
    open_env: Callable[..., Environment],
) -> None:
    env = open_env()  # not yet bound to a loop (the env fixture binds an "auto" one to this)
    main = env.get_default_database()
    bound = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    async def other_loop() -> None:
        await main.put(b"other", b"loop")  # binds the environment to this loop
        bound.set()
        await asyncio.to_thread(release.wait, TIMEOUT)

    def thread_main() -> None:
        try:
            asyncio.run(other_loop())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=thread_main)
    thread.start()
    try:
        assert await asyncio.to_thread(bound.wait, TIMEOUT)
        with pytest.raises(RuntimeError, match="another running event loop"):
            await main.put(b"k", b"v")
        with pytest.raises(RuntimeError, match="another running event loop"):
            await main.get(b"k")
    finally:
        release.set()
        await asyncio.to_thread(thread.join, TIMEOUT)
    assert not thread.is_alive()
    assert errors == []
    # The other loop has ended: this one may take the environment over.
    assert await main.get(b"other") == b"loop"
    assert await main.put(b"k", b"v")


# --------------------------------------------------------------------------------------------
# fork
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
async def test_use_after_fork_raises_forked_error(env: Environment) -> None:
    main = env.get_default_database()
    await main.put(b"k", b"v")
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a multi-threaded process; that is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - child process, reports through its exit status
        code = 1
        try:
            try:
                env.stat()
            except aiolmdb.ForkedError as exc:
                if "fork" in str(exc) and isinstance(exc, aiolmdb.Error):
                    code = 0
            if code == 0 and not env.closed:
                code = 2
            try:
                env.get_default_database()
            except aiolmdb.ForkedError:
                pass
            else:
                code = 3
            # Closing in the child touches neither the parent's threads nor its environment.
            asyncio.run(asyncio.wait_for(env.close(), TIMEOUT))
        except BaseException:
            code = 4
        finally:
            os._exit(code)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent is unaffected.
    assert await main.get(b"k") == b"v"
