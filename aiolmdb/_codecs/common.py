"""What every codec module shares: the ``Buffer`` type, helpers for error messages, and the
import of an optional package that names the ``pip install`` line to run."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TypeAlias

__all__ = ["Buffer", "missing", "nbytes", "require", "show_bytes", "type_name"]

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
