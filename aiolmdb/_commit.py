"""Group commit: how the writer thread turns a batch of writes into one write transaction.

Each operation runs in a nested transaction of one write transaction (so a failing operation
rolls back alone; operations in ``_ops.ATOMIC`` change one thing and fail before changing it,
so they skip the nesting), then the batch commits once. With ``writemap=True`` LMDB has no
nested transactions: a failing operation makes the batch run again without it.

Map growth: ``MapFullError`` makes a batch unusable. The batch is aborted, the map grown
(:meth:`Committer.grow_map` doubles it, through the gate's resize, which waits until no read
transaction of this process is open and holds new ones back) and the batch runs again. With
map growth off, or at ``max_map_size``, the batch is committed one operation at a time so that
exactly the ones that do not fit fail.

Runs on the writer thread only. It touches the ``lmdb.Environment`` (write transactions,
info, stat) and resizes the map through the callable it was given; it returns results and
delivers nothing itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import lmdb

from ._changelog import Recorder
from ._config import EngineConfig
from ._delivery import Request, Result, as_settable
from ._metrics import (
    BATCH_SIZE_BOUNDS,
    COMMIT_SECONDS_BOUNDS,
    Buckets,
    conflicts_on_this_thread,
    set_conflicts_on_this_thread,
)
from ._ops import ATOMIC

__all__ = ["Committer"]


log = logging.getLogger("aiolmdb")


class Committer:
    """Runs write batches for the writer thread of one environment."""

    def __init__(
        self,
        env: lmdb.Environment,
        config: EngineConfig,
        resize: Callable[[int], None],
        recorder: Recorder,
    ) -> None:
        self._env = env
        self._recorder = recorder
        self._writemap = bool(env.flags().get("writemap"))
        self._map_growth = config.map_growth
        self._max_map_size = config.max_map_size
        self._resize = resize
        # Metrics (see _metrics), updated by the writer thread only.
        self.batches = 0
        self.writes = 0
        self.commits = 0
        self.conflicts = 0
        self.batch_sizes = Buckets(BATCH_SIZE_BOUNDS)
        self.commit_seconds = Buckets(COMMIT_SECONDS_BOUNDS)

    def run_batch(self, batch: list[Request]) -> list[Result]:
        """Run a batch of writes in one write transaction (growing the map if it fills);
        the results of those not cancelled before it began, to be posted to the loop."""
        live = [req for req in batch if not req[0].cancelled()]
        if not live:
            return []
        self.batches += 1
        self.writes += len(live)
        self.batch_sizes.observe(len(live))
        conflicts = conflicts_on_this_thread()
        started = time.perf_counter()
        try:
            return self._run_live(live, conflicts)
        finally:
            self.commit_seconds.observe(time.perf_counter() - started)
            self.conflicts = conflicts_on_this_thread()

    def note_conflicts(self) -> None:
        """Writer thread: take the conflicts counted outside batches (write transactions)."""
        self.conflicts = conflicts_on_this_thread()

    def _run_live(self, live: list[Request], conflicts: int) -> list[Result]:
        results: list[Result] = []
        while live:
            set_conflicts_on_this_thread(conflicts)  # a batch run again counts them once
            try:
                try:
                    results = self._commit(live)
                except lmdb.MapFullError:
                    if self.grow_map():
                        continue
                    set_conflicts_on_this_thread(conflicts)
                    results = self._commit_one_by_one(live)
                except lmdb.MapResizedError:
                    self._resize(0)  # another process grew the map: adopt its size
                    continue
            except BaseException as exc:
                # begin/commit (or growing the map) failed: nothing in the batch landed. The
                # writer thread itself must survive, or every later write would hang.
                results = [(fut, False, as_settable(exc)) for fut, _, _ in live]
            break
        return results

    def _commit(self, live: list[Request]) -> list[Result]:
        """One write transaction for the whole batch; each operation isolated in a child.

        Transactions are opened with buffers=False: values arrive as bytes, so neither coders
        nor ``txn.raw`` users can hold a view into the map past its validity.
        """
        if self._writemap:
            return self._commit_replaying(live)
        # Transactions that record their changes when the change log or on_commit is on.
        begin = self._recorder.begin if self._recorder.recording else self._env.begin
        results: list[Result] = []
        # Through the recorder always: without the log, it checks that none appeared since.
        txn = self._recorder.begin(write=True)
        try:
            for fut, fn, args in live:
                if fn in ATOMIC:
                    # One LMDB change that fails, if at all, before changing anything: no
                    # child transaction needed.
                    try:
                        results.append((fut, True, fn(txn, *args)))
                    except lmdb.MapFullError:
                        raise
                    except BaseException as exc:
                        results.append((fut, False, as_settable(exc)))
                    continue
                child = begin(write=True, parent=txn)
                try:
                    value = fn(child, *args)
                except lmdb.MapFullError:
                    child.abort()
                    raise
                except BaseException as exc:
                    child.abort()
                    results.append((fut, False, as_settable(exc)))
                else:
                    child.commit()
                    results.append((fut, True, value))
            txn.commit()
            self.commits += 1
        except BaseException:
            txn.abort()
            raise
        return results

    def _commit_replaying(self, live: list[Request]) -> list[Result]:
        """writemap=True forbids nested transactions: run the batch plainly and, when an
        operation fails, abort and run the batch again without it (operations are functions of
        the transaction alone, so running them again is safe)."""
        failed: list[Result] = []
        conflicts = conflicts_on_this_thread()
        while True:
            set_conflicts_on_this_thread(conflicts)  # the operations run again count once
            results: list[Result] = []
            rerun = False
            txn = self._recorder.begin(write=True)
            try:
                for fut, fn, args in live:
                    before = conflicts_on_this_thread()
                    try:
                        results.append((fut, True, fn(txn, *args)))
                    except lmdb.MapFullError:
                        raise
                    except BaseException as exc:
                        failed.append((fut, False, as_settable(exc)))
                        if fn in ATOMIC:
                            continue  # it changed nothing: the transaction is intact
                        # It is not run again: its conflict (if any) stays counted.
                        conflicts += conflicts_on_this_thread() - before
                        rerun = True
                        break
                if not rerun:
                    txn.commit()
                    self.commits += 1
                    return failed + results
            except BaseException:
                txn.abort()
                raise
            txn.abort()
            gone = {id(fut) for fut, _, _ in failed}
            live = [req for req in live if id(req[0]) not in gone]

    def _commit_one_by_one(self, live: list[Request]) -> list[Result]:
        """Map full and growth is off: commit each operation alone so that exactly the ones
        that do not fit fail with MapFullError and everything that fits lands."""
        results: list[Result] = []
        for req in live:
            try:
                results.extend(self._commit([req]))
            except lmdb.MapFullError as exc:
                results.append((req[0], False, as_settable(self.map_full_error(exc))))
            except BaseException as exc:
                results.append((req[0], False, as_settable(exc)))
        return results

    def map_full_error(self, exc: lmdb.MapFullError) -> lmdb.MapFullError:
        """LMDB's MapFullError says to raise ``map_size``, which aiolmdb may have outgrown
        already: say what happens next (the map grows, or which of aiolmdb's settings stopped
        the growth) and the size reached."""
        size = self._env.info()["map_size"]
        if not self._map_growth:
            advice = (
                f"the map is full at {size} bytes and map_growth=False: open the environment "
                "with a larger map_size=, or with map_growth=True"
            )
        elif self._max_map_size is not None and size >= self._max_map_size:
            advice = (
                f"the map reached max_map_size={self._max_map_size} ({size} bytes) and cannot "
                "grow further: open the environment with a larger max_map_size="
            )
        else:
            # Only a write transaction held across awaits gets here: it is rolled back, and
            # the map grows once it has ended.
            advice = (
                f"the write transaction filled the map ({size} bytes) and was rolled back; "
                "the map grows when it ends: run the transaction again"
            )
        err = lmdb.MapFullError(f"{advice} (LMDB: {exc})")
        err.__cause__ = exc
        return err

    def grow_map(self) -> bool:
        """Double the map size (up to max_map_size); False if growth is off or capped."""
        if not self._map_growth:
            return False
        size = self._env.info()["map_size"]
        limit = self._max_map_size
        if limit is not None and size >= limit:
            return False
        new = size * 2
        page = self._env.stat()["psize"]
        new = -(-new // page) * page
        if limit is not None:
            new = min(new, limit)
        self._resize(new)
        log.info("map grown from %d to %d bytes (%s)", size, new, self._env.path())
        return True
