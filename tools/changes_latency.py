"""Rough latency from a commit to a follower's iteration (docs/performance.md).

Same process: a task puts, a follower of ``env.changes()`` in the same loop receives. Across
processes: a child process puts, this process follows. Each put carries ``time.time()``; the
follower subtracts it on receipt. Run: ``python tools/changes_latency.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import struct
import sys
import tempfile
import time

import aiolmdb

N = 200
CHILD = """
import asyncio, struct, sys, time, aiolmdb
async def main():
    async with aiolmdb.open(sys.argv[1], changelog=True) as env:
        db = env.open_db("t")
        for i in range(int(sys.argv[2])):
            await db.put(b"k%d" % i, struct.pack(">d", time.time()))
            await asyncio.sleep(0.01)
asyncio.run(main())
"""


async def follow(env: aiolmdb.Environment, feed: aiolmdb.ChangeFeed) -> list[float]:
    lags = []
    async for change in feed:
        lags.append(time.time() - struct.unpack(">d", change.value)[0])
        if len(lags) == N:
            return lags
    return lags


def show(label: str, lags: list[float]) -> None:
    ms = sorted(x * 1000 for x in lags)
    print(
        f"{label}: median {statistics.median(ms):.2f} ms, "
        f"p90 {ms[int(len(ms) * 0.9)]:.2f} ms, max {ms[-1]:.2f} ms (n={len(ms)})"
    )


async def main() -> None:
    with tempfile.TemporaryDirectory() as path:
        async with aiolmdb.open(path, changelog=True) as env:
            db = env.open_db("t")
            feed = env.changes()
            await feed.start()
            task = asyncio.ensure_future(follow(env, feed))
            for i in range(N):
                await db.put(b"k%d" % i, struct.pack(">d", time.time()))
                await asyncio.sleep(0.001)
            show("same process", await task)
            feed = env.changes()
            await feed.start()
            task = asyncio.ensure_future(follow(env, feed))
            child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, path, str(N))
            show("other process", await task)
            await child.wait()


if __name__ == "__main__":
    asyncio.run(main())
