"""aiolmdb.prometheus: Environment.metrics() as a prometheus_client collector."""

from __future__ import annotations

import importlib
import sys

import pytest
from conftest import OpenEnv, gather_bounded, threaded_only


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.setitem(sys.modules, "prometheus_client.core", None)
    monkeypatch.delitem(sys.modules, "aiolmdb.prometheus", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'aiolmdb\[prometheus\]'"):
        importlib.import_module("aiolmdb.prometheus")
    monkeypatch.delitem(sys.modules, "aiolmdb.prometheus", raising=False)


@threaded_only
async def test_collector_exports_metrics(open_env: OpenEnv) -> None:
    pytest.importorskip("prometheus_client", reason="the prometheus extra is not installed")
    from prometheus_client import CollectorRegistry, generate_latest

    from aiolmdb.prometheus import EnvironmentCollector

    env = open_env()
    db = env.get_default_database()
    await gather_bounded(*(db.put(b"k%d" % i, b"v") for i in range(10)))
    await db.get(b"k1")
    registry = CollectorRegistry()
    registry.register(EnvironmentCollector(env))
    m = env.metrics()
    label = {"path": env.path}
    assert registry.get_sample_value("aiolmdb_writes_total", label) == m.writes == 10
    assert registry.get_sample_value("aiolmdb_reads_total", label) == 1
    assert registry.get_sample_value("aiolmdb_map_size", label) == m.map_size
    count = registry.get_sample_value("aiolmdb_write_batch_size_count", label)
    assert count == m.write_batch_sizes.count
    top = registry.get_sample_value("aiolmdb_write_batch_size_bucket", {**label, "le": "+Inf"})
    assert top == count
    # Cumulative: the bucket of 16 holds every batch of at most 16 writes (all of them).
    assert (
        registry.get_sample_value("aiolmdb_write_batch_size_bucket", {**label, "le": "16.0"})
        == count
    )
    assert registry.get_sample_value("aiolmdb_write_batch_size_sum", label) == 10
    text = generate_latest(registry).decode()
    assert "# HELP aiolmdb_commit_seconds Time of one group commit" in text
    await env.close()
    assert registry.get_sample_value("aiolmdb_writes_total", label) is None  # closed: none
