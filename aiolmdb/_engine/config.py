"""The options of ``aiolmdb.open``, checked once where they are given.

:class:`EngineConfig` holds the engine's options (the store checks its own, such as the
change log's, where it takes them).
:func:`check_lmdb_options` checks the keyword arguments passed on to ``lmdb.open`` whose wrong
values py-lmdb would reject without naming them, or accept. Every error names the option and
shows the value given.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Literal

__all__ = [
    "DEFAULT_MAX_BATCH",
    "READ_MODES",
    "EngineConfig",
    "ReadMode",
    "check_lmdb_options",
    "unknown_lmdb_options",
]

DEFAULT_MAX_BATCH = 1024

ReadMode = Literal["auto", "inline", "threaded"]
READ_MODES: tuple[ReadMode, ...] = ("auto", "inline", "threaded")


def _default_readers() -> int:
    # Batching keeps few threads busy; more than the cores only adds contention for the GIL.
    return max(2, min(8, os.cpu_count() or 2))


def _check_int(
    name: str, value: object, low: int, high: int | None = None, *, optional: bool = False
) -> None:
    """``value`` must be an int (not a bool) in ``[low, high]``, or None when ``optional``."""
    if optional and value is None:
        return
    wanted = f"an int >= {low}" if high is None else f"an int from {low} to {high:#o}"
    wanted += " or None" if optional else ""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be {wanted}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")


def check_flag(name: str, value: object) -> None:
    """A yes/no option: True or False, or the ints 0 and 1 (common in code written for
    py-lmdb, and unambiguous); anything else is refused, even if Python finds it truthy."""
    if not (isinstance(value, bool) or (type(value) is int and value in (0, 1))):
        raise TypeError(f"{name} must be True or False, got {value!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class EngineConfig:
    """aiolmdb's own options of ``aiolmdb.open`` (see its docstring), checked when built."""

    executor: concurrent.futures.Executor | None = None
    readers: int | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    reads: ReadMode | None = None
    """How reads run: "auto" (the default), "inline" or "threaded"; resolved when built."""
    inline_reads: bool | None = None
    """The older name: True is ``reads="inline"``, False ``reads="threaded"``; after the
    check, True exactly when the mode is "inline"."""
    map_growth: bool = True
    max_map_size: int | None = None

    def __post_init__(self) -> None:
        if self.executor is not None and not isinstance(self.executor, concurrent.futures.Executor):
            raise TypeError(
                f"executor must be a concurrent.futures.Executor or None, got {self.executor!r}"
            )
        _check_int("readers", self.readers, 1, optional=True)
        _check_int("max_batch", self.max_batch, 1)
        object.__setattr__(self, "reads", _read_mode(self.reads, self.inline_reads))
        check_flag("map_growth", self.map_growth)
        # Kept as bools whichever form was given (0 and 1 are accepted).
        object.__setattr__(self, "inline_reads", self.reads == "inline")
        object.__setattr__(self, "map_growth", bool(self.map_growth))
        _check_int("max_map_size", self.max_map_size, 1, optional=True)

    @property
    def read_mode(self) -> ReadMode:
        """The read mode, resolved (never None once built)."""
        return self.reads or "auto"

    @property
    def reader_threads(self) -> int:
        """Threads of the default reader pool: ``readers``, or the CPU count between 2 and 8."""
        return self.readers or _default_readers()


def _read_mode(reads: object, inline_reads: object) -> ReadMode:
    """``reads=`` and its older alias ``inline_reads=`` resolved to one mode (both given must
    agree)."""
    if reads is not None and reads not in READ_MODES:
        raise (TypeError if not isinstance(reads, str) else ValueError)(
            f'reads must be "auto", "inline" or "threaded", got {reads!r}'
        )
    if inline_reads is None:
        return reads or "auto"
    check_flag("inline_reads", inline_reads)
    alias: ReadMode = "inline" if inline_reads else "threaded"
    if reads is not None and reads != alias:
        raise ValueError(
            f"reads={reads!r} and inline_reads={inline_reads!r} disagree: give reads= only "
            f'(inline_reads=True is reads="inline", inline_reads=False is reads="threaded")'
        )
    return alias


# lmdb.open's options whose wrong values py-lmdb accepts (any object is taken for its truth)
# or rejects with an error that does not name them.
_LMDB_BOOLS = (
    "subdir",
    "readonly",
    "metasync",
    "sync",
    "map_async",
    "create",
    "readahead",
    "writemap",
    "meminit",
    "lock",
)
# Name -> lowest value LMDB accepts.
_LMDB_INTS: dict[str, tuple[int, int | None]] = {
    "map_size": (0, None),
    "max_readers": (1, None),
    "max_dbs": (0, None),
    "max_spare_txns": (0, None),
    "mode": (0, 0o7777),  # permission bits
}


def check_lmdb_options(options: Mapping[str, Any]) -> None:
    """Check the ``lmdb.open`` keyword arguments py-lmdb does not check clearly itself."""
    for name, value in options.items():
        if name in _LMDB_BOOLS:
            check_flag(name, value)
        elif name in _LMDB_INTS:
            _check_int(name, value, *_LMDB_INTS[name])


def unknown_lmdb_options(options: Mapping[str, Any]) -> list[str]:
    """The names in ``options`` that are not options of ``lmdb.open`` (as of py-lmdb 3.0),
    quoted, for an error message."""
    return [repr(name) for name in options if name not in _LMDB_BOOLS and name not in _LMDB_INTS]
