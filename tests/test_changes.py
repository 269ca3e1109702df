"""The change log (changelog=True), env.changes() and env.on_commit."""

from __future__ import annotations

import asyncio
import datetime
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import lmdb
import pytest
from conftest import MAP_SIZE, TIMEOUT, OpenEnv, let_tasks_start
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiolmdb
from aiolmdb import Change, ChangesTrimmedError, Retention
from aiolmdb._store import records as _records
from aiolmdb._store import trim as _trim


async def take(feed: aiolmdb.ChangeFeed, count: int) -> list[Change]:
    """The next ``count`` changes of a feed (bounded wait)."""

    async def run() -> list[Change]:
        out: list[Change] = []
        async for change in feed:
            out.append(change)
            if len(out) == count:
                break
        return out

    return await asyncio.wait_for(run(), TIMEOUT)


def plain(changes: Sequence[Change]) -> list[tuple[Any, ...]]:
    return [(c.db, c.key, c.kind, c.value) for c in changes]


async def test_every_write_form_is_recorded(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    db = env.open_db("a")
    dup = env.open_db("d", dupsort=True)
    main = env.get_default_database()
    await db.put(b"k", b"1")
    await db.put(b"k", b"1", overwrite=False)  # stores nothing: not recorded
    await db.put_multi([(b"x", b"2"), (b"y", b"3")])
    assert await db.replace(b"x", b"4") == b"2"
    assert await db.pop(b"y") == b"3"
    assert await db.pop(b"absent") is None
    await db.update(b"k", lambda old: (old or b"") + b"!")
    assert await db.delete(b"k")
    assert not await db.delete(b"k")
    await dup.put(b"p", b"a")
    await dup.put(b"p", b"b")
    await dup.delete(b"p", b"a")
    await dup.replace(b"p", b"c")
    await main.put(b"m", b"v")
    await env.run(lambda txn: txn[db].put(b"r", b"5"), write=True)
    async with env.begin(write=True) as txn:
        await txn[db].put(b"t", b"6")
    await db.drop(delete=False)
    changes = await take(env.changes(0), 15)
    assert [c.seq for c in changes] == list(range(1, 16))
    assert plain(changes) == [
        ("a", b"k", "put", b"1"),
        ("a", b"x", "put", b"2"),
        ("a", b"y", "put", b"3"),
        ("a", b"x", "put", b"4"),
        ("a", b"y", "delete", None),
        ("a", b"k", "put", b"1!"),
        ("a", b"k", "delete", None),
        ("d", b"p", "put", b"a"),
        ("d", b"p", "put", b"b"),
        ("d", b"p", "delete", b"a"),
        ("d", b"p", "delete", None),  # replace in a dupsort database: every value goes
        ("d", b"p", "put", b"c"),
        (None, b"m", "put", b"v"),
        ("a", b"r", "put", b"5"),
        ("a", b"t", "put", b"6"),
    ]
    drop = await take(env.changes(15), 1)
    assert plain(drop) == [("a", None, "drop", None)]


async def test_rolled_back_writes_leave_no_record(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    db = env.open_db("a")
    seen: list[aiolmdb.Change] = []
    env.on_commit(seen.extend)

    def fail(txn: aiolmdb.Transaction[bytes, bytes]) -> None:
        txn[db].put(b"lost", b"1")
        raise RuntimeError("roll back")

    results = await asyncio.gather(
        db.put(b"a", b"1"),
        env.run(fail, write=True),
        db.put_multi([(b"lost2", b"2"), "not a pair"]),  # type: ignore[list-item]
        db.put(b"b", b"2"),
        return_exceptions=True,
    )
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[2], TypeError)

    async def aborted() -> None:
        async with env.begin(write=True) as txn:
            await txn[db].put(b"lost3", b"3")
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        await aborted()
    await db.put(b"c", b"3")
    changes = await take(env.changes(0), 3)
    # Numbers are not consumed by what rolled back: they stay dense.
    assert [(c.seq, c.key) for c in changes] == [(1, b"a"), (2, b"b"), (3, b"c")]
    # on_commit callbacks are given only what committed, too.
    assert [(c.seq, c.key) for c in seen] == [(1, b"a"), (2, b"b"), (3, b"c")]


async def test_writemap_replays_without_duplicates(open_env: OpenEnv) -> None:
    env = open_env(changelog=True, writemap=True)
    db = env.open_db("a")
    results = await asyncio.gather(
        db.put(b"a", b"1"),
        db.put_multi([(b"lost", b"2"), "not a pair"]),  # type: ignore[list-item]
        db.put(b"b", b"2"),
        return_exceptions=True,
    )
    assert isinstance(results[1], TypeError)
    changes = await take(env.changes(0), 2)
    assert [(c.seq, c.key) for c in changes] == [(1, b"a"), (2, b"b")]


async def test_deleting_a_database_is_one_delete_db(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    db = env.open_db("gone")
    await db.put_multi([(b"%d" % i, b"v") for i in range(50)])
    await db.drop()
    again = env.open_db("gone")
    await again.put(b"new", b"1")
    changes = await take(env.changes(50), 2)
    assert plain(changes) == [("gone", None, "delete_db", None), ("gone", b"new", "put", b"1")]


async def test_since_none_follows_new_commits(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    db = env.open_db("a")
    await db.put(b"old", b"1")
    feed = env.changes()
    assert feed.last_seq is None
    assert await feed.start() == 1  # "old" is behind it
    task = asyncio.ensure_future(take(feed, 2))
    await db.put(b"new", b"2")
    await db.put(b"newer", b"3")
    assert [c.key for c in await task] == [b"new", b"newer"]
    assert feed.last_seq == 3


async def test_filters_and_coders(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    docs = env.open_db("docs", key_coder=aiolmdb.StringCoder(), value_coder=aiolmdb.JSONCoder())
    ver = env.open_db("ver", versioned=True, value_coder=aiolmdb.JSONCoder())
    other = env.open_db("other")
    await docs.put("user:1", {"n": 1})
    await other.put(b"user:2", b"x")
    await docs.put("item:1", {"n": 2})
    await docs.put("user:3", {"n": 3})
    await ver.put(b"k", [1, 2])
    decoded = await take(env.changes(0, db=docs), 3)
    assert [(c.key, c.value) for c in decoded] == [
        ("user:1", {"n": 1}),
        ("item:1", {"n": 2}),
        ("user:3", {"n": 3}),
    ]
    by_name = await take(env.changes(0, db="docs", prefix=b"user:"), 2)
    assert [c.key for c in by_name] == [b"user:1", b"user:3"]
    stored = await take(env.changes(4, db="ver"), 1)
    assert stored[0].value[8:] == b"[1,2]" or stored[0].value[8:] == b"[1, 2]"
    assert len(stored[0].value) > 8  # the stored bytes: the version first
    [decoded_ver] = await take(env.changes(4, db=ver), 1)
    assert decoded_ver.value == [1, 2]


async def test_prefix_is_a_key_as_in_ranges(open_env: OpenEnv) -> None:
    """``changes(db=database, prefix=key)`` selects what ``database.keys(prefix=key)`` does:
    the prefix goes through the database's key coder."""
    env = open_env(changelog=True)
    orders = await env.open_db("orders", key_coder=aiolmdb.TupleCoder())
    for key in [("user", 42, 1), ("user", 420, 1), ("user", 42, 2), ("item", 42)]:
        await orders.put(key, b"x")
    in_range = [k async for k in orders.keys(prefix=("user", 42))]
    changed = await take(env.changes(0, db=orders, prefix=("user", 42)), 2)
    assert [c.key for c in changed] == [("user", 42, 1), ("user", 42, 2)]
    assert sorted(c.key for c in changed) == in_range
    names = env.open_db("names", key_coder=aiolmdb.StringCoder())
    await names.put("user:1", b"x")
    await names.put("item:1", b"x")
    await names.put("user:2", b"x")
    assert [c.key for c in await take(env.changes(0, db=names, prefix="user:"), 2)] == [
        "user:1",
        "user:2",
    ]
    # aiolmdb 0.x passed the stored bytes: still accepted where the coder cannot encode them.
    with pytest.warns(DeprecationWarning, match="key of that database") as caught:
        feed = env.changes(0, db=names, prefix=b"user:")
    assert caught[0].filename == __file__
    assert [c.key for c in await take(feed, 2)] == ["user:1", "user:2"]
    with pytest.raises(TypeError, match="cannot encode prefix 7"):
        env.changes(db=names, prefix=7)


async def test_keys_mode_records_no_values(open_env: OpenEnv) -> None:
    env = open_env(changelog="keys")
    dup = env.open_db("d", dupsort=True)
    await dup.put(b"k", b"a")
    await dup.delete(b"k", b"a")
    changes = await take(env.changes(0), 2)
    assert plain(changes) == [("d", b"k", "put", None), ("d", b"k", "delete", None)]


def _fail() -> NoReturn:
    raise RuntimeError("roll back")


async def test_on_commit(open_env: OpenEnv, caplog: pytest.LogCaptureFixture) -> None:
    env = open_env()  # no log: hooks alone
    db = await env.open_db("a")
    seen: list[list[tuple[Any, ...]]] = []
    calls: list[int] = []

    def broken(changes: Sequence[Change]) -> None:
        calls.append(len(changes))
        raise RuntimeError("a broken callback")

    def hook(changes: Sequence[Change]) -> None:
        seen.append([(c.seq, *plain([c])[0]) for c in changes])

    remove_broken = env.on_commit(broken)
    remove = env.on_commit(hook)
    caplog.set_level(logging.ERROR, logger="aiolmdb")
    await asyncio.gather(db.put(b"a", b"1"), db.put(b"b", b"2"))
    # The callbacks ran before the writers resumed.
    assert seen == [[(None, "a", b"a", "put", b"1"), (None, "a", b"b", "put", b"2")]]
    assert "on_commit callback raised" in caplog.text
    with pytest.raises(RuntimeError):
        await env.run(lambda txn: (txn[db].put(b"x", b"1"), _fail()), write=True)
    await db.get(b"a")  # a read commits nothing
    assert len(seen) == 1
    remove_broken()
    await db.delete(b"a")
    assert seen[-1] == [(None, "a", b"a", "delete", None)]
    assert calls == [2]
    remove()
    await db.put(b"c", b"3")
    assert len(seen) == 2
    with pytest.raises(TypeError, match="callable"):
        env.on_commit(42)  # type: ignore[arg-type]


async def test_on_commit_with_log_has_seq(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    db = env.open_db("a")
    seen: list[Change] = []
    env.on_commit(seen.extend)
    await db.put(b"a", b"1")
    assert [c.seq for c in seen] == [1]


async def test_retention_by_entries_and_trimmed_error(open_env: OpenEnv) -> None:
    env = open_env(changelog=True, changelog_retention=10)
    db = env.open_db("a")
    await db.put_multi([(b"%04d" % i, b"v") for i in range(600)])
    await db.put(b"last", b"v")  # runs after the trim queued by the commit before
    with pytest.raises(ChangesTrimmedError) as caught:
        await take(env.changes(0), 1)
    assert caught.value.oldest == 591
    changes = await take(env.changes(590), 11)
    assert [c.seq for c in changes] == list(range(591, 602))


async def test_trim_runs_in_bounded_steps_and_numbers_keep_growing(open_env: OpenEnv) -> None:
    env = open_env(changelog=True, changelog_retention=Retention(entries=0))
    db = env.open_db("a")
    await db.put_multi([(b"%05d" % i, b"v") for i in range(2500)])

    def log_size(txn: aiolmdb.Transaction[bytes, bytes]) -> int:
        handle = env.lmdb_environment.open_db(b"__aiolmdb_changes__", txn=txn.raw, create=False)
        return int(txn.raw.stat(handle)["entries"])

    # Each step requeues itself behind the writes queued meanwhile: after three writes the
    # three steps have run (how many ran before each write depends on the threads' timing).
    sizes = [await env.run(log_size, write=True) for _ in range(3)]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-1] == 0
    await db.put(b"after", b"v")
    [change] = await take(env.changes(2500), 1)
    assert change.seq == 2501  # the whole log was trimmed: numbers still grow


async def test_retention_by_age(open_env: OpenEnv) -> None:
    env = open_env(changelog=True, changelog_retention=datetime.timedelta(microseconds=1))
    db = env.open_db("a")
    await db.put_multi([(b"%04d" % i, b"v") for i in range(300)])
    await db.put(b"last", b"v")
    with pytest.raises(ChangesTrimmedError) as caught:
        await take(env.changes(0), 1)
    assert caught.value.oldest == 301


async def test_cancel_a_follower(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    db = env.open_db("a")
    task = asyncio.ensure_future(take(env.changes(0), 5))
    await db.put(b"a", b"1")
    await let_tasks_start()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await db.put(b"b", b"2")
    assert [c.key for c in await take(env.changes(0), 2)] == [b"a", b"b"]


async def test_close_ends_followers(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    db = env.open_db("a")
    await db.put(b"a", b"1")
    got: list[Change] = []
    started = asyncio.Event()

    async def follow() -> None:
        async for change in env.changes(0):
            got.append(change)
            started.set()

    task = asyncio.ensure_future(follow())
    await asyncio.wait_for(started.wait(), TIMEOUT)
    await asyncio.wait_for(env.close(), TIMEOUT)
    await asyncio.wait_for(task, TIMEOUT)  # ended, without an error
    assert [c.key for c in got] == [b"a"]
    with pytest.raises(aiolmdb.ClosedError):
        env.changes()


async def test_open_without_the_flag_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "env"
    async with aiolmdb.open(path, changelog=True, map_size=MAP_SIZE) as env:
        await env.open_db("a").put(b"k", b"v")
    with pytest.raises(ValueError, match="changelog=True"):
        aiolmdb.open(path, map_size=MAP_SIZE)
    async with aiolmdb.open(path, readonly=True) as env:
        assert plain(await take(env.changes(0), 1)) == [("a", b"k", "put", b"v")]
    async with aiolmdb.open(path, changelog=True, map_size=MAP_SIZE) as env:
        await env.open_db("a").put(b"k2", b"v")  # numbers go on from the stored log
        assert [c.seq for c in await take(env.changes(1), 1)] == [2]


async def test_no_log(open_env: OpenEnv) -> None:
    env = open_env()
    with pytest.raises(ValueError, match="no change log"):
        await take(env.changes(0), 1)


async def test_reserved_name_and_raw(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    with pytest.raises(ValueError, match="metadata"):
        env.open_db("__aiolmdb_changes__")
    assert await env.run(lambda txn: isinstance(txn.raw, lmdb.Transaction), write=True)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"changelog": "all"}, ValueError, "changelog must be"),
        ({"changelog": None, "changelog_retention": 5}, ValueError, "needs changelog"),
        ({"changelog": True, "changelog_retention": "5"}, TypeError, "changelog_retention"),
        ({"changelog": True, "changelog_retention": -1}, ValueError, "int >= 0"),
        (
            {"changelog": True, "changelog_retention": datetime.timedelta(0)},
            ValueError,
            "positive",
        ),
    ],
)
def test_bad_options(
    tmp_path: Path, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        aiolmdb.open(tmp_path / "env", **options)


def test_retention_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="entries= or age="):
        Retention()


async def test_bad_changes_arguments(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    with pytest.raises(ValueError, match="since"):
        env.changes(-1)
    with pytest.raises(TypeError, match="prefix"):
        env.changes(prefix="user")
    other = open_env()
    with pytest.raises(ValueError, match="another environment"):
        env.changes(db=other.get_default_database())


# ----------------------------------------------------------------- model: replaying the log
_KEYS = st.sampled_from([b"a", b"b", b"c"])
_VALUES = st.sampled_from([b"1", b"2", b"3"])
_DBS = st.sampled_from(["plain", "dup", "ver"])
_OP = st.one_of(
    st.tuples(st.just("put"), _DBS, _KEYS, _VALUES),
    st.tuples(st.just("delete"), _DBS, _KEYS),
    st.tuples(st.just("delete_pair"), st.just("dup"), _KEYS, _VALUES),
    st.tuples(st.just("put_multi"), _DBS, st.lists(st.tuples(_KEYS, _VALUES), max_size=3)),
    st.tuples(st.just("bad_multi"), _DBS, _KEYS, _VALUES),
    st.tuples(st.just("pop"), st.sampled_from(["plain", "ver"]), _KEYS),
    st.tuples(st.just("replace"), _DBS, _KEYS, _VALUES),
    st.tuples(st.just("drop"), _DBS),
    st.tuples(st.just("run"), _DBS, _KEYS, _VALUES, st.booleans()),
)


async def _apply(dbs: dict[str, aiolmdb.AsyncDatabase[bytes, bytes]], op: tuple[Any, ...]) -> Any:
    kind, db = op[0], dbs[op[1]]
    if kind == "put":
        return await db.put(op[2], op[3])
    if kind == "delete":
        return await db.delete(op[2])
    if kind == "delete_pair":
        return await db.delete(op[2], op[3])
    if kind == "put_multi":
        return await db.put_multi(op[2])
    if kind == "bad_multi":  # fails half-way: rolls back alone
        return await db.put_multi([(op[2], op[3]), "not a pair"])  # type: ignore[list-item]
    if kind == "pop":
        return await db.pop(op[2])
    if kind == "replace":
        return await db.replace(op[2], op[3])
    if kind == "drop":
        return await db.drop(delete=False)

    def fn(txn: aiolmdb.Transaction[bytes, bytes]) -> None:
        txn[db].put(op[2], op[3])
        txn[db].delete(op[2] + b"x")
        if op[4]:
            raise RuntimeError("roll back")

    return await db.environment.run(fn, write=True)


def _contents(txn: Any, handle: Any) -> list[tuple[bytes, bytes]]:
    return [(bytes(k), bytes(v)) for k, v in txn.cursor(handle).iternext(keys=True, values=True)]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(st.lists(_OP, min_size=1, max_size=4), max_size=8))
def test_replayed_log_equals_the_store(
    tmp_path_factory: pytest.TempPathFactory, ops: list[list[tuple[Any, ...]]]
) -> None:
    """Random writes in several databases (concurrent groups share batches, some fail and roll
    back alone): the log, replayed into an empty store, gives the same store."""

    async def run() -> None:
        path = tmp_path_factory.mktemp("model")
        async with aiolmdb.open(path, map_size=MAP_SIZE, sync=False, changelog=True) as env:
            dbs = {
                "plain": env.open_db("plain"),
                "dup": env.open_db("dup", dupsort=True),
                "ver": env.open_db("ver", versioned=True),
            }
            last: list[int] = [0]
            env.on_commit(lambda changes: last.append(changes[-1].seq or 0))
            for group in ops:
                await asyncio.gather(*(_apply(dbs, op) for op in group), return_exceptions=True)
            replay: list[Change] = []
            if last[-1]:
                replay = await take(env.changes(0), last[-1])
            assert [c.seq for c in replay] == list(range(1, last[-1] + 1))
            # The writer thread idle first (the log created, the databases opened): the raw
            # open_db below begins a write transaction on this thread, which would wait for
            # the writer's while holding the loop.
            await env.changes(0, follow=False).start()
            for db in dbs.values():
                await db
            stored = env.lmdb_environment
            handles = {name: stored.open_db(name.encode()) for name in dbs}
            with stored.begin() as txn:
                expected = {name: _contents(txn, h) for name, h in handles.items()}
        copy = lmdb.open(str(path) + "-replay", max_dbs=8)
        try:
            made = {
                "plain": copy.open_db(b"plain"),
                "dup": copy.open_db(b"dup", dupsort=True),
                "ver": copy.open_db(b"ver"),
            }
            with copy.begin(write=True) as txn:
                for change in replay:
                    assert change.db is not None
                    handle = made[change.db]
                    if change.kind == "put":
                        txn.put(change.key, change.value, db=handle)
                    elif change.kind == "delete":
                        txn.delete(change.key, change.value or b"", db=handle)
                    else:
                        txn.drop(handle, delete=False)
            with copy.begin() as txn:
                assert {name: _contents(txn, h) for name, h in made.items()} == expected
        finally:
            copy.close()

    asyncio.run(run())


def test_trim_deletes_at_most_limit_per_transaction(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "raw"), max_dbs=4)
    try:
        log_db = env.open_db(b"__aiolmdb_changes__")
        meta = env.open_db(b"__aiolmdb__")
        with env.begin(write=True) as txn:
            for seq in range(1, 2501):
                txn.put(seq.to_bytes(8, "big"), _records.encode(1, b"a", b"k", b"", 0), db=log_db)
        retention = Retention(entries=0)
        steps = []
        for _ in range(4):
            with env.begin(write=True) as txn:
                steps.append(_trim.trim(txn, log_db, meta, retention, 1000))
        assert steps == [1000, 1000, 500, 0]
        with env.begin() as txn:
            assert _records.last_seq(txn, log_db, meta) == 2500  # kept as the trimmed mark
    finally:
        env.close()


async def test_database_info_while_the_log_is_created(tmp_path: Path) -> None:
    """Listing databases on a reader thread while the writer creates the log (first open with
    changelog=True of an existing environment) leaves the log's handle intact: a read
    transaction that began before the log's handle was opened must not open handles, nor free
    one the writer shares (the log's cursor once read another database's keys)."""
    for attempt in range(12):
        path = tmp_path / f"env{attempt}"
        async with aiolmdb.open(path, map_size=MAP_SIZE) as env:
            await env.open_db("notes", versioned=True).put(b"old", b"1")
        async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True) as env:
            info = await env.database_info("notes")
            assert info is not None
            notes = await env.open_db("notes", versioned=True)
            await env.open_db("tags")
            assert [c async for c in env.changes(since=0, follow=False)] == []
            await notes.put(b"new", b"2")
            [change] = [c async for c in env.changes(since=0, follow=False)]
            assert (change.seq, change.db, change.key) == (1, "notes", b"new")


_GIVE_IT_A_LOG = """
import asyncio, sys
import aiolmdb

async def main() -> None:
    async with aiolmdb.open(sys.argv[1], changelog=True, map_size=int(sys.argv[2])) as env:
        await env.open_db("c").put(b"other", b"1")

asyncio.run(main())
"""


@pytest.mark.parametrize("versioned", [False, True], ids=["plain", "with-metadata"])
async def test_writes_refused_once_another_process_adds_a_log(
    tmp_path: Path, versioned: bool
) -> None:
    """A process that opened the environment without changelog=True before it had a log: once
    another process gives it one, each of its write transactions is refused (a group commit,
    env.run, an exclusive transaction, deleting a database); reads go on."""
    path = tmp_path / "env"
    async with aiolmdb.open(path, map_size=MAP_SIZE) as env:
        db = env.open_db("a", versioned=versioned)
        await db.put(b"before", b"1")
        doomed = env.open_db("b")
        await doomed.put(b"k", b"v")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _GIVE_IT_A_LOG, str(path), str(MAP_SIZE)
        )
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
        with pytest.raises(ValueError, match=r"aiolmdb.open\(path, changelog=True\)"):
            await db.put(b"after", b"2")
        with pytest.raises(ValueError, match="refused"):
            await db.put_multi([(b"m1", b"1"), (b"m2", b"2")])
        with pytest.raises(ValueError, match="refused"):
            await env.run(lambda txn: txn.put(b"x", b"y"), write=True)
        with pytest.raises(ValueError, match="refused"):
            async with env.begin(write=True) as txn:
                await txn[db].put(b"t", b"1")
        with pytest.raises(ValueError, match="refused"):
            await doomed.drop(delete=True)
        assert await db.get(b"before") == b"1"
        for key in (b"after", b"m1", b"t"):
            assert await db.get(key) is None
        assert await doomed.get(b"k") == b"v"
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True) as env:
        changes = [c async for c in env.changes(0, follow=False)]
        assert [(c.db, c.key) for c in changes] == [("c", b"other")]


