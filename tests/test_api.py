"""The API's conventions (docs/api.md, "Conventions"), checked over the public classes: the
three database views offer one surface, and a name is awaited everywhere or nowhere."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import aiolmdb
from aiolmdb import (
    AsyncDatabase,
    AsyncDatabaseView,
    ChangeFeed,
    CommitFeed,
    DatabaseView,
    Environment,
    RangeIterator,
    Snapshot,
    Transaction,
    WriteTransaction,
)


def public(cls: type) -> set[str]:
    """The public attribute names of a class (methods, properties, slots)."""
    return {name for name in dir(cls) if not name.startswith("_")}


# What one database view has and another has not, and why (docs/api.md, "The three views").
ONLY_ON_DATABASE = {
    "drop": "deletes or empties the database itself, outside any transaction",
    "run": "begins a transaction; a view already is one",
}
NOT_ON_SYNC_VIEW = {
    "put_chunks": "its source is an async iterable or awaited reads",
}


def test_the_three_views_offer_one_surface() -> None:
    database, async_view, sync_view = (
        public(AsyncDatabase),
        public(AsyncDatabaseView),
        public(DatabaseView),
    )
    assert database - async_view == set(ONLY_ON_DATABASE)
    assert async_view - database == set()
    assert database - sync_view == set(ONLY_ON_DATABASE) | set(NOT_ON_SYNC_VIEW)
    assert sync_view - database == set()
    # The shared properties are written once, on the shared base.
    for name in ("name", "environment", "dupsort", "versioned"):
        owners = {
            klass.__name__
            for view in (AsyncDatabase, AsyncDatabaseView, DatabaseView)
            for klass in view.__mro__
            if name in vars(klass)
        }
        assert owners == {"RangeSurface"}, name


async def test_the_views_report_the_same_database(env: Environment) -> None:
    db = await env.open_db("d", dupsort=True)
    await db.put(b"k", b"a")

    def facts(view: Any) -> tuple[Any, ...]:
        return (view.name, view.environment, view.dupsort, view.versioned)

    expected = ("d", env, True, False)
    assert facts(db) == expected
    async with env.begin() as snap:
        assert facts(snap[db]) == expected
        assert await snap[db].stat() == await db.stat()
    seen = await db.run(lambda txn: (facts(txn), txn.stat()))
    assert seen == (expected, await db.stat())
    default = env.get_default_database()
    assert await default.run(lambda txn: facts(txn[default])) == (None, env, False, False)


# ----------------------------------------------------------------------------- sync or async
# The classes whose methods run outside run(fn): a name is awaited in all of them or in none.
ASYNC_SIDE = (
    Environment,
    AsyncDatabase,
    AsyncDatabaseView,
    Snapshot,
    WriteTransaction,
    RangeIterator,
    ChangeFeed,
    CommitFeed,
)
# Names that are a property of one class and awaited on another, and why (docs/api.md).
PROPERTY_AND_AWAITED = {
    "last_seq": "a feed's position is state it holds; env.last_seq() reads the log's end",
}
# Plain methods that return an awaitable: they are awaited as a coroutine is.
RETURN_AWAITABLES = {
    "Environment.stat",
    "Environment.run",
    "Environment.begin",
    "AsyncDatabase.run",
}


def kind(cls: type, name: str) -> str:
    """'awaited', 'plain' (a method called without await) or 'attribute'."""
    attr = inspect.getattr_static(cls, name)
    function = getattr(attr, "__func__", attr)
    if not inspect.isfunction(function):
        return "attribute"  # a property or a slot
    if inspect.iscoroutinefunction(function) or f"{cls.__name__}.{name}" in RETURN_AWAITABLES:
        return "awaited"
    return "plain"


def test_a_name_is_awaited_everywhere_or_nowhere() -> None:
    kinds: dict[str, dict[str, str]] = {}
    for cls in ASYNC_SIDE:
        for name in public(cls):
            kinds.setdefault(name, {})[cls.__name__] = kind(cls, name)
    mixed = {name: where for name, where in kinds.items() if len(set(where.values())) > 1}
    assert {name: set(where.values()) for name, where in mixed.items()} == {
        name: {"attribute", "awaited"} for name in PROPERTY_AND_AWAITED
    }
    assert kinds["stat"] == {
        "Environment": "awaited",
        "AsyncDatabase": "awaited",
        "AsyncDatabaseView": "awaited",
    }
    # Ending a transaction is awaited (Snapshot.release, deprecated, is the one leftover).
    assert kinds["close"] == {"Environment": "awaited", "Snapshot": "awaited"}
    assert kinds["commit"] == kinds["abort"] == {"WriteTransaction": "awaited"}


def test_inside_run_everything_is_plain() -> None:
    """The rule's one exception: run(fn)'s views are synchronous, as fn is."""
    for cls in (DatabaseView, Transaction):
        for name in public(cls):
            assert kind(cls, name) != "awaited", f"{cls.__name__}.{name}"


async def test_the_plain_methods_that_return_awaitables_do(env: Environment) -> None:
    db = env.get_default_database()
    stat = env.stat()
    assert inspect.isawaitable(stat)
    assert isinstance(await stat, dict)
    snap = env.begin()
    assert inspect.isawaitable(snap)
    await (await snap).close()
    assert await env.run(lambda txn: 1) == 1
    assert await db.run(lambda txn: 2) == 2


def test_every_listed_awaitable_exists() -> None:
    for qualified in RETURN_AWAITABLES:
        cls_name, name = qualified.split(".")
        assert name in public(getattr(aiolmdb, cls_name)), qualified


@pytest.mark.parametrize("cls", [AsyncDatabase, AsyncDatabaseView, DatabaseView])
def test_get_chunks_is_an_iterator_everywhere(cls: type) -> None:
    """get_chunks is a plain method returning an iterator of pieces (async on the async side)."""
    assert kind(cls, "get_chunks") == "plain"


async def test_get_chunks_and_coders_of_a_run_view(env: Environment) -> None:
    db = env.get_default_database()
    await db.put(b"k", b"abcdefg")

    def fn(txn: Transaction[bytes, bytes]) -> tuple[list[bytes], Any]:
        pieces = list(txn.get_chunks(b"k", 3))
        with pytest.raises(KeyError):
            txn.get_chunks(b"absent")
        with pytest.raises(ValueError, match="chunk_size"):
            txn.get_chunks(b"k", 0)
        return pieces, txn.value_coder

    pieces, coder = await db.run(fn)
    assert pieces == [b"abc", b"def", b"g"]
    assert pieces == [p async for p in db.get_chunks(b"k", 3)]
    assert coder is db.value_coder


async def test_env_stat_result_as_a_mapping(env: Environment) -> None:
    call = env.stat()
    assert "await" in repr(call)  # its repr says how to use it, and reads nothing
    with pytest.warns(DeprecationWarning, match="await env.stat"):
        assert len(call) == len(await env.stat())
