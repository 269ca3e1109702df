"""Tests for aiolmdb.coders: round trips, exact stored bytes (aiolmdb 0.1 compatibility),
key ordering, buffer lifetime and every error path."""

from __future__ import annotations

import enum
import inspect
import json
import pickle
import struct
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiolmdb import coders
from aiolmdb.coders import (
    Buffer,
    Coder,
    IdentityCoder,
    JSONCoder,
    PickleCoder,
    StringCoder,
    UInt16Coder,
    UInt32Coder,
    UInt64Coder,
    ZlibCoder,
)

T = TypeVar("T")

UINT_CODERS: list[tuple[type[Coder[int]], int, int]] = [
    (UInt16Coder, 2, 2**16 - 1),
    (UInt32Coder, 4, 2**32 - 1),
    (UInt64Coder, 8, 2**64 - 1),
]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def decode_like_lmdb(coder: Coder[T], data: bytes) -> T:
    """Deserialize from a memoryview, as py-lmdb with buffers=True does, then invalidate the
    memory: overwrite it and resize the backing store. Resizing raises BufferError if the
    coder kept any view (or slice) of the buffer; overwriting would corrupt a result that
    shared the memory."""
    backing = bytearray(data)
    view = memoryview(backing)
    try:
        result = coder.deserialize(view)
    finally:
        view.release()
    backing[:] = b"\xa5" * len(backing)
    backing.clear()  # BufferError here means the coder kept a reference to the buffer
    return result


BUFFER_KINDS: list[Callable[[bytes], Buffer]] = [bytes, bytearray, memoryview]


def assert_round_trip(coder: Coder[Any], value: Any) -> None:
    stored = coder.serialize(value)
    assert isinstance(stored, bytes)
    for kind in BUFFER_KINDS:
        assert coder.deserialize(kind(stored)) == value
    assert decode_like_lmdb(coder, stored) == value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=20,
)

pickle_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.complex_numbers(allow_nan=False)
    | st.text()
    | st.binary()
    | st.builds(bytearray, st.binary())
    | st.frozensets(st.integers(), max_size=5)
    | st.dates()
    | st.decimals(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=20,
)


# --------------------------------------------------------------------------------------------
# Public surface
# --------------------------------------------------------------------------------------------


def test_all_lists_public_names() -> None:
    assert sorted(coders.__all__) == sorted(
        [
            "Buffer",
            "Coder",
            "CompressedCoder",
            "IdentityCoder",
            "JSONCoder",
            "MsgpackCoder",
            "MsgspecCoder",
            "PickleCoder",
            "StringCoder",
            "TupleCoder",
            "UInt16Coder",
            "UInt32Coder",
            "UInt64Coder",
            "ZlibCoder",
            "train_zstd_dict",
        ]
    )
    for name in coders.__all__:
        assert hasattr(coders, name)
    assert not hasattr(coders, "PicleCoder")


def test_public_classes_and_methods_have_docstrings() -> None:
    assert coders.__doc__ is not None
    assert "Key ordering" in coders.__doc__
    for name in coders.__all__:
        obj = getattr(coders, name)
        if not inspect.isclass(obj):
            continue
        assert obj.__doc__, name
        for attr, member in vars(obj).items():
            if attr.startswith("_") and attr != "__init__":
                continue
            if callable(member) or isinstance(member, property):
                assert member.__doc__, f"{name}.{attr}"


def test_docstrings_carry_the_required_warnings() -> None:
    assert Coder.__doc__ is not None
    doc = " ".join(Coder.__doc__.replace("*", "").split())
    assert "bytes(buffer)" in doc
    assert "only during the call" in doc
    assert PickleCoder.__doc__ is not None
    assert "untrusted" in PickleCoder.__doc__
    assert "arbitrary code" in PickleCoder.__doc__


def test_coder_cannot_be_instantiated() -> None:
    with pytest.raises(TypeError):
        Coder()  # type: ignore[abstract]


def test_incomplete_subclass_cannot_be_instantiated() -> None:
    class HalfCoder(Coder[bytes]):
        def serialize(self, obj: bytes) -> bytes:
            return obj

    with pytest.raises(TypeError, match="deserialize"):
        HalfCoder()  # type: ignore[abstract]


class PointCoder(Coder[tuple[int, int]]):
    """A custom coder as a user would write it (like the README's CustomCoder)."""

    def serialize(self, obj: tuple[int, int]) -> bytes:
        return struct.pack(">ii", *obj)

    def deserialize(self, buffer: Buffer) -> tuple[int, int]:
        x, y = struct.unpack(">ii", buffer)
        return (x, y)


