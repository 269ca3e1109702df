"""Helpers of the replication tests that run processes: raw dumps of environments (what a
replica must hold identically) and the ``aiolmdb`` command run as a child process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import lmdb

# aiolmdb's own databases: a replica's differ from its leader's (its position, its own log).
RESERVED = (b"__aiolmdb__", b"__aiolmdb_changes__")
Dump = dict[bytes | None, tuple[list[str], list[tuple[bytes, bytes]]]]
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0


def dump_lmdb(env: lmdb.Environment) -> Dump:
    """Every user database of ``env``: its LMDB flags and its raw items as stored (every
    dupsort pair)."""
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
            flags = sorted(name for name, on in handle.flags().items() if on)
            out[key] = (flags, list(txn.cursor(db=handle).iternext()))
        out[None] = ([], plain)
    return out


def dump_path(path: str | os.PathLike[str]) -> Dump:
    """:func:`dump_lmdb` of the environment at ``path``, opened read-only (never from a
    process that has it open already: LMDB forbids two handles in one process)."""
    env = lmdb.open(os.fspath(path), readonly=True, max_dbs=1024, lock=True)
    try:
        return dump_lmdb(env)
    finally:
        env.close()


def child_env() -> dict[str, str]:
    """The environment of a child process: this checkout's aiolmdb first on its path."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


class Child:
    """A child process whose output lines are collected as they come (to wait for one)."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.lines: list[str] = []  # stderr
        self.out: list[str] = []  # stdout
        self._changed = asyncio.Condition()
        assert process.stdout is not None
        assert process.stderr is not None
        self._readers = [
            asyncio.ensure_future(self._read(process.stderr, self.lines)),
            asyncio.ensure_future(self._read(process.stdout, self.out)),
        ]

    @classmethod
    async def start(cls, *args: str, name: str | None = None, cwd: Path = ROOT) -> Child:
        """Start ``python args...`` with stdout and stderr piped."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(),
            cwd=cwd,
        )
        return cls(process, name or " ".join(args[:4]))

    @classmethod
    async def cli(cls, *args: str) -> Child:
        """Start ``python -m aiolmdb args...``."""
        return await cls.start("-m", "aiolmdb", *args, name=f"aiolmdb {' '.join(args[:2])}")

    async def _read(self, stream: asyncio.StreamReader, into: list[str]) -> None:
        async for raw in stream:
            async with self._changed:
                into.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        """Everything it wrote to stderr so far."""
        return "\n".join(self.lines)

    @property
    def stdout(self) -> str:
        """Everything it wrote to stdout so far."""
        return "\n".join(self.out) + ("\n" if self.out else "")

    async def wait_line(
        self, predicate: Callable[[str], bool], timeout: float = TIMEOUT, *, stdout: bool = False
    ) -> str:
        """The first line (of stderr, or stdout) for which ``predicate`` holds;
        AssertionError if the child exits or the time runs out first."""
        lines = self.out if stdout else self.lines

        def found() -> str | None:
            return next((line for line in lines if predicate(line)), None)

        async def wait() -> str:
            async with self._changed:
                while True:
                    line = found()
                    if line is not None:
                        return line
                    if all(reader.done() for reader in self._readers):
                        raise AssertionError(
                            f"{self.name} exited first:\n{self.stdout}\n{self.stderr}"
                        )
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"{self.name}: no such line in {timeout} s:\n{self.stdout}\n{self.stderr}"
            ) from None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the child."""
        self.process.send_signal(sig)

    async def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for the child to exit and its output to be read; its exit status."""
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.wait_for(asyncio.gather(*self._readers), timeout)
        return code

    async def kill(self) -> None:
        """Kill the child if it still runs (SIGKILL) and reap it."""
        if self.process.returncode is None:
            self.process.kill()
        await self.wait()


async def run_cli(*args: str, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    """``python -m aiolmdb args...`` to its end: (status, stdout, stderr)."""
    child = await Child.cli(*args)
    try:
        code = await child.wait(timeout)
    except asyncio.TimeoutError:
        await child.kill()
        raise AssertionError(f"{child.name} still ran after {timeout} s:\n{child.stderr}") from None
    except BaseException:
        await child.kill()
        raise
    return code, child.stdout, child.stderr
