"""The optional value coders: MsgpackCoder, MsgspecCoder, JSONCoder with orjson, and the
compressed forms (zlib, zstd, LZ4): round trips, stored layouts, reading across codecs and
versions, clear errors for foreign or damaged bytes, missing packages, and every coder through
a database in both read modes."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import math
import os
import pickle
import sys
import tracemalloc
import zlib
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_coders import decode_like_lmdb

import aiolmdb
from aiolmdb import (
    Coder,
    CompressedCoder,
    IdentityCoder,
    JSONCoder,
    MsgpackCoder,
    MsgspecCoder,
    TupleCoder,
    ZlibCoder,
)
from aiolmdb._codecs import builtin

if TYPE_CHECKING:
    import msgspec

    from aiolmdb._codecs.compress import Codec
else:
    msgspec = pytest.importorskip("msgspec", reason="pip install 'aiolmdb[msgspec]'")

orjson: Any
lz4_frame: Any
zstd: Any
try:
    import orjson
except ImportError:  # pragma: no cover - the test extra installs it
    orjson = None
try:
    lz4_frame = importlib.import_module("lz4.frame")
except ImportError:  # pragma: no cover - the test extra installs it
    lz4_frame = None
try:
    if sys.version_info >= (3, 14):  # pragma: no cover
        from compression import zstd
    else:
        from backports import zstd
except ImportError:  # pragma: no cover - the test extra installs it
    zstd = None

needs_orjson = pytest.mark.skipif(orjson is None, reason="pip install 'aiolmdb[fast]'")
NEEDS_ZSTD = pytest.mark.skipif(zstd is None, reason="pip install 'aiolmdb[zstd]'")
NEEDS_LZ4 = pytest.mark.skipif(lz4_frame is None, reason="pip install 'aiolmdb[lz4]'")
CODECS = ["zlib", pytest.param("zstd", marks=NEEDS_ZSTD), pytest.param("lz4", marks=NEEDS_LZ4)]
BUFFER_KINDS = [bytes, bytearray, memoryview]


class User(msgspec.Struct):
    name: str
    age: int
    tags: list[str] = msgspec.field(default_factory=list)


@dataclasses.dataclass
class Point:
    x: float
    y: float


DOC = {"name": "Ada", "age": 36, "tags": ["math", "é"] * 20, "ok": True, "score": 1.5}
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
    max_leaves=15,
)


def typed(value: Any) -> Any:
    """``value`` with every element's type made part of it (``1`` is not ``1.0``, NaN equals
    NaN), for comparing decoded values exactly."""
    if isinstance(value, dict):
        return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(v) for v in value])
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


# ------------------------------------------------------------------------------ MsgpackCoder
@given(msgpack_values)
def test_msgpack_round_trip(value: Any) -> None:
    coder = MsgpackCoder()
    stored = coder.serialize(value)
    for kind in BUFFER_KINDS:
        assert typed(coder.deserialize(kind(stored))) == typed(value)
    assert typed(decode_like_lmdb(coder, stored)) == typed(value)


def test_msgpack_bytes_are_standard_msgpack() -> None:
    coder = MsgpackCoder()
    assert coder.serialize({"a": 1}) == b"\x81\xa1a\x01"
    assert coder.serialize([None, True, b"\x00"]) == b"\x93\xc0\xc3\xc4\x01\x00"
    assert coder.serialize(-1) == b"\xff"
    assert coder.serialize(1.5) == b"\xcb" + (1.5).hex().encode()[:0] + bytes.fromhex(
        "3ff8" + "0" * 12
    )
    assert coder.deserialize(b"\x92\x01\xa2hi") == [1, "hi"]
    assert coder.serialize((1, 2)) == coder.serialize([1, 2])
    assert coder.deserialize(coder.serialize({1: "int key"})) == {1: "int key"}


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        (object(), TypeError, "unsupported"),
        ({"a": {1j}}, TypeError, "unsupported"),
        (2**64, ValueError, "serialize ints"),
        (-(2**63) - 1, ValueError, "serialize ints"),
    ],
    ids=repr,
)
def test_msgpack_serialize_errors(value: Any, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match="MsgpackCoder cannot encode") as info:
        MsgpackCoder().serialize(value)
    assert words in str(info.value)


def test_msgpack_circular_is_value_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="MsgpackCoder cannot encode a list"):
        MsgpackCoder().serialize(loop)


@pytest.mark.parametrize(
    ("stored", "words"),
    [
        (b"", "truncated"),
        (b"\xc1", "invalid opcode"),
        (b"\x92\x01", "truncated"),
        (b"\x01\x02", "trailing characters"),
        (b"\xa2\xff\xfe", "UTF-8"),
        (zlib.compress(b"[1]"), "MessagePack"),
    ],
    ids=repr,
)
def test_msgpack_deserialize_errors(stored: bytes, words: str) -> None:
    for kind in BUFFER_KINDS:
        with pytest.raises(ValueError, match="MsgpackCoder cannot decode") as info:
            MsgpackCoder().deserialize(kind(stored))
        assert words in str(info.value)
        assert repr(stored[:48]) in str(info.value)


# ------------------------------------------------------------------------------ MsgspecCoder
@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_msgspec_round_trips_typed_values(fmt: Any) -> None:
    user = User("Ada", 36, ["math"])
    coder = MsgspecCoder(User, format=fmt)
    stored = coder.serialize(user)
    for kind in BUFFER_KINDS:
        assert coder.deserialize(kind(stored)) == user
    assert decode_like_lmdb(coder, stored) == user
    point = MsgspecCoder(Point, format=fmt)
    assert point.deserialize(point.serialize(Point(1.0, -2.5))) == Point(1.0, -2.5)
    ints = MsgspecCoder(list[int], format=fmt)
    assert ints.deserialize(ints.serialize([1, 2, 3])) == [1, 2, 3]
    maybe = MsgspecCoder(int | None, format=fmt)
    assert maybe.deserialize(maybe.serialize(None)) is None
    raw = MsgspecCoder(bytes, format=fmt)
    assert decode_like_lmdb(raw, raw.serialize(b"\x00\xff")) == b"\x00\xff"


def test_msgspec_formats_are_plain_msgpack_and_json() -> None:
    user = User("Ada", 36)
    assert MsgspecCoder(User).serialize(user) == MsgpackCoder().serialize(
        {"name": "Ada", "age": 36, "tags": []}
    )
    stored = MsgspecCoder(User, format="json").serialize(user)
    assert JSONCoder().deserialize(stored) == {"name": "Ada", "age": 36, "tags": []}
    from_stdlib = JSONCoder().serialize({"name": "Bo", "age": 5, "extra": 1})
    assert MsgspecCoder(User, format="json").deserialize(from_stdlib) == User("Bo", 5)


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_msgspec_validates_on_decode(fmt: Any) -> None:
    untyped = MsgpackCoder() if fmt == "msgpack" else JSONCoder()
    coder = MsgspecCoder(User, format=fmt)
    cases = [
        ({"name": "Ada", "age": "old"}, "Expected `int`, got `str` - at `$.age`"),
        ({"name": "Ada"}, "missing required field `age`"),
        ({"name": "Ada", "age": 1, "tags": [1]}, "at `$.tags[0]`"),
        ([1, 2], "Expected `object`, got `array`"),
    ]
    for value, words in cases:
        stored = untyped.serialize(value)
        with pytest.raises(ValueError, match="MsgspecCoder") as info:
            coder.deserialize(stored)
        assert words in str(info.value)
        assert "User" in str(info.value)
        assert isinstance(info.value.__cause__, msgspec.ValidationError)
    with pytest.raises(ValueError, match=r"MsgspecCoder.*(malformed|truncated)"):
        coder.deserialize(b"\xc1" if fmt == "msgpack" else b"{")


def test_msgspec_construction_and_encoding_errors() -> None:
    with pytest.raises(ValueError, match="format must be 'msgpack' or 'json'"):
        MsgspecCoder(int, format="yaml")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="MsgspecCoder cannot decode into"):
        MsgspecCoder(object())
    with pytest.raises(TypeError, match=r"MsgspecCoder\(int.*cannot encode a object"):
        MsgspecCoder(int).serialize(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot encode a int"):
        MsgspecCoder(int).serialize(2**80)


def test_msgspec_repr_eq_hash() -> None:
    assert repr(MsgspecCoder(User)) == "MsgspecCoder(User, format='msgpack')"
    assert repr(MsgspecCoder(list[int], format="json")) == "MsgspecCoder(list[int], format='json')"
    assert MsgspecCoder(User) == MsgspecCoder(User)
    assert hash(MsgspecCoder(User)) == hash(MsgspecCoder(User))
    assert MsgspecCoder(User) != MsgspecCoder(User, format="json")
    assert MsgspecCoder(User) != MsgspecCoder(Point)
    assert MsgspecCoder(User) != MsgpackCoder()
    assert MsgspecCoder(User).type is User
    assert MsgspecCoder(User, format="json").format == "json"
    assert repr(MsgpackCoder()) == "MsgpackCoder()"
    assert MsgpackCoder() == MsgpackCoder()


def test_coders_pickle() -> None:
    for coder in [
        MsgpackCoder(),
        MsgspecCoder(Point, format="json"),
        TupleCoder(),
        JSONCoder().compressed(codec="zlib", threshold=8),
        ZlibCoder(MsgpackCoder(), 9),
    ]:
        copy = pickle.loads(pickle.dumps(coder))
        assert copy == coder
        assert copy.deserialize(coder.serialize(copy.deserialize(coder.serialize(_sample(coder)))))


def _sample(coder: Coder[Any]) -> Any:
    inner = getattr(coder, "inner", coder)
    if isinstance(inner, MsgspecCoder):
        return Point(1.0, 2.0)
    if isinstance(inner, TupleCoder):
        return ("a", 1)
    return {"a": [1, 2]}


# ------------------------------------------------------------------------------ missing packages
@pytest.mark.parametrize(
    ("module", "make", "message"),
    [
        (
            "msgspec",
            MsgpackCoder,
            "MsgpackCoder needs the 'msgspec' package: pip install 'aiolmdb[msgpack]' "
            "(or: pip install msgspec)",
        ),
        (
            "msgspec",
            lambda: MsgspecCoder(int),
            "MsgspecCoder needs the 'msgspec' package: pip install 'aiolmdb[msgspec]' "
            "(or: pip install msgspec)",
        ),
        (
            "backports.zstd",
            lambda: JSONCoder().compressed(codec="zstd"),
            "CompressedCoder needs the 'backports.zstd' package: pip install 'aiolmdb[zstd]' "
            "(or: pip install backports.zstd)",
        ),
        (
            "lz4.frame",
            lambda: JSONCoder().compressed(codec="lz4"),
            "CompressedCoder needs the 'lz4' package: pip install 'aiolmdb[lz4]' "
            "(or: pip install lz4)",
        ),
    ],
)
@pytest.mark.skipif(sys.version_info >= (3, 14), reason="zstd is in the standard library")
def test_missing_package_names_the_pip_line(
    monkeypatch: pytest.MonkeyPatch, module: str, make: Any, message: str
) -> None:
    """The whole message: the package's own name (not 'backports') and both pip lines."""
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError) as info:
        make()
    assert str(info.value) == message
    assert isinstance(info.value.__cause__, ImportError)


