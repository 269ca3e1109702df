"""Transactions: ``run(fn)`` across databases, interactive write transactions, read snapshots,
atomic ``update`` and insert-if-absent ``put``.

Every test using ``env`` runs in both read modes (threaded and inline). Nothing waits on time:
the writer and reader threads are held with ``threading.Event`` objects, tasks are ordered with
``asyncio.Event`` and :func:`let_tasks_start`, and every test body is bounded by
``asyncio.wait_for`` so a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import pytest
from conftest import (
    MAP_SIZE,
    TIMEOUT,
    WriterBlocker,
    gather_bounded,
    let_tasks_start,
)

import aiolmdb
from aiolmdb import (
    AsyncDatabase,
    Coder,
    DatabaseView,
    DeadlockError,
    Environment,
    JSONCoder,
    ReadOnlyError,
    SnapshotExpiredError,
    StringCoder,
    Transaction,
    TransactionError,
    UInt64Coder,
)

T = TypeVar("T")
Db = AsyncDatabase[bytes, bytes]
Accounts = AsyncDatabase[str, int]
Log = AsyncDatabase[int, Any]


async def bounded(aw: Awaitable[T], timeout: float = TIMEOUT) -> T:
    """Await ``aw``, failing (instead of hanging) if it takes longer than ``timeout``.

    Note: on Python < 3.12 ``wait_for`` runs a coroutine in a new task, so the deadlock guard
    (which is per task) is exercised by running whole scenarios through this, never by wrapping
    a single write issued inside an open write transaction.
    """
    return await asyncio.wait_for(aw, timeout)


def reader_txnids(env: Environment) -> list[str]:
    """The txnids of the reader slots in use (LMDB's reader table, numeric column only)."""
    ids = []
    for line in env.readers().splitlines()[1:]:
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            ids.append(parts[2])
    return ids


def is_active(txn: aiolmdb.AsyncTransaction) -> bool:
    """``txn.active`` (a function, so that type checkers do not narrow it across awaits)."""
    return txn.active


async def assert_no_reader_held(env: Environment) -> None:
    """No reader slot of this process holds a transaction (after the inline read transaction
    of the current loop iteration, if any, has been released)."""
    await let_tasks_start()
    assert reader_txnids(env) == [], env.readers()


class Gate:
    """A pair of thread events: ``entered`` is set by a worker thread when it reaches the gate,
    which then waits for ``release`` (bounded)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def pass_through(self) -> None:
        self.entered.set()
        if not self.release.wait(TIMEOUT):
            raise TimeoutError("gate never released")

    async def wait_entered(self) -> None:
        entered = await asyncio.to_thread(self.entered.wait, TIMEOUT)
        assert entered, "the worker thread never reached the gate"


class GateCoder(Coder[bytes]):
    """Bytes coder that stops at its gate when it encodes (``on_encode``) or decodes
    (``on_decode``) the value ``b"gate"``, so a test can hold a worker thread in the middle of
    a command."""

    def __init__(self, gate: Gate, *, on_encode: bool = False, on_decode: bool = False) -> None:
        self.gate = gate
        self.on_encode = on_encode
        self.on_decode = on_decode

    def serialize(self, obj: bytes) -> bytes:
        if self.on_encode and obj == b"gate":
            self.gate.pass_through()
        return bytes(obj)

    def deserialize(self, buffer: Any) -> bytes:
        data = bytes(buffer)
        if self.on_decode and data == b"gate":
            self.gate.pass_through()
        return data


class Boom(Exception):
    """A user exception raised on purpose."""


@pytest.fixture
async def env(env: Environment) -> Environment:
    """conftest's ``env`` after one read, which binds the engine to the running loop.

    Without it, a test whose first operation is ``env.begin(write=True)`` hangs: see
    :func:`test_write_txn_as_first_operation` (a library bug, tested on its own there).
    """
    await env.get_default_database().get(b"warm-up")
    return env


# --------------------------------------------------------------------------------------------
# money transfers: atomic multi-database read-modify-write
# --------------------------------------------------------------------------------------------

ACCOUNTS = [f"acct-{i:02d}" for i in range(12)]
INITIAL_BALANCE = 100
TOTAL = INITIAL_BALANCE * len(ACCOUNTS)


class InsufficientFunds(Exception):
    """Raised by a transfer that would make its source account negative."""

    def __init__(self, transfer_id: int, balance: int, amount: int) -> None:
        super().__init__(f"transfer {transfer_id}: balance {balance} < {amount}")
        self.transfer_id = transfer_id
        self.balance = balance
        self.amount = amount


Plan = list[tuple[str, str, int]]  # (source, destination, amount) per transfer id


def make_plan(seed: int, count: int) -> Plan:
    rng = random.Random(seed)
    plan = []
    for _ in range(count):
        src, dst = rng.sample(ACCOUNTS, 2)
        plan.append((src, dst, rng.randint(1, 160)))  # many exceed a balance of ~100
    return plan


async def open_bank(env: Environment) -> tuple[Accounts, Log]:
    accounts = await env.open_db("accounts", key_coder=StringCoder(), value_coder=UInt64Coder())
    log = await env.open_db("transfers", key_coder=UInt64Coder(), value_coder=JSONCoder())
    await accounts.put_multi({name: INITIAL_BALANCE for name in ACCOUNTS})
    return accounts, log


async def check_bank(
    accounts: Accounts,
    log: Log,
    plan: Plan,
    outcomes: list[int | BaseException],
    raised: dict[int, BaseException],
) -> None:
    """Every invariant of a finished run of transfers ``plan`` with results ``outcomes``."""
    balances = await accounts.get_multi(ACCOUNTS)
    assert all(b is not None for b in balances.values())
    assert sum(b for b in balances.values() if b is not None) == TOTAL
    assert await accounts.count() == len(ACCOUNTS)

    succeeded: dict[int, int] = {}  # transfer id -> log sequence number
    failed = 0
    for tid, outcome in enumerate(outcomes):
        if isinstance(outcome, BaseException):
            # Exactly the exception raised by this caller's own transfer, unchanged.
            assert type(outcome) is InsufficientFunds, repr(outcome)
            assert outcome is raised[tid]
            assert outcome.transfer_id == tid
            assert outcome.amount == plan[tid][2]
            assert outcome.balance < outcome.amount
            failed += 1
        else:
            assert tid not in raised
            succeeded[tid] = outcome
    assert failed > 0, "the plan should make some transfers fail"
    assert len(succeeded) > 0
    assert sorted(succeeded.values()) == list(range(len(succeeded)))  # distinct, gapless

    # The log holds exactly one entry per successful transfer, under the returned sequence.
    entries = [entry async for entry in log.items()]
    assert [seq for seq, _ in entries] == list(range(len(succeeded)))
    by_seq = dict(entries)
    for tid, seq in succeeded.items():
        src, dst, amount = plan[tid]
        assert by_seq[seq] == {"id": tid, "src": src, "dst": dst, "amount": amount}

    # Replaying the log in commit order never overdraws and reproduces the final balances.
    replay = dict.fromkeys(ACCOUNTS, INITIAL_BALANCE)
    for _, entry in entries:
        replay[entry["src"]] -= entry["amount"]
        replay[entry["dst"]] += entry["amount"]
        assert replay[entry["src"]] >= 0
    assert replay == balances


def make_transfer(
    accounts: Accounts,
    log: Log,
    tid: int,
    move: tuple[str, str, int],
    raised: dict[int, BaseException],
) -> Callable[[Transaction[bytes, bytes]], int]:
    src, dst, amount = move

    def transfer(txn: Transaction[bytes, bytes]) -> int:
        acc: DatabaseView[str, int] = txn[accounts]
        entries: DatabaseView[int, Any] = txn[log]
        last = entries.last()
        seq = 0 if last is None else last[0] + 1
        # Write to both databases BEFORE checking, so a failure has something to roll back.
        assert entries.put(seq, {"id": tid, "src": src, "dst": dst, "amount": amount})
        dst_balance = acc.get(dst)
        assert dst_balance is not None
        acc.put(dst, dst_balance + amount)
        balance = acc.get(src)
        assert balance is not None
        if balance < amount:
            exc = InsufficientFunds(tid, balance, amount)
            raised[tid] = exc
            raise exc
        acc.put(src, balance - amount)
        return seq

    return transfer


async def snapshot_audits(
    env: Environment, accounts: Accounts, log: Log, done: asyncio.Future[Any]
) -> int:
    """Until ``done``: open snapshots and check that each sees a consistent bank."""
    audits = 0
    while not done.done() or audits == 0:
        async with env.begin() as snap:
            balances = await snap[accounts].get_multi(ACCOUNTS)
            assert sum(b or 0 for b in balances.values()) == TOTAL
            listed = [pair async for pair in snap[accounts].items(batch_size=5)]
            assert dict(listed) == balances
            n = await snap[log].count()
            last = await snap[log].last()
            assert (last is None and n == 0) or (last is not None and last[0] == n - 1)
        audits += 1
    return audits


@pytest.mark.parametrize("writemap", [False, True], ids=["nested", "writemap"])
async def test_money_transfers_env_run(
    open_env: Callable[..., Environment], writemap: bool
) -> None:
    env = open_env(writemap=writemap)
    accounts, log = await open_bank(env)
    plan = make_plan(seed=1234, count=300)
    raised: dict[int, BaseException] = {}

    async def scenario() -> None:
        runs = [
            env.run(make_transfer(accounts, log, tid, move, raised), write=True)
            for tid, move in enumerate(plan)
        ]
        everything = asyncio.gather(*runs, return_exceptions=True)
        audits = asyncio.ensure_future(snapshot_audits(env, accounts, log, everything))
        outcomes = await everything
        assert await audits >= 1
        await check_bank(accounts, log, plan, outcomes, raised)

    await bounded(scenario())


async def test_money_transfers_interactive(env: Environment) -> None:
    accounts, log = await open_bank(env)
    plan = make_plan(seed=99, count=60)
    raised: dict[int, BaseException] = {}

    async def transfer(tid: int) -> int:
        src, dst, amount = plan[tid]
        async with env.begin(write=True) as txn:
            acc = txn[accounts]
            entries = txn[log]
            last = await entries.last()
            seq = 0 if last is None else last[0] + 1
            assert await entries.put(seq, {"id": tid, "src": src, "dst": dst, "amount": amount})
            dst_balance = await acc.get(dst)
            assert dst_balance is not None
            await acc.put(dst, dst_balance + amount)
            balance = await acc.get(src)
            assert balance is not None
            if balance < amount:
                exc = InsufficientFunds(tid, balance, amount)
                raised[tid] = exc
                raise exc
            await acc.put(src, balance - amount)
            return seq

    async def scenario() -> None:
        everything = asyncio.gather(
            *(transfer(tid) for tid in range(len(plan))), return_exceptions=True
        )
        audits = asyncio.ensure_future(snapshot_audits(env, accounts, log, everything))
        outcomes = await everything
        assert await audits >= 1
        await check_bank(accounts, log, plan, outcomes, raised)

    await bounded(scenario())


# --------------------------------------------------------------------------------------------
# run(fn): rollback, transaction object, read-only runs, batch neighbours
# --------------------------------------------------------------------------------------------


async def seed_two(env: Environment) -> tuple[AsyncDatabase[str, Any], AsyncDatabase[int, int]]:
    docs = await env.open_db("docs", key_coder=StringCoder(), value_coder=JSONCoder())
    nums = await env.open_db("nums", key_coder=UInt64Coder(), value_coder=UInt64Coder())
    await docs.put_multi({"a": {"v": 1}, "b": [1, 2], "c": "keep"})
    await nums.put_multi({1: 10, 2: 20, 3: 30})
    return docs, nums


async def assert_seed_intact(docs: AsyncDatabase[str, Any], nums: AsyncDatabase[int, int]) -> None:
    assert [p async for p in docs.items()] == [("a", {"v": 1}), ("b", [1, 2]), ("c", "keep")]
    assert [p async for p in nums.items()] == [(1, 10), (2, 20), (3, 30)]


async def test_env_run_exception_rolls_back_every_database(env: Environment) -> None:
    docs, nums = await seed_two(env)
    boom = Boom("abort everything")

    def fn(txn: Transaction[bytes, bytes]) -> None:
        d, n = txn[docs], txn[nums]
        d.put("a", {"v": 2})
        d.put("new", True)
        assert d.delete("b")
        assert d.pop("c") == "keep"
        n.put(4, 40)
        assert n.replace(1, 11) == 10
        assert n.update(2, lambda old: (old or 0) + 1) == 21
        assert n.put_multi([(5, 50), (6, 60)]) == 2
        assert n.delete_multi([3]) == {3: True}
        # Everything is visible inside the transaction before it fails.
        assert d.get("new") is True
        assert list(n.keys()) == [1, 2, 4, 5, 6]
        raise boom

    with pytest.raises(Boom) as info:
        await bounded(env.run(fn, write=True))
    assert info.value is boom
    await assert_seed_intact(docs, nums)

    # The same through db.run (bound to docs), with a non-aiolmdb exception type.
    def fn2(txn: Transaction[str, Any]) -> None:
        txn.put("a", "changed")
        txn[nums].put(9, 9)
        raise KeyError("k")

    with pytest.raises(KeyError):
        await bounded(docs.run(fn2, write=True))
    await assert_seed_intact(docs, nums)


async def test_env_run_commits_every_database_at_once(env: Environment) -> None:
    docs, nums = await seed_two(env)

    def fn(txn: Transaction[bytes, bytes]) -> int:
        txn[docs].put("a", {"v": 2})
        txn[nums].put(4, 40)
        txn.put(b"main", b"x")  # env.run's txn acts on the default database
        return txn.id()

    txn_id = await bounded(env.run(fn, write=True))

    def read(txn: Transaction[bytes, bytes]) -> tuple[int, Any, int | None, bytes | None]:
        return txn.id(), txn[docs].get("a"), txn[nums].get(4), txn.get(b"main")

    read_id, a, four, main = await bounded(env.run(read))
    assert (a, four, main) == ({"v": 2}, 40, b"x")
    assert read_id >= txn_id


async def test_db_run_transaction_object(env: Environment) -> None:
    docs, nums = await seed_two(env)

    def fn(txn: Transaction[str, Any]) -> tuple[Any, ...]:
        assert txn.write is True
        assert isinstance(txn.raw, lmdb.Transaction)
        assert txn.put("d", {"new": 1}) is True
        assert txn.put("d", "no", overwrite=False) is False
        return (
            txn.get("a"),
            txn.get("missing", "dflt"),
            txn.get_multi(["a", "d"]),
            txn[nums].get(2),
            txn.id(),
            list(txn.keys()),
            txn.count(),
        )

    a, missing, multi, two, txn_id, keys, count = await bounded(docs.run(fn, write=True))
    assert a == {"v": 1}
    assert missing == "dflt"
    assert multi == {"a": {"v": 1}, "d": {"new": 1}}
    assert two == 20
    assert isinstance(txn_id, int)
    assert keys == ["a", "b", "c", "d"]
    assert count == 4

    def read(txn: Transaction[int, int]) -> tuple[bool, int | None, list[tuple[int, int]]]:
        return txn.write, txn.get(3), list(txn.items(2, reverse=True))

    assert await bounded(nums.run(read)) == (False, 30, [(3, 30), (2, 20)])


WRITES: list[tuple[str, Callable[[DatabaseView[Any, Any]], Any]]] = [
    ("put", lambda v: v.put(b"k", b"v")),
    ("put_multi", lambda v: v.put_multi([(b"k", b"v")])),
    ("delete", lambda v: v.delete(b"a")),
    ("delete_multi", lambda v: v.delete_multi([b"a"])),
    ("pop", lambda v: v.pop(b"a")),
    ("replace", lambda v: v.replace(b"a", b"v")),
    ("update", lambda v: v.update(b"a", lambda old: b"v")),
]


@pytest.mark.parametrize(("name", "write"), WRITES, ids=[name for name, _ in WRITES])
async def test_read_only_run_rejects_writes(
    env: Environment, db: Db, name: str, write: Callable[[DatabaseView[Any, Any]], Any]
) -> None:
    other = await env.open_db("other")
    await db.put(b"a", b"1")
    await other.put(b"a", b"1")

    runs: list[Callable[[], Awaitable[Any]]] = [
        lambda: db.run(write),
        lambda: db.run(lambda txn: write(txn[other])),
        lambda: env.run(lambda txn: write(txn[other])),
    ]
    for run in runs:
        with pytest.raises(ReadOnlyError, match=name) as info:
            await bounded(run())
        assert isinstance(info.value, lmdb.ReadonlyError)
    assert await db.get_multi([b"a", b"k"]) == {b"a": b"1", b"k": None}
    assert await other.get_multi([b"a", b"k"]) == {b"a": b"1", b"k": None}


async def test_failing_write_run_does_not_fail_its_batch_neighbours(
    env: Environment, db: Db
) -> None:
    other = await env.open_db("other")
    boom = Boom("only me")

    def failing(txn: Transaction[bytes, bytes]) -> None:
        txn.put(b"from-failing", b"x")
        txn[other].put(b"from-failing", b"x")
        txn.put(b"before-0", b"overwritten by the failing run")
        raise boom

    def succeeding(txn: Transaction[bytes, bytes]) -> int:
        txn[other].put(b"from-run", txn.get(b"before-0") or b"?")
        return txn.id()

    async with WriterBlocker(env):
        before = [asyncio.ensure_future(db.put(b"before-%d" % i, b"%d" % i)) for i in range(20)]
        fail = asyncio.ensure_future(env.run(failing, write=True))
        run_ok = asyncio.ensure_future(env.run(succeeding, write=True))
        after = [asyncio.ensure_future(db.put(b"after-%d" % i, b"%d" % i)) for i in range(20)]
        other_put = asyncio.ensure_future(other.put(b"p", b"q"))
        await let_tasks_start()  # everything is queued behind the blocker: one batch
        # The blocker's transaction changes nothing, so LMDB does not count its commit.
        committed = env.info()["last_txnid"]

    results = await gather_bounded(*before, fail, run_ok, *after, other_put)
    assert results[20] is boom
    assert all(r is True for i, r in enumerate(results) if i not in (20, 21))
    # One batch: one commit since, the transaction the successful run saw.
    assert results[21] == committed + 1
    assert env.info()["last_txnid"] == committed + 1
    assert len([k async for k in db.keys(prefix=b"before-")]) == 20
    assert len([k async for k in db.keys(prefix=b"after-")]) == 20
    assert await db.get(b"before-0") == b"0"
    assert await db.get(b"from-failing") is None
    assert await other.get_multi([b"from-failing", b"from-run", b"p"]) == {
        b"from-failing": None,
        b"from-run": b"0",  # ran after the put queued before it, in the same batch
        b"p": b"q",
    }


async def test_write_runs_share_the_group_commit(env: Environment, db: Db) -> None:
    def txn_id(txn: Transaction[bytes, bytes]) -> int:
        txn.put(b"k%d" % txn.id(), b"")
        return txn.id()

    async with WriterBlocker(env):
        runs = [asyncio.ensure_future(env.run(txn_id, write=True)) for _ in range(10)]
        await let_tasks_start()
    ids = await gather_bounded(*runs)
    assert len(set(ids)) == 1  # one write transaction (nested children share its id)


# --------------------------------------------------------------------------------------------
# update / put(overwrite=False) under contention
# --------------------------------------------------------------------------------------------


async def test_update_contention_exact_total(env: Environment) -> None:
    counters = await env.open_db("counters", key_coder=StringCoder(), value_coder=UInt64Coder())

    def inc(old: int | None) -> int:
        return (old or 0) + 1

    results = await gather_bounded(*(counters.update("hits", inc) for _ in range(1000)))
    assert sorted(r for r in results if isinstance(r, int)) == list(range(1, 1001))
    assert await counters.get("hits") == 1000

    results = await gather_bounded(
        *(counters.update("other", lambda old: (old or 0) + 2, default=5) for _ in range(100))
    )
    assert sorted(r for r in results if isinstance(r, int)) == list(range(7, 207, 2))
    assert await counters.get("other") == 205


async def test_update_fn_raising_fails_only_its_caller(env: Environment) -> None:
    counters = await env.open_db("counters", key_coder=StringCoder(), value_coder=UInt64Coder())
    await counters.put("n", 7)
    boom = Boom("no")

    def explode(old: int | None) -> int:
        raise boom

    with pytest.raises(Boom) as info:
        await bounded(counters.update("n", explode))
    assert info.value is boom
    assert await counters.get("n") == 7
    with pytest.raises(ValueError, match="out of range"):  # fn's result cannot be encoded
        await bounded(counters.update("n", lambda old: -1))
    assert await counters.get("n") == 7

    async with WriterBlocker(env):
        incs = [asyncio.ensure_future(counters.update("n", lambda o: (o or 0) + 1)) for _ in "ab"]
        bad = asyncio.ensure_future(counters.update("n", explode))
        more = [asyncio.ensure_future(counters.update("n", lambda o: (o or 0) + 1)) for _ in "cd"]
        await let_tasks_start()
    results = await gather_bounded(*incs, bad, *more)
    assert results == [8, 9, boom, 10, 11]
    assert await counters.get("n") == 11


async def test_put_without_overwrite_race(env: Environment) -> None:
    names = await env.open_db("names", key_coder=StringCoder(), value_coder=UInt64Coder())
    results = await gather_bounded(*(names.put("k", i, overwrite=False) for i in range(100)))
    assert all(isinstance(r, bool) for r in results)
    winners = [i for i, r in enumerate(results) if r is True]
    assert len(winners) == 1
    assert await names.get("k") == winners[0]

    # The same race through interactive transactions and run(fn): still one winner.
    def insert(txn: Transaction[bytes, bytes]) -> bool:
        return txn[names].put("r", 1, overwrite=False)

    async def insert_txn() -> bool:
        async with env.begin(write=True) as txn:
            return await txn[names].put("r", 2, overwrite=False)

    mixed = await gather_bounded(
        *(env.run(insert, write=True) for _ in range(20)), *(insert_txn() for _ in range(5))
    )
    assert mixed.count(True) == 1
    assert mixed.count(False) == len(mixed) - 1


# --------------------------------------------------------------------------------------------
# interactive write transactions
# --------------------------------------------------------------------------------------------


async def test_write_txn_commit(env: Environment, db: Db) -> None:
    docs, nums = await seed_two(env)

    async def scenario() -> None:
        async with env.begin(write=True) as txn:
            assert is_active(txn)
            d, n = txn[docs], txn[nums]
            assert await d.get("a") == {"v": 1}
            assert await d.put("x", [1, "two"]) is True
            assert await d.get("x") == [1, "two"]  # reads its own writes
            assert await d.put("x", "no", overwrite=False) is False
            assert await n.update(1, lambda old: (old or 0) * 2) == 20
            assert await n.replace(2, 22) == 20
            assert await n.pop(3) == 30
            assert await n.delete(3) is False
            assert await n.put_multi({7: 70, 8: 80}) == 2
            assert await n.delete_multi([8, 9]) == {8: True, 9: False}
            assert await n.get_multi([1, 2, 3, 7]) == {1: 20, 2: 22, 3: None, 7: 70}
            assert await n.count() == 3
            assert await n.first() == (1, 20)
            assert await n.last() == (7, 70)
            assert await txn[db].put(b"main", b"m")
        assert not is_active(txn)
        assert await docs.get("x") == [1, "two"]
        assert [p async for p in nums.items()] == [(1, 20), (2, 22), (7, 70)]
        assert await db.get(b"main") == b"m"

    await bounded(scenario())
    await assert_no_reader_held(env)


async def test_write_txn_rollback_on_exception_across_databases(env: Environment) -> None:
    docs, nums = await seed_two(env)
    boom = Boom("roll back")

    txns: list[aiolmdb.WriteTransaction] = []

    async def failing() -> None:
        async with env.begin(write=True) as txn:
            txns.append(txn)
            await txn[docs].put("a", "changed")
            await txn[docs].delete("b")
            await txn[nums].put(4, 40)
            await txn[nums].update(1, lambda old: 0)
            assert await txn[nums].get(4) == 40
            raise boom

    async def scenario() -> None:
        with pytest.raises(Boom) as info:
            await failing()
        assert info.value is boom
        assert not is_active(txns[0])
        await assert_seed_intact(docs, nums)
        # The writer is free and the task holds nothing: plain writes work again.
        assert await nums.put(4, 44)

    await bounded(scenario())


async def test_write_txn_cancelled_while_awaiting_inside(env: Environment, db: Db) -> None:
    await db.put(b"k", b"old")
    inside = asyncio.Event()

    async def holder() -> None:
        async with env.begin(write=True) as txn:
            await txn[db].put(b"k", b"new")
            await txn[db].put(b"k2", b"new")
            inside.set()
            await asyncio.Event().wait()  # cancelled here

    async def scenario() -> None:
        task = asyncio.ensure_future(holder())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await db.get_multi([b"k", b"k2"]) == {b"k": b"old", b"k2": None}
        assert await db.put(b"k3", b"after")  # the writer is free again
        async with env.begin(write=True) as txn:  # so is the write transaction slot
            await txn[db].put(b"k4", b"after")
        assert await db.get_multi([b"k3", b"k4"]) == {b"k3": b"after", b"k4": b"after"}

    await bounded(scenario())


async def test_write_txn_cancelled_during_in_flight_command(env: Environment) -> None:
    gate = Gate()
    gated = await env.open_db("gated", value_coder=GateCoder(gate, on_encode=True))

    async def holder() -> None:
        async with env.begin(write=True) as txn:
            await txn[gated].put(b"first", b"1")
            await txn[gated].put(b"held", b"gate")  # the writer thread stops in the coder

    async def scenario() -> None:
        task = asyncio.ensure_future(holder())
        await gate.wait_entered()
        task.cancel()
        gate.release.set()  # the command finishes on the writer thread; its result is dropped
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await gated.get_multi([b"first", b"held"]) == {b"first": None, b"held": None}
        assert await gated.put(b"later", b"ok")
        assert await gated.get(b"later") == b"ok"

    await bounded(scenario())


async def test_write_txn_explicit_commit_and_abort(env: Environment, db: Db) -> None:
    async def scenario() -> None:
        txn = env.begin(write=True)
        assert not is_active(txn)
        with pytest.raises(TransactionError, match="not begun"):
            await txn[db].get(b"k")
        await txn.begin()
        assert is_active(txn)
        await txn[db].put(b"committed", b"1")
        await txn.commit()
        assert not is_active(txn)
        assert await db.get(b"committed") == b"1"
        for use in (
            lambda: txn[db].get(b"k"),
            lambda: txn[db].put(b"k", b"v"),
            lambda: txn.commit(),
            lambda: txn.abort(),
            lambda: txn.begin(),
        ):
            with pytest.raises(TransactionError):
                await use()
        with pytest.raises(TransactionError):
            async for _ in txn[db].items():
                pass

        txn2 = env.begin(write=True)
        await txn2.begin()
        await txn2[db].put(b"aborted", b"1")
        assert await txn2[db].get(b"aborted") == b"1"
        await txn2.abort()
        assert await db.get(b"aborted") is None
        with pytest.raises(TransactionError):
            await txn2[db].put(b"k", b"v")
        with pytest.raises(TransactionError):
            await txn2.commit()

        # Ending inside the block explicitly: the block's exit then does nothing more.
        async with env.begin(write=True) as txn3:
            await txn3[db].put(b"early", b"1")
            await txn3.commit()
            assert await db.get(b"early") == b"1"  # durable already, inside the block
            assert await db.put(b"plain", b"ok")  # and the task no longer holds the writer
        async with env.begin(write=True) as txn4:
            await txn4[db].put(b"dropped", b"1")
            await txn4.abort()
        assert await db.get(b"dropped") is None

    await bounded(scenario())


async def test_other_writers_wait_for_open_write_txn(env: Environment, db: Db) -> None:
    counters = await env.open_db("counters", key_coder=StringCoder(), value_coder=UInt64Coder())

    def run_fn(txn: Transaction[bytes, bytes]) -> bytes | None:
        seen = txn.get(b"k")
        txn.put(b"run", seen or b"-")
        return seen

    async def other_txn() -> bytes | None:
        async with env.begin(write=True) as txn:
            seen = await txn[db].get(b"k")
            await txn[db].put(b"other-txn", seen or b"-")
            return seen

    async def scenario() -> None:
        async with env.begin(write=True) as txn:
            await txn[db].put(b"k", b"from-txn")
            await txn[counters].put("c", 10)
            waiting = [
                asyncio.ensure_future(db.put(b"k", b"from-put")),
                asyncio.ensure_future(counters.update("c", lambda old: (old or 0) + 1)),
                asyncio.ensure_future(env.run(run_fn, write=True)),
                asyncio.ensure_future(other_txn()),
                asyncio.ensure_future(db.delete(b"gone")),
            ]
            await let_tasks_start()  # every one has queued its work for the writer
            # The writer thread runs several commands of this transaction meanwhile...
            for i in range(5):
                await txn[db].put(b"n%d" % i, b"")
                assert await txn[db].get(b"n%d" % i) == b""
            # ...and none of the queued writers has got its turn.
            assert [t.done() for t in waiting] == [False] * len(waiting)
            assert await db.get(b"k") is None  # nor is the transaction visible yet
        results = await gather_bounded(*waiting)
        # They ran after the commit, in order, each seeing what came before it.
        assert results == [True, 11, b"from-put", b"from-put", False]
        assert await db.get_multi([b"k", b"run", b"other-txn"]) == {
            b"k": b"from-put",
            b"run": b"from-put",
            b"other-txn": b"from-put",
        }
        assert await counters.get("c") == 11

    await bounded(scenario())


async def test_cancelled_waiting_write_txn_does_not_wedge_the_writer(
    env: Environment, db: Db
) -> None:
    async def waiter() -> None:
        async with env.begin(write=True) as txn:
            await txn[db].put(b"waiter", b"1")

    async def scenario() -> None:
        async with env.begin(write=True) as txn:
            task = asyncio.ensure_future(waiter())
            await let_tasks_start()  # it waits for the writer, behind this transaction
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await txn[db].put(b"holder", b"1")
        assert await db.put(b"after", b"1")
        assert await db.get_multi([b"holder", b"waiter", b"after"]) == {
            b"holder": b"1",
            b"waiter": None,
            b"after": b"1",
        }

    await bounded(scenario())


async def test_deadlock_guard(env: Environment, db: Db) -> None:
    other = await env.open_db("other")
    await db.put(b"committed", b"old")

    def write_fn(txn: Transaction[bytes, bytes]) -> None:
        txn.put(b"never", b"1")  # pragma: no cover - never runs

    async def scenario() -> None:
        async with env.begin(write=True) as txn:
            await txn[db].put(b"k", b"from-txn")
            attempts: list[Callable[[], Awaitable[Any]]] = [
                lambda: db.put(b"x", b"1"),
                lambda: other.put(b"x", b"1"),
                lambda: db.update(b"x", lambda old: b"1"),
                lambda: db.delete(b"committed"),
                lambda: db.put_multi({b"x": b"1"}),
                lambda: env.run(write_fn, write=True),
                lambda: db.run(write_fn, write=True),
            ]
            for attempt in attempts:
                with pytest.raises(DeadlockError):
                    await attempt()
            with pytest.raises(DeadlockError):
                async with env.begin(write=True):
                    pass  # pragma: no cover - never entered
            nested = env.begin(write=True)
            with pytest.raises(DeadlockError):
                await nested.begin()
            # Reads do not need the writer: they work and see the committed state only.
            assert await db.get(b"committed") == b"old"
            assert await db.get(b"k") is None
            assert await env.run(lambda t: t.get(b"committed")) == b"old"
            async with env.begin() as snap:
                assert await snap[db].get(b"k") is None
            # The transaction itself is unharmed.
            await txn[db].put(b"k2", b"from-txn")
            assert await txn[db].get(b"k") == b"from-txn"
        assert await db.get_multi([b"k", b"k2", b"x", b"never", b"committed"]) == {
            b"k": b"from-txn",
            b"k2": b"from-txn",
            b"x": None,
            b"never": None,
            b"committed": b"old",
        }
        # Once it ended, the same task writes normally again.
        assert await db.put(b"x", b"1")
        assert await env.run(lambda t: t.put(b"y", b"1"), write=True)

    await bounded(scenario())


async def test_deadlock_guard_is_per_task(env: Environment, db: Db) -> None:
    """Another task's write is not a deadlock: it waits for its turn."""

    async def scenario() -> None:
        async with env.begin(write=True) as txn:
            other = asyncio.ensure_future(db.put(b"other", b"1"))
            await let_tasks_start()
            await txn[db].put(b"mine", b"1")
            assert not other.done()
        assert await bounded(other) is True

    await bounded(scenario())


async def test_reads_from_other_tasks_do_not_see_uncommitted_writes(
    env: Environment, db: Db
) -> None:
    await db.put_multi({b"a": b"old", b"b": b"old"})
    written = asyncio.Event()
    checked = asyncio.Event()

    async def writer() -> None:
        async with env.begin(write=True) as txn:
            await txn[db].put(b"a", b"new")
            await txn[db].put(b"c", b"new")
            await txn[db].delete(b"b")
            written.set()
            await checked.wait()

    async def reader() -> None:
        await written.wait()
        assert await db.get_multi([b"a", b"b", b"c"]) == {b"a": b"old", b"b": b"old", b"c": None}
        assert [k async for k, _ in db.items()] == [b"a", b"b"]
        assert await env.run(lambda t: t.get(b"a")) == b"old"
        async with env.begin() as snap:
            assert await snap[db].get(b"c") is None
        checked.set()

    async def scenario() -> None:
        await asyncio.gather(writer(), reader())
        assert await db.get_multi([b"a", b"b", b"c"]) == {b"a": b"new", b"b": None, b"c": b"new"}

    await bounded(scenario())


async def test_failing_command_fails_only_that_await(env: Environment) -> None:
    nums = await env.open_db("nums", key_coder=UInt64Coder(), value_coder=UInt64Coder())
    db = env.get_default_database()

    def explode(old: int | None) -> int:
        raise Boom

    async def scenario() -> None:
        async with env.begin(write=True) as txn:
            n = txn[nums]
            assert await n.put(1, 1)
            with pytest.raises(ValueError, match="out of range"):
                await n.put(2, -1)
            with pytest.raises(TypeError):
                await n.put("three", 3)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await txn[db].put(b"k", "not bytes")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="out of range"):  # all or nothing
                await n.put_multi([(4, 4), (5, -5)])
            with pytest.raises(Boom):
                await n.update(1, explode)
            with pytest.raises(aiolmdb.InvalidKeyError):
                await txn[db].put(b"", b"empty key")
            assert await n.get(1) == 1
            assert await n.get_multi([2, 4, 5]) == {2: None, 4: None, 5: None}
            assert await n.put(6, 6)
        assert [p async for p in nums.items()] == [(1, 1), (6, 6)]
        assert await db.get(b"k") is None

    await bounded(scenario())


