"""Coders: how Python objects become the bytes LMDB stores, and back.

Every database has a key coder and a value coder. A :class:`Coder` has two methods:
``serialize(obj)`` turns an object into bytes before it is written, and ``deserialize(buffer)``
turns stored bytes back into an object after it is read. Both run on aiolmdb's worker threads,
never on the event loop, and may be called concurrently from several threads: a coder must not
keep mutable per-call state.

Built-in coders (the stored bytes are identical to aiolmdb 0.1):

* :class:`IdentityCoder`: ``bytes`` stored as they are.
* :class:`StringCoder`: ``str`` encoded with a text encoding (UTF-8 by default).
* :class:`UInt16Coder`, :class:`UInt32Coder`, :class:`UInt64Coder`: non-negative ``int`` as
  2, 4 or 8 big-endian bytes.
* :class:`JSONCoder`: JSON-compatible values as UTF-8 JSON text.
* :class:`PickleCoder`: any picklable object. **Only for trusted data**; see its docstring.
* :class:`ZlibCoder`: zlib compression stacked over another coder; usually made with
  :meth:`Coder.compressed`, e.g. ``JSONCoder().compressed(9)``.

Key ordering
------------
LMDB sorts keys by their *encoded bytes* (lexicographic, unsigned byte comparison), so the key
coder decides the order seen by cursors and range scans:

* the unsigned integer coders are big-endian and fixed-width, so byte order is numeric order;
* :class:`StringCoder` with UTF-8 gives UTF-8 byte order, which equals Unicode code point order
  (not locale or case-insensitive order). Other encodings give whatever their bytes give;
* :class:`IdentityCoder` gives plain byte order;
* :class:`JSONCoder`, :class:`PickleCoder` and compressed keys give no useful order: use them
  for keys only when order does not matter.

Buffers
-------
``deserialize`` may receive a :class:`memoryview` pointing straight into LMDB's memory map. It is
valid only for the duration of the call: never return it or keep a reference to it (or to a
slice of it); copy with ``bytes(buffer)`` whatever must outlive the call.
"""

from __future__ import annotations

import abc
import codecs
import json
import pickle
import struct
import zlib
from typing import Any, ClassVar, Generic, TypeAlias, TypeVar

__all__ = [
    "Buffer",
    "Coder",
    "IdentityCoder",
    "JSONCoder",
    "PickleCoder",
    "StringCoder",
    "UInt16Coder",
    "UInt32Coder",
    "UInt64Coder",
    "ZlibCoder",
]

T = TypeVar("T")

Buffer: TypeAlias = bytes | bytearray | memoryview
"""What ``Coder.deserialize`` receives: ``bytes``, ``bytearray`` or a ``memoryview`` (possibly
into LMDB's memory map, valid only during the call)."""


def _type_name(obj: object) -> str:
    return type(obj).__name__


def _nbytes(buffer: Buffer) -> int:
    try:
        return memoryview(buffer).nbytes
    except TypeError:  # not a buffer at all
        return -1


class Coder(abc.ABC, Generic[T]):
    """Converts objects of type ``T`` to bytes for LMDB and back.

    Subclass it and implement :meth:`serialize` and :meth:`deserialize`::

        class PointCoder(Coder[tuple[int, int]]):
            def serialize(self, obj: tuple[int, int]) -> bytes:
                return struct.pack(">ii", *obj)

            def deserialize(self, buffer: Buffer) -> tuple[int, int]:
                x, y = struct.unpack(">ii", buffer)
                return (x, y)

    Rules for implementations:

    * ``serialize`` should return ``bytes``; any bytes-like object py-lmdb accepts
      (``bytearray``, a byte ``memoryview``) is also tolerated.
    * ``deserialize`` may be given a ``memoryview`` into LMDB's memory map that is valid **only
      during the call**. Never return the buffer or keep a reference to it (nor to a slice or
      an object that wraps it): once the call returns, the memory may be reused or unmapped.
      Copy with ``bytes(buffer)`` whatever must survive the call.
    * Both methods run on worker threads, possibly concurrently: keep coders stateless.
    * Raise ``TypeError`` for objects of the wrong type and ``ValueError`` for values or stored
      bytes that cannot be converted.
    """

    __slots__ = ()

    @abc.abstractmethod
    def serialize(self, obj: T) -> bytes:
        """Return the bytes to store for ``obj`` (``bytes``, or another bytes-like object)."""

    @abc.abstractmethod
    def deserialize(self, buffer: Buffer) -> T:
        """Rebuild the object from stored bytes.

        ``buffer`` may be a ``memoryview`` into LMDB's memory map, valid only during this call:
        never return it or keep a reference to it; copy with ``bytes(buffer)`` if needed.
        """

    def compressed(self, level: int = 1) -> Coder[T]:
        """Return a coder that zlib-compresses the output of this coder.

        ``level`` is the zlib level: ``0`` (no compression) to ``9`` (best), or ``-1`` for
        zlib's default (6). Equivalent to ``ZlibCoder(self, level)``.
        """
        return ZlibCoder(self, level)


