"""The notes service's replica mode (examples/notes_service.py) against a real nats-server:
a leader and a replica served on 127.0.0.1 and driven with a real aiohttp client; and
``make demo-replication``'s script run as it is."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from nats_server import NatsServer
from repl_util import ROOT, child_env

EXAMPLES = ROOT / "examples"
# examples/ is a directory of scripts, not a package (mypy checks them as top-level modules).
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))
import notes_service  # noqa: E402

TIMEOUT = 60.0
pytestmark = pytest.mark.timeout(180)


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on an ephemeral loopback port; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def body(response: aiohttp.ClientResponse) -> Any:
    return await response.json() if response.content_type == "application/json" else None


async def test_replica_serves_reads_and_redirects_writes(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    replication = notes_service.Replication(nats_server.url, "notes")
    leader_app = notes_service.create_app(
        tmp_path / "leader", map_size=1 << 20, replication=replication
    )
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with served(leader_app) as leader_url, aiohttp.ClientSession(timeout=timeout) as http:
        # A write on the leader says which change it reached...
        async with http.put(f"{leader_url}/notes/n1", json={"text": "hello"}) as resp:
            assert resp.status == 201
            seq = int(resp.headers["X-Change-Seq"])
        async with http.put(f"{leader_url}/notes/n1/tags", json={"tags": ["a", "b"]}) as resp:
            assert resp.status == 200
            assert int(resp.headers["X-Change-Seq"]) > seq
            seq = int(resp.headers["X-Change-Seq"])
        replica_app = notes_service.create_app(
            tmp_path / "replica",
            map_size=1 << 20,
            replication=notes_service.Replication(nats_server.url, "notes", leader_url),
        )
        async with served(replica_app) as replica_url:
            # ... and a replica read that asks for it sees the write.
            async with http.get(f"{replica_url}/notes/n1", headers={"X-Min-Seq": str(seq)}) as resp:
                assert resp.status == 200, await resp.text()
                assert await body(resp) == {
                    "id": "n1",
                    "data": {"text": "hello"},
                    "tags": ["a", "b"],
                }
                assert int(resp.headers["X-Applied-Seq"]) >= seq
                assert "X-Change-Seq" not in resp.headers
            async with http.get(f"{replica_url}/tags/a") as resp:
                assert (await body(resp))["notes"] == ["n1"]
            async with http.get(f"{replica_url}/stats") as resp:
                assert await body(resp) == {"notes": 1, "tags": 2, "tag_links": 2}

            # Writes on the replica: 307 to the same path on the leader...
            async with http.put(
                f"{replica_url}/notes/n2?x=1", json={"text": "via replica"}, allow_redirects=False
            ) as resp:
                assert resp.status == 307
                assert resp.headers["Location"] == f"{leader_url}/notes/n2?x=1"
            async with http.delete(f"{replica_url}/notes/n1", allow_redirects=False) as resp:
                assert resp.status == 307
            async with http.get(f"{replica_url}/changes?since=0", allow_redirects=False) as resp:
                assert resp.status == 307
                assert resp.headers["Location"] == f"{leader_url}/changes?since=0"
            # ... which a client follows, repeating the method and the body.
            async with http.put(f"{replica_url}/notes/n2", json={"text": "via replica"}) as resp:
                assert resp.status == 201
                assert str(resp.url).startswith(leader_url)
                seq = int(resp.headers["X-Change-Seq"])
            async with http.get(f"{replica_url}/notes/n2", headers={"X-Min-Seq": str(seq)}) as resp:
                assert (await body(resp))["data"] == {"text": "via replica"}

            # A sequence the leader has not reached: the replica gives up after its wait.
            notes_service_wait = notes_service.MIN_SEQ_WAIT
            notes_service.MIN_SEQ_WAIT = 0.2
            try:
                async with http.get(
                    f"{replica_url}/notes/n2", headers={"X-Min-Seq": str(seq + 1000)}
                ) as resp:
                    assert resp.status == 504
                    assert "not yet" in (await body(resp))["error"]
            finally:
                notes_service.MIN_SEQ_WAIT = notes_service_wait
            async with http.get(f"{replica_url}/notes/n2", headers={"X-Min-Seq": "x"}) as resp:
                assert resp.status == 400
    assert replica_app[notes_service.STORE].env.closed
    assert leader_app[notes_service.STORE].env.closed


def test_replication_arguments() -> None:
    args = notes_service.parse_args(["--nats", "nats://h:4222", "--leader", "http://l:8080"])
    assert notes_service.replication_of(args) == notes_service.Replication(
        "nats://h:4222", "notes", "http://l:8080"
    )
    assert notes_service.replication_of(notes_service.parse_args([])) is None
    with pytest.raises(SystemExit):
        notes_service.parse_args(["--leader", "http://l:8080"])


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="the demo stops its processes with SIGTERM")
def test_demo_replication_runs(tmp_path: Path) -> None:
    """The script of ``make demo-replication``: nats-server, a leader and a replica service,
    a write on the leader read back on the replica, then everything shut down."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "replication_demo.py"), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "read on the replica" in proc.stdout
    assert '"hello from the leader"' in proc.stdout
    assert "307" in proc.stdout
