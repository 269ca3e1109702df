"""Shared helpers for the reliability (stress) tests in this folder.

``tests/`` has no ``__init__.py``, so neither has this folder: pytest puts this directory on
``sys.path`` and the test modules import this one as ``_stress_util``. Child scripts run as
subprocesses (``python tests/stress/_child_*.py``) import it the same way.

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
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import aiolmdb

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
# Upper bound for anything a test waits for; reached only when a bug makes something hang.
TIMEOUT = 60.0


# --------------------------------------------------------------------------------------------
# figures: numbers the stress tests report (printed once at the end of the session)
# --------------------------------------------------------------------------------------------


class Figures:
    """Named figures recorded by the tests; printed in one block when the session ends."""

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
        self.values[name] = value

    def report(self) -> str:
        lines = ["", "aiolmdb stress figures:"]
        lines += [f"  {name}: {value}" for name, value in sorted(self.values.items())]
        return "\n".join(lines)


FIGURES = Figures()
_reported = False


@pytest.fixture(scope="session", name="figures")
def figures_fixture(request: pytest.FixtureRequest) -> Iterator[Figures]:
    """The session's :class:`Figures`; the block is printed to the terminal at the end.

    Each stress module re-exports this fixture, so pytest may instantiate it once per module;
    all of them share :data:`FIGURES` and only the first to finish prints it.
    """
    yield FIGURES
    global _reported
    if _reported or not FIGURES.values:
        return
    _reported = True
    capman: Any = request.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            print(FIGURES.report(), flush=True)
    else:  # pragma: no cover - capture disabled with -p no:capture
        print(FIGURES.report(), flush=True)


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


def child_command(script: str, *args: object, python_flags: Sequence[str] = ()) -> list[str]:
    """Command line running ``tests/stress/<script>`` with this interpreter."""
    return [sys.executable, *python_flags, str(HERE / script), *(str(a) for a in args)]


def child_env() -> dict[str, str]:
    """Environment for child processes: ours, without inherited warning filters."""
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    return env


def run_child(
    script: str, *args: object, python_flags: Sequence[str] = (), timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run a child script to completion (bounded); returns its output as text."""
    return subprocess.run(
        child_command(script, *args, python_flags=python_flags),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        check=False,
    )


async def run_child_async(
    script: str, *args: object, timeout: float = TIMEOUT
) -> tuple[int, str, str]:
    """Run a child script without blocking the loop; (returncode, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *child_command(script, *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
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


_opened: list[aiolmdb.Environment] = []


def open_env(path: str | os.PathLike[str], **kwargs: Any) -> aiolmdb.Environment:
    """``aiolmdb.open`` with the stress tests' defaults (``max_dbs`` is aiolmdb's); a test
    that fails before closing it has it closed by :func:`close_leftovers_fixture`."""
    kwargs.setdefault("map_size", 64 * MiB)
    env = aiolmdb.open(path, **kwargs)
    _opened.append(env)
    return env


@pytest.fixture(autouse=True, name="close_leftovers")
async def close_leftovers_fixture() -> AsyncIterator[None]:
    """Close whatever :func:`open_env` opened during the test and the test left open (it
    failed half-way), so that no ResourceWarning lands on a later test."""
    start = len(_opened)
    yield
    leftovers = _opened[start:]
    del _opened[start:]
    for env in leftovers:
        if not env.closed:
            await asyncio.wait_for(env.close(), TIMEOUT)
