"""Shared fixtures and helpers for the aiolmdb tests.

``env`` is parametrized over the three read modes (ids ``threaded``, ``inline`` and ``auto``), so
every test using it (or ``db``, ``open_env``) runs against each, unless marked ``threaded_only``
(``env`` waits for an ``auto`` environment's first residency check; ``open_env`` does not). Nothing
here waits on time: blocking the writer thread is done with ``threading.Event`` objects, and
every wait is bounded so a bug fails the test instead of hanging it.

Hypothesis profiles (docs/contributing.md): ``dev`` (the default) prints the blob that replays a
failure with ``@reproduce_failure``; ``ci`` (chosen when the environment variable ``CI`` is
set, as CI services and ``.ci/run`` do) also runs the same examples on every run, keeps no
example database and sets no deadline. ``pytest --hypothesis-profile=NAME`` overrides.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from nats_server import NatsCluster, NatsServer, NatsUnavailable, find_binary

import aiolmdb

# tools/mutate.py runs the suite against a mutated copy of the package: make sure that copy is
# what the tests import, or every mutation would look "not caught".
_MUTANT = os.environ.get("AIOLMDB_MUTANT_DIR")
if _MUTANT and not str(Path(aiolmdb.__file__).resolve()).startswith(str(Path(_MUTANT).resolve())):
    raise RuntimeError(f"the tests import {aiolmdb.__file__}, not the copy in {_MUTANT}")

settings.register_profile("dev", settings.get_profile("default"), print_blob=True)
settings.register_profile(
    "ci",
    settings.get_profile("default"),
    print_blob=True,
    derandomize=True,
    database=None,
    # A deadline is a wall-clock bound: shared CI machines are too noisy for it.
    deadline=None,
)
settings.load_profile("ci" if os.environ.get("CI", "").lower() not in ("", "0", "false") else "dev")

T = TypeVar("T")

MAP_SIZE = 64 * 1024 * 1024
# Upper bound for anything a test waits for; reached only when a bug makes something hang.
TIMEOUT = 30.0


async def collect(iterator: AsyncIterator[T]) -> list[T]:
    """Every item of an async iterator, in a list."""
    return [item async for item in iterator]


# One call of every operation of a database (bytes keys and values), for tests that check
# each one fails the same way (a dropped database, a closed environment).
DB_OPERATIONS: list[Callable[[aiolmdb.AsyncDatabase[bytes, bytes]], Any]] = [
    lambda d: d.get(b"k"),
    lambda d: d.get_multi([b"k"]),
    lambda d: d.put(b"k", b"v"),
    lambda d: d.put(b"k", b"v", if_value=b"old"),
    lambda d: d.delete(b"k", raise_on_conflict=True),
    lambda d: d.delete(b"k", if_value=b"v"),
    lambda d: d.put_multi([(b"k", b"v")]),
    lambda d: d.delete(b"k"),
    lambda d: d.delete_multi([b"k"]),
    lambda d: d.pop(b"k"),
    lambda d: d.replace(b"k", b"v"),
    lambda d: d.update(b"k", lambda old: b"v"),
    lambda d: d.drop(),
    lambda d: d.drop(delete=False),
    lambda d: d.count(),
    lambda d: d.count(b"a", b"z"),
    lambda d: d.stat(),
    lambda d: d.run(lambda txn: txn.get(b"k")),
    lambda d: d.run(lambda txn: txn.put(b"k", b"v"), write=True),
    lambda d: d.get_all(b"k"),
    lambda d: d.count_values(b"k"),
    lambda d: d.first(),
    lambda d: d.last(),
    lambda d: collect(d.items()),
    lambda d: collect(d.keys(prefix=b"k")),
    lambda d: collect(d.values(reverse=True)),
    lambda d: collect(d.items().batches(2)),
    lambda d: collect(d.get_chunks(b"k")),
    lambda d: d.put_chunks(b"k", io.BytesIO(b"v")),
]

OpenEnv = Callable[..., aiolmdb.Environment]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Directory of the test's LMDB environment (created by LMDB on open)."""
    return tmp_path / "env"


@pytest.fixture(params=[False, True, None], ids=["threaded", "inline", "auto"])
def inline_reads(request: pytest.FixtureRequest) -> bool | None:
    """The read modes, as the ``inline_reads=`` of ``aiolmdb.open``: reader threads (False),
    reads on the loop thread (True), and ``reads="auto"`` (None: the option not given)."""
    result: bool | None = request.param
    return result


