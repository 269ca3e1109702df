"""Check that a release tag names the version being released.

Usage: python .ci/check_version.py vX.Y.Z [dist/*]

The publish workflow runs it on the tag it was started by, after building: the tag must be
``v`` followed by ``version`` of pyproject.toml, ``aiolmdb.__version__`` must be that same
string, and every wheel or sdist named must carry that version in its file name (so what is
uploaded is what the tag says). Exits 1 with one line per problem.

It reads the files rather than importing the package: the build job does not install the
package's dependencies.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # build depends on tomli on Python 3.10
    import tomli as tomllib

from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "aiolmdb"


def pyproject_version(root: Path) -> str:
    """``[project] version`` of ``root/pyproject.toml``."""
    with (root / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def module_version(root: Path) -> str | None:
    """The string assigned to ``__version__`` in the package's ``__init__.py``, if any."""
    tree = ast.parse((root / PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


def dist_version(path: str) -> str | None:
    """The version in a wheel's or sdist's file name (None for any other file)."""
    name = Path(path).name
    if name.endswith(".whl"):
        return name.split("-")[1]
    if name.endswith(".tar.gz"):
        return name.removesuffix(".tar.gz").rpartition("-")[2]
    return None


def check(tag: str, root: Path = ROOT, dists: list[str] | None = None) -> list[str]:
    """Problems with releasing ``root`` under ``tag`` (empty when the versions agree)."""
    version = pyproject_version(root)
    problems = []
    try:
        normalized = str(Version(version))
    except InvalidVersion:
        return [f"pyproject.toml: version {version!r} is not a PEP 440 version"]
    if normalized != version:
        problems.append(f"pyproject.toml: version {version!r} is not normalized ({normalized!r})")
    if tag != f"v{version}":
        problems.append(
            f"tag {tag!r} does not match pyproject.toml's version: expected 'v{version}'"
        )
    in_module = module_version(root)
    if in_module != version:
        problems.append(
            f"{PACKAGE}/__init__.py: __version__ is {in_module!r}, pyproject.toml says {version!r}"
        )
    for path in dists or []:
        built = dist_version(path)
        if built is None:
            problems.append(f"{path}: not a wheel or an sdist")
        elif built != normalized:
            problems.append(f"{path}: built as version {built!r}, not {normalized!r}")
    return problems


def main(argv: list[str]) -> int:
    """Check the tag in ``argv[0]`` against the sources and the distributions after it."""
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    problems = check(argv[0], ROOT, argv[1:])
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"tag {argv[0]}: pyproject.toml, {PACKAGE}.__version__ and the dist files agree")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
