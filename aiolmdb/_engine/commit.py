"""Group commit: how the writer thread turns a batch of writes into one write transaction.

Each operation runs in a nested transaction of one write transaction (so a failing operation
rolls back alone; an operation whose request says it is atomic changes one thing and fails
before changing it, so it skips the nesting), then the batch commits once. With
``writemap=True`` LMDB has no nested transactions: a failing operation makes the batch run
again without it.

The batch runs through the write runner (``txnrunner``), which begins the transaction (and,
through it, the children), adopts a map another process grew, and grows a full map and runs the
batch again.

When the batch fails as a whole (its transaction cannot begin or commit, the map is full and
cannot grow, the runner raises), nothing in it landed, and no operation is failed for it yet:
the batch is run again one operation at a time, each in its own write transaction through the
same runner (one policy for every such failure). An operation that succeeds alone succeeds
(with a full map: exactly the ones that do not fit fail); one that fails in its own code gets
its error as in a batch; one whose own transaction fails again gets its own copy of that
failure (``delivery.own_error``): a fresh instance of the same class, with the same message
and attributes, whose ``__cause__`` is the failure itself (an ``aiolmdb.Error`` wrapping it
when the class cannot be made so). So ``except lmdb.Error`` and the like still match, and no
caller's traceback gathers another caller's frames, as one object raised in every task would.
A batch that commits pays nothing for this.

Conflicts (failed conditions of conditional writes) come back with the results: a
:class:`~aiolmdb._engine.delivery.Counted` result, or a ``ConflictError`` raised. They are counted
from the results of the attempt that committed, so a batch run again counts each once.

Runs on the writer thread only; it returns results and delivers nothing itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lmdb

from ..errors import ConflictError
from .delivery import Counted, Result, WriteRequest, as_settable, own_error
from .metrics import BATCH_SIZE_BOUNDS, COMMIT_SECONDS_BOUNDS, Buckets
from .txnrunner import BeginChild, RunAgain, WriteRunner

__all__ = ["Committer"]

# The results of one run of a batch, and the conflicts they met.
_Ran = tuple[list[Result], int]
_BatchWork = Callable[[Any, BeginChild], _Ran]


class Committer:
    """Runs write batches for the writer thread of one environment."""

    def __init__(self, env: lmdb.Environment, runner: WriteRunner) -> None:
        self._runner = runner
        self._writemap = bool(env.flags().get("writemap"))
        # Metrics (see _metrics), updated by the writer thread only.
        self.batches = 0
        self.writes = 0
        self.commits = 0
        self.conflicts = 0
        self.batch_sizes = Buckets(BATCH_SIZE_BOUNDS)
        self.commit_seconds = Buckets(COMMIT_SECONDS_BOUNDS)

    def run_batch(self, batch: list[WriteRequest]) -> list[Result]:
        """Run a batch of writes in one write transaction (growing the map if it fills);
        the results of those not cancelled before it began, to be posted to the loop."""
        live = [req for req in batch if not req[0].cancelled()]
        if not live:
            return []
        self.batches += 1
        self.writes += len(live)
        self.batch_sizes.observe(len(live))
        started = time.perf_counter()
        try:
            results, conflicts = self._run_live(live)
        finally:
            self.commit_seconds.observe(time.perf_counter() - started)
        self.conflicts += conflicts
        return results

    def _run_live(self, live: list[WriteRequest]) -> _Ran:
        try:
            ran = self._runner.run(self._replaying(live) if self._writemap else self._nested(live))
        except BaseException:
            # The transaction failed as a whole (begin, commit, a full map that cannot grow,
            # the runner itself): nothing in it landed. Outside this handler, so the runs
            # alone do not chain their errors to this one implicitly.
            pass
        else:
            self.commits += 1
            return ran
        return self._one_by_one(live)

    def _work(self, live: list[WriteRequest]) -> _BatchWork:
        """The work of a batch (as run_batch builds it inline)."""
        return self._replaying(live) if self._writemap else self._nested(live)

    @staticmethod
    def _nested(live: list[WriteRequest]) -> _BatchWork:
        """The batch's work: each operation in a child transaction unless atomic.

        Transactions are opened with buffers=False: values arrive as bytes, so neither coders
        nor ``txn.raw`` users can hold a view into the map past its validity.
        """

        def work(txn: Any, begin_child: BeginChild) -> _Ran:
            results: list[Result] = []
            conflicts = 0
            for fut, fn, args, atomic in live:
                if atomic:
                    try:
                        value = fn(txn, *args)
                    except lmdb.MapFullError:
                        raise
                    except BaseException as exc:
                        conflicts += isinstance(exc, ConflictError)
                        results.append((fut, False, as_settable(exc)))
                        continue
                else:
                    child = begin_child()
                    try:
                        value = fn(child, *args)
                    except lmdb.MapFullError:
                        child.abort()
                        raise
                    except BaseException as exc:
                        child.abort()
                        conflicts += isinstance(exc, ConflictError)
                        results.append((fut, False, as_settable(exc)))
                        continue
                    child.commit()
                if type(value) is Counted:
                    conflicts += value.conflicts
                    value = value.value
                results.append((fut, True, value))
            return results, conflicts

        return work

    @staticmethod
    def _replaying(live: list[WriteRequest]) -> _BatchWork:
        """The batch's work under writemap=True, which forbids nested transactions: run the
        operations plainly and, when one that is not atomic fails, run the batch again
        without it (operations are functions of the transaction alone)."""
        failed: list[Result] = []
        failed_conflicts = 0

        def work(txn: Any, begin_child: BeginChild) -> _Ran:
            nonlocal live, failed_conflicts
            if failed:  # an operation that failed once is not run again
                gone = {id(fut) for fut, _, _ in failed}
                live = [req for req in live if id(req[0]) not in gone]
            results: list[Result] = []
            conflicts = 0
            for fut, fn, args, atomic in live:
                try:
                    value = fn(txn, *args)
                except lmdb.MapFullError:
                    raise
                except BaseException as exc:
                    failed.append((fut, False, as_settable(exc)))
                    failed_conflicts += isinstance(exc, ConflictError)
                    if atomic:
                        continue  # it changed nothing: the transaction is intact
                    raise RunAgain from None
                if type(value) is Counted:
                    conflicts += value.conflicts
                    value = value.value
                results.append((fut, True, value))
            return failed + results, conflicts + failed_conflicts

        return work

    def _one_by_one(self, live: list[WriteRequest]) -> _Ran:
        """The batch failed as a whole: run each operation again alone, in its own write
        transaction through the same runner, so that those that succeed alone succeed (a
        full map: everything that fits lands) and each that fails gets its own error. A
        transaction that fails again reaches its caller as its own copy (``own_error``)."""
        results: list[Result] = []
        conflicts = 0
        run = self._runner.run
        for req in live:
            try:
                ran, counted = run(self._work([req]))
                self.commits += 1
            except BaseException as exc:
                results.append((req[0], False, own_error(exc)))
            else:
                results += ran
                conflicts += counted
        return results, conflicts
