"""Reliability: cancellation and shutdown (promise 4).

* a storm of thousands of operations with a third cancelled at random moments: no hang, no
  leaked thread or reader slot, and the final state agrees with a model in which a cancelled
  write may or may not have happened (it may have been started before the cancellation) while
  every write that completed did;
* ``close()`` with thousands of operations in flight returns (within 20 s: a ``timing`` check);
  each operation either completed (and its effect is on disk) or failed with ``ClosedError``
  (and left no trace);
* ``asyncio.run()`` ending without ``close()`` (child process): exits 0 and warns;
* the event loop closed with work in flight (child process): exits 0, no traceback.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import pytest

import aiolmdb

from ._stress_util import (
    TIMEOUT,
    Figures,
    assert_no_aiolmdb_threads,
    open_env,
    open_read_txns,
    run_child,
    value_for,
)

Db = aiolmdb.AsyncDatabase[bytes, bytes]
MODES: dict[str, dict[str, Any]] = {
    "threaded": {"inline_reads": False},
    "inline": {"inline_reads": True},
    "auto": {"reads": "auto"},
    # writemap=True has no nested transactions: a failing operation makes the engine abort
    # the batch and run it again without it (another code path for "fails alone").
    "writemap": {"inline_reads": False, "writemap": True},
}


@dataclass
class Op:
    """One operation of the storm and what became of it."""

    kind: str  # put | put_multi | delete | get
    keys: list[bytes]
    task: asyncio.Task[Any] | None = None
    cancel_requested: bool = False
    outcome: str = ""  # done | cancelled | error
    result: Any = None
    # For deletes and gets: the index of the op that wrote the key (None: nobody does).
    writer: int | None = None


@dataclass
class Storm:
    ops: list[Op] = field(default_factory=list)
    stable: dict[bytes, bytes] = field(default_factory=dict)


def plan_storm(rng: random.Random, size: int) -> Storm:
    """Operations in submission order. Each key is written by at most one op and deleted by
    at most one later op, so the final state follows from the outcomes alone."""
    storm = Storm(stable={b"stable%03d" % i: value_for(b"stable%03d" % i) for i in range(100)})
    written: list[tuple[bytes, int]] = []  # (key, writer index) not yet chosen for a delete
    for index in range(size):
        roll = rng.random()
        if roll < 0.35 or not written:
            key = b"u%06d" % index
            storm.ops.append(Op("put", [key]))
            written.append((key, index))
        elif roll < 0.50:
            keys = [b"m%06d-%d" % (index, j) for j in range(3)]
            storm.ops.append(Op("put_multi", keys))
            written += [(k, index) for k in keys]
        elif roll < 0.72:
            if rng.random() < 0.1:
                storm.ops.append(Op("delete", [b"never%06d" % index]))
            else:
                key, writer = written.pop(rng.randrange(len(written)))
                storm.ops.append(Op("delete", [key], writer=writer))
        else:
            if rng.random() < 0.5:
                storm.ops.append(Op("get", [rng.choice(list(storm.stable))]))
            else:
                key, writer = rng.choice(written)
                storm.ops.append(Op("get", [key], writer=writer))
    return storm


def start(db: Db, op: Op) -> Coroutine[Any, Any, Any]:
    if op.kind == "put":
        return db.put(op.keys[0], value_for(op.keys[0]))
    if op.kind == "put_multi":
        return db.put_multi([(k, value_for(k)) for k in op.keys])
    if op.kind == "delete":
        return db.delete(op.keys[0])
    return db.get(op.keys[0])


async def wait_no_open_read_txns(env: aiolmdb.Environment) -> None:
    """Reader threads end their transaction before handing results back, but a drain whose
    requests were all cancelled hands nothing back: poll (bounded) until none is open."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while open_read_txns(env.readers()):
        assert loop.time() < deadline, f"read transactions left open:\n{env.readers()}"
        await asyncio.sleep(0.01)


