"""The benchmark suite's harness (benchmarks/): workload aliases, interleaved measurement,
paired ratios, target and aim verdicts, the asyncio floor, the chart, and small end-to-end runs
against the real peers.

These tests check that the harness measures what it says; they assert nothing about speed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest

import aiolmdb
from aiolmdb._codecs import builtin
from benchmarks import main
from benchmarks.adapters import (
    DOC_CODERS,
    DOC_IMPLS,
    OURS,
    Adapter,
    AsyncioFloorAdapter,
    DocsAdapter,
    docs_adapter,
    read_mode_options,
)
from benchmarks.cold import EVICTED_AT_MOST, bucket_rates, evict, resident_share
from benchmarks.dataset import DataSet, make_key
from benchmarks.documents import document_type, documents
from benchmarks.lmdbjs import Unavailable, cache_dir, ensure_installed, installed_version
from benchmarks.report import Report, evaluate_targets, fmt_ratio, target_lines, write_png
from benchmarks.runner import Cell, measure_workload
from benchmarks.ticker import Ticker, percentile
from benchmarks.workloads import (
    AIMS,
    TARGETS,
    WORKLOAD_BY_NAME,
    WORKLOADS,
    BenchConfig,
    resolve_workloads,
)

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def test_workload_aliases_are_unique_and_resolve() -> None:
    aliases = [w.alias for w in WORKLOADS]
    assert len(set(aliases)) == len(aliases)
    assert [w.name for w in resolve_workloads("W8")] == ["scan-batches"]
    assert [w.name for w in resolve_workloads("w9")] == ["asyncio-floor"]
    assert [w.name for w in resolve_workloads("asyncio-floor")] == ["asyncio-floor"]
    assert [w.name for w in resolve_workloads("w1, put-concurrent")] == [
        "get-concurrent",
        "put-concurrent",
    ]
    assert [w.name for w in resolve_workloads("W10,w11")] == ["get-docs", "get-docs-codecs"]
    assert [w.name for w in resolve_workloads("W12")] == ["put-versioned"]
    assert [w.name for w in resolve_workloads("w14")] == ["get-sequential-ticker"]
    with pytest.raises(ValueError, match=r"unknown workload.*W15.*choose from"):
        resolve_workloads("W1,W15")


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


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def samples(report: dict[str, Any], loop: str, impl: str, workload: str) -> list[float]:
    """The ops/s samples of one cell of a JSON report."""
    (cell,) = [
        r
        for r in report["results"]
        if (r["loop"], r["impl"], r["workload"]) == (loop, impl, workload)
    ]
    found: list[float] = cell["ops_per_sec"]
    return found


def figures(report: dict[str, Any], loop: str, impl: str, workload: str) -> dict[str, list[float]]:
    """The figures (by name, one value per run) of one cell of a JSON report."""
    (cell,) = [
        r
        for r in report["results"]
        if (r["loop"], r["impl"], r["workload"]) == (loop, impl, workload)
    ]
    found: dict[str, list[float]] = cell["figures"]
    return found


def paired_ratio(report: dict[str, Any], loop: str, impl: str, peer: str, workload: str) -> float:
    """The median of run i of ``impl`` over run i of ``peer``, from the report's samples."""
    ours = samples(report, loop, impl, workload)
    theirs = samples(report, loop, peer, workload)
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


def assert_verdicts(report: dict[str, Any]) -> None:
    """Every target's and aim's ratio is its paired median, and its verdict follows from it."""
    for kind, words in (("targets", ("PASS", "FAIL")), ("aims", ("MET", "BELOW"))):
        for t in report[kind]:
            if t["status"] == "SKIP":
                assert t["median_ratio"] is None, t
                continue
            if t["metric"] is not None:  # a ceiling on the median of a figure of the runs
                value = statistics.median(
                    figures(report, t["loop"], t["impl"], t["workload"])[t["metric"]]
                )
                assert t["median_ratio"] == pytest.approx(value, rel=1e-4, abs=6e-4), t
                assert t["status"] == (words[0] if value <= t["floor"] else words[1]), t
                continue
            ratio = paired_ratio(report, t["loop"], t["impl"], t["peer"], t["workload"])
            # median_ratio has 3 decimals; the samples 6 significant digits.
            assert t["median_ratio"] == pytest.approx(ratio, rel=1e-4, abs=6e-4), t
            assert t["status"] == (words[0] if ratio >= t["floor"] else words[1]), t


