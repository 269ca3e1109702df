"""Values stored behind a fixed-size header that aiolmdb adds (a version, an expiry).

The read side of such a database decodes through :class:`HeadedValues`: it drops the header
before the user's coder runs, so every read path strips it as it decodes; the write operations
add the header themselves."""

from __future__ import annotations

from typing import ClassVar, TypeVar

from .._codecs.coder import Coder
from .._codecs.common import Buffer, show_bytes
from .._codecs.copyout import LARGE_VALUE, copy_out

__all__ = ["HeadedValues"]

V = TypeVar("V")


class HeadedValues(Coder[V]):
    """The value coder of a database whose values carry a ``HEAD``-byte header: ``serialize``
    is the user's coder's, ``deserialize`` drops the header before the user's coder runs."""

    __slots__ = ("inner",)

    HEAD: ClassVar[int]
    """The header's size in bytes."""
    WHAT: ClassVar[tuple[str, str]]
    """What the value and the header are, for the error: ("a versioned value", "version")."""

    def __init__(self, inner: Coder[V]) -> None:
        self.inner = inner

    def serialize(self, obj: V) -> bytes:
        """The user's coder's bytes (without the header)."""
        return self.inner.serialize(obj)

    def deserialize(self, buffer: Buffer) -> V:
        """The value without its header, decoded by the user's coder."""
        head = self.HEAD
        if len(buffer) < head:
            value, header = self.WHAT
            raise ValueError(
                f"not {value} ({show_bytes(buffer)} is shorter than its {head}-byte {header})"
            )
        if len(buffer) >= LARGE_VALUE:
            # Slicing would copy the value with the GIL held.
            return self.inner.deserialize(copy_out(memoryview(buffer)[head:]))
        return self.inner.deserialize(buffer[head:])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"