def test_custom_coder_works() -> None:
    coder = PointCoder()
    assert coder.serialize((1, -2)) == b"\x00\x00\x00\x01\xff\xff\xff\xfe"
    assert_round_trip(coder, (1, -2))
    packed = coder.compressed(9)
    assert isinstance(packed, ZlibCoder)
    assert packed.inner is coder
    assert zlib.decompress(packed.serialize((3, 4))) == coder.serialize((3, 4))
    assert_round_trip(packed, (3, 4))
    # Custom coders keep identity equality (no parameters known to the base class).
    assert coder == coder
    assert coder != PointCoder()
    assert ZlibCoder(coder, 9) == packed
    assert ZlibCoder(PointCoder(), 9) != packed


# --------------------------------------------------------------------------------------------
# Exact stored bytes (aiolmdb 0.1 compatibility)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coder", "value", "stored"),
    [
        (IdentityCoder(), b"\x00abc\xff", b"\x00abc\xff"),
        (IdentityCoder(), b"", b""),
        (StringCoder(), "é", b"\xc3\xa9"),
        (StringCoder("utf-8"), "key", b"key"),
        (StringCoder("latin-1"), "é", b"\xe9"),
        (StringCoder("utf-16-be"), "A", b"\x00A"),
        (UInt16Coder(), 0, b"\x00\x00"),
        (UInt16Coder(), 1, b"\x00\x01"),
        (UInt16Coder(), 258, b"\x01\x02"),
        (UInt16Coder(), 65535, b"\xff\xff"),
        (UInt32Coder(), 1, b"\x00\x00\x00\x01"),
        (UInt32Coder(), 2**32 - 1, b"\xff\xff\xff\xff"),
        (UInt32Coder(), 0x01020304, b"\x01\x02\x03\x04"),
        (UInt64Coder(), 1, b"\x00\x00\x00\x00\x00\x00\x00\x01"),
        (UInt64Coder(), 2**64 - 1, b"\xff" * 8),
        (UInt64Coder(), 0x0102030405060708, b"\x01\x02\x03\x04\x05\x06\x07\x08"),
        (JSONCoder(), {"key": "välue"}, '{"key": "välue"}'.encode()),
        (JSONCoder(), [1, 2.5, None, True], b"[1, 2.5, null, true]"),
        (JSONCoder(), "€", '"€"'.encode()),
        (JSONCoder(), {"a": {"b": []}}, b'{"a": {"b": []}}'),
    ],
    ids=repr,
)
def test_exact_stored_bytes(coder: Coder[Any], value: Any, stored: bytes) -> None:
    assert coder.serialize(value) == stored
    assert coder.deserialize(stored) == value
    assert decode_like_lmdb(coder, stored) == value


@given(json_values)
def test_json_bytes_match_json_dumps(value: Any) -> None:
    assert JSONCoder().serialize(value) == json.dumps(value, ensure_ascii=False).encode("utf-8")


def test_compressed_json_is_plain_zlib() -> None:
    value = {"key": "välue", "items": list(range(50))}
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8")
    stored = JSONCoder().compressed(9).serialize(value)
    assert stored == zlib.compress(raw, 9)
    assert zlib.decompress(stored) == raw
    assert JSONCoder().compressed(9).deserialize(zlib.compress(raw, 9)) == value


def test_compressed_default_level_is_1() -> None:
    coder = StringCoder().compressed()
    assert isinstance(coder, ZlibCoder)
    assert coder.level == 1
    assert coder.serialize("a" * 100) == zlib.compress(b"a" * 100, 1)


def test_pickle_bytes_are_plain_pickle() -> None:
    value = {"a": (1, 2), "b": b"x"}
    assert PickleCoder().serialize(value) == pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    assert PickleCoder(2).serialize(value) == pickle.dumps(value, 2)
    # Data written with any protocol can be read.
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert PickleCoder().deserialize(pickle.dumps(value, protocol)) == value


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@given(st.binary())
def test_identity_round_trip(value: bytes) -> None:
    assert_round_trip(IdentityCoder(), value)
    assert_round_trip(IdentityCoder().compressed(), value)


@given(st.binary())
def test_identity_accepts_bytes_like(value: bytes) -> None:
    coder = IdentityCoder()
    assert coder.serialize(value) is value  # no copy for bytes
    for converted in (coder.serialize(bytearray(value)), coder.serialize(memoryview(value))):
        assert type(converted) is bytes
        assert converted == value


