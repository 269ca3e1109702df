"""Child process: the event loop is closed while aiolmdb work is in flight.

Usage: ``python -m stress._child_loop_closed PATH MODE``

A coroutine run by ``loop.run_until_complete`` opens the environment, awaits one write (the key
``acked``), then fires thousands of operations (puts, gets, put_multi, deletes, range scans)
without awaiting them and returns; the loop is closed at once. The worker threads then finish
that work and try to hand results to a closed loop.

MODE ``exit``: the process just ends with the environment still open.
MODE ``close``: ``asyncio.run(env.close())`` on a new loop must return, and every aiolmdb
thread must end.

Prints ``done``. The parent checks the exit status and that stderr holds no traceback.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import aiolmdb

from ._stress_util import TIMEOUT, open_env

# The tasks left behind (never awaited): referenced until exit, as an application might.
ABANDONED: list[asyncio.Future[Any]] = []


async def start_work(path: str) -> aiolmdb.Environment:
    env = open_env(path)
    db = env.get_default_database()
    assert await db.put(b"acked", b"1")

    async def scan() -> None:
        async for _ in db.items(batch_size=16):
            pass

    fire = ABANDONED.append
    for i in range(2000):
        key = b"k%05d" % i
        fire(asyncio.ensure_future(db.put(key, b"v" * 100)))
        fire(asyncio.ensure_future(db.get(key)))
        if i % 10 == 0:
            fire(asyncio.ensure_future(db.put_multi([(key + b"/%d" % j, b"m") for j in range(5)])))
            fire(asyncio.ensure_future(db.delete(b"k%05d" % (i // 2))))
        if i % 200 == 0:
            fire(asyncio.ensure_future(scan()))
    await asyncio.sleep(0)  # let every task submit its operation
    return env


def main(path: str, mode: str) -> None:
    loop = asyncio.new_event_loop()
    env = loop.run_until_complete(start_work(path))
    loop.close()
    if mode == "close":
        asyncio.run(asyncio.wait_for(env.close(), TIMEOUT))
        for thread in threading.enumerate():
            if thread.name.startswith("aiolmdb"):
                thread.join(TIMEOUT)
                assert not thread.is_alive(), thread.name
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
