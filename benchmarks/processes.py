"""Many processes on one environment: ``python -m benchmarks.processes``.

Measures, on one large environment (1M keys of 16 bytes with 100-byte values by default):

- 64-task concurrent gets in one process: aiolmdb as opened by default, with
  ``inline_reads=True``, with the whole process pinned to one core, with the loop and the
  reader threads pinned to one core (the writer thread left free), with one reader thread, and
  with a reader "executor" whose one thread spins briefly before it sleeps;
- the same gets in N processes at once (aggregate throughput), and sync py-lmdb gets (a loop in
  one read transaction) in 1 and N processes;
- aiolmdb's gets in one process while other processes keep the other cores busy (no LMDB);
- durable 64-task concurrent puts in N processes, against sync py-lmdb's one durable commit
  per put in N processes.

Every measurement runs in fresh processes (the ``spawn`` start method), which open the
environment themselves, warm up, wait on a barrier, then time their own run; the aggregate
throughput is the operations of all of them over the time from the first start to the last
end. Each repeat goes through every case in turn, so that a burst of load on the machine hits
all of them alike; the load average is recorded with each measurement. The report gives the
median of the repeats with the lowest and highest. The results are method and ratios, not
absolutes: see docs/guide/processes.md.

Not part of ``make test`` nor of ``make bench``; the environment is built once in ``--dir``
and reused by later runs with the same ``--keys``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import json
import multiprocessing
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lmdb

from .dataset import MAX_DBS, make_key

KEY_SIZE = 16
VALUE_SIZE = 100
CONCURRENCY = 64
PUT_DB = b"puts"
MAP_SIZE = 8 << 30
#: Reader slots: 4 processes of 8 reader threads, and more, fit with room to spare.
MAX_READERS = 1024
#: How long the spinning reader thread looks for work before it sleeps (seconds).
SPIN_SECONDS = 50e-6
#: Items per write transaction while building the environment.
BUILD_CHUNK = 100_000

#: Single-process modes of aiolmdb's gets, and what each one changes.
GET_MODES: dict[str, str] = {
    "default": "aiolmdb.open(path)",
    "inline": "inline_reads=True",
    "pinned": "whole process pinned to one core (os.sched_setaffinity before opening)",
    "colocated": "loop and reader threads pinned to one core, writer thread free",
    "readers1": "readers=1",
    "spin": "executor= one reader thread that spins 50 us before it sleeps",
}


@dataclass(frozen=True)
class Case:
    """One measurement: ``kind`` (get or put) by ``impl`` in ``mode``, in ``procs`` processes."""

    kind: str  # "get" | "put"
    impl: str  # "sync" | "aiolmdb"
    mode: str  # a GET_MODES key; "default" for sync and for puts
    procs: int
    #: Processes that only burn CPU during the run (no LMDB): a busy neighbour.
    busy: int = 0

    @property
    def label(self) -> str:
        """A short name for the report."""
        mode = "" if self.mode == "default" else f" {self.mode}"
        busy = f" +{self.busy} busy" if self.busy else ""
        return f"{self.kind} {self.impl}{mode} x{self.procs}{busy}"


@dataclass
class Measurement:
    """One timed run of a case: aggregate throughput and the load average before it."""

    case: Case
    ops: int
    seconds: float
    per_second: float
    load: tuple[float, float, float]


# --------------------------------------------------------------------------- building


def build(path: Path, n_keys: int, seed: int) -> None:
    """Create the environment at ``path`` with ``n_keys`` keys (reused when already built)."""
    marker = path / "built.json"
    if marker.exists() and json.loads(marker.read_text()).get("keys") == n_keys:
        return
    path.mkdir(parents=True, exist_ok=True)
    for name in ("data.mdb", "lock.mdb"):
        (path / name).unlink(missing_ok=True)
    rng = random.Random(seed)
    env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=MAX_DBS, max_readers=MAX_READERS)
    try:
        for start in range(0, n_keys, BUILD_CHUNK):
            stop = min(start + BUILD_CHUNK, n_keys)
            items = [(make_key(i, KEY_SIZE), rng.randbytes(VALUE_SIZE)) for i in range(start, stop)]
            with env.begin(write=True) as txn:
                _, added = txn.cursor().putmulti(items, append=True)
            if added != len(items):
                raise RuntimeError(f"{path}: loaded {added} of {len(items)} items")
        # After the keys: a name in the main database, which append=True must not precede.
        env.open_db(PUT_DB)
        env.sync(True)
    finally:
        env.close()
    marker.write_text(json.dumps({"keys": n_keys}))


def warm_page_cache(path: Path) -> None:
    """Read the data file once, so the first case does not pay for the disk."""
    with open(path / "data.mdb", "rb") as f:
        while f.read(1 << 24):
            pass


# --------------------------------------------------------------------------- workers


def _pin_thread(cpu: int) -> None:
    """Pin the calling thread (Linux: pid 0 is the calling thread, not the whole process)."""
    os.sched_setaffinity(0, {cpu})


class SpinExecutor(concurrent.futures.Executor):
    """One worker thread that polls its queue for ``spin`` seconds before it sleeps.

    Enough of an executor for aiolmdb's readers (``submit``; the results it returns are not
    awaited). The poll releases the GIL at each turn (``time.sleep(0)``).
    """

    def __init__(self, spin: float) -> None:
        self._spin = spin
        self._queue: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._cv = threading.Condition()
        self._sleeping = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="spin-reader", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Queue ``fn(*args)``; wake the thread only if it went to sleep."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.append((fn, args))
        if self._sleeping:
            with self._cv:
                self._cv.notify()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the thread once its queue is empty."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        if wait:
            self._thread.join()

    def _run(self) -> None:
        queue = self._queue
        while True:
            deadline = time.perf_counter() + self._spin
            while not queue and time.perf_counter() < deadline:
                time.sleep(0)
            if queue:
                fn, args = queue.popleft()
                fn(*args)
                continue
            with self._cv:
                # Set before the last look: a submit after it sees the flag and notifies.
                self._sleeping = True
                if not queue and not self._stop:
                    self._cv.wait(0.5)
                self._sleeping = False
                if self._stop and not queue:
                    return


def _random_keys(n_keys: int, ops: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [make_key(rng.randrange(n_keys), KEY_SIZE) for _ in range(ops)]


def _sync_gets(env: lmdb.Environment, keys: Sequence[bytes]) -> int:
    hits = 0
    with env.begin() as txn:
        get = txn.get
        for k in keys:
            if get(k) is not None:
                hits += 1
    return hits


def _sync_puts(env: lmdb.Environment, items: Sequence[tuple[bytes, bytes]]) -> int:
    db = env.open_db(PUT_DB)
    for k, v in items:
        with env.begin(write=True, db=db) as txn:  # one durable commit per put
            txn.put(k, v)
    return len(items)


async def _fan_out(worker: Callable[[Sequence[Any]], Any], items: Sequence[Any]) -> int:
    return sum(await asyncio.gather(*(worker(items[i::CONCURRENCY]) for i in range(CONCURRENCY))))


async def _aiolmdb_run(
    path: Path, case: Case, cpu: int, keys: list[bytes], warm: list[bytes], barrier: Any
) -> tuple[float, float, int]:
    import aiolmdb

    options: dict[str, Any] = {"map_size": MAP_SIZE, "max_readers": MAX_READERS}
    executor: concurrent.futures.Executor | None = None
    if case.mode == "inline":
        options["inline_reads"] = True
    elif case.mode == "readers1":
        options["readers"] = 1
    elif case.mode == "colocated":
        readers = min(8, max(2, os.cpu_count() or 2))
        executor = concurrent.futures.ThreadPoolExecutor(
            readers, initializer=_pin_thread, initargs=(cpu,)
        )
    elif case.mode == "spin":
        executor = SpinExecutor(SPIN_SECONDS)
    if executor is not None:
        options["executor"] = executor
    try:
        async with aiolmdb.open(path, **options) as env:
            if case.mode == "colocated":
                _pin_thread(cpu)  # the loop thread; the writer thread started unpinned
            if case.kind == "get":
                db = env.get_default_database()

                async def getter(ks: Sequence[bytes]) -> int:
                    hits = 0
                    for k in ks:
                        if await db.get(k) is not None:
                            hits += 1
                    return hits

                await _fan_out(getter, warm)
                await asyncio.to_thread(barrier.wait, 120)
                t0 = time.perf_counter()
                done = await _fan_out(getter, keys)
                t1 = time.perf_counter()
            else:
                pdb = await env.open_db("puts")
                rng = random.Random(len(keys))

                async def putter(items: Sequence[tuple[bytes, bytes]]) -> int:
                    for k, v in items:
                        await pdb.put(k, v)
                    return len(items)

                warm_items = [(k, rng.randbytes(VALUE_SIZE)) for k in warm]
                items = [(k, rng.randbytes(VALUE_SIZE)) for k in keys]
                await _fan_out(putter, warm_items)
                await asyncio.to_thread(barrier.wait, 120)
                t0 = time.perf_counter()
                done = await _fan_out(putter, items)
                t1 = time.perf_counter()
    finally:
        if executor is not None:
            executor.shutdown(wait=True)
    return t0, t1, done


def worker(
    path: str, case: Case, index: int, n_keys: int, ops: int, seed: int, barrier: Any, out: Any
) -> None:
    """One worker process: open the environment, warm up, meet the others, time ``ops`` ops."""
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[index % len(cpus)]
    if case.mode == "pinned":
        _pin_thread(cpu)  # before any thread starts: every thread inherits it
    keys = _random_keys(n_keys, ops, seed + index)
    warm = _random_keys(n_keys, min(ops, CONCURRENCY * 50), seed - 1 - index)
    if case.impl == "sync":
        env = lmdb.open(path, map_size=MAP_SIZE, max_dbs=MAX_DBS, max_readers=MAX_READERS)
        try:
            if case.kind == "get":
                _sync_gets(env, warm)
                barrier.wait(120)
                t0 = time.perf_counter()
                done = _sync_gets(env, keys)
            else:
                rng = random.Random(index)
                items = [(k, rng.randbytes(VALUE_SIZE)) for k in keys]
                _sync_puts(env, [(k, rng.randbytes(VALUE_SIZE)) for k in warm[:200]])
                barrier.wait(120)
                t0 = time.perf_counter()
                done = _sync_puts(env, items)
            t1 = time.perf_counter()
        finally:
            env.close()
    else:
        t0, t1, done = asyncio.run(_aiolmdb_run(Path(path), case, cpu, keys, warm, barrier))
    out.put((t0, t1, done))


def burn(stop: Any) -> None:
    """A busy neighbour: spin on the CPU until ``stop`` is set."""
    while not stop.is_set():
        for _ in range(100_000):
            pass


def measure(path: Path, case: Case, n_keys: int, ops: int, seed: int) -> Measurement:
    """Run ``case`` once in fresh processes; ``ops`` operations per process."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(case.procs)
    out = ctx.Queue()
    load = os.getloadavg()
    procs = [
        ctx.Process(target=worker, args=(str(path), case, i, n_keys, ops, seed, barrier, out))
        for i in range(case.procs)
    ]
    stop = ctx.Event()
    burners = [ctx.Process(target=burn, args=(stop,)) for _ in range(case.busy)]
    for p in burners + procs:
        p.start()
    try:
        results = [out.get(timeout=600) for _ in procs]
    finally:
        stop.set()
    for p in burners + procs:
        p.join(60)
        if p.exitcode != 0:
            raise RuntimeError(f"{case.label}: a worker exited with {p.exitcode}")
    if case.kind == "get" and any(r[2] != ops for r in results):
        raise RuntimeError(f"{case.label}: a get missed its key")
    start = min(r[0] for r in results)
    end = max(r[1] for r in results)
    total = sum(r[2] for r in results)
    return Measurement(case, total, end - start, total / (end - start), load)