def test_prometheus_without_its_package_names_the_pip_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "aiolmdb.prometheus", raising=False)
    with pytest.raises(ImportError) as info:
        importlib.import_module("aiolmdb.prometheus")
    assert str(info.value) == (
        "aiolmdb.prometheus needs the 'prometheus_client' package: "
        "pip install 'aiolmdb[prometheus]' (or: pip install prometheus_client)"
    )


@pytest.mark.skipif(zstd is None or lz4_frame is None, reason="needs zstd and lz4")
def test_reading_a_form_whose_package_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = IdentityCoder().compressed(codec="zstd").serialize(b"x" * 100)
    monkeypatch.setitem(sys.modules, "backports.zstd", None)
    with pytest.raises(ImportError, match=r"ZlibCoder needs .*pip install 'aiolmdb\[zstd\]'"):
        IdentityCoder().compressed().deserialize(stored)


def test_json_without_orjson_uses_the_standard_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtin, "_ORJSON_LOADS", None)
    assert JSONCoder().deserialize(b'{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}


# ------------------------------------------------------------------------------ JSON and orjson
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats()
    | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
    max_leaves=15,
)


def _both_ways(monkeypatch: pytest.MonkeyPatch, stored: bytes) -> tuple[Any, Any]:
    """(decoded with orjson, decoded by the standard library), each a value or the error."""
    results = []
    for loads in (builtin._ORJSON_LOADS, None):
        monkeypatch.setattr(builtin, "_ORJSON_LOADS", loads)
        try:
            results.append(typed(JSONCoder().deserialize(stored)))
        except (ValueError, RecursionError) as exc:
            results.append((type(exc), str(exc)))
    return results[0], results[1]


