"""Compressed coders: zlib, zstd or LZ4 over another coder, and the stored layout.

Every stored value says how it was stored, by its first byte:

* ``0x78``: a zlib stream (RFC 1950), exactly what ``zlib.compress`` writes. aiolmdb 0.1's
  ``ZlibCoder`` wrote only this form, and ``codec="zlib"`` still does (any first byte other
  than the three below is read as a zlib stream, so zlib errors stay as they were);
* ``0x28``: a zstd frame (magic ``28 B5 2F FD``), with the content size and a checksum;
* ``0x04``: an LZ4 frame (magic ``04 22 4D 18``), with the content size and a checksum;
* ``0x00``: stored uncompressed: the inner coder's bytes follow. Values shorter than the
  threshold are stored so, and so is any value that compression would not make smaller
  (except by ``ZlibCoder``, which keeps aiolmdb 0.1's bytes).

Each compressed form is a standard frame, readable by the codec's own tools once its first byte
is known. Every compressed coder reads every form (with the codec's package installed), so
the codec, level and threshold of a database can change while it holds data.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Literal, TypeVar, cast, get_args

from ._coder import Buffer, Coder, require, show_bytes, type_name

T = TypeVar("T")

Codec = Literal["zlib", "zstd", "lz4"]
"""The compression codecs: ``"zlib"``, ``"zstd"`` or ``"lz4"``."""

_CODECS: tuple[str, ...] = get_args(Codec)
RAW = 0x00
ZLIB = 0x78
ZSTD = 0x28
LZ4 = 0x04
_TAG = {"zlib": ZLIB, "zstd": ZSTD, "lz4": LZ4}
# (lowest, highest, default) level of each codec.
_LEVELS = {"zlib": (-1, 9, 1), "zstd": (-(1 << 17), 22, 3), "lz4": (0, 16, 0)}


def _zstd(coder: str) -> ModuleType:
    if sys.version_info >= (3, 14):  # pragma: no cover - the standard library has it
        return require("compression.zstd", "zstd", coder)
    return require("backports.zstd", "zstd", coder)


def _lz4(coder: str) -> ModuleType:
    return require("lz4.frame", "lz4", coder)


def decompress(buffer: Buffer, coder: str) -> Buffer:
    """The inner coder's bytes from a stored value in any of the forms above.

    Raises ``ValueError`` naming the coder and what is wrong with the bytes, ``ImportError``
    (with the pip line) for a form whose codec's package is missing.
    """
    view = memoryview(buffer)
    tag = view[0] if view.nbytes else ZLIB
    try:
        if tag == RAW:
            return view[1:]
        if tag == ZSTD:
            zstd = _zstd(coder)
            try:
                return cast(bytes, zstd.decompress(buffer))
            except zstd.ZstdError as exc:
                raise ValueError(f"not valid zstd data ({exc})") from exc
        if tag == LZ4:
            lz4 = _lz4(coder)
            try:
                data, used = lz4.decompress(buffer, return_bytes_read=True)
            except RuntimeError as exc:
                raise ValueError(f"not valid LZ4 data ({exc})") from exc
            if used != view.nbytes:
                raise ValueError(f"not valid LZ4 data ({view.nbytes - used} bytes after the frame)")
            return cast(bytes, data)
        return zlib.decompress(buffer)
    except zlib.error as exc:
        raise ValueError(
            f"{coder} cannot decode {show_bytes(buffer)}: not valid zlib data ({exc}); the "
            "first byte of a compressed value is 0x78 (zlib), 0x28 (zstd), 0x04 (LZ4) or 0x00 "
            "(stored uncompressed)"
        ) from exc
    except ValueError as exc:
        raise ValueError(f"{coder} cannot decode {show_bytes(buffer)}: {exc}") from exc


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
    """

    __slots__ = ("_codec", "_compress", "_inner", "_level", "_threshold")

    def __init__(
        self,
        inner: Coder[T],
        level: int | None = None,
        *,
        codec: Codec = "zlib",
        threshold: int = 0,
    ) -> None:
        """Wrap ``inner``; ``level`` is the codec's level (``None``: its default).

        Levels: zlib ``0`` (none) to ``9`` (best) or ``-1`` (zlib's default, 6), default 1;
        zstd ``-131072`` (fastest) to ``22`` (best), default 3; LZ4 ``0`` (fast) to ``16``
        (best), default 0. ``threshold`` (bytes, ``>= 0``): shorter values are stored as they
        are. Raises ``TypeError`` or ``ValueError`` for a bad argument, ``ImportError`` if the
        codec's package is missing.
        """
        name = type(self).__name__
        if not isinstance(inner, Coder):
            raise TypeError(f"{name} inner coder must be a Coder, not {type_name(inner)}")
        if codec not in _CODECS:
            raise ValueError(f"{name} codec must be one of {', '.join(_CODECS)}; got {codec!r}")
        low, high, default = _LEVELS[codec]
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
        self._inner = inner
        self._codec: Codec = codec
        self._level = level
        self._threshold = threshold
        self._compress = _compressor(codec, level, name)

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
        return self._inner.deserialize(decompress(buffer, type(self).__name__))

    def _params(self) -> str:
        return f"level={self._level}, codec={self._codec!r}, threshold={self._threshold}"

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


def _compressor(codec: Codec, level: int, coder: str) -> Callable[[bytes], bytes]:
    """The one-shot compression function for ``codec`` at ``level`` (a partial: picklable)."""
    if codec == "zstd":
        zstd = _zstd(coder)
        param = zstd.CompressionParameter
        options = {param.compression_level: level, param.checksum_flag: 1}
        return partial(zstd.compress, options=options)
    if codec == "lz4":
        lz4 = _lz4(coder)
        return partial(lz4.compress, compression_level=level, content_checksum=True)
    return partial(zlib.compress, level=level)


class ZlibCoder(CompressedCoder[T]):
    """Compresses the output of another coder with zlib, as aiolmdb 0.1 did.

    Stored bytes are ``zlib.compress(inner.serialize(obj), level)``; they can be read back with
    plain ``zlib.decompress``. Usually created with :meth:`Coder.compressed`. It also reads the
    other forms a :class:`CompressedCoder` writes, so a database can move from one to the other.
    Errors from the inner coder propagate unchanged; ``deserialize`` raises ``ValueError`` if the
    stored bytes are not valid zlib data. Compressed keys do not keep any useful order.
    """

    __slots__ = ()

    def __init__(self, inner: Coder[T], level: int = 1) -> None:
        """Wrap ``inner``; ``level`` is ``0`` (none) to ``9`` (best), or ``-1`` (zlib default).

        Raises ``TypeError`` if ``inner`` is not a :class:`Coder` or ``level`` not an ``int``,
        ``ValueError`` if ``level`` is out of range.
        """
        if type(level) is not int:
            raise TypeError(f"ZlibCoder compression level must be an int, not {type_name(level)}")
        if not -1 <= level <= 9:
            raise ValueError(
                f"ZlibCoder compression level must be 0..9 (or -1 for zlib's default), got {level}"
            )
        super().__init__(inner, level)

    def serialize(self, obj: T) -> bytes:
        """Serialize ``obj`` with the inner coder, then compress."""
        return zlib.compress(self._inner.serialize(obj), self._level)

    def _params(self) -> str:
        return f"level={self._level}"