# ----------------------------------------------------------------- impossible positions
async def test_since_beyond_the_end_is_refused(open_env: OpenEnv) -> None:
    """A position past the log's last sequence number (a restored environment, another
    environment's position) is refused at the first read, naming the last sequence; the last
    sequence itself is caught up."""
    env = open_env(changelog=True)
    with pytest.raises(aiolmdb.ChangesPositionError) as empty:
        await env.changes(since=1).start()  # an empty log's end is 0
    assert empty.value.last_seq == 0
    assert [c async for c in env.changes(since=0, follow=False)] == []
    db = env.open_db("a")
    await db.put_multi([(b"k%d" % i, b"v") for i in range(3)])
    assert [c async for c in env.changes(since=3, follow=False)] == []
    assert await env.changes(since=3).start() == 3
    for refuse in (
        lambda: take(env.changes(since=4), 1),
        lambda: env.changes(since=4, follow=False).start(),
        lambda: take(env.changes(since=1000, db="a", prefix=b"k"), 1),
    ):
        with pytest.raises(aiolmdb.ChangesPositionError) as caught:
            await refuse()
        assert caught.value.last_seq == 3
        assert caught.value.log_id == await env.changelog_id()
        message = str(caught.value)
        assert "last sequence number is 3" in message
        assert "restored" in message
        assert "another environment" in message
    assert isinstance(caught.value, ValueError)