@needs_orjson
@given(json_values)
@settings(max_examples=300)
def test_orjson_reads_what_the_standard_library_reads(value: Any) -> None:
    stored = JSONCoder().serialize(value)
    assert stored == json.dumps(value, ensure_ascii=False).encode()  # bytes as in aiolmdb 0.1
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast, slow = _both_ways(monkeypatch, stored)
    assert fast == slow == typed(json.loads(stored))


@needs_orjson
@pytest.mark.parametrize(
    "stored",
    [
        b"NaN",
        b"[Infinity, -Infinity]",
        b"1e400",
        b"18446744073709551616",
        b"-9223372036854775809",
        b"123456789012345678901234567890",
        b'{"id": "1234567890123456789012"}',
        b"0.12345678901234567890123",
        b'"\\ud800"',
        b'"\\ud83d\\ude00"',
        b'{"a": 1, "a": 2}',
        b"-0",
        b"-0.0",
        b"[" * 5000 + b"]" * 5000,
        b"\xef\xbb\xbf1",
        b'"\xff"',
        b"",
        b"[1, 2",
        b"1 2",
        b'{"k": "\xc3\xa9"}',
    ],
    ids=repr,
)
def test_orjson_and_stdlib_agree_on_edge_cases(
    monkeypatch: pytest.MonkeyPatch, stored: bytes
) -> None:
    fast, slow = _both_ways(monkeypatch, stored)
    assert fast == slow


