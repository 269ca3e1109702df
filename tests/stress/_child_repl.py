"""Child process of the replication fault tests: a leader that publishes, or a replica.

Usage::

    python -m stress._child_repl leader PATH SERVERS STREAM TRANSFERS [REPLICAS]
    python -m stress._child_repl replica PATH SERVERS STREAM

``SERVERS`` is comma-separated. The leader opens PATH with ``changelog=True``, starts a
``Publisher`` (a stream of ``REPLICAS`` copies, default 1), prints ``ready``, then commits
``TRANSFERS`` bank transfers (< 0: until SIGTERM or killed), each ONE write transaction across two
databases: ``accounts`` (a debit, a credit and the transfer count under ``~count``) and
``audit`` (one row per transfer). Every :data:`SYNC_EVERY` transfers it awaits
``pub.sync()`` (retrying while the server is away) and prints ``synced <seq> <count>``: every
transfer below ``count`` is acknowledged as replicated. At the end (or on SIGTERM) it syncs once
more and prints ``done`` (so a leader restarted with ``TRANSFERS`` 0 publishes the tail of its
log and says so). Transfers are a function of their number, so a restarted leader continues the same
sequence.

The replica runs a ``Replica`` at PATH, prints ``ready`` and follows until SIGTERM (or
killed); the test reads its progress from the environment (``replica_status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
from typing import Any

import aiolmdb
from aiolmdb.errors import FencedError
from aiolmdb.replication import Publisher, Replica

ACCOUNTS = 16
START_BALANCE = 1_000
TOTAL = ACCOUNTS * START_BALANCE
COUNT_KEY = b"~count"
SYNC_EVERY = 10


def account(i: int) -> bytes:
    return b"acct%03d" % i


def transfer(n: int) -> tuple[int, int, int]:
    """Transfer ``n``: (from, to, amount), the same in every run."""
    rnd = random.Random(n)
    a = rnd.randrange(ACCOUNTS)
    b = (a + 1 + rnd.randrange(ACCOUNTS - 1)) % ACCOUNTS
    return a, b, rnd.randrange(1, 50)


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def sync(pub: Publisher) -> int:
    """``pub.sync()``, retried while the stream is unreachable (a server restarting)."""
    while True:
        try:
            return await asyncio.wait_for(pub.sync(), 10)
        except FencedError:
            raise
        except Exception as exc:
            if pub.error is not None:
                raise
            print(f"sync retried: {exc!r}", file=sys.stderr, flush=True)


async def leader(path: str, servers: list[str], stream: str, transfers: int, replicas: int) -> None:
    async with aiolmdb.open(path, changelog=True, map_size=256 << 20) as env:
        accounts, audit = env.open_db("accounts"), env.open_db("audit")

        def setup(txn: aiolmdb.Transaction[bytes, bytes]) -> None:
            if txn[accounts].get(COUNT_KEY) is None:
                for i in range(ACCOUNTS):
                    txn[accounts].put(account(i), b"%d" % START_BALANCE)
                txn[accounts].put(COUNT_KEY, b"0")
                txn[audit].put(b"opened", b"%d accounts" % ACCOUNTS)

        await env.run(setup, write=True)

        def one(txn: aiolmdb.Transaction[bytes, bytes]) -> int:
            acc = txn[accounts]
            n = int(acc.get(COUNT_KEY) or b"0")
            a, b, amount = transfer(n)
            acc.put(account(a), b"%d" % (int(acc.get(account(a)) or b"0") - amount))
            acc.put(account(b), b"%d" % (int(acc.get(account(b)) or b"0") + amount))
            acc.put(COUNT_KEY, b"%d" % (n + 1))
            txn[audit].put(b"t%09d" % n, b"%d->%d %d" % (a, b, amount))
            return n + 1

        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with Publisher(env, servers=servers, stream=stream, replicas=replicas) as pub:
            say("ready")
            done = 0
            count = 0
            while (transfers < 0 or done < transfers) and not stop.is_set():
                count = await env.run(one, write=True)
                done += 1
                if done % SYNC_EVERY == 0:
                    seq = await sync(pub)
                    say(f"synced {seq} {count}")
            seq = await sync(pub)
            count = int(await accounts.get(COUNT_KEY) or b"0")
            say(f"synced {seq} {count}")
            say("done")


async def replica(path: str, servers: list[str], stream: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with Replica(path, servers=servers, stream=stream) as rep:
        say("ready")
        waiter = asyncio.ensure_future(rep.wait_for(2**62))
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (waiter, stopper):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        if waiter in done:
            waiter.result()  # the replica stopped: its error ends this process
    say("done")


def main(argv: list[str]) -> Any:
    role, path, servers, stream = argv[:4]
    urls = servers.split(",")
    if role == "leader":
        replicas = int(argv[5]) if len(argv) > 5 else 1
        return leader(path, urls, stream, int(argv[4]), replicas)
    return replica(path, urls, stream)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
