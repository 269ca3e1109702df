"""zstd dictionaries: training one from a database's values, compressing with it, the
dictionary id each frame records, clear errors for a missing or wrong dictionary, and values
stored without one still reading."""

from __future__ import annotations

import pickle
import random
import sys
import threading
import zlib
from typing import Any

import pytest

import aiolmdb
from aiolmdb import CompressedCoder, IdentityCoder, JSONCoder, MsgpackCoder, train_zstd_dict

zstd: Any
try:
    if sys.version_info >= (3, 14):  # pragma: no cover
        from compression import zstd
    else:
        from backports import zstd
except ImportError:  # pragma: no cover - the test extra installs it
    zstd = None

pytestmark = pytest.mark.skipif(zstd is None, reason="pip install 'aiolmdb[zstd]'")

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "sigma"]
CITIES = ["Lyon", "Porto", "Graz", "Ghent", "Turku", "Bergen", "Cork", "Brno"]


def make_doc(i: int, rng: random.Random) -> dict[str, Any]:
    """A small JSON document (about 250 bytes), all of one shape, as an application's are."""
    return {
        "id": i,
        "name": f"user-{i:06d}",
        "email": f"user{i}@example.com",
        "active": rng.random() < 0.5,
        "score": round(rng.random() * 1000, 2),
        "address": {"city": rng.choice(CITIES), "zip": f"{rng.randrange(10**5):05d}"},
        "tags": rng.sample(WORDS, 3),
        "orders": [{"sku": f"SKU-{rng.randrange(1000):04d}", "qty": rng.randrange(1, 9)}],
    }