@needs_orjson
def test_json_is_read_by_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []

    def counting(data: bytes) -> Any:
        calls.append(data)
        return orjson.loads(data)

    monkeypatch.setattr(builtin, "_ORJSON_LOADS", counting)
    assert JSONCoder().deserialize(memoryview(b'{"a": 1}')) == {"a": 1}
    assert calls == [b'{"a": 1}']
    assert JSONCoder().deserialize(b"[12345678901234567890]") == [12345678901234567890]
    assert len(calls) == 1  # a long number goes to the standard library directly


# ------------------------------------------------------------------------------ compression
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("threshold", [0, 64])
@given(data=st.binary(max_size=300) | st.just(b"abc" * 200))
def test_compressed_round_trip(codec: Any, threshold: int, data: bytes) -> None:
    coder = IdentityCoder().compressed(codec=codec, threshold=threshold)
    stored = coder.serialize(data)
    for kind in BUFFER_KINDS:
        assert coder.deserialize(kind(stored)) == data
    assert decode_like_lmdb(coder, stored) == data


@pytest.mark.parametrize(
    ("codec", "magic"),
    [
        ("zlib", b"\x78"),
        pytest.param("zstd", b"\x28\xb5\x2f\xfd", marks=NEEDS_ZSTD),
        pytest.param("lz4", b"\x04\x22\x4d\x18", marks=NEEDS_LZ4),
    ],
)
def test_stored_forms(codec: Any, magic: bytes) -> None:
    coder = JSONCoder().compressed(codec=codec, threshold=32)
    assert type(coder) is CompressedCoder
    long = coder.serialize(DOC)
    assert long.startswith(magic)
    assert len(long) < len(JSONCoder().serialize(DOC)) / 2
    assert coder.serialize([1]) == b"\x00[1]"  # shorter than the threshold
    noise = os.urandom(200)
    assert IdentityCoder().compressed(codec=codec, threshold=1).serialize(noise) == b"\x00" + noise
    if codec == "zlib":
        assert zlib.decompress(long) == JSONCoder().serialize(DOC)
    elif codec == "zstd":
        assert zstd.decompress(long) == JSONCoder().serialize(DOC)
    else:
        assert lz4_frame.decompress(long) == JSONCoder().serialize(DOC)


@pytest.mark.parametrize(
    ("codec", "magic"),
    [
        ("zlib", b"\x78"),
        pytest.param("zstd", b"\x28\xb5\x2f\xfd", marks=NEEDS_ZSTD),
        pytest.param("lz4", b"\x04\x22\x4d\x18", marks=NEEDS_LZ4),
    ],
)
def test_threshold_is_the_shortest_value_compressed(codec: Any, magic: bytes) -> None:
    """A value of exactly ``threshold`` bytes is compressed; one byte shorter is stored as is."""
    coder = IdentityCoder().compressed(codec=codec, threshold=64)
    data = b"a" * 64
    stored = coder.serialize(data)
    assert stored.startswith(magic)
    assert coder.deserialize(stored) == data
    assert coder.serialize(data[:-1]) == b"\x00" + data[:-1]


def test_default_compressed_is_aiolmdb_0_1_zlib() -> None:
    coder = JSONCoder().compressed()
    assert type(coder) is ZlibCoder
    assert coder == ZlibCoder(JSONCoder(), 1)
    assert coder.serialize([1]) == zlib.compress(b"[1]", 1)
    assert JSONCoder().compressed(None) == ZlibCoder(JSONCoder(), 1)
    assert JSONCoder().compressed(9, codec="zlib") == ZlibCoder(JSONCoder(), 9)
    # ZlibCoder keeps 0.1's bytes even when compression does not help.
    assert IdentityCoder().compressed().serialize(b"x") == zlib.compress(b"x", 1)


