"""The built-in coders without a family of their own: bytes, text, unsigned integers, JSON and
pickle (their user-facing description is :mod:`aiolmdb.coders`'s docstring)."""

from __future__ import annotations

import codecs
import json
import pickle
import struct
from typing import Any, ClassVar

from .coder import Coder, ParameterlessCoder
from .common import Buffer, nbytes, type_name
from .copyout import copy_out

__all__ = [
    "IdentityCoder",
    "JSONCoder",
    "PickleCoder",
    "StringCoder",
    "UInt16Coder",
    "UInt32Coder",
    "UInt64Coder",
]


class IdentityCoder(ParameterlessCoder[bytes]):
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
            return copy_out(obj)  # a large one copied without the GIL
        raise TypeError(
            f"IdentityCoder cannot encode a {type_name(obj)} value; "
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
            raise TypeError(f"StringCoder encoding must be a str, not {type_name(encoding)}")
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
            raise TypeError(f"StringCoder cannot encode a {type_name(obj)} value; expected str")
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


class _UIntCoder(ParameterlessCoder[int]):
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
                f"{type(self).__name__} cannot encode a {type_name(obj)} value; expected int"
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
                f"{type(self).__name__} cannot decode a value of {nbytes(buffer)} bytes: "
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


def _find_orjson_loads() -> Any:
    try:
        import orjson
    except ImportError:
        return None
    return orjson.loads


# orjson.loads when installed (the ``fast`` extra). It reads only what the standard library reads
# the same way: any text it rejects (NaN, Infinity, 1e400, escaped lone surrogates, deep
# nesting) goes to the standard library, and so does a run of 19 digits, since orjson turns
# integers beyond 64 bits into floats. ``None``: standard library only.
_ORJSON_LOADS: Any = _find_orjson_loads()
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19


class JSONCoder(ParameterlessCoder[Any]):
    """Stores JSON-compatible values as UTF-8 JSON text.

    The bytes are exactly ``json.dumps(obj, ensure_ascii=False).encode("utf-8")``, with or
    without orjson: stored bytes never depend on what is installed, so JSON keys keep matching.
    The usual JSON conversions apply: tuples come back as lists, dict keys become strings.
    With orjson installed (``pip install 'aiolmdb[fast]'``) values are parsed by orjson, several
    times faster, falling back to the standard library for anything orjson would read
    differently or not at all: the result is always what ``json.loads`` returns.
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
            raise TypeError(f"JSONCoder cannot encode a {type_name(obj)} value: {exc}") from exc
        except ValueError as exc:  # circular reference, or a lone surrogate (UnicodeEncodeError)
            raise ValueError(f"JSONCoder cannot encode a {type_name(obj)} value: {exc}") from exc

    def deserialize(self, buffer: Buffer) -> Any:
        """Parse the stored UTF-8 JSON bytes."""
        loads = _ORJSON_LOADS
        if loads is not None:
            data = bytes(buffer)
            if _LONG_NUMBER not in data.translate(_DIGITS):
                try:
                    return loads(data)
                except ValueError:
                    pass  # the standard library decides, and words the error
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
            raise TypeError(f"PickleCoder protocol must be an int, not {type_name(protocol)}")
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
            raise TypeError(f"PickleCoder cannot encode a {type_name(obj)} value: {exc}") from exc

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
