"""Reliability: the notes service served by gunicorn with several worker processes, as in
docs/guide/processes.md ("Web servers with several workers").

gunicorn's master process binds 127.0.0.1 on a free port and forks two aiohttp workers; each
worker opens the environment in the application's startup hook (``cleanup_ctx``), never at
import, never before the fork. The test

* reads the port from the master's log (a bounded wait on the log, no sleeps);
* sends requests on fresh connections until both workers have served some, telling them
  apart by the pid that the access log (``%P``) records with each request's unique path;
* checks that a note written through one worker is read back, and counted, through the other;
* stops the master with SIGTERM: every worker closes its environment and exits, the master
  exits with status 0 within a bounded time, and no reader slot is left behind.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest

import aiolmdb

from ._stress_util import TIMEOUT, child_env, lmdb_readers_of, open_read_txns, reader_rows

pytest.importorskip(
    "gunicorn", reason="needs gunicorn: pip install gunicorn (in the test extra, not on Windows)"
)
gunicorn_config = pytest.importorskip("gunicorn.config")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORKERS = 2
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
T = TypeVar("T")
ACCESS = re.compile(r"<(\d+)> (\w+) (\S+) HTTP/")


class Log:
    """Lines of one output stream of the server, collected as they arrive."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._changed = asyncio.Condition()
        self._task = asyncio.ensure_future(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        try:
            async for raw in stream:
                async with self._changed:
                    self.lines.append(raw.decode(errors="replace").rstrip())
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self.closed = True
                self._changed.notify_all()

    async def wait_for(self, found: Callable[[list[str]], T | None]) -> T:
        """Wait (at most TIMEOUT) until ``found(lines)`` is not None; return it."""

        async def until() -> T:
            async with self._changed:
                while (result := found(self.lines)) is None:
                    if self.closed:
                        raise AssertionError(f"the server closed its output:\n{self.text()}")
                    await self._changed.wait()
                return result

        return await asyncio.wait_for(until(), TIMEOUT)

    def text(self) -> str:
        """Everything read so far."""
        return "\n".join(self.lines)

    async def finish(self) -> None:
        """Wait (bounded) for the end of the stream."""
        await asyncio.wait_for(self._task, TIMEOUT)


def gunicorn_command(data: Path) -> list[str]:
    """The command of docs/guide/processes.md, on a free port, with the pid in the access log."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        f"notes_service:create_app({str(data)!r})",
        "--worker-class",
        "aiohttp.GunicornWebWorker",
        "--workers",
        str(WORKERS),
        "--bind",
        "127.0.0.1:0",
        "--chdir",
        str(EXAMPLES),
        "--graceful-timeout",
        "20",
        "--access-logfile",
        "-",
        "--access-logformat",
        "%P %r %s",
    ]
    if any(s.name == "control_socket_disable" for s in gunicorn_config.KNOWN_SETTINGS):
        command.append("--no-control-socket")  # gunicorn >= 25 (a socket in ~/.gunicorn)
    return command


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, Log, Log]]:
    """The gunicorn master process and its two logs (stdout: access log; stderr: the rest)."""
    proc = await asyncio.create_subprocess_exec(
        *gunicorn_command(tmp_path / "data"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
        start_new_session=True,  # its own process group: the master and its workers
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    access, errors = Log(proc.stdout), Log(proc.stderr)
    try:
        yield proc, access, errors
    finally:
        if proc.returncode is None:  # the test failed before stopping it
            os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), TIMEOUT)
        await access.finish()
        await errors.finish()


def served_by(access: list[str], paths: list[str]) -> dict[str, int] | None:
    """The pid that served each of ``paths`` (each requested once), or None if one is not
    in the access log yet."""
    pids = {m[3]: int(m[1]) for m in map(ACCESS.search, access) if m}
    return {p: pids[p] for p in paths} if all(p in pids for p in paths) else None


@pytest.mark.timeout(180)
async def test_gunicorn_workers_share_one_environment(
    tmp_path: Path, server: tuple[asyncio.subprocess.Process, Log, Log]
) -> None:
    proc, access, errors = server
    listening = await errors.wait_for(
        lambda ls: next(filter(None, map(LISTENING.search, ls)), None)
    )
    port = int(listening[1])
    base = f"http://127.0.0.1:{port}"
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    # force_close: a new connection per request, so that each one goes to whichever worker
    # accepts it first.
    connector = aiohttp.TCPConnector(force_close=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    written = 0
    crossed = 0  # notes read through another worker than the one that wrote them
    workers: set[int] = set()
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as http:

        async def put(n: int) -> str:
            path = f"/notes/n{n}"
            async with http.put(path, json={"n": n}) as response:
                assert response.status == 201, await response.text()
            return path

        async def get(n: int) -> str:
            path = f"/notes/n{n}?read=1"
            async with http.get(path) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["data"] == {"n": n}  # committed, so visible
            return path

        while len(workers) < WORKERS or crossed == 0:
            assert loop.time() < deadline, f"one worker served everything:\n{access.text()}"
            batch = range(written, written + 8)
            puts = await asyncio.gather(*map(put, batch))
            gets = await asyncio.gather(*map(get, batch))
            written += len(batch)
            pids = await access.wait_for(lambda ls: served_by(ls, puts + gets))  # noqa: B023
            workers.update(pids.values())
            crossed += sum(pids[w] != pids[r] for w, r in zip(puts, gets, strict=True))

        # Every worker counts every note, whichever wrote it.
        counted: dict[int, int] = {}
        probe = 0
        while len(counted) < WORKERS:
            assert loop.time() < deadline, f"one worker served every /stats:\n{access.text()}"
            paths = [f"/stats?probe={probe + i}" for i in range(4)]
            probe += len(paths)
            answers = []
            for path in paths:
                async with http.get(path) as response:
                    answers.append((await response.json())["notes"])
            pids = await access.wait_for(lambda ls: served_by(ls, paths))  # noqa: B023
            counted.update({pids[p]: n for p, n in zip(paths, answers, strict=True)})
        assert set(counted.values()) == {written}

    # A clean stop: SIGTERM to the master; each worker closes its environment and exits.
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0, errors.text()
    await errors.finish()
    for pid in workers:
        assert f"Worker exiting (pid: {pid})" in errors.text()
    data = tmp_path / "data"
    table = await asyncio.to_thread(lmdb_readers_of, data)
    assert open_read_txns(table) == []
    assert not {pid for pid, _, _ in reader_rows(table)} & workers
    async with aiolmdb.open(data, changelog=True) as env:  # the service keeps a change log
        assert await env.open_db("notes", versioned=True).count() == written
