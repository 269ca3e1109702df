"""Large values: the GIL-free copy, the reads that use it, get_chunks and put_chunks."""

from __future__ import annotations

import array
import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import lmdb
import pytest
from conftest import TIMEOUT, collect, let_tasks_start, reads_inline

import aiolmdb
from aiolmdb import (
    AsyncDatabase,
    Environment,
    JSONCoder,
    ReadOnlyError,
    SnapshotExpiredError,
    StringCoder,
    TransactionError,
)
from aiolmdb._codecs.copyout import LARGE_VALUE, copy_out
from aiolmdb._store import headed as _headed
from aiolmdb._store import large as _large
from aiolmdb._store import versions as _versions
from aiolmdb._store.large import READ_SIZE, BufferedReads, take

Db = AsyncDatabase[bytes, bytes]
MiB = 1 << 20
BIG = LARGE_VALUE + 4097  # crosses the threshold and a page boundary


def blob(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ from one offset (and seed) to the next."""
    pattern = bytes((i * 7 + seed) % 251 for i in range(251))
    return (pattern * (size // 251 + 1))[:size]


def reader_txnids(env: Environment) -> list[str]:
    """The txnids of the reader slots in use (numeric column of LMDB's reader table)."""
    rows = (line.split() for line in env.readers().splitlines()[1:])
    return [parts[2] for parts in rows if len(parts) == 3 and parts[2].isdigit()]


class CopySpy:
    """Counts the large values copied without the GIL: wraps ``copy_out`` where the store
    calls it (large-value reads, and cutting a version off a large value)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = copy_out

        def spy(buf: Any, prefix: bytes = b"") -> bytes:
            self.calls += 1
            return original(buf, prefix)

        for module in (_large, _versions, _headed):
            monkeypatch.setattr(module, "copy_out", spy)


# ----------------------------------------------------------------- the copy itself
@pytest.mark.parametrize(
    "size",
    [0, 1, 4095, (1 << 16) - 1, 1 << 16, (1 << 16) + 1, LARGE_VALUE - 1, LARGE_VALUE, BIG],
)
def test_copy_out_is_an_exact_new_copy(size: int) -> None:
    data = blob(size, size)
    for source in (data, memoryview(data), bytearray(data), memoryview(data)[1:]):
        out = copy_out(source)
        assert type(out) is bytes
        assert out == bytes(source)
        assert hash(out) == hash(bytes(source))  # no stale cached hash in the new object
        # The prefix (a versioned value's version) goes first, also in the GIL-free copy.
        assert copy_out(source, b"version!") == b"version!" + bytes(source)
    if size >= 1 << 16:
        assert copy_out(data) is not data


def test_copy_out_of_items_wider_than_a_byte_copies_every_byte() -> None:
    items = array.array("i", range(100_000))
    assert copy_out(memoryview(items)) == items.tobytes()


def test_copy_out_of_a_strided_buffer_copies_what_bytes_would() -> None:
    strided = memoryview(blob(300_000))[::3]
    assert copy_out(strided) == bytes(strided)
    assert copy_out(strided, b"head") == b"head" + bytes(strided)
    assert aiolmdb.IdentityCoder().serialize(strided) == bytes(strided)


def test_take_copies_large_values_without_the_gil(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = CopySpy(monkeypatch)
    assert take(memoryview(b"x" * 100)) == b"x" * 100
    assert spy.calls == 0
    assert take(memoryview(blob(BIG))) == blob(BIG)
    assert spy.calls == 1


# ----------------------------------------------------------------- buffered reads
def test_buffered_reads_keep_to_the_snapshot_of_the_transaction(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "e"), map_size=64 * MiB, max_readers=4)
    try:
        with env.begin(write=True) as txn:
            txn.put(b"k", blob(BIG, 1))
        old = env.begin()
        with env.begin(write=True) as txn:
            txn.put(b"k", blob(BIG, 2))
        # A write came after ``old`` began: its twin would see another snapshot, so the
        # reads go to ``old`` itself.
        reads = BufferedReads(old, env)
        assert reads.get(b"k", None, None) == blob(BIG, 1)
        assert reads.get(b"absent", None, None) is None
        reads.close()
        reads.close()  # idempotent
        new = env.begin()
        reads = BufferedReads(new, env)
        assert reads.get(b"k", None, None) == blob(BIG, 2)
        assert reads.get(b"absent", None, None) is None
        reads.close()
        # Without an environment (a context made by hand) the reads stay plain.
        assert BufferedReads(new, None).get(b"k", None, None) == blob(BIG, 2)
        old.abort()
        new.abort()
    finally:
        env.close()


def test_buffered_reads_without_a_free_reader_slot_read_plainly(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "e"), map_size=64 * MiB, max_readers=1)
    try:
        with env.begin(write=True) as txn:
            txn.put(b"k", b"v")
        txn = env.begin()
        reads = BufferedReads(txn, env)  # the only slot is txn's: no twin
        assert reads.get(b"k", None, None) == b"v"
        reads.close()
        txn.abort()
    finally:
        env.close()


# ----------------------------------------------------------------- reads of large values
async def test_a_database_written_large_values_reads_them_without_the_gil(
    env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline = reads_inline(env)
    db = env.get_default_database()
    spy = CopySpy(monkeypatch)
    await db.put(b"small", b"s")
    await db.put(b"big", blob(BIG))  # flags the database
    assert await db.get(b"big") == blob(BIG)
    # An inline get of bytes copies plainly: the loop waits for the copy either way.
    assert spy.calls == (0 if inline else 1)
    assert await db.get(b"small") == b"s"
    assert await db.get(b"absent", b"d") == b"d"
    assert await db.get_multi([b"big", b"small", b"absent"]) == {
        b"big": blob(BIG),
        b"small": b"s",
        b"absent": None,
    }
    assert spy.calls == (1 if inline else 2)


async def written_then_reopened(path: Path, text: str) -> Environment:
    """An environment whose databases hold large values written by another tool (raw
    py-lmdb: no large-values marker, so no database is known to hold them yet)."""
    raw = lmdb.open(str(path), map_size=64 * MiB, max_dbs=4)
    try:
        with raw.begin(write=True) as txn:
            txn.put(b"big", blob(BIG))
            coded = raw.open_db(b"coded", txn=txn)
            txn.put(b"big", text.encode(), db=coded)
    finally:
        raw.close()
    return aiolmdb.open(path, map_size=64 * MiB, reads="threaded")  # copies on reader threads


@pytest.mark.parametrize("how", ["get", "get_multi_coded", "get_coded"])
async def test_the_first_large_read_flags_the_database(
    path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A process that did not write the value copies it plainly once, then without the GIL."""
    text = "é" * (BIG // 2)
    env = await written_then_reopened(path, text)
    try:
        raw = env.get_default_database()
        coded = await env.open_db("coded", value_coder=StringCoder())
        spy = CopySpy(monkeypatch)
        for _ in range(2):
            if how == "get":
                assert await raw.get(b"big") == blob(BIG)
            elif how == "get_multi_bytes":
                assert await raw.get_multi([b"big", b"x"]) == {b"big": blob(BIG), b"x": None}
            elif how == "get_multi_coded":
                assert await coded.get_multi([b"big"]) == {b"big": text}
            else:
                assert await coded.get(b"big") == text
            assert spy.calls <= 1
        assert spy.calls == 1  # the first read was plain: that is how the database got flagged
    finally:
        await asyncio.wait_for(env.close(), TIMEOUT)
    # A read stores nothing (it may be a read-only process): a fresh opening reads plainly once.
    async with aiolmdb.open(path, map_size=64 * MiB, reads="threaded") as env:
        coded = await env.open_db("coded", value_coder=StringCoder())
        spy = CopySpy(monkeypatch)
        assert await coded.get(b"big") == text
        assert spy.calls == 0


# ----------------------------------------------------------------- the stored marker
def marker_in(source: Path | Environment, name: bytes) -> bool | None:
    """Whether the large-values marker of database ``name`` is committed (None: there is no
    metadata database), read with raw py-lmdb: from a closed environment's path, or through
    an open (idle) one's py-lmdb environment."""
    if isinstance(source, Environment):
        return _marker_in(source.lmdb_environment, name)
    raw = lmdb.open(str(source), map_size=64 * MiB, max_dbs=4, readonly=True)
    try:
        return _marker_in(raw, name)
    finally:
        raw.close()


def _marker_in(raw: lmdb.Environment, name: bytes) -> bool | None:
    with raw.begin() as txn:
        if txn.get(b"__aiolmdb__") is None:
            return None
        meta = raw.open_db(b"__aiolmdb__", txn=txn, create=False)
        return txn.get(b"large:" + name, None, meta) is not None


async def write_large(db: AsyncDatabase[Any, Any], how: str) -> None:
    """A large value written by ``how``: each of the write operations that flag a database."""
    if how == "put_bytes":
        assert await db.put(b"big", blob(BIG))
    elif how == "put":
        assert await db.put(b"big", blob(BIG), overwrite=True)  # ops.put
    elif how == "put_multi":
        assert await db.put_multi([(b"a", b"small"), (b"big", blob(BIG))]) == 2
    else:
        assert await db.put_chunks(b"big", io.BytesIO(blob(BIG)))


async def test_a_reopened_environment_copies_the_first_large_read_without_the_gil(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with aiolmdb.open(path, map_size=64 * MiB) as env:
        await (await env.open_db("big")).put(b"big", blob(BIG))
    async with aiolmdb.open(path, map_size=64 * MiB, inline_reads=False) as env:
        db = await env.open_db("big")
        spy = CopySpy(monkeypatch)
        assert await db.get(b"big") == blob(BIG)
        assert spy.calls == 1  # the very first read: no plain copy on the way to knowing


@pytest.mark.parametrize("how", ["put_bytes", "put", "put_multi", "put_chunks"])
@pytest.mark.parametrize("meta", ["new", "existing"], ids=["meta-new", "meta-existing"])
@pytest.mark.parametrize("readonly", [False, True], ids=["writable", "readonly"])
async def test_a_reopened_environment_reads_large_values_without_the_gil_at_once(
    path: Path, monkeypatch: pytest.MonkeyPatch, how: str, meta: str, readonly: bool
) -> None:
    """The first large write stores the fact with the database (in its own transaction when
    the metadata database exists, else in a write of its own that creates it): a fresh
    opening, read-only too, copies the very first large read without the GIL."""
    async with aiolmdb.open(path, map_size=64 * MiB) as env:
        if meta == "existing":
            await env.open_db("versioned", versioned=True)  # makes the metadata database
        db = await env.open_db("big")
        await db.put(b"small", b"s")
        assert marker_in(env, b"big") is (False if meta == "existing" else None)
        await write_large(db, how)
        await write_large(db, how)  # a second large write adds nothing
    assert marker_in(path, b"big") is True
    async with aiolmdb.open(path, map_size=64 * MiB, readonly=readonly, reads="threaded") as env:
        db = await env.open_db("big")
        spy = CopySpy(monkeypatch)
        assert await db.get(b"small") == b"s"
        assert spy.calls == 0
        assert await db.get(b"big") == blob(BIG)
        assert spy.calls == 1


async def test_a_plain_put_in_a_versioned_database_stores_the_marker_in_its_transaction(
    path: Path,
) -> None:
    async with aiolmdb.open(path, map_size=64 * MiB) as env:
        db = await env.open_db("v", versioned=True)
        await db.put_multi([(b"a", b"small")])
        assert marker_in(env, b"v") is False
        await db.put(b"big", blob(BIG))
        # Committed with the value, not after it.
        assert marker_in(env, b"v") is True


async def test_the_default_database_is_marked_only_beside_existing_metadata(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating the metadata database would add its name to the default database's keys."""
    async with aiolmdb.open(path, map_size=64 * MiB) as env:
        main = env.get_default_database()
        await main.put(b"big", blob(BIG))
        assert await collect(main.keys()) == [b"big"]
    assert marker_in(path, b"") is None
    async with aiolmdb.open(path, map_size=64 * MiB) as env:
        await env.open_db("v", versioned=True)  # makes the metadata database
        await env.get_default_database().put(b"big", blob(BIG, 1))
    assert marker_in(path, b"") is True
    async with aiolmdb.open(path, map_size=64 * MiB, inline_reads=False) as env:
        spy = CopySpy(monkeypatch)
        assert await env.get_default_database().get(b"big") == blob(BIG, 1)
        assert spy.calls == 1


async def test_dropping_a_database_removes_its_marker(path: Path) -> None:
    async with aiolmdb.open(path, map_size=64 * MiB) as env:
        db = await env.open_db("big")
        await db.put(b"big", blob(BIG))
        await env.open_db("other")  # waits for the queued marker write: it runs before
    assert marker_in(path, b"big") is True
    async with aiolmdb.open(path, map_size=64 * MiB) as env:
        db = await env.open_db("big")
        await db.drop(delete=True)
        db = await env.open_db("big")
        await db.put(b"small", b"s")
    assert marker_in(path, b"big") is False


async def test_get_multi_of_a_bytes_database_flags_nothing(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its values are not measured (a cost on every call): it copies plainly, and a get after
    it finds the database unflagged."""
    env = await written_then_reopened(path, "unused")
    try:
        raw = env.get_default_database()
        spy = CopySpy(monkeypatch)
        for _ in range(2):
            assert await raw.get_multi([b"big", b"x"]) == {b"big": blob(BIG), b"x": None}
        assert spy.calls == 0
        assert await raw.get(b"big") == blob(BIG)  # plain, and flags it
        assert await raw.get(b"big") == blob(BIG)
        assert spy.calls == 1
    finally:
        await asyncio.wait_for(env.close(), TIMEOUT)


async def test_the_first_large_entry_read_flags_the_database(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with aiolmdb.open(path, map_size=64 * MiB) as env:
        db = await env.open_db("v", versioned=True)
        await db.put(b"big", blob(BIG))
    # Its large-values marker removed, as in a database written before markers existed.
    raw = lmdb.open(str(path), map_size=64 * MiB, max_dbs=4)
    try:
        with raw.begin(write=True) as txn:
            assert txn.delete(b"large:v", db=raw.open_db(b"__aiolmdb__", txn=txn))
    finally:
        raw.close()
    spy = CopySpy(monkeypatch)
    async with aiolmdb.open(path, map_size=64 * MiB) as env:
        db = await env.open_db("v", versioned=True)
        # A large versioned value is also copied without the GIL when its version is cut off.
        entries = await db.get_multi_entries([b"big"])
        assert spy.calls == 1  # read plainly (that flags the database), version cut off
        assert entries == await db.get_multi_entries([b"big"])
        assert spy.calls == 3
        entry = await db.get_entry(b"big")
        assert entry is not None
        assert entry.value == blob(BIG)
        assert spy.calls == 5


async def test_versioned_reads_of_large_values(
    env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = await env.open_db("v", versioned=True)
    await db.put(b"big", blob(BIG))
    spy = CopySpy(monkeypatch)
    entry = await db.get_entry(b"big")
    assert entry is not None
    assert entry.value == blob(BIG)
    entries = await db.get_multi_entries([b"big", b"absent"])
    assert entries[b"absent"] is None
    assert entries[b"big"] == entry
    assert await db.get(b"big") == blob(BIG)
    assert spy.calls == 6  # each read: out of the map, then the version cut off


async def test_a_write_transaction_reads_its_own_large_writes(env: Environment) -> None:
    db = env.get_default_database()
    await db.put(b"big", blob(BIG, 1))

    def rewrite(txn: aiolmdb.Transaction[bytes, bytes]) -> bytes | None:
        txn.put(b"big", blob(BIG, 2))
        return txn.get(b"big")  # its twin would be another snapshot: read plainly

    assert await db.run(rewrite, write=True) == blob(BIG, 2)
    async with env.begin() as snap:
        await db.put(b"big", blob(BIG, 3))
        assert await snap[db].get(b"big") == blob(BIG, 2)  # the snapshot's, not the latest
    assert await db.get(b"big") == blob(BIG, 3)


# ----------------------------------------------------------------- get_chunks
@pytest.mark.parametrize("size", [0, 1, 1000, BIG])
@pytest.mark.parametrize("chunk_size", [1, 1000, MiB])
async def test_get_chunks_yields_the_value_in_pieces(
    env: Environment, size: int, chunk_size: int
) -> None:
    if chunk_size == 1 and size > 1000:
        pytest.skip("a million one-byte pieces prove nothing more")
    db = env.get_default_database()
    await db.put(b"k", blob(size))
    pieces = await collect(db.get_chunks(b"k", chunk_size))
    assert b"".join(pieces) == blob(size)
    assert all(type(p) is bytes for p in pieces)
    assert [len(p) for p in pieces[:-1]] == [chunk_size] * (len(pieces) - 1)
    assert len(pieces) == -(-size // chunk_size)


async def test_get_chunks_of_an_absent_key_raises_key_error(db: Db) -> None:
    with pytest.raises(KeyError):
        await collect(db.get_chunks(b"absent"))


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10"])
def test_get_chunks_refuses_a_bad_chunk_size(db: Db, bad: Any) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        db.get_chunks(b"k", bad)


async def test_get_chunks_never_mixes_two_writes(env: Environment) -> None:
    db = env.get_default_database()
    await db.put(b"k", blob(BIG, 1))
    pieces = []
    async for piece in db.get_chunks(b"k", 100_000):
        pieces.append(piece)
        if len(pieces) == 1:
            await db.put(b"k", blob(BIG, 2))  # same length, other bytes
        elif len(pieces) == 2:
            await db.delete(b"k")
        elif len(pieces) == 3:
            await db.put(b"k", blob(BIG + 5, 3))
    assert b"".join(pieces) == blob(BIG, 1)
    assert await db.get(b"k") == blob(BIG + 5, 3)
    await let_tasks_start()
    assert reader_txnids(env) == []


async def test_get_chunks_releases_its_transaction_when_left(env: Environment) -> None:
    db = env.get_default_database()
    await db.put(b"k", blob(BIG))
    async with contextlib.aclosing(db.get_chunks(b"k", 1000)) as pieces:
        async for _ in pieces:
            assert len(reader_txnids(env)) == 1
            break
    await let_tasks_start()
    assert reader_txnids(env) == []


async def test_get_chunks_ends_with_an_error_when_the_map_grows(
    open_env: Callable[..., Environment],
) -> None:
    env = open_env(map_size=1 << 20)
    db = env.get_default_database()
    await db.put(b"k", blob(300_000))
    pieces = db.get_chunks(b"k", 1000)
    assert len(await anext(pieces)) == 1000
    for i in range(40):  # up to 8 MB in 200 KB commits: the map must grow
        await db.put_multi([(b"f%03d-%02d" % (i, j), b"x" * 4000) for j in range(50)])
        if env.info()["map_size"] > 1 << 20:
            break
    assert env.info()["map_size"] > 1 << 20
    with pytest.raises(SnapshotExpiredError, match="read it again"):
        await anext(pieces)
    await let_tasks_start()
    assert reader_txnids(env) == []


async def test_get_chunks_gives_the_stored_bytes(env: Environment) -> None:
    versioned = await env.open_db("v", versioned=True)
    await versioned.put(b"k", blob(5000))
    assert b"".join(await collect(versioned.get_chunks(b"k", 999))) == blob(5000)
    documents = await env.open_db("j", value_coder=JSONCoder())
    await documents.put(b"k", {"a": [1, 2]})
    assert b"".join(await collect(documents.get_chunks(b"k"))) == b'{"a": [1, 2]}'


async def test_get_chunks_in_a_transaction_reads_that_transaction(env: Environment) -> None:
    db = env.get_default_database()
    await db.put(b"k", blob(5000, 1))
    async with env.begin() as snap:
        await db.put(b"k", blob(5000, 2))
        assert b"".join(await collect(snap[db].get_chunks(b"k", 999))) == blob(5000, 1)
        with pytest.raises(KeyError):
            await collect(snap[db].get_chunks(b"absent"))
    async with env.begin(write=True) as txn:
        await txn[db].put(b"k", blob(3000, 3))
        assert b"".join(await collect(txn[db].get_chunks(b"k", 1000))) == blob(3000, 3)
    versioned = await env.open_db("v", versioned=True)
    await versioned.put(b"k", b"value")
    async with env.begin() as snap:
        assert await collect(snap[versioned].get_chunks(b"k", 2)) == [b"va", b"lu", b"e"]


# ----------------------------------------------------------------- put_chunks
async def pieces_of(*pieces: Any) -> AsyncIterator[Any]:
    """An async iterable that never waits (the worst case for the loop)."""
    for piece in pieces:
        yield piece


async def test_put_chunks_stores_the_pieces_joined(env: Environment) -> None:
    db = env.get_default_database()
    parts = [b"a" * 10, bytearray(b"b" * 3), memoryview(blob(READ_SIZE * 2 + 7)), b""]
    assert await db.put_chunks(b"k", pieces_of(*parts)) is True
    assert await db.get(b"k") == b"".join(bytes(p) for p in parts)
    assert await db.put_chunks(b"empty", pieces_of()) is True
    assert await db.get(b"empty") == b""


async def test_put_chunks_lets_the_loop_run_while_it_gathers(db: Db) -> None:
    ran = 0

    async def other() -> None:
        nonlocal ran
        while True:
            ran += 1
            await asyncio.sleep(0)

    async def source() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * READ_SIZE
        assert ran > 1, "the loop did not run while the pieces were gathered"

    task = asyncio.ensure_future(other())
    await let_tasks_start()
    try:
        assert await db.put_chunks(b"k", source())
    finally:
        task.cancel()
    assert await db.get(b"k") == b"x" * READ_SIZE * 4


async def test_put_chunks_reads_a_file(db: Db) -> None:
    data = blob(READ_SIZE * 2 + 13)
    assert await db.put_chunks(b"k", io.BytesIO(data))
    assert b"".join(await collect(db.get_chunks(b"k"))) == data

    class AsyncFile:
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        async def read(self, size: int) -> bytes:
            return self._data.read(size)

    assert await db.put_chunks(b"a", AsyncFile(data))
    assert await db.get(b"a") == data


async def test_put_chunks_refuses_what_is_not_bytes(db: Db) -> None:
    with pytest.raises(TypeError, match="not str"):
        await db.put_chunks(b"k", pieces_of(b"a", "text"))
    with pytest.raises(TypeError, match="async iterable"):
        await db.put_chunks(b"k", [b"a"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await db.put_chunks(b"k", pieces_of(b"a", 12))
    assert await db.get(b"k") is None


async def test_put_chunks_in_versioned_and_dupsort_databases(env: Environment) -> None:
    versioned = await env.open_db("v", versioned=True)
    await versioned.put(b"k", b"old")
    before = await versioned.get_entry(b"k")
    assert await versioned.put_chunks(b"k", pieces_of(blob(BIG)))
    after = await versioned.get_entry(b"k")
    assert before is not None
    assert after is not None
    assert after.value == blob(BIG)
    assert after.version > before.version
    dups = await env.open_db("d", dupsort=True)
    assert await dups.put_chunks(b"k", pieces_of(b"b", b"2"))
    assert await dups.put_chunks(b"k", pieces_of(b"a1"))
    assert not await dups.put_chunks(b"k", pieces_of(b"a", b"1"))  # that pair exists
    assert await dups.get_all(b"k") == [b"a1", b"b2"]


async def test_put_chunks_in_transactions(env: Environment) -> None:
    db = env.get_default_database()
    async with env.begin(write=True) as txn:
        assert await txn[db].put_chunks(b"k", pieces_of(b"in ", b"txn"))
        assert await txn[db].get(b"k") == b"in txn"
    assert await db.get(b"k") == b"in txn"
    async with env.begin() as snap:
        with pytest.raises(ReadOnlyError):
            await snap[db].put_chunks(b"k", pieces_of(b"x"))


async def test_get_chunks_and_put_chunks_round_trip_a_large_value(db: Db) -> None:
    data = os.urandom(3 * MiB + 1)
    assert await db.put_chunks(b"k", pieces_of(data[:MiB], data[MiB:]))
    assert await db.put_chunks(b"copy", db.get_chunks(b"k", 300_000))
    assert await db.get(b"copy") == data


async def test_scans_of_a_database_holding_large_values(
    env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = env.get_default_database()
    values = {b"k%d" % i: blob(LARGE_VALUE + i, i) for i in range(5)}
    await db.put_multi(values)
    await db.put(b"k9", blob(BIG))  # flags the database
    values[b"k9"] = blob(BIG)
    await db.put(b"small", b"s")
    values[b"small"] = b"s"
    spy = CopySpy(monkeypatch)
    expected = sorted(values.items())
    assert await collect(db.items(batch_size=2)) == expected
    assert spy.calls == 6
    assert await collect(db.items(reverse=True, batch_size=2)) == expected[::-1]
    assert await collect(db.values(b"k1", b"k4", batch_size=2)) == [v for k, v in expected[1:4]]
    batches = await collect(db.items(b"k2", batch_size=3).batches(2))
    assert [pair for batch in batches for pair in batch] == expected[2:]
    assert await collect(db.keys()) == [k for k, _ in expected]
    assert await db.first() == expected[0]
    assert await db.last() == expected[-1]
    assert await db.get_all(b"k9") == [blob(BIG)]
    assert await db.get_all(b"absent") == []
    assert spy.calls == 6 + 6 + 3 + 4 + 1 + 1  # keys() reads no value


async def test_entries_of_a_versioned_database_holding_large_values(env: Environment) -> None:
    db = await env.open_db("v", versioned=True)
    await db.put_multi({b"a": blob(BIG, 1), b"b": b"small"})
    got = await collect(db.entries())
    assert [(k, e.value) for k, e in got] == [(b"a", blob(BIG, 1)), (b"b", b"small")]
    batches = await collect(db.entries().batches(5))
    assert [(k, e.value) for batch in batches for k, e in batch] == [
        (b"a", blob(BIG, 1)),
        (b"b", b"small"),
    ]


def test_identity_coder_copies_large_buffers_to_bytes() -> None:
    coder = aiolmdb.IdentityCoder()
    data = blob(BIG)
    for source in (bytearray(data), memoryview(data)):
        out = coder.serialize(source)
        assert type(out) is bytes
        assert out == data
    assert coder.serialize(data) is data


async def test_a_value_stream_released_before_it_began_holds_nothing(
    env: Environment,
) -> None:
    """Cancelled while its transaction was beginning: the transaction ends at once."""
    db = env.get_default_database()
    await db.put(b"k", b"v")
    engine = env._engine  # the stream's parts, driven one by one
    stream = _large.ValueStream(engine, await db._context(), b"k")
    stream.release()
    assert await engine.run_blocking(stream._begin) is None
    await let_tasks_start()
    assert reader_txnids(env) == []
    with pytest.raises(TransactionError, match="value stream has already ended"):
        await engine.run_blocking(stream._held.run, stream._read, 0, 1)


async def test_a_value_stream_released_while_copying_ends_after_the_copy(
    env: Environment,
) -> None:
    db = env.get_default_database()
    await db.put(b"k", b"value")
    engine = env._engine
    stream = _large.ValueStream(engine, await db._context(), b"k")
    assert await engine.run_blocking(stream._begin) == 5
    released = asyncio.Event()
    loop = asyncio.get_running_loop()
    submit_quiet = engine.submit_quiet

    def later(fn: Callable[[], Any]) -> None:
        def run() -> None:
            fn()
            loop.call_soon_threadsafe(released.set)

        submit_quiet(run)

    engine.submit_quiet = later
    with stream._held._lock:  # as if a chunk were being copied
        stream.release()
        assert reader_txnids(env) != []
    await asyncio.wait_for(released.wait(), TIMEOUT)
    await let_tasks_start()
    assert reader_txnids(env) == []


async def test_get_chunks_of_a_damaged_versioned_value(env: Environment) -> None:
    db = await env.open_db("v", versioned=True)
    dbi = (await db._context()).dbi  # to store what aiolmdb never writes
    await env.run(lambda txn: txn.raw.put(b"k", b"abc", db=dbi), write=True)
    with pytest.raises(ValueError, match="not a versioned value"):
        await collect(db.get_chunks(b"k"))


async def test_closing_the_environment_ends_a_stream(open_env: Callable[..., Environment]) -> None:
    env = open_env()
    db = env.get_default_database()
    await db.put(b"k", blob(5000))
    pieces = db.get_chunks(b"k", 1000)
    assert await anext(pieces) == blob(5000)[:1000]
    await asyncio.wait_for(env.close(), TIMEOUT)
    with pytest.raises(aiolmdb.ClosedError):
        await anext(pieces)
