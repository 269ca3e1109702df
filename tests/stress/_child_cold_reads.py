"""Child process of the cold-reads stress test: the default read mode inside a memory cgroup.

Usage: ``python -m stress._child_cold_reads PATH N_KEYS SECONDS``

Opens the environment at PATH (built by the parent with ``benchmarks.cold.build``) in the
default read mode, runs the cold workload (64 tasks of random gets beside a 1 ms ticker) for
SECONDS, and prints its result as one JSON line. The parent has put this process in a memory
cgroup smaller than the data file, so the file can never be resident.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import aiolmdb
from benchmarks.cold import ColdConfig, resident_share, run_mode


def main(path: str, n_keys: int, seconds: float) -> int:
    cfg = replace(ColdConfig(), n_keys=n_keys, seconds=seconds)
    data = Path(path) / "data.mdb"
    before = resident_share(data)
    result = asyncio.run(run_mode(aiolmdb, Path(path), data, None, cfg, before))
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
