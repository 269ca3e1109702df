"""``python -m benchmarks`` (``make bench``): the suite itself is :mod:`aiolmdb._bench`, so
that ``aiolmdb bench`` works from an installed package too."""

from __future__ import annotations

from aiolmdb._bench import main

__all__ = ["main"]
