"""Reliability: reader slots (promise 7).

* ``max_readers=4`` with hundreds of concurrent readers: batching uses few read transactions,
  so no ``lmdb.ReadersFullError``;
* reader slots left by crashed processes (children that began a read transaction and were
  SIGKILLed) are cleared: at open (``reader_check``), and when the table is full at run time.

A third process keeps the environment open throughout the crash tests: LMDB resets the whole
reader table when the first process opens an environment nobody has open, which would hide
whether aiolmdb itself clears stale slots.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import lmdb
import pytest

import aiolmdb
from aiolmdb.coders import Buffer, Coder

from ._stress_util import (
    TIMEOUT,
    Figures,
    lmdb_readers_of,
    open_env,
    open_read_txns,
    reader_rows,
    spawn_child,
)

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="kills processes with SIGKILL (POSIX only)"
)

MAX_READERS = 4


class Child:
    def __init__(self, proc: asyncio.subprocess.Process, pid: int, state: str) -> None:
        self.proc = proc
        self.pid = pid
        self.state = state  # "-" (no transaction), a txn id, or "full"


@asynccontextmanager
async def children() -> AsyncIterator[list[Child]]:
    """Collects reader children started with :func:`start_child`; ends them all on exit."""
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in started:
            if child.proc.returncode is None:
                child.proc.kill()
            await asyncio.wait_for(child.proc.wait(), TIMEOUT)


async def start_child(path: Path, mode: str, into: list[Child]) -> Child:
    proc = await spawn_child(
        "_child_reader",
        path,
        mode,
        MAX_READERS,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode().split()
    if not line:
        proc.kill()
        await proc.wait()
        raise AssertionError((await proc.stderr.read()).decode())
    assert line[0] == "ready", line
    child = Child(proc, int(line[1]), line[2])
    into.append(child)
    return child


async def kill(child: Child) -> None:
    child.proc.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(child.proc.wait(), TIMEOUT) == -signal.SIGKILL


async def populate(path: Path) -> None:
    env = open_env(path, max_readers=MAX_READERS)
    db = env.get_default_database()
    assert await db.put_multi([(b"k%04d" % i, b"v%d" % i) for i in range(2000)]) == 2000
    await asyncio.wait_for(env.close(), TIMEOUT)


async def heavy_reading(db: aiolmdb.AsyncDatabase[bytes, bytes], tasks: int = 128) -> int:
    """Hundreds of concurrent readers: point reads, get_multi, range scans; returns reads."""

    async def getter(t: int) -> int:
        for i in range(40):
            n = (t * 40 + i) % 2000
            assert await db.get(b"k%04d" % n) == b"v%d" % n
        got = await db.get_multi([b"k%04d" % ((t + j) % 2000) for j in range(10)])
        assert len(got) == 10
        return 41

    async def scanner() -> int:
        count = 0
        async for _ in db.items(prefix=b"k", batch_size=97):
            count += 1
        assert count == 2000
        return 1

    results = await asyncio.wait_for(
        asyncio.gather(*(getter(t) for t in range(tasks)), *(scanner() for _ in range(12))),
        TIMEOUT,
    )
    return sum(results)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("inline_reads", "readers"),
    [(False, 2), (False, MAX_READERS), (True, 2), (None, 2)],
    ids=["threaded-2", "threaded-4", "inline-2", "auto-2"],
)
async def test_few_reader_slots_many_concurrent_readers(
    tmp_path: Path, inline_reads: bool | None, readers: int, figures: Figures
) -> None:
    path = tmp_path / "env"
    await populate(path)
    env = open_env(path, max_readers=MAX_READERS, readers=readers, inline_reads=inline_reads)
    try:
        db = env.get_default_database()
        writes = [asyncio.ensure_future(db.put(b"w%04d" % i, b"w")) for i in range(500)]
        reads = await heavy_reading(db)
        assert await asyncio.wait_for(asyncio.gather(*writes), TIMEOUT) == [True] * 500
        assert env.info()["num_readers"] <= MAX_READERS
    finally:
        await asyncio.wait_for(env.close(), TIMEOUT)
    figures.add("readers: reads with max_readers=4 (no ReadersFullError)", reads)


class BlockingCoder(Coder[bytes]):
    """Values decode only once released: each read holds its transaction (and slot) open."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def serialize(self, obj: bytes) -> bytes:
        return obj

    def deserialize(self, buffer: Buffer) -> bytes:
        self.entered.release()
        if not self.release.wait(TIMEOUT):
            raise TimeoutError("BlockingCoder was never released")
        return bytes(buffer)