async def test_write_txn_iteration_sees_its_own_writes(env: Environment) -> None:
    nums = await env.open_db("nums", key_coder=UInt64Coder(), value_coder=UInt64Coder())
    await nums.put_multi({i: i for i in range(0, 20, 2)})  # even keys committed

    async def scenario() -> None:
        async with env.begin(write=True) as txn:
            n = txn[nums]
            await n.put_multi({i: i * 100 for i in range(1, 20, 4)})  # some odd keys
            await n.delete(4)
            await n.put(6, 600)
            expected = {i: i for i in range(0, 20, 2)} | {i: i * 100 for i in range(1, 20, 4)}
            del expected[4]
            expected[6] = 600
            items = [p async for p in n.items(batch_size=3)]
            assert items == sorted(expected.items())
            assert [k async for k in n.keys(5, 13)] == [k for k in sorted(expected) if 5 <= k < 13]
            assert [v async for v in n.values(reverse=True, limit=4)] == [
                expected[k] for k in sorted(expected, reverse=True)[:4]
            ]
            # Writes made during the iteration show up in the chunks read after them.
            seen = []
            async for key, _ in n.items(batch_size=2):
                seen.append(key)
                if key == 0:
                    await n.put(3, 3)
                    await n.delete(2)
            assert 3 in seen
            assert 2 not in seen
            # Nobody else sees any of it yet.
            assert await nums.get(1) is None
        assert await nums.get(1) == 100
        assert await nums.get(2) is None

    await bounded(scenario())


