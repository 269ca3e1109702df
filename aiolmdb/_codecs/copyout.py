"""Copying a buffer into a fresh ``bytes`` without holding the GIL.

:func:`copy_out` fills a fresh ``bytes`` from a view (into LMDB's map, or any contiguous
buffer) with one ``ctypes.memmove``, which releases the GIL: a large value's copy does not stop
the event loop or the other threads. Codecs (``IdentityCoder``), the versioned layout and the
store's large-value reads all use it.
"""

from __future__ import annotations

import ctypes
from typing import Any, Final

__all__ = ["LARGE_VALUE", "copy_out"]

LARGE_VALUE: Final = 1 << 20
"""Values of at least this many bytes are copied without the GIL (and flag their database)."""

# Below this a plain copy is cheaper than the ctypes calls (and bytes(n) might be shared).
_MIN_COPY_OUT = 1 << 16


class _PyBuffer(ctypes.Structure):
    _fields_ = (
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    )


def _capi() -> tuple[Any, Any, Any] | None:
    """CPython's buffer and bytes functions through ctypes, or None elsewhere."""
    api = getattr(ctypes, "pythonapi", None)
    if api is None:  # pragma: no cover - PyPy and other implementations
        return None
    get_buffer = api.PyObject_GetBuffer
    get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int)
    get_buffer.restype = ctypes.c_int
    release = api.PyBuffer_Release
    release.argtypes = (ctypes.POINTER(_PyBuffer),)
    release.restype = None
    as_string = api.PyBytes_AsString
    as_string.argtypes = (ctypes.py_object,)
    as_string.restype = ctypes.c_void_p
    return get_buffer, release, as_string


_CAPI = _capi()
_memmove = ctypes.memmove  # a CFUNCTYPE call: it runs without the GIL


def copy_out(buf: Any, prefix: bytes = b"") -> bytes:
    """``prefix + bytes(buf)`` for a contiguous buffer, ``buf`` copied with the GIL released
    (CPython)."""
    n = len(buf)
    if n < _MIN_COPY_OUT or _CAPI is None:
        return prefix + bytes(buf)
    get_buffer, release, as_string = _CAPI
    skip = len(prefix)
    out = bytes(skip + n)  # calloc'd: its pages are touched first by the copy, without the GIL
    view = _PyBuffer()
    try:
        get_buffer(buf, ctypes.byref(view), 0)
    except BufferError:  # not contiguous: bytes() gathers it
        return prefix + bytes(buf)
    try:
        if view.len != n:  # a buffer of items wider than a byte: not ours to copy this way
            return prefix + bytes(buf)
        address = as_string(out)
        _memmove(address, prefix, skip)
        _memmove(address + skip, view.buf, n)
    finally:
        release(ctypes.byref(view))
    return out