# For a test that runs in one read mode only: it sets the ``inline_reads`` fixture (which
# ``env``, ``db`` and ``open_env`` take the mode from) instead of running it in both.
threaded_only = pytest.mark.parametrize("inline_reads", [False], ids=["threaded"])


@pytest.fixture
async def env(path: Path, inline_reads: bool | None) -> AsyncIterator[aiolmdb.Environment]:
    """An open environment on ``path`` in each read mode, closed after the test (in ``auto``
    mode, once its first residency check has chosen where it reads: inline on Linux and
    macOS, whose page cache holds what was just written; threaded where residency cannot be
    measured)."""
    environment = aiolmdb.open(path, map_size=MAP_SIZE, inline_reads=inline_reads)
    try:
        if inline_reads is None:
            await wait_first_check(environment)
        yield environment
    finally:
        await asyncio.wait_for(environment.close(), TIMEOUT)


@pytest.fixture
def db(env: aiolmdb.Environment) -> aiolmdb.AsyncDatabase[bytes, bytes]:
    """The default database of ``env`` (bytes keys and values)."""
    return env.get_default_database()


@pytest.fixture
async def open_env(
    tmp_path: Path, inline_reads: bool | None
) -> AsyncIterator[Callable[..., aiolmdb.Environment]]:
    """Factory: ``open_env(**kwargs)`` opens an environment in a fresh directory with the
    test's read mode (overridable) and closes it after the test."""
    opened: list[aiolmdb.Environment] = []

    def factory(**kwargs: Any) -> aiolmdb.Environment:
        kwargs.setdefault("inline_reads", inline_reads)
        kwargs.setdefault("map_size", MAP_SIZE)
        environment = aiolmdb.open(tmp_path / f"env{len(opened)}", **kwargs)
        opened.append(environment)
        return environment

    try:
        yield factory
    finally:
        for environment in opened:
            await asyncio.wait_for(environment.close(), TIMEOUT)


async def wait_read_mode(env: aiolmdb.Environment, mode: str, timeout: float = TIMEOUT) -> None:
    """Wait until ``env.metrics().read_mode`` is ``mode`` (``reads="auto"`` switches when a
    residency check's answer reaches the loop: a state with no event to wait on, polled)."""
    await env.stat()  # the first operation binds the loop, which starts the first check
    for _ in range(int(timeout * 1000)):
        if env.metrics().read_mode == mode:
            return
        await asyncio.sleep(0.001)
    assert env.metrics().read_mode == mode, env.metrics()


async def wait_first_check(env: aiolmdb.Environment, timeout: float = TIMEOUT) -> None:
    """Wait until a ``reads="auto"`` environment's first residency check has been applied
    (polled, as in :func:`wait_read_mode`)."""
    await env.stat()  # the first operation binds the loop, which starts the first check
    for _ in range(int(timeout * 1000)):
        if env.metrics().residency_checks:
            return
        await asyncio.sleep(0.001)
    assert env.metrics().residency_checks, env.metrics()


def reads_inline(env: aiolmdb.Environment) -> bool:
    """Whether ``env`` reads on the loop thread now (``reads="inline"``, or ``"auto"`` while
    its data is resident)."""
    return env.metrics().read_mode == "inline"


def aiolmdb_threads() -> set[threading.Thread]:
    """The live threads started by aiolmdb (writer and default reader pool)."""
    return {t for t in threading.enumerate() if t.name.startswith("aiolmdb")}


def join_threads(threads: set[threading.Thread], timeout: float = TIMEOUT) -> None:
    """Join every thread (bounded); fail if one is still alive."""
    for thread in threads:
        thread.join(timeout)
    alive = sorted(t.name for t in threads if t.is_alive())
    assert not alive, f"threads still running: {alive}"


