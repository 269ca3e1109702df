"""Child process: holds LMDB's write lock, as any other writer of the environment may.

Usage:

* ``python -m stress._child_write_lock PATH hold``: begins one write transaction, prints
  ``holding``, and keeps it open until a line arrives on stdin; then aborts it, prints
  ``released`` and exits.
* ``python -m stress._child_write_lock PATH loop SECONDS``: prints ``looping``, then takes write
  transactions of about 1 ms each (one put, then a 1 ms pause inside the transaction) until
  SECONDS have passed or stdin has a line; prints the number it committed.

Plain py-lmdb, not aiolmdb: the parent's writer thread waits for LMDB's write lock meanwhile.
"""

from __future__ import annotations

import select
import sys
import time

from ._child_grow import open_plain


def stdin_has_line() -> bool:
    """Whether the parent has written (a line, or closed the pipe)."""
    ready, _, _ = select.select([sys.stdin], [], [], 0)
    return bool(ready)


def main(argv: list[str]) -> int:
    path, mode, *rest = argv
    env = open_plain(path)
    try:
        if mode == "hold":
            txn = env.begin(write=True)
            print("holding", flush=True)
            sys.stdin.readline()
            txn.abort()
            print("released", flush=True)
            return 0
        seconds = float(rest[0])
        print("looping", flush=True)
        end = time.monotonic() + seconds
        done = 0
        while time.monotonic() < end and not stdin_has_line():
            with env.begin(write=True) as txn:
                txn.put(b"child", b"%d" % done)
                time.sleep(0.001)  # the load: a write transaction of about 1 ms
            done += 1
        print(done, flush=True)
        return 0
    finally:
        env.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
