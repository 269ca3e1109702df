"""The text format of LMDB's ``mdb_dump`` and ``mdb_load``: a reader and a writer.

A dump is one or more blocks. Each block is a header of ``key=value`` lines ending with
``HEADER=END``, then one line per key and one per value (each starting with a space), then
``DATA=END``::

    VERSION=3
    format=bytevalue
    database=NAME            (absent for the main database)
    type=btree
    mapsize=1048576
    maxreaders=126
    duplicates=1             (written by mdb_dump for dupsort databases; ignored on reading)
    dupsort=1                (one line per database flag)
    db_pagesize=4096
    HEADER=END
     6b6579
     76616c7565
    DATA=END

``format=bytevalue`` writes bytes as lowercase hex. ``format=print`` (``mdb_dump -p``) writes
printable ASCII as is and any other byte as a backslash and two hex digits; a reader also takes
two backslashes for one. (This writer escapes the backslash itself as ``\\5c``; ``mdb_dump -p``
of LMDB 0.9.24 writes it bare, which no reader can tell from an escape.)

Everything here is pure: functions from bytes to bytes, and a reader over an iterable of lines.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice

__all__ = [
    "DATA_END",
    "FLAG_NAMES",
    "DumpFormatError",
    "DumpHeader",
    "DumpReader",
    "decode_print",
    "encode_print",
    "format_header",
    "format_pairs",
    "parse_dump",
]

VERSION = 3
DATA_END = b"DATA=END\n"
HEADER_END = b"HEADER=END"
# Lines read at once in a data section.
_CHUNK_LINES = 4096

# The database flags of a dump, in mdb_dump's order, and py-lmdb's names for them
# (None: py-lmdb cannot open such a database).
FLAG_NAMES: dict[str, str | None] = {
    "reversekey": "reverse_key",
    "dupsort": "dupsort",
    "integerkey": "integerkey",
    "dupfixed": "dupfixed",
    "integerdup": "integerdup",
    "reversedup": None,
}
# Header keys that mdb_dump writes and that carry nothing a loader needs.
_IGNORED = frozenset({"duplicates", "db_pagesize", "mapaddr"})


class DumpFormatError(ValueError):
    """The input is not in mdb_dump's format; ``lineno`` is the 1-based line of the fault."""

    def __init__(self, lineno: int, message: str) -> None:
        super().__init__(f"line {lineno}: {message}")
        self.lineno = lineno
        self.message = message


@dataclass
class DumpHeader:
    """One block's header. ``flags`` uses the dump's names (``dupsort``, ``reversekey``...)
    and holds only the flags that are set; ``extra`` holds keys this module does not know."""

    database: bytes | None = None
    format: str = "bytevalue"
    version: int = VERSION
    mapsize: int | None = None
    maxreaders: int | None = None
    pagesize: int | None = None
    flags: dict[str, bool] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def printable(self) -> bool:
        """True for ``format=print`` blocks."""
        return self.format == "print"


# ---------------------------------------------------------------------------- writing
_HEX_DIGITS = b"0123456789abcdef"
# Every byte's form in format=print: printable ASCII as is, any other byte as \xx. That
# includes the backslash, written \5c rather than \\ (both are valid): mdb_load of LMDB 0.9.24
# decodes a \\ that follows another escape on the same line into a wrong byte.
_PRINT_TABLE: list[bytes] = [
    bytes([c])
    if 0x20 <= c < 0x7F and c != 0x5C
    else b"\\" + bytes([_HEX_DIGITS[c >> 4], _HEX_DIGITS[c & 15]])
    for c in range(256)
]
_PLAIN = re.compile(rb"[\x20-\x5b\x5d-\x7e]*")


def encode_print(data: bytes) -> bytes:
    """``data`` in mdb_dump's printable form (``-p``), without the leading space."""
    if _PLAIN.fullmatch(data):
        return bytes(data)
    table = _PRINT_TABLE
    return b"".join([table[c] for c in data])


