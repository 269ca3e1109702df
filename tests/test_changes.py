"""The change log (changelog=True), env.changes() and env.on_commit."""

from __future__ import annotations

import asyncio
import datetime
import logging
import sys
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


async def test_deleting_a_database_is_one_drop(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    db = env.open_db("gone")
    await db.put_multi([(b"%d" % i, b"v") for i in range(50)])
    await db.drop()
    again = env.open_db("gone")
    await again.put(b"new", b"1")
    changes = await take(env.changes(50), 2)
    assert plain(changes) == [("gone", None, "drop", None), ("gone", b"new", "put", b"1")]


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
