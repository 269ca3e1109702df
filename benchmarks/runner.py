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

from .adapters import OURS, PEERS, Adapter
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
    loop: str  # the event loop of the pass that measured it
    ops: int = 0  # operations per timed run
    samples: list[float] = field(default_factory=list)  # ops/s, one per repeat
    skipped: str | None = None
    stored: dict[str, int] | None = None  # document workloads: what the row stored
    #: Figures the runs recorded besides their rate, one value per repeat, by name (the
    #: ``get-sequential-ticker`` runs: ``max_gap_ms``, ``ticks``).
    figures: dict[str, list[float]] = field(default_factory=dict)

    def figure(self, name: str) -> float | None:
        """The median over the repeats of the figure ``name``, or None if none was recorded."""
        values = self.figures.get(name)
        return statistics.median(values) if values else None

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
            # Six significant digits: the ratios (and verdicts) can be recomputed from them.
            "ops_per_sec": [float(f"{s:.6g}") for s in self.samples],
            "median_ops_per_sec": None if self.median is None else round(self.median, 1),
            "skipped": self.skipped,
            "stored": self.stored,
            "figures": {k: [float(f"{v:.6g}") for v in vs] for k, vs in self.figures.items()},
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


def runs_as(adapter: Adapter, w: Workload) -> str | None:
    """What ``adapter`` runs when ``w`` is measured: ``w`` itself; for a peer without a form of
    its own (``scan-batches``) the workload it is compared on (its scan); for aiolmdb in the
    ``asyncio-floor`` rotation its gets. None: it takes no part in ``w``'s rotation."""
    if w.name in adapter.workloads:
        return w.name
    if adapter.name in PEERS:
        stands_in = w.peer_workload
    elif adapter.name in OURS:
        stands_in = w.ours_workload
    else:
        return None
    return stands_in if stands_in is not None and stands_in in adapter.workloads else None


def takes_part(adapter: Adapter, w: Workload) -> bool:
    """Whether ``adapter`` is measured in ``w``'s rotation (so its ratios with the others
    there pair runs made side by side)."""
    return runs_as(adapter, w) is not None


def make_call(
    adapter: Adapter, w: Workload, data: DataSet, n: int, seed: int
) -> Callable[[], Awaitable[int]]:
    """Build the inputs for ``n`` ops of ``w`` (untimed) and return the timed call."""
    name = runs_as(adapter, w)
    if name in ("get-concurrent", "get-json", "asyncio-floor"):
        keys = random_keys(data, n, seed)
        fn = {
            "get-concurrent": adapter.get_concurrent,
            "get-json": adapter.get_json,
            "asyncio-floor": adapter.asyncio_floor,
        }[name]
        return lambda: fn(keys, CONCURRENCY)
    if name in ("get-docs", "get-docs-codecs"):
        keys = random_keys(data, n, seed, among=data.n_docs)
        return lambda: adapter.get_docs(keys, CONCURRENCY)
    if name == "get-sequential":
        keys = random_keys(data, n, seed)
        return lambda: adapter.get_sequential(keys)
    if name == "get-sequential-ticker":
        keys = random_keys(data, n, seed)
        return lambda: adapter.get_sequential_ticker(keys)
    if name in ("put-concurrent", "put-changelog"):
        items = random_items(data, n, seed)
        return lambda: adapter.put_concurrent(items, CONCURRENCY)
    if name == "put-versioned":
        items = random_items(data, n, seed)
        return lambda: adapter.put_versioned(items, CONCURRENCY)
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
    """Run ``n`` ops of ``w`` once; return elapsed seconds. Checks the returned count.

    An adapter that times itself (another process: lmdb-js) reports its own seconds in
    ``self_timed``; the figures a run records are left in ``adapter.run_figures``.
    """
    call = make_call(adapter, w, data, n, seed)
    adapter.begin_run()
    gc.collect()
    t0 = time.perf_counter()
    if adapter.uses_loop:
        count = await asyncio.wait_for(call(), timeout)
    else:
        count = await call()
    elapsed = time.perf_counter() - t0
    if adapter.self_timed is not None:
        elapsed = adapter.self_timed
    # The main database also holds one record per named database, which scans see too.
    extra = n // len(data) * MAX_DBS if w.granularity == "dataset" else 0
    if not n <= count <= n + extra:
        raise RuntimeError(f"{adapter.name} {w.name}: expected {n} results, got {count}")
    return max(elapsed, 1e-9)