def test_identity_deserialize_copies() -> None:
    backing = bytearray(b"abc")
    result = IdentityCoder().deserialize(memoryview(backing))
    assert type(result) is bytes
    backing[0] = ord("z")
    assert result == b"abc"
    result2 = IdentityCoder().deserialize(backing)
    assert type(result2) is bytes
    backing[1] = ord("z")
    assert result2 == b"zbc"


def test_identity_serialize_bytearray_is_a_snapshot() -> None:
    backing = bytearray(b"abc")
    stored = IdentityCoder().serialize(backing)
    backing[0] = ord("z")
    assert stored == b"abc"


@given(st.text())
def test_string_round_trip(value: str) -> None:
    assert_round_trip(StringCoder(), value)
    assert_round_trip(StringCoder().compressed(6), value)
    assert_round_trip(StringCoder("utf-16"), value)


@given(st.text(alphabet=st.characters(max_codepoint=255)))
def test_latin1_round_trip(value: str) -> None:
    assert_round_trip(StringCoder("latin-1"), value)


@pytest.mark.parametrize(("cls", "size", "maximum"), UINT_CODERS)
@given(data=st.data())
def test_uint_round_trip(
    cls: type[Coder[int]], size: int, maximum: int, data: st.DataObject
) -> None:
    value = data.draw(st.integers(0, maximum))
    coder = cls()
    stored = coder.serialize(value)
    assert len(stored) == size
    assert stored == value.to_bytes(size, "big")
    assert_round_trip(coder, value)
    assert_round_trip(coder.compressed(), value)


@pytest.mark.parametrize(("cls", "size", "maximum"), UINT_CODERS)
@given(data=st.data())
def test_uint_byte_order_is_numeric_order(
    cls: type[Coder[int]], size: int, maximum: int, data: st.DataObject
) -> None:
    a = data.draw(st.integers(0, maximum))
    b = data.draw(st.integers(0, maximum))
    coder = cls()
    assert (a < b) == (coder.serialize(a) < coder.serialize(b))
    assert (a == b) == (coder.serialize(a) == coder.serialize(b))


@pytest.mark.parametrize(("cls", "size", "maximum"), UINT_CODERS)
def test_uint_bounds(cls: type[Coder[int]], size: int, maximum: int) -> None:
    coder = cls()
    assert coder.serialize(0) == b"\x00" * size
    assert coder.serialize(maximum) == b"\xff" * size
    assert coder.deserialize(b"\xff" * size) == maximum


@given(st.text(), st.text())
def test_utf8_string_byte_order_is_code_point_order(a: str, b: str) -> None:
    coder = StringCoder()
    assert (a < b) == (coder.serialize(a) < coder.serialize(b))


class Color(enum.IntEnum):
    RED = 1
    BLUE = 300
    HUGE = 70000


def test_uint_accepts_int_subclasses() -> None:
    assert UInt16Coder().serialize(Color.BLUE) == b"\x01\x2c"
    assert UInt32Coder().serialize(Color.RED) == b"\x00\x00\x00\x01"
    result = UInt16Coder().deserialize(b"\x01\x2c")
    assert type(result) is int


@given(json_values)
def test_json_round_trip(value: Any) -> None:
    assert_round_trip(JSONCoder(), value)
    assert_round_trip(JSONCoder().compressed(9), value)


def test_json_converts_like_json() -> None:
    coder = JSONCoder()
    assert coder.deserialize(coder.serialize((1, 2))) == [1, 2]
    assert coder.deserialize(coder.serialize({1: "a"})) == {"1": "a"}


@given(pickle_values)
def test_pickle_round_trip(value: Any) -> None:
    assert_round_trip(PickleCoder(), value)
    assert_round_trip(PickleCoder(0), value)
    assert_round_trip(PickleCoder().compressed(), value)


def test_pickle_result_does_not_reference_buffer() -> None:
    value = [b"abc", bytearray(b"xyz"), "text", {"k": b"v" * 100}]
    stored = PickleCoder().serialize(value)
    assert decode_like_lmdb(PickleCoder(), stored) == value


