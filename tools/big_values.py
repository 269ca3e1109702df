"""Measure what large values cost the event loop: the figures of docs/performance.md (large
values) and docs/guide/coders.md (coders on large values).

A 1 ms ticker task runs on the loop while one operation runs; the longest gap between its
ticks is how long the loop was kept from running (the idle gap on a quiet machine is 1-3 ms).
Run it on a quiet machine (check ``uptime``)::

    python tools/big_values.py            # everything (about two minutes, 2 GB of disk)
    python tools/big_values.py --coders   # the coder table only

Not part of ``make test``: it asserts nothing, it prints Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import lmdb

import aiolmdb
from aiolmdb._codecs import builtin as coders_module

MiB = 1 << 20


async def gap_of(op: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(longest loop gap, elapsed), in ms, while ``op()`` runs."""
    work = asyncio.ensure_future(op())
    gaps: list[float] = []
    started = last = time.perf_counter()
    while not work.done():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    elapsed = time.perf_counter() - started
    await work
    del work  # the result is freed here, outside the measurement
    return max(gaps, default=0.0) * 1000, elapsed * 1000


async def measure(op: Callable[[], Awaitable[Any]], repeat: int) -> tuple[list[float], float]:
    """The longest gaps of ``repeat`` runs, sorted, and the median elapsed time."""
    gaps: list[float] = []
    times: list[float] = []
    for _ in range(repeat):
        gap, elapsed = await gap_of(op)
        gaps.append(gap)
        times.append(elapsed)
    return sorted(gaps), statistics.median(times)


def row(name: str, gaps: list[float], elapsed: float) -> str:
    shown = "-".join(f"{g:.0f}" for g in (gaps[0], gaps[-1])) if len(gaps) > 1 else f"{gaps[0]:.0f}"
    return f"| {name} | {shown} | {statistics.median(gaps):.1f} | {elapsed:.0f} |"


HEADER = (
    "| operation | longest gap, min-max (ms) | median (ms) | elapsed, median (ms) |\n"
    "|---|---|---|---|"
)


async def raw_values(repeat: int) -> None:
    print("\n### Raw values (IdentityCoder)\n")
    print(HEADER)
    with tempfile.TemporaryDirectory() as path:
        async with aiolmdb.open(path, map_size=2048 * MiB, inline_reads=False) as env:
            db = env.get_default_database()
            await db.put_multi([(b"s%d" % i, b"v" * 100) for i in range(10)])
            for size in (16, 256):
                value = os.urandom(MiB) * size
                await db.put(b"big", value)

                async def get_with_ten() -> None:
                    await asyncio.gather(db.get(b"big"), *(db.get(b"s%d" % i) for i in range(10)))

                print(row(f"get {size} MB + ten small gets", *await measure(get_with_ten, repeat)))

                async def stream() -> None:
                    async for _ in db.get_chunks(b"big"):
                        pass

                print(row(f"get_chunks {size} MB (1 MiB pieces)", *await measure(stream, repeat)))

                async def put(value: bytes = value) -> None:
                    await db.put(b"other", value)

                print(row(f"put {size} MB", *await measure(put, repeat)))

                async def put_chunks(value: bytes = value) -> None:
                    await db.put_chunks(b"other", io.BytesIO(value))

                print(row(f"put_chunks {size} MB (a file)", *await measure(put_chunks, repeat)))


def sync_put(size: int, repeat: int) -> None:
    """A put of ``size`` MB with sync py-lmdb and with aiolmdb, each in a fresh environment."""
    value = os.urandom(MiB) * size
    sync_ms: list[float] = []
    async_ms: list[float] = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as path:
            env = lmdb.open(path, map_size=2 * size * MiB)
            started = time.perf_counter()
            with env.begin(write=True) as txn:
                txn.put(b"k", value)
            sync_ms.append((time.perf_counter() - started) * 1000)
            env.close()
        with tempfile.TemporaryDirectory() as path:

            async def one() -> float:
                async with aiolmdb.open(path, map_size=2 * size * MiB) as aenv:
                    db = aenv.get_default_database()
                    started = time.perf_counter()
                    await db.put(b"k", value)
                    return (time.perf_counter() - started) * 1000

            async_ms.append(asyncio.run(one()))
    print(f"\nput of {size} MB in a fresh environment (sync=True), ms, sorted:")
    print(f"- sync py-lmdb: {', '.join(f'{t:.0f}' for t in sorted(sync_ms))}")
    print(f"- aiolmdb:      {', '.join(f'{t:.0f}' for t in sorted(async_ms))}")


