"""A short tour of aiolmdb: `make demo` runs it.

Opens an environment in ./demo-data (recreated each run), writes and reads concurrently with
coders, scans a range, runs an atomic transfer across two databases, and prints what it does
with a few timings.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

import aiolmdb

DATA = Path(__file__).resolve().parent.parent / "demo-data"


def step(title: str) -> None:
    print(f"\n== {title}")


async def main() -> int:
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    print(f"aiolmdb {aiolmdb.__version__}: environment in {DATA}")

    # A small map on purpose: aiolmdb grows it when a write batch does not fit.
    async with aiolmdb.open(DATA, map_size=1 << 18) as env:
        users = env.open_db(
            "users", key_coder=aiolmdb.StringCoder(), value_coder=aiolmdb.JSONCoder()
        )
        counters = env.open_db(
            "counters", key_coder=aiolmdb.StringCoder(), value_coder=aiolmdb.UInt64Coder()
        )

        step("10,000 concurrent puts (group-committed: every await returns after its commit)")
        start = time.perf_counter()
        await asyncio.gather(
            *(users.put(f"user:{i:05d}", {"id": i, "name": f"user {i}"}) for i in range(10_000))
        )
        elapsed = time.perf_counter() - start
        map_kib = env.info()["map_size"] >> 10
        print(
            f"   {10_000 / elapsed:,.0f} durable puts/s; map grown from 256 KiB to {map_kib:,} KiB"
        )

        step("20,000 concurrent gets (batched: one thread hop per batch)")
        start = time.perf_counter()
        found = await asyncio.gather(*(users.get(f"user:{i % 10_000:05d}") for i in range(20_000)))
        elapsed = time.perf_counter() - start
        assert all(found)
        print(f"   {20_000 / elapsed:,.0f} gets/s; user:00042 -> {await users.get('user:00042')}")

        step("get_multi / put_multi (atomic) / delete")
        print("  ", await users.get_multi(["user:00001", "user:99999"], default="<missing>"))
        await counters.put_multi({"apples": 3, "pears": 5})
        print("   deleted user:00000:", await users.delete("user:00000"))
        print(
            "   insert-if-absent on an existing key:",
            await counters.put("apples", 9, overwrite=False),
        )

        step("range queries")
        first_three = [key async for key in users.keys(prefix="user:", limit=3)]
        last_two = [key async for key in users.keys(reverse=True, limit=2)]
        print(f"   first three: {first_three}\n   last two: {last_two}")
        print("   count:", await users.count(), " first:", await users.first())

        step("atomic read-modify-write")
        total = await asyncio.gather(
            *(counters.update("hits", lambda n: (n or 0) + 1) for _ in range(500))
        )
        print("   500 concurrent increments ->", max(total))

        step("one transaction across two databases")

        def transfer(txn: aiolmdb.Transaction[bytes, bytes]) -> int:
            apples = txn[counters].get("apples") or 0
            txn[counters].put("apples", apples - 1)
            txn[users].put("user:00001", {"id": 1, "apples": 1})
            return apples - 1

        print("   apples left:", await env.run(transfer, write=True))

        async with env.begin() as snap:
            await counters.put("pears", 0)
            print(
                "   snapshot still sees pears =",
                await snap[counters].get("pears"),
                "; now:",
                await counters.get("pears"),
            )

    print("\nclosed cleanly.")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
