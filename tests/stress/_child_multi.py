"""Child process for the many-processes test: one of several concurrent aiolmdb writers.

Usage: ``python -m stress._child_multi PATH INDEX PUTS MULTIS MULTI_SIZE MAP_SIZE``

Opens the shared environment with aiolmdb (with MAP_SIZE bytes of map) and writes ``PUTS``
keys ``p<INDEX>-<n>`` with ``put`` from 16 tasks plus ``MULTIS`` ``put_multi`` calls of
``MULTI_SIZE`` keys ``m<INDEX>-<m>-<j>``, all concurrently, then reads its own keys back.
Prints ``ok <writes>`` and exits 0.
"""

from __future__ import annotations

import asyncio
import sys

from ._stress_util import open_env, value_for


async def main(
    path: str, index: int, puts: int, multis: int, multi_size: int, map_size: int
) -> int:
    env = open_env(path, map_size=map_size)
    try:
        db = env.get_default_database()
        keys = [b"p%d-%05d" % (index, n) for n in range(puts)]
        groups = [
            [b"m%d-%03d-%02d" % (index, m, j) for j in range(multi_size)] for m in range(multis)
        ]

        async def putter(task: int) -> None:
            for key in keys[task::16]:
                assert await db.put(key, value_for(key, 100))

        async def multi_putter(part: int) -> None:
            for group in groups[part::2]:
                assert await db.put_multi([(k, value_for(k, 100)) for k in group]) == len(group)

        await asyncio.gather(*(putter(t) for t in range(16)), multi_putter(0), multi_putter(1))
        every = keys + [k for group in groups for k in group]
        got = await db.get_multi(every)
        assert got == {k: value_for(k, 100) for k in every}
    finally:
        await env.close()
    print("ok", len(every), flush=True)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(asyncio.run(main(args[0], *(int(a) for a in args[1:]))))
