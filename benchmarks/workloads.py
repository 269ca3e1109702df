"""Workload, target and run-configuration definitions for the benchmark suite."""

from __future__ import annotations

from dataclasses import dataclass

#: Number of concurrent tasks used by the ``*-concurrent`` and ``get-json`` workloads.
CONCURRENCY = 64
#: Batch size of one ``get_multi`` / ``put_multi`` call.
MULTI_BATCH = 20_000
#: Batch size used by the ``scan-batches`` workload.
SCAN_BATCH = 1_000
#: Gets in one run of ``get-sequential-ticker`` (at most; issue 22 asks for 300k in a chain).
TICKER_GETS = 300_000


@dataclass(frozen=True)
class Workload:
    """One benchmark workload.

    ``granularity`` is the unit the operation count is rounded to: ``concurrency``
    (multiples of the task count), ``one``, ``multi`` (whole 20k-key calls) or
    ``dataset`` (whole scans).  ``max_ops`` caps one timed run and ``probe_ops`` sizes
    the calibration run; 0 means "10 units" and "1 unit" respectively.
    ``peer_workload`` names what the peers, which have no form of this workload, run in
    its rotation instead (``scan-batches``: their scan); the ratios pair those runs.
    ``ours_workload`` does the same for aiolmdb's rows (``asyncio-floor``: its gets).
    ``reference`` marks a document workload: one row per coder (or codec) of aiolmdb, each
    reported with its stored size and compared, pair by pair, with the ``reference`` row.
    ``seconds_scale`` lengthens its runs (``get-sequential-ticker``: long chains of gets).
    """

    name: str
    alias: str
    description: str
    granularity: str  # "concurrency" | "one" | "multi" | "dataset"
    max_ops: int
    probe_ops: int
    write: bool = False
    peer_workload: str | None = None
    ours_workload: str | None = None
    reference: str | None = None
    #: A run lasts ``seconds_scale`` times the configured run length (``target_seconds``).
    seconds_scale: float = 1.0

    @property
    def baseline(self) -> str:
        """What the peers run when this workload is measured."""
        return self.peer_workload or self.name


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "get-concurrent",
        "W1",
        f"{CONCURRENCY} tasks doing random awaited gets",
        "concurrency",
        max_ops=100_000,
        probe_ops=CONCURRENCY * 16,
    ),
    Workload(
        "get-sequential",
        "W2",
        "one task doing random awaited gets, one after another",
        "one",
        max_ops=100_000,
        probe_ops=500,
    ),
    Workload(
        "put-concurrent",
        "W3",
        f"{CONCURRENCY} tasks doing durable (sync=True) single puts",
        "concurrency",
        max_ops=20_000,
        probe_ops=CONCURRENCY * 2,
        write=True,
    ),
    Workload(
        "get-multi",
        "W4",
        f"get_multi of {MULTI_BATCH:,} random keys per call",
        "multi",
        max_ops=0,  # 10 calls (fewer with --quick); the probe is one call
        probe_ops=0,
    ),
    Workload(
        "put-multi",
        "W5",
        f"put_multi of {MULTI_BATCH:,} items per call (one durable commit)",
        "multi",
        max_ops=0,  # 10 calls (fewer with --quick); the probe is one call
        probe_ops=0,
        write=True,
    ),
    Workload(
        "get-json",
        "W6",
        f"{CONCURRENCY} tasks doing random gets of JSON values, decoded",
        "concurrency",
        max_ops=100_000,
        probe_ops=CONCURRENCY * 16,
    ),
    Workload(
        "scan",
        "W7",
        "iterate over every item of the main database (async for k, v)",
        "dataset",
        max_ops=0,  # 10 full scans (fewer with --quick); the probe is one scan
        probe_ops=0,
    ),
    Workload(
        "scan-batches",
        "W8",
        f"iterate over every item in batches of {SCAN_BATCH} (ratios vs sync scan)",
        "dataset",
        max_ops=0,
        probe_ops=0,
        peer_workload="scan",
    ),
    Workload(
        "asyncio-floor",
        "W9",
        f"{CONCURRENCY} tasks awaiting futures one thread resolves in batches, no LMDB "
        "(aiolmdb runs get-concurrent in its rotation)",
        "concurrency",
        max_ops=100_000,
        probe_ops=CONCURRENCY * 16,
        ours_workload="get-concurrent",
    ),
    Workload(
        "get-docs",
        "W10",
        f"{CONCURRENCY} tasks doing random gets of ~1 KB documents, decoded by each coder",
        "concurrency",
        max_ops=50_000,
        probe_ops=CONCURRENCY * 8,
        reference="json-stdlib",
    ),
    Workload(
        "get-docs-codecs",
        "W11",
        f"{CONCURRENCY} tasks doing random gets of the documents stored by JSONCoder with each "
        "compression codec",
        "concurrency",
        max_ops=50_000,
        probe_ops=CONCURRENCY * 8,
        reference="json",
    ),
    Workload(
        "put-versioned",
        "W12",
        f"{CONCURRENCY} tasks doing durable puts into a versioned database: plain puts, and "
        "get_entry + put(if_version) (aiolmdb's put-concurrent runs in its rotation)",
        "concurrency",
        max_ops=20_000,
        probe_ops=CONCURRENCY * 2,
        write=True,
        ours_workload="put-concurrent",
    ),
    Workload(
        "put-changelog",
        "W13",
        f"{CONCURRENCY} tasks doing durable puts into an environment opened with "
        "changelog=True (aiolmdb's put-concurrent, without the log, runs in its rotation)",
        "concurrency",
        max_ops=20_000,
        probe_ops=CONCURRENCY * 2,
        write=True,
        ours_workload="put-concurrent",
    ),
    Workload(
        "get-sequential-ticker",
        "W14",
        f"one task awaiting up to {TICKER_GETS:,} random gets in a plain loop (no explicit "
        "yield) beside a task sleeping 1 ms at a time: gets/s and the sleeper's longest gap",
        "one",
        max_ops=TICKER_GETS,
        probe_ops=2_000,
        # The modes that read on the loop always do all 300k gets in one chain (their
        # adapters' ``full_runs``); the threaded mode's runs last about 1 s.
        seconds_scale=4.0,
    ),
)

