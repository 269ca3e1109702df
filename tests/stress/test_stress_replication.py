"""Replication under faults, with real processes and real NATS servers (issue 23).

The leader is a child process (``stress._child_repl leader``) committing bank transfers, each
one write transaction across two databases (``accounts``: a debit, a credit and the count;
``audit``: one row), and printing ``synced <seq> <count>`` after each ``pub.sync()``. Replicas
are child processes too, except in the invariant test, which reads the replica in this process
while it applies. Faults: ``kill -9`` of the leader mid-burst, of a replica mid-apply, a NATS
server restart, one of three cluster nodes killed. Every test ends with the replica
byte-identical to its leader (every user database, flags and raw items) and holding every
transfer ``pub.sync()`` acknowledged; the books balance on the replica at every moment.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from pathlib import Path

import pytest
from nats_server import NatsCluster, NatsServer
from repl_util import Child, Dump, dump_lmdb, dump_path

from aiolmdb.replication import Replica, replica_status

from ._child_repl import ACCOUNTS, COUNT_KEY, TOTAL, account
from ._stress_util import HERE, TIMEOUT, Figures

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(sys.platform == "win32", reason="signals child processes (POSIX only)"),
]
STREAM = "bank"
SYNCED = "synced "


async def start_leader(path: Path, servers: list[str], transfers: int, replicas: int = 1) -> Child:
    child = await Child.start(
        "-m",
        "stress._child_repl",
        "leader",
        str(path),
        ",".join(servers),
        STREAM,
        str(transfers),
        str(replicas),
        name="leader",
        cwd=HERE.parent,
    )
    await child.wait_line(lambda line: line == "ready", stdout=True)
    return child


async def start_replica(path: Path, servers: list[str]) -> Child:
    child = await Child.start(
        "-m",
        "stress._child_repl",
        "replica",
        str(path),
        ",".join(servers),
        STREAM,
        name="replica",
        cwd=HERE.parent,
    )
    await child.wait_line(lambda line: line == "ready", stdout=True)
    return child


def acknowledged(child: Child) -> tuple[int, int]:
    """The last ``synced <seq> <count>`` of a leader: (seq, transfers acknowledged)."""
    seq, count = 0, 0
    for line in child.out:
        if line.startswith(SYNCED):
            seq, count = map(int, line[len(SYNCED) :].split())
    return seq, count


async def syncs(child: Child, more: int) -> None:
    """Wait until the leader printed ``more`` further ``synced`` lines."""
    have = sum(line.startswith(SYNCED) for line in child.out)
    target = have + more
    await child.wait_line(
        lambda _: sum(line.startswith(SYNCED) for line in child.out) >= target,
        stdout=True,
    )


async def stop_leader(child: Child) -> int:
    """SIGTERM: the leader stops writing, syncs and exits; returns its last change seq."""
    child.signal(signal.SIGTERM)
    assert await child.wait(TIMEOUT) == 0, child.stderr
    assert child.out[-1] == "done", child.stdout
    return acknowledged(child)[0]


async def applied(path: Path) -> int:
    status = await replica_status(path)
    return 0 if status is None else int(status["seq"] or 0)


async def until_applied(path: Path, seq: int, replica: Child | None = None) -> None:
    """Poll the replica's stored position (a child applies) until it reaches ``seq``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while await applied(path) < seq:
        if replica is not None and replica.process.returncode is not None:
            raise AssertionError(f"the replica exited:\n{replica.stdout}\n{replica.stderr}")
        assert loop.time() < deadline, f"replica stuck at {await applied(path)} < {seq}"
        await asyncio.sleep(0.02)


def books(dump: Dump) -> int:
    """Check the bank's invariant on a dump; returns the transfer count."""
    accounts = dict(dump[b"accounts"][1])
    audit = dict(dump[b"audit"][1])
    count = int(accounts[COUNT_KEY])
    assert sum(int(accounts[account(i)]) for i in range(ACCOUNTS)) == TOTAL
    assert len(audit) == count + 1  # a row per transfer, and the "opened" row
    return count


async def finish(leader: Path, replica_path: Path, replica: Child, seq: int, ack: int) -> None:
    """The replica applies up to ``seq``, stops, and is identical to the leader, holding
    at least the ``ack`` transfers ``pub.sync()`` acknowledged."""
    await until_applied(replica_path, seq, replica)
    replica.signal(signal.SIGTERM)
    assert await replica.wait(TIMEOUT) == 0, replica.stderr
    leader_dump = await asyncio.to_thread(dump_path, leader)
    replica_dump = await asyncio.to_thread(dump_path, replica_path)
    assert replica_dump == leader_dump
    assert books(replica_dump) >= ack