def test_decode_like_lmdb_detects_retained_buffer() -> None:
    """The helper must fail for a coder that leaks the buffer; otherwise the buffer tests above
    would prove nothing."""

    class LeakyCoder(Coder[Any]):
        def serialize(self, obj: Any) -> bytes:
            return bytes(obj)

        def deserialize(self, buffer: Buffer) -> Any:
            return memoryview(buffer)[1:]

    with pytest.raises(BufferError):
        decode_like_lmdb(LeakyCoder(), b"abc")


# --------------------------------------------------------------------------------------------
# Error paths
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coder", "value", "type_name"),
    [
        (IdentityCoder(), "text", "str"),
        (IdentityCoder(), None, "NoneType"),
        (IdentityCoder(), 5, "int"),
        (IdentityCoder(), [1, 2], "list"),
        (StringCoder(), b"bytes", "bytes"),
        (StringCoder(), None, "NoneType"),
        (StringCoder(), 1, "int"),
        *[(cls(), None, "NoneType") for cls, _, _ in UINT_CODERS],
        *[(cls(), "1", "str") for cls, _, _ in UINT_CODERS],
        *[(cls(), 1.0, "float") for cls, _, _ in UINT_CODERS],
        *[(cls(), b"\x01", "bytes") for cls, _, _ in UINT_CODERS],
        *[(cls(), True, "bool") for cls, _, _ in UINT_CODERS],
        *[(cls(), False, "bool") for cls, _, _ in UINT_CODERS],
        (JSONCoder(), {1, 2}, "set"),
        (JSONCoder(), object(), "object"),
        (JSONCoder(), b"bytes", "bytes"),
        (PickleCoder(), lambda: None, "function"),
        (PickleCoder(), (x for x in range(3)), "generator"),
    ],
    ids=repr,
)
def test_serialize_wrong_type(coder: Coder[Any], value: Any, type_name: str) -> None:
    with pytest.raises(TypeError) as info:
        coder.serialize(value)
    message = str(info.value)
    assert type(coder).__name__ in message
    assert type_name in message
    # The compressed variant reports the inner coder's error unchanged.
    with pytest.raises(TypeError, match=type(coder).__name__):
        coder.compressed().serialize(value)


def test_json_nested_unserializable_names_offending_type() -> None:
    with pytest.raises(TypeError) as info:
        JSONCoder().serialize({"a": [1, {2, 3}]})
    assert "JSONCoder" in str(info.value)
    assert "set" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)


def test_pickle_local_function_is_type_error() -> None:
    def local() -> None:
        pass

    with pytest.raises(TypeError, match="PickleCoder") as info:
        PickleCoder().serialize(local)
    assert "function" in str(info.value)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("cls", "value", "maximum"),
    [
        (UInt16Coder, -1, 65535),
        (UInt16Coder, 2**16, 65535),
        (UInt16Coder, 70000, 65535),
        (UInt32Coder, -1, 2**32 - 1),
        (UInt32Coder, 2**32, 2**32 - 1),
        (UInt64Coder, -1, 2**64 - 1),
        (UInt64Coder, 2**64, 2**64 - 1),
        (UInt64Coder, -(2**70), 2**64 - 1),
        (UInt16Coder, Color.HUGE, 65535),
    ],
)
def test_uint_out_of_range(cls: type[Coder[int]], value: int, maximum: int) -> None:
    with pytest.raises(ValueError, match=cls.__name__) as info:
        cls().serialize(value)
    assert f"cannot encode {int(value)}: out of range 0..{maximum}" in str(info.value)


def test_uint16_message_example() -> None:
    with pytest.raises(ValueError, match="UInt16Coder") as info:
        UInt16Coder().serialize(70000)
    assert str(info.value) == "UInt16Coder cannot encode 70000: out of range 0..65535"


@pytest.mark.parametrize(
    ("cls", "size", "length"),
    [
        (cls, size, length)
        for cls, size, _ in UINT_CODERS
        for length in (0, 1, 2, 3, 4, 7, 8, 9, 16)
        if length != size
    ],
)
def test_uint_wrong_length(cls: type[Coder[int]], size: int, length: int) -> None:
    for kind in BUFFER_KINDS:
        with pytest.raises(ValueError, match=cls.__name__) as info:
            cls().deserialize(kind(b"\x01" * length))
        assert f"{length} bytes" in str(info.value)
        assert f"expected exactly {size} bytes" in str(info.value)


