"""The benchmark suite's harness (benchmarks/): workload aliases, interleaved measurement,
paired ratios, and one small end-to-end run against the real peers.

These tests check that the harness measures what it says; they assert nothing about speed.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from benchmarks import main
from benchmarks.adapters import Adapter
from benchmarks.dataset import DataSet
from benchmarks.runner import measure_workload
from benchmarks.workloads import WORKLOAD_BY_NAME, WORKLOADS, BenchConfig, resolve_workloads


def test_workload_aliases_are_unique_and_resolve() -> None:
    aliases = [w.alias for w in WORKLOADS]
    assert len(set(aliases)) == len(aliases)
    assert [w.name for w in resolve_workloads("W8")] == ["scan-batches"]
    assert [w.name for w in resolve_workloads("w1, put-concurrent")] == [
        "get-concurrent",
        "put-concurrent",
    ]
    with pytest.raises(ValueError, match=r"unknown workload.*W9.*choose from"):
        resolve_workloads("W1,W9")


class FakeAdapter(Adapter):
    """Records when it runs; optionally fails on its n-th run."""

    workloads: ClassVar[frozenset[str]] = frozenset({"get-sequential"})
    uses_loop: ClassVar[bool] = False

    def __init__(self, log: list[str], fail_on: int | None = None) -> None:
        self.log = log
        self.fail_on = fail_on
        self.runs = 0

    async def get_sequential(self, keys: Sequence[bytes]) -> int:
        self.runs += 1
        if self.runs == self.fail_on:
            raise RuntimeError("broken on purpose")
        self.log.append(self.name)
        return len(keys)


def fake(name: str, log: list[str], fail_on: int | None = None) -> Adapter:
    cls = type(f"Fake_{name}", (FakeAdapter,), {"name": name})
    adapter: Adapter = cls(log, fail_on)
    return adapter


def tiny_data() -> DataSet:
    keys = [b"k%03d" % i for i in range(50)]
    return DataSet(keys=keys, values=[b"v"] * 50, json_values=[b"{}"] * 50)


async def test_repeats_are_interleaved_in_a_rotating_order() -> None:
    log: list[str] = []
    adapters = [fake(n, log) for n in ("a", "b", "c")]
    cfg = replace(BenchConfig(), repeat=4, target_seconds=0.0)
    cells = await measure_workload(
        adapters, WORKLOAD_BY_NAME["get-sequential"], tiny_data(), cfg, "asyncio", log=print
    )
    # The first three entries are the calibration probes, one per adapter.
    assert log[:3] == ["a", "b", "c"]
    rounds = [log[3 + 3 * i : 6 + 3 * i] for i in range(4)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert [(c.impl, len(c.samples), c.skipped) for c in cells] == [
        ("a", 4, None),
        ("b", 4, None),
        ("c", 4, None),
    ]


async def test_a_failing_implementation_is_reported_and_the_rest_go_on() -> None:
    log: list[str] = []
    adapters = [fake("ok", log), fake("bad", log, fail_on=3)]
    cfg = replace(BenchConfig(), repeat=3, target_seconds=0.0)
    cells = await measure_workload(
        adapters, WORKLOAD_BY_NAME["get-sequential"], tiny_data(), cfg, "asyncio", log=print
    )
    ok, bad = cells
    assert len(ok.samples) == 3
    assert ok.skipped is None
    assert bad.samples == []
    assert bad.skipped == "error: RuntimeError: broken on purpose"
    # Workloads an adapter does not list are left out, not reported as skipped.
    none = await measure_workload(
        adapters, WORKLOAD_BY_NAME["scan"], tiny_data(), cfg, "asyncio", log=print
    )
    assert none == []


def test_quick_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "r.json"
    code = main(
        [
            "--quick",
            "--no-uvloop",
            "--repeat",
            "2",
            "--only",
            "W1,W3,W8",
            "--json",
            str(out_json),
            "--png",
            str(tmp_path / "r.png"),
            "--tmpdir",
            str(tmp_path),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "== event loop: asyncio ==" in printed
    assert "== targets (median of per-repeat ratios) ==" in printed
    report: dict[str, Any] = json.loads(out_json.read_text())
    assert report["loops"] == ["asyncio"]
    # W8 alone: its peers are opened and run their scan in its rotation.
    assert report["workloads"] == ["get-concurrent", "put-concurrent", "scan-batches"]
    measured = {(r["impl"], r["workload"]): r for r in report["results"]}
    expected = {
        "get-concurrent": {"sync", "lmdb.aio", "naive", "aiolmdb", "aiolmdb-inline"},
        "put-concurrent": {"sync", "sync-batch", "lmdb.aio", "naive", "aiolmdb"},
        # The peers have no batch form: they run their scan, in the same rotation.
        "scan-batches": {"sync", "lmdb.aio", "naive", "aiolmdb", "aiolmdb-inline"},
    }
    for workload, impls in expected.items():
        got = {impl for impl, w in measured if w == workload}
        assert got == impls, workload
        for impl in impls:
            cell = measured[(impl, workload)]
            assert cell["skipped"] is None, (impl, workload, cell["skipped"])
            assert len(cell["ops_per_sec"]) == 2
            assert all(x > 0 for x in cell["ops_per_sec"])
            assert cell["loop"] == "asyncio"
    # A ratio is the median of the per-repeat ratios of paired runs; scan-batches pairs our
    # batch runs with the sync scans of the same rotation.
    for workload, peer in (("put-concurrent", "naive"), ("scan-batches", "sync")):
        ours = measured[("aiolmdb", workload)]["ops_per_sec"]
        theirs = measured[(peer, workload)]["ops_per_sec"]
        ratio = next(
            r["median_ratio"]
            for r in report["ratios"]
            if (r["impl"], r["workload"], r["peer"]) == ("aiolmdb", workload, peer)
        )
        pairs = zip(ours, theirs, strict=True)
        assert ratio == pytest.approx(statistics.median(a / b for a, b in pairs), rel=1e-2)
    statuses = {t["target"]: t["status"] for t in report["targets"]}
    assert len(statuses) == 6  # get-concurrent x3, put-concurrent x2, scan-batches
    assert set(statuses.values()) <= {"PASS", "FAIL"}


def test_scan_batches_alone_measures_its_peers(tmp_path: Path) -> None:
    """``--only W8`` opens the peers too: they run their scan in W8's rotation."""
    out_json = tmp_path / "r.json"
    argv = ["--quick", "--no-uvloop", "--repeat", "1", "--only", "W8", "--json", str(out_json)]
    code = main([*argv, "--png", str(tmp_path / "r.png"), "--tmpdir", str(tmp_path)])
    assert code == 0
    report: dict[str, Any] = json.loads(out_json.read_text())
    assert report["workloads"] == ["scan-batches"]
    cells = {r["impl"]: r for r in report["results"]}
    for impl in ("sync", "lmdb.aio", "naive", "aiolmdb"):
        assert cells[impl]["skipped"] is None, impl
        assert len(cells[impl]["ops_per_sec"]) == 1, impl
    assert [t["status"] for t in report["targets"]] in (["PASS"], ["FAIL"])
