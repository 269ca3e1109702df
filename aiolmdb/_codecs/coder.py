"""The coders' classes: :class:`Coder` (the base of every coder, with ``compressed``), the
compressed coders it makes (:class:`CompressedCoder`, :class:`ZlibCoder`) and
:func:`train_zstd_dict`. The codecs themselves are in ``compress.py``; the public names are
re-exported from :mod:`aiolmdb.coders`.
"""

from __future__ import annotations

import abc
import asyncio
import zlib
from collections.abc import Sequence
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .common import Buffer, type_name
from .compress import (
    CODECS,
    LEVELS,
    MAX_SIZE,
    Codec,
    check_max_size,
    checked_zstd_dict,
    compressor,
    decompress,
    zstd_module,
)

if TYPE_CHECKING:
    from backports.zstd import ZstdDict

    from ..database import AsyncDatabase

__all__ = [
    "Coder",
    "CompressedCoder",
    "ParameterlessCoder",
    "ZlibCoder",
    "train_zstd_dict",
]

T = TypeVar("T")


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
        max_size: int | None = MAX_SIZE,
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


class CompressedCoder(Coder[T]):
    """Compresses the output of another coder with zlib, zstd or LZ4.

    Usually made with :meth:`Coder.compressed`, e.g.
    ``JSONCoder().compressed(codec="zstd", threshold=64)``. The first byte of each stored value
    says how it was stored (see the compression section of the coders guide): a zlib stream, a
    zstd frame, an LZ4 frame, or ``0x00`` then the inner coder's bytes, for values shorter than
    ``threshold`` and for values that compression would not make smaller. It reads every form,
    including the zlib streams of :class:`ZlibCoder` and aiolmdb 0.1, so the codec, level and
    threshold can change on a database that holds data.

    ``codec="zstd"`` needs ``pip install 'aiolmdb[zstd]'`` (the standard library's
    ``compression.zstd`` from Python 3.14), ``codec="lz4"`` needs ``pip install
    'aiolmdb[lz4]'``; without it construction raises ``ImportError`` with that line. Errors
    from the inner coder propagate unchanged; ``deserialize`` raises ``ValueError`` for stored
    bytes in none of the forms or corrupt (the zstd and LZ4 frames carry a checksum).
    Compressed keys keep no useful order.

    With ``codec="zstd"``, ``zstd_dict`` is a trained zstd dictionary (see
    :func:`train_zstd_dict`): small values compress much better with one. Each frame records the
    dictionary's id; values made with another dictionary, or read by a coder without one, raise
    ``ValueError`` naming the id they need. Values stored without a dictionary, in any form,
    still read.

    ``max_size`` bounds what one value may decompress to (64 MiB by default, None: no bound):
    a value whose frame claims more, or whose data decompresses to more, raises ``ValueError``
    naming the codec and the bound, and memory never grows past it (decompression bombs).
    """

    __slots__ = (
        "_codec",
        "_compress",
        "_inner",
        "_level",
        "_max_size",
        "_threshold",
        "_zstd_dict",
    )

    def __init__(
        self,
        inner: Coder[T],
        level: int | None = None,
        *,
        codec: Codec = "zlib",
        threshold: int = 0,
        zstd_dict: ZstdDict | Buffer | None = None,
        max_size: int | None = MAX_SIZE,
    ) -> None:
        """Wrap ``inner``; ``level`` is the codec's level (``None``: its default).

        Levels: zlib ``0`` (none) to ``9`` (best) or ``-1`` (zlib's default, 6), default 1;
        zstd ``-131072`` (fastest) to ``22`` (best), default 3; LZ4 ``0`` (fast) to ``16``
        (best), default 0. ``threshold`` (bytes, ``>= 0``): shorter values are stored as they
        are. ``zstd_dict`` (zstd only): a ``ZstdDict`` with an id, or its ``dict_content``
        bytes. ``max_size``: the most bytes a value may decompress to (``None``: no bound).
        Raises ``TypeError`` or ``ValueError`` for a bad argument, ``ImportError`` if the
        codec's package is missing.
        """
        name = type(self).__name__
        if not isinstance(inner, Coder):
            raise TypeError(f"{name} inner coder must be a Coder, not {type_name(inner)}")
        if codec not in CODECS:
            raise ValueError(f"{name} codec must be one of {', '.join(CODECS)}; got {codec!r}")
        low, high, default = LEVELS[codec]
        if level is None:
            level = default
        elif type(level) is not int:
            raise TypeError(f"{name} compression level must be an int, not {type_name(level)}")
        elif not low <= level <= high:
            raise ValueError(f"{name} {codec} compression level must be {low}..{high}, got {level}")
        if type(threshold) is not int:
            raise TypeError(f"{name} threshold must be an int, not {type_name(threshold)}")
        if threshold < 0:
            raise ValueError(f"{name} threshold must be >= 0, got {threshold}")
        self._max_size = check_max_size(max_size, name)
        self._zstd_dict = checked_zstd_dict(zstd_dict, codec, name)
        self._inner = inner
        self._codec: Codec = codec
        self._level = level
        self._threshold = threshold
        self._compress = compressor(codec, level, name, self._zstd_dict)

    @property
    def inner(self) -> Coder[T]:
        """The wrapped coder."""
        return self._inner

    @property
    def codec(self) -> Codec:
        """The codec new values are written with: ``"zlib"``, ``"zstd"`` or ``"lz4"``."""
        return self._codec

    @property
    def level(self) -> int:
        """The compression level new values are written with."""
        return self._level

    @property
    def threshold(self) -> int:
        """Values whose encoding is shorter than this many bytes are stored uncompressed."""
        return self._threshold

    @property
    def zstd_dict(self) -> ZstdDict | None:
        """The zstd dictionary new values are compressed with, or ``None``."""
        return self._zstd_dict

    @property
    def max_size(self) -> int | None:
        """The most bytes one value may decompress to (``None``: no bound)."""
        return self._max_size

    def serialize(self, obj: T) -> bytes:
        """Serialize ``obj`` with the inner coder, then compress (or tag it as uncompressed)."""
        data = self._inner.serialize(obj)
        size = len(data)
        if size >= self._threshold:
            packed: bytes = self._compress(data)
            if len(packed) <= size:
                return packed
        return b"\x00" + data

    def deserialize(self, buffer: Buffer) -> T:
        """Decompress whichever form was stored, then deserialize with the inner coder."""
        return self._inner.deserialize(
            decompress(buffer, type(self).__name__, self._zstd_dict, self._max_size)
        )

    def _params(self) -> str:
        params = f"level={self._level}, codec={self._codec!r}, threshold={self._threshold}"
        if self._zstd_dict is not None:
            params += f", zstd_dict=<ZstdDict id {self._zstd_dict.dict_id}>"
        return params + self._max_size_param()

    def _max_size_param(self) -> str:
        return "" if self._max_size == MAX_SIZE else f", max_size={self._max_size}"

    def __reduce__(self) -> tuple[Any, ...]:
        # A ZstdDict does not pickle: its content does. Only public names go in the pickle.
        content = None if self._zstd_dict is None else self._zstd_dict.dict_content
        make = partial(
            type(self),
            codec=self._codec,
            threshold=self._threshold,
            zstd_dict=content,
            max_size=self._max_size,
        )
        return (make, (self._inner, self._level))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r}, {self._params()})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Coder):
            return NotImplemented
        return (
            type(other) is type(self)
            and other._params() == self._params()
            and bool(other._inner == self._inner)
        )

    def __hash__(self) -> int:
        return hash((type(self), self._inner, self._params()))


