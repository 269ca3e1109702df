"""Cold data (issue 22): ``python -m benchmarks --cold`` (``make bench-cold``).

An environment of about 1.6 GB (1.2M keys of 16 bytes, 1 KB values; ``--quick``: 100k keys)
is built once, closed and synced. Then, for each read mode in turn (the default ``auto``,
``threaded``, ``inline``), its data file is evicted from the page cache
(``posix_fadvise(POSIX_FADV_DONTNEED)`` after an ``fsync``, checked with ``mincore``), and
64 tasks do random awaited gets in a plain loop for a few seconds beside a task sleeping 1 ms
at a time. Reported per mode: the gets/s, the ticker's longest and 99th-percentile gap, the
gets/s in each half second as the data warms up, and, from ``env.metrics()``, when ``auto``
turned inline and the residency it measured.

Not part of the default run: it writes ~1.6 GB and takes about a minute. The environment is
rebuilt in a temporary directory for each run unless ``--cold-dir`` keeps it.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import mmap
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import lmdb

from .adapters import maybe_await, read_mode_options
from .dataset import make_key
from .ticker import Ticker

#: Read modes in the order they run: ``None`` is the default (``auto``).
MODES: tuple[str | None, ...] = (None, "threaded", "inline")
#: Above this share still resident after eviction, the file system ignored the advice.
EVICTED_AT_MOST = 0.05
#: Ticks between two looks at ``env.metrics()`` (the read mode's timeline).
METRICS_EVERY = 10


@dataclass(frozen=True)
class ColdConfig:
    """The cold workload's shape."""

    n_keys: int = 1_200_000
    key_size: int = 16
    value_size: int = 1024
    #: Seconds of random gets per mode.
    seconds: float = 5.0
    concurrency: int = 64
    #: Width of the throughput-over-time buckets, in seconds.
    bucket: float = 0.5
    seed: int = 20261207

    @property
    def map_size(self) -> int:
        """Room for the data with LMDB's page overhead (1 KB values: ~1.1 KB of pages each)."""
        per_item = self.key_size + self.value_size + 64
        return max(64 << 20, int(self.n_keys * per_item * 1.5))


def mode_label(mode: str | None) -> str:
    """How a mode is named in the results: ``default (auto)``, ``threaded``, ``inline``."""
    return "default (auto)" if mode is None else mode


# --------------------------------------------------------------------------- the page cache


class Libc:
    """``mmap``/``mincore``/``munmap`` through ctypes (the benchmark's own residency probe,
    independent of the library's)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        if name is None:
            raise OSError("libc not found")
        libc = ctypes.CDLL(name, use_errno=True)
        self.mmap = libc.mmap
        self.mmap.restype = ctypes.c_void_p
        self.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        self.munmap = libc.munmap
        self.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.mincore = libc.mincore
        self.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


_LIBC: Libc | None = None


def resident_share(path: Path) -> float:
    """The share (0..1) of ``path``'s pages in the page cache, by ``mincore(2)`` over a
    read-only mapping of it (mapping a file does not read it)."""
    global _LIBC
    if _LIBC is None:
        _LIBC = Libc()
    libc = _LIBC
    size = path.stat().st_size
    if size == 0:
        return 1.0
    page = mmap.PAGESIZE
    pages = (size + page - 1) // page
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed", str(path))
        try:
            vec = ctypes.create_string_buffer(pages)
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed", str(path))
            raw = vec.raw[:pages]
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return (pages - raw.count(0)) / pages


def evict(path: Path) -> float:
    """Sync ``path`` and advise the kernel to drop its pages; return the share still resident.

    Raises ``OSError`` where ``posix_fadvise`` does not exist (macOS, Windows).
    """
    if not hasattr(os, "posix_fadvise"):
        raise OSError("os.posix_fadvise is not available on this platform")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return resident_share(path)


# --------------------------------------------------------------------------- the environment


def build(path: Path, cfg: ColdConfig, log: Any = print) -> Path:
    """Create (or reuse, if ``path`` holds one of the same shape) the environment; return its
    data file. Values are random bytes, so no page compresses or repeats."""
    marker = path / "cold.json"
    shape = {"n_keys": cfg.n_keys, "key_size": cfg.key_size, "value_size": cfg.value_size}
    data = path / "data.mdb"
    if data.exists() and marker.exists() and json.loads(marker.read_text()) == shape:
        return data
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    log(f"cold: building {cfg.n_keys:,} keys x {cfg.value_size} B values in {path}")
    started = time.perf_counter()
    rng = random.Random(cfg.seed)
    env = lmdb.open(str(path), map_size=cfg.map_size, sync=False)
    try:
        chunk = 50_000
        for start in range(0, cfg.n_keys, chunk):
            stop = min(cfg.n_keys, start + chunk)
            items = [
                (make_key(i, cfg.key_size), rng.randbytes(cfg.value_size))
                for i in range(start, stop)
            ]
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(items, append=True)
        env.sync(True)
    finally:
        env.close()
    marker.write_text(json.dumps(shape))
    size = data.stat().st_size
    log(f"cold: built {size / 2**30:.2f} GiB in {time.perf_counter() - started:.1f} s")
    return data


# --------------------------------------------------------------------------- one mode


@dataclass
class ModeResult:
    """One mode's run from a freshly evicted cache."""

    mode: str
    resident_before: float
    resident_after: float = 0.0
    gets: int = 0
    seconds: float = 0.0
    max_gap_ms: float = 0.0
    p99_gap_ms: float = 0.0
    ticks: int = 0
    #: Gets/s in each ``bucket``-second slice of the run.
    rates: list[float] = field(default_factory=list)
    #: ``[seconds since start, read_mode, residency, residency_checks, switches]`` whenever
    #: the read mode or the residency the library measured changed.
    timeline: list[list[Any]] = field(default_factory=list)
    #: Seconds from the start until the library first read inline (None: never).
    inline_after: float | None = None
    switches: int = 0

    @property
    def rate(self) -> float:
        """Gets per second over the whole run."""
        return self.gets / self.seconds if self.seconds else 0.0


