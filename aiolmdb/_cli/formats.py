"""How keys and values appear on the command line: ``--key-format`` and ``--value-format``.

Each format turns a command-line argument into the bytes to store and stored bytes back into
text (for ``key<TAB>value`` lines) or a JSON value (for JSON lines). Every format but ``hex``
and ``base64`` goes through the library's own coder (``StringCoder``, ``UInt64Coder``,
``TupleCoder``, ``JSONCoder``, ``MsgpackCoder``), so the command line reads exactly what a
program using that coder wrote, and writes what it reads. ``--compressed`` puts a compressed
coder (any form the codecs write: zlib, zstd, LZ4, stored uncompressed) before the value's
format.

Bytes that a format cannot show (a value that is not UTF-8, not JSON, not a tuple...) never
stop the output: they are shown as base64 and marked (:data:`TEXT_MARK` in text,
``key_b64``/``value_b64`` fields in JSON lines); :class:`Shown` counts them for a warning.
"""

from __future__ import annotations

import ast
import base64
import binascii
import datetime
import json
import math
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..coders import (
    Coder,
    IdentityCoder,
    JSONCoder,
    MsgpackCoder,
    StringCoder,
    TupleCoder,
    UInt16Coder,
    UInt32Coder,
    UInt64Coder,
)

__all__ = [
    "FORMATS",
    "TEXT_MARK",
    "Format",
    "FormatError",
    "Shown",
    "ValueCodec",
    "escape_text",
    "jsonable",
    "make_format",
]

TEXT_MARK: Final = "\\base64:"
"""Before the base64 of bytes a format cannot show, in text output. Escaped text never holds a
backslash followed by ``b`` (a backslash is written ``\\\\``), and no other format's text
starts with a backslash."""

FORMATS: Final = ("str", "hex", "base64", "uint64", "uint32", "uint16", "tuple", "json", "msgpack")
"""The names ``--key-format`` and ``--value-format`` take."""


class FormatError(ValueError):
    """An argument that is not valid in its format (the message names it and the format)."""


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def escape_text(text: str) -> str:
    """``text`` with backslash, tab, newline and carriage return written as ``\\\\``, ``\\t``,
    ``\\n`` and ``\\r``, so that it fits on one field of a tab-separated line."""
    return text.translate(_ESCAPES)


def b64(data: bytes) -> str:
    """``data`` in standard base64."""
    return base64.b64encode(data).decode("ascii")


