"""aiolmdb.replication against a real nats-server (tests/nats_server.py): publish and follow,
byte for byte, commits applied whole, restarts, large commits in pieces, fencing, validation,
credentials, snapshots, metrics."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
from conftest import TIMEOUT, collect
from nats_server import NatsServer

import aiolmdb
from aiolmdb.errors import ReplicationError
from aiolmdb.replication import (
    FencedError,
    InvalidMessageError,
    Publisher,
    ReadOnlyError,
    Replica,
    replica_status,
    stream_status,
)

pytestmark = pytest.mark.timeout(120)

RESERVED = (b"__aiolmdb__", b"__aiolmdb_changes__")


Dump = dict[bytes | None, tuple[list[str], list[tuple[bytes, bytes]]]]


def _dump(env: lmdb.Environment) -> Dump:
    out: Dump = {}
    with env.begin() as txn:
        plain: list[tuple[bytes, bytes]] = []
        for key, value in list(txn.cursor()):
            if key in RESERVED:
                continue
            try:
                handle = env.open_db(key, txn=txn, create=False)
            except lmdb.Error:
                plain.append((key, value))
                continue
            stored = handle.flags(txn)  # type: ignore[call-arg]  # py-lmdb's stub lacks txn
            flags = sorted(name for name, on in stored.items() if on)
            out[key] = (flags, list(txn.cursor(db=handle).iternext()))
        out[None] = ([], plain)
    return out


async def dump(env: aiolmdb.Environment) -> Dump:
    """Every user database of ``env``: its LMDB flags and its raw items as stored (every
    dupsort pair): what a replica must hold identically."""
    return await asyncio.to_thread(_dump, env.lmdb_environment)


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[aiolmdb.Environment]:
    async with aiolmdb.open(tmp_path / "leader", changelog=True) as env:
        yield env


def servers(server: NatsServer) -> str:
    return server.url


async def test_publish_and_follow_byte_identical(
    leader: aiolmdb.Environment, nats_server: NatsServer, tmp_path: Path
) -> None:
    plain = leader.open_db("plain")
    dups = leader.open_db("dups", dupsort=True)
    versioned = leader.open_db("versioned", versioned=True)
    async with Publisher(leader, servers=nats_server.url, stream="orders") as pub:
        await plain.put(b"a", b"1")
        await asyncio.gather(*(plain.put(b"k%03d" % i, b"v%d" % i) for i in range(200)))
        await dups.put(b"d", b"x")
        await dups.put(b"d", b"y")
        await dups.put(b"d", b"z")
        await dups.delete(b"d", b"y")
        await versioned.put(b"v", b"first")
        await versioned.put(b"v", b"second")
        await plain.delete(b"k000")
        doomed = leader.open_db("doomed")
        await doomed.put(b"x", b"y")
        await doomed.drop()
        emptied = leader.open_db("emptied")
        await emptied.put(b"x", b"y")
        await emptied.drop(delete=False)
        await emptied.put(b"after", b"drop")
        seq = await pub.sync()
        assert seq == await leader.last_seq()
        async with Replica(tmp_path / "replica", servers=nats_server.url, stream="orders") as rep:
            await rep.wait_for(seq, timeout=TIMEOUT)
            assert rep.applied == seq
            db = rep.env.open_db("plain")
            assert await db.get(b"a") == b"1"
            assert await db.get(b"k000") is None
            rv = rep.env.open_db("versioned", versioned=True)
            entry = await rv.get_entry(b"v")
            assert entry is not None
            assert entry.value == b"second"
            assert await rep.env.database_info("doomed") is None
            assert await dump(rep.env) == await dump(leader)


async def stream_log_ids(server: NatsServer, stream: str) -> list[tuple[str, int, int, str]]:
    """(log id, first, last, piece) of every message of the stream, in order."""
    import nats

    nc = await nats.connect(server.url, **credentials(server))
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq=seq)
            headers = msg.headers or {}
            log_id, first, last = headers.get("Aiolmdb-Commit", "?:0:0").split(":")
            out.append((log_id, int(first), int(last), headers.get("Aiolmdb-Piece", "")))
        return out
    finally:
        await nc.close()


def credentials(server: NatsServer) -> dict[str, Any]:
    options = server.connect_options()
    options.pop("servers")
    return options


async def test_replica_refuses_writes_naming_the_stream(
    leader: aiolmdb.Environment, nats_server: NatsServer, tmp_path: Path
) -> None:
    db = leader.open_db("orders")
    async with Publisher(leader, servers=nats_server.url, stream="orders") as pub:
        await db.put(b"k", b"v")
        seq = await pub.sync()
        async with Replica(tmp_path / "r", servers=nats_server.url, stream="orders") as rep:
            await rep.wait_for(seq, timeout=TIMEOUT)
            rdb = rep.env.open_db("orders")
            assert await rdb.get(b"k") == b"v"
            attempts = [
                rdb.put(b"k", b"x"),
                rdb.delete(b"k"),
                rdb.put_multi({b"a": b"1"}),
                rdb.run(lambda txn: txn.put(b"a", b"1"), write=True),
                rdb.drop(),
                rdb.drop(delete=False),
                rep.env.get_default_database().put(b"a", b"b"),
            ]
            for attempt in attempts:
                with pytest.raises(ReadOnlyError, match=r"'orders'.*leader takes writes"):
                    await attempt
            with pytest.raises(ReadOnlyError, match="leader takes writes"):
                async with rep.env.begin(write=True):
                    pass
            assert await rdb.get(b"k") == b"v"
            # Replication still applies past the guard.
            await db.put(b"k2", b"v2")
            await rep.wait_for(await pub.sync(), timeout=TIMEOUT)
            assert await rdb.get(b"k2") == b"v2"


async def test_restarts_continue_without_loss_or_duplicates(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    url = nats_server.url
    async with aiolmdb.open(tmp_path / "leader", changelog=True) as leader:
        db = leader.open_db("orders")
        async with Publisher(leader, servers=url, stream="orders") as pub:
            for i in range(10):
                await db.put(b"a%d" % i, b"1")
            first = await pub.sync()
            async with Replica(tmp_path / "r", servers=url, stream="orders") as rep:
                await rep.wait_for(first, timeout=TIMEOUT)
        # The leader commits while nothing publishes, the replica is down too.
        for i in range(10):
            await db.put(b"b%d" % i, b"2")
        await db.delete(b"a0")
    stored = await replica_status(tmp_path / "r")
    assert stored is not None
    assert stored["seq"] == first
    assert stored["stream"] == "orders"
    async with (
        aiolmdb.open(tmp_path / "leader", changelog=True) as leader,
        Publisher(leader, servers=url, stream="orders") as pub,
    ):
        last = await pub.sync()
        assert last == await leader.last_seq() > first
        async with Replica(tmp_path / "r", servers=url, stream="orders") as rep:
            assert rep.applied >= first  # continued from its position, no snapshot
            await rep.wait_for(last, timeout=TIMEOUT)
            assert await dump(rep.env) == await dump(leader)
    messages = await stream_log_ids(nats_server, "orders")
    firsts = [first for _, first, _, _ in messages]
    assert len(set(firsts)) == len(firsts), "a commit was published twice"
    for (_, _, last_a, _), (_, first_b, _, _) in itertools.pairwise(messages):
        assert first_b == last_a + 1, "the stream skips or repeats changes"
    status = await stream_status(url, "orders")
    assert status["leader_seq"] == last
    assert status["messages"] == len(messages)
    assert status["snapshot"] is not None
    assert status["snapshot"]["seq"] == 0


async def test_a_multi_database_transaction_is_atomic_on_the_replica(
    leader: aiolmdb.Environment, nats_server: NatsServer, tmp_path: Path
) -> None:
    accounts = leader.open_db("accounts", value_coder=aiolmdb.coders.UInt64Coder())
    audit = leader.open_db("audit", key_coder=aiolmdb.coders.UInt64Coder())
    names = [b"acct%d" % i for i in range(5)]
    await accounts.put_multi(dict.fromkeys(names, 100))
    url = nats_server.url
    async with (
        Publisher(leader, servers=url, stream="bank") as pub,
        Replica(tmp_path / "r", servers=url, stream="bank") as rep,
    ):
        await rep.wait_for(await pub.sync(), timeout=TIMEOUT)
        r_accounts = rep.env.open_db("accounts", value_coder=aiolmdb.coders.UInt64Coder())
        r_audit = rep.env.open_db("audit", key_coder=aiolmdb.coders.UInt64Coder())
        # Opened before the first snapshot begins (a snapshot sees only handles opened before).
        assert await r_audit.count() == 0
        assert await r_accounts.get(names[0]) == 100
        done = asyncio.get_running_loop().create_future()

        async def check() -> int:
            audits = 0
            while not done.done() or audits == 0:
                async with rep.env.begin() as snap:
                    balances = await snap[r_accounts].get_multi(names)
                    moved = await snap[r_audit].count()
                    assert sum(v or 0 for v in balances.values()) == 500
                    assert balances[names[0]] == 100 - moved
                audits += 1
                await asyncio.sleep(0)
            return audits

        checker = asyncio.create_task(check())
        for i in range(60):
            async with leader.begin(write=True) as txn:
                src = await txn[accounts].get(names[0])
                dst = await txn[accounts].get(names[1 + i % 4])
                assert src is not None
                assert dst is not None
                await txn[accounts].put(names[0], src - 1)
                await txn[accounts].put(names[1 + i % 4], dst + 1)
                await txn[audit].put(i, b"moved 1")
        await rep.wait_for(await pub.sync(), timeout=TIMEOUT)
        done.set_result(None)
        assert await asyncio.wait_for(checker, TIMEOUT) > 0
        assert await dump(rep.env) == await dump(leader)


async def test_a_commit_larger_than_max_payload_is_applied_whole(
    leader: aiolmdb.Environment, nats_server_factory: Any, tmp_path: Path
) -> None:
    server = nats_server_factory(max_payload=64 * 1024)
    db = leader.open_db("bulk")
    async with Publisher(leader, servers=server.url, stream="bulk") as pub:
        await db.put(b"small", b"x")
        before = await pub.sync()
        big = os.urandom(300 * 1024)
        await db.put_multi({b"big": big, **{b"k%04d" % i: b"v" * 200 for i in range(500)}})
        after = await pub.sync()
        messages = await stream_log_ids(server, "bulk")
        pieces = [m for m in messages if m[1] == before + 1]
        assert len(pieces) >= 5
        assert pieces[-1][3] == f"{len(pieces) - 1}/{len(pieces)}"
        async with Replica(tmp_path / "r", servers=server.url, stream="bulk") as rep:
            await rep.wait_for(after, timeout=TIMEOUT)
            assert await rep.env.open_db("bulk").get(b"big") == big
            assert await dump(rep.env) == await dump(leader)


async def test_two_racing_publishers_one_is_fenced(tmp_path: Path, nats_server: NatsServer) -> None:
    url = nats_server.url
    async with (
        aiolmdb.open(tmp_path / "a", changelog=True) as env_a,
        aiolmdb.open(tmp_path / "b", changelog=True) as env_b,
    ):
        pub_a = Publisher(env_a, servers=url, stream="race")
        pub_b = Publisher(env_b, servers=url, stream="race")
        await asyncio.gather(pub_a.start(), pub_b.start())
        try:
            db_a, db_b = env_a.open_db("x"), env_b.open_db("x")

            async def burst(db: aiolmdb.AsyncDatabase[bytes, bytes], tag: bytes) -> None:
                for i in range(30):
                    try:
                        await db.put(tag + b"%d" % i, b"v")
                    except FencedError:
                        return

            await asyncio.gather(burst(db_a, b"a"), burst(db_b, b"b"))
            results = await asyncio.gather(pub_a.sync(), pub_b.sync(), return_exceptions=True)
            fenced = [r for r in results if isinstance(r, FencedError)]
            assert len(fenced) == 1, results
            assert "'race'" in str(fenced[0])
            assert "another publisher" in str(fenced[0])
            loser, winner = (
                (env_a, env_b) if isinstance(results[0], FencedError) else (env_b, env_a)
            )
            with pytest.raises(FencedError, match="refuses writes"):
                await loser.open_db("x").put(b"late", b"v")
            await winner.open_db("x").put(b"late", b"v")  # the winner still writes
            winner_pub = pub_b if loser is env_a else pub_a
            await winner_pub.sync()
            # The loser's snapshot would replace the winner's: refused.
            loser_pub = pub_a if loser is env_a else pub_b
            with pytest.raises(FencedError, match="snapshot was not stored"):
                await loser_pub.snapshot()
            status = await stream_status(url, "race")
            assert status["snapshot"]["log_id"] in (await winner.changelog_id(), None)
        finally:
            await asyncio.gather(pub_a.close(), pub_b.close())
        ids = {log_id for log_id, *_ in await stream_log_ids(nats_server, "race")}
        assert ids == {await winner.changelog_id()}, "the stream interleaves two logs"


async def test_a_strangers_message_stops_the_replica_naming_it(
    leader: aiolmdb.Environment, nats_server: NatsServer, tmp_path: Path
) -> None:
    import nats

    db = leader.open_db("orders")
    async with Publisher(leader, servers=nats_server.url, stream="orders") as pub:
        await db.put(b"k", b"v")
        seq = await pub.sync()
        async with Replica(tmp_path / "r", servers=nats_server.url, stream="orders") as rep:
            await rep.wait_for(seq, timeout=TIMEOUT)
            nc = await nats.connect(nats_server.url)
            try:
                js = nc.jetstream()
                forged = {"Aiolmdb-Commit": f"{await leader.changelog_id()}:{seq + 1}:{seq + 1}"}
                ack = await js.publish("aiolmdb.orders", b"ALRC garbage", headers=forged)
            finally:
                await nc.close()
            with pytest.raises(InvalidMessageError, match=f"message {ack.seq}") as caught:
                await rep.wait_for(seq + 1, timeout=TIMEOUT)
            assert caught.value.stream_seq == ack.seq
            assert rep.error is caught.value
            assert rep.applied == seq
            assert await rep.env.open_db("orders").get(b"k") == b"v"
        # The leader's next publish finds the stranger's message: it is fenced.
        await db.put(b"k2", b"v")
        with pytest.raises(FencedError):
            await pub.sync()


async def test_wrong_credentials_fail_at_once(
    leader: aiolmdb.Environment, nats_auth_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_auth_server.url
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ReplicationError, match="refused the credentials"):
        await Publisher(leader, servers=url, stream="s", user="aiolmdb", password="wrong").start()
    with pytest.raises(ReplicationError, match="refused the credentials"):
        await Replica(
            tmp_path / "r", servers=url, stream="s", user="aiolmdb", password="no"
        ).start()
    assert loop.time() - started < 10
    good = credentials(nats_auth_server)
    async with Publisher(leader, servers=url, stream="s", **good) as pub:
        await leader.open_db("x").put(b"k", b"v")
        async with Replica(tmp_path / "r", servers=url, stream="s", **good) as rep:
            await rep.wait_for(await pub.sync(), timeout=TIMEOUT)


async def test_bootstrap_from_a_snapshot_and_after_falling_behind(
    leader: aiolmdb.Environment, nats_server: NatsServer, tmp_path: Path
) -> None:
    import nats

    url = nats_server.url
    db = leader.open_db("orders", dupsort=True)
    await db.put(b"before", b"the publisher")  # only a snapshot has it
    async with Publisher(leader, servers=url, stream="orders") as pub:
        async with Replica(tmp_path / "r1", servers=url, stream="orders") as rep:
            await rep.wait_for(await pub.sync(), timeout=TIMEOUT)
            assert await rep.env.open_db("orders", dupsort=True).get(b"before") == b"the publisher"
        for i in range(20):
            await db.put(b"k%d" % i, b"v")
        covered = await pub.snapshot()
        assert covered == await leader.last_seq()
        # Retention drops everything the stream held: the replica's next message is gone.
        nc = await nats.connect(url)
        try:
            await nc.jetstream().purge_stream("orders")
        finally:
            await nc.close()
        await db.put(b"after", b"purge")
        last = await pub.sync()
        async with Replica(tmp_path / "r1", servers=url, stream="orders") as rep:
            await rep.wait_for(last, timeout=TIMEOUT)
            assert await dump(rep.env) == await dump(leader)
        async with Replica(tmp_path / "r2", servers=url, stream="orders") as rep:
            await rep.wait_for(last, timeout=TIMEOUT)
            assert await dump(rep.env) == await dump(leader)


async def test_a_replica_started_before_its_leader_waits(
    leader: aiolmdb.Environment, nats_server: NatsServer, tmp_path: Path
) -> None:
    rep = Replica(tmp_path / "r", servers=nats_server.url, stream="later")
    starting = asyncio.create_task(rep.start())
    await asyncio.sleep(0.5)  # it is waiting for the stream (nothing to wait on from here)
    assert not starting.done()
    db = leader.open_db("x")
    await db.put(b"k", b"v")
    async with Publisher(leader, servers=nats_server.url, stream="later") as pub:
        await db.put(b"k2", b"v2")
        seq = await pub.sync()
        await asyncio.wait_for(starting, TIMEOUT)
        try:
            await rep.wait_for(seq, timeout=TIMEOUT)
            assert await dump(rep.env) == await dump(leader)
        finally:
            await rep.close()


async def test_metrics_and_prometheus(
    leader: aiolmdb.Environment, nats_server: NatsServer, tmp_path: Path
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from aiolmdb.prometheus import EnvironmentCollector

    assert leader.metrics().replication == {}
    db = leader.open_db("x")
    async with Publisher(leader, servers=nats_server.url, stream="m") as pub:
        await db.put(b"k", b"v")
        seq = await pub.sync()
        published = leader.metrics().replication
        assert published["published_seq"] == seq
        assert published["lag_changes"] == 0
        async with Replica(tmp_path / "r", servers=nats_server.url, stream="m") as rep:
            await rep.wait_for(seq, timeout=TIMEOUT)
            applied = rep.env.metrics().replication
            assert applied["applied_seq"] == seq
            assert applied["lag_changes"] == 0
            assert applied["lag_seconds"] == 0
            registry = CollectorRegistry()
            registry.register(EnvironmentCollector(rep.env))
            text = generate_latest(registry).decode()
            assert "aiolmdb_replication_applied_seq{path=" in text
    assert leader.metrics().replication == {}


async def test_promote_a_caught_up_replica(
    leader: aiolmdb.Environment, nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    db = leader.open_db("orders")
    async with Publisher(leader, servers=url, stream="orders") as pub:
        await db.put(b"k", b"v")
        seq = await pub.sync()
        watcher = Replica(tmp_path / "watcher", servers=url, stream="orders")
        await watcher.start()
        try:
            rep = Replica(tmp_path / "r", servers=url, stream="orders")
            await rep.start()
            new_env = await rep.promote(timeout=TIMEOUT)
            async with new_env:
                assert await new_env.last_seq() == seq  # the new log continues the numbers
                async with Publisher(new_env, servers=url, stream="orders") as new_pub:
                    await new_env.open_db("orders").put(b"k2", b"from the new leader")
                    new_seq = await new_pub.sync()
                    assert new_seq > seq
                    await watcher.wait_for(new_seq, timeout=TIMEOUT)
                    assert await dump(watcher.env) == await dump(new_env)
                    # The old leader's next publish is refused: it is fenced.
                    await db.put(b"old", b"leader")
                    with pytest.raises(FencedError):
                        await pub.sync()
                    with pytest.raises(FencedError):
                        await db.put(b"again", b"x")
        finally:
            await watcher.close()


async def test_snapshot_every_n_changes(
    leader: aiolmdb.Environment, nats_server: NatsServer
) -> None:
    db = leader.open_db("x")
    async with Publisher(leader, servers=nats_server.url, stream="snaps", snapshot_every=10) as pub:
        for i in range(25):
            await db.put(b"k%d" % i, b"v")
        await pub.sync()

        async def snapshot_seq() -> int:
            status = await stream_status(nats_server.url, "snaps")
            return int(status["snapshot"]["seq"])

        # Taken in the background once 10 changes were published since the last one; the
        # server is the only place to see it, so it is asked until it shows (bounded).
        for _ in range(int(TIMEOUT / 0.05)):
            if await snapshot_seq() >= 10:
                break
            await asyncio.sleep(0.05)
        assert await snapshot_seq() >= 10


async def test_a_commit_cut_short_is_published_whole_again(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    import nats

    url = nats_server.url
    async with aiolmdb.open(tmp_path / "leader", changelog=True) as leader:
        db = leader.open_db("x")
        async with Publisher(leader, servers=url, stream="cut") as pub:
            await db.put(b"a", b"1")
            seq = await pub.sync()
        await db.put(b"b", b"2")  # committed, never published
        log_id = await leader.changelog_id()
        # A publisher that died after the first of three pieces of that commit.
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info("cut")
            await js.publish(
                "aiolmdb.cut",
                b"the first third",
                headers={
                    "Nats-Msg-Id": f"{log_id}:{seq + 1}:0/3:dead.1",
                    "Nats-Expected-Last-Sequence": str(info.state.last_seq),
                    "Aiolmdb-Commit": f"{log_id}:{seq + 1}:{seq + 1}",
                    "Aiolmdb-Piece": "0/3",
                },
            )
        finally:
            await nc.close()
        async with (
            Publisher(leader, servers=url, stream="cut") as pub,
            Replica(tmp_path / "r", servers=url, stream="cut") as rep,
        ):
            last = await pub.sync()
            assert last == seq + 1
            await rep.wait_for(last, timeout=TIMEOUT)
            assert await rep.env.open_db("x").get(b"b") == b"2"
            assert await dump(rep.env) == await dump(leader)


async def test_wrong_arguments_and_an_environment_without_a_log(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    async with aiolmdb.open(tmp_path / "plain") as env:
        with pytest.raises(ValueError, match=r"changelog=True"):
            await Publisher(env, servers=nats_server.url, stream="s").start()
        with pytest.raises(ValueError, match="no JetStream stream name"):
            Publisher(env, servers=nats_server.url, stream="a.b")
        with pytest.raises(ValueError, match="snapshot_every"):
            Publisher(env, servers=nats_server.url, stream="s", snapshot_every=0)
    with pytest.raises(ValueError, match="records no change log"):
        Replica(
            tmp_path / "r", servers=nats_server.url, stream="s", env_options={"changelog": True}
        )
    with pytest.raises(ReplicationError, match="not started"):
        _ = Replica(tmp_path / "r", servers=nats_server.url, stream="s").env


async def test_closing_the_environment_ends_its_publisher(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    env = aiolmdb.open(tmp_path / "leader", changelog=True)
    pub = Publisher(env, servers=nats_server.url, stream="closing")
    await pub.start()
    await env.open_db("x").put(b"k", b"v")
    seq = await pub.sync()
    await env.close()
    await asyncio.wait_for(pub.close(), TIMEOUT)
    assert pub.error is None
    assert pub.published == seq


async def test_a_keys_only_log_is_refused(tmp_path: Path, nats_server: NatsServer) -> None:
    async with (
        aiolmdb.open(tmp_path / "keys", changelog="keys") as env,
        Publisher(env, servers=nats_server.url, stream="keys") as pub,
    ):
        await env.open_db("x").put(b"k", b"v")
        with pytest.raises(ReplicationError, match="without its value"):
            await pub.sync()
        assert isinstance(pub.error, ReplicationError)


# ---------------------------------------------------------------------------- expiring databases
class FakeClock:
    """The expiry clock (``aiolmdb._store.expiry.clock``), moved by hand: nothing sleeps."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from aiolmdb._store import expiry

        self.ns = 1_800_000_000 * 10**9
        monkeypatch.setattr(expiry, "clock", self)

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += round(seconds * 10**9)