async def test_transaction_rejects_database_of_another_environment(
    env: Environment, open_env: Callable[..., Environment]
) -> None:
    foreign = open_env().get_default_database()

    async def scenario() -> None:
        async with env.begin(write=True) as txn:
            with pytest.raises(ValueError, match="another environment"):
                txn[foreign]
        async with env.begin() as snap:
            with pytest.raises(ValueError, match="another environment"):
                snap[foreign]

    await bounded(scenario())


async def test_write_txn_map_full_rolls_back_and_fits_after_growth(
    open_env: Callable[..., Environment],
) -> None:
    env = open_env(map_size=1 << 20)
    db = env.get_default_database()
    await db.put(b"seed", b"1")

    async def fill() -> None:
        async with env.begin(write=True) as txn:
            for i in range(36):  # about 1.5 MB: more than the 1 MiB map, less than 2 MiB
                await txn[db].put(b"k%02d" % i, b"x" * 40_000)

    async def scenario() -> None:
        with pytest.raises(lmdb.MapFullError):
            await fill()
        assert await db.count() == 1  # rolled back
        await fill()  # the map was grown after the rollback: running it again fits
        assert env.info()["map_size"] > 1 << 20
        assert await db.count() == 37

    await bounded(scenario())


async def test_write_txn_unusable_after_map_full(open_env: Callable[..., Environment]) -> None:
    env = open_env(map_size=1 << 20, map_growth=False)
    db = env.get_default_database()
    await db.put(b"seed", b"1")

    async def fill(view: aiolmdb.AsyncDatabaseView[bytes, bytes]) -> None:
        for i in range(60):
            await view.put(b"k%02d" % i, b"x" * 40_000)

    async def overfill() -> None:
        async with env.begin(write=True) as txn:
            with pytest.raises(lmdb.MapFullError):
                await fill(txn[db])
            with pytest.raises(TransactionError):
                await txn[db].get(b"seed")
            # leaving normally tries to commit: refused, rolled back

    async def scenario() -> None:
        with pytest.raises(TransactionError, match="MapFullError"):
            await overfill()
        assert await db.count() == 1
        assert await db.put(b"small", b"1")  # the writer is fine

    await bounded(scenario())


