"""Compressed coders: zlib, zstd or LZ4 over another coder, and the stored layout.

Every stored value says how it was stored, by its first byte:

* ``0x78``: a zlib stream (RFC 1950), exactly what ``zlib.compress`` writes. aiolmdb 0.1's
  ``ZlibCoder`` wrote only this form, and ``codec="zlib"`` still does (any first byte other
  than the three below is read as a zlib stream, so zlib errors stay as they were);
* ``0x28``: a zstd frame (magic ``28 B5 2F FD``), with the content size and a checksum, and
  the id of the dictionary it was compressed with, if any;
* ``0x04``: an LZ4 frame (magic ``04 22 4D 18``), with the content size and a checksum;
* ``0x00``: stored uncompressed: the inner coder's bytes follow. Values shorter than the
  threshold are stored so, and so is any value that compression would not make smaller
  (except by ``ZlibCoder``, which keeps aiolmdb 0.1's bytes).

Each compressed form is a standard frame, readable by the codec's own tools once its first byte
is known. Every compressed coder reads every form (with the codec's package installed), so
the codec, level and threshold of a database can change while it holds data. A zstd frame made
with a dictionary needs that dictionary to be read: its header names the dictionary's id, so a
coder without it refuses the value, naming the id, instead of guessing.

Decompression is bounded: a coder decompresses at most ``max_size`` bytes (64 MiB unless
given), streaming, and refuses a value whose frame header claims more, or whose output passes
the bound, with a ``ValueError``. A few kilobytes of hostile zstd can otherwise claim gigabytes
of memory (a decompression bomb), and the caller would get a bare ``MemoryError`` at best.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import zlib
from collections.abc import Callable, Sequence
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, get_args

from .coder import Buffer, Coder, require, show_bytes, type_name

if TYPE_CHECKING:
    from backports.zstd import ZstdDict

    from ..database import AsyncDatabase

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

# Decompression produces its output this many bytes at a time.
_PIECE = 1 << 20

MAX_SIZE = 64 << 20
"""The default ``max_size``: the most bytes one value may decompress to (docs/guide/coders.md
says why 64 MiB)."""


class _TooLarge(ValueError):
    """A value that decompresses to more than the coder's ``max_size``."""

    def __init__(self, codec: str, max_size: int, claimed: int | None) -> None:
        what = (
            f"its {codec} header claims {claimed} bytes"
            if claimed is not None
            else f"its {codec} data decompresses to more"
        )
        super().__init__(
            f"{what}, over this coder's max_size={max_size} bytes (a decompression bomb, or a "
            "value larger than expected: pass a larger max_size= to compressed() to read it)"
        )


def check_max_size(value: object, coder: str) -> int | None:
    """The ``max_size`` argument checked: a positive int, or None for no bound."""
    if value is None:
        return None
    if type(value) is not int:
        raise TypeError(f"{coder} max_size must be an int or None, not {type_name(value)}")
    if value < 1:
        raise ValueError(f"{coder} max_size must be >= 1 (or None for no bound), got {value}")
    return value


def _zstd(coder: str) -> ModuleType:
    if sys.version_info >= (3, 14):  # pragma: no cover - the standard library has it
        try:
            return importlib.import_module("compression.zstd")
        except ImportError as exc:
            raise ImportError(
                f"{coder} needs the standard library's compression.zstd, missing from this "
                "Python 3.14 build: use a Python built with zstd support"
            ) from exc
    return require("backports.zstd", "backports.zstd", "zstd", coder)


def _lz4(coder: str) -> ModuleType:
    return require("lz4.frame", "lz4", "lz4", coder)