async def stored(db: aiolmdb.AsyncDatabase[Any, Any]) -> int:
    """Entries LMDB holds, expired or not."""
    return int((await db.stat())["entries"])


async def test_expiring_databases_replicate_with_their_expiry(
    leader: aiolmdb.Environment,
    nats_server: NatsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(monkeypatch)
    url = nats_server.url
    plain = leader.open_db("plain")
    async with Publisher(leader, servers=url, stream="ttl") as pub:
        # Created after the publisher's first snapshot: the replica learns it from the stream.
        cache = await leader.open_db("cache", ttl=10)
        await cache.put(b"a", b"1")
        await cache.put(b"b", b"2", ttl=100)
        await cache.put(b"c", b"3", ttl=None)
        await cache.put(b"gone", b"4", ttl=1)
        await plain.put(b"p", b"plain")
        await leader.open_db("other").put(b"o", b"other")
        seq = await pub.sync()
        rep = Replica(tmp_path / "replica", servers=url, stream="ttl")
        await rep.start()
        try:
            await rep.wait_for(seq, timeout=TIMEOUT)
            info = await rep.env.database_info("cache")
            assert info is not None
            assert info.ttl == 10.0
            # Known as expiring: as on the leader, opened with its ttl (the error names it).
            with pytest.raises(ValueError, match=r"'cache' expires .*default ttl 10 s"):
                await rep.env.open_db("cache")
            replica_cache = await rep.env.open_db("cache", ttl=10)
            assert await collect(replica_cache.items()) == await collect(cache.items())
            assert await replica_cache.get(b"a") == b"1"  # no 8-byte header
            assert await replica_cache.get(b"b") == b"2"
            # The same bytes, and (both ids 1 here) the same expiry index.
            assert await dump(rep.env) == await dump(leader)

            blocker = await leader.begin(write=True)  # the leader's writer cannot sweep now
            try:
                clock.advance(1)  # "gone" expired: hidden on the replica before any sweep
                assert await replica_cache.get(b"gone") is None
                assert await collect(replica_cache.keys()) == [b"a", b"b", b"c"]
                # The replica never sweeps: not by hand, nor as its writer's idle work (each
                # open of a database passes through its writer, then its idle check).
                with pytest.raises(ReadOnlyError, match="replica of stream 'ttl'"):
                    await rep.env.sweep_expired()
                assert await rep.env.open_db("plain").get(b"p") == b"plain"
                assert await rep.env.open_db("other").get(b"o") == b"other"
                assert await stored(replica_cache) == 4
                assert rep.env.metrics().expired == 0
            finally:
                await blocker.abort()

            # The leader's sweep arrives as a delete, its index pair out with it.
            await leader.sweep_expired()
            assert leader.metrics().expired == 1
            await rep.wait_for(await pub.sync(), timeout=TIMEOUT)
            assert await stored(replica_cache) == 3
            assert await dump(rep.env) == await dump(leader)
            assert rep.env.metrics().expired == 0

            # Promoted, it sweeps what expires, and writes with the leader's default ttl.
            clock.advance(100)  # a (10 s) and b (100 s) expired
            new_env = await rep.promote(timeout=TIMEOUT)
        finally:
            await rep.close()
    async with new_env:
        promoted = await new_env.open_db("cache", ttl=10)
        assert await collect(promoted.keys()) == [b"c"]
        await new_env.sweep_expired()  # (its writer may have begun by itself)
        assert new_env.metrics().expired == 2
        assert await stored(promoted) == 1
        await promoted.put(b"d", b"5")
        clock.advance(9)
        assert await promoted.get(b"d") == b"5"
        clock.advance(1)
        assert await promoted.get(b"d") is None


async def test_a_replica_keeps_expiry_through_deletes_drops_and_dump_load(
    leader: aiolmdb.Environment,
    nats_server: NatsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io
    import sys

    from aiolmdb._cli.commands import main

    clock = FakeClock(monkeypatch)
    url = nats_server.url
    path = tmp_path / "replica"
    async with Publisher(leader, servers=url, stream="ttl2") as pub:
        cache = await leader.open_db("cache", ttl=10)
        await cache.put(b"a", b"1")
        await cache.put(b"b", b"2", ttl=30)
        await cache.put(b"a", b"1b", ttl=20)  # a new expiry replaces the old index pair
        await cache.delete(b"b")
        emptied = await leader.open_db("emptied", ttl=5)
        await emptied.put(b"x", b"y")
        await emptied.drop(delete=False)
        doomed = await leader.open_db("doomed", ttl=5)
        await doomed.put(b"x", b"y")
        await doomed.drop()
        async with Replica(path, servers=url, stream="ttl2") as rep:
            await rep.wait_for(await pub.sync(), timeout=TIMEOUT)
            assert await rep.env.database_info("doomed") is None
            info = await rep.env.database_info("emptied")
            assert info is not None
            assert info.ttl == 5.0
            # One index pair left: a's at its 20 s expiry.
            assert await dump(rep.env) == await dump(leader)
            index = await rep.env.database_info("__aiolmdb_expiry__")
            assert index is not None
            assert index.entries == 1

    out = tmp_path / "dump.txt"
    assert await asyncio.to_thread(main, ["dump", "--all", str(path), "--output", str(out)]) == 0
    assert "aiolmdb_ttl=10.0" in out.read_text()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(out.read_bytes())))
    assert await asyncio.to_thread(main, ["load", str(tmp_path / "loaded")]) == 0
    capsys.readouterr()
    async with aiolmdb.open(tmp_path / "loaded") as env:
        loaded = await env.open_db("cache", ttl=10)
        assert await loaded.get(b"a") == b"1b"
        clock.advance(20)
        assert await loaded.get(b"a") is None