def bucket_rates(samples: list[tuple[float, int]], width: float, total: float) -> list[float]:
    """Gets/s per ``width``-second slice of a ``total``-second run, from ``(seconds since
    start, gets done)`` samples: the gets counted by the last sample at or before each slice's
    end, minus the previous slice's (the last slice runs to the end, a little longer or
    shorter than the others)."""
    out: list[float] = []
    edges = max(1, round(total / width))
    j, done, previous = 0, 0, 0
    for b in range(1, edges + 1):
        end = total if b == edges else b * width
        while j < len(samples) and samples[j][0] <= end + 1e-9:
            done = samples[j][1]
            j += 1
        out.append((done - previous) / (end - (b - 1) * width))
        previous = done
    return out


def metric(m: Any, name: str, default: Any = None) -> Any:
    """A field of ``env.metrics()`` that an older aiolmdb may not have."""
    return getattr(m, name, default)


async def run_mode(
    module: ModuleType,
    path: Path,
    data: Path,
    mode: str | None,
    cfg: ColdConfig,
    resident_before: float,
) -> ModeResult:
    """Open ``path`` in ``mode``; 64 tasks do random gets for ``cfg.seconds`` beside a 1 ms
    ticker; return what happened."""
    result = ModeResult(mode_label(mode), resident_before)
    keys = [make_key(i, cfg.key_size) for i in range(cfg.n_keys)]
    env = await maybe_await(
        module.open(str(path), map_size=cfg.map_size, **read_mode_options(module, mode))
    )
    try:
        db = await maybe_await(env.get_default_database())
        done = [0]
        samples: list[tuple[float, int]] = []
        start = time.perf_counter()
        deadline = start + cfg.seconds
        ticks = [0]
        last: list[Any] = []

        def look(now: float) -> None:
            m = env.metrics()
            state = [
                metric(m, "read_mode", "threaded"),
                round(float(metric(m, "residency", -1.0)), 3),
                metric(m, "residency_checks", 0),
                metric(m, "read_mode_switches", 0),
            ]
            if state != last:
                last[:] = state
                result.timeline.append([round(now - start, 3), *state])
                if state[0] == "inline" and result.inline_after is None:
                    result.inline_after = round(now - start, 3)

        def on_tick(now: float) -> None:
            ticks[0] += 1
            if ticks[0] % METRICS_EVERY == 0:
                look(now)

        async def worker(task: int) -> None:
            rng = random.Random(cfg.seed + task)
            pick, n, get, clock = rng.randrange, len(keys), db.get, time.perf_counter
            while (now := clock()) < deadline:
                if await get(keys[pick(n)]) is None:
                    raise RuntimeError("a key of the cold data set is missing")
                done[0] += 1
                # Sampled by the gets themselves: the ticker gets no turn while inline reads
                # hold the loop.
                if not done[0] & 255:
                    samples.append((now - start, done[0]))

        look(start)
        async with Ticker(on_tick) as ticker:
            await asyncio.gather(*(worker(t) for t in range(cfg.concurrency)))
        ended = time.perf_counter()
        look(ended)
        samples.append((ended - start, done[0]))
        result.gets = done[0]
        result.seconds = ended - start
        figures = ticker.figures()
        result.max_gap_ms = round(figures["max_gap_ms"], 2)
        result.p99_gap_ms = round(figures["p99_gap_ms"], 2)
        result.ticks = int(figures["ticks"])
        result.rates = [round(r) for r in bucket_rates(samples, cfg.bucket, result.seconds)]
        result.switches = int(metric(env.metrics(), "read_mode_switches", 0))
    finally:
        await maybe_await(env.close())
    result.resident_after = round(await asyncio.to_thread(resident_share, data), 3)
    return result