def check_storm(storm: Storm, final: dict[bytes, bytes], seed: int) -> tuple[int, int]:
    """Check every outcome and the final state; returns how many cancelled writes (that were
    never deleted) landed anyway and how many did not."""
    ops = storm.ops
    deleted_by: dict[bytes, Op] = {}
    for op in ops:
        if op.kind == "delete" and op.writer is not None:
            deleted_by[op.keys[0]] = op
    for index, op in enumerate(ops):
        where = f"op {index} {op.kind} {op.keys} ({op.outcome}) seed={seed}"
        assert op.outcome in ("done", "cancelled"), f"{where}: {op.result!r}"
        if op.outcome == "cancelled":
            assert op.cancel_requested, where
            continue
        writer = ops[op.writer] if op.writer is not None else None
        if op.kind == "put":
            assert op.result is True, where
        elif op.kind == "put_multi":
            assert op.result == 3, where
        elif op.kind == "delete":
            if writer is None:
                assert op.result is False, where
            elif writer.outcome == "done":
                assert op.result is True, where  # the put was submitted (and so ran) before
            else:
                assert op.result in (True, False), where
        else:
            key = op.keys[0]
            if key in storm.stable:
                assert op.result == storm.stable[key], where
            else:
                assert op.result in (None, value_for(key)), where
    # The final state.
    for key, value in storm.stable.items():
        assert final.get(key) == value, f"stable key {key!r} seed={seed}"
    for index, op in enumerate(ops):
        if op.kind not in ("put", "put_multi"):
            continue
        present = [final.get(k) for k in op.keys]
        for key, got in zip(op.keys, present, strict=True):
            where = f"key {key!r} of op {index} ({op.outcome}) seed={seed}"
            assert got in (None, value_for(key)), where
            delete = deleted_by.get(key)
            if delete is not None and delete.outcome == "done":
                assert got is None, where  # deleted after it was written
                if delete.result is True:
                    continue
                assert op.outcome == "cancelled", where  # delete found nothing: never written
            elif delete is None and op.outcome == "done":
                assert got == value_for(key), where
        if not any(k in deleted_by for k in op.keys):
            # A put_multi is all or nothing, cancelled or not.
            assert len({g is None for g in present}) == 1, (index, op.keys, present, seed)
    expected_keys = set(storm.stable)
    for op in ops:
        if op.kind in ("put", "put_multi"):
            expected_keys.update(op.keys)
    stray = set(final) - expected_keys
    assert not stray, (sorted(stray)[:5], f"seed={seed}")
    landed = absent = 0
    for op in ops:
        if op.kind == "put" and op.outcome == "cancelled" and op.keys[0] not in deleted_by:
            if op.keys[0] in final:
                landed += 1
            else:
                absent += 1
    return landed, absent


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", list(MODES))
async def test_storm_with_random_cancellations(
    tmp_path: Path, mode: str, stress_seed: int, figures: Figures
) -> None:
    rng = random.Random(stress_seed)
    path = tmp_path / "env"
    env = open_env(path, max_batch=64, **MODES[mode])
    db = env.get_default_database()
    storm = plan_storm(rng, 6000)
    assert await db.put_multi(list(storm.stable.items())) == len(storm.stable)

    ops = storm.ops
    chunk = 300
    live: list[Op] = []
    for begin in range(0, len(ops), chunk):
        for op in ops[begin : begin + chunk]:
            op.task = asyncio.ensure_future(start(db, op))
            live.append(op)
        # Cancel some of what is in flight at this moment: tasks not started yet, waiting for
        # their batch, inside a running batch, or already finished (cancel() is then a no-op).
        for op in rng.sample(live, k=min(len(live), chunk // 2 + rng.randint(0, 20))):
            if not op.cancel_requested and rng.random() < 0.9:
                assert op.task is not None
                op.cancel_requested = op.task.cancel() or op.cancel_requested
        live = [op for op in live if op.task is not None and not op.task.done()]
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)  # let the loop run some of the work (ordering, not time)

    tasks = [op.task for op in ops if op.task is not None]
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), TIMEOUT)
    for op in ops:
        assert op.task is not None
        if op.task.cancelled():
            op.outcome = "cancelled"
        elif op.task.exception() is not None:
            op.outcome, op.result = "error", op.task.exception()
        else:
            op.outcome, op.result = "done", op.task.result()
    cancelled = sum(op.outcome == "cancelled" for op in ops)
    assert cancelled >= len(ops) // 5, "the storm cancelled too little to test anything"

    await wait_no_open_read_txns(env)
    # Still fully usable after the storm.
    assert await db.put(b"after", b"storm")
    assert await db.get(b"after") == b"storm"
    await asyncio.wait_for(env.close(), TIMEOUT)
    assert_no_aiolmdb_threads()

    raw = lmdb.open(str(path), max_dbs=128, readonly=True, lock=False)
    try:
        with raw.begin() as txn:
            final = {bytes(k): bytes(v) for k, v in txn.cursor() if bytes(k) != b"after"}
    finally:
        raw.close()
    landed, absent = check_storm(storm, final, stress_seed)
    figures.add("cancellation storm: operations", len(ops))
    figures.add("cancellation storm: cancelled", cancelled)
    figures.add("cancellation storm: cancelled puts that landed anyway (started)", landed)
    figures.add("cancellation storm: cancelled puts that never ran", absent)