@pytest.mark.parametrize(
    ("coder", "stored", "words"),
    [
        (StringCoder(), b"\xff\xfe", "not valid utf-8"),
        (StringCoder(), b"abc\xc3", "not valid utf-8"),
        (StringCoder("ascii"), b"\x80", "not valid ascii"),
        (JSONCoder(), b"", "not valid JSON"),
        (JSONCoder(), b"{not json", "not valid JSON"),
        (JSONCoder(), b"[1, 2", "not valid JSON"),
        (JSONCoder(), b"1 2", "not valid JSON"),
        (JSONCoder(), b'"\xff"', "not valid utf-8"),
        (PickleCoder(), b"", "not a valid pickle"),
        (PickleCoder(), b"garbage", "not a valid pickle"),
        (PickleCoder(), pickle.dumps([1, 2, 3])[:-3], "not a valid pickle"),
        (JSONCoder().compressed(), b"not zlib", "not valid zlib data"),
        (JSONCoder().compressed(), zlib.compress(b"[1, 2, 3]")[:-4], "not valid zlib data"),
        (IdentityCoder().compressed(9), b"", "not valid zlib data"),
    ],
    ids=repr,
)
def test_deserialize_invalid_bytes(coder: Coder[Any], stored: bytes, words: str) -> None:
    for kind in BUFFER_KINDS:
        with pytest.raises(ValueError, match=type(coder).__name__) as info:
            coder.deserialize(kind(stored))
        assert type(coder).__name__ in str(info.value)
        assert words in str(info.value)
        assert info.value.__cause__ is not None
    with pytest.raises(ValueError, match=type(coder).__name__):
        decode_like_lmdb(coder, stored)


def test_string_decode_error_is_plain_value_error_chained() -> None:
    with pytest.raises(ValueError, match="StringCoder") as info:
        StringCoder().deserialize(b"\xff")
    assert not isinstance(info.value, UnicodeDecodeError)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_compressed_inner_error_propagates() -> None:
    with pytest.raises(ValueError, match="JSONCoder"):
        JSONCoder().compressed().deserialize(zlib.compress(b"{bad"))
    with pytest.raises(ValueError, match="UInt32Coder"):
        UInt32Coder().compressed().deserialize(zlib.compress(b"\x00"))


@pytest.mark.parametrize(
    ("coder", "value"),
    [
        (StringCoder("ascii"), "é"),
        (StringCoder("latin-1"), "€"),
        (StringCoder(), "\ud800"),
    ],
    ids=repr,
)
def test_string_unencodable(coder: StringCoder, value: str) -> None:
    with pytest.raises(ValueError, match="StringCoder") as info:
        coder.serialize(value)
    assert coder.encoding in str(info.value)
    assert isinstance(info.value.__cause__, UnicodeEncodeError)


def test_json_lone_surrogate_is_value_error() -> None:
    with pytest.raises(ValueError, match="JSONCoder"):
        JSONCoder().serialize({"k": "\udc80"})


def test_json_circular_reference_is_value_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="JSONCoder"):
        JSONCoder().serialize(loop)


def test_string_coder_rejects_unknown_or_non_text_encoding() -> None:
    with pytest.raises(LookupError, match="no-such-encoding"):
        StringCoder("no-such-encoding")
    with pytest.raises(LookupError, match="StringCoder"):
        StringCoder("base64")
    with pytest.raises(TypeError, match="StringCoder"):
        StringCoder(None)  # type: ignore[arg-type]


def test_string_coder_normalizes_encoding() -> None:
    assert StringCoder("UTF8").encoding == "utf-8"
    assert StringCoder("UTF8") == StringCoder()
    assert hash(StringCoder("UTF8")) == hash(StringCoder("utf-8"))
    assert StringCoder("latin1") == StringCoder("ISO-8859-1")


@pytest.mark.parametrize("level", [-2, 10, 100])
def test_invalid_compression_level(level: int) -> None:
    with pytest.raises(ValueError, match="ZlibCoder") as info:
        JSONCoder().compressed(level)
    assert str(level) in str(info.value)
    with pytest.raises(ValueError, match="ZlibCoder"):
        ZlibCoder(JSONCoder(), level)


@pytest.mark.parametrize("level", [1.5, "9", None, True])
def test_compression_level_wrong_type(level: Any) -> None:
    with pytest.raises(TypeError, match="ZlibCoder") as info:
        ZlibCoder(JSONCoder(), level)
    assert type(level).__name__ in str(info.value)
    if level is not None:  # compressed(None) is the codec's default level
        with pytest.raises(TypeError, match="ZlibCoder"):
            JSONCoder().compressed(level)