def document(size: int) -> list[dict[str, Any]]:
    """A JSON-compatible list of records about ``size`` bytes long as JSON."""
    record = {"id": 0, "name": "user-000000", "tags": ["alpha", "beta"], "score": 12.5}
    count = size // 80
    return [dict(record, id=i, name=f"user-{i:06d}") for i in range(count)]


def coder_cases() -> list[tuple[str, Callable[[], aiolmdb.Coder[Any]], bool]]:
    """(name, coder factory, with std json instead of orjson)."""
    cases: list[tuple[str, Callable[[], aiolmdb.Coder[Any]], bool]] = [
        ("JSONCoder (std json)", aiolmdb.JSONCoder, True),
        ("JSONCoder (orjson)", aiolmdb.JSONCoder, False),
        ("JSONCoder().compressed() (zlib 1)", lambda: aiolmdb.JSONCoder().compressed(), False),
        (
            'JSONCoder().compressed(codec="zstd")',
            lambda: aiolmdb.JSONCoder().compressed(codec="zstd"),
            False,
        ),
        (
            'JSONCoder().compressed(codec="lz4")',
            lambda: aiolmdb.JSONCoder().compressed(codec="lz4"),
            False,
        ),
        ("MsgpackCoder", aiolmdb.MsgpackCoder, False),
        (
            'MsgspecCoder(list[dict[str, Any]], format="json")',
            lambda: aiolmdb.MsgspecCoder(list[dict[str, Any]], format="json"),
            False,
        ),
        (
            'MsgspecCoder(list[dict[str, Any]], format="msgpack")',
            lambda: aiolmdb.MsgspecCoder(list[dict[str, Any]], format="msgpack"),
            False,
        ),
        ("PickleCoder", aiolmdb.PickleCoder, False),
    ]
    return cases


async def coded_values(size_mb: int, repeat: int) -> None:
    value = document(size_mb * MiB)
    # Keep the collector from walking this script's own document on every pass: a stall
    # measured is then the decoding's (and its own garbage's), not this script's.
    gc.collect()
    gc.freeze()
    print(f"\n### A {size_mb} MB JSON document ({len(value)} records) with each coder\n")
    print(
        "| coder | stored (MB) | get: longest gap, median (ms) | get: elapsed (ms) "
        "| put: longest gap, median (ms) | put: elapsed (ms) |\n|---|---|---|---|---|---|"
    )
    orjson_loads = coders_module._ORJSON_LOADS  # std json for one row
    with tempfile.TemporaryDirectory() as path:
        async with aiolmdb.open(path, map_size=1024 * MiB, inline_reads=False) as env:
            for index, (name, make, std_json) in enumerate(coder_cases()):
                try:
                    coder = make()
                except ImportError as exc:
                    print(f"| {name} | not installed ({exc}) | | | | |")
                    continue
                db = await env.open_db(f"c{index}", value_coder=coder)
                coders_module._ORJSON_LOADS = None if std_json else orjson_loads
                try:
                    put_gaps, put_ms = await measure(partial(db.put, b"doc", value), repeat)
                    get_gaps, get_ms = await measure(partial(db.get, b"doc"), repeat)
                    stored = await _stored_size(db)
                finally:
                    coders_module._ORJSON_LOADS = orjson_loads
                print(
                    f"| {name} | {stored / MiB:.1f} | {statistics.median(get_gaps):.0f} "
                    f"| {get_ms:.0f} | {statistics.median(put_gaps):.0f} | {put_ms:.0f} |"
                )


async def _stored_size(db: aiolmdb.AsyncDatabase[bytes, Any]) -> int:
    """The size of the value stored under b"doc", as stored."""
    size = 0
    async for piece in db.get_chunks(b"doc"):
        size += len(piece)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coders", action="store_true", help="the coder table only")
    parser.add_argument("--repeat", type=int, default=5, help="runs per operation (default 5)")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, py-lmdb {lmdb.__version__}, load {os.getloadavg()}")
    if not args.coders:
        asyncio.run(raw_values(args.repeat))
        sync_put(256, args.repeat)
    asyncio.run(coded_values(16, args.repeat))


if __name__ == "__main__":
    main()