async def test_write_txn_as_first_operation(path: Path, inline_reads: bool) -> None:
    env = aiolmdb.open(path, map_size=MAP_SIZE, inline_reads=inline_reads)
    try:

        async def scenario() -> None:
            async with env.begin(write=True) as txn:
                await txn[env.get_default_database()].put(b"k", b"v")

        await bounded(scenario(), 1.0)
    finally:
        await bounded(env.close())


async def test_database_created_while_write_txn_open(env: Environment, db: Db) -> None:
    """Creating a database needs the writer thread, which the open transaction holds: using
    the new database inside it would wait for the transaction's own end, so it raises
    DeadlockError (as a plain write does) and leaves the transaction usable; the database is
    created once the transaction ends."""

    async def scenario() -> None:
        async with env.begin(write=True) as txn:
            await txn[db].put(b"before", b"1")
            fresh = env.open_db("fresh")
            with pytest.raises(DeadlockError, match="'fresh' to be created"):
                await txn[fresh].put(b"k", b"v")
            await txn[db].put(b"after", b"2")
        assert await fresh.get(b"k") is None
        assert await db.get_multi([b"before", b"after"]) == {b"before": b"1", b"after": b"2"}
        assert await fresh.put(b"k", b"v")
        assert await fresh.get(b"k") == b"v"

    await bounded(scenario(), 1.0)