async def test_a_trimmed_log_ends_at_its_high_water_mark(open_env: OpenEnv) -> None:
    """Retention may empty the log: its end is then the highest number trimmed."""
    env = open_env(changelog=True, changelog_retention=Retention(entries=0))
    db = env.open_db("a")
    await db.put_multi([(b"%04d" % i, b"v") for i in range(300)])  # queues a trim
    await env.run(lambda txn: None, write=True)  # trim steps run between writes
    assert [c async for c in env.changes(since=300, follow=False)] == []
    with pytest.raises(aiolmdb.ChangesPositionError, match="last sequence number is 300"):
        await env.changes(since=301).start()


async def test_a_restored_copy_refuses_the_followers_position(tmp_path: Path) -> None:
    """A follower stored (log_id, seq); the environment is restored from an older copy: the
    copy keeps the log's identity, and its position beyond the copy's end is refused."""
    path, backup = tmp_path / "env", tmp_path / "backup"
    backup.mkdir()
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True) as env:
        db = env.open_db("a")
        await db.put(b"1", b"v")
        await env.copy(backup, compact=True)
        await db.put_multi([(b"2", b"v"), (b"3", b"v")])
        feed = env.changes(since=0, follow=False)
        assert len([c async for c in feed]) == 3
        position = (feed.log_id, feed.last_seq)
        assert position[0] == await env.changelog_id()
    async with aiolmdb.open(backup, map_size=MAP_SIZE, changelog=True) as env:
        assert await env.changelog_id() == position[0]
        with pytest.raises(aiolmdb.ChangesPositionError, match="last sequence number is 1"):
            await env.changes(since=position[1], log_id=position[0]).start()


