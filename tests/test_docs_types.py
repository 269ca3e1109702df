"""The documentation's Python examples pass ``mypy --strict`` (docs/contributing.md, "Examples
in the documentation").

The ```` ```python ```` blocks of ``README.md`` and of every ``docs/**/*.md`` page are read in
order; a page's blocks, concatenated, make one module, so a later block may use what an earlier
one defined. The module is the body of ``async def __page__() -> None:``, so top-level
``await``, ``async for`` and ``async with`` are allowed (as in ``python -m asyncio``), and a
block may define ``main`` again (``no-redef`` is off: each docs block is also a complete
program of its own, which ``tests/test_docs.py`` runs). ``from __future__`` imports go first.
A block preceded by the line ``<!-- mypy: skip (reason) -->`` (among the comment lines right
before its fence) is left out.

All pages are checked by ONE mypy run with the project's configuration and its cache
(``.mypy_cache``), so the package itself comes from the cache ``make type`` leaves. An error is
reported at its page and line, e.g. ``docs/guide/versions.md:120 (block at line 98): ...``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Where the pages' modules are written: kept between runs (a file is rewritten only when its
# text changes), so mypy's cache skips what did not change.
WORKDIR = ROOT / ".mypy_cache" / "docs-examples"
SKIP = re.compile(r"^<!--\s*mypy:\s*skip\b.*-->$")
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")
HEADER = (
    '# mypy: disable-error-code="no-redef"\n'
    "# A page of the documentation, its python blocks in order (tests/test_docs_types.py).\n"
)
WRAPPER = "async def __page__() -> None:\n"
INDENT = "    "
ERROR = re.compile(r"^(?P<file>[^:]+\.py):(?P<line>\d+):(?: \d+:)? (?P<rest>.*)$")
MYPY_TIMEOUT = 600.0


@dataclass(frozen=True)
class Block:
    """One ```python block of a page."""

    page: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    code: list[str]
    skipped: bool


def python_blocks(page: str, text: str) -> list[Block]:
    """The ```python blocks of a Markdown text, in order (nested fences as CommonMark)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, start, body = match["fence"], i, []
        i += 1
        while i < len(lines):
            closing = FENCE.match(lines[i])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"]
            ):
                break
            body.append(lines[i])
            i += 1
        else:
            raise AssertionError(f"{page}:{start + 1}: code fence never closed")
        if match["info"] == "python":
            # The marker is one of the HTML comment lines right before the fence (so it can
            # stand with tests/test_docs.py's <!-- no-test -->, which must be the last).
            above = start - 1
            skipped = False
            while above >= 0 and lines[above].strip().startswith("<!--"):
                skipped = skipped or bool(SKIP.match(lines[above].strip()))
                above -= 1
            blocks.append(Block(page, start + 1, body, skipped))
        i += 1
    return blocks


def pages() -> list[str]:
    """README.md and every page of docs/, as paths relative to the repository root."""
    found = [
        p.relative_to(ROOT).as_posix()
        for p in DOCS.rglob("*.md")
        if "_build" not in p.relative_to(DOCS).parts
    ]
    return ["README.md", *sorted(found)]


@dataclass
class Module:
    """A page's checked blocks as one module, with the page line of each module line."""

    name: str
    text: str
    where: dict[int, tuple[Block, int]]  # module line -> (block, page line)


def page_module(page: str, blocks: list[Block]) -> Module | None:
    """The module checked for ``page``, or None if it has no block to check."""
    checked = [b for b in blocks if not b.skipped]
    if not checked:
        return None
    future: set[str] = set()
    body: list[tuple[str, Block | None, int]] = []
    for block in checked:
        for offset, line in enumerate(block.code, start=1):
            if line.startswith("from __future__ import"):
                future.add(line.strip())
                line = ""
            body.append((line, block, block.line + offset))
        body.append(("", None, 0))
    head = [*HEADER.splitlines(), *sorted(future), WRAPPER.rstrip("\n")]
    lines = list(head)
    where: dict[int, tuple[Block, int]] = {}
    for text, owner, page_line in body:
        lines.append(INDENT + text if text.strip() else "")
        if owner is not None:
            where[len(lines)] = (owner, page_line)
    lines.append(INDENT + "pass")  # a page of definitions only is still a function body
    name = "docpage_" + re.sub(r"\W", "_", page.removesuffix(".md"))
    return Module(name, "\n".join(lines) + "\n", where)


def write_modules(modules: list[Module]) -> list[Path]:
    """Write the modules under WORKDIR (only those whose text changed); drop stale ones."""
    WORKDIR.mkdir(parents=True, exist_ok=True)
    paths = []
    for module in modules:
        path = WORKDIR / f"{module.name}.py"
        if not path.is_file() or path.read_text(encoding="utf-8") != module.text:
            path.write_text(module.text, encoding="utf-8")
        paths.append(path)
    for stale in set(WORKDIR.glob("*.py")) - set(paths):
        stale.unlink()
    return paths


