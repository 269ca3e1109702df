"""The change log by whole commits (env.commits()), the records' commit boundaries and flags,
emptying against deleting a database, env.last_seq() and changes(db=name)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lmdb
import pytest
from conftest import MAP_SIZE, TIMEOUT, OpenEnv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiolmdb
from aiolmdb import Change, Commit, Retention
from aiolmdb._cli.commands import main
from aiolmdb._store import records as _records
from aiolmdb._store import trim as _trim
from aiolmdb.coders import JSONCoder, StringCoder


async def take(feed: aiolmdb.CommitFeed, count: int) -> list[Commit]:
    """The next ``count`` commits of a feed (bounded wait)."""

    async def run() -> list[Commit]:
        out: list[Commit] = []
        async for commit in feed:
            out.append(commit)
            if len(out) == count:
                break
        return out

    return await asyncio.wait_for(run(), TIMEOUT)


async def every(env: aiolmdb.Environment, since: int = 0) -> list[Commit]:
    return [c async for c in env.commits(since, follow=False)]


def seqs(commits: Sequence[Commit]) -> list[list[int | None]]:
    return [[change.seq for change in commit.changes] for commit in commits]


def hooked(env: aiolmdb.Environment) -> list[list[int | None]]:
    """The sequence numbers of each commit of this process, as on_commit sees them (one call
    per top-level write transaction that changed something)."""
    seen: list[list[int | None]] = []
    env.on_commit(lambda changes: seen.append([c.seq for c in changes]))
    return seen


# ----------------------------------------------------------------- commits as LMDB commits
async def test_single_puts_are_one_commit_each(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    db = env.open_db("a")
    for i in range(3):
        await db.put(b"k%d" % i, b"v%d" % i)
    commits = await every(env)
    assert [(c.first, c.last, c.partial) for c in commits] == [
        (1, 1, False),
        (2, 2, False),
        (3, 3, False),
    ]
    assert [c.changes for c in commits] == [
        (Change(i + 1, "a", b"k%d" % i, "put", b"v%d" % i),) for i in range(3)
    ]
    assert all(c.databases == {"a": frozenset()} for c in commits)
    assert commits[0].timestamp <= commits[1].timestamp <= commits[2].timestamp
    assert abs(commits[2].timestamp - time.time()) < 60


async def test_a_group_commit_is_one_commit(open_env: OpenEnv) -> None:
    """Writes awaited together share one LMDB transaction (group commit): the feed yields
    exactly the transactions the writer committed, each whole, while it follows them live."""
    env = open_env(changelog=True)
    db = env.open_db("a")
    await db.put(b"first", b"0")
    seen = hooked(env)
    feed = env.commits()
    await feed.start()
    follower = asyncio.ensure_future(take(feed, 1))
    await asyncio.gather(*(db.put(b"k%d" % i, b"%d" % i) for i in range(200)))
    [commit] = await follower
    more = await take(feed, len(seen) - 1) if len(seen) > 1 else []
    commits = [commit, *more]
    assert seqs(commits) == seen
    assert sum(map(len, seen)) == 200
    assert len(seen[0]) > 1  # a real group: many writers in one transaction
    for c in commits:
        assert (c.first, c.last) == (c.changes[0].seq, c.changes[-1].seq)
        assert not c.partial
    assert feed.last_seq == 201


async def test_put_multi_and_a_multi_database_transaction(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    a = env.open_db("a")
    dup = env.open_db("d", dupsort=True, dupfixed=True)
    rev = env.open_db("r", reverse_key=True)
    ver = env.open_db("v", versioned=True)
    seen = hooked(env)
    await a.put_multi([(b"%04d" % i, b"x") for i in range(700)])  # > one chunk of the feed
    async with env.begin(write=True) as txn:
        await txn[a].put(b"t", b"1")
        await txn[dup].put(b"p", b"q")
        await txn[rev].put(b"r", b"2")
        await txn[ver].put(b"v", b"3")
        await txn[a].delete(b"0000")
    commits = await every(env)
    assert seqs(commits) == seen
    big, multi = commits
    assert (big.first, big.last, len(big.changes)) == (1, 700, 700)
    assert big.databases == {"a": frozenset()}
    assert [(c.db, c.kind) for c in multi.changes] == [
        ("a", "put"),
        ("d", "put"),
        ("r", "put"),
        ("v", "put"),
        ("a", "delete"),
    ]
    assert multi.databases == {
        "a": frozenset(),
        "d": {"dupsort", "dupfixed"},
        "r": {"reverse_key"},
        "v": {"versioned"},
    }
    # Values as stored: a versioned value keeps its version header, byte for byte.
    stored = multi.changes[3].value
    entry = await ver.get_entry(b"v")
    assert entry is not None
    assert stored[-1:] == b"3"
    assert len(stored) == 9
    assert int.from_bytes(stored[:8], "big") == entry.version
    # A position at a commit boundary resumes exactly there.
    assert seqs(await every(env, big.last)) == [seqs([multi])[0]]


async def test_the_flags_follow_the_database(open_env: OpenEnv) -> None:
    """Every record carries its database's flags, as DatabaseInfo lists them; the default
    database's too; a database known to hold large values says so from then on."""
    env = open_env(changelog=True)
    main = env.get_default_database()
    ints = env.open_db("i", integerkey=True, dupsort=True, integerdup=True, dupfixed=True)
    big = env.open_db("big")
    await main.put(b"m", b"1")
    await ints.put((1).to_bytes(8, sys.byteorder), (2).to_bytes(8, sys.byteorder))
    await big.put(b"small", b"1")
    await big.put(b"large", b"x" * (1 << 20))
    await big.put(b"after", b"1")
    commits = await every(env)
    info = await env.database_info("i")
    assert info is not None
    assert commits[1].databases == {"i": info.flags}
    assert info.flags == {"integerkey", "dupsort", "integerdup", "dupfixed"}
    assert commits[0].databases == {None: frozenset()}
    assert commits[2].databases == {"big": frozenset()}
    assert commits[4].databases == {"big": {"large_values"}}