def _writers() -> list[Coder[bytes]]:
    writers: list[Coder[bytes]] = [
        IdentityCoder().compressed(),
        IdentityCoder().compressed(9),
        IdentityCoder().compressed(codec="zlib", threshold=10),
    ]
    if zstd is not None:
        writers += [IdentityCoder().compressed(19, codec="zstd", threshold=4)]
    if lz4_frame is not None:
        writers += [
            IdentityCoder().compressed(codec="lz4"),
            IdentityCoder().compressed(16, codec="lz4"),
        ]
    return writers


def test_every_compressed_coder_reads_every_form() -> None:
    values = [b"", b"short", b"repeat " * 100]
    for writer in _writers():
        for reader in _writers():
            for value in values:
                assert reader.deserialize(writer.serialize(value)) == value, (writer, reader)
    legacy = zlib.compress(b"written by aiolmdb 0.1", 9)
    for reader in _writers():
        assert reader.deserialize(legacy) == b"written by aiolmdb 0.1"


@pytest.mark.parametrize(
    ("stored", "words"),
    [
        (b"", "not valid zlib data"),
        (b"not zlib", "not valid zlib data"),
        (b"\x78\x9c\x00", "not valid zlib data"),
        (b"\x28\xb5\x2f\xfd\x00", "not valid zstd data"),
        (b"\x04\x22\x4d\x18\x00", "not valid LZ4 data"),
    ],
    ids=repr,
)
def test_compressed_garbage_is_a_clear_error(stored: bytes, words: str) -> None:
    if (b"\x28" in stored[:1] and zstd is None) or (b"\x04" in stored[:1] and lz4_frame is None):
        pytest.skip("codec package missing")  # pragma: no cover
    for reader in _writers():
        with pytest.raises(ValueError, match=type(reader).__name__) as info:
            reader.deserialize(stored)
        assert words in str(info.value)
        assert "0x78 (zlib), 0x28 (zstd), 0x04 (LZ4) or 0x00" in str(info.value) or words != (
            "not valid zlib data"
        )


@pytest.mark.parametrize("codec", CODECS)
@given(st.data())
@settings(max_examples=150)
def test_damaged_compressed_values_never_decode_wrong(codec: Any, data: st.DataObject) -> None:
    value = data.draw(st.binary(min_size=1, max_size=50)) * 8
    stored = bytearray(IdentityCoder().compressed(codec=codec).serialize(value))
    assume(stored[0] != 0)  # the uncompressed form has no checksum, as an uncompressed value
    i = data.draw(st.integers(min_value=1, max_value=len(stored) - 1))  # the form byte: below
    how = data.draw(st.sampled_from(["flip", "cut", "append"]))
    if how == "flip":
        stored[i] ^= data.draw(st.integers(min_value=1, max_value=255))
    elif how == "cut":
        del stored[i:]
    else:
        stored += b"\x00"
    try:
        decoded = IdentityCoder().compressed(codec=codec).deserialize(bytes(stored))
    except ValueError:
        return
    assert decoded == value


def test_lz4_trailing_bytes_are_an_error() -> None:
    if lz4_frame is None:  # pragma: no cover
        pytest.skip("aiolmdb[lz4]")
    stored = IdentityCoder().compressed(codec="lz4").serialize(b"abc" * 50) + b"x"
    with pytest.raises(ValueError, match="1 bytes after the frame"):
        IdentityCoder().compressed().deserialize(stored)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"codec": "brotli"}, ValueError, "codec must be one of zlib, zstd, lz4"),
        ({"codec": "zstd", "level": 23}, ValueError, "zstd compression level must be -131072..22"),
        ({"codec": "lz4", "level": 17}, ValueError, "lz4 compression level must be 0..16"),
        ({"codec": "zlib", "level": 10, "threshold": 1}, ValueError, "level must be -1..9"),
        ({"codec": "lz4", "level": 1.5}, TypeError, "level must be an int, not float"),
        ({"threshold": -1}, ValueError, "threshold must be >= 0"),
        ({"threshold": "1"}, TypeError, "threshold must be an int, not str"),
    ],
    ids=repr,
)
def test_compression_argument_errors(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match="CompressedCoder") as info:
        JSONCoder().compressed(**kwargs)
    assert words in str(info.value)


