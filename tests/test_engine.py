"""The engine: concurrency, batching, cancellation, closing, map growth, writemap, threads.

Batches are made deterministic without timing: a :class:`WriterBlocker` holds the writer thread
(or a blocked one-thread executor holds the readers) while operations queue up, and is released
by a callback that the event loop runs only after every task created before it has submitted
its operation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import pytest
from conftest import (
    TIMEOUT,
    WriterBlocker,
    aiolmdb_threads,
    gather_bounded,
    let_tasks_start,
    threaded_only,
    wait_until,
)

import aiolmdb
from aiolmdb import AsyncDatabase, ClosedError, Environment, InvalidKeyError, Transaction

Db = AsyncDatabase[bytes, bytes]
OpenEnv = Callable[..., Environment]
MiB = 1024 * 1024


def key(i: int) -> bytes:
    return b"key%06d" % i


def value(i: int, size: int = 0) -> bytes:
    base = b"value%06d" % i
    return base * max(1, size // len(base))


# --------------------------------------------------------------------------------------------
# concurrency
# --------------------------------------------------------------------------------------------


async def test_thousands_of_concurrent_puts_then_gets(db: Db) -> None:
    n = 5000
    puts = await gather_bounded(*(db.put(key(i), value(i)) for i in range(n)))
    assert puts == [True] * n
    gets = await gather_bounded(*(db.get(key(i)) for i in range(n)))
    assert gets == [value(i) for i in range(n)]
    assert await db.count() == n
    multi = await db.get_multi(key(i) for i in range(0, n, 7))
    assert multi == {key(i): value(i) for i in range(0, n, 7)}


async def test_concurrent_mixed_operations(env: Environment, db: Db) -> None:
    other = env.open_db("other")
    await db.put_multi((key(i), value(i)) for i in range(1000))
    ops: list[Any] = []
    for i in range(1000):
        ops.append(db.get(key(i)))
        ops.append(other.put(key(i), value(i)))
        ops.append(db.replace(key(i), b"new"))
    results = await gather_bounded(*ops)
    assert results[1::3] == [True] * 1000
    assert results[2::3] == [value(i) for i in range(1000)]
    # Each get ran before or after the replace of its key, never anything else.
    assert all(r in (value(i), b"new") for i, r in enumerate(results[0::3]))
    assert await other.count() == 1000
    assert set((await db.get_multi(key(i) for i in range(1000))).values()) == {b"new"}


def explode(old: bytes | None) -> bytes:
    raise ZeroDivisionError("from update")


BAD_OPS: dict[str, Callable[[Db], Any]] = {
    "bad-value-type": lambda d: d.put(b"bad", "text"),  # type: ignore[arg-type]
    "bad-key-type": lambda d: d.put(12345, b"v"),  # type: ignore[arg-type]
    "empty-key": lambda d: d.put(b"", b"v"),
    "long-key": lambda d: d.put(b"x" * 4096, b"v"),
    "put_multi": lambda d: d.put_multi([(b"bad", b"v"), (b"", b"v")]),
    "run-raises": lambda d: d.run(lambda t: [t.put(b"bad", b"v"), 1 / 0], write=True),
    "update-raises": lambda d: d.update(b"bad", explode),
}
BAD_ERRORS: dict[str, type[BaseException]] = {
    "bad-value-type": TypeError,
    "bad-key-type": TypeError,
    "empty-key": InvalidKeyError,
    "long-key": InvalidKeyError,
    "put_multi": InvalidKeyError,
    "run-raises": ZeroDivisionError,
    "update-raises": ZeroDivisionError,
}


@pytest.mark.parametrize("kind", list(BAD_OPS))
@pytest.mark.parametrize("writemap", [False, True], ids=["nested", "writemap"])
async def test_bad_operation_in_a_batch_fails_alone(
    open_env: OpenEnv, kind: str, writemap: bool
) -> None:
    env = open_env(writemap=writemap)
    db = env.get_default_database()
    n, bad_at = 300, 137
    async with WriterBlocker(env) as blocker:
        tasks = [
            asyncio.ensure_future(BAD_OPS[kind](db) if i == bad_at else db.put(key(i), value(i)))
            for i in range(n)
        ]
        blocker.release_after_pending_tasks()  # all of them form one batch
        results = await gather_bounded(*tasks)
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [bad_at]
    assert isinstance(results[bad_at], BAD_ERRORS[kind])
    assert all(r is True for i, r in enumerate(results) if i != bad_at)
    stored = await db.get_multi(key(i) for i in range(n))
    assert stored == {key(i): None if i == bad_at else value(i) for i in range(n)}
    assert await db.get(b"bad") is None
    assert await db.count() == n - 1


async def test_failing_run_is_rolled_back_while_neighbours_commit(db: Db) -> None:
    env = db.environment
    ids: list[int] = []
    error = ValueError("rolled back")

    def failing(txn: Transaction[bytes, bytes]) -> None:
        ids.append(txn.id())
        txn.put(b"a", b"from failing run")
        txn.delete(b"keep")
        raise error

    def neighbour(i: int) -> Callable[[Transaction[bytes, bytes]], int]:
        def fn(txn: Transaction[bytes, bytes]) -> int:
            txn.put(key(i), value(i))
            return txn.id()

        return fn

    await db.put(b"keep", b"kept")
    async with WriterBlocker(env) as blocker:
        before = [asyncio.ensure_future(db.run(neighbour(i), write=True)) for i in range(5)]
        bad = asyncio.ensure_future(db.run(failing, write=True))
        after = [asyncio.ensure_future(db.put(key(i), value(i))) for i in range(5, 10)]
        blocker.release_after_pending_tasks()
        results = await gather_bounded(*before, bad, *after)
    assert results[5] is error
    assert results[6:] == [True] * 5
    # One batch: the failing run and its neighbours saw the same write transaction.
    assert set(results[:5]) == set(ids)
    assert await db.get_multi([b"a", b"keep"]) == {b"a": None, b"keep": b"kept"}
    assert await db.get_multi(key(i) for i in range(10)) == {key(i): value(i) for i in range(10)}


async def test_concurrent_coder_errors_reach_only_their_caller(env: Environment) -> None:
    docs = env.open_db("docs", key_coder=aiolmdb.StringCoder(), value_coder=aiolmdb.JSONCoder())
    values: list[Any] = [{"i": i} for i in range(200)]
    values[50] = {1, 2}  # not JSON
    values[150] = object()
    results = await gather_bounded(*(docs.put(f"k{i}", v) for i, v in enumerate(values)))
    assert [i for i, r in enumerate(results) if isinstance(r, BaseException)] == [50, 150]
    assert all(isinstance(results[i], TypeError) for i in (50, 150))
    reads = await gather_bounded(*(docs.get(f"k{i}") for i in range(200)))
    assert reads == [None if i in (50, 150) else {"i": i} for i in range(200)]
    # A value that cannot be decoded fails only its reader.
    await env.open_db("docs").put(b"k7", b"not json")
    reads = await gather_bounded(*(docs.get(f"k{i}") for i in range(5, 10)))
    assert isinstance(reads[2], ValueError)
    assert reads[:2] + reads[3:] == [{"i": 5}, {"i": 6}, {"i": 8}, {"i": 9}]


class UndecodableCoder(aiolmdb.Coder[bytes]):
    """Stores bytes; decoding always fails (on the worker thread, inside the transaction)."""

    def serialize(self, obj: bytes) -> bytes:
        return obj

    def deserialize(self, buffer: Any) -> bytes:
        raise ValueError("cannot decode this value")


async def test_kept_errors_of_failed_reads_hold_no_reader_slot(open_env: OpenEnv) -> None:
    """py-lmdb frees a read transaction's reader slot only with its Transaction object, which
    the frames in a traceback would keep alive: an application keeping the exceptions of
    failed reads (logging them, say) must not run out of reader slots. Each kind of read
    fails 3x more often than there are slots, then plain reads still work."""
    env = open_env(max_readers=4)
    db = env.get_default_database()
    await db.put_multi([(b"k%d" % i, b"v") for i in range(100)])
    bad = env.open_db(None, value_coder=UndecodableCoder())
    kept: list[BaseException] = []

    async def scan() -> None:
        async for _ in bad.items(batch_size=10):
            pass

    async def in_snapshot() -> None:
        async with env.begin() as snap:
            await snap[bad].get(b"k1")

    for fails in (lambda: bad.get(b"k1"), lambda: bad.get_multi([b"k1", b"k2"]), scan):
        for _ in range(12):
            with pytest.raises(ValueError, match="cannot decode") as info:
                await asyncio.wait_for(fails(), TIMEOUT)
            kept.append(info.value)
            assert await asyncio.wait_for(db.get(b"k1"), TIMEOUT) == b"v"
    for _ in range(12):
        with pytest.raises(ValueError, match="cannot decode") as info:
            await asyncio.wait_for(in_snapshot(), TIMEOUT)
        kept.append(info.value)
    assert await asyncio.wait_for(db.count(), TIMEOUT) == 100
    # The tracebacks still say where each error came from.
    assert all("deserialize" in "".join(traceback.format_exception(e)) for e in kept)


@threaded_only
async def test_a_full_reader_table_is_logged_once_per_wait(
    open_env: OpenEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """Reads that find LMDB's reader table full wait for a slot this process frees; the wait
    is logged once (WARNING, naming max_readers), not once per read or per retry."""
    env = open_env(max_readers=1)
    db = env.get_default_database()
    await db.put(b"k", b"v")
    with caplog.at_level(logging.WARNING, logger="aiolmdb"):
        async with env.begin() as snap:  # holds the only slot
            assert await snap[db].get(b"k") == b"v"
            reads = [asyncio.ensure_future(db.get(b"k")) for _ in range(8)]

            def warned() -> bool:
                return any("reader table is full" in r.getMessage() for r in caplog.records)

            assert await asyncio.to_thread(wait_until, warned)
        assert await asyncio.wait_for(asyncio.gather(*reads), TIMEOUT) == [b"v"] * 8
    full = [r for r in caplog.records if "reader table is full" in r.getMessage()]
    assert len(full) == 1
    assert full[0].levelno == logging.WARNING
    assert "max_readers=1" in full[0].getMessage()
    assert env.metrics().readers_full_waits == 1  # counted as logged: once per wait


# --------------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("max_batch", "batches"), [(1024, 1), (64, 4), (1, 200)])
async def test_writes_are_group_committed(open_env: OpenEnv, max_batch: int, batches: int) -> None:
    env = open_env(max_batch=max_batch)
    db = env.get_default_database()

    def write(i: int) -> Callable[[Transaction[bytes, bytes]], int]:
        def fn(txn: Transaction[bytes, bytes]) -> int:
            txn.put(key(i), value(i))  # a commit with changes advances the transaction ID
            return txn.id()

        return fn

    async with WriterBlocker(env) as blocker:
        tasks = [asyncio.ensure_future(db.run(write(i), write=True)) for i in range(200)]
        blocker.release_after_pending_tasks()
        ids = await gather_bounded(*tasks)
    assert all(isinstance(i, int) for i in ids)
    int_ids = [i for i in ids if isinstance(i, int)]
    # Every operation of a batch runs in a child of the batch's transaction (same ID), and
    # each batch commits once: the number of distinct IDs is the number of commits.
    assert len(set(int_ids)) == batches
    assert int_ids == sorted(int_ids)  # FIFO
    assert await db.count() == 200


@threaded_only  # inline reads run on the loop: nothing to batch
@pytest.mark.parametrize(("max_batch", "batches"), [(1024, 1), (50, 4), (1, 200)])
async def test_reads_share_transactions(open_env: OpenEnv, max_batch: int, batches: int) -> None:
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="test-reader")
    env = open_env(executor=executor, max_batch=max_batch)
    try:
        db = env.get_default_database()
        await db.put(b"k", b"v")
        hold = threading.Event()
        executor.submit(hold.wait, TIMEOUT)  # the only reader thread waits behind this

        # Every read runs on the single reader thread, one after the other: count how often
        # the transaction changes. Holding the previous one keeps its id from being reused.
        previous: list[lmdb.Transaction | None] = [None]
        transactions = 0

        def read(txn: Transaction[bytes, bytes]) -> bytes | None:
            nonlocal transactions
            if txn.raw is not previous[0]:
                transactions += 1
                previous[0] = txn.raw
            return txn.get(b"k")

        tasks = [asyncio.ensure_future(db.run(read)) for _ in range(200)]
        asyncio.get_running_loop().call_soon(hold.set)  # after every task has submitted
        assert await gather_bounded(*tasks) == [b"v"] * 200
        assert transactions == batches
    finally:
        await env.close()
        executor.shutdown(wait=True)


async def test_max_batch_one(open_env: OpenEnv) -> None:
    env = open_env(max_batch=1)
    db = env.get_default_database()
    assert await gather_bounded(*(db.put(key(i), value(i)) for i in range(300))) == [True] * 300
    assert await gather_bounded(*(db.get(key(i)) for i in range(300))) == [
        value(i) for i in range(300)
    ]
    assert await db.put_multi({b"a": b"1", b"b": b"2"}) == 2
    assert await db.run(lambda t: t.get(b"a"), write=True) == b"1"
    assert await db.count() == 302


# --------------------------------------------------------------------------------------------
# read-your-writes
# --------------------------------------------------------------------------------------------


def txn_get(k: bytes, txn: Transaction[bytes, bytes]) -> bytes | None:
    return txn.get(k)


async def test_read_your_writes(env: Environment, db: Db) -> None:
    stop = False

    async def background_reader() -> int:
        # Keeps read transactions (inline: the loop iteration's reused one) busy all along.
        reads = 0
        while not stop:
            await db.get(b"noise")
            await let_tasks_start()
            reads += 1
        return reads

    async def writer(w: int) -> None:
        for i in range(100):
            k = b"w%d-%d" % (w, i)
            assert await db.put(k, b"%d" % i)
            assert await db.get(k) == b"%d" % i
            assert await db.get_multi([k]) == {k: b"%d" % i}
            assert await db.run(functools.partial(txn_get, k)) == b"%d" % i
            await db.delete(k)
            assert await db.get(k) is None

    reader = asyncio.ensure_future(background_reader())
    try:
        results = await gather_bounded(*(writer(w) for w in range(4)))
        assert results == [None] * 4
    finally:
        stop = True
        assert await asyncio.wait_for(reader, TIMEOUT) > 0


# --------------------------------------------------------------------------------------------
# cancellation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_batch", [1024, 1])
async def test_write_cancelled_before_it_runs_is_skipped(open_env: OpenEnv, max_batch: int) -> None:
    # With max_batch=1 each cancelled write is a batch of its own, with nothing left to run.
    env = open_env(max_batch=max_batch)
    db = env.get_default_database()
    called: list[int] = []

    def never(txn: Transaction[bytes, bytes]) -> None:
        called.append(1)
        txn.put(b"from-run", b"x")

    async with WriterBlocker(env):
        cancelled_put = asyncio.ensure_future(db.put(b"cancelled", b"x"))
        cancelled_run = asyncio.ensure_future(db.run(never, write=True))
        control = asyncio.ensure_future(db.put(b"control", b"x"))
        await let_tasks_start()  # all three are queued behind the blocker now
        cancelled_put.cancel()
        cancelled_run.cancel()
    # The control write was queued after the cancelled ones: once it is done, so are they.
    assert await asyncio.wait_for(control, TIMEOUT) is True
    for task in (cancelled_put, cancelled_run):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert called == []
    assert await db.get_multi([b"cancelled", b"from-run", b"control"]) == {
        b"cancelled": None,
        b"from-run": None,
        b"control": b"x",
    }


@threaded_only  # an inline read runs at once: it cannot be cancelled before it starts
@pytest.mark.parametrize("max_batch", [1024, 1])
async def test_read_cancelled_before_it_runs_is_skipped(open_env: OpenEnv, max_batch: int) -> None:
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="test-reader")
    env = open_env(executor=executor, max_batch=max_batch)
    try:
        db = env.get_default_database()
        hold = threading.Event()
        executor.submit(hold.wait, TIMEOUT)
        called: list[int] = []
        cancelled = asyncio.ensure_future(db.run(lambda t: called.append(1)))
        control = asyncio.ensure_future(db.run(lambda t: "ran"))
        await let_tasks_start()
        cancelled.cancel()
        hold.set()
        assert await asyncio.wait_for(control, TIMEOUT) == "ran"
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert called == []
    finally:
        await env.close()
        executor.shutdown(wait=True)


@pytest.mark.parametrize("write", [True, False], ids=["write", "read"])
async def test_cancelled_while_running_completes(db: Db, write: bool) -> None:
    started = threading.Event()
    release = threading.Event()
    if not write:
        await db.put(b"k", b"v")

    def slow(txn: Transaction[bytes, bytes]) -> str:
        if write:
            txn.put(b"k", b"v")
        started.set()
        if not release.wait(TIMEOUT):
            raise TimeoutError
        return "done"

    task = asyncio.ensure_future(db.run(slow, write=write))
    assert await asyncio.to_thread(started.wait, TIMEOUT)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, TIMEOUT)
    # Writes are FIFO: when this one is committed, so is the cancelled one.
    assert await db.put(b"after", b"1")
    assert await db.get(b"k") == b"v"


async def test_cancel_one_of_many(db: Db) -> None:
    env = db.environment
    async with WriterBlocker(env):
        tasks = [asyncio.ensure_future(db.put(key(i), value(i))) for i in range(100)]
        await let_tasks_start()
        for i in range(0, 100, 10):
            tasks[i].cancel()
    results = await gather_bounded(*tasks)
    for i, r in enumerate(results):
        if i % 10 == 0:
            assert isinstance(r, asyncio.CancelledError)
        else:
            assert r is True
    stored = await db.get_multi(key(i) for i in range(100))
    assert stored == {key(i): None if i % 10 == 0 else value(i) for i in range(100)}


@threaded_only  # a reader thread runs the batch (inline reads run on the loop)
async def test_read_cancelled_while_its_batch_runs(open_env: OpenEnv) -> None:
    """One read of a batch is cancelled while it runs: the reads after it in the same batch
    (same transaction, results delivered together) still get their results."""
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="test-reader")
    env = open_env(executor=executor)
    try:
        db = env.get_default_database()
        await db.put_multi([(key(i), value(i)) for i in range(20)])
        hold = threading.Event()
        executor.submit(hold.wait, TIMEOUT)  # the reads below queue up: one batch
        started = threading.Event()
        release = threading.Event()

        def slow(txn: Transaction[bytes, bytes]) -> int:
            started.set()
            if not release.wait(TIMEOUT):
                raise TimeoutError
            return txn.id()

        def txn_id(txn: Transaction[bytes, bytes]) -> int:
            return txn.id()

        before = [asyncio.ensure_future(db.get(key(i))) for i in range(10)]
        victim = asyncio.ensure_future(db.run(slow))
        after = [asyncio.ensure_future(db.get(key(i))) for i in range(10, 20)]
        ids = [asyncio.ensure_future(db.run(txn_id)) for _ in range(3)]
        multi = asyncio.ensure_future(db.get_multi([key(0), b"missing"]))
        await let_tasks_start()
        hold.set()
        assert await asyncio.to_thread(started.wait, TIMEOUT)
        victim.cancel()
        release.set()
        assert await gather_bounded(*before, *after) == [value(i) for i in range(20)]
        assert await gather_bounded(multi) == [{key(0): value(0), b"missing": None}]
        assert len(set(await gather_bounded(*ids))) == 1  # the batch was one transaction
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(victim, TIMEOUT)
        assert await db.get(key(0)) == value(0)  # the reader thread is fine
    finally:
        await env.close()
        executor.shutdown(wait=True)


async def test_write_cancelled_while_its_batch_runs(env: Environment, db: Db) -> None:
    """One write of a batch is cancelled while it runs: it completes (its result is dropped)
    and every other write of the batch gets its result after the one commit."""
    started = threading.Event()
    release = threading.Event()

    def slow(txn: Transaction[bytes, bytes]) -> int:
        txn.put(b"cancelled-but-ran", b"1")
        started.set()
        if not release.wait(TIMEOUT):
            raise TimeoutError
        return txn.id()

    def txn_id(txn: Transaction[bytes, bytes]) -> int:
        return txn.id()

    async with WriterBlocker(env) as blocker:
        before = [asyncio.ensure_future(db.put(key(i), value(i))) for i in range(10)]
        victim = asyncio.ensure_future(env.run(slow, write=True))
        after = [asyncio.ensure_future(db.put(key(i), value(i))) for i in range(10, 20)]
        replaced = asyncio.ensure_future(db.replace(key(0), b"new"))
        ids = [asyncio.ensure_future(env.run(txn_id, write=True)) for _ in range(3)]
        await let_tasks_start()
        blocker.release()
        assert await asyncio.to_thread(started.wait, TIMEOUT)
        victim.cancel()
        release.set()
    assert await gather_bounded(*before, *after) == [True] * 20
    assert await gather_bounded(replaced) == [value(0)]
    batch_ids = await gather_bounded(*ids)
    assert len(set(batch_ids)) == 1  # one batch, one commit
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(victim, TIMEOUT)
    assert await db.get(b"cancelled-but-ran") == b"1"  # started, so it completed
    assert await db.get_multi(key(i) for i in range(1, 20)) == {
        key(i): value(i) for i in range(1, 20)
    }


# --------------------------------------------------------------------------------------------
# closing
# --------------------------------------------------------------------------------------------


async def test_close_with_thousands_in_flight(open_env: OpenEnv, tmp_path: Path) -> None:
    env = open_env()
    db = env.get_default_database()
    named = await env.open_db("named")
    n = 2000
    await db.put_multi((key(i), value(i)) for i in range(n))
    submitted: list[asyncio.Future[Any]] = []
    for i in range(n):
        submitted.append(asyncio.ensure_future(db.get(key(i))))
        submitted.append(asyncio.ensure_future(named.put(key(i), value(i))))
        submitted.append(asyncio.ensure_future(db.replace(key(i), b"replaced")))
    submitted.append(asyncio.ensure_future(db.get_multi(key(i) for i in range(n))))
    submitted.append(asyncio.ensure_future(db.run(functools.partial(txn_get, key(0)))))
    await let_tasks_start()  # every operation above is submitted
    closing = asyncio.ensure_future(env.close())
    # Created after close began (close's first step runs before theirs): refused.
    late: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(db.put(b"late%d" % i, b"x")) for i in range(100)
    ]
    late += [asyncio.ensure_future(db.get(key(i))) for i in range(100)]

    await asyncio.wait_for(closing, TIMEOUT)
    assert env.closed
    results = await gather_bounded(*submitted)
    late_results = await gather_bounded(*late)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    # A read races the replace of its key (reads do not wait for writes): old or new value.
    assert all(r in (value(i), b"replaced") for i, r in enumerate(results[0 : 3 * n : 3]))
    assert results[1 : 3 * n : 3] == [True] * n
    multi = results[3 * n]
    assert isinstance(multi, dict)
    assert sorted(multi) == [key(i) for i in range(n)]
    assert results[3 * n + 1] in (value(0), b"replaced")
    assert results[2 : 3 * n : 3] == [value(i) for i in range(n)]
    assert all(isinstance(r, ClosedError) for r in late_results)

    # Everything acknowledged is on disk.
    with lmdb.open(env.path, readonly=True, max_dbs=2) as raw:
        raw_named = raw.open_db(b"named", create=False)
        with raw.begin() as txn:
            for i in range(n):
                assert txn.get(key(i)) == b"replaced"
                assert txn.get(key(i), db=raw_named) == value(i)
            assert txn.get(b"late0") is None


async def test_close_waits_for_a_running_write(db: Db) -> None:
    env = db.environment
    started = threading.Event()
    release = threading.Event()

    def slow(txn: Transaction[bytes, bytes]) -> str:
        txn.put(b"slow", b"1")
        started.set()
        if not release.wait(TIMEOUT):
            raise TimeoutError
        return "done"

    task = asyncio.ensure_future(db.run(slow, write=True))
    assert await asyncio.to_thread(started.wait, TIMEOUT)
    closing = asyncio.ensure_future(env.close())
    await let_tasks_start()
    assert not closing.done()
    with pytest.raises(ClosedError):
        await db.get(b"slow")
    release.set()
    assert await asyncio.wait_for(task, TIMEOUT) == "done"
    await asyncio.wait_for(closing, TIMEOUT)
    with lmdb.open(env.path, readonly=True) as raw, raw.begin() as txn:
        assert txn.get(b"slow") == b"1"


async def test_no_thread_left_after_close(path: Path, inline_reads: bool) -> None:
    before = aiolmdb_threads()
    env = aiolmdb.open(path, map_size=64 * MiB, inline_reads=inline_reads, readers=3)
    db = env.get_default_database()
    await gather_bounded(*(db.put(key(i), value(i)) for i in range(500)))
    await gather_bounded(*(db.run(lambda t: t.get(key(1))) for _ in range(500)))
    await env.sync()
    started = aiolmdb_threads() - before
    assert any(t.name.startswith("aiolmdb-writer") for t in started)
    assert any(t.name.startswith("aiolmdb-reader") for t in started)
    await asyncio.wait_for(env.close(), TIMEOUT)
    assert aiolmdb_threads() - before == set()


async def test_user_executor_is_not_shut_down(path: Path, inline_reads: bool) -> None:
    executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="user-pool")
    before = aiolmdb_threads()
    try:
        async with aiolmdb.open(
            path, map_size=64 * MiB, executor=executor, inline_reads=inline_reads
        ) as env:
            db = env.get_default_database()
            await db.put(b"k", b"v")
            assert await db.run(lambda t: t.get(b"k")) == b"v"
            assert await db.get(b"k") == b"v"
            # Reads ran on the user's pool: aiolmdb started only its writer.
            assert {t.name.split(":")[0] for t in aiolmdb_threads() - before} == {"aiolmdb-writer"}
        assert executor.submit(lambda: 42).result(TIMEOUT) == 42
        assert aiolmdb_threads() - before == set()
    finally:
        executor.shutdown(wait=True)


# --------------------------------------------------------------------------------------------
# map size
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writemap", [False, True], ids=["nested", "writemap"])
async def test_map_grows(open_env: OpenEnv, writemap: bool) -> None:
    env = open_env(map_size=1 * MiB, writemap=writemap)
    db = env.get_default_database()
    size = 64 * 1024
    puts = gather_bounded(*(db.put(key(i), value(i, size)) for i in range(160)))
    multis = gather_bounded(
        db.put_multi((key(i), value(i, size)) for i in range(160, 240)),
        db.put_multi({key(i): value(i, size) for i in range(240, 320)}),
    )
    put_results, multi_results = await asyncio.gather(puts, multis)
    assert put_results == [True] * 160
    assert multi_results == [80, 80]
    assert env.info()["map_size"] >= 20 * MiB
    assert await db.count() == 320
    for start in range(0, 320, 40):
        chunk = await db.get_multi(key(i) for i in range(start, start + 40))
        assert chunk == {key(i): value(i, size) for i in range(start, start + 40)}


async def test_single_huge_value_grows_map(open_env: OpenEnv) -> None:
    env = open_env(map_size=1 * MiB)
    db = env.get_default_database()
    big = b"z" * (10 * MiB)
    assert await db.put(b"big", big)
    assert await db.get(b"big") == big


@pytest.mark.parametrize("writemap", [False, True], ids=["nested", "writemap"])
async def test_max_map_size_caps_growth(
    open_env: OpenEnv, writemap: bool, caplog: pytest.LogCaptureFixture
) -> None:
    env = open_env(map_size=1 * MiB, max_map_size=2 * MiB, writemap=writemap)
    db = env.get_default_database()
    size = 128 * 1024
    with caplog.at_level(logging.INFO, logger="aiolmdb"):
        results = await gather_bounded(*(db.put(key(i), value(i, size)) for i in range(40)))
    ok = [i for i, r in enumerate(results) if r is True]
    full = [i for i, r in enumerate(results) if isinstance(r, lmdb.MapFullError)]
    assert sorted(ok + full) == list(range(40)), results
    assert ok
    assert full
    assert env.info()["map_size"] == 2 * MiB
    # The error names the setting that stopped the growth and the size reached, not LMDB's
    # "raise map_size" (a size aiolmdb had already outgrown).
    for i in full:
        assert f"max_map_size={2 * MiB} ({2 * MiB} bytes)" in str(results[i])
    # One log record per growth, none per operation.
    grown = [r.getMessage() for r in caplog.records if "map grown" in r.getMessage()]
    assert grown == [f"map grown from {MiB} to {2 * MiB} bytes ({env.path})"]
    stored = await db.get_multi(key(i) for i in range(40))
    assert stored == {key(i): value(i, size) if i in ok else None for i in range(40)}


@pytest.mark.parametrize("writemap", [False, True], ids=["nested", "writemap"])
async def test_map_full_without_growth(open_env: OpenEnv, writemap: bool) -> None:
    env = open_env(map_size=1 * MiB, map_growth=False, writemap=writemap)
    db = env.get_default_database()
    size = 64 * 1024
    async with WriterBlocker(env) as blocker:  # one batch that cannot fit as a whole
        tasks = [asyncio.ensure_future(db.put(key(i), value(i, size))) for i in range(40)]
        blocker.release_after_pending_tasks()
        results = await gather_bounded(*tasks)
    ok = [i for i, r in enumerate(results) if r is True]
    full = [i for i, r in enumerate(results) if isinstance(r, lmdb.MapFullError)]
    assert sorted(ok + full) == list(range(40)), results
    assert ok
    assert full
    assert not any(isinstance(r, aiolmdb.Error) for r in results)  # LMDB's own exception
    for i in full:
        assert f"full at {MiB} bytes and map_growth=False" in str(results[i])
    assert env.info()["map_size"] == 1 * MiB
    stored = await db.get_multi(key(i) for i in range(40))
    assert stored == {key(i): value(i, size) if i in ok else None for i in range(40)}
    # Small writes that still fit keep working.
    await db.delete(key(ok[0]))
    assert await db.put(b"small", b"x")


GROW_SCRIPT = """
import sys, lmdb
env = lmdb.open(sys.argv[1], map_size=int(sys.argv[2]), max_dbs=128)
with env.begin(write=True) as txn:
    for i in range(64):
        txn.put(b"ext%03d" % i, b"e" * 65536)
