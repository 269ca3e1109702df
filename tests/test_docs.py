"""The documentation's code samples run, and the documentation builds.

Every fenced ```` ```python ```` block of ``docs/**/*.md`` (except ``docs/cli.md``, which
documents the command line tool) is a complete program: it is run on its own, in a fresh
namespace, as ``__main__``, in a fresh temporary working directory (samples use relative paths
such as ``"example-env"``). A sample that raises fails its test; samples assert what they show.

Markers, an HTML comment on the line right before the opening fence:

* ``<!-- no-test -->``: not run (a skeleton that cannot run as it is). Use sparingly.
* ``<!-- test: subprocess -->``: run with a fresh interpreter instead of in this process (for
  samples that must own their process, e.g. ones that fork).

Samples that await must call ``asyncio.run(...)`` themselves, so each is copy-paste runnable.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXCLUDED = {Path("cli.md")}
NO_TEST = "<!-- no-test -->"
SUBPROCESS = "<!-- test: subprocess -->"
# Fences that open a code block: ``` or ~~~, three or more, with an optional info string.
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")
SUBPROCESS_TIMEOUT = 120.0


@dataclass(frozen=True)
class Sample:
    """One fenced code block of a page."""

    page: Path  # relative to docs/
    line: int  # 1-based line of the opening fence
    info: str  # the fence's info string, e.g. "python"
    code: str
    marker: str | None  # NO_TEST, SUBPROCESS or None

    @property
    def id(self) -> str:
        return f"{self.page.as_posix()}:{self.line}"


def parse_blocks(page: Path, text: str) -> list[Sample]:
    """Every fenced code block of a Markdown text, nested fences handled as CommonMark does."""
    lines = text.splitlines()
    blocks: list[Sample] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence = match["fence"]
        start = i
        body: list[str] = []
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
        previous = lines[start - 1].strip() if start > 0 else ""
        marker = previous if previous in (NO_TEST, SUBPROCESS) else None
        blocks.append(Sample(page, start + 1, match["info"], "\n".join(body) + "\n", marker))
        i += 1
    return blocks


def doc_pages() -> list[Path]:
    return sorted(
        p.relative_to(DOCS)
        for p in DOCS.rglob("*.md")
        if "_build" not in p.relative_to(DOCS).parts and p.relative_to(DOCS) not in EXCLUDED
    )


def all_blocks() -> list[Sample]:
    return [
        block
        for page in doc_pages()
        for block in parse_blocks(page, (DOCS / page).read_text(encoding="utf-8"))
    ]


def python_samples() -> list[Sample]:
    return [b for b in all_blocks() if b.info == "python" and b.marker != NO_TEST]


def run_sample(sample: Sample, workdir: Path) -> None:
    """Run one sample in ``workdir``; raise whatever it raises (or AssertionError for a
    subprocess that fails)."""
    code = compile(sample.code, f"<docs/{sample.id}>", "exec")
    if sample.marker == SUBPROCESS:
        script = workdir / "sample.py"
        script.write_text(sample.code, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
        assert proc.returncode == 0, (
            f"docs/{sample.id} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
        return
    cwd = Path.cwd()
    os.chdir(workdir)
    try:
        exec(code, {"__name__": "__main__", "__file__": str(workdir / "sample.py")})
    finally:
        os.chdir(cwd)
        gc.collect()  # an environment left open warns (ResourceWarning) here, failing the test


SAMPLES = python_samples()


@pytest.mark.timeout(SUBPROCESS_TIMEOUT)
@pytest.mark.parametrize("sample", SAMPLES, ids=[s.id for s in SAMPLES])
def test_sample_runs(sample: Sample, tmp_path: Path) -> None:
    before = {t for t in threading.enumerate() if t.name.startswith("aiolmdb")}
    run_sample(sample, tmp_path)
    leaked = [
        t.name
        for t in threading.enumerate()
        if t.name.startswith("aiolmdb") and t not in before and t.is_alive()
    ]
    assert not leaked, f"docs/{sample.id} left aiolmdb threads running: {leaked}"


def test_samples_found() -> None:
    """The extraction finds the samples: a broken parser must not pass by testing nothing."""
    pages = {s.page.as_posix() for s in SAMPLES}
    for page in (
        "index.md",
        "quickstart.md",
        "guide/environments.md",
        "guide/coders.md",
        "guide/ranges.md",
        "guide/transactions.md",
        "guide/semantics.md",
        "guide/inline-reads.md",
        "guide/map-growth.md",
        "guide/processes.md",
        "guide/security.md",
        "migrating.md",
    ):
        assert page in pages, f"docs/{page} has no tested python sample"
    assert len(SAMPLES) >= 30


def test_every_python_block_is_tested_or_marked() -> None:
    """Python code is only in ```python blocks (other spellings would escape the tests), and
    skipping a block is rare and deliberate."""
    blocks = all_blocks()
    for block in blocks:
        lang = block.info.split()[0].lower() if block.info else ""
        assert lang not in {"py", "python3", "pycon", "ipython", "{code-block}", "{code}"}, (
            f"docs/{block.id}: write Python samples as ```python blocks so they are tested"
        )
    skipped = [b.id for b in blocks if b.info == "python" and b.marker == NO_TEST]
    assert len(skipped) <= 3, f"too many untested samples: {skipped}"


