"""Ratios, the text table, the targets check, and the JSON / PNG outputs."""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapters import DOC_IMPLS, IMPL_ORDER, OURS, PEERS
from .runner import Cell
from .workloads import AIMS, TARGETS, WORKLOAD_BY_NAME, Target


@dataclass
class Report:
    """Everything a run produced."""

    meta: dict[str, Any]
    config: dict[str, Any]
    loops: list[str]
    workloads: list[str]
    cells: list[Cell] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def find(self, loop: str, impl: str, workload: str) -> Cell | None:
        """The cell for ``impl`` on ``workload`` measured in the ``loop`` pass."""
        for c in self.cells:
            if c.impl == impl and c.workload == workload and c.loop == loop:
                return c
        return None

    def ratio(self, loop: str, impl: str, workload: str, peer: str) -> float | None:
        """Median over repeats i of ``impl_i / peer_i`` (ops/s), or None if either is missing.

        Both were measured in ``workload``'s rotation (a peer of ``scan-batches`` ran its scan,
        aiolmdb in ``asyncio-floor``'s its gets).
        """
        a = self.find(loop, impl, workload)
        b = self.find(loop, peer, workload)
        if a is None or b is None or not a.samples or not b.samples:
            return None
        m = min(len(a.samples), len(b.samples))
        return statistics.median(a.samples[i] / b.samples[i] for i in range(m))


# --------------------------------------------------------------------------- text


def fmt_value(r: TargetResult) -> str:
    """A target's measured value: a ratio (``1.23x``), or a ceiling's figure with its unit."""
    if r.target.metric is None or r.value is None:
        return fmt_ratio(r.value)
    return f"{r.value:.2f} {r.target.metric.rpartition('_')[2]}"


def fmt_ratio(r: float | None) -> str:
    """``12.3x`` style, adapting precision to magnitude; blank for None."""
    if r is None:
        return ""
    if r >= 100:
        return f"{r:,.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    return f"{r:.2f}x"


def meta_lines(report: Report) -> list[str]:
    """Header lines describing the machine and the run."""
    m, c = report.meta, report.config
    return [
        f"date {m['date']}  |  {m['platform']}  |  {m['cpu_count']} CPUs",
        f"Python {m['python']}  |  py-lmdb {m['py_lmdb']}  |  LMDB {m['lmdb']}"
        f"  |  aiolmdb {m['aiolmdb'] or 'n/a'}  |  uvloop {m['uvloop'] or 'n/a'}",
        f"data: {c['n_keys']:,} keys x {c['key_size']} B, values {c['value_size']} B"
        f"  |  repeat {c['repeat']}  |  ~{c['target_seconds']}s per run"
        f"  |  concurrency {c['concurrency']}{'  |  QUICK' if c['quick'] else ''}",
    ]


def row_label(impl: str, wname: str) -> str:
    """``impl``, followed by ``[what it ran]`` when that is not ``wname`` itself."""
    w = WORKLOAD_BY_NAME[wname]
    ran = None
    if impl in PEERS:
        ran = w.peer_workload
    elif impl in OURS:
        ran = w.ours_workload
    return impl if ran is None else f"{impl} [{ran}]"


def is_docs(wname: str) -> bool:
    """Whether ``wname`` is a document workload (rows per coder, reported by :func:`docs_rows`)."""
    return WORKLOAD_BY_NAME[wname].reference is not None