class _ParameterlessCoder(Coder[T]):
    """Base of the built-in coders without parameters: equal when of the same type."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Coder):
            return NotImplemented
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class IdentityCoder(_ParameterlessCoder[bytes]):
    """Stores bytes unchanged.

    ``serialize`` accepts ``bytes``, ``bytearray`` and ``memoryview`` (the latter two are copied
    to ``bytes``); anything else, ``str`` included, raises ``TypeError``. ``deserialize`` always
    returns a new ``bytes`` object, never the buffer it was given.
    """

    __slots__ = ()

    def serialize(self, obj: Buffer) -> bytes:
        """Return ``obj`` as ``bytes``; raise ``TypeError`` if it is not bytes-like."""
        if type(obj) is bytes:
            return obj
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return bytes(obj)
        raise TypeError(
            f"IdentityCoder cannot encode a {_type_name(obj)} value; "
            "expected bytes-like (bytes, bytearray, memoryview)"
        )

    def deserialize(self, buffer: Buffer) -> bytes:
        """Return a ``bytes`` copy of ``buffer``."""
        return bytes(buffer)


class StringCoder(Coder[str]):
    """Stores ``str`` values encoded with a text encoding (UTF-8 by default).

    With UTF-8, keys sort in Unicode code point order. ``serialize`` accepts only ``str``
    (``TypeError`` otherwise) and raises ``ValueError`` when a string cannot be encoded (e.g. a
    lone surrogate, or a character outside the encoding); ``deserialize`` raises ``ValueError``
    when the stored bytes are not valid in the encoding.
    """

    __slots__ = ("_encoding",)

    def __init__(self, encoding: str = "utf-8") -> None:
        """Create a coder for ``encoding``, any text encoding known to :mod:`codecs`.

        Raises ``TypeError`` if ``encoding`` is not a ``str`` and ``LookupError`` if it is not a
        known text encoding (e.g. ``"base64"``, a bytes-to-bytes codec, is rejected).
        """
        if not isinstance(encoding, str):
            raise TypeError(f"StringCoder encoding must be a str, not {_type_name(encoding)}")
        try:
            name = codecs.lookup(encoding).name
            "".encode(name)
            b"".decode(name)
        except LookupError as exc:
            raise LookupError(
                f"StringCoder: {encoding!r} is not a known text encoding ({exc})"
            ) from exc
        self._encoding = name

    @property
    def encoding(self) -> str:
        """The normalized codec name, e.g. ``"utf-8"`` (also for ``StringCoder("UTF8")``)."""
        return self._encoding

    def serialize(self, obj: str) -> bytes:
        """Encode ``obj``; ``TypeError`` if it is not a ``str``, ``ValueError`` if unencodable."""
        if not isinstance(obj, str):
            raise TypeError(f"StringCoder cannot encode a {_type_name(obj)} value; expected str")
        try:
            return obj.encode(self._encoding)
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"StringCoder cannot encode this string as {self._encoding}: {exc}"
            ) from exc

    def deserialize(self, buffer: Buffer) -> str:
        """Decode the stored bytes; ``ValueError`` if they are not valid in the encoding."""
        try:
            return str(buffer, self._encoding)
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"StringCoder cannot decode: the stored bytes are not valid {self._encoding} "
                f"({exc})"
            ) from exc

    def __repr__(self) -> str:
        return f"StringCoder(encoding={self._encoding!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Coder):
            return NotImplemented
        return type(other) is type(self) and other._encoding == self._encoding

    def __hash__(self) -> int:
        return hash((type(self), self._encoding))


class _UIntCoder(_ParameterlessCoder[int]):
    """Fixed-width big-endian unsigned integer; subclasses set the format."""

    __slots__ = ()

    _struct: ClassVar[struct.Struct]
    _max: ClassVar[int]

    def serialize(self, obj: int) -> bytes:
        """Return ``obj`` as big-endian unsigned bytes.

        ``TypeError`` if ``obj`` is not an ``int`` (``bool`` is rejected too: a ``True`` key is
        almost always a bug; pass ``int(flag)`` explicitly); ``ValueError`` if out of range.
        """
        if type(obj) is int:  # fast path: struct rejects out-of-range values itself
            try:
                return self._struct.pack(obj)
            except struct.error:
                pass
        elif isinstance(obj, bool):
            raise TypeError(
                f"{type(self).__name__} cannot encode a bool value; expected int "
                "(bool is rejected to catch mistakes; pass int(value) explicitly)"
            )
        elif not isinstance(obj, int):
            raise TypeError(
                f"{type(self).__name__} cannot encode a {_type_name(obj)} value; expected int"
            )
        elif 0 <= obj <= self._max:
            return self._struct.pack(int(obj))
        raise ValueError(
            f"{type(self).__name__} cannot encode {int(obj)}: out of range 0..{self._max}"
        )

    def deserialize(self, buffer: Buffer) -> int:
        """Return the integer; ``ValueError`` if the buffer has the wrong length."""
        try:
            return self._struct.unpack(buffer)[0]  # type: ignore[no-any-return]
        except struct.error as exc:
            size = self._struct.size
            raise ValueError(
                f"{type(self).__name__} cannot decode a value of {_nbytes(buffer)} bytes: "
                f"expected exactly {size} bytes"
            ) from exc


class UInt16Coder(_UIntCoder):
    """Stores ``int`` values in ``0..65535`` as 2 big-endian bytes (byte order = numeric order).

    ``bool`` is rejected with ``TypeError``.
    """

    __slots__ = ()
    _struct = struct.Struct(">H")
    _max = 0xFFFF


class UInt32Coder(_UIntCoder):
    """Stores ``int`` values in ``0..2**32-1`` as 4 big-endian bytes (byte order = numeric order).

    ``bool`` is rejected with ``TypeError``.
    """

    __slots__ = ()
    _struct = struct.Struct(">I")
    _max = 0xFFFF_FFFF


class UInt64Coder(_UIntCoder):
    """Stores ``int`` values in ``0..2**64-1`` as 8 big-endian bytes (byte order = numeric order).

    ``bool`` is rejected with ``TypeError``.
    """

    __slots__ = ()
    _struct = struct.Struct(">Q")
    _max = 0xFFFF_FFFF_FFFF_FFFF


# Same output as json.dumps(obj, ensure_ascii=False), without building an encoder per call.
_JSON_ENCODE = json.JSONEncoder(ensure_ascii=False).encode
_JSON_DECODE = json.JSONDecoder().decode


class JSONCoder(_ParameterlessCoder[Any]):
    """Stores JSON-compatible values as UTF-8 JSON text.

    The bytes are exactly ``json.dumps(obj, ensure_ascii=False).encode("utf-8")``. The usual
    JSON conversions apply: tuples come back as lists, dict keys become strings.
    ``serialize`` raises ``TypeError`` for objects JSON cannot represent (``set``, arbitrary
    objects...) and ``ValueError`` for circular structures or strings that are not valid UTF-8
    (lone surrogates); ``deserialize`` raises ``ValueError`` for bytes that are not UTF-8 JSON.
    """

    __slots__ = ()

    def serialize(self, obj: Any) -> bytes:
        """Return ``obj`` as UTF-8 JSON bytes."""
        try:
            return _JSON_ENCODE(obj).encode("utf-8")
        except TypeError as exc:
            raise TypeError(f"JSONCoder cannot encode a {_type_name(obj)} value: {exc}") from exc
        except ValueError as exc:  # circular reference, or a lone surrogate (UnicodeEncodeError)
            raise ValueError(f"JSONCoder cannot encode a {_type_name(obj)} value: {exc}") from exc

    def deserialize(self, buffer: Buffer) -> Any:
        """Parse the stored UTF-8 JSON bytes."""
        try:
            text = str(buffer, "utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"JSONCoder cannot decode: the stored bytes are not valid utf-8 ({exc})"
            ) from exc
        try:
            return _JSON_DECODE(text)
        except ValueError as exc:
            raise ValueError(
                f"JSONCoder cannot decode: the stored bytes are not valid JSON ({exc})"
            ) from exc


class PickleCoder(Coder[Any]):
    """Stores any picklable object with :mod:`pickle`.

    .. warning::
        Never use ``PickleCoder`` for data that could come from an untrusted source: unpickling
        can run arbitrary code, so anyone able to write to the database could take over the
        reading process. Prefer :class:`JSONCoder` (or a custom coder) whenever possible.

    ``serialize`` raises ``TypeError`` for objects that cannot be pickled; ``deserialize`` raises
    ``ValueError`` for truncated or corrupt data (other errors from unpickling, such as a class
    that can no longer be imported, propagate unchanged).
    """

    __slots__ = ("_protocol",)

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        """Create a coder writing with pickle ``protocol`` (0 to ``pickle.HIGHEST_PROTOCOL``;
        ``-1`` means ``pickle.HIGHEST_PROTOCOL``). Any protocol can be read back."""
        if type(protocol) is not int:
            raise TypeError(f"PickleCoder protocol must be an int, not {_type_name(protocol)}")
        if protocol == -1:
            protocol = pickle.HIGHEST_PROTOCOL
        if not 0 <= protocol <= pickle.HIGHEST_PROTOCOL:
            raise ValueError(
                f"PickleCoder protocol must be 0..{pickle.HIGHEST_PROTOCOL} or -1, got {protocol}"
            )
        self._protocol = protocol

    @property
    def protocol(self) -> int:
        """The pickle protocol used by :meth:`serialize`."""
        return self._protocol

    def serialize(self, obj: Any) -> bytes:
        """Return the pickle of ``obj``; ``TypeError`` if it cannot be pickled."""
        try:
            return pickle.dumps(obj, self._protocol)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise TypeError(f"PickleCoder cannot encode a {_type_name(obj)} value: {exc}") from exc

    def deserialize(self, buffer: Buffer) -> Any:
        """Unpickle the stored bytes (the result never references ``buffer``).

        **Runs arbitrary code if the data is malicious**: only for trusted data.
        """
        try:
            return pickle.loads(buffer)
        except (pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(
                f"PickleCoder cannot decode: the stored bytes are not a valid pickle ({exc!r})"
            ) from exc

    def __repr__(self) -> str:
        return f"PickleCoder(protocol={self._protocol})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Coder):
            return NotImplemented
        return type(other) is type(self) and other._protocol == self._protocol

    def __hash__(self) -> int:
        return hash((type(self), self._protocol))


class ZlibCoder(Coder[T]):
    """Compresses the output of another coder with zlib.

    Stored bytes are ``zlib.compress(inner.serialize(obj), level)``; they can be read back with
    plain ``zlib.decompress``. Usually created with :meth:`Coder.compressed`. Errors from the
    inner coder propagate unchanged; ``deserialize`` raises ``ValueError`` if the stored bytes
    are not valid zlib data. Compressed keys do not keep any useful order.
    """

    __slots__ = ("_inner", "_level")

    def __init__(self, inner: Coder[T], level: int = 1) -> None:
        """Wrap ``inner``; ``level`` is ``0`` (none) to ``9`` (best), or ``-1`` (zlib default).

        Raises ``TypeError`` if ``inner`` is not a :class:`Coder` or ``level`` not an ``int``,
        ``ValueError`` if ``level`` is out of range.
        """
        if not isinstance(inner, Coder):
            raise TypeError(f"ZlibCoder inner coder must be a Coder, not {_type_name(inner)}")
        if type(level) is not int:
            raise TypeError(f"ZlibCoder compression level must be an int, not {_type_name(level)}")
        if not -1 <= level <= 9:
            raise ValueError(
                f"ZlibCoder compression level must be 0..9 (or -1 for zlib's default), got {level}"
            )
        self._inner = inner
        self._level = level

    @property
    def inner(self) -> Coder[T]:
        """The wrapped coder."""
        return self._inner

    @property
    def level(self) -> int:
        """The zlib compression level."""
        return self._level

    def serialize(self, obj: T) -> bytes:
        """Serialize ``obj`` with the inner coder, then compress."""
        return zlib.compress(self._inner.serialize(obj), self._level)

    def deserialize(self, buffer: Buffer) -> T:
        """Decompress, then deserialize with the inner coder."""
        try:
            data = zlib.decompress(buffer)
        except zlib.error as exc:
            raise ValueError(
                f"ZlibCoder cannot decode: the stored bytes are not valid zlib data ({exc})"
            ) from exc
        return self._inner.deserialize(data)

    def __repr__(self) -> str:
        return f"ZlibCoder({self._inner!r}, level={self._level})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Coder):
            return NotImplemented
        return (
            type(other) is type(self)
            and other._level == self._level
            and bool(other._inner == self._inner)
        )

    def __hash__(self) -> int:
        return hash((type(self), self._inner, self._level))
