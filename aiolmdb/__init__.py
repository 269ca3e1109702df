"""aiolmdb: fast asyncio access to LMDB.

Concurrent reads share one thread hop and one read transaction; concurrent writes share one
write transaction and one commit on a dedicated writer thread; coders run on those threads,
never on the event loop. ``await db.put(...)`` returns once the write is committed.
"""

from ._engine.metrics import Histogram, Metrics
from ._store.catalogue import DatabaseInfo
from ._store.feed import ChangeFeed, CommitFeed
from ._store.records import Change, Commit
from ._store.trim import Retention
from ._store.versions import Entry
from .coders import (
    Coder,
    CompressedCoder,
    IdentityCoder,
    JSONCoder,
    MsgpackCoder,
    MsgspecCoder,
    PickleCoder,
    StringCoder,
    TupleCoder,
    UInt16Coder,
    UInt32Coder,
    UInt64Coder,
    ZlibCoder,
    train_zstd_dict,
)
from .database import AsyncDatabase
from .environment import Environment, open
from .errors import (
    ChangeRecordError,
    ChangesPositionError,
    ChangesTrimmedError,
    ClosedError,
    ConflictError,
    DatabaseDroppedError,
    DeadlockError,
    Error,
    ForkedError,
    InvalidKeyError,
    ReadOnlyError,
    SnapshotExpiredError,
    TransactionError,
)
from .ranges import RangeIterator
from .transaction import (
    AsyncDatabaseView,
    AsyncTransaction,
    DatabaseView,
    Snapshot,
    Transaction,
    WriteTransaction,
)

__version__ = "0.2.0"

__all__ = [
    "AsyncDatabase",
    "AsyncDatabaseView",
    "AsyncTransaction",
    "Change",
    "ChangeFeed",
    "ChangeRecordError",
    "ChangesPositionError",
    "ChangesTrimmedError",
    "ClosedError",
    "Coder",
    "Commit",
    "CommitFeed",
    "ConflictError",
    "CompressedCoder",
    "DatabaseInfo",
    "DatabaseDroppedError",
    "DatabaseView",
    "DeadlockError",
    "Entry",
    "Environment",
    "Error",
    "ForkedError",
    "Histogram",
    "IdentityCoder",
    "InvalidKeyError",
    "JSONCoder",
    "Metrics",
    "MsgpackCoder",
    "MsgspecCoder",
    "PickleCoder",
    "RangeIterator",
    "ReadOnlyError",
    "Retention",
    "Snapshot",
    "SnapshotExpiredError",
    "StringCoder",
    "Transaction",
    "TransactionError",
    "TupleCoder",
    "UInt16Coder",
    "UInt32Coder",
    "UInt64Coder",
    "WriteTransaction",
    "ZlibCoder",
    "__version__",
    "open",
    "train_zstd_dict",
]


def _pin_public_modules() -> None:
    """Public names defined in private modules report the module users import them from, as
    httpx does: reprs, pickles and the docs keep naming ``aiolmdb`` when the implementation
    moves. (The coders pin themselves to ``aiolmdb.coders``, where they are documented.)"""
    for name in __all__:
        obj = globals()[name]
        module = getattr(obj, "__module__", None)
        if isinstance(module, str) and module.startswith("aiolmdb._"):
            obj.__module__ = __name__


_pin_public_modules()