def test_async_samples_run_themselves() -> None:
    """Each sample that awaits runs itself with asyncio.run, so it can be pasted as is."""
    for sample in SAMPLES:
        if re.search(r"\bawait\b|\basync\b", sample.code):
            assert "asyncio.run(" in sample.code, f"docs/{sample.id} never calls asyncio.run"


def test_harness_reports_failures(tmp_path: Path) -> None:
    """A failing sample fails: in process and in a subprocess."""
    failing = "import asyncio\n\nasync def main():\n    assert 1 == 2\n\nasyncio.run(main())\n"
    with pytest.raises(AssertionError):
        run_sample(Sample(Path("x.md"), 1, "python", failing, None), tmp_path)
    with pytest.raises(AssertionError, match="exited with 1"):
        run_sample(Sample(Path("x.md"), 1, "python", failing, SUBPROCESS), tmp_path)


def test_parser_handles_markers_and_nested_fences() -> None:
    text = (
        "intro\n"
        "<!-- no-test -->\n"
        "```python\n"
        "skeleton()\n"
        "```\n"
        "````md\n"
        "```python\n"
        "not a block of its own\n"
        "```\n"
        "````\n"
        "```python\n"
        "print(1)\n"
        "```\n"
    )
    blocks = parse_blocks(Path("t.md"), text)
    assert [(b.line, b.info, b.marker) for b in blocks] == [
        (3, "python", NO_TEST),
        (6, "md", None),
        (11, "python", None),
    ]
    assert blocks[2].code == "print(1)\n"
    with pytest.raises(AssertionError, match="never closed"):
        parse_blocks(Path("t.md"), "```python\nx = 1\n")


@pytest.mark.slow
def test_docs_build(tmp_path: Path) -> None:
    """``sphinx-build -W`` succeeds: no warning, no broken reference, every page in a toctree."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    pytest.importorskip("furo")
    assert (DOCS / "cli.md").is_file(), "docs/cli.md (the CLI page) is missing"
    env = {k: v for k, v in os.environ.items() if k != "AIOLMDB_DOCS_INTERSPHINX"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}"
    html = tmp_path / "html"
    for page in ("index", "quickstart", "api", "performance", "migrating", "guide/semantics"):
        assert (html / f"{page}.html").is_file(), page
    api = (html / "api.html").read_text(encoding="utf-8")
    for name in ("Environment", "AsyncDatabase", "RangeIterator", "WriteTransaction"):
        assert name in api