# ----------------------------------------------------------------- emptying and deleting
async def test_emptying_and_deleting_are_distinct_records_with_flags(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    seen: list[Change] = []
    env.on_commit(seen.extend)
    dup = env.open_db("d", dupsort=True)
    ver = env.open_db("v", versioned=True)
    await dup.put(b"k", b"1")
    await dup.drop(delete=False)  # emptied: the database stays
    await ver.put(b"k", b"1")
    await ver.drop()  # deleted
    commits = await every(env)
    assert [(c.changes[0].db, c.changes[0].kind, dict(c.databases)) for c in commits] == [
        ("d", "put", {"d": frozenset({"dupsort"})}),
        ("d", "drop", {"d": frozenset({"dupsort"})}),
        ("v", "put", {"v": frozenset({"versioned"})}),
        ("v", "delete_db", {"v": frozenset({"versioned"})}),
    ]
    assert all(len(c.changes) == 1 for c in commits)
    assert [(c.db, c.key, c.kind, c.value) for c in seen if c.kind != "put"] == [
        ("d", None, "drop", None),
        ("v", None, "delete_db", None),
    ]
    # What a replica needs: a database made again under the name with other flags says so.
    again = env.open_db("v", dupsort=True)
    await again.put(b"k", b"a")
    [last] = await every(env, commits[-1].last)
    assert last.databases == {"v": {"dupsort"}}
    # A change feed filtered by prefix keeps both kinds of whole-database changes.
    kinds = [c.kind async for c in env.changes(0, prefix=b"zz", follow=False)]
    assert kinds == ["drop", "delete_db"]


async def test_deleting_as_the_first_write_reaches_on_commit(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    seen: list[Change] = []
    env.on_commit(seen.extend)
    x = env.open_db("x")
    await x
    await x.drop()
    assert seen == [Change(1, "x", None, "delete_db", None)]


# ----------------------------------------------------------------- trimmed and old logs
def _raw_log(path: Path) -> tuple[lmdb.Environment, Any, Any]:
    raw = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=8)
    return raw, raw.open_db(b"__aiolmdb_changes__"), raw.open_db(b"__aiolmdb__")


async def test_a_commit_whose_start_was_trimmed_is_partial(tmp_path: Path) -> None:
    path = tmp_path / "env"
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True) as env:
        db = env.open_db("a")
        await db.put_multi([(b"%d" % i, b"v") for i in range(10)])  # 1-10
        await db.put(b"z", b"1")  # 11
    raw, log_db, meta = _raw_log(path)
    try:
        with raw.begin(write=True) as txn:  # retention keeping 7 cuts the first commit
            assert _trim.trim(txn, log_db, meta, Retention(entries=7), 1000) == 4
    finally:
        raw.close()
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True) as env:
        with pytest.raises(aiolmdb.ChangesTrimmedError):
            await every(env, 0)
        first, second = await every(env, 4)
        assert (first.first, first.last, first.partial) == (1, 10, True)
        assert [c.seq for c in first.changes] == list(range(5, 11))
        assert (second.first, second.last, second.partial) == (11, 11, False)
        # A position inside a commit: the same.
        inside = await every(env, 7)
        assert [(c.first, c.partial, len(c.changes)) for c in inside] == [
            (1, True, 3),
            (11, False, 1),
        ]
        # The boundary resumes whole commits.
        assert [c.partial for c in await every(env, 10)] == [False]


