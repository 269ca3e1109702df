"""Child process for the durability test: streams acknowledged writes until it is killed.

Usage: ``python -m stress._child_writer PATH ROUND TASKS``

Opens the environment with aiolmdb (default ``sync=True``) and runs ``TASKS`` concurrent tasks.
Each writes keys ``r<ROUND>-t<task>-<n>`` (a ``put``, or every fifth time a ``put_multi`` of three
keys), each value derived from its key by ``_stress_util.value_for``, and right after the
``await`` returns writes the acknowledged key(s) to stdout, one per line, flushed. The parent
kills this process with SIGKILL at a random moment and then checks that every key printed here
is in the environment. The first line is ``ready``.
"""

from __future__ import annotations

import asyncio
import sys

from ._stress_util import MiB, open_env, value_for


async def main(path: str, round_: int, tasks: int) -> None:
    env = open_env(path, map_size=1 * MiB)  # small: map growth happens while being killed
    db = env.get_default_database()
    out = sys.stdout

    async def writer(task: int) -> None:
        n = 0
        while True:
            base = b"r%d-t%d-%d" % (round_, task, n)
            if n % 5 == 4:
                keys = [base + b"/%d" % j for j in range(3)]
                await db.put_multi([(k, value_for(k, 200)) for k in keys])
            else:
                keys = [base]
                await db.put(base, value_for(base, 200))
            out.write("".join(k.decode() + "\n" for k in keys))
            out.flush()  # one write(2) per acknowledgement
            n += 1

    out.write("ready\n")
    out.flush()
    await asyncio.gather(*(writer(t) for t in range(tasks)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
