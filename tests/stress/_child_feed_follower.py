"""Child process for the change-feed test: follows the change log into a file.

Usage: ``python -m stress._child_feed_follower PATH OUT SINCE NOTIFY``

Opens the environment with ``changelog=True``, iterates ``env.changes(since=SINCE)`` and
appends one line per change to ``OUT``: ``seq db key kind value`` (``-`` for no value), each
line written and flushed on its own, so what the file holds is a prefix of what was received.
Once it has written ``NOTIFY`` lines it prints ``reached`` (the test kills it then). It stops
after the first change of the database ``control`` (the test's end marker) and prints
``done <count>``. After a ``kill -9``, the test restarts it with SINCE = the last seq in the
file: each change is then in the file exactly once.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from ._stress_util import open_env


async def main(path: str, out: TextIO, since: int, notify: int) -> None:
    env = open_env(path, changelog=True)
    count = 0
    async for change in env.changes(since=since):
        value = "-" if change.value is None else change.value.decode()
        key = change.key.decode() if change.key is not None else "-"
        out.write(f"{change.seq} {change.db} {key} {change.kind} {value}\n")
        out.flush()
        count += 1
        if count == notify:
            print("reached", flush=True)
        if change.db == "control":
            break
    await env.close()
    print("done", count, flush=True)


if __name__ == "__main__":
    # Line-buffered writes from the loop thread: each a small write(2) to a local file.
    with open(sys.argv[2], "a", encoding="ascii") as file:
        asyncio.run(main(sys.argv[1], file, int(sys.argv[3]), int(sys.argv[4])))
