"""Shared helpers for the reliability (stress) tests in this folder.

This folder is the package ``stress`` (``tests/`` itself is not a package, so pytest puts
``tests/`` on ``sys.path``); its ``conftest.py`` holds the fixtures and hooks, this module the
plain helpers. Child scripts run as ``python -m stress._child_*`` from ``tests/`` (see
:func:`child_command`) and import this module the same way the tests do.

Every wait is bounded by :data:`TIMEOUT` (reached only when a bug makes something hang), and
nothing synchronises with sleeps: the only timers are the random kill moments of the durability
test and bounded polls for a condition.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiolmdb

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
# Upper bound for anything a test waits for; reached only when a bug makes something hang.
TIMEOUT = 60.0


class Figures:
    """Named figures recorded by the tests; printed in one block when the session ends (by
    the ``figures`` fixture of ``conftest.py``)."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def add(self, name: str, amount: int) -> None:
        """Add ``amount`` to the counter ``name``."""
        current = self.values.get(name, 0)
        assert isinstance(current, int)
        self.values[name] = current + amount

    def maximum(self, name: str, value: float) -> None:
        """Keep the largest value recorded under ``name``."""
        current = self.values.get(name)
        if not isinstance(current, float) or value > current:
            self.values[name] = value

    def set(self, name: str, value: object) -> None:
        """Record ``value`` under ``name`` (replacing what was there)."""
        self.values[name] = value

    def report(self) -> str:
        """The figures as text, one ``name: value`` line each, sorted by name."""
        return "\n".join(f"{name}: {value}" for name, value in sorted(self.values.items()))


# --------------------------------------------------------------------------------------------
# threads and reader slots
# --------------------------------------------------------------------------------------------


def aiolmdb_threads() -> list[threading.Thread]:
    """Live threads started by aiolmdb (``aiolmdb-writer:*``, ``aiolmdb-reader*``)."""
    return [t for t in threading.enumerate() if t.name.startswith("aiolmdb")]


def assert_no_aiolmdb_threads() -> None:
    """Every aiolmdb thread has ended (joined with a bound: close() may return while a thread
    is still unwinding its last statement)."""
    for thread in aiolmdb_threads():
        thread.join(TIMEOUT)
    alive = sorted(t.name for t in aiolmdb_threads())
    assert not alive, f"aiolmdb threads still running after close: {alive}"


_READER_ROW = re.compile(r"^\s*(\d+)\s+([0-9a-fA-F]+)\s+(\S+)\s*$")


def reader_rows(table: str) -> list[tuple[int, str, str]]:
    """Parse LMDB's reader table (``env.readers()``) into ``(pid, thread, txnid)`` rows;
    ``txnid`` is ``"-"`` for a free-but-reserved slot and a number for an open transaction."""
    rows = []
    for line in table.splitlines():
        match = _READER_ROW.match(line)
        if match:
            rows.append((int(match[1]), match[2], match[3]))
    return rows


def open_read_txns(table: str) -> list[tuple[int, str, str]]:
    """Rows of the reader table that hold an open read transaction (numeric txnid)."""
    return [row for row in reader_rows(table) if row[2].isdigit()]


# --------------------------------------------------------------------------------------------
# child processes
# --------------------------------------------------------------------------------------------


# Children run as modules of this package, from tests/: ``python -m stress._child_x``.
CHILD_CWD = HERE.parent


def child_command(module: str, *args: object, python_flags: Sequence[str] = ()) -> list[str]:
    """Command line running the child module ``stress.<module>`` with this interpreter."""
    return [sys.executable, *python_flags, "-m", f"{HERE.name}.{module}", *map(str, args)]


def child_env() -> dict[str, str]:
    """Environment for child processes: ours, without inherited warning filters, with
    ``tests/`` on the path (also under ``PYTHONSAFEPATH``, which drops the working directory)."""
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHILD_CWD), env.get("PYTHONPATH")]))
    return env


def run_child(
    module: str, *args: object, python_flags: Sequence[str] = (), timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run a child module to completion (bounded); returns its output as text."""
    return subprocess.run(
        child_command(module, *args, python_flags=python_flags),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        cwd=CHILD_CWD,
        check=False,
    )


async def spawn_child(module: str, *args: object, **kwargs: Any) -> asyncio.subprocess.Process:
    """Start a child module without waiting for it (``kwargs`` go to
    ``asyncio.create_subprocess_exec``: pipes)."""
    return await asyncio.create_subprocess_exec(
        *child_command(module, *args), env=child_env(), cwd=CHILD_CWD, **kwargs
    )


async def run_child_async(
    module: str, *args: object, timeout: float = TIMEOUT
) -> tuple[int, str, str]:
    """Run a child module without blocking the loop; (returncode, stdout, stderr)."""
    proc = await spawn_child(
        module, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def value_for(key: bytes, size: int = 32) -> bytes:
    """A value derived from its key (so any stored pair can be checked on its own)."""
    unit = key + b"|"
    return (unit * (size // len(unit) + 1))[:size]


def lmdb_readers_of(path: str | os.PathLike[str]) -> str:
    """The reader table as seen by a plain py-lmdb open of ``path`` (opened and closed here;
    the calling process must not have the environment open)."""
    import lmdb

    env = lmdb.open(os.fspath(path), max_dbs=128, lock=True)
    try:
        return str(env.readers())
    finally:
        env.close()


# Every environment open_env opened, in order; the close_leftovers fixture of conftest.py
# closes the ones a failing test left open.
OPENED: list[aiolmdb.Environment] = []


def open_env(path: str | os.PathLike[str], **kwargs: Any) -> aiolmdb.Environment:
    """``aiolmdb.open`` with the stress tests' defaults (``max_dbs`` is aiolmdb's); a test
    that fails before closing it has it closed by :func:`close_opened_since`."""
    kwargs.setdefault("map_size", 64 * MiB)
    env = aiolmdb.open(path, **kwargs)
    OPENED.append(env)
    return env


async def close_opened_since(start: int) -> None:
    """Close every environment that :func:`open_env` opened after the first ``start`` and
    that is still open, and forget them all."""
    leftovers = OPENED[start:]
    del OPENED[start:]
    for env in leftovers:
        if not env.closed:
            await asyncio.wait_for(env.close(), TIMEOUT)
