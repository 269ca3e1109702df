"""Reliability: large values neither stall the event loop nor come out mixed.

* Reading a 256 MB value while ten small gets run beside it, and a 16 MB one, the longest gap
  a 1 ms ticker task sees stays under a bound (the aim is 20 ms and 5 ms; the bounds are
  generous, for loaded machines; docs/performance.md has the measured figures). Wall-clock
  assertions: ``timing`` marker, Linux only (where they were measured).
* The same bounds hold for the first read in a fresh opening (the environment closed and
  opened again): it knows from the database's stored marker to copy without the GIL.
* ``get_chunks`` streams run while a writer keeps replacing the value: every stream is one
  whole value, never a mix of two writes.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ._stress_util import TIMEOUT, Figures, MiB, open_env

# Bounds for a loaded machine; the aims are 20 ms and 5 ms.
BOUNDS = {256: 0.060, 16: 0.015}


async def longest_gap(work: asyncio.Future[Any]) -> float:
    """The longest gap between the ticks of a 1 ms ticker task while ``work`` runs."""
    gaps: list[float] = []
    last = time.perf_counter()
    while not work.done():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    await work
    assert gaps, "the ticker never ran"
    return max(gaps)


@pytest.mark.timing
@pytest.mark.skipif(sys.platform != "linux", reason="the bounds were measured on Linux")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("size_mb", [16, 256])
async def test_reading_a_large_value_does_not_stall_the_loop(
    tmp_path: Path, figures: Figures, size_mb: int
) -> None:
    env = open_env(tmp_path / "env", map_size=(size_mb + 64) * MiB, inline_reads=False)
    db = env.get_default_database()
    value = bytes(range(256)) * (size_mb * MiB // 256)
    assert await db.put(b"big", value)
    await db.put_multi([(b"s%d" % i, b"v" * 100) for i in range(10)])
    gc.collect()
    worst = 0.0
    for _ in range(3):
        work = asyncio.ensure_future(
            asyncio.gather(db.get(b"big"), *(db.get(b"s%d" % i) for i in range(10)))
        )
        worst = max(worst, await asyncio.wait_for(longest_gap(work), TIMEOUT))
        got = work.result()
        assert got[0] == value
        assert got[1:] == [b"v" * 100] * 10
        del got, work
    await asyncio.wait_for(env.close(), TIMEOUT)
    figures.maximum(
        f"big values: longest loop gap reading {size_mb} MB (ms)", round(worst * 1000, 1)
    )
    assert worst < BOUNDS[size_mb], (
        f"reading {size_mb} MB stalled the loop for {worst * 1000:.1f} ms "
        f"(bound {BOUNDS[size_mb] * 1000:.0f} ms)"
    )


@pytest.mark.timing
@pytest.mark.skipif(sys.platform != "linux", reason="the bounds were measured on Linux")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("size_mb", [16, 256])
async def test_the_first_read_after_reopening_does_not_stall_the_loop(
    tmp_path: Path, figures: Figures, size_mb: int
) -> None:
    path = tmp_path / "env"
    map_size = (size_mb + 64) * MiB
    value = bytes(range(256)) * (size_mb * MiB // 256)
    env = open_env(path, map_size=map_size)
    db = await env.open_db("big")
    assert await db.put(b"big", value)
    await db.put_multi([(b"s%d" % i, b"v" * 100) for i in range(10)])
    await asyncio.wait_for(env.close(), TIMEOUT)
    worst = 0.0
    for _ in range(3):
        # A fresh opening each time: only its first read is measured.
        env = open_env(path, map_size=map_size, inline_reads=False)
        db = await env.open_db("big")
        gc.collect()
        work = asyncio.ensure_future(
            asyncio.gather(db.get(b"big"), *(db.get(b"s%d" % i) for i in range(10)))
        )
        worst = max(worst, await asyncio.wait_for(longest_gap(work), TIMEOUT))
        got = work.result()
        assert got[0] == value
        assert got[1:] == [b"v" * 100] * 10
        del got, work
        await asyncio.wait_for(env.close(), TIMEOUT)
    figures.maximum(
        f"big values: longest loop gap, first read of {size_mb} MB after reopening (ms)",
        round(worst * 1000, 1),
    )
    assert worst < BOUNDS[size_mb], (
        f"the first read of {size_mb} MB after reopening stalled the loop for "
        f"{worst * 1000:.1f} ms (bound {BOUNDS[size_mb] * 1000:.0f} ms)"
    )


@pytest.mark.timeout(300)
async def test_streams_never_mix_two_writes(tmp_path: Path, figures: Figures) -> None:
    env = open_env(tmp_path / "env", map_size=256 * MiB, inline_reads=False)
    db = env.get_default_database()
    size = 3 * MiB + 17
    # Every version of the value is one byte repeated: a mix shows as two bytes in one stream.
    await db.put(b"k", bytes([0]) * size)
    writes = 0
    done = asyncio.Event()

    async def writer() -> None:
        nonlocal writes
        while not done.is_set():
            writes += 1
            await db.put(b"k", bytes([writes % 256]) * size)

    async def reader() -> int:
        streams = 0
        for _ in range(15):
            seen: set[int] = set()
            total = 0
            async for piece in db.get_chunks(b"k", 256 * 1024):
                seen.update(set(piece))
                total += len(piece)
                await asyncio.sleep(0)  # let the writer in between the pieces
            assert len(seen) == 1, f"a stream mixed {len(seen)} writes"
            assert total == size
            streams += 1
        return streams

    task = asyncio.ensure_future(writer())
    try:
        counts = await asyncio.wait_for(asyncio.gather(*(reader() for _ in range(4))), TIMEOUT * 4)
    finally:
        done.set()
        await asyncio.wait_for(task, TIMEOUT)
    assert sum(counts) == 60
    assert writes > 1, "the writer never ran between the streams' pieces"
    figures.add("big values: writes during the streams", writes)
    await asyncio.wait_for(env.close(), TIMEOUT)