def run_mypy(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    """One mypy --strict run over ``paths``, with the project's configuration and cache."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--strict",
            "--no-error-summary",
            "--show-error-codes",
            "--no-pretty",
            "--hide-error-context",
            *map(str, paths),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=MYPY_TIMEOUT,
        check=False,
    )


def page_errors(output: str, modules: list[Module]) -> list[str]:
    """mypy's errors, each at its page and line."""
    by_name = {m.name: m for m in modules}
    errors = []
    for line in output.splitlines():
        match = ERROR.match(line)
        if match is None or ": note: " in f": {match['rest']}":
            continue
        module = by_name.get(Path(match["file"]).stem)
        if module is None:  # an error outside the pages' modules: show it as it is
            errors.append(line)
            continue
        found = module.where.get(int(match["line"]))
        if found is None:
            errors.append(f"{module.name} (generated line {match['line']}): {match['rest']}")
            continue
        block, page_line = found
        errors.append(f"{block.page}:{page_line} (block at line {block.line}): {match['rest']}")
    return errors


def all_modules() -> list[Module]:
    modules = []
    for page in pages():
        blocks = python_blocks(page, (ROOT / page).read_text(encoding="utf-8"))
        module = page_module(page, blocks)
        if module is not None:
            modules.append(module)
    return modules


@pytest.mark.timeout(MYPY_TIMEOUT)
def test_doc_examples_pass_mypy_strict() -> None:
    modules = all_modules()
    assert len(modules) >= 15, "the extraction found too few pages with python blocks"
    proc = run_mypy(write_modules(modules))
    errors = page_errors(proc.stdout + proc.stderr, modules)
    failed = errors or ([proc.stdout, proc.stderr] if proc.returncode else [])
    assert not failed, (
        "doc examples fail mypy --strict (fix them, or mark a block that cannot be checked "
        "with '<!-- mypy: skip (reason) -->' on the line before its fence):\n" + "\n".join(failed)
    )


# ----------------------------------------------------------------------------- the harness
def test_blocks_markers_and_line_numbers() -> None:
    text = (
        "intro\n"  # 1
        "```python\n"  # 2
        "from __future__ import annotations\n"  # 3
        "x: int = 1\n"  # 4
        "```\n"  # 5
        "<!-- mypy: skip (pseudo-code) -->\n"  # 6
        "```python\n"  # 7
        "not python at all\n"  # 8
        "```\n"  # 9
        "````md\n"  # 10
        "```python\n"  # 11
        "nested, not a block\n"  # 12
        "```\n"  # 13
        "````\n"  # 14
        "```python\n"  # 15
        "y = await f(x)\n"  # 16
        "```\n"  # 17
    )
    blocks = python_blocks("p.md", text)
    assert [(b.line, b.skipped) for b in blocks] == [(2, False), (7, True), (15, False)]
    module = page_module("p.md", blocks)
    assert module is not None
    assert module.name == "docpage_p"
    lines = module.text.splitlines()
    assert "from __future__ import annotations" in lines[: lines.index(WRAPPER.rstrip())]
    by_page_line = {page_line: n for n, (_, page_line) in module.where.items()}
    assert lines[by_page_line[4] - 1] == "    x: int = 1"
    assert lines[by_page_line[16] - 1] == "    y = await f(x)"
    assert "not python" not in module.text
    assert page_errors(f"{WORKDIR}/docpage_p.py:{by_page_line[16]}: error: boom", [module]) == [
        "p.md:16 (block at line 15): error: boom"
    ]
    with pytest.raises(AssertionError, match="never closed"):
        python_blocks("p.md", "```python\nx = 1\n")


def test_a_wrong_example_fails_naming_its_page_and_line(tmp_path: Path) -> None:
    """The check can fail: a typed mistake in a block is reported at its page line."""
    text = (
        "```python\n"
        "import aiolmdb\n"
        "env = aiolmdb.open('e')\n"
        "db = env.open_db('n', value_coder=aiolmdb.UInt64Coder())\n"
        "```\n"
        "text\n"
        "```python\n"
        "n = await db.get(b'k')\n"
        "print(n - 1)\n"
        "print(await db.get(b'k', default=0) - 1)\n"
        "```\n"
    )
    module = page_module("bad.md", python_blocks("bad.md", text))
    assert module is not None
    module.name = "docpage_harness_check"
    path = tmp_path / f"{module.name}.py"
    path.write_text(module.text, encoding="utf-8")
    proc = run_mypy([path])
    errors = page_errors(proc.stdout, [module])
    assert errors == [
        'bad.md:9 (block at line 7): error: Unsupported operand types for - ("None" and "int")'
        "  [operator]"
    ], proc.stdout


# ----------------------------------------------------------------------------- page order
def toctree_pages() -> list[str]:
    """The pages of docs/index.md's toctrees, in order (as paths relative to docs/)."""
    pages_in_order: list[str] = []
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    for tree in re.findall(r"```\{toctree\}\n(.*?)```", text, flags=re.S):
        for line in tree.splitlines():
            if line.strip() and not line.startswith(":"):
                pages_in_order.append(line.strip())
    return pages_in_order


def readme_pages() -> list[str]:
    """The pages README.md's "Documentation" section links to, in order, as toctree entries."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Documentation", 1)[1].split("\n## ", 1)[0]
    found = []
    for target in re.findall(r"\]\(([^)#]+\.md)\)", section):
        if target == "CHANGELOG.md":
            found.append("changelog")  # docs/changelog.md includes it
        else:
            found.append(target.removeprefix("docs/").removesuffix(".md"))
    return found


def test_readme_lists_the_pages_in_the_sidebar_order() -> None:
    toctree = toctree_pages()
    assert toctree[:9] == [
        "quickstart",
        "guide/environments",
        "guide/semantics",
        "guide/coders",
        "guide/ranges",
        "guide/transactions",
        "guide/versions",
        "guide/changes",
        "recipes",
    ], "a newcomer's order: docs/index.md's toctree"
    assert readme_pages() == toctree
    on_disk = {
        p.relative_to(DOCS).as_posix().removesuffix(".md")
        for p in DOCS.rglob("*.md")
        if "_build" not in p.relative_to(DOCS).parts
    }
    assert on_disk - {"index"} == set(toctree), "every page is in the toctree and the README"