def _old(kind: int, name: bytes | None, key: bytes, value: bytes, ts: int) -> bytes:
    """A record as an aiolmdb older than commit boundaries wrote it."""
    size = 0xFFFF if name is None else len(name)
    return _records.HEAD1.pack(ts, kind, size, len(key)) + (name or b"") + key + value


async def test_old_records_are_grouped_by_commit_time(tmp_path: Path) -> None:
    """Records of an older aiolmdb carry no boundaries: consecutive ones with the same commit
    time (shared by every record of a transaction) form one commit. A new record never joins
    them."""
    path = tmp_path / "env"
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True):
        pass
    raw, log_db, _ = _raw_log(path)
    P, D = _records.PUT_VALUE, _records.DROP
    records = [
        _old(P, b"a", b"k1", b"1", 5),
        _old(P, None, b"k2", b"2", 5),
        _old(D, b"a", b"", b"", 6),
        _records.encode(P, b"a", b"k3", b"3", 6, 0, 0),  # new format, same time: its own
        _records.encode(P, b"a", b"k4", b"4", 6, 1, 0),
        _old(P, b"a", b"k5", b"5", 6),  # old again (another, older process)
    ]
    try:
        with raw.begin(write=True) as txn:
            for seq, record in enumerate(records, 1):
                txn.put(_records.SEQ.pack(seq), record, db=log_db)
    finally:
        raw.close()
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True) as env:
        commits = await every(env)
        assert [(c.first, c.last, c.partial, c.databases) for c in commits] == [
            (1, 2, False, {}),
            (3, 3, False, {}),
            (4, 5, False, {"a": frozenset()}),
            (6, 6, False, {}),
        ]
        assert commits[1].changes == (Change(3, "a", None, "drop", None),)
        assert commits[0].timestamp == 5e-6
        # New writes continue after them, with boundaries.
        await env.open_db("a").put_multi([(b"x", b"1"), (b"y", b"2")])
        [new] = await every(env, 6)
        assert (new.first, new.last) == (7, 8)


async def test_unknown_flag_bits_are_kept(tmp_path: Path) -> None:
    """A record written by a later aiolmdb, with a flag bit this one has no name for: read as
    ``flag<N>``, which names the same bit back."""
    path = tmp_path / "env"
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True):
        pass
    raw, log_db, _ = _raw_log(path)
    bits = _records.FLAG_BITS["dupsort"] | 1 << 8 | 1 << 15
    try:
        with raw.begin(write=True) as txn:
            record = _records.encode(_records.PUT_VALUE, b"a", b"k", b"v", 1, 0, bits)
            txn.put(_records.SEQ.pack(1), record, db=log_db)
    finally:
        raw.close()
    async with aiolmdb.open(path, map_size=MAP_SIZE, readonly=True) as env:
        [commit] = await every(env)
    assert commit.databases == {"a": frozenset({"dupsort", "flag8", "flag15"})}
    assert _records.flags_of(commit.databases["a"]) == bits
    assert _records.flags_of(["flag16", "flagx", "unknown"]) == 0  # not a bit of a record