def test_compressed_coder_requires_a_coder() -> None:
    with pytest.raises(TypeError, match="CompressedCoder inner coder must be a Coder, not module"):
        CompressedCoder(json, codec="zlib", threshold=1)  # type: ignore[arg-type]


def test_compressed_repr_eq_hash_properties() -> None:
    coder = JSONCoder().compressed(codec="zlib", threshold=64)
    assert repr(coder) == "CompressedCoder(JSONCoder(), level=1, codec='zlib', threshold=64)"
    assert isinstance(coder, CompressedCoder)
    assert (coder.codec, coder.level, coder.threshold, coder.inner) == ("zlib", 1, 64, JSONCoder())
    assert coder == JSONCoder().compressed(1, codec="zlib", threshold=64)
    assert hash(coder) == hash(JSONCoder().compressed(1, codec="zlib", threshold=64))
    assert coder != JSONCoder().compressed(codec="zlib", threshold=65)
    assert coder != JSONCoder().compressed(2, codec="zlib", threshold=64)
    assert coder != StringCoderCompressed()
    assert ZlibCoder(JSONCoder(), 1) != CompressedCoder(JSONCoder(), 1, codec="zlib")
    assert repr(ZlibCoder(JSONCoder(), 1)) == "ZlibCoder(JSONCoder(), level=1)"
    assert ZlibCoder(JSONCoder(), 1).codec == "zlib"


def StringCoderCompressed() -> Coder[str]:
    return aiolmdb.StringCoder().compressed(codec="zlib", threshold=64)


# ------------------------------------------------------------------------------ in a database
def _value_coders() -> list[Any]:
    params: list[Any] = [
        pytest.param(MsgpackCoder(), DOC, id="msgpack"),
        pytest.param(MsgspecCoder(User), User("Ada", 36, ["x"] * 30), id="msgspec"),
        pytest.param(MsgspecCoder(User, format="json"), User("Bo", 7), id="msgspec-json"),
        pytest.param(JSONCoder(), DOC, id="json"),
        pytest.param(JSONCoder().compressed(codec="zlib", threshold=32), DOC, id="json-zlib-t32"),
    ]
    if zstd is not None:
        coder = MsgpackCoder().compressed(codec="zstd", threshold=16)
        params.append(pytest.param(coder, DOC, id="msgpack-zstd"))
    if lz4_frame is not None:
        coder = MsgspecCoder(User).compressed(codec="lz4")
        params.append(pytest.param(coder, User("Cy", 1, ["t"] * 40), id="msgspec-lz4"))
    return params


@pytest.mark.parametrize(("coder", "value"), _value_coders())
async def test_every_coder_through_a_database(
    env: aiolmdb.Environment, coder: Coder[Any], value: Any
) -> None:
    db = env.open_db("v", key_coder=TupleCoder(), value_coder=coder)
    assert await db.put(("k", 1), value)
    assert await db.get(("k", 1)) == value
    assert await db.put_multi([(("k", 2), value), (("k", 3), value), (("j", 1), value)]) == 3
    found = await db.get_multi([("k", 2), ("k", 9)])
    assert found == {("k", 2): value, ("k", 9): None}
    assert [kv async for kv in db.items(prefix=("k",))] == [(("k", n), value) for n in (1, 2, 3)]
    assert [v async for v in db.values(("k", 2))] == [value, value]
    assert await db.replace(("k", 3), value) == value
    assert await db.pop(("k", 3)) == value
    async with env.begin(write=True) as txn:
        assert await txn[db].get(("k", 1)) == value
        await txn[db].put(("t", 1), value)
    async with env.begin() as snap:
        assert [v async for v in snap[db].values(prefix=("t",))] == [value]
    assert await db.run(lambda txn: txn.get(("t", 1))) == value
    assert await db.run(lambda txn: list(txn.values(prefix=("j",)))) == [value]


async def test_changing_codec_and_threshold_keeps_old_values(env: aiolmdb.Environment) -> None:
    db = env.open_db("c", key_coder=aiolmdb.StringCoder(), value_coder=JSONCoder().compressed(9))
    old = {"written": "as in 0.1", "pad": "x" * 200}
    await db.put("v01", old)
    stages: list[Coder[Any]] = [JSONCoder().compressed(codec="zlib", threshold=1000)]
    if zstd is not None:
        stages.append(JSONCoder().compressed(codec="zstd", threshold=16))
    if lz4_frame is not None:
        stages.append(JSONCoder().compressed(codec="lz4"))
    stages.append(JSONCoder().compressed())
    written: dict[str, Any] = {"v01": old}
    for n, coder in enumerate(stages):
        db.value_coder = coder
        value = {"stage": n, "pad": "y" * 300}
        await db.put(f"v{n + 2:02d}", value)
        written[f"v{n + 2:02d}"] = value
        assert {k: v async for k, v in db.items()} == written
    raw = env.open_db("c")
    assert zlib.decompress(await raw.get(b"v01") or b"") == JSONCoder().serialize(old)


