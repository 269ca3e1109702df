"""lmdb-js (Node.js's LMDB binding) as a peer of ``get-concurrent``, when node is installed.

The peer runs in a node process of its own (``lmdbjs_peer.mjs``), started when the adapter
opens and fed one request per timed run over a pipe. It cannot open a copy of the base
environment: lmdb-js 3 uses LMDB's data format 2 (LMDB 1.0 in development) and crashes on the
format-1 files py-lmdb writes (py-lmdb in turn refuses its files). So at open it loads the same
data set (the same keys and values, generated from the same seed) into an environment of its
own, in one write transaction. lmdb-js is
installed with npm into a cache directory outside the repository (``$AIOLMDB_BENCH_NODE_DIR``,
default ``~/.cache/aiolmdb-bench/lmdb-js``) the first time; nothing of it is committed. When
node or npm is missing or the install fails, the row is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .adapters import Adapter
from .dataset import generate
from .workloads import BenchConfig

SCRIPT = Path(__file__).resolve().parent / "lmdbjs_peer.mjs"
#: The npm package and the major version the peer was written for.
PACKAGE = "lmdb@3"
#: Seconds an npm install may take (downloads a prebuilt binary of ~1 MB).
INSTALL_TIMEOUT = 300.0
#: Seconds for node to open the environment, or to answer one request.
REPLY_TIMEOUT = 120.0


class Unavailable(RuntimeError):
    """lmdb-js cannot run here; the message says why and what to do."""


def cache_dir() -> Path:
    """Where lmdb-js is installed: ``$AIOLMDB_BENCH_NODE_DIR``, else
    ``$XDG_CACHE_HOME/aiolmdb-bench/lmdb-js`` (``~/.cache`` by default)."""
    explicit = os.environ.get("AIOLMDB_BENCH_NODE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aiolmdb-bench" / "lmdb-js"


def installed_version(directory: Path) -> str | None:
    """The version of lmdb-js installed in ``directory``, or None."""
    try:
        meta = json.loads((directory / "node_modules" / "lmdb" / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = meta.get("version")
    return str(version) if version else None


def ensure_installed(directory: Path | None = None) -> tuple[str, Path]:
    """Make sure node and lmdb-js are available; return ``(node, script)``: the node binary
    and the peer script copied beside lmdb-js (ES modules resolve packages from the script's
    own directory). Installs lmdb-js with npm on first use; raises :class:`Unavailable`."""
    directory = directory or cache_dir()
    node = shutil.which("node")
    if node is None:
        raise Unavailable("node not found on PATH: install Node.js (>= 18) to compare with lmdb-js")
    if installed_version(directory) is None:
        npm = shutil.which("npm")
        if npm is None:
            raise Unavailable("npm not found on PATH: it installs lmdb-js for the comparison")
        directory.mkdir(parents=True, exist_ok=True)
        command = [npm, "install", "--no-audit", "--no-fund", "--silent", PACKAGE]
        try:
            done = subprocess.run(
                command,
                cwd=directory,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"`npm install {PACKAGE}` in {directory} failed: {exc}") from exc
        if done.returncode != 0 or installed_version(directory) is None:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise Unavailable(
                f"`npm install {PACKAGE}` in {directory} failed (exit {done.returncode}): "
                + " | ".join(tail)
            )
    script = directory / SCRIPT.name
    shutil.copyfile(SCRIPT, script)
    return node, script


class LmdbJsAdapter(Adapter):
    """lmdb-js in a node process: 64 async functions each doing ``await db.get(key)``."""

    name = "lmdb-js"
    description = (
        "lmdb-js (Node.js) on the same data: 64 async functions each `await db.get(k)` "
        "(timed inside node)"
    )
    workloads = frozenset({"get-concurrent"})
    uses_data = False  # it loads the data set itself: see the module's docstring

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.version: str | None = None

    async def open(self, path: Path, cfg: BenchConfig) -> None:
        """Install lmdb-js if needed (once), start node on ``path`` (a new environment) and
        load the data set into it."""
        node, script = await asyncio.to_thread(ensure_installed)
        await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        self.version = installed_version(script.parent)
        self.proc = await asyncio.create_subprocess_exec(
            node,
            str(script),
            str(path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        reply = await self._reply()
        if not reply.get("ready"):
            raise Unavailable(f"lmdb-js peer did not start: {reply}")
        data = generate(cfg)
        load = {
            "keys": b"".join(data.keys).hex(),
            "values": b"".join(data.values).hex(),
            "key_size": cfg.key_size,
            "value_size": cfg.value_size,
        }
        reply = await self._request({"load": load})
        if reply.get("loaded") != len(data):
            raise RuntimeError(f"lmdb-js peer loaded {reply.get('loaded')} of {len(data)} items")

    async def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._reply()

    async def _reply(self) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), REPLY_TIMEOUT)
        if not line:
            err = b""
            if self.proc.stderr is not None:
                err = await asyncio.wait_for(self.proc.stderr.read(), REPLY_TIMEOUT)
            text = err.decode(errors="replace").strip().splitlines()[-3:]
            raise Unavailable(f"the lmdb-js peer exited: {' | '.join(text) or 'no output'}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"lmdb-js peer: {reply['error']}")
        return reply

    async def get_concurrent(self, keys: Sequence[bytes], concurrency: int) -> int:
        """Send the keys; node times its gets alone (``self_timed``); return its hits."""
        size = len(keys[0]) if keys else 0
        if any(len(k) != size for k in keys):
            raise ValueError("the lmdb-js peer takes keys of one size")
        request = {"keys": b"".join(keys).hex(), "key_size": size, "concurrency": concurrency}
        reply = await self._request(request)
        self.self_timed = float(reply["seconds"])
        return int(reply["hits"])

    async def close(self) -> None:
        """Ask node to close the environment and exit (killed if it does not)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None and proc.returncode is None:
                proc.stdin.write(b'{"quit": true}\n')
                await proc.stdin.drain()
                proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 30.0)
        except (OSError, TimeoutError, asyncio.TimeoutError):
            proc.kill()
            await proc.wait()