async def test_log_identity(tmp_path: Path) -> None:
    """Each log has its own random identity, kept across opens, on the feed from its first
    read; a position with another log's identity is refused."""
    ids = []
    for name in ("one", "two"):
        async with aiolmdb.open(tmp_path / name, map_size=MAP_SIZE, changelog=True) as env:
            ids.append(await env.changelog_id())
            await env.get_default_database().put(b"k", b"v")
    one, two = ids
    assert one is not None
    assert two is not None
    assert one != two
    assert len(bytes.fromhex(one)) == 16
    async with aiolmdb.open(tmp_path / "one", map_size=MAP_SIZE, readonly=True) as env:
        assert await env.changelog_id() == one
        feed = env.changes(since=0, follow=False)
        unread = feed.log_id
        assert unread is None  # not read yet
        assert [c.key async for c in feed] == [b"k"]
        assert feed.log_id == one
        started = env.changes(since=1, log_id=one.upper())
        assert await started.start() == 1
        assert started.log_id == one
        with pytest.raises(aiolmdb.ChangesPositionError) as caught:
            await take(env.changes(since=0, log_id=two), 1)
        assert (caught.value.last_seq, caught.value.log_id) == (1, one)
        assert one in str(caught.value)
        assert two in str(caught.value)
        assert "another change log" in str(caught.value)
        with pytest.raises(TypeError, match="log_id"):
            env.changes(log_id=bytes.fromhex(one))  # type: ignore[arg-type]
    async with aiolmdb.open(tmp_path / "none", map_size=MAP_SIZE) as env:
        with pytest.raises(ValueError, match="no change log"):
            await env.changelog_id()


