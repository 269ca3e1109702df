"""One adapter class per implementation under test.

Every adapter exposes the same async methods, one per workload.  Each method
receives its pre-generated inputs (so input generation is never timed) and
returns a count (hits, items seen or items written) that the runner checks, so
a broken implementation cannot post a great number by doing nothing.

To add an implementation: subclass :class:`Adapter`, set ``name``,
``description`` and ``workloads``, implement ``open``/``close`` and the workload
methods it supports, and append it to :func:`build_adapters`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import inspect
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import lmdb
import lmdb.aio

from .dataset import (
    DOCS_DB,
    JSON_DB,
    MAX_DBS,
    PUT_DB,
    PUT_MULTI_DB,
    TRAIN_DB,
    VERSIONED_DB,
    make_key,
    open_env,
)
from .documents import document_type, documents
from .ticker import Ticker
from .workloads import BenchConfig

if TYPE_CHECKING:
    from lmdb import _Database

T = TypeVar("T")

READ_WORKLOADS = frozenset(
    {"get-concurrent", "get-sequential", "get-multi", "get-json", "scan", "scan-batches"}
)
ALL_WORKLOADS = READ_WORKLOADS | {"put-concurrent", "put-multi"}
#: aiolmdb's read modes only: a chain of gets beside a 1 ms ticker (issue 22).
TICKER_WORKLOAD = "get-sequential-ticker"


async def fan_out(
    worker: Callable[[Sequence[T]], Awaitable[int]], items: Sequence[T], concurrency: int
) -> int:
    """Split ``items`` round-robin over ``concurrency`` tasks running ``worker``; sum results.

    If one task fails (or this is cancelled), the others are cancelled and awaited before
    the error propagates, so no stray task keeps using the environment.
    """
    tasks = [asyncio.ensure_future(worker(items[i::concurrency])) for i in range(concurrency)]
    try:
        return sum(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def maybe_await(value: Any) -> Any:
    """Await ``value`` if it is awaitable (lets adapters accept sync or async APIs)."""
    if inspect.isawaitable(value):
        return await value
    return value


class Adapter:
    """Base class: an implementation under test, driven through async workload methods."""

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    workloads: ClassVar[frozenset[str]] = ALL_WORKLOADS
    #: False for synchronous peers: their runs are not wrapped in a loop timeout.
    uses_loop: ClassVar[bool] = True
    #: False when :meth:`open` needs no copy of the data (the asyncio floor, the coder rows).
    uses_data: ClassVar[bool] = True
    #: What the implementation stored, once opened (document workloads): ``values``,
    #: ``value_bytes`` (the sum of the stored values' sizes) and ``db_bytes`` (LMDB's pages).
    stored: dict[str, int] | None = None
    #: Seconds the last run took by the implementation's own clock, for one that runs in
    #: another process (lmdb-js): the runner then times with it. None: the runner's clock.
    self_timed: float | None = None
    #: Workloads this implementation always runs at their full op count (``max_ops``)
    #: rather than calibrated to the run length: the chain of 300k gets of
    #: ``get-sequential-ticker`` for the modes that read on the loop.
    full_runs: ClassVar[frozenset[str]] = frozenset()
    #: Figures the last run recorded besides its rate (``max_gap_ms``, ``ticks``).
    run_figures: dict[str, float] = {}  # noqa: RUF012 (replaced per run by the runner)

    def begin_run(self) -> None:
        """Forget what the previous run reported (``self_timed``, ``run_figures``)."""
        self.self_timed = None
        self.run_figures = {}

    async def open(self, path: Path, cfg: BenchConfig) -> None:
        """Open the implementation's environment on the copy of the data at ``path``."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close everything opened by :meth:`open`."""
        raise NotImplementedError

    def unsupported(self, workload: str) -> str | None:
        """Return why ``workload`` cannot run on this implementation, or None if it can."""
        if workload not in self.workloads:
            return "not applicable"
        return None

    async def get_concurrent(self, keys: Sequence[bytes], concurrency: int) -> int:
        """W1: ``concurrency`` tasks doing awaited gets; return number of hits."""
        raise NotImplementedError

    async def get_sequential(self, keys: Sequence[bytes]) -> int:
        """W2: one task doing awaited gets in turn; return number of hits."""
        raise NotImplementedError

    async def get_sequential_ticker(self, keys: Sequence[bytes]) -> int:
        """W14: one task doing awaited gets in turn beside a :class:`Ticker`; return number of
        hits, and set ``run_figures`` from the ticker."""
        raise NotImplementedError

    async def put_concurrent(self, items: Sequence[tuple[bytes, bytes]], concurrency: int) -> int:
        """W3: ``concurrency`` tasks doing durable puts; return number written."""
        raise NotImplementedError

    async def get_multi(self, batches: Sequence[Sequence[bytes]]) -> int:
        """W4: one multi-get per batch, in turn; return number of hits."""
        raise NotImplementedError

    async def put_versioned(self, items: Sequence[tuple[bytes, bytes]], concurrency: int) -> int:
        """W10: ``concurrency`` tasks doing durable puts into a versioned database; return
        number written (or, for conditional puts, attempted)."""
        raise NotImplementedError

    async def put_multi(self, batches: Sequence[Sequence[tuple[bytes, bytes]]]) -> int:
        """W5: one atomic, durable multi-put per batch, in turn; return number written."""
        raise NotImplementedError

    async def get_json(self, keys: Sequence[bytes], concurrency: int) -> int:
        """W6: like W1 on the JSON database, values decoded; return number of hits."""
        raise NotImplementedError

    async def scan(self, rounds: int) -> int:
        """W7: iterate ``rounds`` times over the whole main database; return items seen."""
        raise NotImplementedError

    async def scan_batches(self, rounds: int, batch_size: int) -> int:
        """W8 (batch form): like :meth:`scan`, consuming ``batch_size`` items at a time."""
        raise NotImplementedError

    async def asyncio_floor(self, keys: Sequence[bytes], concurrency: int) -> int:
        """W9: like W1 with no database: each key is its own answer; return answers."""
        raise NotImplementedError

    async def get_docs(self, keys: Sequence[bytes], concurrency: int) -> int:
        """W10, W11: like W1 on the documents, decoded; return number of hits."""
        raise NotImplementedError


