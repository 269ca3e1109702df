"""Command line entry point: ``python -m benchmarks`` (``make bench``, ``aiolmdb bench``)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import asdict, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import lmdb

from .adapters import build_adapters, import_aiolmdb
from .cold import ColdConfig, main_cold
from .dataset import generate, load_base
from .report import (
    Report,
    docs_lines,
    evaluate_targets,
    meta_lines,
    table_lines,
    target_lines,
    to_json,
    write_json,
    write_png,
)
from .runner import Cell, log_stderr, run_interleaved
from .workloads import CONCURRENCY, WORKLOADS, BenchConfig, Workload, resolve_workloads

#: Default place of the JSON and PNG outputs: beside the suite's README, whatever the cwd.
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: The program name usage and errors show unless main() is given another.
PROG = "python -m benchmarks"

Runner = Callable[[Coroutine[Any, Any, list[Cell]]], list[Cell]]


def parse_args(argv: list[str] | None, prog: str = PROG) -> argparse.Namespace:
    """Parse the command line."""
    names = ", ".join(f"{w.alias}={w.name}" for w in WORKLOADS)
    p = argparse.ArgumentParser(
        prog=prog,
        description="Compare aiolmdb with sync py-lmdb, lmdb.aio, a naive executor wrapper "
        "and the asyncio floor.",
    )
    p.add_argument("--quick", action="store_true", help="small smoke run (< 30 s)")
    p.add_argument("--repeat", type=int, metavar="N", help="timed runs per cell (default 9)")
    p.add_argument("--only", metavar="W1,W3", help=f"comma-separated workloads: {names}")
    p.add_argument("--no-uvloop", action="store_true", help="skip the uvloop pass")
    p.add_argument("--json", type=Path, metavar="PATH", help="JSON output path")
    p.add_argument("--png", type=Path, metavar="PATH", help="bar chart output path")
    p.add_argument("--check", action="store_true", help="exit 1 if a target fails")
    p.add_argument("--tmpdir", type=Path, metavar="DIR", help="where to put the LMDB copies")
    p.add_argument(
        "--cold",
        action="store_true",
        help="run the cold-data workload instead (1.2M keys x 1 KB, ~1.6 GB on disk; each read "
        "mode from an evicted page cache; ~1 minute); writes results/cold.json",
    )
    p.add_argument(
        "--cold-dir", type=Path, metavar="DIR", help="build (and keep) the cold environment here"
    )
    p.add_argument("--cold-keys", type=int, metavar="N", help="keys of the cold data set")
    p.add_argument("--cold-seconds", type=float, metavar="S", help="seconds of gets per mode")
    p.add_argument(
        "--no-lmdb-js",
        action="store_true",
        help="leave out the lmdb-js peer (else run when node is installed; lmdb-js is "
        "installed with npm into ~/.cache/aiolmdb-bench on first use)",
    )
    args = p.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.cold_keys is not None and args.cold_keys < 1:
        p.error("--cold-keys must be >= 1")
    if args.cold_seconds is not None and args.cold_seconds <= 0:
        p.error("--cold-seconds must be > 0")
    try:
        args.workloads = resolve_workloads(args.only)
    except ValueError as exc:
        p.error(str(exc))
    return args


def make_config(args: argparse.Namespace) -> BenchConfig:
    """The run configuration for the parsed arguments."""
    cfg = BenchConfig()
    if args.quick:
        cfg = replace(
            cfg,
            n_keys=10_000,
            n_docs=2_000,
            repeat=3,
            target_seconds=0.06,
            ops_scale=0.2,
            quick=True,
        )
    if args.repeat is not None:
        cfg = replace(cfg, repeat=args.repeat)
    return cfg


def import_uvloop() -> ModuleType | None:
    """uvloop if importable, else None."""
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    mod: ModuleType = uvloop
    return mod


def collect_meta(aiolmdb_mod: ModuleType | None, uvloop_mod: ModuleType | None) -> dict[str, Any]:
    """Versions, machine and date, for the header and the JSON."""
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "py_lmdb": lmdb.__version__,
        "lmdb": ".".join(map(str, lmdb.version())),
        "aiolmdb": None
        if aiolmdb_mod is None
        else str(getattr(aiolmdb_mod, "__version__", "unknown")),
        "uvloop": None if uvloop_mod is None else str(getattr(uvloop_mod, "__version__", "?")),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def loop_runners(uvloop_mod: ModuleType | None) -> dict[str, Runner]:
    """Event loops to run the async suite under, by name."""
    runners: dict[str, Runner] = {"asyncio": asyncio.run}
    if uvloop_mod is not None:

        def run_uvloop(coro: Coroutine[Any, Any, list[Cell]]) -> list[Cell]:
            result: list[Cell] = uvloop_mod.run(coro)
            return result

        runners["uvloop"] = run_uvloop
    return runners


def cold_config(args: argparse.Namespace) -> ColdConfig:
    """The cold workload's configuration for the parsed arguments."""
    cfg = ColdConfig()
    if args.quick:
        cfg = replace(cfg, n_keys=100_000, seconds=2.0)
    if args.cold_keys is not None:
        cfg = replace(cfg, n_keys=args.cold_keys)
    if args.cold_seconds is not None:
        cfg = replace(cfg, seconds=args.cold_seconds)
    return cfg