# --------------------------------------------------------------------------- the run


def cases(procs: Sequence[int], what: Sequence[str]) -> list[Case]:
    """The cases to measure: ``what`` among "gets", "modes", "busy" and "puts"."""
    out: list[Case] = []
    if "gets" in what:
        for n in procs:
            out.append(Case("get", "sync", "default", n))
            out.append(Case("get", "aiolmdb", "default", n))
            out.append(Case("get", "aiolmdb", "inline", n))
            out.append(Case("get", "aiolmdb", "pinned", n))
    if "modes" in what:
        out.extend(Case("get", "aiolmdb", m, 1) for m in ("colocated", "readers1", "spin"))
    if "busy" in what:  # one process with a busy neighbour on the other core(s)
        busy = max(1, (os.cpu_count() or 2) - 1)
        out.extend(Case("get", "aiolmdb", m, 1, busy) for m in ("default", "pinned", "inline"))
    if "puts" in what:
        for n in procs:
            out.append(Case("put", "sync", "default", n))
            out.append(Case("put", "aiolmdb", "default", n))
    return out


def report(measurements: list[Measurement]) -> str:
    """One line per case: median, lowest and highest of its repeats, and the load averages."""
    by_case: dict[Case, list[Measurement]] = {}
    for m in measurements:
        by_case.setdefault(m.case, []).append(m)
    lines = [f"{'case':<32} {'median/s':>10} {'min':>10} {'max':>10}  load (1 min) min-max"]
    for case, ms in by_case.items():
        rates = [m.per_second for m in ms]
        loads = [m.load[0] for m in ms]
        lines.append(
            f"{case.label:<32} {statistics.median(rates):>10,.0f} {min(rates):>10,.0f} "
            f"{max(rates):>10,.0f}  {min(loads):.2f}-{max(loads):.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, build the environment if needed, measure, print (and save) the report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.processes", description=__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys in the environment")
    parser.add_argument("--dir", type=Path, default=Path("bench-processes"), help="its directory")
    parser.add_argument("--procs", default="1,2,4", help="process counts, comma-separated")
    parser.add_argument("--only", default="gets,modes,busy,puts", help="gets, modes, busy, puts")
    parser.add_argument("--ops", type=int, default=200_000, help="gets per process and run")
    parser.add_argument("--put-ops", type=int, default=40_000, help="aiolmdb puts per process, run")
    parser.add_argument(
        "--sync-put-ops", type=int, default=2_000, help="sync puts per process, run"
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs of every case")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args(argv)
    procs = [int(n) for n in args.procs.split(",")]
    todo = cases(procs, args.only.split(","))

    t = time.perf_counter()
    build(args.dir, args.keys, args.seed)
    warm_page_cache(args.dir)
    size = (args.dir / "data.mdb").stat().st_size
    print(
        f"environment: {args.dir} ({args.keys:,} keys, {size / 2**20:,.0f} MiB file), "
        f"ready in {time.perf_counter() - t:.1f} s; {os.cpu_count()} CPUs; "
        f"Python {sys.version.split()[0]}, py-lmdb {lmdb.__version__}",
        flush=True,
    )
    measurements: list[Measurement] = []
    for r in range(args.repeat):
        for case in todo:
            if case.kind == "get":
                ops = args.ops
            else:
                ops = args.put_ops if case.impl == "aiolmdb" else args.sync_put_ops
            m = measure(args.dir, case, args.keys, ops, args.seed + r)
            measurements.append(m)
            print(
                f"[{r + 1}/{args.repeat}] {case.label:<32} {m.per_second:>10,.0f}/s "
                f"load {m.load[0]:.2f}",
                flush=True,
            )
    print(report(measurements))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"keys": args.keys, "measurements": [asdict(m) for m in measurements]}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
