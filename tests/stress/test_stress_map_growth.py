"""Reliability: map growth (promise 1).

* growth on (the default): a 1 MiB map takes 40 MiB of concurrent ``put`` and ``put_multi``;
* growth off: ``lmdb.MapFullError`` reaches exactly the writes that do not fit, nothing partial;
* ``max_map_size`` caps growth;
* another PROCESS grows the map (``lmdb.MapResizedError`` inside the engine) while this one is
  busy reading and writing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import lmdb
import pytest

from ._stress_util import (
    TIMEOUT,
    Figures,
    MiB,
    assert_no_aiolmdb_threads,
    open_env,
    run_child_async,
    value_for,
)

KiB = 1024


def stored_pairs(path: Path) -> dict[bytes, bytes]:
    """Everything in the default database, read with plain py-lmdb (environment closed)."""
    env = lmdb.open(str(path), max_dbs=128, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return {bytes(k): bytes(v) for k, v in txn.cursor()}
    finally:
        env.close()


# --------------------------------------------------------------------------------------------
# growth on
# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("inline_reads", [False, True, None], ids=["threaded", "inline", "auto"])
async def test_one_mib_map_takes_40_mib_of_concurrent_writes(
    tmp_path: Path, inline_reads: bool | None, figures: Figures
) -> None:
    path = tmp_path / "env"
    env = open_env(path, map_size=1 * MiB, inline_reads=inline_reads)
    db = env.get_default_database()
    size = 64 * KiB
    single = [b"p%04d" % i for i in range(320)]  # 20 MiB through put
    multi = [[b"m%02d-%d" % (m, j) for j in range(8)] for m in range(40)]  # 20 MiB, put_multi
    # Interleaved so that batches mix both kinds; reads run alongside (they wait at the gate
    # while the map is resized).
    ops: list[asyncio.Future[object]] = []
    for i in range(320):
        ops.append(asyncio.ensure_future(db.put(single[i], value_for(single[i], size))))
        if i % 8 == 0:
            keys = multi[i // 8]
            ops.append(asyncio.ensure_future(db.put_multi([(k, value_for(k, size)) for k in keys])))
        if i % 4 == 0:
            ops.append(asyncio.ensure_future(db.get(single[i // 2])))
    results = await asyncio.wait_for(asyncio.gather(*ops), TIMEOUT)
    assert all(r in (True, 8) or r is None or isinstance(r, bytes) for r in results)
    assert sum(1 for r in results if r is True) == 320
    assert sum(1 for r in results if r == 8) == 40

    map_size = env.info()["map_size"]
    assert map_size >= 40 * MiB, map_size
    every = single + [k for keys in multi for k in keys]
    for start in range(0, len(every), 64):
        chunk = every[start : start + 64]
        got = await db.get_multi(chunk)
        assert got == {k: value_for(k, size) for k in chunk}
    assert await db.count() == 640
    await asyncio.wait_for(env.close(), TIMEOUT)
    assert_no_aiolmdb_threads()
    on_disk = stored_pairs(path)
    assert on_disk == {k: value_for(k, size) for k in every}
    figures.maximum("map growth: map_size after 40 MiB into a 1 MiB map (MiB)", map_size / MiB)


# --------------------------------------------------------------------------------------------
# growth off
# --------------------------------------------------------------------------------------------


async def test_map_full_reaches_exactly_the_writes_that_do_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "env"
    env = open_env(path, map_size=1 * MiB, map_growth=False)
    db = env.get_default_database()

    # Phase 1: writes that can never fit, submitted together with small neighbours.
    small = [b"s%03d" % i for i in range(40)]
    too_big_multi = [b"tb%d" % i for i in range(8)]  # 8 x 200 KiB: each fits, all do not
    ops: list[asyncio.Future[object]] = [
        asyncio.ensure_future(db.put(b"big", b"x" * (2 * MiB))),
        asyncio.ensure_future(db.put_multi([(k, value_for(k, 200 * KiB)) for k in too_big_multi])),
    ]
    ops += [asyncio.ensure_future(db.put(k, value_for(k, 100))) for k in small[:20]]
    ops.append(asyncio.ensure_future(db.put_multi([(k, value_for(k, 100)) for k in small[20:]])))
    results = await asyncio.wait_for(asyncio.gather(*ops, return_exceptions=True), TIMEOUT)
    assert isinstance(results[0], lmdb.MapFullError), results[0]
    assert isinstance(results[1], lmdb.MapFullError), results[1]
    assert results[2:] == [True] * 20 + [20]
    assert await db.get(b"big") is None
    assert await db.get_multi(too_big_multi) == dict.fromkeys(too_big_multi)  # nothing partial
    assert await db.get_multi(small) == {k: value_for(k, 100) for k in small}

    # Phase 2: fill the map with concurrent puts and put_multis of the same size.
    size = 32 * KiB
    singles = [b"f%03d" % i for i in range(60)]
    multis = [[b"g%02d-%d" % (m, j) for j in range(4)] for m in range(10)]
    ops2: list[asyncio.Future[object]] = []
    for i, k in enumerate(singles):
        ops2.append(asyncio.ensure_future(db.put(k, value_for(k, size))))
        if i % 6 == 0:
            keys = multis[i // 6]
            ops2.append(
                asyncio.ensure_future(db.put_multi([(k2, value_for(k2, size)) for k2 in keys]))
            )
    results2 = await asyncio.wait_for(asyncio.gather(*ops2, return_exceptions=True), TIMEOUT)
    unexpected = [
        r for r in results2 if r not in (True, 4) and not isinstance(r, lmdb.MapFullError)
    ]
    assert not unexpected, unexpected
    failed = sum(isinstance(r, lmdb.MapFullError) for r in results2)
    assert 0 < failed < len(results2), results2

    # Every acknowledged write is there in full; every failed one left nothing.
    expected: dict[bytes, bytes | None] = {}
    index = 0
    for i, k in enumerate(singles):
        expected[k] = value_for(k, size) if results2[index] is True else None
        index += 1
        if i % 6 == 0:
            ok = results2[index] == 4
            for k2 in multis[i // 6]:
                expected[k2] = value_for(k2, size) if ok else None
            index += 1
    got = await db.get_multi(list(expected))
    assert got == expected
    stored_bytes = sum(len(v) for v in got.values() if v is not None)
    assert stored_bytes >= MiB // 4, "the map was declared full while mostly empty"
    assert env.info()["map_size"] == 1 * MiB  # no growth
    await asyncio.wait_for(env.close(), TIMEOUT)

    on_disk = stored_pairs(path)
    assert on_disk == {
        **{k: v for k, v in expected.items() if v is not None},
        **{k: value_for(k, 100) for k in small},
    }


@pytest.mark.parametrize("limit", [4 * MiB, 3 * MiB + 100], ids=["4MiB", "unaligned"])
async def test_max_map_size_caps_growth(tmp_path: Path, limit: int) -> None:
    path = tmp_path / "env"
    env = open_env(path, map_size=1 * MiB, max_map_size=limit)
    db = env.get_default_database()
    size = 64 * KiB
    keys = [b"k%04d" % i for i in range(128)]  # 8 MiB: about half fits
    results = await asyncio.wait_for(
        asyncio.gather(*(db.put(k, value_for(k, size)) for k in keys), return_exceptions=True),
        TIMEOUT,
    )
    assert all(r is True or isinstance(r, lmdb.MapFullError) for r in results), results
    failed = sum(isinstance(r, lmdb.MapFullError) for r in results)
    assert 0 < failed < len(keys)
    map_size = env.info()["map_size"]
    assert 2 * MiB < map_size <= limit, map_size
    got = await db.get_multi(keys)
    assert got == {
        k: value_for(k, size) if r is True else None for k, r in zip(keys, results, strict=True)
    }
    await asyncio.wait_for(env.close(), TIMEOUT)


# --------------------------------------------------------------------------------------------
# another process grows the map
# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("inline_reads", [False, True, None], ids=["threaded", "inline", "auto"])
async def test_map_grown_by_another_process_while_busy(
    tmp_path: Path, inline_reads: bool | None, figures: Figures
) -> None:
    path = tmp_path / "env"
    env = open_env(path, map_size=1 * MiB, inline_reads=inline_reads)
    db = env.get_default_database()
    base = [b"base%03d" % i for i in range(100)]
    assert await db.put_multi([(k, value_for(k)) for k in base]) == 100

    stop = asyncio.Event()
    done_ops = 0

    async def churn(worker: int) -> None:
        nonlocal done_ops
        n = 0
        while not stop.is_set() or n < 20:
            mine = b"w%d-%05d" % (worker, n)
            assert await db.put(mine, value_for(mine, 512))
            assert await db.get(mine) == value_for(mine, 512)  # read-your-writes
            assert await db.get(base[n % 100]) == value_for(base[n % 100])
            if n % 10 == 0:
                pairs = [(mine + b"/%d" % j, b"m") for j in range(5)]
                assert await db.put_multi(pairs) == 5
            n += 1
            done_ops += 4
        assert await db.count() >= 100

    workers = [asyncio.ensure_future(churn(w)) for w in range(8)]
    child_keys: list[bytes] = []
    rounds = 3
    value_size = 64 * KiB
    try:
        for round_ in range(rounds):
            # LMDB reports MapResizedError only when the data outgrows this process's map, so
            # the child writes more than our whole current map into its bigger one.
            current = env.info()["map_size"]
            new_size = 8 * current  # room for what this process writes meanwhile
            count = current * 3 // 2 // value_size + 1
            prefix = f"child{round_}-"
            code, out, err = await run_child_async(
                "_child_grow", path, new_size, prefix, count, value_size
            )
            assert code == 0, err
            assert out.startswith("done"), out
            keys = [b"%s%06d" % (prefix.encode(), i) for i in range(count)]
            child_keys += keys
            # This process keeps reading and writing: its first transaction after the child's
            # commit meets MapResizedError inside the engine, which adopts the new size.
            got = await asyncio.wait_for(db.get_multi(keys), TIMEOUT)
            assert got == {k: value_for(k, value_size) for k in keys}
            # The child's data lies past this process's old map: it adopted the child's size,
            # or (when its own writers filled the map first) grew its map to hold it.
            info = env.info()
            assert info["map_size"] > current
            assert info["map_size"] >= (info["last_pgno"] + 1) * (await env.stat())["psize"]
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), TIMEOUT)

    assert await db.put(b"after", b"1")
    assert await db.put_multi([(b"after2", b"2"), (b"after3", b"3")]) == 2
    assert await db.get_multi([b"after", b"after2", b"after3"]) == {
        b"after": b"1",
        b"after2": b"2",
        b"after3": b"3",
    }
    await asyncio.wait_for(env.close(), TIMEOUT)
    on_disk = stored_pairs(path)
    assert all(on_disk[k] == value_for(k, value_size) for k in child_keys)
    assert all(on_disk[k] == value_for(k) for k in base)
    figures.add("map resized by another process: rounds survived", rounds)
    figures.add("map resized by another process: concurrent ops meanwhile", done_ops)