def run_cold(args: argparse.Namespace) -> int:
    """``--cold``: the cold-data workload alone (benchmarks/cold.py)."""
    aiolmdb_mod, why = import_aiolmdb()
    if aiolmdb_mod is None:
        log_stderr(f"aiolmdb not importable: {why}")
    stem = "cold-quick" if args.quick else "cold"
    return main_cold(
        aiolmdb_mod,
        cold_config(args),
        keep_dir=args.cold_dir,
        tmpdir=args.tmpdir,
        json_path=args.json or RESULTS_DIR / f"{stem}.json",
        meta=collect_meta(aiolmdb_mod, None),
        check=args.check,
    )


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Run the benchmark suite; print the table, targets and aims; write JSON and PNG.

    Returns the process exit code: 0, or 1 with ``--check`` when a target fails
    (or aiolmdb could not be imported, so nothing could be checked). Aims never fail it.
    ``prog`` is the program name usage and errors show.
    """
    args = parse_args(argv, prog or PROG)
    if args.cold:
        return run_cold(args)
    cfg = make_config(args)
    workloads: list[Workload] = args.workloads
    stem = "quick" if cfg.quick else "latest"
    json_path: Path = args.json or RESULTS_DIR / f"{stem}.json"
    png_path: Path = args.png or RESULTS_DIR / f"{stem}.png"
    log = log_stderr

    aiolmdb_mod, why = import_aiolmdb()
    notes: list[str] = []
    if aiolmdb_mod is None:
        notes.append(f"aiolmdb not importable: {why}")
        log(notes[-1])
    uvloop_mod = None if args.no_uvloop else import_uvloop()
    if not args.no_uvloop and uvloop_mod is None:
        notes.append("uvloop not importable; asyncio loop only")
        log(notes[-1])
    runners = loop_runners(uvloop_mod)

    config = asdict(cfg) | {"concurrency": CONCURRENCY}
    report = Report(
        meta=collect_meta(aiolmdb_mod, uvloop_mod),
        config=config,
        loops=list(runners),
        workloads=[w.name for w in workloads],
        notes=notes,
    )
    for line in meta_lines(report):
        log(line)

    data = generate(cfg)
    with tempfile.TemporaryDirectory(prefix="aiolmdb-bench-", dir=args.tmpdir) as tmp:
        workdir = Path(tmp)
        base = workdir / "base"
        load_base(base, data, cfg)

        # Every implementation, the synchronous peers too, is measured in each loop's pass,
        # its runs interleaved with the others': ratios compare runs made side by side.
        for loop_name, run in runners.items():
            log(f"-- event loop: {loop_name}")
            adapters = build_adapters(aiolmdb_mod, lmdb_js=not args.no_lmdb_js)
            report.cells += run(
                run_interleaved(adapters, workloads, data, cfg, base, workdir, loop_name)
            )

    for cell in report.cells:
        if cell.workload.startswith("scan") and cell.skipped and "items()" in cell.skipped:
            note = f"scan workloads skipped for {cell.impl}: {cell.skipped}"
            if note not in notes:
                notes.append(note)

    targets = evaluate_targets(report)
    out: list[str] = ["", *meta_lines(report)]
    out += [f"note: {n}" for n in notes]
    for loop_name in report.loops:
        if any(not w.reference for w in workloads):
            out += ["", *table_lines(report, loop_name)]
        docs = docs_lines(report, loop_name)
        out += ["", *docs] if docs else []
    out += ["", *target_lines(targets)]

    write_json(json_path, to_json(report, targets))
    out.append(f"\nwrote {json_path}")
    png_error = write_png(png_path, report)
    out.append(png_error or f"wrote {png_path}")
    print("\n".join(out), flush=True)

    if args.check:
        if aiolmdb_mod is None:
            return 1
        if any(t.status == "FAIL" for t in targets):
            return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
