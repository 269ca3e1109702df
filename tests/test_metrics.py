"""Environment.metrics(): the engine's counters, histograms and gauges (issue 16)."""

from __future__ import annotations

import asyncio
import math

import pytest
from conftest import TIMEOUT, OpenEnv, WriterBlocker, gather_bounded, let_tasks_start, threaded_only

import aiolmdb
from aiolmdb import Histogram
from aiolmdb._engine.metrics import BATCH_SIZE_BOUNDS, Buckets

MiB = 1 << 20


async def test_writes_batches_and_commits(open_env: OpenEnv) -> None:
    env = open_env()
    db = env.get_default_database()
    start = env.metrics()
    assert (start.writes, start.write_batches, start.commits) == (0, 0, 0)
    async with WriterBlocker(env) as blocker:  # the 20 puts queue up: one batch
        puts = [asyncio.ensure_future(db.put(b"k%02d" % i, b"v")) for i in range(20)]
        await let_tasks_start()
        await let_tasks_start()  # the loop iteration's writes were handed to the queue
        assert env.metrics().write_queue == 20
        blocker.release_after_pending_tasks()
    await gather_bounded(*puts)
    m = env.metrics()
    assert m.write_queue == 0
    assert m.writes == 21  # the blocker's write, then the 20 puts
    assert m.write_batches == 2
    assert m.commits == 2
    sizes = m.write_batch_sizes
    assert sizes.count == 2
    assert sizes.sum == 21
    assert sizes.counts[BATCH_SIZE_BOUNDS.index(1.0)] == 1  # the blocker alone
    assert sizes.counts[BATCH_SIZE_BOUNDS.index(32.0)] == 1  # 16 < 20 <= 32
    assert m.commit_seconds.count == 2
    assert m.commit_seconds.sum > 0


@threaded_only
async def test_batched_reads(open_env: OpenEnv) -> None:
    env = open_env()
    db = env.get_default_database()
    await db.put(b"k", b"v")
    assert await gather_bounded(*(db.get(b"k") for _ in range(30))) == [b"v"] * 30
    m = env.metrics()
    assert m.reads == 30
    assert m.inline_read_transactions == 0
    assert 1 <= m.read_batches <= 30
    assert m.read_batch_sizes.count == m.read_batches
    assert m.read_batch_sizes.sum == 30
    assert m.read_queue == 0


@threaded_only  # it sets inline_reads=True itself
async def test_inline_reads(open_env: OpenEnv) -> None:
    env = open_env(inline_reads=True)
    db = env.get_default_database()
    await db.put(b"k", b"v")
    for _ in range(5):
        assert await db.get(b"k") == b"v"
        await asyncio.sleep(0)  # the next loop iteration: the transaction has ended
    reads = await asyncio.gather(*(db.get(b"k") for _ in range(5)))  # one loop iteration
    assert reads == [b"v"] * 5
    m = env.metrics()
    assert m.inline_read_transactions == 6  # one per loop iteration that read
    assert m.reads == 0  # not counted one by one
    assert m.read_batches == 0
    assert await db.get(b"k") == b"v"
    assert env.metrics().read_transactions == 1  # reused until this loop iteration ends
    await asyncio.sleep(0)
    assert env.metrics().read_transactions == 0


async def test_conflicts(open_env: OpenEnv) -> None:
    env = open_env()
    db = await env.open_db("v", versioned=True)
    await db.put(b"k", b"1")
    entry = await db.get_entry(b"k")
    assert entry is not None
    assert await db.put(b"k", b"2", if_version=entry.version + 5) is False
    with pytest.raises(aiolmdb.ConflictError):
        await db.put(b"k", b"2", if_version=entry.version + 5, raise_on_conflict=True)
    assert await db.delete(b"k", if_version=entry.version + 5) is False
    assert await db.put(b"k", b"2", if_version=entry.version) is True  # holds: no conflict
    assert await db.put(b"other", b"x", overwrite=False) is True
    plain = await env.open_db("p")
    await plain.put(b"k", b"a")
    assert await plain.put(b"k", b"b", if_value=b"zzz") is False
    assert env.metrics().conflicts == 4
    async with env.begin(write=True) as txn:  # counted in a write transaction too
        assert await txn[plain].put(b"k", b"b", if_value=b"zzz") is False
    assert env.metrics().conflicts == 5


