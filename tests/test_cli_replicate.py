"""``aiolmdb replicate`` through its entry point (``python -m aiolmdb``) against a real
nats-server: publish and follow until a signal, status, promote, and the errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from nats_server import NatsServer
from repl_util import Child, dump_lmdb, dump_path, run_cli

import aiolmdb
from aiolmdb.__main__ import main
from aiolmdb.replication import replica_status, stream_status

pytestmark = pytest.mark.timeout(180)

STREAM = "clitest"
posix_signals = pytest.mark.skipif(
    sys.platform == "win32", reason="stops child processes with SIGINT/SIGTERM"
)


async def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``aiolmdb replicate args...`` through ``main()`` in this process (in a thread: it runs
    its own event loop): (status, stdout, stderr)."""
    capsys.readouterr()
    code = await asyncio.wait_for(asyncio.to_thread(main, ["replicate", *args]), 120)
    out, err = capsys.readouterr()
    return code, out, err


def conn(server: NatsServer, stream: str = STREAM) -> list[str]:
    return ["--servers", server.url, "--stream", stream]


async def write_some(path: Path, start: int, count: int) -> int:
    """Commits ``count`` puts to two databases of the leader at ``path`` (its own process's
    commits: the CLI publisher follows the log); returns the log's last sequence."""
    async with aiolmdb.open(path, changelog=True) as env:
        a, b = env.open_db("a"), env.open_db("b", dupsort=True)
        for i in range(start, start + count):
            async with env.begin(write=True) as txn:
                await txn[a].put(b"k%05d" % i, b"v%d" % i)
                await txn[b].put(b"d", b"%05d" % i)
        return await env.last_seq()


async def applied(path: Path) -> int:
    status = await replica_status(path)
    return 0 if status is None else int(status["seq"] or 0)


async def until_applied(path: Path, seq: int) -> None:
    """Poll the replica's stored position (another process applies) until it reaches seq."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while await applied(path) < seq:
        assert loop.time() < deadline, f"replica {path} stuck at {await applied(path)} < {seq}"
        await asyncio.sleep(0.02)


async def until_published(server: NatsServer, seq: int) -> None:
    """Poll the stream (another process publishes) until it holds the change ``seq``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        status = await stream_status(server.url, STREAM)
        if (status.get("leader_seq") or 0) >= seq:
            return
        assert loop.time() < deadline, f"stream {STREAM} stuck at {status}"
        await asyncio.sleep(0.02)