async def test_value_of_the_wrong_type_is_a_clear_error(env: aiolmdb.Environment) -> None:
    loose = env.open_db("u", key_coder=TupleCoder(), value_coder=MsgpackCoder())
    await loose.put(("user", 1), {"name": "Ada", "age": "unknown"})
    await loose.put(("user", 0), {"name": "Bob", "age": 7})
    strict = env.open_db("u", key_coder=TupleCoder(), value_coder=MsgspecCoder(User))
    # The error names the key (the coder itself sees only bytes) and the field.
    named = r"value stored under key \('user', 1\) cannot be decoded: .*"
    with pytest.raises(ValueError, match=named + r"Expected `int`, got `str` - at `\$.age`"):
        await strict.get(("user", 1))
    with pytest.raises(ValueError, match=named + "MsgspecCoder\\(User"):
        [v async for v in strict.values()]
    with pytest.raises(ValueError, match=named):
        [kv async for kv in strict.items().batches(10)]
    with pytest.raises(ValueError, match=named):
        await strict.get_multi([("user", 0), ("user", 1)])
    with pytest.raises(ValueError, match=named):
        await strict.last()
    with pytest.raises(ValueError, match=named):
        await strict.run(lambda txn: txn.get_all(("user", 1)))
    async with env.begin(write=True) as txn:
        with pytest.raises(ValueError, match=named):
            await txn[strict].pop(("user", 1))
        with pytest.raises(ValueError, match=named):
            await txn[strict].replace(("user", 1), User(name="Ada", age=36))
    assert await strict.get(("user", 0)) == User(name="Bob", age=7)
    assert await loose.get(("user", 1)) == {"name": "Ada", "age": "unknown"}  # nothing lost


def test_nan_survives_msgpack_but_not_msgspec_json() -> None:
    assert math.isnan(MsgpackCoder().deserialize(MsgpackCoder().serialize(math.nan)))
    assert MsgspecCoder(Any, format="json").serialize(math.nan) == b"null"  # type: ignore[arg-type]


@pytest.mark.parametrize("max_size", [None, 1 << 20])
def test_lz4_header_claiming_a_huge_size_is_a_value_error(max_size: int | None) -> None:
    """A damaged LZ4 header can claim a huge content size: with a bound the claim is refused
    before anything is allocated; without one the frame is decoded as a stream, never
    allocating the claim. Either way the result is a ValueError like any other damage, never a
    MemoryError or a wrong value."""
    if lz4_frame is None:  # pragma: no cover
        pytest.skip("aiolmdb[lz4]")
    coder = IdentityCoder().compressed(codec="lz4", max_size=max_size)
    value = b"abcdefgh" * 40
    stored = coder.serialize(value)
    huge = 0
    # The frame's content size: bytes 6-13 after the 4-byte magic, FLG and BD (the form byte
    # comes first). Damage each of them every way.
    for at in range(1 + 6, 1 + 14):
        for flip in range(1, 256):
            damaged = bytearray(stored)
            damaged[at] ^= flip
            try:
                assert coder.deserialize(bytes(damaged)) == value
            except ValueError as exc:
                huge += "max_size=1048576" in str(exc)
    # Some damage claimed more than the bound allows, and said so.
    assert huge if max_size is not None else not huge


# ----------------------------------------------------------------- decompression bombs


def _bomb(codec: Codec, size: int) -> bytes:
    """A stored value (form byte and frame) that decompresses to ``size`` zero bytes."""
    if codec == "zstd":
        return bytes(zstd.compress(bytes(size), level=19))
    if codec == "lz4":
        return bytes(lz4_frame.compress(bytes(size), store_size=True))
    return zlib.compress(bytes(size), 9)


def _no_header_size(codec: Codec, size: int) -> bytes:
    """A bomb whose frame does not say its size: only streaming finds it out."""
    if codec == "zstd":
        # Fed in pieces, the compressor cannot write the size in the header.
        out = zstd.ZstdCompressor(level=19)
        frame = b"".join(out.compress(bytes(1 << 20), out.CONTINUE) for _ in range(size >> 20))
        return bytes(frame + out.flush(out.FLUSH_FRAME))
    return bytes(lz4_frame.compress(bytes(size), store_size=False))


