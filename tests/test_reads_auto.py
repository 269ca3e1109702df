"""reads="auto": the mode's choice (residency, faults), its fairness, prefetching.

Residency and faults are injected through ``aiolmdb._engine.residency`` (its ``probe`` and
``major_faults`` are read when an environment opens), so these tests need not evict the page
cache; one test does evict it for real, where the filesystem lets it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import lmdb
import pytest
from conftest import MAP_SIZE, TIMEOUT, collect, wait_read_mode

import aiolmdb
from aiolmdb import Environment
from aiolmdb._engine import readers, residency
from aiolmdb._engine.config import ReadMode

OpenEnv = Callable[..., Environment]
N = 2000


def key(i: int) -> bytes:
    return b"k%06d" % i


async def filled(env: Environment, n: int = N) -> aiolmdb.AsyncDatabase[bytes, bytes]:
    db = env.get_default_database()
    await db.put_multi([(key(i), b"v%d" % i) for i in range(n)])
    return db


class Probe:
    """A residency probe the test controls; counts its calls."""

    def __init__(self, fraction: float | None) -> None:
        self.fraction = fraction
        self.calls = 0

    def __call__(self, path: str, length: int, stop: Callable[[], bool]) -> float | None:
        self.calls += 1
        assert os.path.basename(path) == "data.mdb"
        assert length > 0
        return self.fraction


class Faults:
    """A major-fault counter the test controls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


@pytest.fixture
async def open_env(tmp_path: Path) -> AsyncIterator[OpenEnv]:
    """conftest's factory without its read-mode parameter: each test here names its mode."""
    opened: list[Environment] = []

    def factory(**kwargs: Any) -> Environment:
        kwargs.setdefault("map_size", MAP_SIZE)
        environment = aiolmdb.open(tmp_path / f"env{len(opened)}", **kwargs)
        opened.append(environment)
        return environment

    try:
        yield factory
    finally:
        for environment in opened:
            await asyncio.wait_for(environment.close(), TIMEOUT)


async def wait_for(predicate: Callable[[], bool]) -> None:
    """Poll a condition set by a residency check's answer (no event to wait on), bounded."""
    for _ in range(int(TIMEOUT * 1000)):
        if predicate():
            return
        await asyncio.sleep(0.001)
    assert predicate()


# ----------------------------------------------------------------- modes
@pytest.mark.parametrize(
    ("options", "mode"),
    [
        ({"reads": "inline"}, "inline"),
        ({"inline_reads": True}, "inline"),
        ({"reads": "threaded"}, "threaded"),
        ({"inline_reads": False}, "threaded"),
    ],
)
async def test_fixed_modes_never_switch(
    open_env: OpenEnv, options: dict[str, Any], mode: str
) -> None:
    env = open_env(**options)
    db = await filled(env)
    assert [await db.get(key(i)) for i in range(100)] == [b"v%d" % i for i in range(100)]
    m = env.metrics()
    assert (m.read_mode, m.read_mode_switches, m.residency_checks) == (mode, 0, 0)
    assert m.residency == -1.0
    assert (m.reads > 0) is (mode == "threaded")
    assert (m.inline_read_transactions > 0) is (mode == "inline")