async def test_a_log_older_than_identities_gets_one_when_opened_for_writing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "env"
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True) as env:
        await env.get_default_database().put(b"k", b"v")
    raw = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=4)
    with raw.begin(write=True) as txn:  # as an older aiolmdb left it
        assert txn.delete(b"changelog_id", db=raw.open_db(b"__aiolmdb__", txn=txn))
    raw.close()
    async with aiolmdb.open(path, map_size=MAP_SIZE, readonly=True) as env:
        assert await env.changelog_id() is None
        feed = env.changes(since=0, follow=False)
        assert len([c async for c in feed]) == 1
        assert feed.log_id is None
        with pytest.raises(aiolmdb.ChangesPositionError, match="another change log"):
            await env.changes(since=1, log_id="00" * 16).start()
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True) as env:
        made = await env.changelog_id()
        assert made is not None
        assert len(bytes.fromhex(made)) == 16
        await env.get_default_database().put(b"k2", b"v")
        assert [c.seq async for c in env.changes(since=0, follow=False)] == [1, 2]
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True) as env:
        assert await env.changelog_id() == made


# ----------------------------------------------------------------- damaged records
_HEAD = _records.HEAD
_HEAD1 = _records.HEAD1


def _encode1(kind: int, name: bytes | None, key: bytes, value: bytes, ts: int) -> bytes:
    """A record as an aiolmdb older than commit boundaries wrote it."""
    size = 0xFFFF if name is None else len(name)
    return _HEAD1.pack(ts, kind, size, len(key)) + (name or b"") + key + value