async def calibrate(
    adapter: Adapter, w: Workload, data: DataSet, cfg: BenchConfig, timeout: float, seed: int
) -> int:
    """Time one probe run (it doubles as warm-up); return the op count for ~target_seconds."""
    unit, probe, max_ops = op_bounds(w, data, cfg)
    rate = probe / await timed(adapter, w, data, probe, seed, timeout)
    if w.name in adapter.full_runs:
        return max_ops
    wanted = rate * cfg.target_seconds * w.seconds_scale
    return min(max_ops, max(unit, round(wanted / unit) * unit))


def error_text(exc: BaseException) -> str:
    """How a failed cell says why in its row."""
    return f"error: {type(exc).__name__}: {exc}"


def log_cell(cell: Cell, log: Log) -> None:
    """One progress line: the cell's median and spread, or why it was skipped."""
    if cell.skipped is not None:
        log(f"  {cell.impl:<15} {cell.workload:<15} {cell.skipped}")
        return
    med = cell.median or 0.0
    spread = (max(cell.samples) - min(cell.samples)) / med * 100 if med else 0.0
    gap = cell.figure("max_gap_ms")
    log(
        f"  {cell.impl:<15} {cell.workload:<15} {med:>14,.0f} ops/s"
        f"  (n={cell.ops:,}, spread {spread:.0f}%)"
        + ("" if gap is None else f", longest loop gap {gap:.1f} ms")
    )


async def measure_workload(
    adapters: list[Adapter],
    w: Workload,
    data: DataSet,
    cfg: BenchConfig,
    loop: str,
    log: Log = log_stderr,
) -> list[Cell]:
    """Measure ``w`` on every adapter, interleaved: repeat ``i`` runs each adapter once.

    The order rotates from one repeat to the next, so a slow spell of a noisy machine, or
    the aftermath of the previous run (write-back, a warm cache), hits every implementation
    alike, and sample ``i`` of one implementation is paired with sample ``i`` of another:
    the ratios are medians of those pairs.
    """
    timeout = max(60.0, 100 * cfg.target_seconds)
    seed = cfg.seed + sum(map(ord, w.name))
    adapters = [a for a in adapters if takes_part(a, w)]
    cells: dict[str, Cell] = {}
    running: list[Adapter] = []
    for adapter in adapters:
        cell = cells[adapter.name] = Cell(adapter.name, w.name, loop, stored=adapter.stored)
        cell.skipped = adapter.unsupported(runs_as(adapter, w) or w.name)
        if cell.skipped is None:
            running.append(adapter)
    for adapter in list(running):
        cell = cells[adapter.name]
        try:
            cell.ops = await calibrate(adapter, w, data, cfg, timeout, seed)
        except Exception as exc:  # keep going: report the failure in its row
            cell.skipped = error_text(exc)
            running.remove(adapter)
    for rep in range(cfg.repeat):
        shift = rep % len(running) if running else 0
        for adapter in running[shift:] + running[:shift]:
            cell = cells[adapter.name]
            if cell.skipped is not None:
                continue
            try:
                elapsed = await timed(adapter, w, data, cell.ops, seed + 1 + rep, timeout)
            except Exception as exc:
                cell.skipped = error_text(exc)
                cell.samples.clear()
                continue
            cell.samples.append(cell.ops / elapsed)
            for name, value in adapter.run_figures.items():
                cell.figures.setdefault(name, []).append(value)
    out = [cells[a.name] for a in adapters]
    for cell in out:
        log_cell(cell, log)
    return out


async def run_interleaved(
    adapters: list[Adapter],
    workloads: list[Workload],
    data: DataSet,
    cfg: BenchConfig,
    base: Path,
    workdir: Path,
    loop: str,
    log: Log = log_stderr,
) -> list[Cell]:
    """Give each adapter a fresh copy of the data, open them all, then measure workload by
    workload with the adapters' runs interleaved (:func:`measure_workload`)."""
    cells: list[Cell] = []
    opened: list[tuple[Adapter, Path]] = []
    try:
        for adapter in adapters:
            wanted = [w for w in workloads if takes_part(adapter, w)]
            if not wanted:
                continue
            path = workdir / f"{adapter.name}-{loop}"
            if adapter.uses_data:
                clone(base, path, cfg)
            try:
                await adapter.open(path, cfg)
            except Exception as exc:
                reason = f"open failed: {type(exc).__name__}: {exc}"
                log(f"  {adapter.name}: {reason}")
                shutil.rmtree(path, ignore_errors=True)
                cells += [Cell(adapter.name, w.name, loop, skipped=reason) for w in wanted]
                continue
            opened.append((adapter, path))
        for w in workloads:
            cells += await measure_workload([a for a, _ in opened], w, data, cfg, loop, log)
    finally:
        for adapter, path in opened:
            try:
                await adapter.close()
            except Exception as exc:
                log(f"  {adapter.name}: close failed: {type(exc).__name__}: {exc}")
            shutil.rmtree(path, ignore_errors=True)
    return cells