def decompress(
    buffer: Buffer, coder: str, zstd_dict: ZstdDict | None = None, max_size: int | None = MAX_SIZE
) -> Buffer:
    """The inner coder's bytes from a stored value in any of the forms above.

    ``zstd_dict`` is the dictionary zstd frames that name one must have been made with.
    ``max_size`` bounds the decompressed size (None: no bound): the output is produced in a
    streaming way and never grows past it. Raises ``ValueError`` naming the coder and what is
    wrong with the bytes (a zstd frame's dictionary id when it is not ``zstd_dict``'s; the
    codec and the bound for a value over it), ``ImportError`` (with the pip line) for a form
    whose codec's package is missing.
    """
    view = memoryview(buffer)
    tag = view[0] if view.nbytes else ZLIB
    try:
        if tag == RAW:
            return view[1:]
        if tag == ZSTD:
            return _zstd_decompress(_zstd(coder), buffer, zstd_dict, max_size)
        if tag == LZ4:
            return _lz4_decompress(_lz4(coder), buffer, max_size)
        return _zlib_decompress(buffer, max_size)
    except zlib.error as exc:
        raise ValueError(
            f"{coder} cannot decode {show_bytes(buffer)}: not valid zlib data ({exc}); the "
            "first byte of a compressed value is 0x78 (zlib), 0x28 (zstd), 0x04 (LZ4) or 0x00 "
            "(stored uncompressed)"
        ) from exc
    except ValueError as exc:
        raise ValueError(f"{coder} cannot decode {show_bytes(buffer)}: {exc}") from exc


def _zlib_decompress(buffer: Buffer, max_size: int | None) -> bytes:
    """A zlib stream's content, at most ``max_size`` bytes of it (bytes after the stream's end
    are ignored, as ``zlib.decompress`` does)."""
    if max_size is None:
        return zlib.decompress(buffer)
    stream = zlib.decompressobj()
    step = min(_PIECE, max_size + 1)
    pieces = [stream.decompress(buffer, step)]
    total = len(pieces[0])
    # Output may still be pending with the input all consumed: ask until a short piece.
    while (
        not stream.eof and total <= max_size and (stream.unconsumed_tail or len(pieces[-1]) == step)
    ):
        piece = stream.decompress(stream.unconsumed_tail, step)
        if not piece:
            break
        pieces.append(piece)
        total += len(piece)
    if total > max_size:
        raise _TooLarge("zlib", max_size, None)
    if not stream.eof:
        raise zlib.error("Error -5 while decompressing data: incomplete or truncated stream")
    return _joined(pieces)


def _zstd_decompress(
    zstd: ModuleType, buffer: Buffer, zstd_dict: ZstdDict | None, max_size: int | None
) -> bytes:
    """One zstd frame's content, with ``zstd_dict`` if the frame's header names its id, at
    most ``max_size`` bytes of it."""
    try:
        info = zstd.get_frame_info(buffer)
        claimed, wanted = info.decompressed_size, info.dictionary_id
        if max_size is not None and claimed is not None and claimed > max_size:
            raise _TooLarge("zstd", max_size, claimed)
        if wanted != 0:
            if zstd_dict is None:
                raise ValueError(
                    f"it was compressed with zstd dictionary {wanted} and this coder has none; "
                    f"read it with compressed(codec='zstd', zstd_dict=<dictionary {wanted}>)"
                )
            if zstd_dict.dict_id != wanted:
                raise ValueError(
                    f"it was compressed with zstd dictionary {wanted}, not with this coder's "
                    f"dictionary {zstd_dict.dict_id}; read it with "
                    f"compressed(codec='zstd', zstd_dict=<dictionary {wanted}>)"
                )
        stream = zstd.ZstdDecompressor(zstd_dict=zstd_dict if wanted else None)
        return _drain("zstd", stream, buffer, max_size)
    except zstd.ZstdError as exc:
        raise ValueError(f"not valid zstd data ({exc})") from exc


def _lz4_decompress(lz4: ModuleType, buffer: Buffer, max_size: int | None) -> bytes:
    """One LZ4 frame's content, at most ``max_size`` bytes of it. Streaming also spares the
    allocation of whatever size a damaged header claims, which one-shot decompression makes
    first."""
    try:
        claimed = int(lz4.get_frame_info(buffer)["content_size"]) or None
        if max_size is not None and claimed is not None and claimed > max_size:
            raise _TooLarge("LZ4", max_size, claimed)
        return _drain("LZ4", lz4.LZ4FrameDecompressor(), buffer, max_size)
    except RuntimeError as exc:
        raise ValueError(f"not valid LZ4 data ({exc})") from exc