async def test_cancelled_run_waiting_for_database_creation(env: Environment) -> None:
    async def scenario() -> None:
        async with WriterBlocker(env):
            fresh = env.open_db("fresh")  # creation is queued behind the blocked writer
            waiting = asyncio.ensure_future(env.run(lambda txn: txn[fresh].get(b"k")))
            await let_tasks_start()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        try:
            assert await env.run(lambda txn: txn[fresh].get(b"k")) is None
            assert await fresh.put(b"k", b"v")
        except asyncio.CancelledError as exc:
            raise AssertionError("CancelledError, though nothing cancelled this task") from exc

    await bounded(scenario())


# --------------------------------------------------------------------------------------------
# read snapshots
# --------------------------------------------------------------------------------------------


async def test_snapshot_isolation(env: Environment) -> None:
    docs, nums = await seed_two(env)
    opened = asyncio.Event()
    committed = asyncio.Event()

    async def other_writer() -> None:
        await opened.wait()
        await docs.put("a", "new")
        await docs.delete("b")
        await docs.put("z", "added")

        def fn(txn: Transaction[bytes, bytes]) -> None:
            txn[nums].put(1, 111)
            txn[nums].delete(2)

        await env.run(fn, write=True)
        async with env.begin(write=True) as txn:
            await txn[nums].put(9, 99)
        committed.set()

    async def scenario() -> None:
        writer = asyncio.ensure_future(other_writer())
        async with env.begin() as snap:
            assert is_active(snap)
            assert await snap[docs].get("a") == {"v": 1}
            opened.set()
            await committed.wait()
            # The commits are visible outside...
            assert await docs.get("a") == "new"
            assert await nums.get(9) == 99
            # ...but not inside the snapshot.
            assert await snap[docs].get("a") == {"v": 1}
            assert await snap[docs].get("z", "absent") == "absent"
            assert await snap[docs].get_multi(["a", "b", "z"]) == {
                "a": {"v": 1},
                "b": [1, 2],
                "z": None,
            }
            assert [p async for p in snap[docs].items()] == [
                ("a", {"v": 1}),
                ("b", [1, 2]),
                ("c", "keep"),
            ]
            assert [k async for k in snap[nums].keys(batch_size=1)] == [1, 2, 3]
            assert [v async for v in snap[nums].values(reverse=True)] == [30, 20, 10]
            assert await snap[nums].count() == 3
            assert await snap[nums].first() == (1, 10)
            assert await snap[nums].last() == (3, 30)
        assert not is_active(snap)
        await bounded(writer)
        assert [p async for p in docs.items()] == [("a", "new"), ("c", "keep"), ("z", "added")]
        assert [p async for p in nums.items()] == [(1, 111), (3, 30), (9, 99)]
        await assert_no_reader_held(env)
        with pytest.raises(TransactionError):
            await snap[docs].get("a")
        async with env.begin() as snap2:  # a new snapshot sees the new state
            assert await snap2[nums].get(1) == 111

    await bounded(scenario())