async def test_auto_is_the_default_and_goes_inline_once_resident(
    open_env: OpenEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiolmdb")
    env = open_env()
    m = env.metrics()
    assert m.read_mode == "threaded"  # until a check says otherwise
    db = await filled(env)  # a fresh environment: everything written is in the page cache
    await wait_read_mode(env, "inline")
    before = env.metrics()
    assert [await db.get(key(i)) for i in range(N)] == [b"v%d" % i for i in range(N)]
    m = env.metrics()
    assert m.residency == 1.0
    assert m.residency_checks >= 1
    assert m.read_mode_switches == 1
    assert m.reads == before.reads  # none went to a reader thread
    assert m.inline_read_transactions > before.inline_read_transactions
    assert any("now inline" in r.getMessage() for r in caplog.records)


async def test_auto_stays_threaded_while_not_resident(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = Probe(0.5)
    monkeypatch.setattr(residency, "probe", probe)
    env = open_env()
    db = await filled(env)
    await wait_for(lambda: env.metrics().residency_checks >= 2)  # checks go on while threaded
    assert [await db.get(key(i)) for i in range(50)] == [b"v%d" % i for i in range(50)]
    m = env.metrics()
    assert (m.read_mode, m.read_mode_switches, m.residency) == ("threaded", 0, 0.5)
    assert m.reads >= 50
    assert m.inline_read_transactions == 0
    assert probe.calls >= 2


async def test_auto_is_threaded_where_residency_cannot_be_measured(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(residency, "probe", Probe(None))
    env = open_env()
    db = await filled(env)
    await wait_for(lambda: env.metrics().residency_checks >= 1)
    assert await db.get(key(1)) == b"v1"
    m = env.metrics()
    assert (m.read_mode, m.residency, m.inline_read_transactions) == ("threaded", -1.0, 0)


async def test_data_larger_than_memory_stays_threaded_without_probing(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = Probe(1.0)
    monkeypatch.setattr(residency, "probe", probe)
    monkeypatch.setattr(residency, "physical_memory", lambda: 4096)  # less than one page set
    env = open_env()
    db = await filled(env)
    await wait_for(lambda: env.metrics().residency_checks >= 1)
    assert await db.get(key(2)) == b"v2"
    m = env.metrics()
    assert (m.read_mode, m.residency) == ("threaded", 0.0)
    assert probe.calls == 0


async def test_auto_follows_residency_down_and_up(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiolmdb")
    probe = Probe(1.0)
    monkeypatch.setattr(residency, "probe", probe)
    monkeypatch.setattr(readers, "_INLINE_RECHECK", 0.01)  # recheck soon while inline too
    env = open_env()
    db = await filled(env)
    await wait_read_mode(env, "inline")
    probe.fraction = 0.9  # e.g. evicted by memory pressure
    await wait_read_mode(env, "threaded")
    assert await db.get(key(3)) == b"v3"
    probe.fraction = 0.995
    await wait_read_mode(env, "inline")
    assert await db.get(key(4)) == b"v4"
    m = env.metrics()
    assert m.read_mode_switches == 3
    assert m.residency == 0.995
    messages = [r.getMessage() for r in caplog.records if r.name == "aiolmdb"]
    assert any("only 90.0% of the data file" in text for text in messages)


async def test_a_major_fault_in_an_inline_read_moves_reads_to_threads(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = Probe(1.0)
    faults = Faults()
    monkeypatch.setattr(residency, "probe", probe)
    monkeypatch.setattr(residency, "major_faults", faults)
    env = open_env()
    db = await filled(env)
    await wait_read_mode(env, "inline")
    checks = env.metrics().residency_checks
    probe.fraction = 0.5  # what the check after the fault will find

    class Faulting(aiolmdb.IdentityCoder):
        """Decodes on the loop thread (inline) and 'faults' while doing so."""

        def deserialize(self, buffer: Any) -> bytes:
            faults.count += 1
            return bytes(buffer)

    fdb = await env.open_db("faulting", value_coder=Faulting())
    await fdb.put(b"a", b"1")
    assert await fdb.get(b"a") == b"1"  # inline: the fault is seen when its txn is released
    await wait_for(lambda: env.metrics().read_mode == "threaded")
    m = env.metrics()
    assert m.read_faults == 1
    await wait_for(lambda: env.metrics().residency_checks > checks)  # checked at once
    assert env.metrics().read_mode == "threaded"
    assert await db.get(key(5)) == b"v5"
    probe.fraction = 1.0
    await wait_read_mode(env, "inline")  # back once resident again
    assert env.metrics().read_mode_switches == 3


async def test_no_fault_no_switch(open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    faults = Faults()
    monkeypatch.setattr(residency, "major_faults", faults)
    env = open_env()
    db = await filled(env)
    await wait_read_mode(env, "inline")
    for i in range(N):
        assert await db.get(key(i)) == b"v%d" % i
        await asyncio.sleep(0)  # a new loop iteration: the transaction is released each time
    m = env.metrics()
    assert (m.read_mode, m.read_faults, m.read_mode_switches) == ("inline", 0, 1)
    assert m.inline_read_transactions >= N


async def test_close_stops_a_residency_check_under_way(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check of a large file takes seconds: close does not wait for all of it."""
    started = threading.Event()
    stopped = threading.Event()

    def long_probe(path: str, length: int, stop: Callable[[], bool]) -> float | None:
        started.set()
        pause = threading.Event()
        for _ in range(int(TIMEOUT * 1000)):  # as residency does between its windows
            if stop():
                stopped.set()
                return None
            pause.wait(0.001)
        return 1.0

    monkeypatch.setattr(residency, "probe", long_probe)
    env = open_env()
    await filled(env, 10)
    assert await asyncio.to_thread(started.wait, TIMEOUT)
    await asyncio.wait_for(env.close(), TIMEOUT)
    assert stopped.is_set()


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="needs os.posix_fadvise")
async def test_evicted_data_is_read_on_threads(tmp_path: Path) -> None:
    """The real thing: a closed, fsynced environment whose pages are dropped from the page
    cache is found not resident, and read on reader threads."""
    path = tmp_path / "cold"
    async with aiolmdb.open(path, map_size=4 * MAP_SIZE, reads="threaded") as env:
        db = env.get_default_database()
        await db.put_multi([(key(i), b"v") for i in range(100)])
        # 48 MiB of large values: more than the kernel reads ahead at one fault (up to 8 MiB
        # on some machines), so one read cannot bring the file back.
        await db.put_multi([(b"big%02d" % i, os.urandom(1 << 20)) for i in range(48)])
    data = str(path / "data.mdb")
    fd = os.open(data, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    fraction = residency.resident_fraction(data, 1 << 40)  # the whole file
    if fraction is None or fraction >= residency.RESIDENT:
        pytest.skip(f"cannot evict the page cache here (resident after eviction: {fraction})")
    async with aiolmdb.open(path, map_size=4 * MAP_SIZE, readahead=False) as env:
        db = env.get_default_database()
        assert await db.get(key(7)) == b"v"  # binds the loop: the first check starts
        await wait_for(lambda: env.metrics().residency_checks >= 1)
        m = env.metrics()
        assert m.read_mode == "threaded"
        assert 0.0 <= m.residency < residency.RESIDENT
        assert m.inline_read_transactions == 0


def test_resident_fraction_of_a_file(tmp_path: Path) -> None:
    data = tmp_path / "f"
    data.write_bytes(os.urandom(1 << 20))
    fraction = residency.resident_fraction(str(data), 1 << 20)
    if fraction is None:
        pytest.skip("no mincore here")
    assert fraction == 1.0  # just written: in the page cache
    assert residency.resident_fraction(str(data), 0) == 1.0
    assert residency.resident_fraction(str(tmp_path / "absent"), 4096) is None
    assert residency.resident_fraction(str(data), 1 << 20, lambda: True) is None  # stopped


def mappings_of(path: Path) -> list[str]:
    """This process's mappings of the file at ``path`` (lines of /proc/self/maps)."""
    with open("/proc/self/maps") as f:
        return [line for line in f if line.rstrip("\n").endswith(" " + str(path))]


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
def test_a_probe_keeps_one_mapping_between_checks(tmp_path: Path) -> None:
    """Mapping and unmapping stall threads faulting pages in: a probe maps the file once, and
    again only when the used part outgrows its mapping."""
    data = tmp_path / "f"
    data.write_bytes(os.urandom(1 << 20))
    probe = residency.MappedProbe()
    try:
        if probe(str(data), 1 << 20) is None:
            pytest.skip("no mincore here")
        first = mappings_of(data)
        assert len(first) == 1
        for _ in range(3):
            assert probe(str(data), 1 << 20) == 1.0
        assert mappings_of(data) == first  # the same mapping, not a new one per check
        with open(data, "ab") as f:  # the file outgrows the mapping
            f.write(os.urandom(residency._MAP_STEP))
        assert probe(str(data), 2 * residency._MAP_STEP) == 1.0
        (line,) = mappings_of(data)
        assert line != first[0]  # remapped, the old mapping gone
    finally:
        probe.close()
    assert mappings_of(data) == []
    assert probe(str(data), 1 << 20) is None  # closed


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
async def test_an_auto_environment_maps_its_data_file_once(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(readers, "_INLINE_RECHECK", 0.01)  # check often
    env = open_env()
    db = await filled(env)
    await wait_read_mode(env, "inline")
    data = tmp_path / "env0" / "data.mdb"
    mapped = mappings_of(data)
    assert len(mapped) == 2  # LMDB's own mapping and the probe's, kept between checks
    checks = env.metrics().residency_checks
    await wait_for(lambda: env.metrics().residency_checks >= checks + 5)
    assert mappings_of(data) == mapped
    assert await db.get(key(1)) == b"v1"
    await env.close()
    assert mappings_of(data) == []  # the probe's mapping is gone with the environment


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="needs os.posix_fadvise")
def test_a_check_reads_the_few_missing_pages_of_an_almost_resident_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inline reads right after a switch must not fault on the last cold pages: the check
    that finds the file almost resident reads them on its thread."""
    page = os.sysconf("SC_PAGE_SIZE")
    data = tmp_path / "f"
    data.write_bytes(os.urandom(1000 * page))
    fd = os.open(data, os.O_RDONLY)
    try:
        os.fsync(fd)
        # Evict it all (a range smaller than the cache's folios is not evicted), then read it
        # back but for three pages, without read-ahead.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for at in range(1000):
            if at not in (10, 500, 999):
                os.pread(fd, 1, at * page)
    finally:
        os.close(fd)
    length = 1000 * page
    with monkeypatch.context() as patch:
        patch.setattr(residency, "TOUCH_MOST", 0)  # measure only
        before = residency.resident_fraction(str(data), length)
    if before is None or before == 1.0:
        pytest.skip(f"cannot evict the page cache here (resident after eviction: {before})")
    assert before >= residency.RESIDENT
    assert residency.resident_fraction(str(data), length) == 1.0  # the holes were read
    with monkeypatch.context() as patch:
        patch.setattr(residency, "TOUCH_MOST", 0)
        assert residency.resident_fraction(str(data), length) == 1.0  # and are resident


@pytest.mark.timing
async def test_threaded_rechecks_come_within_half_a_second_even_after_a_slow_check(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warming file goes inline soon after it is cached: while threaded, the next check
    never waits much more than half a second (it waited 100 times the last check's
    duration: 2 s after a 20 ms check)."""
    calls: list[float] = []
    fractions = iter([0.5])

    def slow_probe(path: str, length: int, stop: Callable[[], bool]) -> float | None:
        calls.append(time.monotonic())
        threading.Event().wait(0.02)  # stands for a check of a large file taking 20 ms
        return next(fractions, 1.0)

    monkeypatch.setattr(residency, "probe", slow_probe)
    env = open_env()
    await filled(env, 10)
    await wait_read_mode(env, "inline")
    assert len(calls) == 2
    assert 0.25 <= calls[1] - calls[0] < 0.9
    assert env.metrics().read_mode_switches == 1


# ----------------------------------------------------------------- fairness
async def ticking(ticks: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(0.001)
        ticks.append(time.perf_counter())


async def sequential_gets_beside_a_ticker(
    env: Environment, n: int
) -> tuple[list[float], float, float]:
    db = await filled(env)
    ticks: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.ensure_future(ticking(ticks, stop))
    await asyncio.sleep(0.002)  # the ticker is ticking
    ticks.clear()
    started = time.perf_counter()
    for i in range(n):
        await db.get(key(i % N))  # a plain loop: no explicit yield
    ended = time.perf_counter()
    stop.set()
    await asyncio.wait_for(ticker, TIMEOUT)
    return ticks, started, ended


async def test_auto_lets_the_loop_run_during_a_chain_of_inline_gets(open_env: OpenEnv) -> None:
    env = open_env()
    await filled(env)
    await wait_read_mode(env, "inline")
    ticks, started, ended = await sequential_gets_beside_a_ticker(env, 50_000)
    during = [t for t in ticks if started < t < ended]
    m = env.metrics()
    assert m.read_mode == "inline"
    assert m.reads == 0
    assert m.deferred_reads >= 5  # 50k gets take many milliseconds on any machine
    # The ticker ran between the gets: about once per turn the gets gave the loop.
    assert len(during) >= m.deferred_reads // 4 >= 1


async def test_inline_mode_never_yields_inside_a_chain_of_gets(open_env: OpenEnv) -> None:
    """Documented: reads="inline" completes every get without suspending the task."""
    env = open_env(inline_reads=True)
    ticks, started, ended = await sequential_gets_beside_a_ticker(env, 20_000)
    assert [t for t in ticks if started < t < ended] == []
    assert env.metrics().deferred_reads == 0


@pytest.mark.timing
async def test_auto_longest_loop_gap_is_short(open_env: OpenEnv) -> None:
    env = open_env()
    await filled(env)
    await wait_read_mode(env, "inline")
    ticks, started, ended = await sequential_gets_beside_a_ticker(env, 100_000)
    points = [started, *[t for t in ticks if started < t < ended], ended]
    gap = max(b - a for a, b in itertools.pairwise(points))
    # Loose (a busy machine deschedules the process for tens of milliseconds): reads="inline"
    # holds the loop for the whole run, auto gives it a turn about every millisecond.
    assert gap < (ended - started) / 3, f"longest loop gap {gap * 1000:.1f} ms"


async def test_many_tasks_take_turns_and_get_their_values(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "_BUDGET", 0.0)  # every check of the clock finds it spent
    monkeypatch.setattr(readers, "_CHECK_EVERY", 4)
    env = open_env()
    db = await filled(env)
    await wait_read_mode(env, "inline")
    progress = [0] * 16

    async def reader(t: int) -> list[bytes | None]:
        got = []
        for i in range(t, N, 16):
            got.append(await db.get(key(i)))
            progress[t] += 1
        return got

    results = await asyncio.wait_for(asyncio.gather(*(reader(t) for t in range(16))), TIMEOUT)
    for t, got in enumerate(results):
        assert got == [b"v%d" % i for i in range(t, N, 16)]
    m = env.metrics()
    assert m.deferred_reads > 16
    assert m.read_mode == "inline"
    assert m.reads == 0


async def test_tasks_reading_without_pause_take_one_loop_iteration_per_turn(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn ends with one read parked; the next task's turn comes in the very next loop
    iteration (after its timers and I/O), not one iteration later: every iteration reads."""
    monkeypatch.setattr(readers, "_BUDGET", 0.0)
    monkeypatch.setattr(readers, "_CHECK_EVERY", 4)  # a turn: 4 reads, then a 5th parked
    env = open_env()
    db = await filled(env)
    await wait_read_mode(env, "inline")
    loop = asyncio.get_running_loop()
    iterations = 0
    done = False

    def count() -> None:  # once per loop iteration while the readers run
        nonlocal iterations
        iterations += 1
        if not done:
            loop.call_soon(count)

    async def reader(t: int) -> None:
        for i in range(t, 800, 4):
            assert await db.get(key(i)) == b"v%d" % i

    before = env.metrics()
    loop.call_soon(count)
    await asyncio.wait_for(asyncio.gather(*(reader(t) for t in range(4))), TIMEOUT)
    done = True
    m = env.metrics()
    turns = m.deferred_reads - before.deferred_reads
    assert turns >= 800 // 5 - 4  # each turn ends with a read parked
    transactions = m.inline_read_transactions - before.inline_read_transactions
    # One iteration per turn (and a few more to start and end); two per turn before.
    assert iterations <= turns + 10, (iterations, turns, transactions)


async def test_a_parked_read_delivers_its_error_and_cancelled_ones_are_skipped(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "_BUDGET", 0.0)
    monkeypatch.setattr(readers, "_CHECK_EVERY", 1)  # the second read of an iteration parks
    env = open_env()
    db = await filled(env)
    await wait_read_mode(env, "inline")
    first = asyncio.ensure_future(db.get(key(1)))
    parked = [asyncio.ensure_future(db.get(key(i))) for i in range(2, 10)]
    failing = asyncio.ensure_future(db.get(b""))  # an empty key: InvalidKeyError
    await asyncio.sleep(0)  # every task has made its read: the first inline, the rest parked
    parked[0].cancel()
    assert await first == b"v1"
    with pytest.raises(aiolmdb.InvalidKeyError):
        await asyncio.wait_for(failing, TIMEOUT)
    with pytest.raises(asyncio.CancelledError):
        await parked[0]
    assert await asyncio.wait_for(asyncio.gather(*parked[1:]), TIMEOUT) == [
        b"v%d" % i for i in range(3, 10)
    ]
    assert env.metrics().deferred_reads >= 9


async def test_many_light_parked_reads_drain_in_a_few_iterations(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "_BUDGET", 0.0)
    monkeypatch.setattr(readers, "_CHECK_EVERY", 1)  # the second read of an iteration parks
    env = open_env()
    db = await filled(env)
    await wait_read_mode(env, "inline")
    reads = [asyncio.ensure_future(db.get(key(i))) for i in range(256)]
    iterations = 0
    while not all(r.done() for r in reads):
        await asyncio.sleep(0)  # one loop iteration
        iterations += 1
        assert iterations < 256, "parked reads handed back one per iteration"
    assert [r.result() for r in reads] == [b"v%d" % i for i in range(256)]
    assert env.metrics().deferred_reads == 255
    assert iterations <= 20  # 1, 2, 4, ... 128 at a time (plus the loop's own turns)


async def test_read_your_writes_in_auto(open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "_CHECK_EVERY", 2)
    env = open_env()
    db = await filled(env)
    await wait_read_mode(env, "inline")

    async def writer(t: int) -> None:
        for round in range(30):
            value = b"%d-%d" % (t, round)
            assert await db.put(key(t), value)
            assert await db.get(key(t)) == value  # never an older snapshot's value
            for i in range(40):  # spend the budget now and then
                await db.get(key(100 + i))

    await asyncio.wait_for(asyncio.gather(*(writer(t) for t in range(32))), TIMEOUT)
    assert env.metrics().read_mode == "inline"


async def test_close_completes_parked_reads(
    open_env: OpenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "_BUDGET", 0.0)
    monkeypatch.setattr(readers, "_CHECK_EVERY", 1)
    env = open_env()
    db = await filled(env)
    await wait_read_mode(env, "inline")
    reads = [asyncio.ensure_future(db.get(key(i))) for i in range(50)]
    await asyncio.sleep(0)  # all made: one inline, 49 parked
    await asyncio.wait_for(env.close(), TIMEOUT)
    assert await asyncio.wait_for(asyncio.gather(*reads), TIMEOUT) == [
        b"v%d" % i for i in range(50)
    ]
    with pytest.raises(aiolmdb.ClosedError):
        await db.get(key(1))


# ----------------------------------------------------------------- prefetch
@pytest.mark.parametrize("mode", ["auto", "inline", "threaded"])
async def test_prefetch_reads_on_a_reader_thread(open_env: OpenEnv, mode: str) -> None:
    env = open_env(reads=mode)
    db = await filled(env)
    big = await env.open_db("big")
    await big.put(b"large", b"x" * (1 << 20))  # overflow pages
    before = env.metrics().reads
    assert await db.prefetch([key(1), key(2), b"absent", key(3)]) == 3
    assert await big.prefetch(iter([b"large"])) == 1
    assert await db.prefetch([]) == 0
    assert env.metrics().reads == before + 3  # each prefetch one read, on a reader thread
    with pytest.raises(aiolmdb.InvalidKeyError):
        await db.prefetch([b""])


async def test_prefetch_decodes_keys_with_the_key_coder(env: Environment) -> None:
    db = await env.open_db("ints", key_coder=aiolmdb.UInt32Coder())
    await db.put_multi([(i, b"v") for i in range(10)])
    assert await db.prefetch(range(5, 15)) == 5


@pytest.mark.parametrize("mode", ["auto", "inline"])
async def test_a_prefetching_range_reads_on_reader_threads(open_env: OpenEnv, mode: str) -> None:
    env = open_env(reads=mode)
    db = await filled(env)
    if mode == "auto":
        await wait_read_mode(env, "inline")
    before = env.metrics()
    assert await collect(db.keys(prefetch=True)) == [key(i) for i in range(N)]
    after = env.metrics()
    assert after.inline_read_transactions == before.inline_read_transactions
    assert await collect(db.items(key(10), key(20), prefetch=True, reverse=True)) == [
        (key(i), b"v%d" % i) for i in range(19, 9, -1)
    ]
    # Without it, an inline environment reads the range on the loop.
    assert len(await collect(db.values(limit=100))) == 100
    assert env.metrics().inline_read_transactions > after.inline_read_transactions


async def test_prefetch_option_is_checked_and_taken_by_run(env: Environment) -> None:
    db = await filled(env, 10)
    with pytest.raises(TypeError, match="prefetch must be True or False, got 1"):
        db.keys(prefetch=1)  # type: ignore[arg-type]
    assert await db.run(lambda txn: list(txn.keys(prefetch=True))) == [key(i) for i in range(10)]


# ----------------------------------------------------------------- regressions
@pytest.mark.parametrize("mode", ["auto", "inline"])
async def test_readonly_named_database_opened_after_an_inline_read(
    path: Path, mode: ReadMode
) -> None:
    """A read-only environment opens a named database on the loop: an inline read
    transaction begun before it (same loop iteration) cannot see the handle, so it is ended."""
    async with aiolmdb.open(path, map_size=MAP_SIZE) as env:
        named = await env.open_db("named")
        await named.put(b"a", b"1")
        await env.get_default_database().put(b"m", b"2")
    async with aiolmdb.open(path, reads=mode, readonly=True) as env:
        main = env.get_default_database()
        if mode == "auto":
            await wait_read_mode(env, "inline")
        assert await main.get(b"m") == b"2"  # begins this iteration's inline transaction
        db = await env.open_db("named", create=False)  # no suspension: opened at once
        assert await collect(db.items()) == [(b"a", b"1")]


# ----------------------------------------------------------------- raw checks
def test_residency_module_reads_lmdb_files(tmp_path: Path) -> None:
    with lmdb.open(str(tmp_path / "raw"), map_size=MAP_SIZE) as raw:
        with raw.begin(write=True) as txn:
            txn.put(b"a", b"b")
        used = (raw.info()["last_pgno"] + 1) * raw.stat()["psize"]
    fraction = residency.resident_fraction(str(tmp_path / "raw" / "data.mdb"), used)
    assert fraction is None or 0.0 <= fraction <= 1.0


async def test_prometheus_exports_the_read_mode(open_env: OpenEnv) -> None:
    pytest.importorskip("prometheus_client", reason="the prometheus extra is not installed")
    from prometheus_client import CollectorRegistry

    from aiolmdb.prometheus import EnvironmentCollector

    env = open_env()
    registry = CollectorRegistry()
    registry.register(EnvironmentCollector(env))
    labels = {"path": env.path}
    assert registry.get_sample_value("aiolmdb_reads_inline", labels) == 0.0  # threaded at first
    assert registry.get_sample_value("aiolmdb_residency", labels) == -1.0
    await filled(env, 10)
    await wait_read_mode(env, "inline")
    assert registry.get_sample_value("aiolmdb_reads_inline", labels) == 1.0
    assert registry.get_sample_value("aiolmdb_residency", labels) == 1.0
    assert registry.get_sample_value("aiolmdb_read_mode_switches_total", labels) == 1.0
    assert (registry.get_sample_value("aiolmdb_residency_checks_total", labels) or 0) >= 1
    assert registry.get_sample_value("aiolmdb_deferred_reads_total", labels) == 0.0
    assert registry.get_sample_value("aiolmdb_read_faults_total", labels) == 0.0


def test_memory_is_the_cgroup_limit_when_lower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = tmp_path / "memory.max"
    monkeypatch.setattr(residency, "_CGROUP_LIMITS", (str(tmp_path / "absent"), str(limit)))
    limit.write_text("max\n")  # cgroup v2: no limit
    machine = residency.physical_memory()
    assert machine is not None
    assert machine > 1 << 20
    limit.write_text("1048576\n")
    assert residency.physical_memory() == 1 << 20
    limit.write_text(f"{machine * 2}\n")  # above the machine's: the machine's counts
    assert residency.physical_memory() == machine