async def test_a_record_outside_its_commit_is_damaged(tmp_path: Path) -> None:
    """A record claiming a commit that began before the previous record's commit: the commits
    before it are yielded, then ChangeRecordError names it."""
    path = tmp_path / "env"
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True):
        pass
    raw, log_db, _ = _raw_log(path)
    P = _records.PUT_VALUE
    try:
        with raw.begin(write=True) as txn:
            for seq, offset in ((1, 0), (2, 0), (3, 2)):
                record = _records.encode(P, b"a", b"k%d" % seq, b"v", 1, offset, 0)
                txn.put(_records.SEQ.pack(seq), record, db=log_db)
    finally:
        raw.close()
    async with aiolmdb.open(path, map_size=MAP_SIZE, readonly=True) as env:
        feed = env.commits(0, follow=False)
        assert [c.first async for c in _until_error(feed)] == [1, 2]
        with pytest.raises(aiolmdb.ChangeRecordError) as caught:
            await anext(feed)
        assert caught.value.seq == 3
        assert "change log record 3 is damaged" in str(caught.value)
        assert feed.last_seq == 2


async def _until_error(feed: aiolmdb.CommitFeed) -> Any:
    while True:
        try:
            commit = await anext(feed)
        except aiolmdb.ChangeRecordError:
            return
        yield commit


# ----------------------------------------------------------------- other processes
_OTHER = """
import asyncio, sys
import aiolmdb

async def main() -> None:
    async with aiolmdb.open(sys.argv[1], changelog=True, map_size=int(sys.argv[2])) as env:
        a, b = env.open_db("a"), env.open_db("b", dupsort=True)
        async with env.begin(write=True) as txn:
            await txn[a].put(b"x", b"1")
            await txn[b].put(b"y", b"2")
            await txn[b].put(b"y", b"3")
        await a.put(b"z", b"4")

asyncio.run(main())
"""


async def test_another_process_commits_carry_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "env"
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True) as env:
        await env.open_db("a").put(b"mine", b"0")
        feed = env.commits()
        await feed.start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _OTHER, str(path), str(MAP_SIZE)
        )
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
        multi, single = await take(feed, 2)
        assert (multi.first, multi.last) == (2, 4)
        assert [(c.db, c.key, c.value) for c in multi.changes] == [
            ("a", b"x", b"1"),
            ("b", b"y", b"2"),
            ("b", b"y", b"3"),
        ]
        assert multi.databases == {"a": frozenset(), "b": {"dupsort"}}
        assert (single.first, single.last) == (5, 5)
        assert await env.last_seq() == 5


# ----------------------------------------------------------------- last_seq
async def test_last_seq(open_env: OpenEnv, tmp_path: Path) -> None:
    env = open_env(changelog=True, changelog_retention=Retention(entries=0))
    assert await env.last_seq() == 0
    db = env.open_db("a")
    await db.put_multi([(b"a", b"1"), (b"b", b"2")])
    last = await env.last_seq()
    assert last >= 2  # retention may already have trimmed them: numbers still grow
    await db.put(b"c", b"3")
    assert await env.last_seq() == 3
    feed = env.changes(since=await env.last_seq())
    await db.put(b"d", b"4")
    [change] = [c async for c in _first(feed)]
    assert change.seq == 4
    plain = open_env()
    with pytest.raises(ValueError, match="has no change log"):
        await plain.last_seq()
    await env.close()
    with pytest.raises(aiolmdb.ClosedError):
        await env.last_seq()


async def _first(feed: aiolmdb.ChangeFeed) -> Any:
    yield await asyncio.wait_for(anext(feed), TIMEOUT)