WORKLOAD_BY_NAME: dict[str, Workload] = {w.name: w for w in WORKLOADS}


def resolve_workloads(spec: str | None) -> list[Workload]:
    """Turn an ``--only`` value (names or W1..W14 aliases, comma separated) into workloads.

    Raises ``ValueError`` naming the unknown entries.
    """
    if not spec:
        return list(WORKLOADS)
    wanted: set[str] = set()
    unknown: list[str] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        matches = [
            w.name for w in WORKLOADS if item in (w.name, w.alias) or item.upper() == w.alias
        ]
        if not matches:
            unknown.append(item)
        wanted.update(matches)
    if unknown:
        choices = ", ".join(f"{w.alias}={w.name}" for w in WORKLOADS)
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; choose from {choices}")
    return [w for w in WORKLOADS if w.name in wanted]


@dataclass(frozen=True)
class Target:
    """A performance floor: median(impl / peer) on ``workload`` must be >= ``floor``.

    ``enforced=False`` makes it an aim: reported like a target, never failing ``--check``.
    ``peer_workload`` / ``impl_workload`` say what the peer / impl ran in ``workload``'s
    rotation when that is another workload (for the label).
    With ``metric`` (a figure the runs of ``impl`` record, e.g. ``max_gap_ms``) it is a
    ceiling instead: the median of that figure over the runs must be <= ``floor``, and
    ``peer`` is unused.
    """

    workload: str
    impl: str
    peer: str
    floor: float
    peer_workload: str | None = None
    impl_workload: str | None = None
    enforced: bool = True
    metric: str | None = None

    @property
    def label(self) -> str:
        """Human-readable description, e.g. ``get-concurrent: aiolmdb >= 15x lmdb.aio``."""
        if self.metric is not None:
            name, _, unit = self.metric.rpartition("_")
            return f"{self.workload}: {self.impl} {name} <= {self.floor:g} {unit}"
        peer = self.peer if self.peer_workload is None else f"{self.peer} {self.peer_workload}"
        return f"{self.impl_workload or self.workload}: {self.impl} >= {self.floor:g}x {peer}"


TARGETS: tuple[Target, ...] = (
    Target("get-concurrent", "aiolmdb", "lmdb.aio", 15.0),
    Target("get-concurrent", "aiolmdb", "naive", 5.0),
    Target("get-concurrent", "aiolmdb", "sync", 0.1),
    # Issue 22: the default (auto) read mode keeps nearly all of inline reads' speed on hot
    # data, and lets the loop run about every millisecond even inside a chain of gets.
    Target("get-concurrent", "aiolmdb", "aiolmdb-inline", 0.9),
    Target("get-sequential-ticker", "aiolmdb", "aiolmdb-threaded", 2.0),
    Target("get-sequential-ticker", "aiolmdb", "", 5.0, metric="max_gap_ms"),
    Target("get-sequential", "aiolmdb", "lmdb.aio", 1.5),
    Target("get-sequential", "aiolmdb-inline", "lmdb.aio", 30.0),
    Target("put-concurrent", "aiolmdb", "lmdb.aio", 40.0),
    Target("put-concurrent", "aiolmdb", "naive", 15.0),
    Target("get-multi", "aiolmdb", "sync", 0.6),
    Target("scan", "aiolmdb", "sync", 0.3),
    Target("scan-batches", "aiolmdb", "sync", 0.6, peer_workload="scan"),
)

#: Reported by every run like the targets, but not (yet) promised: ``--check`` ignores them.
AIMS: tuple[Target, ...] = (
    # The threaded path's hand-off (the default mode reads inline when the data is hot).
    Target(
        "asyncio-floor",
        "aiolmdb-threaded",
        "asyncio-floor",
        0.8,
        impl_workload="get-concurrent",
        enforced=False,
    ),
    Target("get-docs", "msgspec", "json-stdlib", 1.5, enforced=False),
    # lmdb-js (Node.js), 64 concurrent `await db.get(k)`, when node is installed.
    Target("get-concurrent", "aiolmdb", "lmdb-js", 0.8, enforced=False),
    Target(
        "put-versioned",
        "aiolmdb-versioned",
        "aiolmdb",
        0.8,
        peer_workload="put-concurrent",
        enforced=False,
    ),
    Target(
        "put-versioned",
        "aiolmdb-if-version",
        "aiolmdb",
        0.8,
        peer_workload="put-concurrent",
        enforced=False,
    ),
    Target(
        "put-changelog",
        "aiolmdb-changelog",
        "aiolmdb",
        0.8,
        peer_workload="put-concurrent",
        enforced=False,
    ),
)


@dataclass(frozen=True)
class BenchConfig:
    """Everything that shapes one benchmark run."""

    n_keys: int = 50_000
    #: Documents of the ``get-docs*`` workloads (one per key, the first ``n_docs`` keys).
    n_docs: int = 10_000
    key_size: int = 16
    value_size: int = 100
    map_size: int = 1 << 30
    repeat: int = 9
    #: Wall-clock seconds one measurement should take (op counts are calibrated to it).
    target_seconds: float = 0.25
    #: Cap on the op count of one measurement, as a fraction of each workload's max_ops.
    ops_scale: float = 1.0
    seed: int = 20240601
    quick: bool = False
