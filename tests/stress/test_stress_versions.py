"""Reliability of versioned databases: optimistic increments racing in one and in two
processes end exact, and versions stay monotonic (never reused) across SIGKILL and reopen."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from pathlib import Path

import pytest

import aiolmdb

from ._stress_util import TIMEOUT, Figures, open_env, run_child_async, spawn_child

TASKS = 64
ROUNDS = 200
COUNTERS = 8

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="kills processes with SIGKILL (POSIX only)"
)


async def counters_of(path: Path) -> dict[bytes, int | None]:
    async with open_env(path) as env:
        db = await env.open_db("counters", versioned=True, value_coder=aiolmdb.JSONCoder())
        return await db.get_multi([b"c%d" % i for i in range(COUNTERS)])


@pytest.mark.timeout(300)
async def test_optimistic_increments_in_one_process(tmp_path: Path, figures: Figures) -> None:
    code, out, err = await run_child_async(
        "_child_versions", "count", tmp_path / "env", TASKS, ROUNDS, COUNTERS, timeout=240
    )
    assert code == 0, err
    assert out.startswith("done ")
    figures.add("versions: conflicts retried (one process)", int(out.split()[1]))
    each = TASKS * ROUNDS // COUNTERS
    assert await counters_of(tmp_path / "env") == {b"c%d" % i: each for i in range(COUNTERS)}


@pytest.mark.timeout(300)
async def test_optimistic_increments_in_two_processes(tmp_path: Path, figures: Figures) -> None:
    path = tmp_path / "env"
    tasks, rounds = TASKS // 2, ROUNDS // 2
    results = await asyncio.gather(
        *(
            run_child_async("_child_versions", "count", path, tasks, rounds, COUNTERS, timeout=240)
            for _ in range(2)
        )
    )
    for code, out, err in results:
        assert code == 0, err
        figures.add("versions: conflicts retried (two processes)", int(out.split()[1]))
    each = 2 * tasks * rounds // COUNTERS
    assert await counters_of(path) == {b"c%d" % i: each for i in range(COUNTERS)}


async def stamp_until_killed(path: Path, rng: random.Random) -> list[tuple[str, int]]:
    """Run a stamping child, SIGKILL it after a random number of acknowledged writes; the
    (key, version) acknowledgements it printed."""
    proc = await spawn_child(
        "_child_versions",
        "stamp",
        path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    acked: list[tuple[str, int]] = []
    try:
        ready = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        assert ready == b"ready\n", (ready, await proc.stderr.read())
        for _ in range(rng.randint(1, 200)):
            line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
            assert line, await proc.stderr.read()
            key, version = line.decode().split()
            acked.append((key, int(version)))
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return acked


@pytest.mark.timeout(200)
async def test_versions_survive_sigkill(tmp_path: Path, stress_seed: int, figures: Figures) -> None:
    """Each round: a child stamps entries (deleting and re-inserting some) and is killed; the
    versions it acknowledged only grow, the stored ones are the last acknowledged (or a later
    unacknowledged write), and a write after reopening gets a version above all of them."""
    rng = random.Random(stress_seed)
    path = tmp_path / "env"
    highest = 0
    for _ in range(6):
        acked = await stamp_until_killed(path, rng)
        versions = [v for _, v in acked]
        assert versions == sorted(versions)
        assert len(set(versions)) == len(versions)  # one write per transaction: never reused
        assert not versions or versions[0] > highest  # above everything of earlier rounds
        async with open_env(path) as env:
            db = await env.open_db("stamps", versioned=True)
            stored = {k.decode(): e.version async for k, e in db.entries()}
            last: dict[str, int] = {}
            for key, version in acked:
                last[key] = version
            for key, version in last.items():
                assert stored[key] >= version
            await db.put(b"after", b"x")
            after = await db.get_entry(b"after")
            assert after is not None
            assert after.version > max(stored.values())
            highest = after.version
        figures.add("versions: SIGKILLs survived", 1)