def docs(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [make_doc(i, rng) for i in range(n)]


async def docs_db(env: aiolmdb.Environment, coder: Any, n: int = 2_000) -> Any:
    db = env.open_db("docs", value_coder=coder)
    await db.put_multi({b"d%06d" % i: doc for i, doc in enumerate(docs(n, seed=1))})
    return db


def stored_size(coder: Any, values: list[dict[str, Any]]) -> int:
    return sum(len(coder.serialize(v)) for v in values)


async def test_a_dictionary_trained_on_a_databases_values_compresses_small_documents_better(
    env: aiolmdb.Environment,
) -> None:
    db = await docs_db(env, JSONCoder().compressed(codec="zstd"))
    zd = await train_zstd_dict(db, size=8_192, samples=1_500)
    assert isinstance(zd, zstd.ZstdDict)
    assert 0 < len(zd.dict_content) <= 8_192
    assert zd.dict_id != 0

    with_dict = JSONCoder().compressed(codec="zstd", zstd_dict=zd)
    plain = JSONCoder().compressed(codec="zstd")
    fresh = docs(300, seed=2)  # documents the dictionary has not seen
    raw, without, using = (stored_size(c, fresh) for c in (JSONCoder(), plain, with_dict))
    # Alone, a small document gives zstd little to work with; with the dictionary its
    # repeated structure is already known.
    assert using * 2 < without < raw
    for doc in fresh[:20]:
        assert with_dict.deserialize(with_dict.serialize(doc)) == doc

    # Through the database: values written with the dictionary read back, and so do the ones
    # written before it (compressed with no dictionary).
    db.value_coder = with_dict
    await db.put(b"new", fresh[0])
    assert await db.get(b"new") == fresh[0]
    assert await db.get(b"d000007") == docs(8, seed=1)[7]
    stored = await env.open_db("docs").get(b"new")
    assert stored is not None
    assert len(stored) == len(with_dict.serialize(fresh[0]))


async def test_each_frame_records_its_dictionary_id(env: aiolmdb.Environment) -> None:
    zd = await train_zstd_dict(await docs_db(env, JSONCoder()), size=4_096, samples=1_000)
    coder = JSONCoder().compressed(codec="zstd", zstd_dict=zd)
    doc = docs(1, seed=3)[0]
    stored = coder.serialize(doc)
    assert stored[:4] == b"\x28\xb5\x2f\xfd"
    assert zstd.get_frame_info(stored).dictionary_id == zd.dict_id
    # A standard frame: zstd itself reads it, given the dictionary.
    assert zstd.decompress(stored, zstd_dict=zd) == JSONCoder().serialize(doc)
    # Values stored without a dictionary name none.
    plain = JSONCoder().compressed(codec="zstd").serialize(doc)
    assert zstd.get_frame_info(plain).dictionary_id == 0


async def test_a_missing_or_wrong_dictionary_is_named_never_guessed(
    env: aiolmdb.Environment,
) -> None:
    db = await docs_db(env, JSONCoder())
    zd = await train_zstd_dict(db, size=4_096, samples=1_000)
    other = await train_zstd_dict(db, size=2_048, samples=400)
    assert other.dict_id != zd.dict_id
    stored = JSONCoder().compressed(codec="zstd", zstd_dict=zd).serialize(docs(1, seed=4)[0])

    with pytest.raises(ValueError, match=f"zstd dictionary {zd.dict_id} and this coder has none"):
        JSONCoder().compressed(codec="zstd").deserialize(stored)
    with pytest.raises(ValueError, match=f"dictionary {zd.dict_id}, not with this coder's "):
        JSONCoder().compressed(codec="zstd", zstd_dict=other).deserialize(stored)
    # Every compressed coder reads zstd frames: a ZlibCoder or an LZ4 one says the same.
    for reader in (JSONCoder().compressed(9), JSONCoder().compressed(codec="lz4")):
        with pytest.raises(ValueError, match=f"zstd dictionary {zd.dict_id}"):
            reader.deserialize(stored)

    # Through a database, the error also names the key.
    db.value_coder = JSONCoder().compressed(codec="zstd", zstd_dict=zd)
    await db.put(b"k", docs(1, seed=4)[0])
    db.value_coder = JSONCoder().compressed(codec="zstd", zstd_dict=other)
    with pytest.raises(ValueError, match=r"key b'k'.*zstd dictionary") as info:
        await db.get(b"k")
    assert str(zd.dict_id) in str(info.value)
    assert str(other.dict_id) in str(info.value)

    # A damaged frame made with the dictionary fails its checksum.
    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 0xFF
    with pytest.raises(ValueError, match="not valid zstd data"):
        JSONCoder().compressed(codec="zstd", zstd_dict=zd).deserialize(bytes(damaged))


async def test_a_dictionary_coder_reads_every_form_stored_without_one(
    env: aiolmdb.Environment,
) -> None:
    zd = await train_zstd_dict(await docs_db(env, JSONCoder()), size=4_096, samples=1_000)
    reader = JSONCoder().compressed(codec="zstd", zstd_dict=zd)
    doc = docs(1, seed=5)[0]
    writers: list[Any] = [
        JSONCoder().compressed(),  # aiolmdb 0.1's zlib stream
        JSONCoder().compressed(codec="zstd"),
        JSONCoder().compressed(codec="zstd", threshold=10_000),  # 0x00 + the JSON
        JSONCoder().compressed(codec="lz4"),
    ]
    for writer in writers:
        assert reader.deserialize(writer.serialize(doc)) == doc, writer
    assert reader.deserialize(zlib.compress(JSONCoder().serialize(doc))) == doc


async def test_the_dictionary_may_be_given_as_its_bytes(env: aiolmdb.Environment) -> None:
    """What an application stores (``dict_content``) is what it passes back at open."""
    zd = await train_zstd_dict(await docs_db(env, JSONCoder()), size=4_096, samples=1_000)
    meta = env.open_db("meta")
    await meta.put(b"zstd-dict", zd.dict_content)
    content = await meta.get(b"zstd-dict")
    assert content is not None
    from_bytes = JSONCoder().compressed(codec="zstd", zstd_dict=content)
    from_dict = CompressedCoder(JSONCoder(), codec="zstd", zstd_dict=zd)
    assert isinstance(from_bytes, CompressedCoder)
    assert from_bytes.zstd_dict is not None
    assert from_bytes.zstd_dict.dict_id == zd.dict_id
    assert from_bytes == from_dict
    assert hash(from_bytes) == hash(from_dict)
    assert from_bytes != JSONCoder().compressed(codec="zstd")
    assert CompressedCoder(JSONCoder(), codec="zstd").zstd_dict is None
    assert repr(from_bytes) == (
        f"CompressedCoder(JSONCoder(), level=3, codec='zstd', threshold=0, "
        f"zstd_dict=<ZstdDict id {zd.dict_id}>)"
    )
    doc = docs(1, seed=6)[0]
    assert from_dict.deserialize(from_bytes.serialize(doc)) == doc
    # A coder with a dictionary pickles (ZstdDict itself does not): the copy has its content.
    copy = pickle.loads(pickle.dumps(from_dict))
    assert copy == from_dict
    assert copy.deserialize(from_dict.serialize(doc)) == doc
    plain = pickle.loads(pickle.dumps(JSONCoder().compressed(codec="lz4", threshold=3)))
    assert plain == JSONCoder().compressed(codec="lz4", threshold=3)
    zlib_coder = pickle.loads(pickle.dumps(JSONCoder().compressed(7)))
    assert zlib_coder == JSONCoder().compressed(7)
    assert type(zlib_coder) is aiolmdb.ZlibCoder


async def test_training_reads_through_the_coder_and_off_the_loop(
    env: aiolmdb.Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compressed database trains on its inner coder's bytes (what the dictionary will
    compress), and training runs on a worker thread, not the event loop's."""
    db = await docs_db(env, MsgpackCoder().compressed(codec="zstd"), n=600)
    seen: list[tuple[int, list[bytes]]] = []
    real = zstd.train_dict

    def spy(samples: list[bytes], size: int) -> Any:
        seen.append((threading.get_ident(), list(samples)))
        return real(samples, size)

    monkeypatch.setattr(zstd, "train_dict", spy)
    zd = await train_zstd_dict(db, size=2_048, samples=500)
    ((thread, samples),) = seen
    assert thread != threading.get_ident()
    expected = [MsgpackCoder().serialize(doc) for doc in docs(500, seed=1)]
    assert samples == expected  # the first 500 values in key order, MessagePack-encoded
    coder = MsgpackCoder().compressed(codec="zstd", zstd_dict=zd)
    assert coder.deserialize(coder.serialize(docs(1, seed=1)[0])) == docs(1, seed=1)[0]


async def test_training_errors(env: aiolmdb.Environment, monkeypatch: pytest.MonkeyPatch) -> None:
    db = await docs_db(env, JSONCoder(), n=3)
    with pytest.raises(ValueError, match=r"cannot train a 4096-byte dictionary on 3 values"):
        await train_zstd_dict(db, size=4_096)
    empty = env.open_db("empty")
    with pytest.raises(ValueError, match="cannot train on an empty database"):
        await train_zstd_dict(empty)
    with pytest.raises(ValueError, match="size >= 256 and samples >= 1"):
        await train_zstd_dict(db, size=100)
    with pytest.raises(ValueError, match="size >= 256 and samples >= 1"):
        await train_zstd_dict(db, samples=0)
    with pytest.raises(TypeError, match="size and samples must be ints"):
        await train_zstd_dict(db, size=4096.0)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "backports.zstd", None)
    monkeypatch.setitem(sys.modules, "compression.zstd", None)
    with pytest.raises(ImportError, match=r"pip install 'aiolmdb\[zstd\]'"):
        await train_zstd_dict(db)


def test_bad_dictionary_arguments() -> None:
    trained = zstd.train_dict([b'{"n": %d, "k": "v"}' % i for i in range(500)], 1_024)
    with pytest.raises(ValueError, match="zstd_dict needs codec='zstd', not 'lz4'"):
        IdentityCoder().compressed(codec="lz4", zstd_dict=trained)
    with pytest.raises(ValueError, match="zstd_dict needs codec='zstd', not 'zlib'"):
        IdentityCoder().compressed(zstd_dict=trained)
    with pytest.raises(TypeError, match="zstd_dict must be a ZstdDict or its bytes"):
        IdentityCoder().compressed(codec="zstd", zstd_dict="dict")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zstd_dict is not a zstd dictionary"):
        IdentityCoder().compressed(codec="zstd", zstd_dict=b"not a dictionary at all")
    raw = zstd.ZstdDict(b"some raw content" * 10, is_raw=True)
    with pytest.raises(ValueError, match="has no dictionary id"):
        IdentityCoder().compressed(codec="zstd", zstd_dict=raw)