@posix_signals
@pytest.mark.slow
async def test_publish_follow_status_and_promote(
    nats_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leader, replica = tmp_path / "leader", tmp_path / "replica"
    await write_some(leader, 0, 20)
    publisher = await Child.cli("replicate", "publish", str(leader), *conn(nats_server))
    try:
        await publisher.wait_line(lambda line: "publishing" in line)
        # Commits of another process (this one) after the publisher started.
        last = await write_some(leader, 20, 30)

        await until_published(nats_server, last)
        code, _, err = await cli(
            capsys, "follow", str(replica), *conn(nats_server), "--once", "--timeout", "60"
        )
        assert code == 0, err
        assert f"caught up with stream {STREAM}: applied {last}" in err
        assert await applied(replica) == last

        # follow until SIGINT: it applies what comes, then exits cleanly.
        follower = await Child.cli("replicate", "follow", str(replica), *conn(nats_server))
        try:
            await follower.wait_line(lambda line: "following" in line)
            last = await write_some(leader, 50, 25)
            await until_applied(replica, last)
            follower.signal(signal.SIGINT)
            assert await follower.wait() == 0, follower.stderr
            assert f"applied the changes up to {last}" in follower.stderr
        finally:
            await follower.kill()

        code, out, err = await cli(capsys, "status", str(replica), *conn(nats_server), "--json")
        assert code == 0, err
        report = json.loads(out)
        assert report["stream"]["leader_seq"] == last
        assert report["replica"]["seq"] == last
        assert report["replica"]["lag_changes"] == 0
        code, out, err = await cli(capsys, "status", *conn(nats_server))
        assert code == 0, err
        assert f"leader change   {last}" in out
        assert "replica" not in out

        publisher.signal(signal.SIGTERM)
        assert await publisher.wait() == 0, publisher.stderr
        assert f"holds the changes up to {last}" in publisher.stderr
    finally:
        await publisher.kill()
    assert await asyncio.to_thread(dump_path, replica) == await asyncio.to_thread(dump_path, leader)

    # The leader is gone: promote the replica, which then takes writes.
    code, _, err = await cli(capsys, "promote", str(replica), *conn(nats_server))
    assert code == 0, err
    assert f"promoted {replica} at change {last}" in err
    async with aiolmdb.open(replica, changelog=True) as env:
        await env.open_db("a").put(b"new", b"leader")
        assert await env.last_seq() == last + 1  # its log continues the leader's numbers
        assert (await asyncio.to_thread(dump_lmdb, env.lmdb_environment))[b"a"][1][-1] == (
            b"new",
            b"leader",
        )


@posix_signals
@pytest.mark.slow
async def test_promote_publish_takes_over_the_stream(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    leader, replica = tmp_path / "leader", tmp_path / "replica"
    last = await write_some(leader, 0, 10)
    publisher = await Child.cli("replicate", "publish", str(leader), *conn(nats_server))
    try:
        await publisher.wait_line(lambda line: "publishing" in line)
        code, _, err = await run_cli(
            "replicate", "follow", str(replica), *conn(nats_server), "--once", "--timeout", "20"
        )
        assert code == 0, err
        publisher.signal(signal.SIGTERM)
        assert await publisher.wait() == 0, publisher.stderr
    finally:
        await publisher.kill()
    assert await applied(replica) == last

    promoted = await Child.cli(
        "replicate", "promote", str(replica), *conn(nats_server), "--publish"
    )
    try:
        await promoted.wait_line(lambda line: "publishing" in line)
        newest = await write_some(replica, 100, 5)  # the new leader's writes, published
        assert newest == last + 10
        await until_published(nats_server, newest)
        promoted.signal(signal.SIGINT)
        assert await promoted.wait() == 0, promoted.stderr
    finally:
        await promoted.kill()


async def test_wrong_password_fails_at_once(
    nats_auth_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await cli(
        capsys,
        "follow",
        str(tmp_path / "replica"),
        *conn(nats_auth_server),
        "--user",
        "aiolmdb",
        "--password",
        "wrong",
    )
    assert code == 2
    assert "refused the credentials" in err
    assert nats_auth_server.url in err
    assert "Traceback" not in err


async def test_password_from_the_environment(
    nats_auth_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ["AIOLMDB_NATS_PASSWORD"] = nats_auth_server.password or ""
    try:
        code, out, err = await cli(capsys, "status", *conn(nats_auth_server), "--user", "aiolmdb")
    finally:
        del os.environ["AIOLMDB_NATS_PASSWORD"]
    assert code == 0, err
    assert f"stream {STREAM}: does not exist" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "--stream", "s"], "the following arguments are required: --servers"),
        (["status", "--servers", ",", "--stream", "s"], "at least one server URL"),
        (["status", "--servers", "nats://x", "--stream", "s", "--password", "p"], "needs --user"),
        (["publish", "p", "--servers", "nats://x", "--stream", "s", "--replicas", "0"], ">= 1"),
        (["status", "--servers", "nats://x", "--stream", "no.dots"], "no JetStream stream name"),
        (["follow", "p", "--servers", "nats://x", "--stream", "s", "--timeout", "0"], "> 0"),
        (["publish", "p", "--servers", "nats://x", "--stream", "s", "--max-age", "x"], "seconds"),
        (["publish", "p", "--servers", "nats://x", "--stream", "s", "--max-bytes", "x"], "number"),
        (
            ["status", "--servers", "nats://x", "--stream", "s", "--tls-cert", "c.pem"],
            "--tls-cert and --tls-key go together",
        ),
        (
            ["status", "--servers", "nats://x", "--stream", "s", "--tls-ca", "/nonexistent.pem"],
            "No such file",
        ),
        (["replicate-typo"], "invalid choice"),
    ],
)
async def test_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await cli(capsys, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


async def test_status_of_a_path_that_is_no_replica(
    nats_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await write_some(tmp_path / "plain", 0, 1)
    code, _, err = await cli(capsys, "status", str(tmp_path / "plain"), *conn(nats_server))
    assert code == 2
    assert "is not a replica" in err
    code, _, err = await cli(capsys, "status", str(tmp_path / "none"), *conn(nats_server))
    assert code == 2
    assert "does not exist" in err


@posix_signals
@pytest.mark.slow
async def test_a_promoted_replica_fences_the_old_leader(
    nats_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leader, replica = tmp_path / "leader", tmp_path / "replica"
    await write_some(leader, 0, 5)
    old = await Child.cli("replicate", "publish", str(leader), *conn(nats_server))
    new: Child | None = None
    try:
        await old.wait_line(lambda line: "publishing" in line)
        last = await write_some(leader, 5, 5)
        await until_published(nats_server, last)
        # The old leader still runs: the replica is promoted and publishes...
        new = await Child.cli("replicate", "promote", str(replica), *conn(nats_server), "--publish")
        await new.wait_line(lambda line: "publishing" in line)
        newest = await write_some(replica, 100, 3)
        await until_published(nats_server, newest)
        # ... so the old leader's next publish is refused: it stops, saying why.
        await write_some(leader, 10, 1)
        assert await old.wait() == 2
        assert f"stream '{STREAM}': another publisher stored a message" in old.stderr
        assert "stopped publishing and refuses writes" in old.stderr
        # Exactly one is left publishing: the stream holds the new leader's commits.
        status = await stream_status(nats_server.url, STREAM)
        assert status["leader_seq"] == newest
        new.signal(signal.SIGTERM)
        assert await new.wait() == 0, new.stderr
    finally:
        await old.kill()
        if new is not None:
            await new.kill()


async def test_without_nats_py_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "nats", None)  # import nats raises ImportError
    code, _, err = await cli(capsys, "status", "--servers", "nats://x", "--stream", "s")
    assert code == 2
    assert "pip install 'aiolmdb[nats]'" in err