async def test_conflicts_in_run_come_back_with_its_result(open_env: OpenEnv) -> None:
    """run(fn, write=True): the conflicts met by fn's views come back with its result; one
    raised out of fn counts once (not by the view and again by the engine)."""
    env = open_env()
    db = await env.open_db("p")
    await db.put(b"k", b"a")

    def met_two(txn: aiolmdb.Transaction[bytes, bytes]) -> str:
        assert txn.put(b"k", b"b", if_value=b"zzz") is False
        with pytest.raises(aiolmdb.ConflictError):  # caught by fn: still a conflict
            txn[db].put(b"k", b"b", if_value=b"zzz", raise_on_conflict=True)
        assert txn.put(b"k", b"b", if_value=b"a") is True  # holds: no conflict
        return "done"

    assert await db.run(met_two, write=True) == "done"
    assert env.metrics().conflicts == 2

    def raises(txn: aiolmdb.Transaction[bytes, bytes]) -> None:
        txn.put(b"k", b"c", if_value=b"zzz", raise_on_conflict=True)

    with pytest.raises(aiolmdb.ConflictError):
        await db.run(raises, write=True)
    assert env.metrics().conflicts == 3
    assert await db.get(b"k") == b"b"


@pytest.mark.parametrize("writemap", [False, True], ids=["nested", "writemap"])
async def test_conflicts_counted_once_when_a_batch_runs_again(
    open_env: OpenEnv, writemap: bool
) -> None:
    """A batch that fills the map runs again after the growth (and, with writemap, again
    without an operation that failed): each conflict still counts once."""
    env = open_env(map_size=MiB, writemap=writemap)
    db = await env.open_db("p")
    await db.put(b"k", b"a")
    async with WriterBlocker(env) as blocker:
        ops = [db.put(b"k", b"b", if_value=b"zzz") for _ in range(3)]
        ops.append(db.put(b"bad", b"x", if_value=b"zzz", overwrite=False))  # ValueError
        ops += [db.put(b"big%02d" % i, b"x" * 100_000) for i in range(15)]  # > 1 MiB
        tasks = [asyncio.ensure_future(op) for op in ops]
        blocker.release_after_pending_tasks()
    results = await gather_bounded(*tasks)
    assert results[:3] == [False] * 3
    assert isinstance(results[3], ValueError)
    m = env.metrics()
    assert m.map_resizes >= 1
    assert m.map_size == env.info()["map_size"] > MiB
    assert m.conflicts == 3


async def test_write_transactions_and_gauges(open_env: OpenEnv) -> None:
    env = open_env()
    db = env.get_default_database()
    async with env.begin(write=True) as txn:
        await txn[db].put(b"k", b"v")
        assert env.metrics().open_write_transactions == 1
    async with env.begin(write=True) as txn:  # nothing written: rolled back, no commit
        await txn[db].get(b"k")
        await txn.abort()
    m = env.metrics()
    assert m.write_transactions == 2
    assert m.commits == 1
    assert m.open_write_transactions == 0
    assert m.read_transactions == 0
    async with env.begin() as snap:
        assert await snap[db].get(b"k") == b"v"
        held = env.metrics()
        assert held.reader_slots_used >= 1  # the snapshot's slot (not a gate's count)
    assert held.max_readers == env.lmdb_environment.max_readers()
    assert env.metrics().map_resizes == 0
    assert env.metrics().map_size == env.info()["map_size"]


async def test_metrics_of_a_closed_environment(open_env: OpenEnv) -> None:
    env = open_env()
    await asyncio.wait_for(env.close(), TIMEOUT)
    with pytest.raises(aiolmdb.ClosedError):
        env.metrics()


def test_histogram_quantiles() -> None:
    buckets = Buckets((1.0, 10.0, 100.0))
    for value in (0.5, 1.0, 5.0, 5.0, 50.0, 500.0):
        buckets.observe(value)
    h = buckets.snapshot()
    assert h.counts == (2, 2, 1, 1)  # upper bounds are inclusive
    assert h.count == 6
    assert h.sum == 561.5
    assert h.mean == pytest.approx(561.5 / 6)
    assert h.quantile(0.0) == 1.0
    assert h.quantile(1 / 3) == 1.0
    assert h.quantile(0.5) == 10.0
    assert h.quantile(5 / 6) == 100.0
    assert math.isinf(h.quantile(1.0))
    with pytest.raises(ValueError, match="between 0 and 1"):
        h.quantile(1.5)
    empty = Histogram((1.0,), (0, 0), 0, 0.0)
    assert (empty.quantile(0.9), empty.mean) == (0.0, 0.0)
    merged = buckets.snapshot(buckets)
    assert merged.counts == (4, 4, 2, 2)
    assert merged.sum == 1123.0