# ----------------------------------------------------------------- changes(db=...)
async def test_changes_of_a_database_that_does_not_exist(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    await env.open_db("exists").put(b"k", b"v")
    with pytest.raises(ValueError, match="no database named 'nope'") as caught:
        await anext(env.changes(0, db="nope"))
    assert "env.open_db('nope')" in str(caught.value)
    with pytest.raises(ValueError, match="no database named 'nope'"):
        await env.changes(db="nope").start()
    with pytest.raises(ValueError, match="no database named 'k'"):
        await env.changes(db="k").start()  # a plain key of the default database
    # A database this process has just asked for is waited for, not refused.
    fresh = env.open_db("fresh")
    feed = env.changes(db="fresh")
    await feed.start()
    await fresh.put(b"k", b"1")
    assert (await asyncio.wait_for(anext(feed), TIMEOUT)).key == b"k"
    # A database deleted meanwhile: its name is refused from then on.
    await fresh.drop()
    with pytest.raises(ValueError, match="no database named 'fresh'"):
        await env.changes(0, db="fresh").start()


async def test_the_name_yields_bytes_and_the_handle_decodes(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    docs = env.open_db("docs", key_coder=StringCoder(), value_coder=JSONCoder())
    await docs.put("d1", {"n": 1})
    by_name = [c async for c in env.changes(0, db="docs", follow=False)]
    by_handle = [c async for c in env.changes(0, db=docs, follow=False)]
    assert [(c.key, c.value) for c in by_name] == [(b"d1", JSONCoder().serialize({"n": 1}))]
    assert [(c.key, c.value) for c in by_handle] == [("d1", {"n": 1})]
    # Both forms say so in help().
    doc = aiolmdb.Environment.changes.__doc__ or ""
    assert "raw stored bytes" in doc
    assert "its coders decode keys and values" in doc


async def test_commits_arguments(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    with pytest.raises(ValueError, match="since must be an int"):
        env.commits(-1)
    with pytest.raises(TypeError, match="log_id must be a str"):
        env.commits(0, log_id=b"x")  # type: ignore[arg-type]
    await env.open_db("a").put(b"k", b"v")
    with pytest.raises(aiolmdb.ChangesPositionError):
        await env.commits(5).start()
    identity = await env.changelog_id()
    assert identity is not None
    with pytest.raises(aiolmdb.ChangesPositionError):
        await env.commits(0, log_id="00" * 16).start()
    feed = env.commits(0, log_id=identity.upper(), follow=False)
    assert await feed.start() == 0
    assert [c.first async for c in feed] == [1]
    assert (feed.last_seq, feed.log_id) == (1, identity)
    assert await env.commits().start() == 1
    plain = open_env()
    with pytest.raises(ValueError, match="has no change log"):
        await anext(plain.commits())


async def test_close_ends_a_commit_follower(open_env: OpenEnv) -> None:
    env = open_env(changelog=True)
    feed = env.commits()
    await feed.start()
    follower = asyncio.ensure_future(take(feed, 1))
    await env.open_db("a").put(b"k", b"v")
    [commit] = await follower
    assert commit.first == 1
    waiting = asyncio.ensure_future(take(feed, 1))
    await env.close()
    assert await asyncio.wait_for(waiting, TIMEOUT) == []


# ----------------------------------------------------------------- dump and load
async def _lifecycle(path: Path) -> None:
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True, max_dbs=8) as env:
        a, dup = env.open_db("a"), env.open_db("d", dupsort=True)
        gone = env.open_db("gone", versioned=True)
        async with env.begin(write=True) as txn:
            await txn[a].put(b"k", b"v")
            await txn[dup].put(b"p", b"1")
            await txn[gone].put(b"g", b"1")
        await dup.drop(delete=False)
        await gone.drop()
        await a.put_multi([(b"x", b"1"), (b"y", b"2")])


def _commits_of(path: Path) -> list[Commit]:
    async def read() -> list[Commit]:
        async with aiolmdb.open(path, map_size=MAP_SIZE, readonly=True, max_dbs=8) as env:
            return await every(env)

    return asyncio.run(read())


def test_dump_and_load_keep_commits_and_lifecycle_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, target, dump = tmp_path / "env", tmp_path / "loaded", tmp_path / "all.dump"
    asyncio.run(_lifecycle(path))
    before = _commits_of(path)
    assert [[c.kind for c in commit.changes] for commit in before] == [
        ["put", "put", "put"],
        ["drop"],
        ["delete_db"],
        ["put", "put"],
    ]
    assert main(["dump", "--all", "-o", str(dump), str(path)]) == 0
    assert main(["load", str(target), str(dump)]) == 0
    assert _commits_of(target) == before
    # A damaged record in a dump is refused, naming its sequence number.
    raw, log_db, _ = _raw_log(path)
    try:
        with raw.begin(write=True) as txn:
            record = _records.encode(_records.PUT_VALUE, b"a", b"k", b"v", 1, 9, 0)
            txn.put(_records.SEQ.pack(8), record, db=log_db)  # offset 9 >= 8
    finally:
        raw.close()
    capsys.readouterr()
    assert main(["dump", "--all", "-o", str(dump), str(path)]) == 0
    assert main(["load", str(tmp_path / "again"), str(dump)]) != 0
    err = capsys.readouterr().err
    assert "cannot restore the change log" in err
    assert "change log record 8 is damaged" in err


# ----------------------------------------------------------------- an invariant across processes
_TRANSFERS = """
import asyncio, sys
import aiolmdb

async def main() -> None:
    who, count = sys.argv[3], int(sys.argv[4])
    async with aiolmdb.open(sys.argv[1], changelog=True, map_size=int(sys.argv[2])) as env:
        accounts, audit = env.open_db("accounts"), env.open_db("audit", dupsort=True)

        def transfer(txn: aiolmdb.Transaction[bytes, bytes], n: int) -> None:
            src, dst = b"%s-src-%d" % (who.encode(), n), b"%s-dst-%d" % (who.encode(), n)
            txn[accounts].put(src, b"-1")
            txn[accounts].put(dst, b"+1")
            txn[audit].put(b"t", src + b">" + dst)

        await asyncio.gather(
            *(env.run(lambda txn, n=n: transfer(txn, n), write=True) for n in range(count))
        )

asyncio.run(main())
"""


async def test_commits_of_concurrent_writers_in_two_processes_stay_whole(
    tmp_path: Path,
) -> None:
    """Two processes run transfers concurrently (each a write transaction over two databases,
    many of them per group commit): every commit the follower gets holds whole transfers, and
    every transfer arrives exactly once."""
    path = tmp_path / "env"
    count = 60
    async with aiolmdb.open(path, map_size=MAP_SIZE, changelog=True) as env:
        env.open_db("accounts")
        env.open_db("audit", dupsort=True)
        feed = env.commits()
        await feed.start()
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", _TRANSFERS, str(path), str(MAP_SIZE), who, str(count)
            )
            for who in ("p", "q")
        ]
        transfers: list[bytes] = []
        grouped = False

        async def follow() -> None:
            nonlocal grouped
            async for commit in feed:
                assert not commit.partial
                audits = [c.value for c in commit.changes if c.db == "audit"]
                moved = {c.key: c.value for c in commit.changes if c.db == "accounts"}
                assert len(moved) == 2 * len(audits), commit
                for line in audits:
                    src, dst = line.split(b">")
                    assert (moved[src], moved[dst]) == (b"-1", b"+1")
                assert commit.databases == {
                    "accounts": frozenset(),
                    "audit": frozenset({"dupsort"}),
                }
                grouped = grouped or len(audits) > 1
                transfers.extend(audits)
                if len(transfers) == 2 * count:
                    return

        follower = asyncio.ensure_future(follow())
        for proc in procs:
            assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
        await asyncio.wait_for(follower, TIMEOUT)
        assert len(set(transfers)) == 2 * count
        assert grouped  # a group commit held several transfers
        assert feed.last_seq == await env.last_seq() == 6 * count


