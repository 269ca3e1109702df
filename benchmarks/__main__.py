"""``python -m benchmarks``: runs :func:`aiolmdb._bench.main`; see benchmarks/README.md."""

from __future__ import annotations

import sys

from aiolmdb._bench import main

if __name__ == "__main__":
    sys.exit(main())
