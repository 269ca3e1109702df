"""Fixtures and hooks of the reliability (stress) tests.

* Every test in this folder gets the ``stress`` marker, so ``pytest -m "not stress"`` runs the
  fast suite.
* ``stress_seed``: the seed of a test's random choices, from ``AIOLMDB_STRESS_SEED`` (to replay
  a failure) or drawn once per session. The report of a failed test that used it says how to
  replay it.
* ``figures``: numbers the tests report, printed in one block at the end of the session.
* ``close_leftovers`` (autouse): closes what ``open_env`` opened and a failed test left open.

The fixtures of ``tests/conftest.py`` apply here too.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest

from ._stress_util import OPENED, Figures, close_opened_since

HERE = Path(__file__).parent
SEED_VARIABLE = "AIOLMDB_STRESS_SEED"


def _session_seed() -> int:
    text = os.environ.get(SEED_VARIABLE, "").strip()
    if not text:
        return random.randrange(2**32)
    try:
        return int(text, 0)
    except ValueError:
        raise pytest.UsageError(f"{SEED_VARIABLE} must be an integer, not {text!r}") from None


SEED = _session_seed()
FIGURES = Figures()
_USED_SEED = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``stress`` (before ``-m`` selects on it)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.stress)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that used ``stress_seed`` shows the seed and the command replaying it."""
    report = yield
    seed = item.stash.get(_USED_SEED, None)
    if seed is not None and report.failed:
        report.sections.append(
            (
                "random seed",
                f"this test used seed {seed}; replay it with\n"
                f"  {SEED_VARIABLE}={seed} python -m pytest '{item.nodeid}'",
            )
        )
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures the tests recorded (nothing when no stress test ran)."""
    if FIGURES.values:
        terminalreporter.write_sep("-", "aiolmdb stress figures")
        terminalreporter.write_line(FIGURES.report())


@pytest.fixture
def stress_seed(request: pytest.FixtureRequest) -> int:
    """The seed for this test's ``random.Random``: ``AIOLMDB_STRESS_SEED`` when set, else one
    drawn for the session."""
    request.node.stash[_USED_SEED] = SEED
    FIGURES.set(f"random seed ({SEED_VARIABLE})", SEED)
    return SEED


@pytest.fixture(scope="session")
def figures() -> Figures:
    """The session's :class:`Figures`, printed at the end of the session."""
    return FIGURES


@pytest.fixture(autouse=True)
async def close_leftovers() -> AsyncIterator[None]:
    """Close whatever ``open_env`` opened during the test and the test left open (it failed
    half-way), so that no ResourceWarning lands on a later test."""
    start = len(OPENED)
    yield
    await close_opened_since(start)
