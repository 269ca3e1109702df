"""Child process: ``asyncio.run()`` ends without ``env.close()``.

Usage: ``python -W always::ResourceWarning -m stress._child_unclosed PATH MODE``

MODE ``collect``: the environment becomes garbage when the coroutine ends; ``gc.collect()`` at
the end of the coroutine and after ``asyncio.run`` must produce aiolmdb's ResourceWarning.
MODE ``global``: a module global keeps the environment alive until interpreter exit; the
process must still exit (aiolmdb's threads never keep it alive).

Both leave 200 writes unawaited (``asyncio.run`` cancels their tasks) and print ``exiting``
after ``asyncio.run`` returns. The key ``acked`` was acknowledged and must be on disk.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import aiolmdb

from ._stress_util import open_env

KEEP: list[aiolmdb.Environment] = []


async def main(path: str, mode: str) -> None:
    env = open_env(path)
    if mode == "global":
        KEEP.append(env)
    db = env.get_default_database()
    assert await db.put(b"acked", b"1")
    unawaited: list[asyncio.Future[Any]] = []
    for i in range(200):  # never awaited: cancelled by asyncio.run on the way out
        unawaited.append(asyncio.ensure_future(db.put(b"unawaited%03d" % i, b"x")))
        unawaited.append(asyncio.ensure_future(db.get(b"acked")))
    del env, db, unawaited
    gc.collect()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
    gc.collect()
    print("exiting", flush=True)