env.close()
"""


async def grow_from_another_process(path: str, size: int) -> None:
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", GROW_SCRIPT, path, str(size)],
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr.decode()


@pytest.mark.parametrize("first", ["read", "write"])
async def test_map_grown_by_another_process(open_env: OpenEnv, first: str) -> None:
    env = open_env(map_size=1 * MiB)
    db = env.get_default_database()
    await db.put(b"mine", b"1")
    await grow_from_another_process(env.path, 16 * MiB)
    if first == "read":
        assert await db.get(b"ext010") == b"e" * 65536
        assert await db.put(b"after", b"2")
    else:
        assert await db.put(b"after", b"2")
        assert await db.get(b"ext010") == b"e" * 65536
    assert await db.get_multi([b"mine", b"after"]) == {b"mine": b"1", b"after": b"2"}
    assert env.info()["map_size"] >= 16 * MiB


# --------------------------------------------------------------------------------------------
# drop inside a batch that runs again
# --------------------------------------------------------------------------------------------


async def test_drop_in_a_writemap_batch_with_a_failing_neighbour(open_env: OpenEnv) -> None:
    env = open_env(writemap=True)
    things = await env.open_db("things")
    await things.put(b"k", b"v")
    main = env.get_default_database()
    bad: Any = "not bytes"
    async with WriterBlocker(env) as blocker:
        drop = asyncio.ensure_future(things.drop())
        fail = asyncio.ensure_future(main.put(b"bad", bad))
        blocker.release_after_pending_tasks()
        results = await gather_bounded(drop, fail)
    assert isinstance(results[1], TypeError)
    assert results[0] is None
    fresh = await env.open_db("things")
    assert await fresh.count() == 0


async def test_drop_in_a_batch_that_grows_the_map(open_env: OpenEnv) -> None:
    env = open_env(map_size=256 * 1024)
    things = await env.open_db("things")
    await things.put(b"k", b"v")
    main = env.get_default_database()
    async with WriterBlocker(env) as blocker:
        drop = asyncio.ensure_future(things.drop())
        big = asyncio.ensure_future(main.put(b"big", b"b" * MiB))  # map full: batch runs again
        blocker.release_after_pending_tasks()
        results = await gather_bounded(drop, big)
    assert results == [None, True]
    fresh = await env.open_db("things")
    assert await fresh.count() == 0


async def test_drop_alongside_other_writes(env: Environment) -> None:
    things = await env.open_db("things")
    await things.put(b"k", b"v")
    main = env.get_default_database()
    async with WriterBlocker(env) as blocker:
        puts = [asyncio.ensure_future(main.put(key(i), value(i))) for i in range(10)]
        drop = asyncio.ensure_future(things.drop())
        blocker.release_after_pending_tasks()
        results = await gather_bounded(*puts, drop)
    assert results == [True] * 10 + [None]
    assert await (await env.open_db("things")).count() == 0
    assert await main.get(key(3)) == value(3)


async def test_cancelled_wait_for_opening_does_not_break_the_database(env: Environment) -> None:
    async def open_and_wait() -> Db:
        return await env.open_db("lazy")

    async with WriterBlocker(env):  # the opening is queued behind the blocker
        waiter = asyncio.ensure_future(open_and_wait())
        await let_tasks_start()
        waiter.cancel()
        # The cancellation reaches the queued opening through a loop callback: let it run
        # while the writer is still blocked (as when the writer is busy with a long batch).
        await let_tasks_start()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    lazy = env.open_db("lazy")
    assert await asyncio.wait_for(lazy.put(b"k", b"v"), TIMEOUT) is True
    assert await lazy.get(b"k") == b"v"
    assert await env.run(lambda txn: txn.get(b"k")) is None


# --------------------------------------------------------------------------------------------
# open read transactions, executors, loops
# --------------------------------------------------------------------------------------------


async def test_map_growth_waits_for_open_read_transactions(open_env: OpenEnv) -> None:
    env = open_env(map_size=1 * MiB)
    db = env.get_default_database()
    await db.put(b"k", b"v")
    started = threading.Event()
    release = threading.Event()

    def long_read(txn: Transaction[bytes, bytes]) -> bytes | None:
        started.set()
        if not release.wait(TIMEOUT):
            raise TimeoutError
        return txn.get(b"k")

    reader = asyncio.ensure_future(db.run(long_read))
    assert await asyncio.to_thread(started.wait, TIMEOUT)
    big = asyncio.ensure_future(db.put(b"big", b"b" * (4 * MiB)))  # the map must grow
    engine = env._engine
    # The writer is now growing the map and waits for the open read transaction to end.
    assert await asyncio.to_thread(wait_until, lambda: engine._gate.resizing)
    gets = [asyncio.ensure_future(db.get(b"k")) for _ in range(10)]
    await let_tasks_start()
    assert not big.done()
    assert not any(g.done() for g in gets)  # new reads wait for the new map size
    release.set()
    assert await asyncio.wait_for(reader, TIMEOUT) == b"v"
    assert await asyncio.wait_for(big, TIMEOUT) is True
    assert await gather_bounded(*gets) == [b"v"] * 10
    assert env.info()["map_size"] >= 4 * MiB
    assert await db.get(b"big") == b"b" * (4 * MiB)


@threaded_only  # the reads go through the executor
async def test_user_executor_shut_down_while_open(open_env: OpenEnv) -> None:
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="test-reader")
    env = open_env(executor=executor, max_batch=2)
    db = env.get_default_database()
    await db.put_multi([(key(i), value(i)) for i in range(5)])
    hold = threading.Event()
    executor.submit(hold.wait, TIMEOUT)
    # Queued before the shutdown: three batches of two, but only one drain gets scheduled.
    queued = [asyncio.ensure_future(db.get(key(i))) for i in range(5)]
    await let_tasks_start()
    executor.shutdown(wait=False)
    hold.set()
    # The drain cannot hand the rest to another thread any more: it reads them all itself.
    assert await gather_bounded(*queued) == [value(i) for i in range(5)]
    with pytest.raises(RuntimeError, match="shutdown"):
        await db.get(key(0))
    with pytest.raises(RuntimeError, match="shutdown"):
        await env.sync()
    assert await db.put(b"still", b"writes")  # the writer thread is aiolmdb's own
    await asyncio.wait_for(env.close(), TIMEOUT)


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
def test_loop_ends_with_operations_in_flight(path: Path, write: bool) -> None:
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="test-reader")
    env = aiolmdb.open(path, map_size=64 * MiB, executor=executor)
    db = env.get_default_database()
    started = threading.Event()
    release = threading.Event()

    def slow(txn: Transaction[bytes, bytes]) -> int:
        if write:
            txn.put(b"slow", b"1")
        started.set()
        if not release.wait(TIMEOUT):
            raise TimeoutError
        return 1

    left_running: list[asyncio.Future[int]] = []

    async def first() -> None:
        await db.put(b"k", b"v")
        # Still running when the loop ends (asyncio.run then cancels the task awaiting it).
        left_running.append(asyncio.ensure_future(db.run(slow, write=write)))
        assert await asyncio.to_thread(started.wait, TIMEOUT)

    async def second() -> None:
        assert await db.get(b"k") == b"v"
        assert await db.put(b"k2", b"v2")
        assert await db.get(b"slow") == (b"1" if write else None)
        await asyncio.wait_for(env.close(), TIMEOUT)

    try:
        asyncio.run(first())  # cancels the task awaiting the slow operation, closes the loop
        release.set()
        # The slow operation ends and hands its result to the closed loop: dropped quietly.
        executor.submit(lambda: None).result(TIMEOUT)  # one reader thread: FIFO
        asyncio.run(second())
    finally:
        release.set()
        executor.shutdown(wait=True)
    assert env.closed


# --------------------------------------------------------------------------------------------
# a batch that fails as a whole
# --------------------------------------------------------------------------------------------


class _CommitFails:
    """A write transaction (the runner's top-level one) whose commit raises ``error()`` when
    an atomic put of the key ``poison`` ran in it; everything else is passed to py-lmdb's."""

    def __init__(self, txn: Any, error: Callable[[], BaseException]) -> None:
        self._txn = txn
        self._error = error
        self._poisoned = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)

    def put(self, key: bytes, *args: Any, **kwargs: Any) -> Any:
        self._poisoned |= key == b"poison"
        return self._txn.put(key, *args, **kwargs)

    def commit(self) -> None:
        if self._poisoned:
            raise self._error()  # the runner aborts the transaction
        self._txn.commit()


