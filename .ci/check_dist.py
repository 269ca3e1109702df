"""Check what `python -m build` made before it is published.

Usage: python .ci/check_dist.py dist/*

The wheel must hold the aiolmdb package (with py.typed) and its metadata, nothing else: no
tests, benchmarks, examples or docs (they live beside the package in the repository), no
bytecode. Its metadata must use the PEP 639 license fields and no License classifier. The sdist
must hold what is needed to build and test the wheel. Exits 1 with one line per problem.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import PurePosixPath

PACKAGE = "aiolmdb"
# Path components that never belong in the wheel.
NOT_SHIPPED = {"tests", "benchmarks", "_bench", "examples", "docs", "__pycache__"}
# Path components that never belong in the sdist (local state, not source).
NOT_SOURCE = {"__pycache__", ".venv", ".tox", ".hypothesis", ".mypy_cache", ".pytest_cache"}


def check_wheel(path: str) -> list[str]:
    """Problems of one wheel (empty when it is fine)."""
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        dist_info = next((n.split("/")[0] for n in names if ".dist-info/" in n), "")
        metadata = wheel.read(f"{dist_info}/METADATA").decode() if dist_info else ""
    problems = []
    for name in names:
        parts = PurePosixPath(name).parts
        if parts[0] not in (PACKAGE, dist_info):
            problems.append(f"{path}: {name}: outside the {PACKAGE} package and its metadata")
        elif NOT_SHIPPED.intersection(parts) or name.endswith((".pyc", ".pyo")):
            problems.append(f"{path}: {name}: not part of the library")
    for required in (f"{PACKAGE}/__init__.py", f"{PACKAGE}/py.typed"):
        if required not in names:
            problems.append(f"{path}: {required} is missing")
    if not dist_info:
        return [*problems, f"{path}: no .dist-info directory"]
    if f"{dist_info}/licenses/LICENSE" not in names:
        problems.append(f"{path}: {dist_info}/licenses/LICENSE is missing")
    problems += [f"{path}: METADATA: {p}" for p in check_metadata(metadata)]
    return problems


def check_metadata(text: str) -> list[str]:
    """Problems of a METADATA file (core metadata 2.4, PEP 639)."""
    fields = HeaderParser().parsestr(text)
    problems = []
    if fields.get("License-Expression") != "MIT":
        problems.append(f"License-Expression is {fields.get('License-Expression')!r}, not 'MIT'")
    if fields.get_all("License-File") != ["LICENSE"]:
        problems.append(f"License-File is {fields.get_all('License-File')}, not ['LICENSE']")
    classifiers = fields.get_all("Classifier") or []
    problems += [
        f"{c!r}: PEP 639 allows no License classifier"
        for c in classifiers
        if c.startswith("License ::")
    ]
    if "Typing :: Typed" not in classifiers:
        problems.append("no 'Typing :: Typed' classifier")
    urls = {u.split(",")[0] for u in fields.get_all("Project-URL") or []}
    for label in ("Homepage", "Documentation", "Source", "Changelog", "Issues"):
        if label not in urls:
            problems.append(f"no Project-URL {label!r}")
    if not fields.get("Requires-Python"):
        problems.append("no Requires-Python")
    return problems


def check_sdist(path: str) -> list[str]:
    """Problems of one sdist (empty when it is fine)."""
    with tarfile.open(path) as sdist:
        names = [PurePosixPath(n) for n in sdist.getnames()]
    root = names[0].parts[0] if names else ""
    inside = {PurePosixPath(*n.parts[1:]).as_posix() for n in names if len(n.parts) > 1}
    problems = []
    for required in (
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "PKG-INFO",
        f"{PACKAGE}/__init__.py",
        f"{PACKAGE}/py.typed",
        "tests/conftest.py",
    ):
        if required not in inside:
            problems.append(f"{path}: {root}/{required} is missing")
    for name in sorted(inside):
        if NOT_SOURCE.intersection(PurePosixPath(name).parts) or name.endswith(".pyc"):
            problems.append(f"{path}: {name}: local state, not source")
    return problems


def main(paths: list[str]) -> int:
    """Check every wheel and sdist named; 0 when all are fine and there is one of each."""
    problems = []
    wheels = [p for p in paths if p.endswith(".whl")]
    sdists = [p for p in paths if p.endswith(".tar.gz")]
    if len(wheels) != 1 or len(sdists) != 1:
        problems.append(f"expected one wheel and one sdist, got {paths}")
    for path in wheels:
        problems += check_wheel(path)
    for path in sdists:
        problems += check_sdist(path)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{', '.join(paths)}: contents and metadata OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