def _consistent(raw: bytes, change: Change, ts: int) -> bool:
    """Whether ``change`` is exactly what ``raw`` stores: encoding it again gives ``raw``."""
    _, code, name_len, _ = _HEAD1.unpack_from(raw)
    head = _HEAD if code & _records.FORMAT2 else _HEAD1
    name = None if name_len == 0xFFFF else raw[head.size : head.size + name_len]
    if change.db != _records.db_label(name):
        return False
    key = b"" if change.key is None else bytes(change.key)
    value = b"" if change.value is None else bytes(change.value)
    if head is _HEAD1:
        return _encode1(code, name, key, value, ts) == raw
    offset, flags = _HEAD.unpack_from(raw)[4:]
    kind = code & ~_records.FORMAT2
    return _records.encode(kind, name, key, value, ts, offset, flags) == raw


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "shorter than its 13-byte header"),
        (_HEAD1.pack(1, 1, 1, 1)[:-1], "shorter than its 13-byte header"),
        (_HEAD1.pack(1, 9, 0xFFFF, 1) + b"k", "kind 9"),
        (_HEAD1.pack(1, 0, 0xFFFF, 1) + b"k", "kind 0"),
        (_HEAD1.pack(1, _records.PUT_VALUE, 5, 1) + b"ab", "name length 5"),
        (_HEAD1.pack(1, _records.PUT_VALUE, 0, 1) + b"kv", "name length 0"),
        (_HEAD1.pack(1, _records.PUT_VALUE, 1, 4) + b"ak", "key length 4"),
        (_HEAD1.pack(1, _records.DELETE, 0xFFFF, 0), "key length 0"),
        (_HEAD1.pack(1, _records.PUT, 0xFFFF, 1) + b"kv", "carries no value"),
        (_HEAD1.pack(1, _records.DROP, 1, 1) + b"ak", "a drop carries no key"),
        (_HEAD1.pack(1, _records.DROP, 1, 0) + b"ax", "a drop carries no key"),
        # delete_db exists only in records that carry commit boundaries
        (_HEAD1.pack(1, _records.DELETE_DB, 1, 0) + b"a", "kind 6"),
        # this format's header: commit offset and flags
        (_HEAD.pack(1, 0x82, 0xFFFF, 1, 0, 0)[:-1], "shorter than its 19-byte header"),
        (_HEAD.pack(1, 0x87, 0xFFFF, 1, 0, 0) + b"k", "kind 135"),
        (_HEAD.pack(1, 0x82, 0xFFFF, 1, 42, 0) + b"kv", "offset 42"),
        (_HEAD.pack(1, 0x82, 0xFFFF, 1, 2**32 - 1, 0) + b"kv", f"offset {2**32 - 1}"),
        (_HEAD.pack(1, 0x86, 0xFFFF, 0, 0, 0), "deletes the default database"),
        (_HEAD.pack(1, 0x86, 1, 1, 0, 0) + b"ak", "a delete_db carries no key"),
        (_HEAD.pack(1, 0x85, 1, 0, 0, 0) + b"ax", "a drop carries no key"),
    ],
)
def test_damaged_records_raise_naming_their_sequence(raw: bytes, why: str) -> None:
    with pytest.raises(aiolmdb.ChangeRecordError) as caught:
        _records.decode(42, raw)
    assert caught.value.seq == 42
    assert "change log record 42 is damaged" in str(caught.value)
    assert why in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("kind", "name", "key", "value"),
    [
        (_records.PUT_VALUE, b"db", b"key", b"value"),
        (_records.PUT_VALUE, None, b"k", b""),
        (_records.PUT, b"db", b"key", b""),
        (_records.DELETE, None, b"key", b""),
        (_records.DELETE_VALUE, b"d", b"k", b"v"),
        (_records.DROP, b"db", b"", b""),
        (_records.DROP, None, b"", b""),
        (_records.DELETE_DB, b"db", b"", b""),
    ],
)
@pytest.mark.parametrize("old", [False, True])
def test_valid_records_decode_exactly(
    kind: int, name: bytes | None, key: bytes, value: bytes, old: bool
) -> None:
    if old and kind == _records.DELETE_DB:
        return  # only in this format
    raw = (
        _encode1(kind, name, key, value, 7)
        if old
        else _records.encode(kind, name, key, value, 7, 2, 0xFFFF)
    )
    record = _records.decode_record(3, raw)
    change, ts = record.change, record.ts
    assert ts == 7
    assert (record.first, record.flags) == ((None, None) if old else (1, 0xFFFF))
    assert _consistent(raw, change, ts)
    for cut in range(len(raw)):  # truncating a record never yields another change silently
        if cut < len(raw) - len(value) or kind not in (_records.PUT_VALUE, _records.DELETE_VALUE):
            with pytest.raises(aiolmdb.ChangeRecordError) as caught:
                _records.decode(3, raw[:cut])
            assert caught.value.seq == 3
        else:
            shorter, _ = _records.decode(3, raw[:cut])
            assert kind in (_records.PUT_VALUE, _records.DELETE_VALUE)
            assert cut >= len(raw) - len(value)  # only the value can lose bytes unseen
            assert shorter.key == change.key
            assert shorter.db == change.db