def jsonable(obj: Any) -> Any:
    """A decoded object as a JSON value: tuples and sets as lists, ``bytes`` as
    ``{"$base64": ...}``, UUIDs and datetimes as strings, map keys that JSON cannot hold as
    their JSON text; anything else as its ``repr`` (MessagePack extension types)."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)  # NaN is no JSON
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"$base64": b64(bytes(obj))}
    if isinstance(obj, Mapping):
        return {_json_key(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(item) for item in obj]
    if isinstance(obj, (set, frozenset)):
        return [jsonable(item) for item in sorted(obj, key=repr)]
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    return repr(obj)


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    return json.dumps(jsonable(key), ensure_ascii=False)


def _json_text(obj: Any) -> str:
    """One line of JSON for a decoded object (no tab, no newline: json escapes them)."""
    return json.dumps(jsonable(obj), ensure_ascii=False)


class Format:
    """One format: how an argument becomes stored bytes and stored bytes become text or JSON.

    ``coder`` is the library's coder the format stands for (None: the bytes themselves);
    ``parse`` turns an argument into the object the coder encodes."""

    def __init__(
        self,
        name: str,
        coder: Coder[Any] | None,
        parse: Callable[[str], Any],
        text: Callable[[Any], str],
        as_json: Callable[[Any], Any],
    ) -> None:
        self.name = name
        self.coder = coder
        self._parse = parse
        self._text = text
        self._json = as_json

    @property
    def format(self) -> Format:
        """The format itself (as for a :class:`ValueCodec`)."""
        return self

    def parse(self, arg: str, what: str) -> bytes:
        """The bytes an argument stands for; FormatError naming ``what`` if it is not valid."""
        try:
            obj = self._parse(arg)
            return bytes(obj if self.coder is None else self.coder.serialize(obj))
        except FormatError as exc:
            raise FormatError(f"{what} {exc}") from None
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
            reason = " ".join(str(exc).split())
            raise FormatError(f"{what} is not valid {self.name}: {arg!r} ({reason})") from None

    def decode(self, data: bytes) -> Any:
        """The object the stored bytes hold (ValueError if they are not in this format)."""
        return data if self.coder is None else self.coder.deserialize(data)

    def text(self, data: bytes) -> str:
        """The stored bytes as text (ValueError if this format cannot show them)."""
        return self._text(self.decode(data))

    def json(self, data: bytes) -> Any:
        """The stored bytes as a JSON value (ValueError if this format cannot show them)."""
        return self._json(self.decode(data))

    def prefix_end(self, encoded: bytes) -> bytes | None:
        """The end of the key range that starts with ``encoded`` (the coder's own rule)."""
        return (self.coder or IdentityCoder()).prefix_end(encoded)


def _parse_str(arg: str) -> bytes:
    # Bytes the OS passed that are not UTF-8 arrive as surrogate escapes: stored as they came.
    return arg.encode("utf-8", "surrogateescape")


def _parse_hex(arg: str) -> bytes:
    try:
        return bytes.fromhex(arg)
    except ValueError:
        raise FormatError(f"is not valid hex: {arg!r}") from None


def _parse_base64(arg: str) -> bytes:
    try:
        return base64.b64decode(arg.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise FormatError(f"is not valid base64: {arg!r}") from None


def _parse_uint(arg: str) -> int:
    text = arg.strip().replace("_", "")
    if not (text.isascii() and text.isdigit()):
        raise FormatError(f"is not an unsigned integer: {arg!r}")
    return int(text)


def _parse_tuple(arg: str) -> tuple[Any, ...]:
    try:
        value = ast.literal_eval(arg)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise FormatError(
            f"is not a Python tuple literal such as '(\"user\", 42)': {arg!r}"
        ) from None
    if not isinstance(value, tuple):
        raise FormatError(f"is not a tuple (write ({arg},) with a comma): {arg!r}")
    return value


def _parse_json(arg: str) -> Any:
    try:
        return json.loads(arg)
    except ValueError as exc:
        raise FormatError(f"is not valid JSON: {arg!r} ({exc})") from None


def _same(obj: Any) -> Any:
    return obj


_UTF8: Final = StringCoder()
_UINTS: Final = {"uint64": UInt64Coder, "uint32": UInt32Coder, "uint16": UInt16Coder}


def make_format(name: str) -> Format:
    """The format called ``name`` (one of :data:`FORMATS`); ImportError with the pip line for
    ``msgpack`` without msgspec, FormatError for an unknown name."""
    if name == "str":
        # Written as the bytes given; read back through StringCoder (UTF-8).
        return Format(name, None, _parse_str, _UTF8.deserialize, _UTF8.deserialize)
    if name == "hex":
        return Format(name, None, _parse_hex, bytes.hex, bytes.hex)
    if name == "base64":
        return Format(name, None, _parse_base64, b64, b64)
    if name in _UINTS:
        return Format(name, _UINTS[name](), _parse_uint, str, _same)
    if name == "tuple":
        return Format(name, TupleCoder(), _parse_tuple, repr, jsonable)
    if name == "json":
        return Format(name, JSONCoder(), _parse_json, _json_text, jsonable)
    if name == "msgpack":
        return Format(name, MsgpackCoder(), _parse_json, _json_text, jsonable)
    raise FormatError(f"unknown format {name!r}: use one of {', '.join(FORMATS)}")


class ValueCodec:
    """The value side: an optional compressed coder (reading every form) before the format."""

    def __init__(self, fmt: Format, compression: Coder[bytes] | None = None) -> None:
        self.format = fmt
        self.compression = compression

    @property
    def name(self) -> str:
        """The format's name, with ``compressed`` when values are compressed."""
        return self.format.name + (" (compressed)" if self.compression is not None else "")

    def parse(self, arg: str, what: str) -> bytes:
        """The bytes to store for an argument (compressed if values are)."""
        data = self.format.parse(arg, what)
        return data if self.compression is None else bytes(self.compression.serialize(data))

    def _inner(self, data: bytes) -> bytes:
        """The format's bytes of a stored value: decompressed when values are compressed."""
        if self.compression is None:
            return data
        try:
            return bytes(self.compression.deserialize(data))
        except ValueError as exc:
            if "zstd dictionary" in str(exc):
                raise ValueError(f"{exc}; give it to the command with --zstd-dict FILE") from exc
            raise

    def decode(self, data: bytes) -> Any:
        """The object stored (ValueError if the bytes are not in this format)."""
        return self.format.decode(self._inner(data))

    def text(self, data: bytes) -> str:
        """The stored bytes as text (ValueError if they cannot be shown so)."""
        return self.format.text(self._inner(data))

    def json(self, data: bytes) -> Any:
        """The stored bytes as a JSON value (ValueError if they cannot be shown so)."""
        return self.format.json(self._inner(data))


class Shown:
    """Shows keys and values in their formats, falling back to marked base64 for bytes a
    format cannot show; counts the fallbacks and keeps the first reason, for one warning."""

    def __init__(self, keys: Format | ValueCodec, values: ValueCodec, escape: bool) -> None:
        self.keys = keys
        self.values = values
        self._escape = escape
        self.fallbacks = 0
        self.first: str | None = None

    def _failed(self, what: str, data: bytes, codec: Format | ValueCodec, exc: Exception) -> None:
        self.fallbacks += 1
        if self.first is None:
            shown = repr(data[:40]) + ("..." if len(data) > 40 else "")
            reason = " ".join(str(exc).split())
            self.first = f"{what} {shown} is not {codec.name}: {reason}"

    def _text(self, what: str, data: bytes, codec: Format | ValueCodec) -> str:
        try:
            text = codec.text(data)
        except ValueError as exc:
            self._failed(what, data, codec, exc)
            return TEXT_MARK + b64(data)
        return escape_text(text) if self._escape and codec.format.name == "str" else text

    def key_text(self, data: bytes) -> str:
        """A key as text (marked base64 if its format cannot show it)."""
        return self._text("key", data, self.keys)

    def value_text(self, data: bytes) -> str:
        """A value as text (marked base64 if its format cannot show it)."""
        return self._text("value", data, self.values)

    def _json(
        self, field: str, data: bytes | None, codec: Format | ValueCodec, out: dict[str, Any]
    ) -> None:
        if data is None:
            out[field] = None
            return
        try:
            out[field] = codec.json(data)
        except ValueError as exc:
            self._failed(field, data, codec, exc)
            out[field + "_b64"] = b64(data)

    def key_json(self, data: bytes | None, out: dict[str, Any]) -> None:
        """Set ``out["key"]`` (or ``out["key_b64"]`` when the format cannot show it)."""
        self._json("key", data, self.keys, out)

    def value_json(self, data: bytes | None, out: dict[str, Any]) -> None:
        """Set ``out["value"]`` (or ``out["value_b64"]`` when the format cannot show it)."""
        self._json("value", data, self.values, out)

    def warning(self) -> str | None:
        """One line about the fallbacks (None if there were none)."""
        if not self.fallbacks:
            return None
        count = "1 key or value" if self.fallbacks == 1 else f"{self.fallbacks} keys or values"
        return (
            f"{count} shown as base64 (marked {TEXT_MARK!r} in text, *_b64 in JSON): the first, "
            f"{self.first}"
        )