# ----------------------------------------------------------------- model: replaying commits
_NAMES = st.sampled_from(["x", "y"])
_K = st.sampled_from([b"a", b"b", b"c"])
_V = st.sampled_from([b"1", b"2", b"3"])
_FLAGS = st.sampled_from([{}, {"dupsort": True}, {"reverse_key": True}])
_SIMPLE = st.one_of(
    st.tuples(st.just("put"), _NAMES, _K, _V),
    st.tuples(st.just("delete"), _NAMES, _K),
    st.tuples(st.just("put_multi"), _NAMES, st.lists(st.tuples(_K, _V), max_size=3)),
    st.tuples(st.just("empty"), _NAMES),
    st.tuples(st.just("both"), _K, _V, st.booleans()),  # one transaction over x and y
)
_GROUP = st.one_of(
    st.lists(_SIMPLE, min_size=1, max_size=4),  # run concurrently: group commits
    st.tuples(st.just("recreate"), _NAMES, _FLAGS).map(lambda op: [op]),  # deleted, made anew
)


async def _run_op(env: aiolmdb.Environment, dbs: dict[str, Any], op: tuple[Any, ...]) -> Any:
    kind = op[0]
    if kind == "put":
        return await dbs[op[1]].put(op[2], op[3])
    if kind == "delete":
        return await dbs[op[1]].delete(op[2])
    if kind == "put_multi":
        return await dbs[op[1]].put_multi(op[2])
    if kind == "empty":
        return await dbs[op[1]].drop(delete=False)
    if kind == "both":
        x, y = dbs["x"], dbs["y"]

        def fn(txn: aiolmdb.Transaction[bytes, bytes]) -> None:
            txn[x].put(op[1], op[2])
            txn[y].put(op[1], op[2] + b"y")
            if op[3]:
                raise RuntimeError("roll back")

        return await env.run(fn, write=True)
    await dbs[op[1]].drop()
    dbs[op[1]] = env.open_db(op[1], **op[2])
    return await dbs[op[1]]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(groups=st.lists(_GROUP, max_size=8))
