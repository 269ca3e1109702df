"""Typed, fast values: MessagePack and msgspec coders (the ``msgpack``/``msgspec`` extras).

Both use `msgspec <https://jcristharif.com/msgspec/>`_: its MessagePack decoder is the fastest
of the maintained Python bindings (docs/guide/coders.md compares them), it decodes straight into
typed objects, and its ``Encoder``/``Decoder`` objects are thread-safe (since 0.15), so one pair
per coder serves every worker thread.
"""

from __future__ import annotations

from types import GenericAlias
from typing import Any, Generic, Literal, TypeVar, cast, overload

from .coder import Coder, ParameterlessCoder
from .common import Buffer, require, show_bytes, type_name

T = TypeVar("T")

Format = Literal["msgpack", "json"]


def _encode_error(coder: str, obj: object, exc: Exception) -> Exception:
    """A TypeError (unsupported type) or ValueError (unrepresentable value) naming ``coder``."""
    cls = TypeError if isinstance(exc, TypeError) else ValueError
    return cls(f"{coder} cannot encode a {type_name(obj)} value: {exc}")


class MsgpackCoder(ParameterlessCoder[Any]):
    """Stores values as MessagePack: compact, fast, binary-safe, read by every language.

    Encodes ``None``, ``bool``, ``int`` (``-2**63`` to ``2**64 - 1``), ``float``, ``str``,
    ``bytes``, lists, tuples, sets and dicts (any hashable keys), and whatever else msgspec
    encodes (datetimes, UUIDs, dataclasses, msgspec Structs...). Decoding is untyped: arrays come
    back as lists, maps as dicts, ``bytes`` as ``bytes``; use :class:`MsgspecCoder` to get typed
    objects back. Needs ``pip install 'aiolmdb[msgpack]'`` (msgspec); without it construction
    raises ``ImportError`` with that line. ``serialize`` raises ``TypeError`` for unsupported
    types and ``ValueError`` for unrepresentable values (an ``int`` too large, a circular
    structure); ``deserialize`` raises ``ValueError`` for bytes that are not one MessagePack
    value.
    """

    __slots__ = ("_decode", "_encode")

    def __init__(self) -> None:
        """Create the coder; ``ImportError`` with the pip line if msgspec is missing."""
        msgspec = require("msgspec", "msgspec", "msgpack", "MsgpackCoder")
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder().decode

    def serialize(self, obj: Any) -> bytes:
        """Return ``obj`` as MessagePack bytes."""
        try:
            return cast(bytes, self._encode(obj))
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise _encode_error("MsgpackCoder", obj, exc) from exc

    def deserialize(self, buffer: Buffer) -> Any:
        """Decode the stored MessagePack value (it never references ``buffer``)."""
        try:
            return self._decode(buffer)
        except ValueError as exc:
            raise ValueError(
                f"MsgpackCoder cannot decode {show_bytes(buffer)}: not valid MessagePack ({exc})"
            ) from exc

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), ())


class MsgspecCoder(Coder[T], Generic[T]):
    """Stores values of one type with msgspec, validating them when they are read.

    ``MsgspecCoder(User)`` encodes a ``User`` (a ``msgspec.Struct``, a dataclass, a
    ``TypedDict``, ``list[int]``, ``dict[str, float]``, a union... anything msgspec supports)
    and decodes stored bytes straight into a ``User``, checking every field: a stored value
    that does not match the type raises ``ValueError`` saying which field is wrong, never a
    half-valid object. It is generic, so ``db.get`` returns ``User | None`` to a type checker.

    ``format="msgpack"`` (the default) stores MessagePack, ``format="json"`` compact UTF-8 JSON
    (msgspec writes NaN and infinities as ``null``). Needs ``pip install 'aiolmdb[msgspec]'``;
    without it construction raises ``ImportError`` with that line. ``serialize`` raises
    ``TypeError`` for objects msgspec cannot encode and ``ValueError`` for unrepresentable
    values; it does not check that ``obj`` has the declared type (msgspec's encoders do not).
    """

    __slots__ = ("_decode", "_encode", "_format", "_type")

    @overload
    def __init__(self: MsgspecCoder[T], type: type[T], *, format: Format = "msgpack") -> None: ...

    @overload
    def __init__(self: MsgspecCoder[Any], type: Any, *, format: Format = "msgpack") -> None: ...

    def __init__(self, type: Any, *, format: Format = "msgpack") -> None:
        """Create a coder for ``type`` in ``format`` (``"msgpack"`` or ``"json"``).

        Raises ``ValueError`` for an unknown format, ``TypeError`` for a type msgspec cannot
        decode into, ``ImportError`` with the pip line if msgspec is missing.
        """
        msgspec = require("msgspec", "msgspec", "msgspec", "MsgspecCoder")
        if format not in ("msgpack", "json"):
            raise ValueError(f"MsgspecCoder format must be 'msgpack' or 'json', got {format!r}")
        module = msgspec.msgpack if format == "msgpack" else msgspec.json
        try:
            self._decode = module.Decoder(type).decode
        except TypeError as exc:
            raise TypeError(f"MsgspecCoder cannot decode into {type!r}: {exc}") from exc
        self._encode = module.Encoder().encode
        self._type = type
        self._format: Format = format

    @property
    def type(self) -> Any:
        """The type values are decoded into."""
        return self._type

    @property
    def format(self) -> Format:
        """``"msgpack"`` or ``"json"``."""
        return self._format

    def serialize(self, obj: T) -> bytes:
        """Return ``obj`` encoded in this coder's format."""
        try:
            return cast(bytes, self._encode(obj))
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise _encode_error(repr(self), obj, exc) from exc

    def deserialize(self, buffer: Buffer) -> T:
        """Decode and validate the stored value (``ValueError`` naming the wrong field)."""
        try:
            return cast(T, self._decode(buffer))
        except ValueError as exc:
            raise ValueError(f"{self!r} cannot decode {show_bytes(buffer)}: {exc}") from exc

    def __repr__(self) -> str:
        tp: Any = self._type
        plain = not isinstance(tp, GenericAlias) and isinstance(tp, type)  # list[int]: no name
        shown = tp.__qualname__ if plain else repr(tp)
        return f"{type(self).__name__}({shown}, format={self._format!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Coder):
            return NotImplemented
        return (
            type(other) is type(self)
            and other._format == self._format
            and bool(other._type == self._type)
        )

    def __hash__(self) -> int:
        return hash((type(self), self._format, self._type))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_make_msgspec_coder, (type(self), self._type, self._format))


def _make_msgspec_coder(cls: type[MsgspecCoder[Any]], tp: Any, fmt: Format) -> MsgspecCoder[Any]:
    return cls(tp, format=fmt)
