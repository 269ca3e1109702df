"""Child process for the reader-slot tests: holds an LMDB environment (and maybe a reader slot).

Usage: ``python -m stress._child_reader PATH MODE MAX_READERS``

Opens the environment with plain py-lmdb. MODE ``hold``: keeps it open without a transaction
(so the lock file is not reset when the other processes come and go). MODE ``txn``: also
begins a read transaction, which takes a reader slot. Prints ``ready PID TXNID`` (TXNID is
``-`` for ``hold``, or ``full`` when the reader table had no free slot, even to open), then
waits until stdin is closed or the process is killed. The tests SIGKILL ``txn`` children to
leave stale slots.
"""

from __future__ import annotations

import os
import sys

import lmdb


def main(path: str, mode: str, max_readers: int) -> int:
    env = txn = None
    try:
        # py-lmdb's open itself begins a read transaction (to open the main database), so it
        # too needs a free slot.
        env = lmdb.open(path, max_dbs=128, max_readers=max_readers)
        state = "-"
        if mode == "txn":
            txn = env.begin()
            state = str(txn.id())
    except lmdb.ReadersFullError:
        state = "full"
    print("ready", os.getpid(), state, flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or kills us)
    if txn is not None:
        txn.abort()
    if env is not None:
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
