"""What the engine counts, and the snapshot ``Environment.metrics()`` returns.

Every counter and histogram has exactly one thread that updates it, so none takes a lock: the
loop thread counts inline reads and the writes it hands over; the writer thread counts write
batches, commits, their sizes and latencies, conflicts and interactive write transactions; each
reader thread has its own :class:`ReaderCounts` (read batches and their sizes), summed when a
snapshot is taken. Counting is per batch wherever a batch exists (a read drain, a group
commit), so the per-operation paths pay nothing.

A snapshot reads those counters from the loop thread without stopping the threads that update
them: each number is exact, but two numbers may be a batch apart.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Final

__all__ = [
    "BATCH_SIZE_BOUNDS",
    "COMMIT_SECONDS_BOUNDS",
    "Buckets",
    "Histogram",
    "Metrics",
    "ReaderCounts",
]

# Upper bounds of the buckets (the last bucket, above them, is open).
BATCH_SIZE_BOUNDS: Final = tuple(float(1 << i) for i in range(11))  # 1 .. 1024
COMMIT_SECONDS_BOUNDS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class Buckets:
    """A histogram being filled, by one thread only: fixed bucket bounds, counts and a sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self, *others: Buckets) -> Histogram:
        """The counts so far (added to those of ``others``, same bounds), as a Histogram."""
        counts = list(self.counts)
        total = self.total
        for other in others:
            counts = [a + b for a, b in zip(counts, other.counts, strict=True)]
            total += other.total
        return Histogram(self.bounds, tuple(counts), sum(counts), total)


@dataclasses.dataclass(frozen=True)
class Histogram:
    """A distribution in fixed buckets, as Prometheus histograms keep them."""

    bounds: tuple[float, ...]
    """The buckets' upper bounds (inclusive), in increasing order."""
    counts: tuple[int, ...]
    """Observations per bucket (not cumulative): ``counts[i]`` is the number of values ``v``
    with ``bounds[i-1] < v <= bounds[i]``; the last one, ``len(bounds)``, counts those above
    every bound."""
    count: int
    """The number of observations."""
    sum: float
    """The sum of the observed values."""

    def quantile(self, q: float) -> float:
        """An upper estimate of the ``q`` quantile (0 <= q <= 1): the upper bound of the bucket
        it falls in (``inf`` in the last bucket; 0.0 when nothing was observed)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be between 0 and 1, got {q!r}")
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            seen += n
            if seen >= rank and seen:
                return bound
        return float("inf")

    @property
    def mean(self) -> float:
        """The mean of the observed values (0.0 when nothing was observed)."""
        return self.sum / self.count if self.count else 0.0


@dataclasses.dataclass(frozen=True)
class Metrics:
    """What an environment's engine has done since it was opened, and its state now
    (:meth:`Environment.metrics`). Counters only grow; gauges are values of the moment."""

    reads: int
    """Read operations taken by a batch on a reader thread. Inline reads
    (``inline_reads=True``) are not among them: they cost too little to count one by one."""
    read_batches: int
    """Read transactions that ran a batch of reads on a reader thread."""
    inline_read_transactions: int
    """Read transactions begun on the loop thread for inline reads (each serves every inline
    read of one loop iteration)."""
    writes: int
    """Write operations run in group commits (the cancelled ones skipped are not counted)."""
    write_batches: int
    """Group commits run (a batch whose commit failed counts too)."""
    commits: int
    """Write transactions committed: group commits (several when a batch was split, e.g.
    one per write when the map is full) and interactive write transactions."""
    write_transactions: int
    """Interactive write transactions (``env.begin(write=True)``) that ended."""
    conflicts: int
    """Conditional writes (``if_version=``, ``if_value=``, ``raise_on_conflict=True``) whose
    condition failed: they returned False or raised ConflictError."""
    map_resizes: int
    """Map resizes by this process: growth, and adopting a size another process set."""
    readers_full_waits: int
    """Times reads found LMDB's reader table full and had to wait for a slot."""
    write_batch_sizes: Histogram
    """Operations per group commit."""
    read_batch_sizes: Histogram
    """Operations per batched read transaction."""
    commit_seconds: Histogram
    """Time of one group commit: its write transaction from begin to the end of its commit
    (the operations, and the fsync unless ``sync=False``)."""
    map_size: int
    """The map size now, in bytes."""
    read_transactions: int
    """Short read transactions of this process open now (read batches, an inline read
    transaction, blocking and streaming jobs); snapshots held across awaits are not among
    them, but take a reader slot."""
    reader_slots_used: int
    """Slots of LMDB's reader table holding a read transaction now, by any process."""
    max_readers: int
    """The size of LMDB's reader table (``max_readers``)."""
    write_queue: int
    """Writes submitted and not yet taken by the writer thread."""
    read_queue: int
    """Batched reads submitted and not yet taken by a reader thread."""
    open_write_transactions: int
    """Interactive write transactions begun or waiting to begin, not yet ended."""
    replication: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Replication's gauges (``aiolmdb.replication``), empty unless a Publisher or Replica
    works on the environment: ``published_seq``, ``leader_seq``, ``lag_changes`` (a
    publisher), ``applied_seq``, ``stream_leader_seq``, ``lag_changes``, ``lag_seconds`` (a
    replica)."""


class ReaderCounts:
    """One reader thread's counts (only that thread updates them)."""

    __slots__ = ("batches", "reads", "sizes")

    def __init__(self) -> None:
        self.batches = 0
        self.reads = 0
        self.sizes = Buckets(BATCH_SIZE_BOUNDS)
