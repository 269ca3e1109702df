"""Measurement: calibrate op counts, time repeated runs, collect ops/s samples."""

from __future__ import annotations

import asyncio
import gc
import random
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapters import Adapter
from .dataset import MAX_DBS, DataSet, clone, random_items, random_keys
from .workloads import CONCURRENCY, MULTI_BATCH, SCAN_BATCH, BenchConfig, Workload

Log = Callable[[str], None]


def log_stderr(msg: str) -> None:
    """Default progress logger: one line to stderr, flushed."""
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Cell:
    """Result of one (loop, implementation, workload) measurement series."""

    impl: str
    workload: str
    loop: str | None  # None: loop-independent (synchronous peers)
    ops: int = 0  # operations per timed run
    samples: list[float] = field(default_factory=list)  # ops/s, one per repeat
    skipped: str | None = None

    @property
    def median(self) -> float | None:
        """Median ops/s over the repeats, or None if nothing was measured."""
        return statistics.median(self.samples) if self.samples else None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "impl": self.impl,
            "workload": self.workload,
            "loop": self.loop,
            "ops_per_run": self.ops,
            "ops_per_sec": [round(s, 1) for s in self.samples],
            "median_ops_per_sec": None if self.median is None else round(self.median, 1),
            "skipped": self.skipped,
        }


def multi_batch(data: DataSet) -> int:
    """Keys per get_multi/put_multi call (20k, or the whole data set if smaller)."""
    return min(MULTI_BATCH, len(data))


def granularity(w: Workload, data: DataSet) -> int:
    """The op count of one indivisible unit of ``w``."""
    return {
        "concurrency": CONCURRENCY,
        "one": 1,
        "multi": multi_batch(data),
        "dataset": len(data),
    }[w.granularity]


def op_bounds(w: Workload, data: DataSet, cfg: BenchConfig) -> tuple[int, int, int]:
    """``(unit, probe_ops, max_ops)`` for ``w`` under ``cfg``."""
    unit = granularity(w, data)
    if w.max_ops:
        max_ops = max(unit, int(w.max_ops * cfg.ops_scale) // unit * unit)
        probe = max(unit, min(w.probe_ops, max_ops) // unit * unit)
    else:  # multi / dataset workloads: up to 10 units, probe with one
        max_ops = unit * max(1, round(10 * cfg.ops_scale))
        probe = unit
    return unit, probe, max_ops


def make_call(
    adapter: Adapter, w: Workload, data: DataSet, n: int, seed: int
) -> Callable[[], Awaitable[int]]:
    """Build the inputs for ``n`` ops of ``w`` (untimed) and return the timed call."""
    name = w.name
    if name in ("get-concurrent", "get-json"):
        keys = random_keys(data, n, seed)
        fn = adapter.get_concurrent if name == "get-concurrent" else adapter.get_json
        return lambda: fn(keys, CONCURRENCY)
    if name == "get-sequential":
        keys = random_keys(data, n, seed)
        return lambda: adapter.get_sequential(keys)
    if name == "put-concurrent":
        items = random_items(data, n, seed)
        return lambda: adapter.put_concurrent(items, CONCURRENCY)
    rng = random.Random(seed)
    batch = multi_batch(data)
    if name == "get-multi":
        batches = [rng.sample(data.keys, batch) for _ in range(n // batch)]
        return lambda: adapter.get_multi(batches)
    if name == "put-multi":
        size = len(data.values[0])
        item_batches = [
            [(k, rng.randbytes(size)) for k in rng.sample(data.keys, batch)]
            for _ in range(n // batch)
        ]
        return lambda: adapter.put_multi(item_batches)
    rounds = n // len(data)
    if name == "scan":
        return lambda: adapter.scan(rounds)
    if name == "scan-batches":
        return lambda: adapter.scan_batches(rounds, SCAN_BATCH)
    raise ValueError(f"unknown workload {name!r}")


async def timed(
    adapter: Adapter, w: Workload, data: DataSet, n: int, seed: int, timeout: float
) -> float:
    """Run ``n`` ops of ``w`` once; return elapsed seconds. Checks the returned count."""
    call = make_call(adapter, w, data, n, seed)
    gc.collect()
    t0 = time.perf_counter()
    if adapter.uses_loop:
        count = await asyncio.wait_for(call(), timeout)
    else:
        count = await call()
    elapsed = time.perf_counter() - t0
    # The main database also holds one record per named database, which scans see too.
    extra = n // len(data) * MAX_DBS if w.granularity == "dataset" else 0
    if not n <= count <= n + extra:
        raise RuntimeError(f"{adapter.name} {w.name}: expected {n} results, got {count}")
    return max(elapsed, 1e-9)


async def measure(
    adapter: Adapter, w: Workload, data: DataSet, cfg: BenchConfig, loop: str | None
) -> Cell:
    """Calibrate (the probe doubles as warm-up), then time ``cfg.repeat`` runs."""
    cell = Cell(adapter.name, w.name, loop)
    unit, probe, max_ops = op_bounds(w, data, cfg)
    timeout = max(60.0, 100 * cfg.target_seconds)
    seed = cfg.seed + sum(map(ord, w.name))
    rate = probe / await timed(adapter, w, data, probe, seed, timeout)
    wanted = rate * cfg.target_seconds
    n = min(max_ops, max(unit, round(wanted / unit) * unit))
    cell.ops = n
    for rep in range(cfg.repeat):
        elapsed = await timed(adapter, w, data, n, seed + 1 + rep, timeout)
        cell.samples.append(n / elapsed)
    return cell


async def run_adapter(
    adapter: Adapter,
    workloads: list[Workload],
    data: DataSet,
    cfg: BenchConfig,
    base: Path,
    workdir: Path,
    loop: str | None,
    log: Log = log_stderr,
) -> list[Cell]:
    """Give ``adapter`` a fresh copy of the data, run every workload, close, clean up."""
    path = workdir / f"{adapter.name}-{loop or 'noloop'}"
    cells: list[Cell] = []
    wanted = [w for w in workloads if w.name in adapter.workloads]
    if not wanted:
        return cells
    clone(base, path, cfg)
    try:
        await adapter.open(path, cfg)
    except Exception as exc:
        reason = f"open failed: {type(exc).__name__}: {exc}"
        log(f"  {adapter.name}: {reason}")
        shutil.rmtree(path, ignore_errors=True)
        return [Cell(adapter.name, w.name, loop, skipped=reason) for w in wanted]
    try:
        for w in wanted:
            why = adapter.unsupported(w.name)
            if why is not None:
                log(f"  {adapter.name:<15} {w.name:<15} skipped: {why}")
                cells.append(Cell(adapter.name, w.name, loop, skipped=why))
                continue
            try:
                cell = await measure(adapter, w, data, cfg, loop)
            except Exception as exc:  # keep going: report the failure in its row
                reason = f"error: {type(exc).__name__}: {exc}"
                log(f"  {adapter.name:<15} {w.name:<15} {reason}")
                cells.append(Cell(adapter.name, w.name, loop, skipped=reason))
                continue
            cells.append(cell)
            med = cell.median or 0.0
            spread = (max(cell.samples) - min(cell.samples)) / med * 100 if med else 0.0
            log(
                f"  {adapter.name:<15} {w.name:<15} {med:>14,.0f} ops/s"
                f"  (n={cell.ops:,}, spread {spread:.0f}%)"
            )
    finally:
        try:
            await adapter.close()
        except Exception as exc:
            log(f"  {adapter.name}: close failed: {type(exc).__name__}: {exc}")
        shutil.rmtree(path, ignore_errors=True)
    return cells
