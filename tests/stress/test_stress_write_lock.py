"""Reliability: another PROCESS holds LMDB's write lock while hooks come and go.

The writer thread decides whether a write transaction records its changes once, when LMDB
grants it the write lock, and the transaction begins its own children. Before, the kind of the
children was picked before waiting for the lock: an ``on_commit`` callback registered during
that wait made the top transaction a recording one and its children plain py-lmdb ones, and
the whole batch failed with ``TypeError('invalid type')``.

* ``hold``: the child holds the lock; non-atomic writes (``replace``) are taken by the writer,
  which waits; a hook is registered; the child lets go: every write lands, and the hook sees
  exactly those changes (it was registered before the transaction began).
* ``loop``: the child takes ~1 ms write transactions in a loop while 16 tasks replace keys and
  the loop registers and unregisters a hook as fast as it can: no write fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import pytest

import aiolmdb

from ._stress_util import TIMEOUT, Figures, MiB, open_env, spawn_child

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="the child polls its stdin with select (POSIX pipes)"
)


async def wait_until_taken(env: aiolmdb.Environment, writes: int) -> None:
    """Poll (bounded) until the writer thread has taken ``writes`` writes into its batches
    (``metrics().writes`` counts them as a batch starts, before its transaction begins)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while env.metrics().writes < writes or env.metrics().write_queue:
        assert loop.time() < deadline, "the writer never took the writes"
        await asyncio.sleep(0.001)


@pytest.mark.timeout(120)
async def test_hook_registered_while_the_writer_waits_for_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "env"
    env = open_env(path, map_size=4 * MiB)
    db = await env.open_db("d")
    await db.put(b"seed", b"0")  # opened, and the writer idle
    child = await spawn_child(
        "_child_write_lock",
        path,
        "hold",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), TIMEOUT)
        assert line == b"holding\n"
        keys = [b"k%02d" % i for i in range(16)]
        before = env.metrics().writes
        tasks = [asyncio.ensure_future(db.replace(key, b"v" + key)) for key in keys]
        # The writer takes them in one batch and waits in begin for the child's lock.
        await wait_until_taken(env, before + len(keys))
        assert not any(task.done() for task in tasks)
        seen: list[aiolmdb.Change] = []
        remove = env.on_commit(seen.extend)
        child.stdin.write(b"release\n")
        await child.stdin.drain()
        results = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
        assert results == [None] * 16  # every write landed (no old values)
        assert await asyncio.wait_for(child.stdout.readline(), TIMEOUT) == b"released\n"
        # Registered before the transaction began (it began once the lock was granted): the
        # hook saw exactly the batch's changes, delivered before the writes' results.
        assert sorted((c.db, c.key, c.kind, c.value) for c in seen) == [
            ("d", key, "put", b"v" + key) for key in keys
        ]
        remove()
        assert {key: await db.get(key) for key in keys} == {key: b"v" + key for key in keys}
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
        await env.close()


@pytest.mark.timeout(120)
async def test_hooks_toggled_while_another_process_takes_the_write_lock(
    tmp_path: Path, figures: Figures
) -> None:
    path = tmp_path / "env"
    env = open_env(path, map_size=16 * MiB)
    db = await env.open_db("d")
    await db.put(b"seed", b"0")
    child = await spawn_child(
        "_child_write_lock",
        path,
        "loop",
        2.0,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    ours = {b"t%02d" % task for task in range(16)}
    stray: list[aiolmdb.Change] = []
    failures: list[BaseException] = []
    toggles = writes = 0
    try:
        assert await asyncio.wait_for(child.stdout.readline(), TIMEOUT) == b"looping\n"
        done = asyncio.Event()

        async def writer(key: bytes) -> None:
            nonlocal writes
            n = 0
            while not done.is_set():
                try:
                    await db.replace(key, b"%d" % n)
                except Exception as exc:
                    failures.append(exc)
                n += 1
                writes += 1

        def hook(changes: object) -> None:
            assert isinstance(changes, tuple)
            stray.extend(c for c in changes if c.db != "d" or c.key not in ours)

        async def toggler() -> None:
            nonlocal toggles
            while not done.is_set():
                remove = env.on_commit(hook)
                await asyncio.sleep(0)
                remove()
                await asyncio.sleep(0)
                toggles += 1

        tasks = [asyncio.ensure_future(writer(key)) for key in sorted(ours)]
        tasks.append(asyncio.ensure_future(toggler()))
        # The child's loop ends after its 2 seconds and prints how many it committed.
        line = await asyncio.wait_for(child.stdout.readline(), TIMEOUT)
        done.set()
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
        child_commits = int(line)
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
        await env.close()
    assert failures == []
    assert stray == []
    assert child_commits > 0
    assert toggles > 0
    assert writes > 0
    figures.set(
        "write lock race: hook toggles, writes, other process's commits",
        (toggles, writes, child_commits),
    )
