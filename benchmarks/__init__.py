"""The benchmark suite: aiolmdb against sync py-lmdb, lmdb.aio, a naive executor wrapper, and
the asyncio floor (the loop's own cost of a thread hand-off, with no LMDB).

It lives in the repository, not in the wheel. Run ``make bench`` or ``python -m benchmarks``
from a source checkout (``aiolmdb bench`` does the same there); the method is in
benchmarks/README.md and the documentation's performance page.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Run the suite with command line arguments ``argv``; returns the exit status.

    ``prog`` is the program name its usage and errors show (default ``python -m benchmarks``).
    """
    from .cli import main as _main

    return _main(argv, prog=prog)