def _drain(codec: str, stream: Any, buffer: Buffer, max_size: int | None) -> bytes:
    """One frame decompressed by ``stream`` (a zstd or LZ4 decompressor) a piece at a time, so
    that memory never grows more than a piece past ``max_size``; the frame must be whole and
    alone."""
    step = _PIECE if max_size is None else min(_PIECE, max_size + 1)
    pieces = [stream.decompress(buffer, step)]
    total = len(pieces[0])
    while not stream.eof and not stream.needs_input:
        if max_size is not None and total > max_size:
            break
        piece = stream.decompress(b"", step)
        pieces.append(piece)
        total += len(piece)
    if max_size is not None and total > max_size:
        raise _TooLarge(codec, max_size, None)
    if not stream.eof:
        raise ValueError(f"not valid {codec} data (the frame is truncated)")
    if stream.unused_data:
        extra = len(stream.unused_data)
        raise ValueError(f"not valid {codec} data ({extra} bytes after the frame)")
    return _joined(pieces)


def _joined(pieces: list[bytes]) -> bytes:
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _zstd_dict(value: object, codec: str, coder: str) -> ZstdDict | None:
    """The ``zstd_dict`` argument checked, as a ``ZstdDict`` (``None`` for none)."""
    if value is None:
        return None
    if codec != "zstd":
        raise ValueError(f"{coder} zstd_dict needs codec='zstd', not {codec!r}")
    zstd = _zstd(coder)
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = zstd.ZstdDict(bytes(value))
        except (ValueError, zstd.ZstdError) as exc:
            raise ValueError(f"{coder} zstd_dict is not a zstd dictionary: {exc}") from exc
    if not isinstance(value, zstd.ZstdDict):
        raise TypeError(
            f"{coder} zstd_dict must be a ZstdDict or its bytes (dict_content), "
            f"not {type_name(value)}"
        )
    if value.dict_id == 0:
        raise ValueError(
            f"{coder} zstd_dict has no dictionary id (raw content), so stored values could not "
            "name it; train one with train_zstd_dict or zstd's train_dict"
        )
    return cast("ZstdDict", value)


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
        self._max_size = check_max_size(max_size, name)
        self._zstd_dict = _zstd_dict(zstd_dict, codec, name)
        self._inner = inner
        self._codec: Codec = codec
        self._level = level
        self._threshold = threshold
        self._compress = _compressor(codec, level, name, self._zstd_dict)

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
        # A ZstdDict does not pickle: its content does.
        content = None if self._zstd_dict is None else self._zstd_dict.dict_content
        args = (
            type(self),
            self._inner,
            self._level,
            self._codec,
            self._threshold,
            content,
            self._max_size,
        )
        return (_make_compressed, args)

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


def _make_compressed(
    cls: type[CompressedCoder[Any]],
    inner: Coder[Any],
    level: int,
    codec: Codec,
    threshold: int,
    content: bytes | None,
    max_size: int | None = MAX_SIZE,
) -> CompressedCoder[Any]:
    return cls(inner, level, codec=codec, threshold=threshold, zstd_dict=content, max_size=max_size)


def _compressor(
    codec: Codec, level: int, coder: str, zstd_dict: ZstdDict | None = None
) -> Callable[[bytes], bytes]:
    """The one-shot compression function for ``codec`` at ``level``."""
    if codec == "zstd":
        zstd = _zstd(coder)
        param = zstd.CompressionParameter
        options = {param.compression_level: level, param.checksum_flag: 1}
        # Digested: the dictionary is prepared once per level, not once per value.
        digested = None if zstd_dict is None else zstd_dict.as_digested_dict
        return partial(zstd.compress, options=options, zstd_dict=digested)
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
    zstd = _zstd(name)
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