_RECORD = st.tuples(
    st.sampled_from(sorted(_records.KIND_NAMES)),
    st.one_of(st.none(), st.binary(min_size=1, max_size=6)),
    st.binary(min_size=1, max_size=6),
    st.binary(max_size=6),
)


@st.composite
def _hostile(draw: st.DrawFn) -> bytes:
    """A record's bytes: random, or a valid record cut, extended, or with a header byte
    changed."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=40))
    kind, name, key, value = draw(_RECORD)
    if kind in (_records.DROP, _records.DELETE_DB):
        key = value = b""
    elif kind in (_records.PUT, _records.DELETE):
        value = b""
    ts = draw(st.integers(0, 2**64 - 1))
    old = kind != _records.DELETE_DB and draw(st.booleans())
    raw = (
        _encode1(kind, name, key, value, ts)
        if old
        else _records.encode(
            kind, name, key, value, ts, draw(st.integers(0, 3)), draw(st.integers(0, 0xFFFF))
        )
    )
    damage = draw(st.sampled_from(["cut", "extend", "header"]))
    if damage == "cut":
        return raw[: draw(st.integers(0, len(raw)))]
    if damage == "extend":
        return raw + draw(st.binary(min_size=1, max_size=4))
    # kind, name length, key length (and commit offset, flags)
    at = draw(st.integers(8, (_HEAD1 if old else _HEAD).size - 1))
    return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=st.lists(_hostile(), min_size=1, max_size=30))
def test_fuzzed_records_in_the_log(
    tmp_path_factory: pytest.TempPathFactory, records: list[bytes]
) -> None:
    """Hostile records written into ``__aiolmdb_changes__`` through raw py-lmdb: a follower
    gets, for each, the Change its bytes store exactly, or ChangeRecordError naming its
    sequence; never struct.error, KeyError or a wrong Change."""
    path = tmp_path_factory.mktemp("fuzz")

    async def create() -> None:
        async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True):
            pass

    asyncio.run(create())
    raw_env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=4)
    with raw_env.begin(write=True) as txn:
        log = raw_env.open_db(b"__aiolmdb_changes__", txn=txn)
        for seq, raw in enumerate(records, 1):
            txn.put(_records.SEQ.pack(seq), raw, db=log)
    raw_env.close()

    async def follow() -> None:
        async with aiolmdb.open(path, map_size=MAP_SIZE, readonly=True) as env:
            for seq, raw in enumerate(records, 1):
                feed = env.changes(since=seq - 1, follow=False)
                try:
                    change = await anext(feed)
                except aiolmdb.ChangeRecordError as exc:
                    damaged = exc
                else:
                    assert change.seq == seq
                    assert _consistent(raw, change, _HEAD1.unpack_from(raw)[0]), (raw, change)
                    continue
                assert damaged.seq == seq
                assert f"change log record {seq} is damaged" in str(damaged)

    asyncio.run(follow())


def test_the_changes_before_a_damaged_record_come_first(tmp_path: Path) -> None:
    """A damaged record ends the chunk before it: the follower gets the good change, then
    ChangeRecordError naming the damaged record's sequence."""
    path = tmp_path / "env"

    async def create() -> None:
        async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True):
            pass

    asyncio.run(create())
    raw_env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=4)
    with raw_env.begin(write=True) as txn:
        log = raw_env.open_db(b"__aiolmdb_changes__", txn=txn)
        good = _records.encode(_records.PUT_VALUE, None, b"k", b"v", 5)
        txn.put(_records.SEQ.pack(1), good, db=log)
        txn.put(_records.SEQ.pack(2), b"\x00", db=log)
    raw_env.close()

    async def follow() -> None:
        async with aiolmdb.open(path, map_size=MAP_SIZE, readonly=True) as env:
            feed = env.changes(since=0, follow=False)
            first = await anext(feed)
            assert (first.seq, first.key, first.value) == (1, b"k", b"v")
            with pytest.raises(aiolmdb.ChangeRecordError) as caught:
                await anext(feed)
            assert caught.value.seq == 2

    asyncio.run(follow())


