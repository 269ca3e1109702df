"""Child process for the versioned-database stress tests.

Usage:

* ``python -m stress._child_versions count PATH TASKS ROUNDS COUNTERS``: ``TASKS`` tasks each
  make ``ROUNDS`` optimistic increments (get_entry, then put with if_version, retried on a
  conflict) of ``COUNTERS`` shared JSON counters in the versioned database ``counters``;
  prints ``done CONFLICTS`` at the end.
* ``python -m stress._child_versions stamp PATH``: writes the keys ``k0``..``k7`` of the
  versioned database ``stamps`` over and over (puts, deletes and re-inserts) until killed; after
  each acknowledged write prints ``KEY VERSION`` (the version read back in the write's own
  transaction), flushed. The first line is ``ready``.
"""

from __future__ import annotations

import asyncio
import sys

import aiolmdb

from ._stress_util import open_env


async def count(path: str, tasks: int, rounds: int, counters: int) -> None:
    async with open_env(path, sync=False) as env:
        db = await env.open_db("counters", versioned=True, value_coder=aiolmdb.JSONCoder())
        conflicts = 0

        async def worker(n: int) -> None:
            nonlocal conflicts
            for i in range(rounds):
                key = b"c%d" % ((n + i) % counters)
                while True:
                    entry = await db.get_entry(key)
                    if entry is None:
                        if await db.put(key, 1, overwrite=False):
                            break
                    elif await db.put(key, entry.value + 1, if_version=entry.version):
                        break
                    conflicts += 1

        await asyncio.gather(*(worker(n) for n in range(tasks)))
    print(f"done {conflicts}", flush=True)


async def stamp(path: str) -> None:
    env = open_env(path)
    db = await env.open_db("stamps", versioned=True)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    n = 0
    while True:
        key = b"k%d" % (n % 8)

        def write(txn: aiolmdb.Transaction[bytes, bytes], key: bytes = key, n: int = n) -> int:
            view = txn[db]
            if n % 5 == 4:
                view.delete(key)  # re-inserted below: a fresh version all the same
            view.put(key, b"%d" % n)
            entry = view.get_entry(key)
            assert entry is not None
            return entry.version

        version = await env.run(write, write=True)
        out.write(f"{key.decode()} {version}\n")
        out.flush()
        n += 1


if __name__ == "__main__":
    if sys.argv[1] == "count":
        asyncio.run(count(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
    else:
        asyncio.run(stamp(sys.argv[2]))
