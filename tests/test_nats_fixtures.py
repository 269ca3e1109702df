"""The NATS fixtures themselves (tests/nats_server.py): each starts a real server that takes a
JetStream publish and gives the message back, survives what the fault tests do to it, and
enforces what it was configured with (a user and password, a small ``max_payload``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
import nats.errors
import pytest
from conftest import TIMEOUT, NatsFactory
from nats.aio.client import Client
from nats.js.api import StreamConfig
from nats.js.errors import NoStreamResponseError
from nats_server import NatsCluster, NatsServer


@asynccontextmanager
async def connected(**options: Any) -> AsyncIterator[Client]:
    """A connected client, closed on exit."""
    client = await asyncio.wait_for(nats.connect(connect_timeout=2, **options), TIMEOUT)
    try:
        yield client
    finally:
        await client.close()


async def stream_leader(client: Client, stream: str, excluding: str) -> str:
    """The stream's leader once the running nodes have elected one other than ``excluding``
    (a bounded poll: the election gives the client no event; each request has a short
    timeout, since requests time out until the nodes agree)."""
    js = client.jetstream(timeout=1.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while loop.time() < deadline:
        try:
            info = await js.stream_info(stream)
        except (nats.errors.Error, asyncio.TimeoutError):
            info = None
        leader = info.cluster.leader if info and info.cluster else None
        if leader and leader != excluding:
            return str(leader)
        await asyncio.sleep(0.05)
    raise AssertionError(f"stream {stream} elected no leader other than {excluding}")


async def round_trip(options: dict[str, Any], replicas: int = 1, payload: bytes = b"hello") -> int:
    """Create a stream, publish ``payload`` with a message id, read it back; returns its
    stream sequence."""
    async with connected(**options) as client:
        js = client.jetstream(timeout=TIMEOUT)
        await js.add_stream(
            StreamConfig(name="fixture", subjects=["fixture.>"], num_replicas=replicas)
        )
        if replicas > 1:
            # A replicated stream takes publishes once its nodes have elected its leader.
            await stream_leader(client, "fixture", excluding="")
        ack = await js.publish("fixture.x", payload, headers={"Nats-Msg-Id": "m1"})
        again = await js.publish("fixture.x", payload, headers={"Nats-Msg-Id": "m1"})
        # JetStream deduplicates by message id.
        assert again.duplicate
        assert again.seq == ack.seq
        msg = await js.get_msg("fixture", ack.seq)
        assert msg.data == payload
        assert msg.headers is not None
        assert msg.headers["Nats-Msg-Id"] == "m1"
        info = await js.stream_info("fixture")
        assert info.config.num_replicas == replicas
        seq: int = ack.seq
        return seq


async def test_single_server_round_trip_and_restart_keeps_the_stream(
    nats_server: NatsServer,
) -> None:
    assert nats_server.url.startswith("nats://127.0.0.1:")
    assert await round_trip(nats_server.connect_options()) == 1
    await asyncio.to_thread(nats_server.restart)
    async with connected(**nats_server.connect_options()) as client:
        js = client.jetstream(timeout=TIMEOUT)
        assert (await js.get_msg("fixture", 1)).data == b"hello"


async def test_a_killed_server_comes_back_with_its_store(nats_server: NatsServer) -> None:
    await round_trip(nats_server.connect_options())
    pid = nats_server.pid
    nats_server.kill()
    assert not nats_server.running
    await asyncio.to_thread(nats_server.start)
    assert nats_server.pid != pid
    async with connected(**nats_server.connect_options()) as client:
        js = client.jetstream(timeout=TIMEOUT)
        info = await js.stream_info("fixture")
        assert info.state.last_seq == 1


async def test_a_client_reconnects_across_a_restart(nats_server: NatsServer) -> None:
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    async with connected(
        **nats_server.connect_options(), reconnect_time_wait=0.05, reconnected_cb=on_reconnect
    ) as client:
        js = client.jetstream(timeout=TIMEOUT)
        await js.add_stream(StreamConfig(name="r", subjects=["r.>"]))
        await js.publish("r.a", b"1")
        # In a thread: the client's loop must keep running to notice the restart.
        await asyncio.to_thread(nats_server.restart)
        await asyncio.wait_for(reconnected.wait(), TIMEOUT)
        ack = await js.publish("r.a", b"2")
        assert ack.seq == 2


async def test_auth_server_refuses_a_wrong_password(nats_auth_server: NatsServer) -> None:
    assert await round_trip(nats_auth_server.connect_options()) == 1
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    # nats.connect() leaves the refused connection's socket open (a ResourceWarning, an
    # error here): a Client of our own can be closed after the failed connect.
    client = Client()
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
        await asyncio.wait_for(
            client.connect(
                nats_auth_server.url,
                user="aiolmdb",
                password="wrong",
                allow_reconnect=False,
                max_reconnect_attempts=0,
                error_cb=on_error,
            ),
            TIMEOUT,
        )
    await client.close()
    assert any("authorization" in str(e).lower() for e in errors)


async def test_max_payload_is_configurable(nats_server_factory: NatsFactory) -> None:
    server = nats_server_factory(max_payload=64 * 1024)
    async with connected(**server.connect_options()) as client:
        assert client.max_payload == 64 * 1024
    await round_trip(server.connect_options(), payload=b"x" * 60_000)
    async with connected(**server.connect_options()) as client:
        js = client.jetstream(timeout=TIMEOUT)
        with pytest.raises(nats.errors.MaxPayloadError):
            await js.publish("fixture.x", b"x" * (64 * 1024 + 1))


async def test_publish_to_a_missing_stream_is_refused(nats_server: NatsServer) -> None:
    async with connected(**nats_server.connect_options()) as client:
        js = client.jetstream(timeout=TIMEOUT)
        with pytest.raises(NoStreamResponseError):
            await js.publish("nowhere.x", b"x")


@pytest.mark.slow
async def test_cluster_round_trip_with_three_replicas_survives_a_node(
    nats_cluster: NatsCluster,
) -> None:
    assert len(nats_cluster.urls) == 3
    assert nats_cluster.meta_leader() in {"n0", "n1", "n2"}
    await round_trip({"servers": nats_cluster.urls}, replicas=3)
    nats_cluster.kill(0)
    async with connected(servers=nats_cluster.urls[1:]) as client:
        js = client.jetstream(timeout=TIMEOUT)
        await stream_leader(client, "fixture", excluding="n0")
        # Two of three replicas are a quorum: the stream takes writes without node 0.
        ack = await js.publish("fixture.y", b"after", headers={"Nats-Msg-Id": "m2"})
        assert ack.seq == 2
    await asyncio.to_thread(nats_cluster.start, 0)
    async with connected(servers=[nats_cluster.urls[0]]) as client:
        js = client.jetstream(timeout=TIMEOUT)
        assert (await js.get_msg("fixture", 2)).data == b"after"