def format_header(
    *,
    database: bytes | None = None,
    mapsize: int | None = None,
    maxreaders: int | None = None,
    pagesize: int | None = None,
    flags: Mapping[str, bool] | Iterable[str] = (),
    printable: bool = False,
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """A block header (through ``HEADER=END\\n``), laid out as mdb_dump writes it.

    ``flags`` names the database flags that are set, with the dump's names (``dupsort``,
    ``reversekey``, ``integerkey``, ``dupfixed``, ``integerdup``, ``reversedup``). ``extra``
    adds ``key=value`` lines before ``HEADER=END`` (mdb_load warns about keys it does not
    know and ignores them).
    """
    if isinstance(flags, Mapping):
        set_flags = {name for name, on in flags.items() if on}
    else:
        set_flags = set(flags)
    unknown = set_flags - set(FLAG_NAMES)
    if unknown:
        raise ValueError(f"unknown database flag(s): {', '.join(sorted(unknown))}")
    if database is not None and (b"\n" in database or b"\r" in database):
        raise ValueError(f"a database name cannot hold a line break: {database!r}")
    lines = [b"VERSION=%d" % VERSION, b"format=" + (b"print" if printable else b"bytevalue")]
    if database is not None:
        lines.append(b"database=" + database)
    lines.append(b"type=btree")
    if mapsize is not None:
        lines.append(b"mapsize=%d" % mapsize)
    if maxreaders is not None:
        lines.append(b"maxreaders=%d" % maxreaders)
    if "dupsort" in set_flags:
        lines.append(b"duplicates=1")
    lines.extend(b"%s=1" % name.encode() for name in FLAG_NAMES if name in set_flags)
    if pagesize is not None:
        lines.append(b"db_pagesize=%d" % pagesize)
    for key, value in (extra or {}).items():
        if not key.isidentifier() or "\n" in value or "\r" in value:
            raise ValueError(f"bad extra header line {key}={value!r}")
        lines.append(f"{key}={value}".encode())
    lines.append(HEADER_END)
    return b"\n".join(lines) + b"\n"


def format_pairs(pairs: Iterable[tuple[bytes, bytes]], printable: bool = False) -> bytes:
    """The data lines of ``(key, value)`` pairs: a key line and a value line per pair."""
    parts: list[bytes] = []
    append = parts.append
    if printable:
        for key, value in pairs:
            append(b" " + encode_print(key) + b"\n " + encode_print(value) + b"\n")
    else:
        hexlify = binascii.hexlify
        for key, value in pairs:
            append(b" " + hexlify(key) + b"\n " + hexlify(value) + b"\n")
    return b"".join(parts)


# ---------------------------------------------------------------------------- reading
_ESCAPE = re.compile(rb"\\(\\|[0-9A-Fa-f]{2}|.?)", re.DOTALL)


def _unescape(match: re.Match[bytes]) -> bytes:
    code = match.group(1)
    if code == b"\\":
        return b"\\"
    if len(code) == 2:
        return binascii.unhexlify(code)
    raise ValueError(
        "a backslash must be followed by another backslash or two hex digits (mdb_dump -p of "
        "LMDB 0.9.24 leaves backslashes unescaped: dump such data without -p)"
    )


def decode_print(text: bytes) -> bytes:
    """The bytes that :func:`encode_print` wrote as ``text``; ValueError on a bad escape."""
    if b"\\" not in text:
        return bytes(text)
    return _ESCAPE.sub(_unescape, text)


def _parse_int(lineno: int, key: str, value: str) -> int:
    try:
        number = int(value, 10)
    except ValueError:
        raise DumpFormatError(lineno, f"{key} must be a number, not {value!r}") from None
    if number < 0:
        raise DumpFormatError(lineno, f"{key} must not be negative")
    return number


class DumpReader:
    """Reads the blocks of a dump from an iterable of lines (bytes, as a binary file yields
    them; line ends are optional).

    Call :meth:`next_header` to get a block's header (None at the end of the input), then
    iterate :meth:`pairs` (or :meth:`pair_chunks`, faster) for its ``(key, value)`` pairs; a
    block whose pairs are not read is skipped by the next :meth:`next_header`. Errors raise
    :class:`DumpFormatError`. ``lineno`` and ``bytes_read`` tell how far it got.
    """

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = iter(lines)
        self._ahead: list[bytes] = []  # lines read but not consumed yet
        self.lineno = 0
        self.bytes_read = 0
        self._in_data = False
        self._header: DumpHeader | None = None

    def _take(self, count: int) -> list[bytes]:
        if self._ahead:
            taken = self._ahead[:count]
            del self._ahead[:count]
            if len(taken) < count:
                taken += islice(self._lines, count - len(taken))
        else:
            taken = list(islice(self._lines, count))
        self.lineno += len(taken)
        self.bytes_read += sum(map(len, taken))
        return taken

    def _unread(self, lines: list[bytes]) -> None:
        self._ahead[:0] = lines
        self.lineno -= len(lines)
        self.bytes_read -= sum(map(len, lines))

    def _next_line(self) -> bytes | None:
        taken = self._take(1)
        if not taken:
            return None
        return taken[0].rstrip(b"\r\n")

    def next_header(self) -> DumpHeader | None:
        """Read the next block's header; None when the input holds no further block."""
        if self._in_data:
            for _ in self.pair_chunks():
                pass
        header = DumpHeader()
        started = False
        while True:
            line = self._next_line()
            if line is None:
                if started:
                    raise DumpFormatError(self.lineno, "unexpected end of input in a header")
                return None
            if not started and not line.strip():
                continue  # blank lines between blocks
            started = True
            if line == HEADER_END:
                break
            if line.startswith(b" "):
                raise DumpFormatError(self.lineno, "data line before HEADER=END")
            self._header_line(header, line)
        self._in_data = True
        self._header = header
        return header

    def _header_line(self, header: DumpHeader, line: bytes) -> None:
        lineno = self.lineno
        raw_key, sep, raw_value = line.partition(b"=")
        if not sep:
            raise DumpFormatError(lineno, f"expected key=value in the header, got {line!r}")
        key = raw_key.decode("ascii", "replace")
        if key == "database":
            header.database = raw_value
            return
        value = raw_value.decode("utf-8", "replace")
        if key == "VERSION":
            header.version = _parse_int(lineno, key, value)
            if header.version > VERSION:
                raise DumpFormatError(lineno, f"unsupported VERSION {value}")
        elif key == "format":
            if value not in ("bytevalue", "print"):
                raise DumpFormatError(lineno, f"unsupported format {value!r}")
            header.format = value
        elif key == "type":
            if value != "btree":
                raise DumpFormatError(lineno, f"unsupported type {value!r} (only btree)")
        elif key == "mapsize":
            header.mapsize = _parse_int(lineno, key, value)
        elif key == "maxreaders":
            header.maxreaders = _parse_int(lineno, key, value)
        elif key == "db_pagesize":
            header.pagesize = _parse_int(lineno, key, value)
        elif key in FLAG_NAMES:
            if _parse_int(lineno, key, value):
                header.flags[key] = True
        elif key not in _IGNORED:
            header.extra[key] = value

    def pairs(self) -> Iterator[tuple[bytes, bytes]]:
        """The current block's ``(key, value)`` pairs, up to its ``DATA=END``."""
        for chunk in self.pair_chunks():
            yield from chunk

    def pair_chunks(self) -> Iterator[list[tuple[bytes, bytes]]]:
        """The current block's pairs in lists (of up to about 2000 pairs)."""
        header = self._header
        if not self._in_data or header is None:
            return
        decode = decode_print if header.printable else binascii.unhexlify
        carry: bytes | None = None  # a key line whose value line is in the next lines
        while True:
            first = self.lineno + 1 - (carry is not None)  # the line number of data[0]
            lines = self._take(_CHUNK_LINES)
            if not lines:
                self._in_data = False
                raise DumpFormatError(self.lineno, "unexpected end of input (no DATA=END)")
            end = next((i for i, line in enumerate(lines) if line[:1] != b" "), len(lines))
            if end < len(lines):
                self._unread(lines[end:])
            data = lines[:end]
            if carry is not None:
                data.insert(0, carry)
                carry = None
            if len(data) % 2:
                carry = data.pop()
            try:
                keys = [decode(line[1:].rstrip(b"\r\n")) for line in data[0::2]]
                values = [decode(line[1:].rstrip(b"\r\n")) for line in data[1::2]]
                if carry is not None:
                    decode(carry[1:].rstrip(b"\r\n"))  # report a bad line where it is
            except ValueError:
                self._in_data = False
                if carry is not None:
                    data.append(carry)
                raise self._decode_error(data, first, decode, header.printable) from None
            if keys:
                yield list(zip(keys, values, strict=True))
            if end < len(lines):
                line = self._next_line()
                self._in_data = False
                if line != b"DATA=END":
                    raise DumpFormatError(
                        self.lineno, f"expected a data line or DATA=END, got {line!r}"
                    )
                if carry is not None:
                    raise DumpFormatError(self.lineno, "a key without a value")
                return

    @staticmethod
    def _decode_error(
        data: list[bytes], first: int, decode: Callable[[bytes], bytes], printable: bool
    ) -> DumpFormatError:
        what = "printable text" if printable else "hex"
        for offset, line in enumerate(data):
            try:
                decode(line[1:].rstrip(b"\r\n"))
            except ValueError as exc:
                return DumpFormatError(first + offset, f"bad {what}: {exc}")
        raise AssertionError("no line fails to decode")  # pragma: no cover


def parse_dump(data: bytes) -> list[tuple[DumpHeader, list[tuple[bytes, bytes]]]]:
    """Every block of a whole dump held in memory: ``[(header, pairs), ...]``."""
    reader = DumpReader(data.splitlines(keepends=True))
    blocks: list[tuple[DumpHeader, list[tuple[bytes, bytes]]]] = []
    while (header := reader.next_header()) is not None:
        blocks.append((header, list(reader.pairs())))
    return blocks