def _needs(codec: str) -> None:
    if (codec == "zstd" and zstd is None) or (codec == "lz4" and lz4_frame is None):
        pytest.skip(f"aiolmdb[{codec}]")  # pragma: no cover


@pytest.mark.parametrize("codec", ["zlib", "zstd", "lz4"])
@pytest.mark.parametrize("sized", [True, False])
def test_a_decompression_bomb_is_refused_within_the_bound(codec: Codec, sized: bool) -> None:
    """64 MiB of zeros against a 1 MiB bound: a ValueError naming the codec and the bound, and
    the process's Python memory grows by the bound and a few MiB of working buffers at most
    (the output is made a piece at a time), whether or not the frame's header says the size;
    without the bound it would reach 64 MiB."""
    _needs(codec)
    if not sized and codec == "zlib":
        pytest.skip("a zlib stream never says its size")
    bomb = _bomb(codec, 64 << 20) if sized else _no_header_size(codec, 64 << 20)
    coder = aiolmdb.JSONCoder().compressed(codec=codec, threshold=1, max_size=1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"max_size=1048576 bytes") as info:
            coder.deserialize(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    label = {"zlib": "zlib", "zstd": "zstd", "lz4": "LZ4"}[codec]
    assert f"its {label} " in str(info.value)
    assert peak < (1 << 20) + (3 << 20), peak


@pytest.mark.parametrize("codec", ["zlib", "zstd", "lz4"])
def test_a_value_at_the_bound_decodes_and_one_byte_more_does_not(codec: Codec) -> None:
    _needs(codec)
    coder = aiolmdb.IdentityCoder().compressed(codec=codec, threshold=1, max_size=4096)
    assert coder.deserialize(coder.serialize(bytes(4096))) == bytes(4096)
    with pytest.raises(ValueError, match="max_size=4096"):
        coder.deserialize(coder.serialize(bytes(4097)))
    unbounded = aiolmdb.IdentityCoder().compressed(codec=codec, threshold=1, max_size=None)
    assert unbounded.deserialize(coder.serialize(bytes(1 << 20))) == bytes(1 << 20)


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_a_frame_claiming_more_than_the_bound_is_refused_by_its_header(codec: Codec) -> None:
    """A frame whose header says its size is refused on that claim, before any output."""
    _needs(codec)
    coder = aiolmdb.IdentityCoder().compressed(codec=codec, threshold=1, max_size=4096)
    with pytest.raises(ValueError, match="header claims 4097 bytes, over this coder's max_size"):
        coder.deserialize(coder.serialize(bytes(4097)))


async def test_a_bomb_read_through_a_database_names_the_key(env: aiolmdb.Environment) -> None:
    """The error reaches the caller of get() naming the key, the codec and the bound; the
    other reads of its batch are unaffected."""
    raw = env.open_db("bombs")
    await raw.put(b"bomb", _bomb("zlib", 8 << 20))
    await raw.put(b"fine", aiolmdb.JSONCoder().compressed().serialize({"ok": 1}))
    db = env.open_db("bombs", value_coder=aiolmdb.JSONCoder().compressed(max_size=1 << 20))
    got: list[Any] = await asyncio.gather(db.get(b"bomb"), db.get(b"fine"), return_exceptions=True)
    bad, good = got
    assert isinstance(bad, ValueError)
    for part in ("key b'bomb'", "zlib", "max_size=1048576"):
        assert part in str(bad)
    assert good == {"ok": 1}


def test_max_size_is_checked_and_kept_by_repr_equality_and_pickle() -> None:
    with pytest.raises(TypeError, match="max_size must be an int or None"):
        aiolmdb.JSONCoder().compressed(max_size=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_size must be >= 1"):
        aiolmdb.JSONCoder().compressed(codec="zlib", threshold=4, max_size=0)
    default = aiolmdb.JSONCoder().compressed()
    assert default.max_size == 64 << 20  # type: ignore[attr-defined]
    assert "max_size" not in repr(default)
    for coder in (
        aiolmdb.JSONCoder().compressed(max_size=10),
        aiolmdb.JSONCoder().compressed(threshold=8, max_size=None),
    ):
        assert "max_size=" in repr(coder)
        assert coder != default
        copy = pickle.loads(pickle.dumps(coder))
        assert copy == coder
        assert copy.max_size == coder.max_size  # type: ignore[attr-defined]