def test_replaying_commits_gives_the_store_and_its_flags(
    tmp_path_factory: pytest.TempPathFactory, groups: list[list[tuple[Any, ...]]]
) -> None:
    """Random writes (concurrent groups, transactions over two databases, some rolled back,
    databases emptied, deleted and made again with other flags): the commits are exactly the
    transactions on_commit saw, and applying each commit in one transaction to an empty
    environment, creating each database with the flags its records carry, gives the same
    databases with the same flags and contents."""
    path = tmp_path_factory.mktemp("commits")

    async def run() -> tuple[list[Commit], dict[str, tuple[frozenset[str], list[Any]]]]:
        async with aiolmdb.open(path, map_size=MAP_SIZE, sync=False, changelog=True) as env:
            dbs: dict[str, Any] = {"x": env.open_db("x"), "y": env.open_db("y")}
            seen = hooked(env)
            for group in groups:
                await asyncio.gather(
                    *(_run_op(env, dbs, op) for op in group), return_exceptions=True
                )
            commits = await every(env)
            assert seqs(commits) == seen
            store = {}
            for name, db in dbs.items():
                info = await env.database_info(name)
                assert info is not None
                store[name] = (info.flags, [pair async for pair in db.items()])
            return commits, store

    commits, store = asyncio.run(run())
    replica = lmdb.open(str(path) + "-replica", max_dbs=8)
    try:
        made: dict[str | None, Any] = {}
        flags_of: dict[str | None, frozenset[str]] = {}
        for commit in commits:
            with replica.begin(write=True) as txn:
                for name, flags in commit.databases.items():
                    if name not in made:
                        assert name is not None
                        wanted = {f: True for f in flags if f in ("dupsort", "reverse_key")}
                        made[name] = replica.open_db(name.encode(), txn=txn, **wanted)
                    flags_of[name] = flags
                for change in commit.changes:
                    handle = made[change.db]
                    if change.kind == "put":
                        txn.put(change.key, change.value, db=handle)
                    elif change.kind == "delete":
                        txn.delete(change.key, change.value or b"", db=handle)
                    elif change.kind == "drop":
                        txn.drop(handle, delete=False)
                    else:
                        assert change.kind == "delete_db"
                        txn.drop(made.pop(change.db), delete=True)
        for name, (flags, contents) in store.items():
            if name in made:
                assert flags_of[name] == flags
                with replica.begin() as txn:
                    stored = made[name].flags(txn)
                    assert {f for f, on in stored.items() if on} == set(flags)
                    got = [(bytes(k), bytes(v)) for k, v in txn.cursor(made[name])]
                assert got == contents
            else:
                assert contents == []  # never written: a database appears with its first write
    finally:
        replica.close()