class ZlibCoder(CompressedCoder[T]):
    """Compresses the output of another coder with zlib, as aiolmdb 0.1 did.

    Stored bytes are ``zlib.compress(inner.serialize(obj), level)``; they can be read back with
    plain ``zlib.decompress``. Usually created with :meth:`Coder.compressed`. It also reads the
    other forms a :class:`CompressedCoder` writes, so a database can move from one to the other.
    Errors from the inner coder propagate unchanged; ``deserialize`` raises ``ValueError`` if the
    stored bytes are not valid zlib data. Compressed keys do not keep any useful order.
    """

    __slots__ = ()

    def __init__(self, inner: Coder[T], level: int = 1, *, max_size: int | None = MAX_SIZE) -> None:
        """Wrap ``inner``; ``level`` is ``0`` (none) to ``9`` (best), or ``-1`` (zlib default);
        ``max_size`` bounds what a value may decompress to (``None``: no bound).

        Raises ``TypeError`` if ``inner`` is not a :class:`Coder` or ``level`` not an ``int``,
        ``ValueError`` if ``level`` is out of range.
        """
        if type(level) is not int:
            raise TypeError(f"ZlibCoder compression level must be an int, not {type_name(level)}")
        if not -1 <= level <= 9:
            raise ValueError(
                f"ZlibCoder compression level must be 0..9 (or -1 for zlib's default), got {level}"
            )
        super().__init__(inner, level, max_size=max_size)

    def serialize(self, obj: T) -> bytes:
        """Serialize ``obj`` with the inner coder, then compress."""
        return zlib.compress(self._inner.serialize(obj), self._level)

    def _params(self) -> str:
        return f"level={self._level}" + self._max_size_param()

    def __reduce__(self) -> tuple[Any, ...]:
        if self._max_size == MAX_SIZE:
            return (type(self), (self._inner, self._level))
        return (partial(type(self), max_size=self._max_size), (self._inner, self._level))


async def train_zstd_dict(
    db: AsyncDatabase[Any, Any], *, size: int = 16_384, samples: int = 2_000
) -> ZstdDict:
    """Train a zstd dictionary of at most ``size`` bytes on ``db``'s own values.

    Reads the first ``samples`` values of ``db`` (in key order), encodes them with its value
    coder, or with the inner coder of a compressed one (the bytes a dictionary compresses),
    and trains on those off the event loop. Pass the result as
    ``coder.compressed(codec="zstd", zstd_dict=...)``. Store its ``dict_content`` somewhere
    lasting (e.g. a named database of the same environment): values compressed with it cannot
    be read without it. Raises ``ValueError`` if there are too few values (or bytes) to train
    on, ``ImportError`` with the pip line without the ``zstd`` extra.
    """
    name = "train_zstd_dict"
    if type(size) is not int or type(samples) is not int:
        raise TypeError(f"{name} size and samples must be ints")
    if size < 256 or samples < 1:
        raise ValueError(f"{name} needs size >= 256 and samples >= 1, got {size} and {samples}")
    zstd = zstd_module(name)
    coder = db.value_coder
    inner = coder.inner if isinstance(coder, CompressedCoder) else coder
    values = [v async for v in db.values(limit=samples)]
    if not values:
        raise ValueError(f"{name} cannot train on an empty database")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _train, zstd, inner, values, size)


def _train(zstd: ModuleType, inner: Coder[Any], values: Sequence[Any], size: int) -> ZstdDict:
    data = [bytes(inner.serialize(v)) for v in values]
    total = sum(map(len, data))
    try:
        trained: ZstdDict = zstd.train_dict(data, size)
    except zstd.ZstdError as exc:
        raise ValueError(
            f"train_zstd_dict cannot train a {size}-byte dictionary on {len(data)} values "
            f"({total} bytes): {exc}; use more values or a smaller size"
        ) from exc
    return trained