async def test_snapshot_holds_a_reader_slot_until_exit(env: Environment, db: Db) -> None:
    await db.put(b"k", b"v")

    async def scenario() -> None:
        await assert_no_reader_held(env)
        async with env.begin() as snap:
            assert await snap[db].get(b"k") == b"v"
            assert len(reader_txnids(env)) == 1
        await assert_no_reader_held(env)
        await snap.close()  # idempotent
        with pytest.warns(DeprecationWarning, match="close"):
            snap.release()  # the old spelling still ends it
        await assert_no_reader_held(env)

    await bounded(scenario())


async def test_snapshot_concurrent_gets(env: Environment) -> None:
    nums = await env.open_db("nums", key_coder=UInt64Coder(), value_coder=UInt64Coder())
    await nums.put_multi({i: i * 3 for i in range(200)})

    async def scenario() -> None:
        async with env.begin() as snap:
            view = snap[nums]
            changed = asyncio.ensure_future(nums.put_multi({i: 0 for i in range(200)}))
            results = await asyncio.gather(
                *(view.get(i) for i in range(200)),
                view.get_multi(range(100, 200)),
                view.count(),
                changed,
            )
            assert list(results[:200]) == [i * 3 for i in range(200)]
            assert results[200] == {i: i * 3 for i in range(100, 200)}
            assert results[201] == 200
            assert [p async for p in view.items(batch_size=7)] == [(i, i * 3) for i in range(200)]
        assert await nums.get(5) == 0
        await assert_no_reader_held(env)

    await bounded(scenario())


