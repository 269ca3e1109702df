"""Reliability: reads from a cold data file (issue 22).

The environment holds 300,000 keys with 1 KB random values (a data file of about 400 MB: a
quarter of the 1.2M keys of ``python -m benchmarks --cold``, to keep this suite's disk use and
time modest). Before each run its data file is synced and evicted from the page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)`` (checked with ``mincore``; the tests skip, saying so, where
the file system ignores the advice), then 64 tasks do random gets for 3 seconds beside a task
sleeping 1 ms at a time (``benchmarks/cold.py`` runs both the benchmark and these tests).

* The default mode (``auto``) starts threaded on the cold file, and the loop's longest gap in
  it is no worse than in the threaded mode plus 2 ms. Wall-clock figures on a shared machine
  are noisy: a pair of runs (default, then threaded, each from an evicted cache) is tried up
  to three times, and the test passes on the first pair that meets the bound (every pair's
  figures are reported).
* Data larger than memory: inside a memory cgroup smaller than the data file, the file can
  never be resident, and the default mode never reads inline. Needs a writable memory cgroup
  (cgroup v1 ``memory.limit_in_bytes`` or v2 ``memory.max``: root, or a delegated
  subtree); skipped, saying why, elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

import aiolmdb
from benchmarks.cold import EVICTED_AT_MOST, ColdConfig, build, evict, resident_share, run_mode

from ._stress_util import CHILD_CWD, TIMEOUT, Figures, child_command, child_env

COLD = replace(ColdConfig(), n_keys=300_000, seconds=3.0)
#: The memory cgroup's limit: well under the data file, above what the child needs itself.
CGROUP_LIMIT = 128 * 1024 * 1024
ROOT = CHILD_CWD.parent


@pytest.fixture(scope="module")
def cold_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cold environment, built once for this module's tests."""
    path = tmp_path_factory.mktemp("cold") / "env"
    build(path, COLD, log=lambda _msg: None)
    return path


def evict_or_skip(data: Path) -> float:
    """Evict ``data``; skip the test when eviction does not work here."""
    try:
        share = evict(data)
    except OSError as exc:
        pytest.skip(f"cannot evict the data file from the page cache here: {exc}")
    if share > EVICTED_AT_MOST:
        pytest.skip(
            f"posix_fadvise(POSIX_FADV_DONTNEED) left {share:.0%} of the data file in the page "
            "cache: this file system keeps it, so no read can be cold"
        )
    return share


@pytest.mark.timing
@pytest.mark.timeout(300)
async def test_default_mode_on_a_cold_file_stalls_the_loop_no_more_than_threaded(
    cold_env: Path, figures: Figures
) -> None:
    data = cold_env / "data.mdb"
    pairs: list[tuple[float, float]] = []
    for _attempt in range(3):
        share = await asyncio.to_thread(evict_or_skip, data)
        auto = await run_mode(aiolmdb, cold_env, data, None, COLD, share)
        share = await asyncio.to_thread(evict_or_skip, data)
        threaded = await run_mode(aiolmdb, cold_env, data, "threaded", COLD, share)
        assert auto.gets > 0
        assert threaded.gets > 0
        # auto starts threaded on the cold file: at open, and once its first residency check
        # has measured the file (it is far from resident then).
        assert auto.timeline[0][1] == "threaded", auto.timeline
        measured = [t for t in auto.timeline if t[3] >= 1]
        if measured:
            assert measured[0][1] == "threaded", auto.timeline
        # The threaded mode never reads on the loop.
        assert {t[1] for t in threaded.timeline} == {"threaded"}
        pairs.append((auto.max_gap_ms, threaded.max_gap_ms))
        figures.set(
            f"cold reads: attempt {len(pairs)}: default / threaded longest gap (ms), default "
            "inline after (s)",
            f"{auto.max_gap_ms} / {threaded.max_gap_ms}, {auto.inline_after}",
        )
        if auto.max_gap_ms <= threaded.max_gap_ms + 2.0:
            break
    auto_gap, threaded_gap = pairs[-1]
    assert auto_gap <= threaded_gap + 2.0, (
        f"the default mode's longest loop gap exceeded the threaded mode's + 2 ms in every "
        f"pair of runs (default, threaded ms): {pairs}"
    )


# --------------------------------------------------------------------------- memory cgroup


def memory_cgroup() -> tuple[Path, str]:
    """This process's memory cgroup directory and its version (``v1`` / ``v2``)."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            for mount in mounts:
                _dev, where, fstype, options, *_ = mount.split()
                if fstype == "cgroup" and "memory" in options.split(","):
                    return Path(where) / rel.lstrip("/"), "v1"
        if hierarchy == "0" and not controllers:
            for mount in mounts:
                _dev, where, fstype, *_ = mount.split()
                base = Path(where) / rel.lstrip("/")
                if fstype == "cgroup2" and (base / "memory.max").exists():
                    return base, "v2"
    raise OSError("no memory cgroup controller is mounted for this process")


@contextmanager
def limited_cgroup(limit: int) -> Iterator[Path]:
    """A child memory cgroup of this process's, limited to ``limit`` bytes (page cache
    included); yields its ``cgroup.procs``. Removed on exit. Skips the test where it cannot
    be made."""
    try:
        parent, version = memory_cgroup()
        group = parent / f"aiolmdb-cold-{os.getpid()}"
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup here ({exc}): data larger than memory untested")
    try:
        try:
            knob = "memory.limit_in_bytes" if version == "v1" else "memory.max"
            (group / knob).write_text(str(limit))
        except OSError as exc:
            pytest.skip(f"cannot limit a memory cgroup here ({exc})")
        yield group / "cgroup.procs"
    finally:
        group.rmdir()  # its processes have exited: the child was waited for


@pytest.mark.timeout(300)
def test_default_mode_stays_threaded_when_the_data_cannot_be_resident(
    cold_env: Path, figures: Figures
) -> None:
    data = cold_env / "data.mdb"
    size = data.stat().st_size
    assert size > 2 * CGROUP_LIMIT
    evict_or_skip(data)
    with limited_cgroup(CGROUP_LIMIT) as procs:
        # The shell joins the cgroup, then becomes the child: every page the child reads is
        # charged to the cgroup, which reclaims its page cache past the limit.
        command = child_command("_child_cold_reads", cold_env, COLD.n_keys, COLD.seconds)
        env = child_env()
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env["PYTHONPATH"]])
        done = subprocess.run(
            ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs), *command],
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
            env=env,
            cwd=CHILD_CWD,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["gets"] > 0
    modes = {entry[1] for entry in result["timeline"]}
    residencies = [entry[2] for entry in result["timeline"] if entry[2] >= 0]
    figures.set(
        "cold reads in a 128 MiB cgroup: gets/s, most resident (library; mincore after)",
        f"{result['gets'] / result['seconds']:,.0f}, {max(residencies, default=-1.0)}; "
        f"{result['resident_after']:.0%} of {size / 2**20:,.0f} MiB",
    )
    # The limit held: the file never came close to resident ...
    assert resident_share(data) <= CGROUP_LIMIT / size + 0.05
    assert all(r < 0.9 for r in residencies), result["timeline"]
    # ... so the default mode never read on the loop.
    assert modes == {"threaded"}, result["timeline"]
    assert result["switches"] == 0
    assert result["inline_after"] is None