def _inject(env: Environment, monkeypatch: pytest.MonkeyPatch, wrap: Callable[[Any], Any]) -> None:
    """Every top-level write transaction the runner begins from now on passes ``wrap``."""
    runner = env._engine._writer.runner
    real = runner._begin_write
    monkeypatch.setattr(runner, "_begin_write", lambda: wrap(real()))


def _markers(exc: BaseException) -> set[int]:
    """The ``marker`` locals of the frames in the tracebacks of ``exc`` and its causes."""
    found: set[int] = set()
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None:
            marker = tb.tb_frame.f_locals.get("marker")
            if isinstance(marker, int):
                found.add(marker)
            tb = tb.tb_next
        e = e.__cause__ or e.__context__
    return found


async def _caught(marker: int, aw: Any) -> BaseException | Any:
    """Await ``aw`` in a frame of its own (its local ``marker`` names the caller)."""
    try:
        return await aw
    except Exception as exc:
        return exc


@pytest.mark.parametrize("writemap", [False, True], ids=["nested", "writemap"])
async def test_a_batch_whose_transaction_fails_once_runs_its_operations_alone(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch, writemap: bool
) -> None:
    """Beginning the batch's transaction fails once: every operation, atomic or not, is run
    again alone and succeeds, instead of all failing with the batch."""
    env = open_env(writemap=writemap)
    db = env.get_default_database()
    failed = 0

    def fail_once(pair: Any) -> Any:
        nonlocal failed
        if failed:
            return pair
        failed += 1
        pair[0].abort()
        raise lmdb.DiskError("mdb_txn_begin: injected")

    async with WriterBlocker(env) as blocker:
        _inject(env, monkeypatch, fail_once)
        tasks: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(db.put(key(i), value(i))) for i in range(5)
        ]
        tasks.append(asyncio.ensure_future(db.put_multi([(b"m1", b"1"), (b"m2", b"2")])))
        tasks.append(asyncio.ensure_future(db.run(lambda t: t.put(b"r", b"3"), write=True)))
        blocker.release_after_pending_tasks()
        results = await gather_bounded(*tasks)
    assert failed == 1
    assert results == [True] * 5 + [2, True]
    assert await db.get_multi([key(i) for i in range(5)] + [b"m1", b"m2", b"r"]) == {
        **{key(i): value(i) for i in range(5)},
        b"m1": b"1",
        b"m2": b"2",
        b"r": b"3",
    }


