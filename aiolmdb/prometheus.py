"""Export :meth:`Environment.metrics` to Prometheus (the ``prometheus`` extra).

``REGISTRY.register(EnvironmentCollector(env))`` makes every scrape read ``env.metrics()``
afresh: counters as ``aiolmdb_..._total``, the histograms as Prometheus histograms, the
gauges as gauges, each labelled with the environment's ``path``. Taking the snapshot never
waits, so it is safe from the scraping thread of ``prometheus_client.start_http_server``.
"""

from __future__ import annotations

from collections.abc import Iterator

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:
    raise ImportError(
        "aiolmdb.prometheus needs the 'prometheus_client' package: "
        "pip install 'aiolmdb[prometheus]' (or: pip install prometheus_client)"
    ) from exc

import lmdb

from ._engine.metrics import Histogram
from .environment import Environment
from .errors import ClosedError

__all__ = ["EnvironmentCollector"]

# (field of Metrics, help text): counters, then gauges.
_COUNTERS = (
    ("reads", "Read operations run in batches on reader threads."),
    ("read_batches", "Read transactions that ran a batch of reads on a reader thread."),
    ("inline_read_transactions", "Read transactions begun for inline reads."),
    ("writes", "Write operations run in group commits."),
    ("write_batches", "Group commits run."),
    ("commits", "Write transactions committed."),
    ("write_transactions", "Interactive write transactions ended."),
    ("conflicts", "Conditional writes whose condition failed."),
    ("map_resizes", "Map resizes by this process."),
    ("readers_full_waits", "Waits for a free slot in LMDB's reader table."),
)
_GAUGES = (
    ("map_size", "The map size, in bytes."),
    ("read_transactions", "Short read transactions of this process open."),
    ("reader_slots_used", "Slots of LMDB's reader table in use, by any process."),
    ("max_readers", "The size of LMDB's reader table."),
    ("write_queue", "Writes submitted and not yet taken by the writer thread."),
    ("read_queue", "Batched reads submitted and not yet taken by a reader thread."),
    ("open_write_transactions", "Interactive write transactions not yet ended."),
)
# Replication's gauges (Metrics.replication: only those a Publisher or Replica reports).
_REPLICATION = {
    "published_seq": "The last change sequence of the log stored in the stream (a leader).",
    "leader_seq": "The last change sequence of the leader's log seen by its publisher.",
    "applied_seq": "The leader's last change sequence applied here (a replica).",
    "stream_leader_seq": "The last change sequence the stream holds, as a replica saw it.",
    "lag_changes": "Changes not yet published (a leader) or not yet applied (a replica).",
    "lag_seconds": "Seconds since the last applied commit was made, while a replica lags.",
}
_HISTOGRAMS = (
    ("write_batch_sizes", "write_batch_size", "Operations per group commit."),
    ("read_batch_sizes", "read_batch_size", "Operations per batched read transaction."),
    ("commit_seconds", "commit_seconds", "Time of one group commit, in seconds."),
)


class EnvironmentCollector(Collector):
    """A prometheus_client collector of one environment's :meth:`Environment.metrics`."""

    def __init__(self, env: Environment, *, prefix: str = "aiolmdb") -> None:
        self._env = env
        self._prefix = prefix

    def collect(self) -> Iterator[Metric]:
        """The environment's metrics now (nothing once it is closed)."""
        try:
            m = self._env.metrics()
        except (ClosedError, lmdb.Error):
            return  # closed (or closing under the scrape): nothing to report
        labels = ["path"]
        value = [self._env.path]
        for field, doc in _COUNTERS:
            counter = CounterMetricFamily(f"{self._prefix}_{field}", doc, labels=labels)
            counter.add_metric(value, getattr(m, field))
            yield counter
        for field, doc in _GAUGES:
            gauge = GaugeMetricFamily(f"{self._prefix}_{field}", doc, labels=labels)
            gauge.add_metric(value, getattr(m, field))
            yield gauge
        for field, number in m.replication.items():
            gauge = GaugeMetricFamily(
                f"{self._prefix}_replication_{field}",
                _REPLICATION.get(field, "Replication."),
                labels=labels,
            )
            gauge.add_metric(value, number)
            yield gauge
        for field, name, doc in _HISTOGRAMS:
            hist: Histogram = getattr(m, field)
            family = HistogramMetricFamily(f"{self._prefix}_{name}", doc, labels=labels)
            family.add_metric(value, _cumulative(hist), hist.sum)
            yield family


def _cumulative(hist: Histogram) -> list[tuple[str, float]]:
    """Prometheus buckets: cumulative counts per upper bound, ending with +Inf."""
    buckets: list[tuple[str, float]] = []
    seen = 0
    for bound, n in zip(hist.bounds, hist.counts, strict=False):
        seen += n
        buckets.append((repr(bound), seen))
    buckets.append(("+Inf", hist.count))
    return buckets