@pytest.mark.parametrize("level", [-1, 0, 1, 5, 9])
def test_valid_compression_levels(level: int) -> None:
    coder = JSONCoder().compressed(level)
    assert coder.serialize([1, 2]) == zlib.compress(b"[1, 2]", level)
    assert coder.deserialize(coder.serialize([1, 2])) == [1, 2]


def test_zlib_coder_requires_a_coder() -> None:
    with pytest.raises(TypeError, match="ZlibCoder") as info:
        ZlibCoder(json)  # type: ignore[arg-type]
    assert "module" in str(info.value)
    with pytest.raises(TypeError, match="ZlibCoder"):
        ZlibCoder(JSONCoder)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", [-2, pickle.HIGHEST_PROTOCOL + 1])
def test_pickle_invalid_protocol(protocol: int) -> None:
    with pytest.raises(ValueError, match="PickleCoder"):
        PickleCoder(protocol)


@pytest.mark.parametrize("protocol", ["5", 2.0, None, True])
def test_pickle_protocol_wrong_type(protocol: Any) -> None:
    with pytest.raises(TypeError, match="PickleCoder"):
        PickleCoder(protocol)


def test_pickle_protocol_minus_one_means_highest() -> None:
    assert PickleCoder(-1).protocol == pickle.HIGHEST_PROTOCOL
    assert PickleCoder(-1) == PickleCoder()
    assert PickleCoder(0).protocol == 0


# --------------------------------------------------------------------------------------------
# repr / eq / hash
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coder", "text"),
    [
        (IdentityCoder(), "IdentityCoder()"),
        (StringCoder(), "StringCoder(encoding='utf-8')"),
        (StringCoder("Latin-1"), "StringCoder(encoding='iso8859-1')"),
        (UInt16Coder(), "UInt16Coder()"),
        (UInt32Coder(), "UInt32Coder()"),
        (UInt64Coder(), "UInt64Coder()"),
        (JSONCoder(), "JSONCoder()"),
        (PickleCoder(2), "PickleCoder(protocol=2)"),
        (JSONCoder().compressed(9), "ZlibCoder(JSONCoder(), level=9)"),
        (
            ZlibCoder(StringCoder().compressed(), -1),
            "ZlibCoder(ZlibCoder(StringCoder(encoding='utf-8'), level=1), level=-1)",
        ),
    ],
    ids=repr,
)
def test_repr(coder: Coder[Any], text: str) -> None:
    assert repr(coder) == text


def _all_distinct_coders() -> list[Coder[Any]]:
    return [
        IdentityCoder(),
        StringCoder(),
        StringCoder("latin-1"),
        UInt16Coder(),
        UInt32Coder(),
        UInt64Coder(),
        JSONCoder(),
        PickleCoder(),
        PickleCoder(2),
        JSONCoder().compressed(),
        JSONCoder().compressed(9),
        StringCoder().compressed(9),
    ]


def test_equal_coders_are_equal_and_hash_alike() -> None:
    for first, second in zip(_all_distinct_coders(), _all_distinct_coders(), strict=True):
        assert first is not second
        assert first == second
        assert (first != second) is False
        assert hash(first) == hash(second)


def test_different_coders_are_not_equal() -> None:
    distinct = _all_distinct_coders()
    for i, first in enumerate(distinct):
        for j, second in enumerate(distinct):
            if i != j:
                assert first != second, (first, second)
    assert len(set(distinct)) == len(distinct)
    assert IdentityCoder() != b""
    assert UInt32Coder() != 4
    assert JSONCoder().compressed() != JSONCoder()


def test_coders_usable_as_dict_keys() -> None:
    table = {UInt32Coder(): "u32", JSONCoder().compressed(9): "json9"}
    assert table[UInt32Coder()] == "u32"
    assert table[ZlibCoder(JSONCoder(), 9)] == "json9"


def test_subclass_of_builtin_is_not_equal_to_builtin() -> None:
    class MyJSON(JSONCoder):
        pass

    assert MyJSON() != JSONCoder()
    assert JSONCoder() != MyJSON()
    assert MyJSON() == MyJSON()
    assert repr(MyJSON()) == "MyJSON()"


def test_subclass_of_parameterized_builtin_compares_by_type_and_params() -> None:
    class MyString(StringCoder):
        pass

    assert MyString() == MyString()
    assert hash(MyString()) == hash(MyString())
    assert MyString() != MyString("latin-1")
    assert MyString() != StringCoder()
    assert StringCoder() != MyString()