@pytest.mark.parametrize("writemap", [False, True], ids=["nested", "writemap"])
async def test_a_failed_commit_fails_only_the_operation_that_fails_alone(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch, writemap: bool
) -> None:
    """The commit fails whenever one operation ran in the transaction: its neighbours land
    when run alone, and it alone fails, with its own copy of its transaction's failure."""
    env = open_env(writemap=writemap)
    db = env.get_default_database()
    causes: list[BaseException] = []

    def failure() -> BaseException:
        causes.append(lmdb.DiskError("mdb_txn_commit: injected"))
        return causes[-1]

    async with WriterBlocker(env) as blocker:
        _inject(env, monkeypatch, lambda pair: (_CommitFails(pair[0], failure), pair[1]))
        tasks = [
            asyncio.ensure_future(_caught(i, db.put(b"poison" if i == 2 else key(i), b"v")))
            for i in range(5)
        ]
        blocker.release_after_pending_tasks()
        results = await gather_bounded(*tasks)
    assert [r is True for r in results] == [True, True, False, True, True]
    err = results[2]
    assert type(err) is lmdb.DiskError
    assert str(err) == "mdb_txn_commit: injected"
    assert len(causes) == 2  # the batch's commit, then the poisoned put's own
    assert err.__cause__ is causes[1]
    assert err is not causes[1]
    assert _markers(err) == {2}
    assert await db.get_multi([key(i) for i in range(5)]) == {
        key(i): None if i == 2 else b"v" for i in range(5)
    }
    assert await db.get(b"poison") is None