# --------------------------------------------------------------------------- sync


class SyncAdapter(Adapter):
    """Plain synchronous py-lmdb: the upper limit (no event loop, no threads)."""

    name = "sync"
    description = "plain py-lmdb on the calling thread; gets in one txn, one durable txn per put"
    workloads = ALL_WORKLOADS - {"scan-batches"}
    uses_loop = False

    env: lmdb.Environment
    jdb: _Database
    pdb: _Database
    pmdb: _Database

    async def open(self, path: Path, cfg: BenchConfig) -> None:
        """Open the copy with ``lmdb.open`` and the named databases."""
        self.env = open_env(path, cfg)
        self.jdb = self.env.open_db(JSON_DB.encode())
        self.pdb = self.env.open_db(PUT_DB.encode())
        self.pmdb = self.env.open_db(PUT_MULTI_DB.encode())

    async def close(self) -> None:
        """Close the environment."""
        self.env.close()

    async def get_concurrent(self, keys: Sequence[bytes], concurrency: int) -> int:
        """Same number of gets, in a loop, in one read transaction."""
        return self._gets(keys)

    async def get_sequential(self, keys: Sequence[bytes]) -> int:
        """Gets in a loop in one read transaction."""
        return self._gets(keys)

    def _gets(self, keys: Sequence[bytes]) -> int:
        hits = 0
        with self.env.begin() as txn:
            get = txn.get
            for k in keys:
                if get(k) is not None:
                    hits += 1
        return hits

    async def put_concurrent(self, items: Sequence[tuple[bytes, bytes]], concurrency: int) -> int:
        """One write transaction, one put and one durable commit per item."""
        env, db = self.env, self.pdb
        for k, v in items:
            with env.begin(write=True, db=db) as txn:
                txn.put(k, v)
        return len(items)

    async def get_multi(self, batches: Sequence[Sequence[bytes]]) -> int:
        """``txn.cursor().getmulti(keys)`` per batch."""
        hits = 0
        for batch in batches:
            with self.env.begin() as txn:
                hits += len(txn.cursor().getmulti(batch))
        return hits

    async def put_multi(self, batches: Sequence[Sequence[tuple[bytes, bytes]]]) -> int:
        """``cursor.putmulti(items)`` in one durable write transaction per batch."""
        written = 0
        for batch in batches:
            with self.env.begin(write=True, db=self.pmdb) as txn:
                written += txn.cursor().putmulti(batch)[1]
        return written

    async def get_json(self, keys: Sequence[bytes], concurrency: int) -> int:
        """Gets plus ``json.loads`` in a loop in one read transaction."""
        hits = 0
        loads = json.loads
        with self.env.begin(db=self.jdb) as txn:
            get = txn.get
            for k in keys:
                raw = get(k)
                if raw is not None and loads(raw) is not None:
                    hits += 1
        return hits

    async def scan(self, rounds: int) -> int:
        """``for k, v in txn.cursor()`` over the main database."""
        seen = 0
        for _ in range(rounds):
            with self.env.begin() as txn:
                for _k, _v in txn.cursor():
                    seen += 1
        return seen


class SyncBatchedAdapter(SyncAdapter):
    """Context row for W3: synchronous puts committed in batches of ``concurrency``."""

    name = "sync-batch"
    description = "plain py-lmdb, puts committed durably in groups of 64 (ideal group commit)"
    workloads = frozenset({"put-concurrent"})

    async def put_concurrent(self, items: Sequence[tuple[bytes, bytes]], concurrency: int) -> int:
        """One durable write transaction per ``concurrency`` puts."""
        env, db = self.env, self.pdb
        for start in range(0, len(items), concurrency):
            with env.begin(write=True, db=db) as txn:
                for k, v in items[start : start + concurrency]:
                    txn.put(k, v)
        return len(items)


# --------------------------------------------------------------------------- lmdb.aio