def test_quick_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "r.json"
    code = main(
        [
            "--quick",
            "--no-uvloop",
            "--no-lmdb-js",
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
        "get-concurrent": {"sync", "lmdb.aio", "naive", *OURS},
        "put-concurrent": {"sync", "sync-batch", "lmdb.aio", "naive", "aiolmdb"},
        # The peers have no batch form: they run their scan, in the same rotation.
        "scan-batches": {"sync", "lmdb.aio", "naive", *OURS},
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
    # get-concurrent x4 (the last: default >= 0.9x inline), put-concurrent x2, scan-batches;
    # no aim (W9 did not run, lmdb-js was left out: its aim is skipped).
    assert len(report["targets"]) == 7
    assert [a["status"] for a in report["aims"]] == ["SKIP"]
    assert_verdicts(report)
    if HAS_MATPLOTLIB:
        assert f"wrote {tmp_path / 'r.png'}" in printed
        assert (tmp_path / "r.png").read_bytes().startswith(PNG_MAGIC)
    else:
        assert "matplotlib not importable" in printed
        assert "PNG skipped" in printed
        assert not (tmp_path / "r.png").exists()


def test_scan_batches_alone_measures_its_peers(tmp_path: Path) -> None:
    """``--only W8`` opens the peers too: they run their scan in W8's rotation."""
    out_json = tmp_path / "r.json"
    argv = [
        "--quick",
        "--no-uvloop",
        "--no-lmdb-js",
        "--repeat",
        "1",
        "--only",
        "W8",
        "--json",
        str(out_json),
    ]
    code = main([*argv, "--png", str(tmp_path / "r.png"), "--tmpdir", str(tmp_path)])
    assert code == 0
    report: dict[str, Any] = json.loads(out_json.read_text())
    assert report["workloads"] == ["scan-batches"]
    cells = {r["impl"]: r for r in report["results"]}
    for impl in ("sync", "lmdb.aio", "naive", "aiolmdb"):
        assert cells[impl]["skipped"] is None, impl
        assert len(cells[impl]["ops_per_sec"]) == 1, impl
    assert [t["target"] for t in report["targets"]] == ["scan-batches: aiolmdb >= 0.6x sync scan"]
    assert_verdicts(report)


def test_asyncio_floor_alone_pairs_it_with_aiolmdbs_gets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--only W9``: the floor and aiolmdb's get-concurrent runs share one rotation, and the
    ratio (and the aim's verdict) is the median of those pairs. No LMDB peer takes part, and
    --check ignores an aim that is not met."""
    out_json = tmp_path / "r.json"
    argv = ["--quick", "--no-uvloop", "--no-lmdb-js", "--repeat", "3", "--only", "W9", "--check"]
    argv += ["--json", str(out_json)]
    code = main([*argv, "--png", str(tmp_path / "r.png"), "--tmpdir", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    report: dict[str, Any] = json.loads(out_json.read_text())
    assert report["workloads"] == ["asyncio-floor"]
    cells = {r["impl"]: r for r in report["results"]}
    assert set(cells) == {"asyncio-floor", *OURS}
    for impl, cell in cells.items():
        assert cell["skipped"] is None, impl
        assert len(cell["ops_per_sec"]) == 3, impl
        assert all(x > 0 for x in cell["ops_per_sec"]), impl
    ratio = next(
        r
        for r in report["ratios"]
        if (r["impl"], r["peer"], r["workload"])
        == ("aiolmdb-threaded", "asyncio-floor", "asyncio-floor")
    )
    assert ratio["impl_workload"] == "get-concurrent"
    expected = paired_ratio(report, "asyncio", "aiolmdb-threaded", "asyncio-floor", "asyncio-floor")
    assert ratio["median_ratio"] == pytest.approx(expected, rel=1e-4, abs=6e-4)
    assert report["targets"] == []
    (aim,) = report["aims"]
    # The aim concerns the threaded hand-off (the default mode reads inline on hot data).
    assert aim["target"] == "get-concurrent: aiolmdb-threaded >= 0.8x asyncio-floor"
    assert aim["impl_workload"] == "get-concurrent"
    assert_verdicts(report)
    # The table row and the aim line.
    assert "aiolmdb [get-concurrent]" in printed
    floor_row = next(line for line in printed.splitlines() if line.startswith("asyncio-floor "))
    assert fmt_ratio(expected) in floor_row.split()
    aim_line = next(line for line in printed.splitlines() if "x asyncio-floor" in line)
    assert aim_line.split()[:2] == ["[asyncio]", aim["status"]]


def test_versioned_puts_pair_with_aiolmdbs_plain_puts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--only W12``: durable puts into a versioned database, plain and conditional, run in
    one rotation with aiolmdb's plain put-concurrent; the two aims pair those runs."""
    out_json = tmp_path / "r.json"
    argv = ["--quick", "--no-uvloop", "--no-lmdb-js", "--repeat", "3", "--only", "W12", "--check"]
    argv += ["--json", str(out_json), "--png", str(tmp_path / "r.png"), "--tmpdir", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report: dict[str, Any] = json.loads(out_json.read_text())
    assert report["workloads"] == ["put-versioned"]
    cells = {r["impl"]: r for r in report["results"]}
    assert set(cells) == {"aiolmdb", "aiolmdb-versioned", "aiolmdb-if-version"}
    for impl, cell in cells.items():
        assert cell["skipped"] is None, impl
        assert len(cell["ops_per_sec"]) == 3, impl
    aims = {a["impl"]: a for a in report["aims"]}
    assert set(aims) == {"aiolmdb-versioned", "aiolmdb-if-version"}
    assert all(a["peer"] == "aiolmdb" for a in aims.values())
    assert_verdicts(report)
    assert "aiolmdb [put-concurrent]" in printed


async def test_asyncio_floor_resolves_every_request_in_batches() -> None:
    """The floor answers each await with its key, handing results back a batch at a time."""
    floor = AsyncioFloorAdapter()
    await floor.open(Path("unused"), BenchConfig())
    batches: list[int] = []
    real_loop = floor.loop

    class CountingLoop:
        """The loop, with call_soon_threadsafe counting the batches it is handed."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real_loop, name)

        def call_soon_threadsafe(self, fn: Any, batch: list[Any]) -> Any:
            batches.append(len(batch))
            return real_loop.call_soon_threadsafe(fn, batch)

    floor.loop = CountingLoop()  # type: ignore[assignment]
    keys = [b"k%04d" % i for i in range(64 * 20)]
    try:
        assert await asyncio.wait_for(floor.asyncio_floor(keys, 64), 30) == len(keys)
    finally:
        await floor.close()
    assert sum(batches) == len(keys)
    assert max(batches) > 1  # 64 tasks waiting: their requests go over together


def fake_report(loops: list[str], ours: list[float], peer: list[float]) -> Report:
    """A report with aiolmdb's and naive's get-concurrent samples under each loop."""
    report = Report(meta={}, config={}, loops=loops, workloads=["get-concurrent"])
    for loop in loops:
        report.cells += [
            Cell("aiolmdb", "get-concurrent", loop, ops=64, samples=list(ours)),
            Cell("naive", "get-concurrent", loop, ops=64, samples=list(peer)),
        ]
    return report


def test_target_and_aim_verdicts_follow_the_paired_median() -> None:
    # Pairs 10/2, 30/3, 12/4: per-run ratios 5, 10, 3 -> median 5, which meets a 5x floor (the
    # ratio of the medians, 12/3 = 4, would not).
    report = fake_report(["asyncio"], [10.0, 30.0, 12.0], [2.0, 3.0, 4.0])
    (naive,) = [t for t in TARGETS if t.label == "get-concurrent: aiolmdb >= 5x naive"]
    (result,) = evaluate_targets(report, (naive,))
    assert (result.value, result.status) == (5.0, "PASS")
    # Per-run ratios 10, 14.3, 15 -> median 14.3, under a 15x floor.
    (aio,) = [t for t in TARGETS if t.label == "get-concurrent: aiolmdb >= 15x lmdb.aio"]
    report.cells.append(Cell("lmdb.aio", "get-concurrent", "asyncio", 64, [1.0, 2.1, 0.8]))
    (failed,) = evaluate_targets(report, (aio,))
    assert failed.value == pytest.approx(30 / 2.1)
    assert failed.status == "FAIL"

    # An aim is judged the same way, reported as MET / BELOW. Its workload not run: left out;
    # run without the floor's cell: SKIP, saying why.
    (aim,) = [a for a in AIMS if a.workload == "asyncio-floor"]
    assert evaluate_targets(report, (aim,)) == []
    report.workloads.append("asyncio-floor")
    report.cells.append(Cell("aiolmdb-threaded", "asyncio-floor", "asyncio", 64, [8.0, 9.0, 7.0]))
    (skipped,) = evaluate_targets(report, (aim,))
    assert skipped.status == "SKIP"
    assert skipped.reason == "asyncio-floor asyncio-floor: not measured"
    # Per-run ratios 0.8, 0.9, 0.7 -> 0.8: met; then 0.7, 0.79, 0.9 -> 0.79: below.
    report.cells.append(Cell("asyncio-floor", "asyncio-floor", "asyncio", 64, [10.0] * 3))
    (met,) = evaluate_targets(report, (aim,))
    assert (met.value, met.status) == (0.8, "MET")
    report.cells[-2].samples = [7.0, 7.9, 9.0]
    (below,) = evaluate_targets(report, (aim,))
    assert below.value == pytest.approx(0.79)
    assert below.status == "BELOW"

    # Targets, then the aims in a section of their own.
    lines = target_lines([result, failed, below])
    assert lines[0] == "== targets (median of per-repeat ratios) =="
    assert lines[1].split()[:2] == ["[asyncio]", "PASS"]
    assert lines[2].split()[:2] == ["[asyncio]", "FAIL"]
    assert lines[3] == "  1 PASS, 1 FAIL, 0 SKIP"
    assert lines[5] == "== aims (median of per-repeat ratios; --check ignores them) =="
    assert lines[6].split() == [
        "[asyncio]",
        "BELOW",
        "get-concurrent:",
        "aiolmdb-threaded",
        ">=",
        "0.8x",
        "asyncio-floor",
        "measured",
        "0.79x",
    ]
    assert lines[7] == "  0 MET, 1 BELOW, 0 SKIP"


def test_png_chart_is_a_png(tmp_path: Path) -> None:
    if not HAS_MATPLOTLIB:
        pytest.skip("matplotlib is not installed (pip install -e '.[bench]')")
    report = fake_report(["asyncio", "uvloop"], [10.0, 30.0, 12.0], [2.0, 3.0, 4.0])
    report.meta = {"python": "3", "py_lmdb": "3", "lmdb": "0.9", "cpu_count": 2, "date": "2026"}
    out = tmp_path / "chart" / "r.png"
    assert write_png(out, report) is None
    assert out.read_bytes().startswith(PNG_MAGIC)


# --------------------------------------------------------------------------- documents


def test_documents_are_deterministic_and_about_a_kilobyte() -> None:
    cfg = replace(BenchConfig(), n_docs=300)
    docs = documents(cfg)
    assert len(docs) == 300
    assert documents(replace(cfg, n_docs=300)) == docs
    assert documents(replace(cfg, seed=cfg.seed + 1)) != docs
    sizes = [len(aiolmdb.JSONCoder().serialize(d)) for d in docs]
    assert 850 <= min(sizes) <= max(sizes) <= 1100
    # Nested dicts and lists of str, int, float and bool, which the msgspec type describes.
    doc = docs[7]
    assert isinstance(doc["address"], dict)
    assert isinstance(doc["orders"], list)
    assert isinstance(doc["orders"][0]["price"], float)
    coder = aiolmdb.MsgspecCoder(document_type())
    typed = coder.deserialize(aiolmdb.MsgpackCoder().serialize(doc))
    assert typed.address.city == doc["address"]["city"]
    assert typed.orders[3].qty == doc["orders"][3]["qty"]


def test_document_workloads_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--only W10,W11``: a row per coder and per codec, each with what it stored; ratios to
    the reference rows and the msgspec aim are medians of paired runs; compression shrinks
    the stored documents, a trained zstd dictionary most."""
    out_json = tmp_path / "r.json"
    argv = ["--quick", "--no-uvloop", "--no-lmdb-js", "--repeat", "3", "--only", "W10,W11"]
    argv += ["--json", str(out_json), "--png", str(tmp_path / "r.png"), "--tmpdir", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report: dict[str, Any] = json.loads(out_json.read_text())
    assert report["workloads"] == ["get-docs", "get-docs-codecs"]
    cells = {(r["impl"], r["workload"]): r for r in report["results"]}
    assert set(cells) == {(spec.name, spec.workload) for spec in DOC_CODERS}
    for (impl, _), cell in cells.items():
        assert cell["skipped"] is None, (impl, cell["skipped"])
        assert len(cell["ops_per_sec"]) == 3, impl
        assert all(x > 0 for x in cell["ops_per_sec"]), impl

    rows = {row["impl"]: row for row in report["documents"]}
    assert list(rows) == list(DOC_IMPLS)
    for impl, row in rows.items():
        assert row["values"] == 2_000, impl
        assert row["value_bytes"] > 0, impl
        assert row["db_bytes"] > 0, impl
        stored = cells[(impl, row["workload"])]["stored"]
        assert (row["values"], row["value_bytes"], row["db_bytes"]) == (
            stored["values"],
            stored["value_bytes"],
            stored["db_bytes"],
        )
        ratio = paired_ratio(report, "asyncio", impl, row["reference"], row["workload"])
        assert row["ratio_to_reference"] == pytest.approx(ratio, rel=1e-4, abs=6e-4), impl
        reference = rows[row["reference"]]
        size = row["value_bytes"] / reference["value_bytes"]
        assert row["size_to_reference"] == pytest.approx(size, abs=6e-4), impl
    # The JSON coders store the same bytes; MessagePack is smaller; every codec compresses
    # these documents, and the dictionary beats zstd alone, in values and in LMDB's pages.
    assert rows["json-stdlib"]["value_bytes"] == rows["json-orjson"]["value_bytes"]
    assert rows["json-stdlib"]["value_bytes"] == rows["json"]["value_bytes"]
    assert rows["msgpack"]["value_bytes"] < rows["json-stdlib"]["value_bytes"]
    for codec in ("json+zlib", "json+zstd", "json+lz4", "json+zstd-dict"):
        assert rows[codec]["value_bytes"] < rows["json"]["value_bytes"], codec
        assert rows[codec]["db_bytes"] < rows["json"]["db_bytes"], codec
    assert rows["json+zstd-dict"]["value_bytes"] < rows["json+zstd"]["value_bytes"]
    assert rows["json+zstd-dict"]["db_bytes"] < rows["json+zstd"]["db_bytes"]

    assert report["targets"] == []
    (aim,) = report["aims"]
    assert aim["target"] == "get-docs: msgspec >= 1.5x json-stdlib"
    assert_verdicts(report)
    # The documents table, not the main one, and the aim line.
    assert "== documents, event loop: asyncio: 2,000 stored;" in printed
    assert "== event loop: asyncio ==" not in printed
    msgspec_row = next(line for line in printed.splitlines() if line.split()[:1] == ["msgspec"])
    assert fmt_ratio(aim["median_ratio"]) in msgspec_row
    aim_line = next(line for line in printed.splitlines() if "x json-stdlib" in line)
    assert aim_line.split()[:2] == ["[asyncio]", aim["status"]]


def counting_orjson(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count JSONCoder's calls into orjson (JSONCoder reads through ``_ORJSON_LOADS``)."""
    real = builtin._ORJSON_LOADS
    assert real is not None, "the test extra installs orjson"
    calls = [0]

    def loads(data: bytes) -> Any:
        calls[0] += 1
        return real(data)

    monkeypatch.setattr(builtin, "_ORJSON_LOADS", loads)
    return calls


async def test_the_stdlib_json_row_reads_without_orjson_and_the_orjson_row_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting_orjson(monkeypatch)
    hook = builtin._ORJSON_LOADS
    cfg = replace(BenchConfig(), n_docs=200, n_keys=200)
    specs = {spec.name: spec for spec in DOC_CODERS}
    keys = [make_key(i, cfg.key_size) for i in range(200)]
    for name, expected_calls in (("json-stdlib", 0), ("json-orjson", 200)):
        adapter = docs_adapter(aiolmdb, specs[name])
        assert isinstance(adapter, DocsAdapter)
        assert adapter.name == name
        await adapter.open(tmp_path / name, cfg)
        try:
            before = calls[0]
            assert await asyncio.wait_for(adapter.get_docs(keys, 64), 30) == 200
            assert calls[0] - before == expected_calls, name
            assert builtin._ORJSON_LOADS is hook  # switched back after the stdlib run
        finally:
            await adapter.close()


async def test_without_orjson_its_row_fails_to_open_with_the_pip_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(builtin, "_ORJSON_LOADS", None)
    (spec,) = [s for s in DOC_CODERS if s.name == "json-orjson"]
    adapter = docs_adapter(aiolmdb, spec)
    with pytest.raises(ImportError, match=r"pip install 'aiolmdb\[fast\]'"):
        await adapter.open(tmp_path / "env", replace(BenchConfig(), n_docs=10))
    await adapter.close()


# --------------------------------------------------------------------------- read modes (issue 22)


async def test_the_ticker_records_every_gap_the_loop_left_it() -> None:
    """A body that holds the loop shows up as one long gap (the one still open at its end
    counts); a body that awaits lets the ticker run at every tick."""
    async with Ticker() as held:
        # Holding the loop on purpose: the behaviour under measurement, not a wait.
        until = time.perf_counter() + 0.02
        while time.perf_counter() < until:
            pass
    assert held.figures()["ticks"] == 0
    assert held.max_gap_ms >= 20

    ticked = asyncio.Event()
    counted: list[float] = []

    def on_tick(now: float) -> None:
        counted.append(now)
        if len(counted) == 5:
            ticked.set()

    async with Ticker(on_tick) as free:
        await asyncio.wait_for(ticked.wait(), 30)
    assert free.figures()["ticks"] >= 5
    assert len(free.gaps) == len(counted) + 1  # + the gap open when the body ended
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([], 0.99) == 0.0


def test_read_modes_are_opened_by_name_or_by_the_older_switch() -> None:
    """Each aiolmdb row opens its read mode with ``reads=`` where aiolmdb has it, else with
    ``inline_reads=`` (threaded was the default then); the default row passes nothing."""

    class WithReads:
        @staticmethod
        def open(path: str, *, reads: str = "auto") -> None: ...

    class Older:
        @staticmethod
        def open(path: str, *, inline_reads: bool = False) -> None: ...

    with_reads, older = cast("Any", WithReads), cast("Any", Older)
    assert read_mode_options(with_reads, None) == {}
    assert read_mode_options(with_reads, "inline") == {"reads": "inline"}
    assert read_mode_options(with_reads, "threaded") == {"reads": "threaded"}
    assert read_mode_options(older, "inline") == {"inline_reads": True}
    assert read_mode_options(older, "threaded") == {"inline_reads": False}
    assert read_mode_options(older, None) == {}


def test_sequential_gets_beside_a_ticker_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--only W14``: the three read modes each await a chain of gets beside a 1 ms ticker;
    every run records the ticker's longest gap, and the two targets of the workload (a rate
    ratio and a ceiling on the default mode's gap) follow from the recorded runs."""
    out_json = tmp_path / "r.json"
    argv = ["--quick", "--no-uvloop", "--no-lmdb-js", "--repeat", "2", "--only", "W14"]
    argv += ["--json", str(out_json), "--png", str(tmp_path / "r.png"), "--tmpdir", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report: dict[str, Any] = json.loads(out_json.read_text())
    assert report["workloads"] == ["get-sequential-ticker"]
    cells = {r["impl"]: r for r in report["results"]}
    assert set(cells) == set(OURS)  # no peer has this workload
    for impl, cell in cells.items():
        assert cell["skipped"] is None, impl
        assert set(cell["figures"]) == {
            "max_gap_ms",
            "p99_gap_ms",
            "ticks",
            "switches",
            "read_faults",
            "inline_at_end",
        }, impl
        assert len(cell["figures"]["max_gap_ms"]) == 2, impl
    # The modes that read on the loop do the whole chain (60k gets with --quick), whatever
    # their rate; the threaded mode's runs are calibrated.
    assert cells["aiolmdb"]["ops_per_run"] == cells["aiolmdb-inline"]["ops_per_run"] == 60_000
    # Inline reads never suspend a chain of gets: the ticker gets no turn until it ends, so
    # its one gap spans the whole run (ops / rate).
    inline = cells["aiolmdb-inline"]
    assert inline["figures"]["ticks"] == [0.0, 0.0]
    for rate, gap in zip(inline["ops_per_sec"], inline["figures"]["max_gap_ms"], strict=True):
        assert gap >= 0.9 * inline["ops_per_run"] / rate * 1000
    # Each threaded get waits for a reader thread: the loop runs the ticker meanwhile.
    assert all(t > 0 for t in cells["aiolmdb-threaded"]["figures"]["ticks"])
    # The explicit modes never switch; the default one ends where the hot data puts it.
    for impl, at_end in (("aiolmdb-inline", 1.0), ("aiolmdb-threaded", 0.0)):
        assert cells[impl]["figures"]["switches"] == [0.0, 0.0], impl
        assert cells[impl]["figures"]["inline_at_end"] == [at_end, at_end], impl
    targets = {t["target"]: t for t in report["targets"]}
    assert set(targets) == {
        "get-sequential-ticker: aiolmdb >= 2x aiolmdb-threaded",
        "get-sequential-ticker: aiolmdb max_gap <= 5 ms",
    }
    assert targets["get-sequential-ticker: aiolmdb max_gap <= 5 ms"]["metric"] == "max_gap_ms"
    assert_verdicts(report)
    assert "longest loop gap" in printed


def test_a_ceiling_target_judges_the_median_of_a_recorded_figure() -> None:
    (gap,) = [t for t in TARGETS if t.metric == "max_gap_ms"]
    report = Report(
        meta={}, config={}, loops=["asyncio"], workloads=["get-sequential-ticker"], cells=[]
    )
    (skipped,) = evaluate_targets(report, (gap,))
    assert (skipped.status, skipped.reason) == (
        "SKIP",
        "aiolmdb get-sequential-ticker: not measured",
    )
    cell = Cell("aiolmdb", "get-sequential-ticker", "asyncio", 1000, [1.0, 1.0, 1.0])
    cell.figures["max_gap_ms"] = [2.0, 9.0, 4.0]  # median 4: under the 5 ms ceiling
    report.cells.append(cell)
    (passed,) = evaluate_targets(report, (gap,))
    assert (passed.value, passed.status) == (4.0, "PASS")
    cell.figures["max_gap_ms"] = [6.0, 9.0, 4.0]
    (failed,) = evaluate_targets(report, (gap,))
    assert (failed.value, failed.status) == (6.0, "FAIL")
    line = target_lines([failed])[1]
    assert line.split()[-3:] == ["measured", "6.00", "ms"]
    assert "aiolmdb max_gap <= 5 ms" in line


def test_without_node_the_lmdb_js_row_is_skipped_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("AIOLMDB_BENCH_NODE_DIR", str(tmp_path / "node-cache"))
    with pytest.raises(Unavailable, match=r"node not found on PATH: install Node\.js"):
        ensure_installed()
    out_json = tmp_path / "r.json"
    argv = ["--quick", "--no-uvloop", "--repeat", "1", "--only", "W1"]
    argv += ["--json", str(out_json), "--png", str(tmp_path / "r.png"), "--tmpdir", str(tmp_path)]
    assert main(argv) == 0
    report: dict[str, Any] = json.loads(out_json.read_text())
    (cell,) = [r for r in report["results"] if r["impl"] == "lmdb-js"]
    assert cell["skipped"] == (
        "open failed: Unavailable: node not found on PATH: install Node.js (>= 18) to compare "
        "with lmdb-js"
    )
    (aim,) = [a for a in report["aims"] if a["peer"] == "lmdb-js"]
    assert aim["status"] == "SKIP"
    assert "node not found" in aim["reason"]
    assert not (tmp_path / "node-cache").exists()


@pytest.mark.skipif(
    shutil.which("node") is None or installed_version(cache_dir()) is None,
    reason="needs node and lmdb-js installed in the benchmark's cache (`make bench` installs it)",
)
def test_lmdb_js_runs_its_gets_on_the_same_data(tmp_path: Path) -> None:
    """The lmdb-js peer loads the data set into its own environment and answers every get
    (the runner checks the hit count); node times the gets, and the aim pairs its runs."""
    out_json = tmp_path / "r.json"
    argv = ["--quick", "--no-uvloop", "--repeat", "2", "--only", "W1"]
    argv += ["--json", str(out_json), "--png", str(tmp_path / "r.png"), "--tmpdir", str(tmp_path)]
    assert main(argv) == 0
    report: dict[str, Any] = json.loads(out_json.read_text())
    (cell,) = [r for r in report["results"] if r["impl"] == "lmdb-js"]
    assert cell["skipped"] is None
    assert len(cell["ops_per_sec"]) == 2
    (aim,) = [a for a in report["aims"] if a["peer"] == "lmdb-js"]
    assert aim["status"] in ("MET", "BELOW")
    assert_verdicts(report)


# --------------------------------------------------------------------------- cold data


def test_throughput_slices_count_the_gets_between_samples() -> None:
    # 100 gets by 0.5 s, 300 by 1.0 s, 350 at the end (1.2 s).
    samples = [(0.2, 40), (0.5, 100), (0.9, 250), (1.0, 300), (1.2, 350)]
    assert bucket_rates(samples, 0.5, 1.2) == pytest.approx([200.0, 250 / 0.7])  # 0.5-1.2 s
    assert bucket_rates(samples, 0.5, 1.4) == pytest.approx([200.0, 400.0, 50 / 0.4])
    # No sample in a slice (the loop was held): nothing counted there, all of it later.
    assert bucket_rates([(1.0, 500)], 0.5, 1.0) == [0.0, 1000.0]


def test_eviction_empties_the_page_cache_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(4 << 20))
    assert path.read_bytes()  # read once: in the page cache
    assert resident_share(path) > 0.9
    share = evict(path)
    if share > EVICTED_AT_MOST:
        pytest.skip(f"this file system ignores POSIX_FADV_DONTNEED ({share:.0%} kept)")
    assert share <= EVICTED_AT_MOST


def test_cold_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--cold`` with a small data set: every mode runs from an evicted cache beside the
    ticker, and the JSON and the table say what each did."""
    out_json = tmp_path / "cold.json"
    argv = ["--cold", "--cold-keys", "5000", "--cold-seconds", "0.3", "--check"]
    code = main([*argv, "--json", str(out_json), "--tmpdir", str(tmp_path)])
    printed = capsys.readouterr().out
    report: dict[str, Any] = json.loads(out_json.read_text())
    assert report["config"]["n_keys"] == 5000
    if report["skipped"]:
        assert "page cache" in report["skipped"]
        assert f"cold runs skipped: {report['skipped']}" in printed
        return
    modes = {m["mode"]: m for m in report["modes"]}
    assert list(modes) == ["default (auto)", "threaded", "inline"]
    for name, m in modes.items():
        assert m["resident_before"] <= EVICTED_AT_MOST, name
        assert m["gets"] > 0, name
        assert len(m["rates"]) == 1, name  # 0.3 s: one slice of 0.5 s (the run)
        assert m["timeline"][0][1] in ("inline", "threaded"), name
    assert {t[1] for t in modes["threaded"]["timeline"]} == {"threaded"}
    # Inline reads never suspend a task's chain of gets: the ticker waits for the whole run.
    inline = modes["inline"]
    # At most one tick, at the edge of the run (before the first get or after the last one
    # is resolved); the longest gap is the run itself.
    assert inline["ticks"] <= 1
    assert inline["max_gap_ms"] >= 0.9 * 300
    assert inline["inline_after"] == 0.0
    assert modes["threaded"]["ticks"] > 0
    auto, threaded = modes["default (auto)"], modes["threaded"]
    ok = auto["max_gap_ms"] <= threaded["max_gap_ms"] + 2.0
    assert code == (0 if ok else 1)
    assert "== cold data: 5,000 keys x 1024 B" in printed
    assert (
        f"target: default's longest gap <= threaded's + 2 ms: {auto['max_gap_ms']:.1f}" in printed
    )


def test_cold_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--cold", "--cold-keys", "0"])
    assert "--cold-keys must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--cold", "--cold-seconds", "-1"])
    assert "--cold-seconds must be > 0" in capsys.readouterr().err
