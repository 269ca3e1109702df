"""Sphinx configuration for the aiolmdb documentation (``make docs``).

The build runs with warnings as errors (``sphinx -W``) and works offline. Links into the Python
and py-lmdb documentation (intersphinx) need their inventories from the network, so they are
enabled only when ``AIOLMDB_DOCS_INTERSPHINX=1`` is set::

    AIOLMDB_DOCS_INTERSPHINX=1 make docs
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import aiolmdb  # noqa: E402

project = "aiolmdb"
author = "aiolmdb developers"
copyright = "2026, aiolmdb developers"
release = aiolmdb.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "README.md"]

html_theme = "furo"
html_title = f"aiolmdb {release}"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False

# Intersphinx is opt-in: fetching inventories needs the network, and a failed fetch is a
# warning, which -W turns into a failed build.
INTERSPHINX = os.environ.get("AIOLMDB_DOCS_INTERSPHINX", "") == "1"
intersphinx_mapping: dict[str, tuple[str, str | None]] = (
    {
        "python": ("https://docs.python.org/3", None),
        "lmdb": ("https://lmdb.readthedocs.io/en/release", None),
    }
    if INTERSPHINX
    else {}
)
intersphinx_timeout = 10

# ------------------------------------------------------------------ benchmark results
# performance.md holds three marker lines that are replaced when the page is read: the chart
# from `make bench` (benchmarks/results/latest.png), a table of the performance targets and
# one of the document workloads (benchmarks/results/latest.json). When they are missing the page says so instead of
# referencing a file that does not exist (which -W would turn into a failed build).
RESULTS = ROOT / "benchmarks" / "results"
CHART_MARKER = "% bench:chart"
TARGETS_MARKER = "% bench:targets"
DOCUMENTS_MARKER = "% bench:documents"


def chart_markdown() -> str:
    if (RESULTS / "latest.png").is_file():
        return (
            "```{figure} ../benchmarks/results/latest.png\n"
            ":alt: Median operations per second per workload and implementation (log scale)\n"
            ":width: 100%\n\n"
            "Median ops/s per workload (log scale), one panel per event loop, from "
            "`benchmarks/results/latest.png`.\n"
            "```\n"
        )
    return (
        ":::{note}\n"
        "No benchmark chart was found when these pages were built: run `make bench`, which "
        "writes `benchmarks/results/latest.png`, then `make docs` again.\n"
        ":::\n"
    )


def targets_markdown() -> str:
    try:
        data = json.loads((RESULTS / "latest.json").read_text(encoding="utf-8"))
        meta = data["meta"]
        # Aims (runs since the asyncio floor) are reported beside the targets, marked as such.
        rows = [
            f"| {t['loop']} | {t['target']}{suffix} | {_measured(t)} "
            f"| {t['status']} |"
            for key, suffix in (("targets", ""), ("aims", " (aim)"))
            for t in data.get(key, [])
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return (
            ":::{note}\n"
            "No benchmark results were found when these pages were built: run `make bench` "
            "(it writes `benchmarks/results/latest.json`), then `make docs` again.\n"
            ":::\n"
        )
    header = (
        f"Measured {meta.get('date', '?')} on {meta.get('platform', '?')} "
        f"({meta.get('cpu_count', '?')} CPUs), Python {meta.get('python', '?')}, "
        f"py-lmdb {meta.get('py_lmdb', '?')}, LMDB {meta.get('lmdb', '?')}, "
        f"aiolmdb {meta.get('aiolmdb', '?')}.\n\n"
    )
    table = "| loop | target | median ratio | status |\n| --- | --- | --- | --- |\n"
    return header + table + "\n".join(rows) + "\n"


def documents_markdown() -> str:
    """The document workloads' table (gets/s and stored size per coder and per codec)."""
    try:
        data = json.loads((RESULTS / "latest.json").read_text(encoding="utf-8"))
        rows = [
            f"| {r['loop']} | {r['workload']} | {r['impl']} | {_rate(r['median_ops_per_sec'])} "
            f"| {_ratio(r['ratio_to_reference'])} | {_per_value(r)} "
            f"| {_ratio(r['size_to_reference'])} | {_kib(r['db_bytes'])} |"
            for r in data["documents"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        rows = []
    if not rows:
        return (
            ":::{note}\n"
            "The benchmark results found when these pages were built have no document "
            "workloads: run `make bench` (it writes `benchmarks/results/latest.json`), then "
            "`make docs` again.\n"
            ":::\n"
        )
    table = (
        "| loop | workload | coder | median gets/s | x first row | bytes/value | size "
        "| LMDB KiB |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    return table + "\n".join(rows) + "\n"


def _rate(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, (int, float)) else "n/a"


def _per_value(row: dict[str, Any]) -> str:
    values, size = row.get("values"), row.get("value_bytes")
    return f"{size / values:,.0f}" if values and isinstance(size, int) else "n/a"


def _kib(value: Any) -> str:
    return f"{value / 1024:,.0f}" if isinstance(value, int) else "n/a"


def _ratio(value: Any) -> str:
    return f"{value:.2f}x" if isinstance(value, (int, float)) else "n/a"


def _measured(target: dict[str, Any]) -> str:
    """A target's measured value: a ratio, or for a ceiling on a figure (``metric``, e.g.
    ``max_gap_ms``) that figure with its unit."""
    value, metric = target.get("median_ratio"), target.get("metric")
    if metric and isinstance(value, (int, float)):
        return f"{value:.2f} {metric.rpartition('_')[2]}"
    return _ratio(value)


def _fill_markers(app: Any, docname: str, source: list[str]) -> None:
    if docname != "performance":
        return
    text = source[0]
    text = text.replace(CHART_MARKER + "\n", chart_markdown())
    text = text.replace(TARGETS_MARKER + "\n", targets_markdown())
    text = text.replace(DOCUMENTS_MARKER + "\n", documents_markdown())
    source[0] = text


def _always_outdated(app: Any, env: Any, added: Any, changed: Any, removed: Any) -> list[str]:
    return ["performance"] if "performance" in env.found_docs else []


def setup(app: Any) -> dict[str, Any]:
    app.connect("source-read", _fill_markers)
    # The page depends on files outside docs/: read it again on every build.
    app.connect("env-get-outdated", _always_outdated)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