SNAPSHOT_WRITES: list[tuple[str, Callable[[aiolmdb.AsyncDatabaseView[bytes, bytes]], Any]]] = [
    ("put", lambda v: v.put(b"k", b"v")),
    ("put_multi", lambda v: v.put_multi({b"k": b"v"})),
    ("delete", lambda v: v.delete(b"a")),
    ("delete_multi", lambda v: v.delete_multi([b"a"])),
    ("pop", lambda v: v.pop(b"a")),
    ("replace", lambda v: v.replace(b"a", b"v")),
    ("update", lambda v: v.update(b"a", lambda old: b"v")),
]


async def test_snapshot_is_read_only(env: Environment, db: Db) -> None:
    await db.put(b"a", b"1")

    async def scenario() -> None:
        async with env.begin() as snap:
            for name, write in SNAPSHOT_WRITES:
                with pytest.raises(ReadOnlyError) as info:
                    await write(snap[db])
                assert isinstance(info.value, lmdb.ReadonlyError), name
            assert await snap[db].get(b"a") == b"1"  # still usable
        assert await db.get_multi([b"a", b"k"]) == {b"a": b"1", b"k": None}
        await assert_no_reader_held(env)

    await bounded(scenario())


async def test_snapshot_released_on_exception_and_cancellation(env: Environment, db: Db) -> None:
    await db.put(b"k", b"v")
    inside = asyncio.Event()
    snaps: list[aiolmdb.Snapshot] = []

    async def holder() -> None:
        async with env.begin() as snap:
            snaps.append(snap)
            assert await snap[db].get(b"k") == b"v"
            inside.set()
            await asyncio.Event().wait()  # cancelled here

    async def failing() -> None:
        async with env.begin() as snap:
            snaps.append(snap)
            await snap[db].get(b"k")
            raise Boom

    async def scenario() -> None:
        with pytest.raises(Boom):
            await failing()
        assert not is_active(snaps.pop())
        await assert_no_reader_held(env)

        task = asyncio.ensure_future(holder())
        await inside.wait()
        assert len(reader_txnids(env)) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await assert_no_reader_held(env)
        with pytest.raises(TransactionError):
            await snaps[0][db].get(b"k")

    await bounded(scenario())


@pytest.fixture
async def env1(path: Path, inline_reads: bool) -> AsyncIterator[Environment]:
    """An environment with ONE reader thread, so the order of reader-thread work is observable:
    work submitted later runs after work submitted earlier."""
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="test-reader")
    env = aiolmdb.open(path, map_size=MAP_SIZE, inline_reads=inline_reads, executor=executor)
    try:
        yield env
    finally:
        await bounded(env.close())
        executor.shutdown(wait=True)


async def reader_barrier(env: Environment) -> None:
    """Return once the single reader thread has run everything submitted before this call
    (env.run always goes through the reader pool, also with inline_reads)."""
    await bounded(env.run(lambda txn: None))


async def test_snapshot_cancelled_during_in_flight_read(env1: Environment) -> None:
    """Cancelled while its command runs on a reader thread: released right after it."""
    env = env1
    gate = Gate()
    gated = await env.open_db("gated", value_coder=GateCoder(gate, on_decode=True))
    await gated.put(b"held", b"gate")
    snaps: list[aiolmdb.Snapshot] = []  # keeps it referenced: its __del__ must not do the job

    async def holder() -> None:
        async with env.begin() as snap:
            snaps.append(snap)
            await snap[gated].get(b"held")  # the reader thread stops in the coder

    async def scenario() -> None:
        task = asyncio.ensure_future(holder())
        await gate.wait_entered()
        assert len(reader_txnids(env)) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task  # the snapshot's exit ran while its command still held it
        gate.release.set()
        await reader_barrier(env)  # queued behind the deferred release
        await assert_no_reader_held(env)
        assert not is_active(snaps[0])

    try:
        await bounded(scenario())
    finally:
        gate.release.set()


async def test_snapshot_cancelled_while_beginning(env1: Environment) -> None:
    env = env1
    gate = Gate()
    gated = await env.open_db("gated", value_coder=GateCoder(gate, on_decode=True))
    await gated.put(b"held", b"gate")

    async def scenario() -> None:
        # Occupy the only reader thread, so the snapshot's begin waits behind it.
        blocker = asyncio.ensure_future(env.run(lambda txn: txn[gated].get(b"held")))
        await gate.wait_entered()
        snap = env.begin()
        task = asyncio.ensure_future(snap.begin())
        await let_tasks_start()  # begin() has queued its work
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.release.set()
        assert await bounded(blocker) == b"gate"
        await reader_barrier(env)  # the queued begin ran (and gave its transaction back)
        await assert_no_reader_held(env)
        assert not is_active(snap)
        with pytest.raises(TransactionError):
            await snap[gated].get(b"held")

    try:
        await bounded(scenario())
    finally:
        gate.release.set()


async def test_snapshot_expires_when_the_map_grows(open_env: Callable[..., Environment]) -> None:
    env = open_env(map_size=1 << 20)
    db = env.get_default_database()
    await db.put(b"a", b"1")

    async def scenario() -> None:
        async with env.begin() as snap:
            assert await snap[db].get(b"a") == b"1"
            for i in range(40):  # up to 8 MB in 200 KB commits: the map must grow
                await db.put_multi([(b"k%03d-%02d" % (i, j), b"x" * 4000) for j in range(50)])
                if env.info()["map_size"] > 1 << 20:
                    break
            assert env.info()["map_size"] > 1 << 20
            with pytest.raises(SnapshotExpiredError) as info:
                await snap[db].get(b"a")
            assert isinstance(info.value, TransactionError)
        await assert_no_reader_held(env)
        async with env.begin() as snap2:
            assert await snap2[db].get(b"a") == b"1"

    await bounded(scenario())


async def test_snapshot_is_consistent_across_databases(env: Environment) -> None:
    """Two databases updated together by each commit never look out of step in a snapshot."""
    left = await env.open_db("left", key_coder=StringCoder(), value_coder=UInt64Coder())
    right = await env.open_db("right", key_coder=StringCoder(), value_coder=UInt64Coder())
    await left.put("n", 0)
    await right.put("n", 0)

    def bump(txn: Transaction[bytes, bytes]) -> None:
        txn[left].update("n", lambda o: (o or 0) + 1)
        txn[right].update("n", lambda o: (o or 0) + 1)

    async def scenario() -> None:
        writes = asyncio.gather(*(env.run(bump, write=True) for _ in range(200)))
        checks = 0
        while not writes.done() or checks == 0:
            async with env.begin() as snap:
                first = await snap[left].get("n")
                await let_tasks_start()  # let commits land between the two reads
                assert await snap[right].get("n") == first
            checks += 1
        await writes
        assert await left.get("n") == await right.get("n") == 200

    await bounded(scenario())