async def run_cold(
    module: ModuleType, path: Path, cfg: ColdConfig, log: Any = print
) -> tuple[list[ModeResult], str | None]:
    """Build (or reuse) the environment at ``path`` and run every mode from an evicted cache.
    Returns the results, or ``([], reason)`` when eviction does not work here."""
    data = await asyncio.to_thread(build, path, cfg, log)
    results: list[ModeResult] = []
    for mode in MODES:
        try:
            share = await asyncio.to_thread(evict, data)
        except OSError as exc:
            return results, f"cannot evict the data file from the page cache: {exc}"
        if share > EVICTED_AT_MOST:
            return results, (
                f"posix_fadvise(POSIX_FADV_DONTNEED) left {share:.0%} of {data} in the page "
                "cache (the file system or another process mapping it keeps it)"
            )
        log(f"cold: {mode_label(mode)}: {share:.1%} resident after eviction")
        result = await run_mode(module, path, data, mode, cfg, share)
        log(
            f"cold: {result.mode}: {result.rate:,.0f} gets/s, longest gap "
            f"{result.max_gap_ms:,.1f} ms, p99 {result.p99_gap_ms:,.1f} ms, inline after "
            f"{result.inline_after} s, {result.resident_after:.0%} resident at the end"
        )
        results.append(result)
    return results, None


# --------------------------------------------------------------------------- output


def table_lines(results: list[ModeResult], cfg: ColdConfig) -> list[str]:
    """The cold results: one row per mode, then each mode's gets/s per slice."""
    size = cfg.n_keys * (cfg.key_size + cfg.value_size) / 2**30
    lines = [
        f"== cold data: {cfg.n_keys:,} keys x {cfg.value_size} B (~{size:.2f} GiB of data), "
        f"{cfg.concurrency} tasks of random gets for {cfg.seconds:g} s per mode, each from an "
        "evicted page cache, beside a 1 ms ticker ==",
        f"{'mode':<16} {'gets/s':>10} {'longest gap':>12} {'p99 gap':>9} {'ticks':>7} "
        f"{'inline after':>13} {'switches':>8} {'resident':>15}",
    ]
    lines.append("-" * len(lines[-1]))
    for r in results:
        inline = "never" if r.inline_after is None else f"{r.inline_after:.2f} s"
        resident = f"{r.resident_before:.0%} -> {r.resident_after:.0%}"
        lines.append(
            f"{r.mode:<16} {r.rate:>10,.0f} {r.max_gap_ms:>9,.1f} ms {r.p99_gap_ms:>6,.1f} ms "
            f"{r.ticks:>7,} {inline:>13} {r.switches:>8} {resident:>15}"
        )
    lines.append(f"gets/s per {cfg.bucket:g} s as the data warms up:")
    for r in results:
        lines.append(f"  {r.mode:<16} " + " ".join(f"{x / 1000:,.0f}k" for x in r.rates))
    by_mode = {r.mode: r for r in results}
    auto, threaded = by_mode.get(mode_label(None)), by_mode.get("threaded")
    if auto is not None and threaded is not None:
        ok = auto.max_gap_ms <= threaded.max_gap_ms + 2.0
        lines.append(
            f"target: default's longest gap <= threaded's + 2 ms: {auto.max_gap_ms:.1f} <= "
            f"{threaded.max_gap_ms + 2.0:.1f} ms: {'PASS' if ok else 'FAIL'}"
        )
    return lines


def main_cold(
    module: ModuleType | None,
    cfg: ColdConfig,
    *,
    keep_dir: Path | None,
    tmpdir: Path | None,
    json_path: Path,
    meta: dict[str, Any],
    check: bool,
) -> int:
    """The ``--cold`` run: print the table, write ``json_path``; return the exit status (1
    with ``check`` when the gap target fails or aiolmdb cannot be imported)."""
    if module is None:
        print("cold: aiolmdb is not importable; nothing to measure", file=sys.stderr)
        return 1 if check else 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="aiolmdb-cold-", dir=tmpdir) as tmp:
        path = keep_dir if keep_dir is not None else Path(tmp) / "cold"
        results, skipped = asyncio.run(run_cold(module, path, cfg, log))
    lines = [*table_lines(results, cfg)] if results else []
    if skipped:
        lines.append(f"cold runs skipped: {skipped}")
    if load is not None:
        lines.append(f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    payload = {
        "meta": meta | {"load_average": load},
        "config": asdict(cfg),
        "skipped": skipped,
        "modes": [asdict(r) | {"rate": round(r.rate)} for r in results],
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = json_path.with_name(json_path.name + ".tmp")
    tmp_json.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp_json, json_path)
    print("\n".join([*lines, f"wrote {json_path}"]), flush=True)
    if check and results:
        by_mode = {r.mode: r for r in results}
        auto, threaded = by_mode.get(mode_label(None)), by_mode.get("threaded")
        if auto and threaded and auto.max_gap_ms > threaded.max_gap_ms + 2.0:
            return 1
    return 0
