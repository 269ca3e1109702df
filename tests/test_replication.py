"""aiolmdb.replication against a real nats-server (tests/nats_server.py): publish and follow,
byte for byte, commits applied whole, restarts, large commits in pieces, fencing, validation,
credentials, snapshots, metrics."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

import aiolmdb
from aiolmdb.errors import ReplicationError
from aiolmdb.replication import (
    FencedError,
    InvalidMessageError,
    Publisher,
    ReadOnlyError,
    Replica,
    replica_status,
    stream_status,
)

from conftest import TIMEOUT
from nats_server import NatsServer

pytestmark = pytest.mark.timeout(120)

RESERVED = (b"__aiolmdb__", b"__aiolmdb_changes__")


Dump = dict[bytes | None, tuple[list[str], list[tuple[bytes, bytes]]]]


def _dump(env: lmdb.Environment) -> Dump:
    out: Dump = {}
    with env.begin() as txn:
        plain: list[tuple[bytes, bytes]] = []
        for key, value in list(txn.cursor()):
            if key in RESERVED:
                continue
            try:
                handle = env.open_db(key, txn=txn, create=False)
            except lmdb.Error:
                plain.append((key, value))
                continue
            flags = sorted(name for name, on in handle.flags(txn).items() if on)
            out[key] = (flags, list(txn.cursor(db=handle).iternext()))
        out[None] = ([], plain)
    return out


async def dump(env: aiolmdb.Environment) -> Dump:
    """Every user database of ``env``: its LMDB flags and its raw items as stored (every
    dupsort pair): what a replica must hold identically."""
    return await asyncio.to_thread(_dump, env.lmdb_environment)


@pytest.fixture
async def leader(tmp_path: Path) -> AsyncIterator[aiolmdb.Environment]:
    async with aiolmdb.open(tmp_path / "leader", changelog=True) as env:
        yield env


def servers(server: NatsServer) -> str:
    return server.url


async def test_publish_and_follow_byte_identical(
    leader: aiolmdb.Environment, nats_server: NatsServer, tmp_path: Path
) -> None:
    plain = leader.open_db("plain")
    dups = leader.open_db("dups", dupsort=True)
    versioned = leader.open_db("versioned", versioned=True)
    async with Publisher(leader, servers=nats_server.url, stream="orders") as pub:
        await plain.put(b"a", b"1")
        await asyncio.gather(*(plain.put(b"k%03d" % i, b"v%d" % i) for i in range(200)))
        await dups.put(b"d", b"x")
        await dups.put(b"d", b"y")
        await dups.put(b"d", b"z")
        await dups.delete(b"d", b"y")
        await versioned.put(b"v", b"first")
        await versioned.put(b"v", b"second")
        await plain.delete(b"k000")
        doomed = leader.open_db("doomed")
        await doomed.put(b"x", b"y")
        await doomed.drop()
        emptied = leader.open_db("emptied")
        await emptied.put(b"x", b"y")
        await emptied.drop(delete=False)
        await emptied.put(b"after", b"drop")
        seq = await pub.sync()
        assert seq == await leader.last_seq()
        async with Replica(tmp_path / "replica", servers=nats_server.url, stream="orders") as rep:
            await rep.wait_for(seq, timeout=TIMEOUT)
            assert rep.applied == seq
            db = rep.env.open_db("plain")
            assert await db.get(b"a") == b"1"
            assert await db.get(b"k000") is None
            rv = rep.env.open_db("versioned", versioned=True)
            entry = await rv.get_entry(b"v")
            assert entry is not None and entry.value == b"second"
            assert await rep.env.database_info("doomed") is None
            assert await dump(rep.env) == await dump(leader)
