"""The benchmark suite: aiolmdb against sync py-lmdb, lmdb.aio and a naive executor wrapper.

Run ``aiolmdb bench --help``, ``python -m benchmarks`` or ``make bench``; the method is in
benchmarks/README.md and the documentation's performance page.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the suite with command line arguments ``argv``; returns the exit status."""
    from .cli import main as _main

    return _main(argv)