async def hold_reads(
    env: aiolmdb.Environment, count: int
) -> tuple[BlockingCoder, list[asyncio.Future[Any]]]:
    """``count`` reads, each in its own drain (issued one after the other has started), all
    blocked inside their read transaction."""
    coder = BlockingCoder()
    slow = env.open_db(None, value_coder=coder)
    held: list[asyncio.Future[Any]] = []
    for _ in range(count):
        held.append(asyncio.ensure_future(slow.get(b"k0001")))
        entered = await asyncio.to_thread(coder.entered.acquire, True, TIMEOUT)
        assert entered, "a read never started"
    return coder, held


class RefusedBegin:
    """Notices a ``begin()`` on a py-lmdb environment that raises (here: the reader table is
    full), in the threads started while it is installed. py-lmdb's Environment is a C type whose
    methods cannot be wrapped, so this watches calls with a thread profile hook; aiolmdb's
    reader threads start on first use, so install it before the first read."""

    def __init__(self) -> None:
        self.seen = threading.Event()

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if (
            event == "c_exception"
            and getattr(arg, "__name__", None) == "begin"
            and isinstance(getattr(arg, "__self__", None), lmdb.Environment)
        ):
            self.seen.set()

    def __enter__(self) -> RefusedBegin:
        threading.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        threading.setprofile(None)


async def test_more_reader_threads_than_slots_never_fail(tmp_path: Path) -> None:
    # Reader threads and their slots are what this tests: reads="threaded" (auto would read
    # inline on the loop once the data is resident, and block it in the BlockingCoder).
    path = tmp_path / "env"
    await populate(path)
    with RefusedBegin() as refused:
        # readers=8 is what aiolmdb picks by default on a machine with 8 or more cores.
        env = open_env(path, max_readers=MAX_READERS, readers=8, reads="threaded")
        coder, held = await hold_reads(env, MAX_READERS)
        refused.seen.clear()
        try:
            db = env.get_default_database()
            fifth = asyncio.ensure_future(db.get(b"k0002"))
            # While every slot is taken the fifth read must wait for one, not fail: the slow
            # reads are released once it has been refused a slot.
            asked = await asyncio.to_thread(refused.seen.wait, TIMEOUT)
        finally:
            coder.release.set()
            results = await asyncio.wait_for(asyncio.gather(*held), TIMEOUT)
    try:
        assert asked, "the fifth read never tried to begin a transaction while no slot was free"
        assert results == [b"v1"] * MAX_READERS
        assert await asyncio.wait_for(fifth, TIMEOUT) == b"v2"
    finally:
        await asyncio.wait_for(env.close(), TIMEOUT)


# --------------------------------------------------------------------------------------------
# stale slots of crashed processes
# --------------------------------------------------------------------------------------------


async def stale_slots(path: Path, into: list[Child], limit: int) -> set[int]:
    """Start up to ``limit`` children that each take a reader slot (stopping early when the
    table is full), then SIGKILL them all; returns the pids that died holding a slot."""
    holding: list[Child] = []
    for _ in range(limit):
        child = await start_child(path, "txn", into)
        if child.state == "full":
            await kill(child)
            break
        assert child.state.isdigit(), child.state
        holding.append(child)
    for child in holding:
        await kill(child)
    return {child.pid for child in holding}


@pytest.mark.timeout(60)
async def test_stale_reader_slots_cleared_at_open(tmp_path: Path, figures: Figures) -> None:
    path = tmp_path / "env"
    await populate(path)
    async with children() as started:
        await start_child(path, "hold", started)  # keeps the reader table alive
        # Leave one slot free: opening an environment takes one (see the next test).
        dead = await stale_slots(path, started, MAX_READERS - 1)
        assert len(dead) == MAX_READERS - 1
        # Precondition: the slots really are there, stale, before aiolmdb opens the env.
        before = reader_rows(lmdb_readers_of(path))
        assert dead <= {pid for pid, _, txnid in before if txnid.isdigit()}, before

        env = open_env(path, max_readers=MAX_READERS)
        try:
            table = env.readers()
            assert not [row for row in reader_rows(table) if row[0] in dead], table
            db = env.get_default_database()
            reads = await heavy_reading(db, tasks=64)
            assert await db.put(b"after", b"crash")
            assert not open_read_txns(env.readers())
        finally:
            await asyncio.wait_for(env.close(), TIMEOUT)
    figures.add("readers: stale slots of SIGKILLed readers cleared", len(dead))
    figures.add("readers: reads after clearing stale slots", reads)


