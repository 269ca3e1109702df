"""The base of every coder: :class:`Coder`, the ``Buffer`` type and shared helpers.

The public names are re-exported from :mod:`aiolmdb.coders`; the built-in coders live in
``coders.py`` and in one private module per family (tuple keys, compression, typed values).
"""

from __future__ import annotations

import abc
import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Generic, TypeAlias, TypeVar

if TYPE_CHECKING:
    from backports.zstd import ZstdDict

    from .compress import Codec

T = TypeVar("T")

Buffer: TypeAlias = bytes | bytearray | memoryview
"""What ``Coder.deserialize`` receives: ``bytes``, ``bytearray`` or a ``memoryview`` (possibly
into LMDB's memory map, valid only during the call)."""


def type_name(obj: object) -> str:
    """The name of ``obj``'s type, for error messages."""
    return type(obj).__name__


def nbytes(buffer: Buffer) -> int:
    """The size of ``buffer`` in bytes (-1 if it is not a buffer at all)."""
    try:
        return memoryview(buffer).nbytes
    except TypeError:  # not a buffer at all
        return -1


def show_bytes(buffer: Buffer, limit: int = 48) -> str:
    """``buffer`` as a ``bytes`` literal for error messages, cut after ``limit`` bytes."""
    data = bytes(memoryview(buffer)[: limit + 1])
    if len(data) > limit:
        return f"{data[:limit]!r}... ({nbytes(buffer)} bytes)"
    return repr(data)


def require(module: str, package: str, extra: str, coder: str) -> ModuleType:
    """Import ``module``, an optional dependency, or fail with the ``pip install`` lines that
    bring it: aiolmdb's ``extra``, or the distribution ``package`` itself."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(missing(coder, package, extra)) from exc


def missing(user: str, package: str, extra: str) -> str:
    """The message of a missing optional package: what needs it and the pip lines."""
    return (
        f"{user} needs the {package!r} package: pip install 'aiolmdb[{extra}]' "
        f"(or: pip install {package})"
    )


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

    def prefix_end(self, encoded: bytes) -> bytes | None:
        """Where the keys that start with a prefix end: the (exclusive) upper bound of the
        byte range holding them, given the prefix's encoded bytes (None: no bound).

        ``items(prefix=p)`` scans ``[encoded, prefix_end(encoded))``. The default suits
        coders whose encoded prefix is a byte prefix of exactly the keys it selects: the
        smallest byte string after every string starting with ``encoded``. Override it when
        the encoding escapes bytes (see :class:`~aiolmdb.TupleCoder`).
        """
        stripped = encoded.rstrip(b"\xff")
        if not stripped:
            return None  # every key >= an all-0xff prefix starts with it
        return stripped[:-1] + bytes([stripped[-1] + 1])

    def compressed(
        self,
        level: int | None = None,
        *,
        codec: Codec = "zlib",
        threshold: int = 0,
        zstd_dict: ZstdDict | Buffer | None = None,
        max_size: int | None = 64 << 20,
    ) -> Coder[T]:
        """Return a coder that compresses the output of this coder.

        ``codec`` is ``"zlib"`` (standard library), ``"zstd"`` (``aiolmdb[zstd]``) or ``"lz4"``
        (``aiolmdb[lz4]``); ``level`` is the codec's level, ``None`` for its default (zlib: 1).
        Values whose encoding is shorter than ``threshold`` bytes are stored uncompressed.
        ``zstd_dict`` (zstd only) is a trained dictionary (a ``ZstdDict`` or its bytes, see
        :func:`~aiolmdb.train_zstd_dict`), needed again to read what it compressed.
        ``max_size`` is the most bytes one stored value may decompress to (64 MiB; ``None``:
        no bound): a larger one raises ``ValueError`` instead of filling memory.

        With the defaults (zlib, ``threshold=0``) this is ``ZlibCoder(self, level)``, whose
        bytes are plain zlib streams, as in aiolmdb 0.1. Otherwise it is a
        :class:`CompressedCoder`. Both read every form either writes, so the codec, level and
        threshold can be changed on a database that holds data.
        """
        from .compress import CompressedCoder, ZlibCoder

        if codec == "zlib" and threshold == 0 and zstd_dict is None:
            return ZlibCoder(self, 1 if level is None else level, max_size=max_size)
        return CompressedCoder(
            self, level, codec=codec, threshold=threshold, zstd_dict=zstd_dict, max_size=max_size
        )


class ParameterlessCoder(Coder[T]):
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