async def test_leader_killed_mid_burst_then_restarted(
    nats_server: NatsServer, tmp_path: Path, stress_seed: int, figures: Figures
) -> None:
    rnd = random.Random(stress_seed)
    leader, replica_path = tmp_path / "leader", tmp_path / "replica"
    servers = [nats_server.url]
    child = await start_leader(leader, servers, -1)
    replica = await start_replica(replica_path, servers)
    try:
        await syncs(child, rnd.randrange(3, 15))
        # Mid-burst: the next transfers are committed, some not yet published.
        await asyncio.sleep(rnd.uniform(0, 0.05))
        child.process.kill()
        await child.wait()
        _, ack = acknowledged(child)
        # The restarted leader finds the stream's end and publishes its log's tail.
        again = await start_leader(leader, servers, 0)
        assert await again.wait(TIMEOUT) == 0, again.stderr
        seq, count = acknowledged(again)
        assert count >= ack
        figures.set("replication: transfers when the leader was killed", count)
        await finish(leader, replica_path, replica, seq, ack)
    finally:
        await replica.kill()
        await child.kill()


async def test_replica_killed_mid_apply_then_restarted(
    nats_server: NatsServer, tmp_path: Path, stress_seed: int
) -> None:
    rnd = random.Random(stress_seed)
    leader, replica_path = tmp_path / "leader", tmp_path / "replica"
    servers = [nats_server.url]
    child = await start_leader(leader, servers, -1)
    replica = await start_replica(replica_path, servers)
    try:
        await syncs(child, 5)
        await until_applied(replica_path, 1, replica)
        await asyncio.sleep(rnd.uniform(0, 0.05))
        replica.process.kill()  # while commits keep arriving
        await replica.wait()
        before = await applied(replica_path)
        await syncs(child, 5)  # the leader goes on meanwhile
        replica = await start_replica(replica_path, servers)  # continues from `before`
        await syncs(child, 3)
        seq = await stop_leader(child)
        _, ack = acknowledged(child)
        assert await applied(replica_path) >= before
        await finish(leader, replica_path, replica, seq, ack)
    finally:
        await replica.kill()
        await child.kill()


async def test_nats_server_restart_both_sides_reconnect(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    leader, replica_path = tmp_path / "leader", tmp_path / "replica"
    servers = [nats_server.url]
    child = await start_leader(leader, servers, -1)
    replica = await start_replica(replica_path, servers)
    try:
        await syncs(child, 5)
        _, before = acknowledged(child)
        await asyncio.to_thread(nats_server.restart)  # the leader keeps committing meanwhile
        await syncs(child, 5)  # the publisher reconnected and published again
        _, after = acknowledged(child)
        assert after > before
        seq = await stop_leader(child)
        _, ack = acknowledged(child)
        await finish(leader, replica_path, replica, seq, ack)  # the replica reconnected too
    finally:
        await replica.kill()
        await child.kill()


async def test_cluster_node_killed_mid_run(
    nats_cluster: NatsCluster, tmp_path: Path, stress_seed: int
) -> None:
    rnd = random.Random(stress_seed)
    leader, replica_path = tmp_path / "leader", tmp_path / "replica"
    servers = nats_cluster.urls
    child = await start_leader(leader, servers, -1, replicas=3)
    replica = await start_replica(replica_path, servers)
    try:
        await syncs(child, 5)
        victim = rnd.randrange(3)
        await asyncio.to_thread(nats_cluster.kill, victim)
        _, before = acknowledged(child)
        await syncs(child, 5)  # two of three nodes are a quorum: publishing goes on
        assert acknowledged(child)[1] > before
        seq = await stop_leader(child)
        _, ack = acknowledged(child)
        await finish(leader, replica_path, replica, seq, ack)
    finally:
        await replica.kill()
        await child.kill()


async def test_books_balance_on_the_replica_while_it_applies(
    nats_server: NatsServer, tmp_path: Path, figures: Figures
) -> None:
    leader, replica_path = tmp_path / "leader", tmp_path / "replica"
    servers = [nats_server.url]
    child = await start_leader(leader, servers, 600)
    checks: list[int] = []
    async with Replica(replica_path, servers=servers, stream=STREAM) as rep:
        done = asyncio.Event()

        async def audit() -> None:
            # The leader's first commit creates both databases (a bounded poll until then).
            while await rep.env.database_info("audit") is None:
                assert not done.is_set(), "the replica never received the first commit"
                await asyncio.sleep(0.005)
            accounts = await rep.env.open_db("accounts")
            audit_db = await rep.env.open_db("audit")
            # One snapshot of both databases at a time, as often as it can, until the end.
            while not done.is_set():
                async with rep.env.begin() as snap:
                    rows = await snap[accounts].get_multi([account(i) for i in range(ACCOUNTS)])
                    count = int(await snap[accounts].get(COUNT_KEY) or b"0")
                    audited = await snap[audit_db].count()
                assert sum(int(v or b"0") for v in rows.values()) == TOTAL
                assert audited == count + 1
                checks.append(count)

        auditor = asyncio.ensure_future(audit())
        try:
            assert await child.wait(TIMEOUT * 2) == 0, child.stderr
            seq, ack = acknowledged(child)
            assert ack == 600
            await rep.wait_for(seq, timeout=TIMEOUT)
        finally:
            done.set()
            await auditor
        replica_dump = await asyncio.to_thread(dump_lmdb, rep.env.lmdb_environment)
    assert replica_dump == await asyncio.to_thread(dump_path, leader)
    assert books(replica_dump) == 600
    # The checks saw the replica at many points of its progress, not only at the end.
    assert len(set(checks)) > 3, checks
    figures.set("replication: invariant checks on the replica", len(checks))