# ----------------------------------------------------------------- other processes' commits
# Another process's logged write, as aiolmdb's recorder makes it (the change and its record in
# one transaction), through py-lmdb alone: it starts in tens of milliseconds.
_LOGGED_WRITE = """
import sys, lmdb
from aiolmdb._store.records import PUT_VALUE, SEQ, encode

env = lmdb.open(sys.argv[1], map_size=int(sys.argv[2]), max_dbs=8)
with env.begin(write=True) as txn:
    log = env.open_db(b"__aiolmdb_changes__", txn=txn)
    cur = txn.cursor(log)
    seq = SEQ.unpack(cur.key())[0] + 1 if cur.last() else 1
    txn.put(b"other", b"1", db=env.open_db(b"c", txn=txn))
    txn.put(SEQ.pack(seq), encode(PUT_VALUE, b"c", b"other", b"1", 0), db=log)
env.close()
"""


async def test_a_caught_up_follower_sees_another_process_commit(tmp_path: Path) -> None:
    """A follower waiting, caught up, is woken only by this process's commits; another
    process's commit reaches it through the poll of LMDB's last transaction id (within
    POLL_INTERVAL, bounded here to 2 s after the other process has exited)."""
    path = tmp_path / "env"
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True) as env:
        await env.open_db("c").put(b"mine", b"0")
        feed = env.changes()
        await feed.start()
        caught_up = threading.Event()
        read = feed._read

        def spy(*args: Any) -> Any:
            found = read(*args)
            if found is not None and not found[0]:
                caught_up.set()  # a read found nothing new: the follower will wait
            return found

        feed._read = spy  # type: ignore[method-assign,assignment]
        follower = asyncio.ensure_future(anext(feed))
        assert await asyncio.to_thread(caught_up.wait, TIMEOUT)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _LOGGED_WRITE, str(path), str(MAP_SIZE)
        )
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
        change = await asyncio.wait_for(follower, 2.0)
        assert (change.seq, change.db, change.key, change.value) == (2, "c", b"other", b"1")
