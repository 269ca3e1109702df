"""Compression codecs (zlib, zstd, LZ4) and the stored forms of compressed values; the coders
that use them (``CompressedCoder``, ``ZlibCoder``) are in ``coder.py``.

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

import importlib
import sys
import zlib
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from .common import Buffer, require, show_bytes, type_name

if TYPE_CHECKING:
    from backports.zstd import ZstdDict

__all__ = [
    "CODECS",
    "LEVELS",
    "MAX_SIZE",
    "Codec",
    "check_max_size",
    "checked_zstd_dict",
    "compressor",
    "decompress",
    "lz4_module",
    "zstd_module",
]

Codec = Literal["zlib", "zstd", "lz4"]
"""The compression codecs: ``"zlib"``, ``"zstd"`` or ``"lz4"``."""

CODECS: tuple[str, ...] = get_args(Codec)
RAW = 0x00
ZLIB = 0x78
ZSTD = 0x28
LZ4 = 0x04
_TAG = {"zlib": ZLIB, "zstd": ZSTD, "lz4": LZ4}
# (lowest, highest, default) level of each codec.
LEVELS = {"zlib": (-1, 9, 1), "zstd": (-(1 << 17), 22, 3), "lz4": (0, 16, 0)}

# Decompression produces its output this many bytes at a time.
_PIECE = 1 << 20

MAX_SIZE = 64 << 20
"""The default ``max_size``: the most bytes one value may decompress to (docs/guide/codecs.md
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


def zstd_module(coder: str) -> ModuleType:
    """The zstd module (the standard library's from 3.14, else backports.zstd), or an
    ImportError naming what ``coder`` needs."""
    if sys.version_info >= (3, 14):  # pragma: no cover - the standard library has it
        try:
            return importlib.import_module("compression.zstd")
        except ImportError as exc:
            raise ImportError(
                f"{coder} needs the standard library's compression.zstd, missing from this "
                "Python 3.14 build: use a Python built with zstd support"
            ) from exc
    return require("backports.zstd", "backports.zstd", "zstd", coder)


def lz4_module(coder: str) -> ModuleType:
    """``lz4.frame``, or an ImportError naming what ``coder`` needs."""
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
            return _zstd_decompress(zstd_module(coder), buffer, zstd_dict, max_size)
        if tag == LZ4:
            return _lz4_decompress(lz4_module(coder), buffer, max_size)
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


def checked_zstd_dict(value: object, codec: str, coder: str) -> ZstdDict | None:
    """The ``zstd_dict`` argument checked, as a ``ZstdDict`` (``None`` for none)."""
    if value is None:
        return None
    if codec != "zstd":
        raise ValueError(f"{coder} zstd_dict needs codec='zstd', not {codec!r}")
    zstd = zstd_module(coder)
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


def compressor(
    codec: Codec, level: int, coder: str, zstd_dict: ZstdDict | None = None
) -> Callable[[bytes], bytes]:
    """The one-shot compression function for ``codec`` at ``level``."""
    if codec == "zstd":
        zstd = zstd_module(coder)
        param = zstd.CompressionParameter
        options = {param.compression_level: level, param.checksum_flag: 1}
        # Digested: the dictionary is prepared once per level, not once per value.
        digested = None if zstd_dict is None else zstd_dict.as_digested_dict
        return partial(zstd.compress, options=options, zstd_dict=digested)
    if codec == "lz4":
        lz4 = lz4_module(coder)
        return partial(lz4.compress, compression_level=level, content_checksum=True)
    return partial(zlib.compress, level=level)