def table_lines(report: Report, loop: str) -> list[str]:
    """The results table for one event loop (the document workloads have their own)."""
    ours = [o for o in OURS if any(c.impl == o for c in report.cells)]
    rows: list[tuple[str, str, Cell | None]] = []  # (workload column, label, cell)
    for wname in report.workloads:
        if is_docs(wname):
            continue
        found = [c for c in (report.find(loop, i, wname) for i in IMPL_ORDER) if c is not None]
        if not found:
            rows.append((wname, "(no results)", None))
        for i, c in enumerate(found):
            rows.append((wname if i == 0 else "", row_label(c.impl, wname), c))
    width = max([16, *(len(label) for _, label, _ in rows)])
    head = f"{'workload':<15} {'impl':<{width}} {'median ops/s':>14} {'spread':>7} {'ops/run':>9}"
    head += "".join(f" {o + '/row':>16}" for o in ours)
    lines = [f"== event loop: {loop} ==", head, "-" * len(head)]
    for name, label, cell in rows:
        if cell is None:
            lines.append(f"{name:<15} {label}")
            continue
        if cell.skipped is not None or cell.median is None:
            lines.append(f"{name:<15} {label:<{width}} skipped: {cell.skipped}")
            continue
        med = cell.median
        spread = (max(cell.samples) - min(cell.samples)) / med * 100
        line = f"{name:<15} {label:<{width}} {med:>14,.0f} {spread:>6.0f}% {cell.ops:>9,}"
        if cell.impl in PEERS:
            for o in ours:
                r = report.ratio(loop, o, cell.workload, cell.impl)
                line += f" {fmt_ratio(r):>16}"
        elif cell.impl in OURS[1:] and OURS[0] in ours:
            # The explicit read modes' rows: the default mode over each of them.
            r = report.ratio(loop, OURS[0], cell.workload, cell.impl)
            line += f" {fmt_ratio(r):>16}"
        gap = cell.figure("max_gap_ms")
        if gap is not None:
            longest = max(cell.figures["max_gap_ms"])
            line += f"  longest loop gap {gap:,.1f} ms (max {longest:,.1f})"
        lines.append(line.rstrip())
    return lines


def docs_rows(report: Report, loop: str) -> list[dict[str, Any]]:
    """One row per coder of each document workload run under ``loop``: its gets/s, the
    paired ratio to the workload's reference row, and what it stored (also relative)."""
    rows: list[dict[str, Any]] = []
    for wname in report.workloads:
        ref = WORKLOAD_BY_NAME[wname].reference
        if ref is None:
            continue
        ref_cell = report.find(loop, ref, wname)
        ref_bytes = None if ref_cell is None or not ref_cell.stored else ref_cell.stored
        for impl in DOC_IMPLS:
            cell = report.find(loop, impl, wname)
            if cell is None:
                continue
            st = cell.stored
            ratio = report.ratio(loop, impl, wname, ref)
            size = None
            if st and ref_bytes and ref_bytes["value_bytes"]:
                size = st["value_bytes"] / ref_bytes["value_bytes"]
            rows.append(
                {
                    "loop": loop,
                    "workload": wname,
                    "impl": impl,
                    "reference": ref,
                    "median_ops_per_sec": None if cell.median is None else round(cell.median, 1),
                    "ratio_to_reference": None if ratio is None else round(ratio, 3),
                    "values": st["values"] if st else None,
                    "value_bytes": st["value_bytes"] if st else None,
                    "db_bytes": st["db_bytes"] if st else None,
                    "size_to_reference": None if size is None else round(size, 3),
                    "skipped": cell.skipped,
                }
            )
    return rows


def docs_lines(report: Report, loop: str) -> list[str]:
    """The document workloads' table for one event loop (empty if none ran)."""
    rows = docs_rows(report, loop)
    if not rows:
        return []
    head = (
        f"{'workload':<15} {'coder':<14} {'median gets/s':>13} {'spread':>6} {'x ref':>6}"
        f" {'B/value':>8} {'size':>6} {'LMDB KiB':>9}"
    )
    count = max((row["values"] or 0 for row in rows), default=0)
    lines = [
        f"== documents, event loop: {loop}: {count:,} stored; x ref (gets/s, the median of "
        "paired runs) and size (bytes) relative to the workload's first row ==",
        head,
        "-" * len(head),
    ]
    last = ""
    for row in rows:
        name = row["workload"] if row["workload"] != last else ""
        last = row["workload"]
        cell = report.find(loop, row["impl"], row["workload"])
        if cell is None or cell.median is None:
            reason = cell.skipped if cell is not None else "not measured"
            lines.append(f"{name:<15} {row['impl']:<14} skipped: {reason}")
            continue
        spread = (max(cell.samples) - min(cell.samples)) / cell.median * 100
        line = f"{name:<15} {row['impl']:<14} {cell.median:>13,.0f} {spread:>5.0f}%"
        line += f" {fmt_ratio(row['ratio_to_reference']):>6}"
        if row["values"]:
            per = row["value_bytes"] / row["values"]
            line += f" {per:>8,.0f} {fmt_ratio(row['size_to_reference']):>6}"
            line += f" {row['db_bytes'] / 1024:>9,.0f}"
        lines.append(line.rstrip())
    return lines


