"""Reliability: durability across SIGKILL (promise 2).

A child process (``_child_writer.py``) streams concurrent writes through aiolmdb and prints each
key once its ``await`` has returned. This test kills it with SIGKILL at random moments, many
times over, and after every kill checks that each acknowledged key is stored with its value and
that the environment opens cleanly (with aiolmdb; every few rounds also scanned whole with plain
py-lmdb).
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from pathlib import Path

import lmdb
import pytest

from ._stress_util import (
    TIMEOUT,
    Figures,
    open_env,
    open_read_txns,
    reader_rows,
    spawn_child,
    value_for,
)

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="kills processes with SIGKILL (POSIX only)"
)

ROUNDS = 20
TASKS = 32


async def kill_child_at_random(
    path: Path, round_: int, rng: random.Random
) -> tuple[list[str], int, str]:
    """Run one writer child and SIGKILL it; returns (acknowledged keys, pid, how it died)."""
    proc = await spawn_child(
        "_child_writer",
        path,
        round_,
        TASKS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    lines: list[bytes] = []
    loop = asyncio.get_running_loop()
    mode = rng.choice(["early", "acks", "acks", "delay"])
    try:
        if mode == "early":
            # Anywhere from interpreter start-up through opening to the first commits.
            deadline = loop.time() + rng.uniform(0.0, 0.4)
            how = "early"
        else:
            ready = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
            assert ready == b"ready\n", (ready, await proc.stderr.read())
            if mode == "acks":
                target = rng.randint(0, 600)
                how = f"after {target} acks"
                deadline = loop.time() + TIMEOUT
            else:
                target = -1
                delay = rng.uniform(0.0, 0.5)
                how = f"after {delay * 1000:.0f} ms"
                deadline = loop.time() + delay
        while mode == "acks" and len(lines) < target:
            line = await asyncio.wait_for(proc.stdout.readline(), deadline - loop.time())
            assert line, await proc.stderr.read()  # EOF: the child died on its own
            lines.append(line)
        if mode != "acks":
            # A timer, not a synchronisation: the kill lands wherever the child has got to.
            await asyncio.sleep(max(0.0, deadline - loop.time()))
        proc.send_signal(signal.SIGKILL)
        rest = await asyncio.wait_for(proc.stdout.read(), TIMEOUT)
        stderr = await asyncio.wait_for(proc.stderr.read(), TIMEOUT)
        code = await asyncio.wait_for(proc.wait(), TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == -signal.SIGKILL, (code, stderr.decode())
    text = b"".join(lines) + rest
    # Only complete lines are acknowledgements (each was one write(2) ending in a newline).
    complete = text[: text.rfind(b"\n") + 1].decode().splitlines()
    acked = [k for k in complete if k != "ready"]
    return acked, proc.pid, how


@pytest.mark.timeout(150)
async def test_acknowledged_writes_survive_sigkill(
    tmp_path: Path, stress_seed: int, figures: Figures
) -> None:
    rng = random.Random(stress_seed)
    path = tmp_path / "env"
    all_acked: list[bytes] = []
    survived = 0
    history: list[str] = []
    for round_ in range(ROUNDS):
        acked, pid, how = await kill_child_at_random(path, round_, rng)
        history.append(f"round {round_}: killed {how}, {len(acked)} acked")
        context = f"seed={stress_seed} " + "; ".join(history)
        keys = [k.encode() for k in acked]
        all_acked += keys
        if not path.exists():  # killed before LMDB created the environment
            assert not keys, context
            continue

        # The environment opens cleanly, every acknowledged write of every round so far is
        # there, and the dead child's reader slots were cleared at open.
        # Threaded reads: no inline read transaction of this process is open when the
        # reader table is checked below.
        env = open_env(path, reads="threaded")
        try:
            db = env.get_default_database()
            for start in range(0, len(all_acked), 2048):
                chunk = all_acked[start : start + 2048]
                got = await asyncio.wait_for(db.get_multi(chunk), TIMEOUT)
                missing = [k for k in chunk if got[k] is None]
                assert not missing, (
                    f"lost {len(missing)} acked writes, e.g. {missing[:3]}; {context}"
                )
                wrong = [k for k in chunk if got[k] != value_for(k, 200)]
                assert not wrong, f"corrupt values for {wrong[:3]}; {context}"
            assert await db.count() >= len(set(all_acked))
            assert not [row for row in reader_rows(env.readers()) if row[0] == pid], context
            assert not open_read_txns(env.readers()), context
            # Still writable after the crash.
            assert await db.put(b"parent-%d" % round_, b"ok")
        finally:
            await asyncio.wait_for(env.close(), TIMEOUT)

        if round_ % 5 == 4:
            # A full scan with plain py-lmdb: every stored pair is intact, not just the acked.
            raw = lmdb.open(str(path), max_dbs=128)
            try:
                with raw.begin() as txn:
                    for k, v in txn.cursor():
                        key = bytes(k)
                        if key.startswith(b"r"):
                            assert bytes(v) == value_for(key, 200), (key, context)
            finally:
                raw.close()
        survived += 1

    assert len(all_acked) > ROUNDS, f"too few writes were acknowledged to test anything; {history}"
    figures.add("durability: SIGKILLs survived", survived)
    figures.add("durability: acknowledged writes checked", len(all_acked))
