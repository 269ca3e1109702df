"""Child process for the change-feed test: one of several concurrent writers of a logged
environment.

Usage: ``python -m stress._child_feed_writer PATH WRITER OPS``

Opens the environment with ``changelog=True`` and runs :data:`TASKS` tasks, each applying its
own sequence of operations (:func:`operations`: puts and deletes of its own keys in the
database ``w<WRITER>``), one at a time. Right after an operation's ``await`` returns, it prints
``<task> <n>`` (the operation's index), flushed: the acknowledged writes. ``OPS`` < 0 runs
until the process is killed. The first line is ``ready``; a writer that finishes prints
``done``.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Iterator

from ._stress_util import open_env

TASKS = 4
KEYS = 7  # keys per task: each is written, deleted and written again many times
Op = tuple[bytes, bytes | None]  # (key, value); None: delete


def operations(writer: int, task: int) -> Iterator[Op]:
    """The operations of one task, in issue order (the test computes the same ones)."""
    present: set[bytes] = set()
    for n in itertools.count():
        key = b"t%d-k%d" % (task, n % KEYS)
        if n % 3 == 2 and key in present:
            present.discard(key)
            yield key, None
        else:
            present.add(key)
            yield key, b"w%d-t%d-n%d" % (writer, task, n)


async def main(path: str, writer: int, ops: int) -> None:
    env = open_env(path, changelog=True)
    db = env.open_db(f"w{writer}")
    out = sys.stdout

    async def run(task: int) -> None:
        steps = operations(writer, task)
        for n, (key, value) in enumerate(steps if ops < 0 else itertools.islice(steps, ops)):
            if value is None:
                assert await db.delete(key)
            else:
                assert await db.put(key, value)
            out.write(f"{task} {n}\n")
            out.flush()

    out.write("ready\n")
    out.flush()
    await asyncio.gather(*(run(t) for t in range(TASKS)))
    await env.close()
    out.write("done\n")
    out.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