@pytest.mark.timeout(2 * TIMEOUT)
@pytest.mark.parametrize(
    "close_bound",
    [
        pytest.param(TIMEOUT, id="bounded"),
        # "Promptly": generous for slow disks, but a wall-clock bound all the same.
        pytest.param(20.0, id="promptly", marks=pytest.mark.timing),
    ],
)
async def test_close_with_thousands_in_flight(tmp_path: Path, close_bound: float) -> None:
    path = tmp_path / "env"
    env = open_env(path)
    db = env.get_default_database()
    assert await db.put(b"stable", b"1")
    writes = [asyncio.ensure_future(db.put(b"w%05d" % i, b"x" * 64)) for i in range(4000)]
    multis = [
        asyncio.ensure_future(db.put_multi([(b"m%04d-%d" % (i, j), b"m") for j in range(4)]))
        for i in range(500)
    ]
    reads = [asyncio.ensure_future(db.get(b"stable")) for _ in range(3000)]
    await asyncio.sleep(0)  # every operation above is submitted (one loop iteration)
    closing = asyncio.ensure_future(env.close())
    # More work, whose tasks first run after close() has begun (tasks start in FIFO order).
    late = [asyncio.ensure_future(db.put(b"late%04d" % i, b"x")) for i in range(500)]
    await asyncio.wait_for(closing, close_bound)
    assert_no_aiolmdb_threads()

    results = await asyncio.wait_for(
        asyncio.gather(*writes, *multis, *reads, *late, return_exceptions=True), TIMEOUT
    )
    unexpected = [
        r for r in results if not isinstance(r, aiolmdb.ClosedError) and r not in (True, 4, b"1")
    ]
    assert not unexpected, unexpected[:5]
    late_results = results[-500:]
    assert all(isinstance(r, aiolmdb.ClosedError) for r in late_results)

    raw = lmdb.open(str(path), max_dbs=128, readonly=True, lock=False)
    try:
        with raw.begin() as txn:
            for i, r in enumerate(results[:4000]):
                got = txn.get(b"w%05d" % i)
                assert got == (b"x" * 64 if r is True else None), (i, r)
            for i, r in enumerate(results[4000:4500]):
                got_m = [txn.get(b"m%04d-%d" % (i, j)) for j in range(4)]
                assert got_m == ([b"m"] * 4 if r == 4 else [None] * 4), (i, r)
            assert not any(txn.get(b"late%04d" % i) for i in range(500))
    finally:
        raw.close()


# --------------------------------------------------------------------------------------------
# asyncio.run() without close(); the loop closed under running work (child processes)
# --------------------------------------------------------------------------------------------


def assert_acked_and_opens(path: Path) -> None:
    async def check() -> None:
        env = open_env(path)
        try:
            db = env.get_default_database()
            assert await db.get(b"acked") == b"1"
            assert await db.put(b"reopened", b"1")
            assert not open_read_txns(env.readers())
        finally:
            await asyncio.wait_for(env.close(), TIMEOUT)

    asyncio.run(check())


@pytest.mark.parametrize("mode", ["collect", "global"])
def test_asyncio_run_without_close(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "env"
    proc = run_child("_child_unclosed", path, mode, python_flags=["-W", "always::ResourceWarning"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "exiting\n"
    if mode == "collect":
        assert "ResourceWarning" in proc.stderr, proc.stderr
        assert "unclosed aiolmdb environment" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr
    assert_acked_and_opens(path)


@pytest.mark.parametrize("mode", ["exit", "close"])
def test_event_loop_closed_with_work_in_flight(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "env"
    proc = run_child("_child_loop_closed", path, mode)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n", proc.stderr
    # asyncio may log "Task was destroyed but it is pending!" for the abandoned tasks; nothing
    # else: no traceback from aiolmdb's threads, no failing callback.
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Exception in callback" not in proc.stderr, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr
    assert "Fatal Python error" not in proc.stderr, proc.stderr
    assert_acked_and_opens(path)