class LmdbAioAdapter(Adapter):
    """py-lmdb's own ``lmdb.aio`` wrapper, used the way its docs show."""

    name = "lmdb.aio"
    description = (
        "lmdb.aio.wrap(env); every op is `async with aenv.begin() as txn: await txn.get(k)`"
    )
    workloads = ALL_WORKLOADS - {"scan-batches"}

    env: lmdb.Environment
    aenv: lmdb.aio.AsyncEnvironment
    jdb: _Database
    pdb: _Database
    pmdb: _Database

    async def open(self, path: Path, cfg: BenchConfig) -> None:
        """``lmdb.open`` + ``lmdb.aio.wrap`` (loop's default executor), then the named dbs."""
        self.env = open_env(path, cfg)
        self.aenv = lmdb.aio.wrap(self.env)
        self.jdb = await self.aenv.open_db(JSON_DB.encode())
        self.pdb = await self.aenv.open_db(PUT_DB.encode())
        self.pmdb = await self.aenv.open_db(PUT_MULTI_DB.encode())

    async def close(self) -> None:
        """``await aenv.close()``."""
        await self.aenv.close()

    async def _get_worker(self, keys: Sequence[bytes]) -> int:
        hits = 0
        aenv = self.aenv
        for k in keys:
            async with aenv.begin() as txn:
                if await txn.get(k) is not None:
                    hits += 1
        return hits

    async def get_concurrent(self, keys: Sequence[bytes], concurrency: int) -> int:
        """Each task: one read txn (begin, get, commit) per key."""
        return await fan_out(self._get_worker, keys, concurrency)

    async def get_sequential(self, keys: Sequence[bytes]) -> int:
        """One read txn per key, in turn."""
        return await self._get_worker(keys)

    async def _put_worker(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        aenv, db = self.aenv, self.pdb
        for k, v in items:
            async with aenv.begin(db=db, write=True) as txn:
                await txn.put(k, v)
        return len(items)

    async def put_concurrent(self, items: Sequence[tuple[bytes, bytes]], concurrency: int) -> int:
        """Each task: one write txn (durable commit) per put."""
        return await fan_out(self._put_worker, items, concurrency)

    async def get_multi(self, batches: Sequence[Sequence[bytes]]) -> int:
        """One read txn per batch, ``await cursor.getmulti(keys)``."""
        hits = 0
        for batch in batches:
            async with self.aenv.begin() as txn, txn.cursor() as cur:
                hits += len(await cur.getmulti(batch))
        return hits

    async def put_multi(self, batches: Sequence[Sequence[tuple[bytes, bytes]]]) -> int:
        """One write txn per batch, ``await cursor.putmulti(items)``."""
        written = 0
        for batch in batches:
            async with self.aenv.begin(db=self.pmdb, write=True) as txn, txn.cursor() as cur:
                written += (await cur.putmulti(batch))[1]
        return written

    async def _json_worker(self, keys: Sequence[bytes]) -> int:
        hits = 0
        aenv, db, loads = self.aenv, self.jdb, json.loads
        for k in keys:
            async with aenv.begin(db=db) as txn:
                raw = await txn.get(k)
            if raw is not None and loads(raw) is not None:
                hits += 1
        return hits

    async def get_json(self, keys: Sequence[bytes], concurrency: int) -> int:
        """Like get_concurrent; ``json.loads`` on the event loop."""
        return await fan_out(self._json_worker, keys, concurrency)

    async def scan(self, rounds: int) -> int:
        """``await cursor.iternext()`` (whole db materialised as a list in the executor)."""
        seen = 0
        for _ in range(rounds):
            async with self.aenv.begin() as txn, txn.cursor() as cur:
                for _k, _v in await cur.iternext():
                    seen += 1
        return seen


# --------------------------------------------------------------------------- naive


class NaiveAdapter(Adapter):
    """A naive wrapper: one whole transaction per operation via ``run_in_executor``."""

    name = "naive"
    description = "loop.run_in_executor(ThreadPoolExecutor(), <whole txn>) per operation"
    workloads = ALL_WORKLOADS - {"scan-batches"}

    env: lmdb.Environment
    executor: ThreadPoolExecutor
    jdb: _Database
    pdb: _Database
    pmdb: _Database

    async def open(self, path: Path, cfg: BenchConfig) -> None:
        """``lmdb.open`` plus a default-sized ThreadPoolExecutor."""
        self.env = open_env(path, cfg)
        self.executor = ThreadPoolExecutor(thread_name_prefix="naive-lmdb")
        self.jdb = self.env.open_db(JSON_DB.encode())
        self.pdb = self.env.open_db(PUT_DB.encode())
        self.pmdb = self.env.open_db(PUT_MULTI_DB.encode())

    async def close(self) -> None:
        """Shut the executor down, close the environment."""
        self.executor.shutdown(wait=True)
        self.env.close()

    # Whole transactions, run on a worker thread.
    def _get(self, key: bytes, db: _Database | None = None) -> bytes | None:
        with self.env.begin(db=db) as txn:
            return txn.get(key)

    def _put(self, key: bytes, value: bytes) -> bool:
        with self.env.begin(write=True, db=self.pdb) as txn:
            return txn.put(key, value)

    def _get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes | None]:
        with self.env.begin() as txn:
            get = txn.get
            return {k: get(k) for k in keys}

    def _put_many(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        with self.env.begin(write=True, db=self.pmdb) as txn:
            put = txn.put
            for k, v in items:
                put(k, v)
        return len(items)

    def _scan(self) -> list[tuple[bytes, bytes]]:
        with self.env.begin() as txn:
            return list(txn.cursor())

    async def _get_worker(self, keys: Sequence[bytes]) -> int:
        hits = 0
        run, ex, get = asyncio.get_running_loop().run_in_executor, self.executor, self._get
        for k in keys:
            if await run(ex, get, k) is not None:
                hits += 1
        return hits

    async def get_concurrent(self, keys: Sequence[bytes], concurrency: int) -> int:
        """Each task: one executor call (whole read txn) per get."""
        return await fan_out(self._get_worker, keys, concurrency)

    async def get_sequential(self, keys: Sequence[bytes]) -> int:
        """One executor call per get, in turn."""
        return await self._get_worker(keys)

    async def _put_worker(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        run, ex, put = asyncio.get_running_loop().run_in_executor, self.executor, self._put
        for k, v in items:
            await run(ex, put, k, v)
        return len(items)

    async def put_concurrent(self, items: Sequence[tuple[bytes, bytes]], concurrency: int) -> int:
        """Each task: one executor call (whole durable write txn) per put."""
        return await fan_out(self._put_worker, items, concurrency)

    async def get_multi(self, batches: Sequence[Sequence[bytes]]) -> int:
        """One executor call per batch, looping ``txn.get`` into a dict."""
        loop = asyncio.get_running_loop()
        hits = 0
        for batch in batches:
            found = await loop.run_in_executor(self.executor, self._get_many, batch)
            hits += len(found) - list(found.values()).count(None)
        return hits

    async def put_multi(self, batches: Sequence[Sequence[tuple[bytes, bytes]]]) -> int:
        """One executor call per batch, looping ``txn.put`` in one durable txn."""
        loop = asyncio.get_running_loop()
        written = 0
        for batch in batches:
            written += await loop.run_in_executor(self.executor, self._put_many, batch)
        return written

    async def _json_worker(self, keys: Sequence[bytes]) -> int:
        hits = 0
        run, ex, get, db = (
            asyncio.get_running_loop().run_in_executor,
            self.executor,
            self._get,
            self.jdb,
        )
        loads = json.loads
        for k in keys:
            raw = await run(ex, get, k, db)
            if raw is not None and loads(raw) is not None:
                hits += 1
        return hits

    async def get_json(self, keys: Sequence[bytes], concurrency: int) -> int:
        """Like get_concurrent; ``json.loads`` on the event loop."""
        return await fan_out(self._json_worker, keys, concurrency)

    async def scan(self, rounds: int) -> int:
        """One executor call materialising ``list(txn.cursor())``, then iterate it."""
        loop = asyncio.get_running_loop()
        seen = 0
        for _ in range(rounds):
            for _k, _v in await loop.run_in_executor(self.executor, self._scan):
                seen += 1
        return seen


# --------------------------------------------------------------------------- asyncio floor


def _resolve(batch: list[tuple[asyncio.Future[bytes], bytes]]) -> None:
    """Loop thread: resolve one batch's futures (one callback per batch, as aiolmdb does)."""
    for fut, value in batch:
        try:
            fut.set_result(value)
        except asyncio.InvalidStateError:
            pass  # cancelled meanwhile


class AsyncioFloorAdapter(Adapter):
    """No LMDB at all: aiolmdb's read hand-off alone, the cost of the loop and one thread.

    Each await creates a future and queues it; the first request of a burst submits one drain
    to a single worker thread, which takes every queued request and resolves the whole batch
    with one ``call_soon_threadsafe``: the protocol of aiolmdb's reads, minus the transaction,
    the get and the database layer. aiolmdb's ``get-concurrent`` cannot be faster than this on
    the same loop, so their ratio says how much of the floor aiolmdb reaches.
    """

    name = "asyncio-floor"
    description = "64 tasks awaiting futures that one worker thread resolves in batches; no LMDB"
    workloads = frozenset({"asyncio-floor"})
    uses_data = False

    loop: asyncio.AbstractEventLoop
    executor: ThreadPoolExecutor
    pending: collections.deque[tuple[asyncio.Future[bytes], bytes]]
    scheduled: bool

    async def open(self, path: Path, cfg: BenchConfig) -> None:
        """Start the worker thread (``path`` is not used: there is no database)."""
        self.loop = asyncio.get_running_loop()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="asyncio-floor")
        self.pending = collections.deque()
        self.scheduled = False

    async def close(self) -> None:
        """Stop the worker thread."""
        self.executor.shutdown(wait=True)

    def _request(self, key: bytes) -> asyncio.Future[bytes]:
        fut = self.loop.create_future()
        self.pending.append((fut, key))
        if not self.scheduled:
            self.scheduled = True
            self.executor.submit(self._drain)
        return fut

    def _drain(self) -> None:
        """Worker thread: answer every queued request, all in one ``call_soon_threadsafe``."""
        # Cleared before taking: a request queued after this either is taken here or
        # submits another drain, so none is stranded.
        self.scheduled = False
        batch: list[tuple[asyncio.Future[bytes], bytes]] = []
        take = self.pending.popleft
        try:
            while True:
                fut, key = take()
                if not fut.cancelled():
                    batch.append((fut, key))
        except IndexError:
            pass
        if batch:
            self.loop.call_soon_threadsafe(_resolve, batch)

    async def _worker(self, keys: Sequence[bytes]) -> int:
        answers = 0
        request = self._request
        for k in keys:
            if await request(k) is not None:
                answers += 1
        return answers

    async def asyncio_floor(self, keys: Sequence[bytes], concurrency: int) -> int:
        """Each task: ``await`` a future per key, resolved by the worker thread."""
        return await fan_out(self._worker, keys, concurrency)


# --------------------------------------------------------------------------- aiolmdb


def import_aiolmdb() -> tuple[ModuleType | None, str | None]:
    """Import this project's library; return ``(module, None)`` or ``(None, reason)``."""
    try:
        mod = importlib.import_module("aiolmdb")
    except Exception as exc:  # any import-time failure means "skip those rows"
        return None, f"{type(exc).__name__}: {exc}"
    missing = [n for n in ("open", "JSONCoder") if not hasattr(mod, n)]
    if missing:
        return None, f"module {mod.__name__!r} has no {', '.join(missing)} (not written yet?)"
    return mod, None


def supports_reads(module: ModuleType) -> bool:
    """Whether ``module.open`` takes ``reads="auto" | "inline" | "threaded"`` (issue 22)."""
    try:
        return "reads" in inspect.signature(module.open).parameters
    except (TypeError, ValueError):
        return False


def read_mode_options(module: ModuleType, reads: str | None) -> dict[str, Any]:
    """The ``aiolmdb.open`` keyword arguments selecting the read mode ``reads`` (None: the
    library's default, passed as nothing). An aiolmdb without ``reads=`` had only
    ``inline_reads=`` (threaded by default), which stands in for the two explicit modes."""
    if reads is None:
        return {}
    if supports_reads(module):
        return {"reads": reads}
    return {"inline_reads": reads == "inline"}


class AiolmdbAdapter(Adapter):
    """This project in its default read mode (``auto`` since issue 22: inline while the data
    is resident, on reader threads otherwise), group-committed writes."""

    name = "aiolmdb"
    description = (
        "aiolmdb.open(path), default read mode; await db.get(k) / db.put(k, v) / get_multi / "
        "put_multi"
    )
    workloads = ALL_WORKLOADS | {TICKER_WORKLOAD}
    full_runs = frozenset({TICKER_WORKLOAD})
    #: The ``reads=`` mode this row opens with; None: the default (passed as nothing).
    reads: ClassVar[str | None] = None

    def __init__(self, module: ModuleType) -> None:
        self.mod = module
        self.env: Any = None
        self.db: Any = None
        self.jdb: Any = None
        self.pdb: Any = None
        self.pmdb: Any = None

    async def open(self, path: Path, cfg: BenchConfig) -> None:
        """``aiolmdb.open(...)`` on the copy; default db, JSON db (JSONCoder), put dbs."""
        self.env = await maybe_await(
            self.mod.open(
                str(path),
                map_size=cfg.map_size,
                max_dbs=MAX_DBS,
                **read_mode_options(self.mod, self.reads),
            )
        )
        self.db = await maybe_await(self.env.get_default_database())
        self.jdb = await maybe_await(self.env.open_db(JSON_DB, value_coder=self.mod.JSONCoder()))
        self.pdb = await maybe_await(self.env.open_db(PUT_DB))
        self.pmdb = await maybe_await(self.env.open_db(PUT_MULTI_DB))
        if self.reads in (None, "auto"):
            await self._settle()

    async def _settle(self) -> None:
        """Hot data: give ``reads="auto"`` up to 5 s to find the data resident and read
        inline, as it would in a service that has been running; without this the calibration
        runs while a fresh environment still reads on threads (its first residency check
        comes with its first operation). The cold workload measures that way in."""
        metrics = getattr(self.env, "metrics", None)
        if metrics is None or not hasattr(metrics(), "read_mode"):
            return
        await self.db.get(b"\0")
        for _ in range(500):  # polled: the mode has no event to wait on; 5 s at most
            if metrics().read_mode == "inline":
                break
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """``await env.close()``."""
        if self.env is not None:
            await maybe_await(self.env.close())
            self.env = None

    def unsupported(self, workload: str) -> str | None:
        """Scans need range iteration (``db.items()``), which may not exist yet."""
        reason = super().unsupported(workload)
        if reason is None and workload.startswith("scan") and not hasattr(self.db, "items"):
            return "db.items() not available in this aiolmdb"
        return reason

    async def _get_worker(self, keys: Sequence[bytes]) -> int:
        hits = 0
        get = self.db.get
        for k in keys:
            if await get(k) is not None:
                hits += 1
        return hits

    async def get_concurrent(self, keys: Sequence[bytes], concurrency: int) -> int:
        """Each task: ``await db.get(k)``."""
        return await fan_out(self._get_worker, keys, concurrency)

    async def get_sequential(self, keys: Sequence[bytes]) -> int:
        """``await db.get(k)`` in turn."""
        return await self._get_worker(keys)

    async def get_sequential_ticker(self, keys: Sequence[bytes]) -> int:
        """``for k in keys: await db.get(k)`` (no explicit yield) beside a 1 ms :class:`Ticker`.

        Besides the ticker's figures, records what the read mode did during the run (from
        ``env.metrics()``, where this aiolmdb has them): ``switches`` and ``read_faults``
        during it, and ``inline_at_end`` (1 or 0)."""
        before = self.env.metrics()
        async with Ticker() as ticker:
            hits = await self._get_worker(keys)
        after = self.env.metrics()
        self.run_figures = ticker.figures()
        for name, field in (("switches", "read_mode_switches"), ("read_faults", "read_faults")):
            if hasattr(after, field):
                self.run_figures[name] = float(getattr(after, field) - getattr(before, field))
        if hasattr(after, "read_mode"):
            self.run_figures["inline_at_end"] = float(after.read_mode == "inline")
        return hits

    async def _put_worker(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        put = self.pdb.put
        for k, v in items:
            await put(k, v)
        return len(items)

    async def put_concurrent(self, items: Sequence[tuple[bytes, bytes]], concurrency: int) -> int:
        """Each task: ``await db.put(k, v)`` (returns after the durable group commit)."""
        return await fan_out(self._put_worker, items, concurrency)

    async def get_multi(self, batches: Sequence[Sequence[bytes]]) -> int:
        """``await db.get_multi(keys)`` per batch."""
        hits = 0
        for batch in batches:
            found = await self.db.get_multi(batch)
            hits += len(found) - list(found.values()).count(None)
        return hits

    async def put_multi(self, batches: Sequence[Sequence[tuple[bytes, bytes]]]) -> int:
        """``await db.put_multi(items)`` per batch."""
        for batch in batches:
            await self.pmdb.put_multi(batch)
        return sum(len(b) for b in batches)

    async def _json_worker(self, keys: Sequence[bytes]) -> int:
        hits = 0
        get = self.jdb.get
        for k in keys:
            if await get(k) is not None:
                hits += 1
        return hits

    async def get_json(self, keys: Sequence[bytes], concurrency: int) -> int:
        """Each task: ``await jdb.get(k)``; JSONCoder decodes on the worker threads."""
        return await fan_out(self._json_worker, keys, concurrency)

    async def scan(self, rounds: int) -> int:
        """``async for k, v in db.items()``."""
        seen = 0
        for _ in range(rounds):
            async for _k, _v in self.db.items():
                seen += 1
        return seen

    async def scan_batches(self, rounds: int, batch_size: int) -> int:
        """``async for batch in db.items().batches(batch_size)``."""
        seen = 0
        for _ in range(rounds):
            async for batch in self.db.items().batches(batch_size):
                seen += len(batch)
        return seen


class AiolmdbInlineAdapter(AiolmdbAdapter):
    """This project opened with ``reads="inline"`` (``inline_reads=True``; read workloads
    only)."""

    name = "aiolmdb-inline"
    description = 'aiolmdb.open(path, reads="inline"); read workloads only'
    workloads = READ_WORKLOADS | {TICKER_WORKLOAD}
    reads = "inline"


class AiolmdbThreadedAdapter(AiolmdbAdapter):
    """This project opened with ``reads="threaded"``: every read batch on a reader thread,
    the default before issue 22 (read workloads only)."""

    name = "aiolmdb-threaded"
    description = 'aiolmdb.open(path, reads="threaded"); read workloads only'
    workloads = READ_WORKLOADS | {TICKER_WORKLOAD}
    # ~5k gets/s: its runs are calibrated to the run length like any other.
    full_runs = frozenset()
    reads = "threaded"


# --------------------------------------------------------------------------- coders


@dataclass(frozen=True)
class DocCoder:
    """One row of a document workload: how aiolmdb stores and decodes the documents."""

    name: str
    workload: str
    description: str
    #: The value coder, made from the aiolmdb module (ImportError with the pip line if its
    #: package is missing).
    make: Callable[[ModuleType], Any]
    #: Values are the documents as ``document_type()`` Structs (else plain dicts).
    typed: bool = False
    #: ``"stdlib"``: JSONCoder reads with the standard library even with orjson installed;
    #: ``"orjson"``: the row needs orjson.
    json_reader: str | None = None
    #: Compress with a zstd dictionary trained on the stored documents (the guide's recipe).
    train_zstd_dict: bool = False


def _json(mod: ModuleType) -> Any:
    return mod.JSONCoder()


DOC_CODERS: tuple[DocCoder, ...] = (
    DocCoder(
        "json-stdlib",
        "get-docs",
        "JSONCoder() read by the standard library (as without the `fast` extra)",
        _json,
        json_reader="stdlib",
    ),
    DocCoder(
        "json-orjson",
        "get-docs",
        "JSONCoder() read by orjson (the `fast` extra)",
        _json,
        json_reader="orjson",
    ),
    DocCoder("msgpack", "get-docs", "MsgpackCoder(): dicts and lists", lambda m: m.MsgpackCoder()),
    DocCoder(
        "msgspec",
        "get-docs",
        "MsgspecCoder(Document): MessagePack decoded into msgspec Structs",
        lambda m: m.MsgspecCoder(document_type()),
        typed=True,
    ),
    DocCoder("json", "get-docs-codecs", "JSONCoder(), uncompressed", _json),
    DocCoder(
        "json+zlib",
        "get-docs-codecs",
        "JSONCoder().compressed() (zlib level 1)",
        lambda m: m.JSONCoder().compressed(),
    ),
    DocCoder(
        "json+zstd",
        "get-docs-codecs",
        'JSONCoder().compressed(codec="zstd") (level 3)',
        lambda m: m.JSONCoder().compressed(codec="zstd"),
    ),
    DocCoder(
        "json+zstd-dict",
        "get-docs-codecs",
        "zstd level 3 with a dictionary trained by train_zstd_dict on the documents",
        lambda m: m.JSONCoder().compressed(codec="zstd"),
        train_zstd_dict=True,
    ),
    DocCoder(
        "json+lz4",
        "get-docs-codecs",
        'JSONCoder().compressed(codec="lz4") (level 0)',
        lambda m: m.JSONCoder().compressed(codec="lz4"),
    ),
)


#: JSONCoder's reader, a global of the module that defines it: ``orjson.loads``, or None (the
#: standard library).
ORJSON_HOOK = "_ORJSON_LOADS"


def json_hooks(module: ModuleType) -> dict[str, Any]:
    """The namespace JSONCoder reads its orjson hook from: the globals of the module defining
    it, wherever a version of aiolmdb keeps it (``aiolmdb.coders`` up to 0.2)."""
    hooks: dict[str, Any] = module.JSONCoder.deserialize.__globals__
    return hooks


@contextlib.contextmanager
def stdlib_json(hooks: dict[str, Any]) -> Iterator[None]:
    """While active, every JSONCoder of the process reads with the standard library.

    JSONCoder has no switch of its own (its results are the same either way; only the speed
    differs), so this clears its orjson hook (see :func:`json_hooks`), as its tests do. The
    harness runs one implementation at a time, so no other row reads JSON meanwhile.
    """
    saved = hooks[ORJSON_HOOK]
    hooks[ORJSON_HOOK] = None
    try:
        yield
    finally:
        hooks[ORJSON_HOOK] = saved


class DocsAdapter(Adapter):
    """aiolmdb with one :class:`DocCoder`: a fresh environment holding only the documents,
    stored at open by that coder (so each row stores its own bytes), read by 64 tasks."""

    spec: ClassVar[DocCoder]
    uses_data = False

    def __init__(self, module: ModuleType) -> None:
        self.mod = module
        self.env: Any = None
        self.db: Any = None

    async def open(self, path: Path, cfg: BenchConfig) -> None:
        """Open an environment at ``path``, store the documents, measure what they take."""
        spec = self.spec
        hooks = json_hooks(self.mod)
        if spec.json_reader is not None and ORJSON_HOOK not in hooks:
            raise RuntimeError(f"JSONCoder's module has no {ORJSON_HOOK} to choose the JSON reader")
        if spec.json_reader == "orjson" and hooks[ORJSON_HOOK] is None:
            raise ImportError(
                "JSONCoder reads with orjson once installed: pip install 'aiolmdb[fast]'"
            )
        coder = spec.make(self.mod)
        docs: Sequence[Any] = documents(cfg)
        if spec.typed:
            import msgspec

            docs = [msgspec.convert(d, document_type()) for d in docs]
        items = {make_key(i, cfg.key_size): d for i, d in enumerate(docs)}
        self.env = await maybe_await(self.mod.open(str(path), map_size=cfg.map_size, max_dbs=2))
        if spec.train_zstd_dict:
            # Trained on a copy of the documents in a database of its own, so that the
            # documents' database holds only what the dictionary compressed.
            plain = await maybe_await(self.env.open_db(TRAIN_DB, value_coder=self.mod.JSONCoder()))
            await plain.put_multi(items)
            zstd_dict = await self.mod.train_zstd_dict(plain)
            coder = self.mod.JSONCoder().compressed(codec="zstd", zstd_dict=zstd_dict)
        self.db = await maybe_await(self.env.open_db(DOCS_DB, value_coder=coder))
        await self.db.put_multi(items)
        raw = await maybe_await(self.env.open_db(DOCS_DB))
        value_bytes = 0
        async for value in raw.values():
            value_bytes += len(value)
        info = await self.env.database_info(DOCS_DB)
        st = info.stat
        pages = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        self.stored = {
            "values": info.entries,
            "value_bytes": value_bytes,
            "db_bytes": pages * st["psize"],
        }

    async def close(self) -> None:
        """``await env.close()``."""
        if self.env is not None:
            await maybe_await(self.env.close())
            self.env = None

    async def _worker(self, keys: Sequence[bytes]) -> int:
        hits = 0
        get = self.db.get
        for k in keys:
            if await get(k) is not None:
                hits += 1
        return hits

    async def get_docs(self, keys: Sequence[bytes], concurrency: int) -> int:
        """Each task: ``await db.get(k)``; the coder decodes on aiolmdb's worker threads."""
        if self.spec.json_reader == "stdlib":
            with stdlib_json(json_hooks(self.mod)):
                return await fan_out(self._worker, keys, concurrency)
        return await fan_out(self._worker, keys, concurrency)


def docs_adapter(module: ModuleType, spec: DocCoder) -> DocsAdapter:
    """The :class:`DocsAdapter` of ``spec`` (a subclass named after its row)."""
    attrs = {
        "name": spec.name,
        "description": spec.description,
        "workloads": frozenset({spec.workload}),
        "spec": spec,
    }
    cls = cast("type[DocsAdapter]", type(f"DocsAdapter[{spec.name}]", (DocsAdapter,), attrs))
    return cls(module)


class AiolmdbVersionedAdapter(AiolmdbAdapter):
    """This project, durable puts into a versioned database (``put-versioned`` only)."""

    name = "aiolmdb-versioned"
    description = "aiolmdb: await vdb.put(k, v) into open_db(name, versioned=True)"
    workloads = frozenset({"put-versioned"})

    def __init__(self, module: ModuleType) -> None:
        super().__init__(module)
        self.vdb: Any = None

    def unsupported(self, workload: str) -> str | None:
        """Versioned databases may not exist in this aiolmdb."""
        reason = super().unsupported(workload)
        if reason is None and not hasattr(self.mod, "Entry"):
            return "versioned databases not available in this aiolmdb"
        return reason

    async def open(self, path: Path, cfg: BenchConfig) -> None:
        """As aiolmdb's, plus the versioned database."""
        await super().open(path, cfg)
        if hasattr(self.mod, "Entry"):
            self.vdb = await self.env.open_db(VERSIONED_DB, versioned=True)

    async def _vput_worker(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        put = self.vdb.put
        for k, v in items:
            await put(k, v)
        return len(items)

    async def put_versioned(self, items: Sequence[tuple[bytes, bytes]], concurrency: int) -> int:
        """Each task: ``await vdb.put(k, v)`` (a new version per put)."""
        return await fan_out(self._vput_worker, items, concurrency)


class AiolmdbIfVersionAdapter(AiolmdbVersionedAdapter):
    """This project, conditional writes into a versioned database: each task reads the
    versions of its keys once (one ``get_multi_entries``), then puts each key only if its
    version is unchanged (``put-versioned`` only)."""

    name = "aiolmdb-if-version"
    description = (
        "aiolmdb: vdb.get_multi_entries(task's keys) once, then await vdb.put(k, v, "
        "if_version=...) per key"
    )

    async def open(self, path: Path, cfg: BenchConfig) -> None:
        """As aiolmdb-versioned's, with every key of the data stored first (untimed), so the
        timed puts are conditional ones rather than first inserts."""
        await super().open(path, cfg)
        if self.vdb is not None:
            async for batch in self.db.items().batches(10_000):
                await self.vdb.put_multi(batch)

    async def _vput_worker(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        put = self.vdb.put
        # One read per task: the timed cost is that of the conditional puts. A key written
        # by another task meanwhile (or twice here) fails its condition: counted all the same.
        known = await self.vdb.get_multi_entries([k for k, _ in items])
        for k, v in items:
            entry = known[k]
            if entry is None:
                await put(k, v, overwrite=False)
            else:
                await put(k, v, if_version=entry.version)
        return len(items)


class AiolmdbChangelogAdapter(AiolmdbAdapter):
    """This project with its change log on: durable puts, each recorded in the log in the
    same write transaction (``put-changelog`` only)."""

    name = "aiolmdb-changelog"
    description = "aiolmdb.open(path, changelog=True); await db.put(k, v)"
    workloads = frozenset({"put-changelog"})

    def unsupported(self, workload: str) -> str | None:
        """The change log may not exist in this aiolmdb."""
        reason = super().unsupported(workload)
        if reason is None and not hasattr(self.mod, "Change"):
            return "changelog=True not available in this aiolmdb"
        return reason

    async def open(self, path: Path, cfg: BenchConfig) -> None:
        """``aiolmdb.open(..., changelog=True)`` and the put database."""
        changelog = {"changelog": True} if hasattr(self.mod, "Change") else {}
        self.env = await maybe_await(
            self.mod.open(str(path), map_size=cfg.map_size, max_dbs=MAX_DBS, **changelog)
        )
        self.db = await maybe_await(self.env.get_default_database())
        self.pdb = await maybe_await(self.env.open_db(PUT_DB))


def build_adapters(aiolmdb_module: ModuleType | None, *, lmdb_js: bool = True) -> list[Adapter]:
    """All implementations, in report order (aiolmdb rows only if the module imported;
    lmdb-js unless ``lmdb_js`` is false: it runs in node, installed on first use)."""
    adapters: list[Adapter] = [
        SyncAdapter(),
        SyncBatchedAdapter(),
        LmdbAioAdapter(),
        NaiveAdapter(),
    ]
    if lmdb_js:
        from .lmdbjs import LmdbJsAdapter  # it subclasses Adapter, defined here

        adapters.append(LmdbJsAdapter())
    adapters.append(AsyncioFloorAdapter())
    if aiolmdb_module is not None:
        adapters += [
            AiolmdbAdapter(aiolmdb_module),
            AiolmdbInlineAdapter(aiolmdb_module),
            AiolmdbThreadedAdapter(aiolmdb_module),
            AiolmdbVersionedAdapter(aiolmdb_module),
            AiolmdbIfVersionAdapter(aiolmdb_module),
            AiolmdbChangelogAdapter(aiolmdb_module),
        ]
        adapters += [docs_adapter(aiolmdb_module, spec) for spec in DOC_CODERS]
    return adapters


#: Every implementation name, in report order (including ones that may be skipped).
IMPL_ORDER: tuple[str, ...] = (
    "sync",
    "sync-batch",
    "lmdb.aio",
    "naive",
    "lmdb-js",
    "asyncio-floor",
    "aiolmdb",
    "aiolmdb-inline",
    "aiolmdb-threaded",
    "aiolmdb-versioned",
    "aiolmdb-if-version",
    "aiolmdb-changelog",
    *(spec.name for spec in DOC_CODERS),
)
#: The rows of the document workloads (aiolmdb with each coder), in report order.
DOC_IMPLS: tuple[str, ...] = tuple(spec.name for spec in DOC_CODERS)
PEERS: tuple[str, ...] = ("sync", "sync-batch", "lmdb.aio", "naive", "lmdb-js", "asyncio-floor")
OURS: tuple[str, ...] = ("aiolmdb", "aiolmdb-inline", "aiolmdb-threaded")
