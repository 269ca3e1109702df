"""Ordered composite keys: tuples in FoundationDB's tuple-layer encoding.

The layout is FoundationDB's tuple layer (its ``design/tuple.md``), for the types both have.
Each element is a type code then its payload, self-delimiting, and byte order is tuple order. The
packed tuples that start with the elements of a packed prefix ``p`` are exactly the keys in
``[p, p + b"\\xff")`` (a key that merely continues an escaped ``0x00`` of ``p``'s last element goes
on with ``0xff``; see ``TupleCoder.prefix_end``):

=====================  ==========================================================================
code                   element
=====================  ==========================================================================
``0x00``               ``None`` (inside a nested tuple: ``0x00 0xff``)
``0x01``               ``bytes``: the bytes with each ``0x00`` as ``0x00 0xff``, then ``0x00``
``0x02``               ``str``: its UTF-8 bytes, escaped and terminated like ``bytes``
``0x05``               a nested tuple: its elements, then ``0x00``
``0x0b`` .. ``0x1d``   ``int``: ``0x14`` is zero; ``0x14 ± n`` then ``n`` big-endian bytes for a
                       magnitude below 2**64 - 1 (ones' complement if negative); ``0x1d`` /
                       ``0x0b`` then a length byte for larger ones (up to 255 bytes)
``0x21``               ``float``: IEEE 754 double, big-endian, sign bit flipped if positive and
                       every bit flipped if negative
``0x26``, ``0x27``     ``False``, ``True``
``0x30``               ``uuid.UUID``: its 16 bytes
=====================  ==========================================================================

This is an independent implementation written from the specification; FoundationDB's own
``fdb.tuple`` is the test oracle.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

from .coder import ParameterlessCoder
from .common import Buffer, show_bytes, type_name

_BIG = (1 << 64) - 1  # from this magnitude on, an int takes the 0x1d / 0x0b form
_POS = [bytes([0x14 + n]) for n in range(9)]
_NEG = [bytes([0x14 - n]) for n in range(9)]
_DOUBLE = struct.Struct(">d")
_U64 = struct.Struct(">Q")
_SIGN = 1 << 63
_ALL = (1 << 64) - 1
_UUID = uuid.UUID


class _Invalid(ValueError):
    """Stored bytes that are not a tuple this coder writes; ``pos`` is where it went wrong."""

    def __init__(self, reason: str, pos: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pos = pos


def _encode_int(v: int) -> bytes:
    if v > 0:
        if v < _BIG:
            n = (v.bit_length() + 7) >> 3
            return _POS[n] + v.to_bytes(n, "big")
        n = (v.bit_length() + 7) >> 3
        if n > 255:
            raise ValueError(f"int of {n} bytes is too large (at most 255 bytes)")
        return bytes((0x1D, n)) + v.to_bytes(n, "big")
    if v == 0:
        return b"\x14"
    n = ((-v).bit_length() + 7) >> 3
    if -v < _BIG:
        return _NEG[n] + (v + (1 << (n << 3)) - 1).to_bytes(n, "big")
    if n > 255:
        raise ValueError(f"int of {n} bytes is too large (at most 255 bytes)")
    return bytes((0x0B, n ^ 0xFF)) + (v + (1 << (n << 3)) - 1).to_bytes(n, "big")


def _encode_float(v: float) -> bytes:
    if v != v:
        raise ValueError("NaN cannot be part of a key (it equals nothing, not even itself)")
    bits: int = _U64.unpack(_DOUBLE.pack(v))[0]
    return b"\x21" + _U64.pack(bits ^ _ALL if bits & _SIGN else bits ^ _SIGN)


def _encode_text(raw: bytes, code: bytes) -> bytes:
    if b"\x00" in raw:
        raw = raw.replace(b"\x00", b"\x00\xff")
    return code + raw + b"\x00"


def _encode(items: tuple[Any, ...], parts: list[bytes], nested: bool) -> None:
    append = parts.append
    for v in items:
        cls = type(v)
        if cls is str:
            append(_encode_text(v.encode("utf-8"), b"\x02"))
        elif cls is int:
            append(_encode_int(v))
        elif v is None:
            append(b"\x00\xff" if nested else b"\x00")
        elif cls is bytes:
            append(_encode_text(v, b"\x01"))
        elif cls is tuple:
            append(b"\x05")
            _encode(v, parts, True)
            append(b"\x00")
        elif cls is bool:
            append(b"\x27" if v else b"\x26")
        elif cls is float:
            append(_encode_float(v))
        elif cls is _UUID:
            append(b"\x30" + v.bytes)
        else:
            _encode_other(v, parts)


def _encode_other(v: Any, parts: list[bytes]) -> None:
    """Subclasses of the supported types (an IntEnum, a namedtuple...), or a TypeError."""
    if isinstance(v, bool):
        parts.append(b"\x27" if v else b"\x26")
    elif isinstance(v, int):
        parts.append(_encode_int(int(v)))
    elif isinstance(v, str):
        parts.append(_encode_text(str(v).encode("utf-8"), b"\x02"))
    elif isinstance(v, (bytes, bytearray, memoryview)):
        parts.append(_encode_text(bytes(v), b"\x01"))
    elif isinstance(v, float):
        parts.append(_encode_float(float(v)))
    elif isinstance(v, tuple):
        parts.append(b"\x05")
        _encode(v, parts, True)
        parts.append(b"\x00")
    elif isinstance(v, _UUID):
        parts.append(b"\x30" + v.bytes)
    else:
        raise TypeError(
            f"a {type_name(v)} element: expected None, bytes, str, int, float, bool, "
            "uuid.UUID or a nested tuple"
        )


def pack(t: tuple[Any, ...]) -> bytes:
    """The bytes of tuple ``t``; ``TypeError``/``ValueError`` naming the element at fault."""
    if not isinstance(t, tuple):
        raise TypeError(f"TupleCoder cannot encode a {type_name(t)} value; expected a tuple")
    parts: list[bytes] = []
    try:
        _encode(t, parts, False)
    except TypeError as exc:
        raise TypeError(f"TupleCoder cannot encode {t!r}: {exc}") from None
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"TupleCoder cannot encode {t!r}: a str is not valid UTF-8 ({exc})"
        ) from exc
    except ValueError as exc:
        raise ValueError(f"TupleCoder cannot encode {t!r}: {exc}") from None
    except RecursionError:
        raise ValueError(f"TupleCoder cannot encode a {type_name(t)}: nested too deeply") from None
    return b"".join(parts)


def _terminator(data: bytes, pos: int, end: int) -> int:
    """Where the escaped bytes/str payload starting at ``pos`` ends (its ``0x00``)."""
    stop = data.find(b"\x00", pos)
    while stop >= 0 and stop + 1 < end and data[stop + 1] == 0xFF:
        stop = data.find(b"\x00", stop + 2)
    if stop < 0:
        raise _Invalid("unterminated bytes or str", pos - 1)
    return stop


def _decode(data: bytes, pos: int, nested: bool) -> tuple[tuple[Any, ...], int]:
    out: list[Any] = []
    append = out.append
    end = len(data)
    while pos < end:
        code = data[pos]
        if code == 0x02 or code == 0x01:
            stop = data.find(b"\x00", pos + 1)
            if stop < 0 or (stop + 1 < end and data[stop + 1] == 0xFF):
                stop = _terminator(data, pos + 1, end)
                raw = data[pos + 1 : stop].replace(b"\x00\xff", b"\x00")
            else:
                raw = data[pos + 1 : stop]
            if code == 0x02:
                try:
                    append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise _Invalid("a str that is not valid UTF-8", pos) from None
            else:
                append(raw)
            pos = stop + 1
        elif 0x0C <= code <= 0x1C:
            n = code - 0x14
            if n >= 0:
                stop = pos + 1 + n
                if stop > end:
                    raise _Invalid("truncated int", pos)
                value = int.from_bytes(data[pos + 1 : stop], "big")
                if n and (data[pos + 1] == 0 or value == _BIG):
                    raise _Invalid("int not in its shortest form", pos)
            else:
                n = -n
                stop = pos + 1 + n
                if stop > end:
                    raise _Invalid("truncated int", pos)
                raw_value = int.from_bytes(data[pos + 1 : stop], "big")
                if data[pos + 1] == 0xFF or (raw_value == 0 and n == 8):
                    raise _Invalid("int not in its shortest form", pos)
                value = raw_value - (1 << (n << 3)) + 1
            append(value)
            pos = stop
        elif code == 0x00:
            if not nested:
                append(None)
                pos += 1
            elif pos + 1 < end and data[pos + 1] == 0xFF:
                append(None)
                pos += 2
            else:
                return tuple(out), pos + 1
        elif code == 0x05:
            inner, pos = _decode(data, pos + 1, True)
            append(inner)
        elif code == 0x21:
            if pos + 9 > end:
                raise _Invalid("truncated float", pos)
            bits: int = _U64.unpack_from(data, pos + 1)[0]
            value = _DOUBLE.unpack(_U64.pack(bits ^ _SIGN if bits & _SIGN else bits ^ _ALL))[0]
            if value != value:
                raise _Invalid("a NaN float (TupleCoder never writes NaN)", pos)
            append(value)
            pos += 9
        elif code == 0x26 or code == 0x27:
            append(code == 0x27)
            pos += 1
        elif code == 0x30:
            if pos + 17 > end:
                raise _Invalid("truncated UUID", pos)
            append(_UUID(bytes=data[pos + 1 : pos + 17]))
            pos += 17
        elif code == 0x1D or code == 0x0B:
            append(_decode_big_int(data, pos, end))
            pos += 2 + (data[pos + 1] if code == 0x1D else data[pos + 1] ^ 0xFF)
        else:
            raise _Invalid(f"type code 0x{code:02x}, not one TupleCoder writes", pos)
    if nested:
        raise _Invalid("unterminated nested tuple", pos)
    return tuple(out), pos


def _decode_big_int(data: bytes, pos: int, end: int) -> int:
    if pos + 2 > end:
        raise _Invalid("truncated int", pos)
    positive = data[pos] == 0x1D
    n = data[pos + 1] if positive else data[pos + 1] ^ 0xFF
    if pos + 2 + n > end:
        raise _Invalid("truncated int", pos)
    value = int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
    if not positive:
        value -= (1 << (n << 3)) - 1
    if _encode_int(value) != data[pos : pos + 2 + n]:
        raise _Invalid("int not in its shortest form", pos)
    return value


def unpack(buffer: Buffer) -> tuple[Any, ...]:
    """The tuple stored in ``buffer``; ``ValueError`` naming the bytes and what is wrong."""
    data = bytes(buffer)
    try:
        return _decode(data, 0, False)[0]
    except _Invalid as exc:
        raise ValueError(
            f"TupleCoder cannot decode {show_bytes(data)}: {exc.reason} at byte {exc.pos} "
            "(not a key written by TupleCoder)"
        ) from None
    except RecursionError:
        raise ValueError(
            f"TupleCoder cannot decode {show_bytes(data)}: nested too deeply"
        ) from None


class TupleCoder(ParameterlessCoder[tuple[Any, ...]]):
    """Stores tuples so that their bytes sort as the tuples do: ordered composite keys.

    Elements may be ``None``, ``bytes``, ``str``, ``int`` (any sign, up to 255 bytes),
    ``float`` (``-0.0`` and infinities included; NaN is rejected with ``ValueError``),
    ``bool``, ``uuid.UUID`` and nested tuples. The bytes are FoundationDB's tuple layer, so
    other languages' tuple-layer libraries read them.

    Order: element by element, a shorter tuple before its extensions. Values of one type sort
    naturally (numbers numerically, ``str`` by code point, ``-0.0`` just before ``0.0``);
    different types sort by type: ``None`` < ``bytes`` < ``str`` < tuple < ``int`` < ``float``
    < ``False`` < ``True`` < ``UUID``. So ``1`` and ``1.0`` and ``True`` are three different
    keys, and every ``int`` sorts before every ``float``.

    ``db.items(prefix=("user", 42))`` yields exactly the keys ``("user", 42, ...)`` (not
    ``("user", 420)``, nor ``("user", 42.0)``; see :meth:`prefix_end`). ``bytearray`` and
    ``memoryview`` elements are stored as ``bytes`` and subclasses
    (an ``IntEnum``, a namedtuple) as their base type; lists and other types raise ``TypeError``.
    ``deserialize`` accepts only what ``serialize`` writes: anything else (another coder's
    key, a FoundationDB versionstamp or 32-bit float, truncated or non-canonical bytes) raises
    ``ValueError`` showing the bytes.
    """

    __slots__ = ()

    def serialize(self, obj: tuple[Any, ...]) -> bytes:
        """Return the tuple-layer bytes of ``obj``."""
        return pack(obj)

    def deserialize(self, buffer: Buffer) -> tuple[Any, ...]:
        """Rebuild the tuple (``ValueError`` for bytes this coder does not write)."""
        return unpack(buffer)

    def prefix_end(self, encoded: bytes) -> bytes | None:
        """``encoded + b"\\xff"``: a key that extends the prefix by elements goes on with a
        type code (below ``0xff``), while one whose bytes merely continue an escaped
        ``0x00`` of the last element (``("a",)`` and ``("a\\x00b",)``, ``((),)`` and
        ``((None,),)``) goes on with ``0xff``, and stays out (FoundationDB's own tuple ranges
        end there too)."""
        return encoded + b"\xff"
