"""Coders: how Python objects become the bytes LMDB stores, and back.

Every database has a key coder and a value coder. A :class:`Coder` has two methods:
``serialize(obj)`` turns an object into bytes before it is written, and ``deserialize(buffer)``
turns stored bytes back into an object after it is read. Both run on aiolmdb's worker threads,
never on the event loop, and may be called concurrently from several threads: a coder must not
keep mutable per-call state.

Built-in coders (the first seven store the same bytes as aiolmdb 0.1):

* :class:`IdentityCoder`: ``bytes`` stored as they are.
* :class:`StringCoder`: ``str`` encoded with a text encoding (UTF-8 by default).
* :class:`UInt16Coder`, :class:`UInt32Coder`, :class:`UInt64Coder`: non-negative ``int`` as
  2, 4 or 8 big-endian bytes.
* :class:`JSONCoder`: JSON-compatible values as UTF-8 JSON text (read with orjson when it is
  installed).
* :class:`PickleCoder`: any picklable object. **Only for trusted data**; see its docstring.
* :class:`TupleCoder`: tuples in FoundationDB's tuple-layer encoding: ordered composite keys.
* :class:`MsgpackCoder`, :class:`MsgspecCoder`: MessagePack values, untyped or decoded into
  a declared type (optional: the ``msgpack`` and ``msgspec`` extras).
* :class:`ZlibCoder`, :class:`CompressedCoder`: compression stacked over another coder
  (zlib as in 0.1, zstd or LZ4); made with :meth:`Coder.compressed`, e.g.
  ``JSONCoder().compressed(9)`` or ``JSONCoder().compressed(codec="zstd")``;
  :func:`train_zstd_dict` trains a zstd dictionary on a database's values.

Key ordering
------------
LMDB sorts keys by their *encoded bytes* (lexicographic, unsigned byte comparison), so the key
coder decides the order seen by cursors and range scans:

* the unsigned integer coders are big-endian and fixed-width, so byte order is numeric order;
* :class:`StringCoder` with UTF-8 gives UTF-8 byte order, which equals Unicode code point order
  (not locale or case-insensitive order). Other encodings give whatever their bytes give;
* :class:`IdentityCoder` gives plain byte order;
* :class:`TupleCoder` gives tuple order (element by element, types in a fixed order), and a
  tuple prefix selects exactly the keys that start with those elements;
* :class:`JSONCoder`, :class:`PickleCoder`, the MessagePack coders and compressed keys give no
  useful order: use them for keys only when order does not matter.

Buffers
-------
``deserialize`` may receive a :class:`memoryview` pointing straight into LMDB's memory map. It is
valid only for the duration of the call: never return it or keep a reference to it (or to a
slice of it); copy with ``bytes(buffer)`` whatever must outlive the call.
"""

from ._codecs.builtin import (
    IdentityCoder,
    JSONCoder,
    PickleCoder,
    StringCoder,
    UInt16Coder,
    UInt32Coder,
    UInt64Coder,
)
from ._codecs.coder import Coder, CompressedCoder, ZlibCoder, train_zstd_dict
from ._codecs.common import Buffer
from ._codecs.tuples import TupleCoder
from ._codecs.typed import MsgpackCoder, MsgspecCoder

__all__ = [
    "Buffer",
    "Coder",
    "CompressedCoder",
    "IdentityCoder",
    "JSONCoder",
    "MsgpackCoder",
    "MsgspecCoder",
    "PickleCoder",
    "StringCoder",
    "TupleCoder",
    "UInt16Coder",
    "UInt32Coder",
    "UInt64Coder",
    "ZlibCoder",
    "train_zstd_dict",
]

# Documented here: report this module (reprs, pickles, the docs), wherever they are defined.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(getattr(_obj, "__module__", None), str) and _obj.__module__.startswith(
        "aiolmdb._"
    ):
        _obj.__module__ = __name__
del _name, _obj