# ----------------------------------------------------------------------------- await env.begin()
async def test_await_begin_write_then_commit(env: Environment, db: Db) -> None:
    async def scenario() -> None:
        txn = await env.begin(write=True)
        assert isinstance(txn, aiolmdb.WriteTransaction)
        assert is_active(txn)
        await txn[db].put(b"k", b"v")
        await txn.commit()
        assert not is_active(txn)
        assert await db.get(b"k") == b"v"
        with pytest.raises(TransactionError, match="already ended"):
            await txn[db].get(b"k")
        with pytest.raises(TransactionError, match="not active"):
            await txn.commit()
        txn = await env.begin(write=True)
        await txn[db].put(b"k", b"rolled back")
        await txn.abort()
        assert await db.get(b"k") == b"v"

    await bounded(scenario())


async def test_await_begin_snapshot_then_close(env: Environment, db: Db) -> None:
    await db.put(b"k", b"old")

    async def scenario() -> None:
        snap = await env.begin()
        assert isinstance(snap, aiolmdb.Snapshot)
        await db.put(b"k", b"new")
        assert await snap[db].get(b"k") == b"old"  # it began at the await
        assert len(reader_txnids(env)) == 1
        await snap.close()
        await assert_no_reader_held(env)
        with pytest.raises(TransactionError, match="already ended"):
            await snap[db].get(b"k")
        await snap.close()  # idempotent

    await bounded(scenario())


async def test_awaiting_a_transaction_twice_fails(env: Environment, db: Db) -> None:
    async def scenario() -> None:
        snap = await env.begin()
        with pytest.raises(TransactionError, match="already begun"):
            await snap
        await snap.close()
        with pytest.raises(TransactionError, match="already begun"):
            await snap  # ended: it cannot begin again either
        txn = await env.begin(write=True)
        with pytest.raises(TransactionError, match="already begun"):
            await txn
        assert is_active(txn)  # the failed await left it alone
        await txn.abort()

    await bounded(scenario())


async def test_async_with_takes_over_an_awaited_transaction(env: Environment, db: Db) -> None:
    async def scenario() -> None:
        async with await env.begin(write=True) as txn:
            await txn[db].put(b"k", b"v")
        assert not is_active(txn)  # the block committed it
        assert await db.get(b"k") == b"v"
        async with await env.begin() as snap:
            assert await snap[db].get(b"k") == b"v"
        assert not is_active(snap)
        await assert_no_reader_held(env)

    await bounded(scenario())


async def test_await_begin_write_cancelled_while_waiting_for_the_writer(
    env: Environment, db: Db
) -> None:
    async def waiter() -> None:
        txn = await env.begin(write=True)  # pragma: no cover - cancelled before it begins
        await txn[db].put(b"waiter", b"1")
        await txn.commit()

    async def scenario() -> None:
        async with env.begin(write=True) as holder:
            task = asyncio.ensure_future(waiter())
            await let_tasks_start()  # it waits for the writer, behind this transaction
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await holder[db].put(b"holder", b"1")
        txn = await env.begin(write=True)  # the writer is free again
        await txn[db].put(b"after", b"1")
        await txn.commit()
        assert await db.get_multi([b"holder", b"waiter", b"after"]) == {
            b"holder": b"1",
            b"waiter": None,
            b"after": b"1",
        }

    await bounded(scenario())


async def test_await_begin_snapshot_cancelled_while_beginning(env1: Environment) -> None:
    env = env1
    gate = Gate()
    gated = await env.open_db("gated", value_coder=GateCoder(gate, on_decode=True))
    await gated.put(b"held", b"gate")

    async def scenario() -> None:
        blocker = asyncio.ensure_future(env.run(lambda txn: txn[gated].get(b"held")))
        await gate.wait_entered()
        snap = env.begin()
        task = asyncio.ensure_future(_await(snap))
        await let_tasks_start()  # the await has queued its begin behind the blocker
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.release.set()
        assert await bounded(blocker) == b"gate"
        await reader_barrier(env)
        await assert_no_reader_held(env)
        assert not is_active(snap)
        with pytest.raises(TransactionError):
            await snap[gated].get(b"held")

    try:
        await bounded(scenario())
    finally:
        gate.release.set()


async def _await(txn: aiolmdb.Snapshot | aiolmdb.WriteTransaction) -> None:
    await txn


# ----------------------------------------------------------------------------- views persist
async def test_a_transaction_hands_out_one_view_per_database(env: Environment, db: Db) -> None:
    """Coders set on ``txn[db]`` stay set for the rest of the transaction."""
    other = await env.open_db("other")

    async def scenario() -> None:
        async with env.begin(write=True) as txn:
            assert txn[db] is txn[db]
            assert txn[other] is not txn[db]
            view: Any = txn[db]  # its coders change type
            view.value_coder = JSONCoder()
            await txn[db].put(b"doc", {"a": 1})  # type: ignore[arg-type]
            assert await view.get(b"doc") == {"a": 1}
            assert db.value_coder is not view.value_coder  # the database's are unchanged
        assert await db.get(b"doc") == b'{"a": 1}'
        async with env.begin() as snap:
            sview: Any = snap[db]
            sview.key_coder = StringCoder()
            assert await snap[db].get("doc") == b'{"a": 1}'  # type: ignore[call-overload]
        async with env.begin() as snap2:  # a new transaction starts from the database's
            assert snap2[db] is not snap[db]
            assert snap2[db].key_coder is db.key_coder

    await bounded(scenario())


async def test_run_views_persist_their_coders(env: Environment, db: Db) -> None:
    other = await env.open_db("other")

    def fn(txn: Transaction[bytes, bytes]) -> Any:
        assert txn[other] is txn[other]
        view: Any = txn[other]  # its coders change type
        view.value_coder = JSONCoder()
        txn[other].put(b"doc", {"a": 1})  # type: ignore[arg-type]
        whole: Any = txn
        whole.key_coder = StringCoder()
        txn.put("k", b"v")  # type: ignore[arg-type]
        assert isinstance(whole.key_coder, StringCoder)
        return txn[other].get(b"doc")

    assert await env.run(fn, write=True) == {"a": 1}
    assert await other.get(b"doc") == b'{"a": 1}'
    assert await env.get_default_database().get(b"k") == b"v"
    assert isinstance(env.get_default_database().key_coder, aiolmdb.IdentityCoder)


async def test_a_view_of_another_environment_is_refused(env: Environment, tmp_path: Path) -> None:
    async with aiolmdb.open(tmp_path / "other", map_size=MAP_SIZE) as other_env:
        foreign = other_env.get_default_database()
        async with env.begin() as snap:
            with pytest.raises(ValueError, match="another environment"):
                snap[foreign]


async def test_a_snapshot_dropped_without_close_frees_its_reader_slot(
    env: Environment, db: Db
) -> None:
    async def scenario() -> None:
        snap = await env.begin()
        assert await snap[db].get(b"k") is None
        assert len(reader_txnids(env)) == 1
        del snap
        gc.collect()
        await assert_no_reader_held(env)

    await bounded(scenario())


async def test_a_snapshot_sees_a_database_whose_open_was_not_awaited(env: Environment) -> None:
    """open_db returns before the database exists (its creation is queued to the writer); a
    snapshot begun right after must still read it, not fail with LMDB's EINVAL."""
    fresh = env.open_db("fresh-for-snapshot")
    async with env.begin() as snap:
        assert await snap[fresh].get_multi([b"a"]) == {b"a": None}
        assert await snap[fresh].get(b"a") is None