@pytest.mark.timeout(60)
async def test_open_with_a_table_full_of_stale_slots_says_how_to_recover(tmp_path: Path) -> None:
    """py-lmdb takes a reader slot while opening, before aiolmdb can run reader_check, so an
    environment whose table is full of stale slots cannot be opened here (a py-lmdb limit):
    the error must say why and how to recover, and recovering must work."""
    path = tmp_path / "env"
    await populate(path)
    async with children() as started:
        await start_child(path, "hold", started)
        dead = await stale_slots(path, started, MAX_READERS + 1)
        assert len(dead) == MAX_READERS  # every slot of the table is stale
        with pytest.raises(lmdb.ReadersFullError, match=r"reader table is full.*mdb_stat -rr"):
            open_env(path, max_readers=MAX_READERS)
        # The recovery the message names: LMDB's own tool frees the stale slots.
        mdb_stat = shutil.which("mdb_stat")
        if mdb_stat is None:
            pytest.skip("mdb_stat (lmdb-utils) is not installed: cannot check the recovery")
        proc = await asyncio.to_thread(
            subprocess.run, [mdb_stat, "-rr", str(path)], capture_output=True, timeout=TIMEOUT
        )
        # mdb_stat 0.9.24 exits 1 after -rr even when it worked: judge by what it says.
        assert b"stale readers cleared" in proc.stdout, (proc.returncode, proc.stdout, proc.stderr)
        env = open_env(path, max_readers=MAX_READERS)
        try:
            assert not [row for row in reader_rows(env.readers()) if row[0] in dead]
            assert await env.get_default_database().get(b"k0001") == b"v1"
        finally:
            await asyncio.wait_for(env.close(), TIMEOUT)


@pytest.mark.timeout(60)
async def test_stale_reader_slots_cleared_when_table_fills_at_run_time(tmp_path: Path) -> None:
    path = tmp_path / "env"
    await populate(path)
    env = open_env(path, max_readers=MAX_READERS, readers=MAX_READERS, reads="threaded")
    try:
        db = env.get_default_database()
        assert await db.get(b"k0001") == b"v1"
        async with children() as started:
            # This process has the environment open, so nothing resets the table; children
            # take every free slot and die holding them.
            dead = await stale_slots(path, started, MAX_READERS + 1)
            assert dead
            # MAX_READERS reads at once need every slot of the table: the engine must free
            # the dead ones (reader_check on ReadersFullError) rather than fail.
            coder, held = await hold_reads(env, MAX_READERS)
            coder.release.set()
            assert await asyncio.wait_for(asyncio.gather(*held), TIMEOUT) == [b"v1"] * 4
            assert not [row for row in reader_rows(env.readers()) if row[0] in dead]
            assert await heavy_reading(db, tasks=32) > 0
    finally:
        await asyncio.wait_for(env.close(), TIMEOUT)


@pytest.mark.timeout(60)
async def test_readers_full_is_still_reported_when_nothing_is_stale(tmp_path: Path) -> None:
    """The reader_check retry must not hide a genuinely full table (slots held by live
    processes): the error still reaches the caller, clearly."""
    path = tmp_path / "env"
    await populate(path)
    env = open_env(path, max_readers=MAX_READERS, readers=2, reads="threaded")
    try:
        async with children() as started:
            live = []
            for _ in range(MAX_READERS + 1):
                child = await start_child(path, "txn", started)
                if child.state == "full":
                    break
                live.append(child)
            db = env.get_default_database()
            with pytest.raises(lmdb.ReadersFullError):
                await asyncio.wait_for(db.get(b"k0001"), TIMEOUT)
            await kill(live[0])  # one slot becomes stale: reads work again
            assert await asyncio.wait_for(db.get(b"k0001"), TIMEOUT) == b"v1"
    finally:
        await asyncio.wait_for(env.close(), TIMEOUT)