async def test_callers_of_a_failed_batch_get_exceptions_of_their_own(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beginning a write transaction keeps failing with one exception object: each caller
    gets its own instance of its class, chained to it, whose traceback (kept after the other
    callers raised theirs) holds its own frames and no other caller's."""
    env = open_env()
    db = env.get_default_database()
    shared = lmdb.DiskError("mdb_txn_begin: injected")
    vars(shared)["detail"] = "disk 3"  # attributes travel with the copies
    begun = 0

    def always_fail(pair: Any) -> Any:
        nonlocal begun
        begun += 1
        pair[0].abort()
        raise shared

    n = 6
    async with WriterBlocker(env) as blocker:
        _inject(env, monkeypatch, always_fail)
        tasks = [
            asyncio.ensure_future(
                _caught(i, db.put(key(i), b"v") if i % 2 else db.put_multi([(key(i), b"v")]))
            )
            for i in range(n)
        ]
        blocker.release_after_pending_tasks()
        errors = await gather_bounded(*tasks)
    monkeypatch.undo()
    assert begun == 1 + n  # the batch, then each operation alone
    assert len({id(e) for e in errors}) == n
    for i, err in enumerate(errors):
        assert type(err) is lmdb.DiskError
        assert err is not shared
        assert err.args == shared.args
        assert vars(err)["detail"] == "disk 3"
        assert err.__cause__ is shared
        assert _markers(err) == {i}
    assert await db.count() == 0
    assert await db.put(b"after", b"v") is True


@threaded_only  # inline reads begin no batch transaction
async def test_readers_of_a_failed_read_batch_get_exceptions_of_their_own(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="test-reader")
    env = open_env(executor=executor)
    try:
        db = env.get_default_database()
        await db.put(b"k", b"v")
        readers = env._engine._readers
        cause = lmdb.ReadersFullError("mdb_txn_begin: injected")
        real_begin = readers._begin_read
        begun = 0

        def fail_once() -> Any:
            nonlocal begun
            begun += 1
            if begun == 1:
                raise cause
            return real_begin()

        monkeypatch.setattr(readers, "_begin_read", fail_once)
        hold = threading.Event()
        executor.submit(hold.wait, TIMEOUT)  # the reads queue up for one drain
        tasks = [asyncio.ensure_future(_caught(i, db.get(b"k"))) for i in range(5)]
        asyncio.get_running_loop().call_soon(hold.set)
        errors = await gather_bounded(*tasks)
        assert begun == 1
        assert len({id(e) for e in errors}) == 5
        for i, err in enumerate(errors):
            assert type(err) is lmdb.ReadersFullError
            assert err.args == cause.args
            assert err.__cause__ is cause
            assert _markers(err) == {i}
        assert await db.get(b"k") == b"v"
    finally:
        await env.close()
        executor.shutdown(wait=True)


class _NeedsMore(Exception):
    def __new__(cls, message: str, *, extra: int) -> _NeedsMore:
        return super().__new__(cls, message)

    def __init__(self, message: str, *, extra: int) -> None:
        super().__init__(message)
        self.extra = extra


class _InitOnly(Exception):
    def __init__(self, message: str, key: bytes) -> None:
        super().__init__(message)
        self.key = key


def test_own_error_copies_the_class_or_wraps_it() -> None:
    from aiolmdb._engine.delivery import own_error

    plain = _InitOnly("conflict on k", b"k")
    vars(plain)["__notes__"] = ["a note"]  # as add_note (3.11+) keeps them
    mine = own_error(plain)
    assert type(mine) is _InitOnly
    assert mine is not plain
    assert mine.args == ("conflict on k",)
    assert mine.key == b"k"
    assert mine.__cause__ is plain
    assert vars(mine)["__notes__"] == ["a note"]
    assert vars(mine)["__notes__"] is not vars(plain)["__notes__"]

    odd = _NeedsMore("odd", extra=1)
    wrapped = own_error(odd)
    assert type(wrapped) is aiolmdb.Error
    assert wrapped.__cause__ is odd
    assert "_NeedsMore('odd')" in str(wrapped)

    decode = own_error(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start"))
    assert isinstance(decode, UnicodeDecodeError)
    assert decode.reason == "invalid start"
    assert str(decode).startswith("'utf-8' codec can't decode byte 0xff")

    stop = own_error(StopIteration(3))  # a future cannot carry StopIteration
    assert type(stop) is RuntimeError
