"""The benchmark data set: generation, loading into a base LMDB env, per-implementation copies."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import lmdb

from .workloads import BenchConfig

#: Named databases used by the suite (plain LMDB names; aiolmdb gets the str form).
JSON_DB = "json"
#: The documents' database, in the document workloads' own environments.
DOCS_DB = "docs"
TRAIN_DB = "train"
PUT_DB = "puts"
PUT_MULTI_DB = "putmulti"
VERSIONED_DB = "versioned"
MAX_DBS = 8
#: Reader slots for the plain py-lmdb peers.  lmdb.aio holds one read transaction open
#: across several executor hops per get, so 64 concurrent tasks overflow LMDB's default
#: of 126 slots (MDB_READERS_FULL); py-lmdb's error message recommends raising it.
MAX_READERS = 1024


@dataclass
class DataSet:
    """Keys and values loaded into every implementation's copy of the environment."""

    keys: list[bytes]
    values: list[bytes]
    json_values: list[bytes]
    #: The document workloads read the first ``n_docs`` keys (documents.py makes them).
    n_docs: int = 0

    def __len__(self) -> int:
        return len(self.keys)


def make_key(i: int, size: int) -> bytes:
    """Key number ``i``: ``b"k"`` followed by a zero-padded decimal, ``size`` bytes long."""
    return b"k" + str(i).zfill(size - 1).encode()


def make_json_doc(i: int, rng: random.Random) -> bytes:
    """A small (~100 byte) JSON document for key ``i``."""
    doc = {
        "id": i,
        "name": f"user-{i:06d}",
        "score": round(rng.random() * 1000, 3),
        "active": rng.random() < 0.5,
        "tags": rng.sample(["red", "green", "blue", "cyan", "plum", "teal"], 3),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def generate(cfg: BenchConfig) -> DataSet:
    """Generate the deterministic data set described by ``cfg``."""
    rng = random.Random(cfg.seed)
    keys = [make_key(i, cfg.key_size) for i in range(cfg.n_keys)]
    values = [rng.randbytes(cfg.value_size) for _ in range(cfg.n_keys)]
    json_values = [make_json_doc(i, rng) for i in range(cfg.n_keys)]
    return DataSet(keys, values, json_values, n_docs=min(cfg.n_docs, cfg.n_keys))


def open_env(path: Path, cfg: BenchConfig) -> lmdb.Environment:
    """Open a plain py-lmdb environment the way every peer does (default durability)."""
    return lmdb.open(str(path), map_size=cfg.map_size, max_dbs=MAX_DBS, max_readers=MAX_READERS)


def load_base(path: Path, data: DataSet, cfg: BenchConfig) -> None:
    """Create the base environment at ``path`` holding the main and JSON databases."""
    path.mkdir(parents=True, exist_ok=True)
    env = open_env(path, cfg)
    try:
        jdb = env.open_db(JSON_DB.encode())
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(zip(data.keys, data.values, strict=True), append=True)
            txn.cursor(db=jdb).putmulti(zip(data.keys, data.json_values, strict=True), append=True)
        env.sync(True)
    finally:
        env.close()


def clone(base: Path, dest: Path, cfg: BenchConfig) -> None:
    """Copy the base environment to ``dest`` (a fresh directory) with ``env.copy``.

    LMDB allows only one ``Environment`` per path per process, so each
    implementation gets its own copy.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    env = open_env(base, cfg)
    try:
        env.copy(str(dest))
    finally:
        env.close()


def random_keys(data: DataSet, n: int, seed: int, among: int | None = None) -> list[bytes]:
    """``n`` keys drawn uniformly (with replacement) from the data set (its first ``among``)."""
    rng = random.Random(seed)
    keys = data.keys if among is None else data.keys[:among]
    if not keys:
        raise ValueError("no keys to draw from")
    return [keys[rng.randrange(len(keys))] for _ in range(n)]


def random_items(data: DataSet, n: int, seed: int) -> list[tuple[bytes, bytes]]:
    """``n`` (key, value) pairs to write: random keys of the data set with fresh values."""
    rng = random.Random(seed)
    keys = data.keys
    size = len(data.values[0]) if data.values else 100
    return [(keys[rng.randrange(len(keys))], rng.randbytes(size)) for _ in range(n)]
