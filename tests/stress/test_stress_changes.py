"""Reliability: a follower of the change log in another process (issue 15).

Four writer processes (``_child_feed_writer.py``) apply their own sequences of puts and
deletes concurrently, each in four tasks; a follower process (``_child_feed_follower.py``)
appends every change it receives to a file, one flushed line each. Mid-run, one writer is
killed with SIGKILL, and so is the follower, which is then restarted from the last seq in its
file. The test checks that the file holds every change of the log exactly once, in commit
order:

* its lines are the log itself, read at the end: seqs 1, 2, 3, ... with no gap and no repeat;
* each writer task's changes are exactly the first ``m`` of its operations, in issue order,
  where ``m`` covers every acknowledged one (the killed writer may have committed one more per
  task, in flight when it was killed, and no other);
* the store's final state is what those operations leave.

Why the restart is exactly-once: the follower writes and flushes one line per change, in
order, so the file (cut after its last complete line) is a prefix of the log; resuming with
``since=`` its last seq yields exactly the changes after it. A change received but not yet
written when the follower was killed is received again: that is the at-least-once edge of the
feed, and a consumer whose stored position is its output (as here) turns it into exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path

import pytest

from ._child_feed_writer import TASKS, Op, operations
from ._stress_util import TIMEOUT, Figures, open_env, spawn_child

WRITERS = 4
OPS = 150  # per task of a writer that runs to the end
VICTIM_ACKS = 150  # the killed writer's acknowledged writes before the kill (at least)
FOLLOWER_KILL_AT = 300  # lines the follower has written when it is killed

Line = tuple[int, str, str, str, str]


def parse(text: str) -> list[Line]:
    """The follower's lines: (seq, db, key, kind, value)."""
    lines = []
    for row in text.splitlines():
        seq, db, key, kind, value = row.split(" ")
        lines.append((int(seq), db, key, kind, value))
    return lines


async def _read_acks(stdout: asyncio.StreamReader, acked: dict[int, int], stop: int) -> int:
    """Count a writer's acknowledgements (``<task> <n>``) into ``acked`` (task -> highest n)
    until ``stop`` of them (0: until EOF); returns the count."""
    count = 0
    while stop == 0 or count < stop:
        line = (await stdout.readline()).decode()
        if not line:
            break
        if line in ("ready\n", "done\n"):
            continue
        task, n = map(int, line.split())
        assert n == acked.get(task, -1) + 1, "a task's acknowledgements arrive in issue order"
        acked[task] = n
        count += 1
    return count


@pytest.mark.timeout(120)
async def test_follower_in_another_process_receives_every_change_once(
    tmp_path: Path, figures: Figures
) -> None:
    path = tmp_path / "env"
    out = tmp_path / "feed.txt"
    out.touch()
    env = open_env(path, changelog=True)
    await env.changes(since=0, follow=False).start()  # the log exists before the children

    follower = await spawn_child(
        "_child_feed_follower", path, out, 0, FOLLOWER_KILL_AT, stdout=asyncio.subprocess.PIPE
    )
    writers = [
        await spawn_child(
            "_child_feed_writer", path, w, -1 if w == 0 else OPS, stdout=asyncio.subprocess.PIPE
        )
        for w in range(WRITERS)
    ]
    procs = [follower, *writers]
    try:
        acked: list[dict[int, int]] = [{} for _ in range(WRITERS)]
        finishing = [
            asyncio.ensure_future(_read_acks(p.stdout, acked[i], 0))  # type: ignore[arg-type]
            for i, p in enumerate(writers)
            if i != 0
        ]
        victim = writers[0]
        assert victim.stdout is not None
        assert follower.stdout is not None
        # Kill one writer once it has acknowledged VICTIM_ACKS writes (others run meanwhile).
        await asyncio.wait_for(_read_acks(victim.stdout, acked[0], VICTIM_ACKS), TIMEOUT)
        victim.send_signal(signal.SIGKILL)
        await asyncio.wait_for(_read_acks(victim.stdout, acked[0], 0), TIMEOUT)  # the rest
        assert await asyncio.wait_for(victim.wait(), TIMEOUT) == -signal.SIGKILL

        # Kill the follower once it has written FOLLOWER_KILL_AT lines, and resume it from
        # the last complete line of its file.
        line = await asyncio.wait_for(follower.stdout.readline(), TIMEOUT)
        assert line == b"reached\n"
        follower.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(follower.wait(), TIMEOUT) == -signal.SIGKILL
        data = out.read_bytes()
        data = data[: data.rfind(b"\n") + 1]  # a line cut by the kill is not received
        out.write_bytes(data)
        before_kill = parse(data.decode())
        assert len(before_kill) >= FOLLOWER_KILL_AT
        resume_from = before_kill[-1][0]
        follower = await spawn_child(
            "_child_feed_follower", path, out, resume_from, 0, stdout=asyncio.subprocess.PIPE
        )
        procs.append(follower)

        for reader in finishing:
            await asyncio.wait_for(reader, TIMEOUT)
        for proc in writers[1:]:
            assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
        # Every writer has stopped: the end marker is the log's last change.
        assert await env.open_db("control").put(b"end", b"1")
        stdout, _ = await asyncio.wait_for(follower.communicate(), TIMEOUT)
        assert follower.returncode == 0
        assert stdout.decode().split()[0] == "done"
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    received = parse(out.read_text())
    log = [c async for c in env.changes(since=0, follow=False)]
    # Exactly once, in commit order: the file is the log, seqs 1..n without gap or repeat.
    assert [r[0] for r in received] == list(range(1, len(log) + 1))
    assert received == [
        (
            c.seq,
            str(c.db),
            c.key.decode() if c.key is not None else "-",
            c.kind,
            "-" if c.value is None else c.value.decode(),
        )
        for c in log
    ]
    assert received[-1][1:] == ("control", "end", "put", "1")

    in_flight = 0
    for w in range(WRITERS):
        db = env.open_db(f"w{w}")
        mine = [r for r in received if r[1] == f"w{w}"]
        state: dict[bytes, bytes] = {}
        for task in range(TASKS):
            got: list[Op] = [
                (r[2].encode(), r[4].encode() if r[3] == "put" else None)
                for r in mine
                if r[2].startswith(f"t{task}-")
            ]
            done = acked[w].get(task, -1) + 1  # acknowledged operations of this task
            if w == 0:
                # Killed: every acknowledged write, and at most the one it was awaiting.
                assert done <= len(got) <= done + 1, (task, done, len(got))
                in_flight += len(got) - done
            else:
                assert done == len(got) == OPS
            assert got == list(itertools.islice(operations(w, task), len(got)))
            for key, value in got:
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
        assert {k: v async for k, v in db.items()} == state
    await asyncio.wait_for(env.close(), TIMEOUT)
    figures.set(
        "change feed across processes: changes, follower lines before its kill, "
        "killed writer's acknowledged + committed in flight",
        f"{len(received)}, {len(before_kill)}, {sum(n + 1 for n in acked[0].values())} + "
        f"{in_flight}",
    )