@dataclass
class TargetResult:
    """Outcome of one :class:`Target` under one event loop."""

    target: Target
    loop: str
    value: float | None
    status: str  # PASS | FAIL | SKIP; an aim's: MET | BELOW | SKIP
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        t = self.target
        return {
            "loop": self.loop,
            "target": t.label,
            "workload": t.workload,
            "impl": t.impl,
            "peer": t.peer,
            "peer_workload": t.peer_workload or t.workload,
            "impl_workload": t.impl_workload or t.workload,
            "floor": t.floor,
            # A ceiling (``metric``) reports the median of its figure; conf.py shows the unit.
            "metric": t.metric,
            "median_ratio": None if self.value is None else round(self.value, 3),
            "status": self.status,
            "reason": self.reason,
        }


def verdict(t: Target, value: float) -> str:
    """PASS / FAIL for a target, MET / BELOW for an aim (a ceiling's value must not exceed
    it)."""
    ok = value <= t.floor if t.metric is not None else value >= t.floor
    if t.enforced:
        return "PASS" if ok else "FAIL"
    return "MET" if ok else "BELOW"


def evaluate_ceiling(report: Report, loop: str, t: Target) -> TargetResult:
    """A ceiling on the median of a figure ``t.impl``'s runs recorded (``t.metric``)."""
    assert t.metric is not None
    cell = report.find(loop, t.impl, t.workload)
    value = None if cell is None or cell.skipped else cell.figure(t.metric)
    if value is None:
        why = "not measured" if cell is None else cell.skipped or f"no {t.metric} recorded"
        return TargetResult(t, loop, None, "SKIP", f"{t.impl} {t.workload}: {why}")
    return TargetResult(t, loop, value, verdict(t, value))


def evaluate_targets(
    report: Report, targets: tuple[Target, ...] = TARGETS + AIMS
) -> list[TargetResult]:
    """Check every target (and aim) under every loop that ran."""
    out: list[TargetResult] = []
    for loop in report.loops:
        for t in targets:
            if t.workload not in report.workloads:
                continue
            if t.metric is not None:
                out.append(evaluate_ceiling(report, loop, t))
                continue
            value = report.ratio(loop, t.impl, t.workload, t.peer)
            if value is None:
                missing = []
                for impl in (t.impl, t.peer):
                    cell = report.find(loop, impl, t.workload)
                    if cell is None or cell.median is None:
                        why = cell.skipped if cell is not None else "not measured"
                        missing.append(f"{impl} {t.workload}: {why}")
                out.append(TargetResult(t, loop, None, "SKIP", "; ".join(missing)))
            else:
                out.append(TargetResult(t, loop, value, verdict(t, value)))
    return out