async def let_tasks_start() -> None:
    """Give every task created so far the chance to run its first step.

    asyncio runs ready callbacks in FIFO order and a new task's first step is such a callback,
    so once a callback scheduled now has run, every task created before it has run up to its
    first real suspension (for an aiolmdb operation: its submission to the engine). This is an
    ordering guarantee of the event loop, not a timing assumption.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    loop.call_soon(fut.set_result, None)
    await fut


class WriterBlocker:
    """Holds the writer thread inside a write ``run`` until :meth:`release`.

    While it is held, every write submitted queues up behind it, so the writes submitted
    meanwhile are taken as one batch (up to ``max_batch``) when it is released.
    """

    def __init__(self, env: aiolmdb.Environment) -> None:
        self._env = env
        self._started = threading.Event()
        self._release = threading.Event()
        self.txn_id: int | None = None
        self._task: asyncio.Task[int] | None = None

    def _hold(self, txn: aiolmdb.Transaction[bytes, bytes]) -> int:
        self.txn_id = txn.id()
        self._started.set()
        if not self._release.wait(TIMEOUT):
            raise TimeoutError("WriterBlocker was never released")
        return 0

    async def start(self) -> None:
        """Submit the blocking write and wait until the writer thread runs it."""
        self._task = asyncio.ensure_future(self._env.run(self._hold, write=True))
        started = await asyncio.to_thread(self._started.wait, TIMEOUT)
        assert started, "the writer thread never started the blocking operation"

    def release(self) -> None:
        """Let the writer go on (thread-safe; usable from call_soon)."""
        self._release.set()

    def release_after_pending_tasks(self) -> None:
        """Release once every task created so far has submitted its operation (see
        :func:`let_tasks_start`)."""
        asyncio.get_running_loop().call_soon(self._release.set)

    async def finish(self) -> None:
        """Release (if not yet) and wait for the blocking operation to complete."""
        self._release.set()
        assert self._task is not None
        assert await asyncio.wait_for(self._task, TIMEOUT) == 0

    async def __aenter__(self) -> WriterBlocker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.finish()


async def gather_bounded(*aws: Awaitable[T]) -> list[T | BaseException]:
    """``gather(..., return_exceptions=True)`` bounded by TIMEOUT."""
    return await asyncio.wait_for(asyncio.gather(*aws, return_exceptions=True), TIMEOUT)


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    """Poll a condition set by another thread, bounded by ``timeout``; True once it holds.

    Only for states that offer no event to wait on (e.g. "the writer is inside a resize").
    Blocking: call it through ``asyncio.to_thread`` from a coroutine.
    """
    pause = threading.Event()
    for _ in range(int(timeout * 1000)):
        if predicate():
            return True
        pause.wait(0.001)
    return predicate()


# --------------------------------------------------------------------------------------------
# real NATS servers for the replication tests (tests/nats_server.py)
# --------------------------------------------------------------------------------------------

NatsFactory = Callable[..., NatsServer]


@pytest.fixture
def nats_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsFactory]:
    """``make(**options)``: starts one more ``nats-server -js`` (options of
    :class:`NatsServer`: ``max_payload``, ``user``/``password``, ``extra_config``) and returns
    it ready; every server it started is stopped at the end of the test. Skips (with the
    reason) only when no nats-server binary runs here."""
    try:
        find_binary()
    except NatsUnavailable as exc:
        pytest.skip(str(exc))
    started: list[NatsServer] = []

    def make(**options: Any) -> NatsServer:
        server = NatsServer(tmp_path_factory.mktemp("nats"), name=f"n{len(started)}", **options)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def nats_server(nats_server_factory: NatsFactory) -> NatsServer:
    """One ``nats-server -js`` on a free loopback port with a temporary store, ready."""
    return nats_server_factory()


@pytest.fixture
def nats_auth_server(nats_server_factory: NatsFactory) -> NatsServer:
    """A ``nats-server -js`` that requires user ``aiolmdb`` with password ``s3cret``
    (``.user``/``.password``; ``.connect_options()`` has both)."""
    return nats_server_factory(user="aiolmdb", password="s3cret")


@pytest.fixture
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """Three ``nats-server -js`` nodes on loopback with routes, one JetStream cluster (streams
    of up to 3 replicas), ready once they agree on a meta leader. ``.urls``, ``.kill(i)``,
    ``.start(i)``."""
    try:
        find_binary()
    except NatsUnavailable as exc:
        pytest.skip(str(exc))
    cluster = NatsCluster(tmp_path_factory.mktemp("nats-cluster"))
    try:
        yield cluster.start_all()
    finally:
        cluster.stop_all()
