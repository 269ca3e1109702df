"""aiolmdb's own databases: the one owner of their handles and of the lock handles open under.

Two reserved databases live beside the user's: the metadata database (``__aiolmdb__``: the
version counter, the versioned-database and large-values markers, the change log's marker,
identity and trimmed mark) and the change log (``__aiolmdb_changes__``). :class:`MetaHandles`
keeps one environment's handles of both, once known, and the lock under which any handle of the
environment is opened (LMDB: ``mdb_dbi_open`` must not run in two transactions of one process
at once, and a transaction may open a handle only if no other was opened since it began). The
catalogue, the version counter and the change log's recorder ask it; :func:`open_meta` and
:func:`open_log` are the only places that open either database (the command line's dump and
load use them too, in a transaction of their own).

A handle opened inside a write transaction is valid after that transaction commits and freed if
it aborts: callers keep it with :meth:`MetaHandles.keep` only after the commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import lmdb

from .._engine.txnrunner import before_engine

if TYPE_CHECKING:
    from .._engine.delivery import Txn

__all__ = [
    "INTERNAL_PREFIX",
    "LARGE_MARK",
    "LOG_ID_KEY",
    "LOG_ID_SIZE",
    "LOG_NAME",
    "MARKER_KEY",
    "META_NAME",
    "TRIMMED_KEY",
    "MetaHandles",
    "has_log",
    "large_key",
    "open_log",
    "open_meta",
    "stored_before_engine",
]

INTERNAL_PREFIX: Final = b"__aiolmdb"
"""The start of the names of aiolmdb's own databases: ``env.databases()`` hides them."""
META_NAME: Final = b"__aiolmdb__"
"""aiolmdb's metadata database (reserved: ``open_db`` refuses the name)."""
LOG_NAME: Final = b"__aiolmdb_changes__"
"""The change log's database (reserved: ``open_db`` refuses the name)."""
MARKER_KEY: Final = b"changelog"
"""Metadata key: the environment records its changes (refuses writers without the log)."""
TRIMMED_KEY: Final = b"changes_trimmed"
"""Metadata key: the highest sequence number trimmed from the log."""
LOG_ID_KEY: Final = b"changelog_id"
"""Metadata key: the log's identity, random bytes written when the log is created (or, for a
log older than identities, at the first writable open with the log); kept by copies and by
``dump --all``/``load``, so a follower can tell one log from another."""
LOG_ID_SIZE: Final = 16
"""The identity's length in bytes."""
LARGE_MARK: Final = b"1"
"""The value of a large-values marker (:func:`large_key`)."""


def large_key(name: bytes | None) -> bytes:
    """Metadata key: the database ``name`` (None: the default database) holds large values,
    so a process reads it without the GIL from its first read. Named databases' names are
    never empty, so the default database's key cannot clash with one of theirs."""
    return b"large:" + (name or b"")


def open_meta(env: lmdb.Environment, txn: Any = None, create: bool = False) -> Any:
    """Open the metadata database's handle (in ``txn``, or in a transaction of py-lmdb's)."""
    return env.open_db(META_NAME, txn=txn, create=create)


def open_log(env: lmdb.Environment, txn: Any = None, create: bool = False) -> Any:
    """Open the change log's handle (in ``txn``, or in a transaction of py-lmdb's)."""
    return env.open_db(LOG_NAME, txn=txn, create=create)


def stored_before_engine(env: lmdb.Environment, key: bytes) -> bool:
    """Whether the metadata database holds ``key`` (read before the engine starts, with no
    transaction of this process open; the handle opened here is not kept)."""
    txn = before_engine(env, env.begin)
    with txn:
        if txn.get(META_NAME) is None:
            return False
        try:
            meta = open_meta(env, txn)
        except lmdb.Error:
            return False
        return txn.get(key, None, meta) is not None


def has_log(env: lmdb.Environment) -> bool:
    """Whether the environment is marked as having a change log (before the engine starts)."""
    return stored_before_engine(env, MARKER_KEY)


class MetaHandles:
    """One environment's handles of the metadata database and of the change log, and the
    lock every handle of the environment is opened under (see the module docstring)."""

    __slots__ = ("_env", "lock", "log", "meta")

    def __init__(self, env: lmdb.Environment) -> None:
        self._env = env
        # Reentrant: a write transaction begun under it (opening or deleting a database) may
        # open the metadata database's handle while beginning (the check for a log).
        self.lock = threading.RLock()
        # None until an open found (or made) the database and, if in a write transaction,
        # that transaction committed.
        self.meta: Any = None
        self.log: Any = None

    def meta_in(self, txn: Txn, create: bool = False) -> Any:
        """The metadata database's handle, opened in ``txn`` if not known yet (keep it after
        the commit), or None if there is none and ``create`` is false."""
        if self.meta is not None:
            return self.meta
        if not create and txn.get(META_NAME) is None:
            # Named databases are keys of the main database. Looking there first spares a
            # handle: LMDB refuses even a failed open when every max_dbs slot is taken.
            return None
        try:
            return open_meta(self._env, txn, create)
        except lmdb.NotFoundError:
            return None

    def create_in(self, txn: Txn) -> tuple[Any, Any]:
        """Writer thread, under the lock: both handles, the databases created in ``txn`` if
        needed (keep them after the commit)."""
        meta = self.meta if self.meta is not None else open_meta(self._env, txn, True)
        log = self.log if self.log is not None else open_log(self._env, txn, True)
        return meta, log

    def keep(self, meta: Any = None, log: Any = None) -> None:
        """Handles opened in a transaction that has committed: valid from now on."""
        if meta is not None:
            self.meta = meta
        if log is not None:
            self.log = log

    def existing_meta(self, begin: Callable[[], Txn]) -> Any:
        """The metadata database's handle, opened outside any transaction of ours if the
        database exists (a handle opened in a read transaction that aborts would be freed with
        it), or None. ``begin()`` begins the read transaction that looks."""
        if self.meta is None:
            self._open_existing(begin, log=False)
        return self.meta

    def existing_log(self, begin: Callable[[], Txn]) -> tuple[Any, Any]:
        """The log's and the metadata database's handles, as :meth:`existing_meta`; (None,
        None) if the environment has no log."""
        if self.log is None:
            self._open_existing(begin, log=True)
        return (self.log, self.meta) if self.log is not None else (None, None)

    def _open_existing(self, begin: Callable[[], Txn], *, log: bool) -> None:
        with self.lock:
            if self.meta is not None and (not log or self.log is not None):
                return  # another thread opened them meanwhile
            txn = begin()
            try:
                exists = txn.get(META_NAME) is not None
                if log:
                    exists = exists and txn.get(LOG_NAME) is not None
            finally:
                txn.abort()
                del txn  # py-lmdb frees the reader slot only with the Transaction
            if not exists:
                return
            if self.meta is None:
                self.meta = open_meta(self._env)
            if log:
                self.log = open_log(self._env)