def target_lines(results: list[TargetResult]) -> list[str]:
    """The "targets" section, then the "aims" section if any aim was evaluated."""
    lines: list[str] = []
    sections = (
        ("== targets (median of per-repeat ratios) ==", True, ("PASS", "FAIL", "SKIP")),
        (
            "== aims (median of per-repeat ratios; --check ignores them) ==",
            False,
            ("MET", "BELOW", "SKIP"),
        ),
    )
    for title, enforced, statuses in sections:
        part = [r for r in results if r.target.enforced is enforced]
        if not part and not enforced:
            continue
        lines += [*([""] if lines else []), title]
        for r in part:
            measured = f"measured {fmt_value(r)}" if r.value is not None else r.reason
            lines.append(f"  [{r.loop}] {r.status:<5} {r.target.label:<46} {measured}")
        counts = {s: sum(r.status == s for r in part) for s in statuses}
        lines.append("  " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return lines


# --------------------------------------------------------------------------- files


def to_json(report: Report, targets: list[TargetResult]) -> dict[str, Any]:
    """The whole report as a JSON-ready dict, ratios included."""
    ratios = []
    for loop in report.loops:
        for wname in report.workloads:
            w = WORKLOAD_BY_NAME[wname]
            for impl in OURS:
                # Peers, and the explicit read modes compared with the default one.
                others = PEERS if impl != OURS[0] else PEERS + OURS[1:]
                for peer in others:
                    r = report.ratio(loop, impl, wname, peer)
                    if r is not None:
                        ratios.append(
                            {
                                "loop": loop,
                                "workload": wname,
                                "impl": impl,
                                "peer": peer,
                                "peer_workload": w.peer_workload or wname,
                                "impl_workload": w.ours_workload or wname,
                                "median_ratio": round(r, 3),
                            }
                        )
    return {
        "meta": report.meta,
        "config": report.config,
        "loops": report.loops,
        "workloads": report.workloads,
        "notes": report.notes,
        "results": [c.to_json() for c in report.cells],
        "ratios": ratios,
        "documents": [row for loop in report.loops for row in docs_rows(report, loop)],
        "targets": [t.to_json() for t in targets if t.target.enforced],
        "aims": [t.to_json() for t in targets if not t.target.enforced],
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (``*.tmp`` then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def write_png(path: Path, report: Report) -> str | None:
    """Grouped bar chart (log-scale ops/s), one panel per loop. Returns an error or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib not importable ({exc}); PNG skipped"

    # The peers and aiolmdb; the document workloads' rows are in their own table.
    plotted = [i for i in IMPL_ORDER if i not in DOC_IMPLS]
    impls = [i for i in plotted if any(c.impl == i and c.samples for c in report.cells)]
    wls = [
        w
        for w in report.workloads
        if not is_docs(w) and any(c.workload == w and c.samples for c in report.cells)
    ]
    if not wls:
        return "nothing was measured; PNG skipped"
    fig, axes = plt.subplots(
        len(report.loops), 1, figsize=(max(8.0, 1.6 * len(wls) + 2), 4.2 * len(report.loops))
    )
    axes_list = list(axes) if len(report.loops) > 1 else [axes]
    width = 0.8 / max(1, len(impls))
    for ax, loop in zip(axes_list, report.loops, strict=True):
        for j, impl in enumerate(impls):
            xs: list[float] = []
            ys: list[float] = []
            for i, wname in enumerate(wls):
                cell = report.find(loop, impl, wname)
                if cell is not None and cell.median is not None:
                    xs.append(i - 0.4 + width * (j + 0.5))
                    ys.append(cell.median)
            ax.bar(xs, ys, width, label=impl)
        ax.set_yscale("log")
        ax.set_xticks(range(len(wls)))
        ax.set_xticklabels(wls, rotation=15)
        ax.set_ylabel("ops/s (median, log scale)")
        ax.set_title(f"aiolmdb vs peers - event loop: {loop}")
        ax.grid(axis="y", which="major", alpha=0.3)
    handles, labels = axes_list[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(impls), fontsize="small")
    m = report.meta
    fig.suptitle(
        f"Python {m['python']}, py-lmdb {m['py_lmdb']}, LMDB {m['lmdb']}, "
        f"{m['cpu_count']} CPUs, {m['date'][:10]}",
        fontsize="small",
    )
    fig.tight_layout(rect=(0.0, 0.04, 1.0, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