async def test_expiring_databases_from_a_snapshot_and_a_changed_default(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FakeClock(monkeypatch)
    url, path, replica = nats_server.url, tmp_path / "leader", tmp_path / "replica"
    async with aiolmdb.open(path, changelog=True) as env:
        cache = await env.open_db("cache", ttl=10)
        await cache.put(b"a", b"1")
        await cache.put(b"b", b"2", ttl=50)
        # The first snapshot holds the marker, the entries and their index pairs.
        async with Publisher(env, servers=url, stream="ttl3") as pub:
            await cache.put(b"a", b"again", ttl=30)  # a's pair from the snapshot must go
            seq = await pub.sync()
            async with Replica(replica, servers=url, stream="ttl3") as rep:
                await rep.wait_for(seq, timeout=TIMEOUT)
                assert await dump(rep.env) == await dump(env)
    # Reopened with another default: the next commit carries it to the replica.
    async with aiolmdb.open(path, changelog=True) as env:
        cache = await env.open_db("cache", ttl=20)
        async with Publisher(env, servers=url, stream="ttl3") as pub:
            await cache.put(b"c", b"3")
            seq = await pub.sync()
            async with Replica(replica, servers=url, stream="ttl3") as rep:
                await rep.wait_for(seq, timeout=TIMEOUT)
                info = await rep.env.database_info("cache")
                assert info is not None
                assert info.ttl == 20.0
                assert await dump(rep.env) == await dump(env)
                db = await rep.env.open_db("cache", ttl=20)
                assert await collect(db.items()) == [(b"a", b"again"), (b"b", b"2"), (b"c", b"3")]


async def test_caught_up_when_the_snapshot_covers_every_message(
    leader: aiolmdb.Environment, nats_server: NatsServer, tmp_path: Path
) -> None:
    # The publisher's first snapshot covers the 10 changes it then publishes: a new replica
    # restores it and skips those messages, which still makes it caught up.
    db = leader.open_db("x")
    for i in range(10):
        await db.put(b"k%d" % i, b"v")
    async with Publisher(leader, servers=nats_server.url, stream="covered") as pub:
        last = await pub.sync()
        async with Replica(tmp_path / "r", servers=nats_server.url, stream="covered") as rep:
            assert await rep.caught_up(timeout=10) == last == 10
            # ... and it still applies what comes after the skipped messages.
            await db.put(b"after", b"v")
            await rep.wait_for(await pub.sync(), timeout=TIMEOUT)
            assert await rep.caught_up(timeout=10) == 11
            assert await dump(rep.env) == await dump(leader)


async def test_bootstrap_of_a_snapshot_larger_than_lmdbs_default_map(
    leader: aiolmdb.Environment, nats_server: NatsServer, tmp_path: Path
) -> None:
    # py-lmdb's default map is 10 MiB: the compact 24 MB copy must open with room to spare.
    db = leader.open_db("big")
    chunk = os.urandom(256 * 1024)
    await db.put_multi([(b"k%03d" % i, chunk) for i in range(96)])
    async with Publisher(leader, servers=nats_server.url, stream="big") as pub:
        last = await pub.sync()
        status = await stream_status(nats_server.url, "big")
        assert status["snapshot"]["bytes"] > 24_000_000
        async with Replica(tmp_path / "r", servers=nats_server.url, stream="big") as rep:
            await rep.wait_for(last, timeout=TIMEOUT)
            assert await rep.env.open_db("big").get(b"k095") == chunk
            assert await dump(rep.env) == await dump(leader)


async def test_a_replica_started_on_an_empty_stream_starts(
    leader: aiolmdb.Environment, nats_server: NatsServer, tmp_path: Path
) -> None:
    # The leader's publisher made the stream and its snapshot, but nothing is written yet.
    db = leader.open_db("x")
    async with Publisher(leader, servers=nats_server.url, stream="empty") as pub:
        status = await stream_status(nats_server.url, "empty")
        assert status["exists"]
        assert status["messages"] == 0
        assert status["snapshot"]["seq"] == 0  # the one a new replica restores
        rep = Replica(tmp_path / "r", servers=nats_server.url, stream="empty")
        await asyncio.wait_for(rep.start(), TIMEOUT)
        try:
            await db.put(b"k", b"first")
            await rep.wait_for(await pub.sync(), timeout=TIMEOUT)
            assert await rep.env.open_db("x").get(b"k") == b"first"
            assert await dump(rep.env) == await dump(leader)
        finally:
            await rep.close()


async def test_an_empty_stream_with_several_snapshots_waits_for_a_message(
    leader: aiolmdb.Environment, nats_server: NatsServer, tmp_path: Path
) -> None:
    # Two leaders' publishers started on the still-empty stream: each stored a snapshot, and
    # only the stream's next message says which leader goes on. The replica waits for it.
    url = nats_server.url
    async with Publisher(leader, servers=url, stream="two"):
        pass
    async with aiolmdb.open(tmp_path / "second", changelog=True) as second:
        db = second.open_db("x")
        async with Publisher(second, servers=url, stream="two") as pub:
            assert (await stream_status(url, "two"))["snapshot"] is None  # which one is unknown
            rep = Replica(tmp_path / "r", servers=url, stream="two")
            starting = asyncio.create_task(rep.start())
            await asyncio.sleep(0.5)  # it is waiting for a message (nothing to wait on from here)
            assert not starting.done()
            await db.put(b"k", b"second's")
            seq = await pub.sync()
            await asyncio.wait_for(starting, TIMEOUT)
            try:
                await rep.wait_for(seq, timeout=TIMEOUT)
                assert await dump(rep.env) == await dump(second)
            finally:
                await rep.close()
