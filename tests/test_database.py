"""AsyncDatabase: every operation, coders, dupsort, run(fn) transactions and the error paths.

Every test runs in both read modes (the ``env`` fixture is parametrized threaded/inline).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import re
import struct
import zlib
from collections.abc import Callable
from typing import Any

import lmdb
import pytest
from conftest import DB_OPERATIONS, OpenEnv, WriterBlocker, gather_bounded, let_tasks_start

import aiolmdb
from aiolmdb import (
    AsyncDatabase,
    DatabaseDroppedError,
    Environment,
    InvalidKeyError,
    JSONCoder,
    ReadOnlyError,
    StringCoder,
    Transaction,
    UInt32Coder,
)

Db = AsyncDatabase[bytes, bytes]


async def call(fn: Callable[[], Any]) -> Any:
    """Call fn and await its result if it is awaitable (some methods raise before that)."""
    result = fn()
    if inspect.isawaitable(result):
        return await result
    return result


async def await_db(db: AsyncDatabase[Any, Any]) -> AsyncDatabase[Any, Any]:
    return await db


# --------------------------------------------------------------------------------------------
# get / put
# --------------------------------------------------------------------------------------------


async def test_get_missing_returns_default(db: Db) -> None:
    assert await db.get(b"missing") is None
    assert await db.get(b"missing", b"dflt") == b"dflt"


async def test_put_then_get(db: Db) -> None:
    assert await db.put(b"k", b"v1") is True
    assert await db.get(b"k") == b"v1"
    assert await db.get(b"k", b"dflt") == b"v1"
    assert await db.put(b"k", b"v2") is True  # overwrite is the default
    assert await db.get(b"k") == b"v2"


async def test_put_without_overwrite(db: Db) -> None:
    assert await db.put(b"k", b"first", overwrite=False) is True
    assert await db.put(b"k", b"second", overwrite=False) is False
    assert await db.get(b"k") == b"first"


async def test_bytes_like_keys_and_values(db: Db) -> None:
    assert await db.put(bytearray(b"ba"), memoryview(b"mv"))  # type: ignore[arg-type]
    value = await db.get(b"ba")
    assert value == b"mv"
    assert type(value) is bytes  # a copy, never a buffer into the map
    assert await db.get(memoryview(b"ba")) == b"mv"  # type: ignore[call-overload]


async def test_empty_value_is_allowed(db: Db) -> None:
    assert await db.put(b"k", b"")
    assert await db.get(b"k", b"dflt") == b""


async def test_get_multi(db: Db) -> None:
    await db.put_multi([(b"a", b"1"), (b"b", b"2")])
    result = await db.get_multi([b"a", b"missing", b"b"])
    assert result == {b"a": b"1", b"missing": None, b"b": b"2"}
    assert list(result) == [b"a", b"missing", b"b"]  # the order asked, found or not
    assert list(await db.get_multi([b"b", b"a"])) == [b"b", b"a"]
    assert await db.get_multi(iter([b"b", b"zz"]), default=b"-") == {b"b": b"2", b"zz": b"-"}
    assert await db.get_multi([]) == {}
    assert await db.get_multi([b"a", b"a"]) == {b"a": b"1"}


@pytest.mark.parametrize(
    ("key", "type_name"), [(bytearray(b"a"), "bytearray"), ([b"a"], "list")], ids=["ba", "list"]
)
async def test_get_multi_unhashable_key(db: Db, key: Any, type_name: str) -> None:
    with pytest.raises(TypeError, match=f"hashable.*{type_name}"):
        await db.get_multi([b"ok", key])


async def test_put_multi_pairs_and_mapping(db: Db) -> None:
    assert await db.put_multi([(b"a", b"1"), (b"b", b"2")]) == 2
    assert await db.put_multi({b"c": b"3", b"a": b"one"}) == 2
    assert await db.put_multi(((k, v) for k, v in [(b"d", b"4")])) == 1
    assert await db.put_multi([]) == 0
    assert await db.get_multi([b"a", b"b", b"c", b"d"]) == {
        b"a": b"one",
        b"b": b"2",
        b"c": b"3",
        b"d": b"4",
    }


BAD_ITEMS: list[tuple[Any, type[BaseException]]] = [
    ((b"k3", "not bytes"), TypeError),
    ((b"", b"v"), InvalidKeyError),
    ((b"x" * 10_000, b"v"), InvalidKeyError),
    (b"kv", TypeError),
    ((b"a", b"b", b"c"), TypeError),
    (None, TypeError),
    ((123, b"v"), TypeError),
]


@pytest.mark.parametrize(
    ("bad", "error"),
    BAD_ITEMS,
    ids=["bad-value", "empty-key", "long-key", "not-a-pair", "triple", "none", "int-key"],
)
async def test_put_multi_is_atomic(db: Db, bad: Any, error: type[BaseException]) -> None:
    await db.put(b"k1", b"old")
    items: list[Any] = [(b"k1", b"new"), (b"k2", b"v2"), bad, (b"k4", b"v4")]
    with pytest.raises(error):
        await db.put_multi(items)
    assert await db.get_multi([b"k1", b"k2", b"k3", b"k4"]) == {
        b"k1": b"old",
        b"k2": None,
        b"k3": None,
        b"k4": None,
    }
    assert await db.count() == 1


async def test_put_multi_non_pair_message(db: Db) -> None:
    with pytest.raises(TypeError, match=r"item 1 must be a \(key, value\) pair; got a int"):
        await db.put_multi([(b"a", b"b"), 5])  # type: ignore[list-item]


async def test_multi_keys_equal_in_python_but_encoded_differently(env: Environment) -> None:
    """1, 1.0 and True are one dict key but three JSON keys: get_multi and delete_multi refuse
    them together (the returned dict could not tell their entries apart) and delete nothing."""
    db: AsyncDatabase[Any, bytes] = await env.open_db("json", key_coder=JSONCoder())
    pairs: list[tuple[Any, bytes]] = [(1, b"int"), (True, b"bool"), (1.0, b"float"), (2, b"two")]
    assert await db.put_multi(pairs) == 4
    for keys, earlier, later in [([1, True], "1", "True"), ([1.0, 2, 1], "1.0", "1")]:
        for op in ("get_multi", "delete_multi"):
            expected = (
                f"{op} keys {earlier} and {later} are equal in Python but encode to different bytes"
            )
            with pytest.raises(ValueError, match=re.escape(expected)):
                await getattr(db, op)(keys)
    assert await db.count() == 4
    assert [await db.get(k) for k, _ in pairs] == [v for _, v in pairs]
    # The same key twice is fine.
    assert await db.get_multi([2, 2]) == {2: b"two"}
    assert await db.delete_multi([2, 2]) == {2: True}
    assert await db.count() == 3


# --------------------------------------------------------------------------------------------
# delete / pop / replace / update
# --------------------------------------------------------------------------------------------


async def test_delete(db: Db) -> None:
    await db.put(b"k", b"v")
    assert await db.delete(b"k") is True
    assert await db.get(b"k") is None
    assert await db.delete(b"k") is False


async def test_delete_multi(db: Db) -> None:
    await db.put_multi([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    assert await db.delete_multi([b"a", b"missing", b"c"]) == {
        b"a": True,
        b"missing": False,
        b"c": True,
    }
    assert await db.get_multi([b"a", b"b", b"c"]) == {b"a": None, b"b": b"2", b"c": None}


async def test_delete_multi_unhashable_key_deletes_nothing(db: Db) -> None:
    await db.put(b"a", b"1")
    bad: Any = bytearray(b"x")
    with pytest.raises(TypeError, match="bytearray"):
        await db.delete_multi([b"a", bad])
    assert await db.get(b"a") == b"1"


async def test_pop(db: Db) -> None:
    await db.put(b"k", b"v")
    assert await db.pop(b"k") == b"v"
    assert await db.get(b"k") is None
    assert await db.pop(b"k") is None
    assert await db.pop(b"k", b"dflt") == b"dflt"


async def test_replace(db: Db) -> None:
    assert await db.replace(b"k", b"v1") is None
    assert await db.replace(b"k", b"v2") == b"v1"
    assert await db.get(b"k") == b"v2"


@pytest.mark.parametrize("writemap", [False, True], ids=["nested", "writemap"])
async def test_failing_pop_and_replace_roll_back(open_env: OpenEnv, writemap: bool) -> None:
    """pop and replace change the key before decoding its old value: when that decoding
    fails, the change is rolled back (the key keeps its old value) while the rest of the batch
    commits (with writemap=True the batch runs again without them)."""
    env = open_env(writemap=writemap)
    raw = await env.open_db("docs")
    docs = env.open_db("docs", key_coder=StringCoder(), value_coder=JSONCoder())
    await raw.put_multi([(b"p", b"not json"), (b"r", b"no json either")])
    async with WriterBlocker(env):  # one batch: the failures and their neighbours
        popped = asyncio.ensure_future(docs.pop("p"))
        replaced = asyncio.ensure_future(docs.replace("r", {"new": 1}))
        neighbour = asyncio.ensure_future(docs.put("n", 1))
        await let_tasks_start()
    results = await gather_bounded(popped, replaced, neighbour)
    for failed in results[:2]:
        assert isinstance(failed, ValueError)
        assert "JSONCoder cannot decode" in str(failed)
    assert results[2] is True
    assert await raw.get_multi([b"p", b"r", b"n"]) == {
        b"p": b"not json",
        b"r": b"no json either",
        b"n": b"1",
    }


async def test_update(db: Db) -> None:
    seen: list[bytes | None] = []

    def append_x(old: bytes | None) -> bytes:
        seen.append(old)
        return (old or b"") + b"x"

    assert await db.update(b"k", append_x) == b"x"
    assert await db.update(b"k", append_x) == b"xx"
    assert await db.update(b"other", append_x, default=b"start:") == b"start:x"
    assert seen == [None, b"x", b"start:"]
    assert await db.get_multi([b"k", b"other"]) == {b"k": b"xx", b"other": b"start:x"}


async def test_update_fn_error_reaches_caller_and_writes_nothing(db: Db) -> None:
    await db.put(b"k", b"v")
    error = KeyError("boom")

    def fail(old: bytes | None) -> bytes:
        raise error

    with pytest.raises(KeyError) as info:
        await db.update(b"k", fail)
    assert info.value is error
    assert await db.get(b"k") == b"v"


async def test_concurrent_updates_are_atomic(env: Environment) -> None:
    counters = env.open_db("counters", key_coder=StringCoder(), value_coder=JSONCoder())

    def increment(old: Any) -> int:
        assert isinstance(old, int)
        return old + 1

    results = await asyncio.gather(
        *(counters.update("n", increment, default=0) for _ in range(200))
    )
    assert sorted(results) == list(range(1, 201))
    assert await counters.get("n") == 200


# --------------------------------------------------------------------------------------------
# drop / count / stat
# --------------------------------------------------------------------------------------------


async def test_count_and_stat(db: Db) -> None:
    assert await db.count() == 0
    await db.put_multi([(b"%d" % i, b"v") for i in range(10)])
    assert await db.count() == 10
    stat = await db.stat()
    assert stat["entries"] == 10
    assert stat["psize"] >= 4096
    assert {"depth", "branch_pages", "leaf_pages", "overflow_pages"} <= set(stat)


async def test_drop_delete_named_database(env: Environment) -> None:
    things = await env.open_db("things")
    alias = env.open_db(b"things")  # another object of the same database
    await things.put(b"k", b"v")
    assert await alias.get(b"k") == b"v"

    await things.drop()

    ops: list[Callable[[Db], Any]] = [*DB_OPERATIONS, await_db]
    for dropped in (things, alias):
        for op in ops:
            with pytest.raises(DatabaseDroppedError, match="dropped"):
                await call(functools.partial(op, dropped))

    # A view of a dropped database inside a transaction fails too.
    with pytest.raises(DatabaseDroppedError):
        await env.run(lambda txn: txn[things].get(b"k"))

    fresh = await env.open_db("things")
    assert await fresh.count() == 0
    assert await fresh.get(b"k") is None
    await fresh.put(b"k2", b"v2")
    assert await fresh.get(b"k2") == b"v2"
    with pytest.raises(DatabaseDroppedError):
        await things.get(b"k2")


async def test_dropped_database_is_gone_from_disk(env: Environment) -> None:
    things = await env.open_db("things")
    await things.put(b"k", b"v")
    await things.drop()
    main = env.get_default_database()
    # The main database lists named databases as keys; the dropped one is gone.
    assert await main.get(b"things") is None
    with pytest.raises(lmdb.NotFoundError):
        await env.open_db("things", create=False)


async def test_drop_without_delete_empties(env: Environment) -> None:
    things = await env.open_db("things")
    await things.put_multi([(b"a", b"1"), (b"b", b"2")])
    await things.drop(delete=False)
    assert await things.count() == 0
    assert await things.get(b"a") is None
    await things.put(b"c", b"3")
    assert await things.get(b"c") == b"3"
    assert await env.open_db("things").get(b"c") == b"3"


async def test_drop_default_database_empties_it(env: Environment, db: Db) -> None:
    await db.put_multi([(b"a", b"1"), (b"b", b"2")])
    await db.drop()  # delete=True cannot delete the main database: it empties it
    assert await db.count() == 0
    await db.put(b"c", b"3")
    assert await db.get(b"c") == b"3"
    assert env.get_default_database() is db


# --------------------------------------------------------------------------------------------
# run(fn): transactions
# --------------------------------------------------------------------------------------------


async def test_run_read(env: Environment, db: Db) -> None:
    other = env.open_db("other", key_coder=StringCoder(), value_coder=JSONCoder())
    await db.put_multi([(b"a", b"1"), (b"b", b"2")])
    await other.put("x", {"n": 1})

    def read(txn: Transaction[bytes, bytes]) -> tuple[Any, ...]:
        assert isinstance(txn.raw, lmdb.Transaction)
        assert txn.write is False
        view = txn[other]
        assert txn[other] is view  # views are cached per database
        return (
            txn.get(b"a"),
            txn.get(b"zz", b"dflt"),
            txn.get_multi([b"a", b"b", b"c"]),
            view.get("x"),
            view.get_multi(["x", "y"], default=0),
            txn.id(),
            txn.raw.get(b"b"),
        )

    a, dflt, multi, x, xmulti, txn_id, raw_b = await db.run(read)
    assert (a, dflt, raw_b) == (b"1", b"dflt", b"2")
    assert multi == {b"a": b"1", b"b": b"2", b"c": None}
    assert x == {"n": 1}
    assert xmulti == {"x": {"n": 1}, "y": 0}
    assert isinstance(txn_id, int)
    assert txn_id >= 1


async def test_run_write_every_operation(db: Db) -> None:
    await db.put_multi([(b"del", b"1"), (b"pop", b"2"), (b"rep", b"3"), (b"upd", b"4")])

    def write(txn: Transaction[bytes, bytes]) -> dict[str, Any]:
        assert txn.write is True
        return {
            "put": txn.put(b"new", b"n"),
            "put_no_overwrite": txn.put(b"new", b"other", overwrite=False),
            "put_multi": txn.put_multi({b"m1": b"1", b"m2": b"2"}),
            "delete": txn.delete(b"del"),
            "delete_missing": txn.delete(b"del"),
            "delete_multi": txn.delete_multi([b"m2", b"nope"]),
            "pop": txn.pop(b"pop"),
            "pop_missing": txn.pop(b"pop", b"gone"),
            "replace": txn.replace(b"rep", b"R"),
            "update": txn.update(b"upd", lambda old: (old or b"") + b"!"),
            "read_own_write": txn.get(b"new"),
        }

    assert await db.run(write, write=True) == {
        "put": True,
        "put_no_overwrite": False,
        "put_multi": 2,
        "delete": True,
        "delete_missing": False,
        "delete_multi": {b"m2": True, b"nope": False},
        "pop": b"2",
        "pop_missing": b"gone",
        "replace": b"3",
        "update": b"4!",
        "read_own_write": b"n",
    }
    keys = [b"new", b"m1", b"m2", b"del", b"pop", b"rep", b"upd"]
    assert await db.get_multi(keys) == {
        b"new": b"n",
        b"m1": b"1",
        b"m2": None,
        b"del": None,
        b"pop": None,
        b"rep": b"R",
        b"upd": b"4!",
    }


WRITES: list[Callable[[Any], Any]] = [
    lambda v: v.put(b"k", b"v"),
    lambda v: v.put_multi([(b"k", b"v")]),
    lambda v: v.delete(b"k"),
    lambda v: v.delete_multi([b"k"]),
    lambda v: v.pop(b"k"),
    lambda v: v.replace(b"k", b"v"),
    lambda v: v.update(b"k", lambda old: b"v"),
]
WRITE_IDS = ["put", "put_multi", "delete", "delete_multi", "pop", "replace", "update"]


@pytest.mark.parametrize("write_op", WRITES, ids=WRITE_IDS)
async def test_write_in_read_only_run(
    env: Environment, db: Db, write_op: Callable[[Any], Any]
) -> None:
    other = env.open_db("other")
    await db.put(b"k", b"orig")

    def on_this_db(txn: Transaction[bytes, bytes]) -> Any:
        return write_op(txn)

    def on_other_db(txn: Transaction[bytes, bytes]) -> Any:
        return write_op(txn[other])

    for fn in (on_this_db, on_other_db):
        with pytest.raises(ReadOnlyError, match="write=True"):
            await db.run(fn)
        # Also catchable as py-lmdb's own exception.
        with pytest.raises(lmdb.ReadonlyError):
            await db.run(fn)
    assert await db.get(b"k") == b"orig"
    assert await other.count() == 0


async def test_raw_write_in_read_only_run_passes_lmdb_error(db: Db) -> None:
    with pytest.raises(lmdb.ReadonlyError):
        await db.run(lambda txn: txn.raw.put(b"k", b"v"))
    assert await db.get(b"k") is None


async def test_run_write_exception_rolls_back(db: Db) -> None:
    await db.put(b"k", b"orig")
    error = LookupError("from fn")

    def fail(txn: Transaction[bytes, bytes]) -> None:
        txn.put(b"k", b"changed")
        txn.put(b"new", b"n")
        assert txn.get(b"k") == b"changed"
        raise error

    with pytest.raises(LookupError) as info:
        await db.run(fail, write=True)
    assert info.value is error  # unchanged: the very object raised
    assert await db.get_multi([b"k", b"new"]) == {b"k": b"orig", b"new": None}


async def test_run_read_exception_reaches_caller(db: Db) -> None:
    error = ZeroDivisionError("read")

    def fail(txn: Transaction[bytes, bytes]) -> None:
        raise error

    with pytest.raises(ZeroDivisionError) as info:
        await db.run(fail)
    assert info.value is error


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
async def test_run_stop_iteration_becomes_runtime_error(db: Db, write: bool) -> None:
    def stop(txn: Transaction[bytes, bytes]) -> None:
        next(iter([]))

    with pytest.raises(RuntimeError, match="StopIteration") as info:
        await db.run(stop, write=write)
    assert isinstance(info.value.__cause__, StopIteration)


async def test_run_needs_callable(env: Environment, db: Db) -> None:
    bad: Any = 42
    with pytest.raises(TypeError, match="callable"):
        await db.run(bad)
    with pytest.raises(TypeError, match="callable"):
        await env.run(bad, write=True)


async def test_env_run_spans_databases_atomically(env: Environment) -> None:
    accounts = env.open_db("accounts", key_coder=StringCoder(), value_coder=JSONCoder())
    log = env.open_db("log", key_coder=UInt32Coder(), value_coder=StringCoder())
    main = env.get_default_database()
    await accounts.put_multi({"alice": 100, "bob": 0})

    def transfer(amount: int) -> Callable[[Transaction[bytes, bytes]], int]:
        def fn(txn: Transaction[bytes, bytes]) -> int:
            acc, lg = txn[accounts], txn[log]
            alice = acc.get("alice")
            assert isinstance(alice, int)
            acc.put("alice", alice - amount)
            acc.update("bob", lambda old: int(str(old)) + amount)
            n = lg.update(0, lambda old: str(int(str(old)) + 1), default="0")
            lg.put(int(n), f"transfer {amount}")
            txn.put(b"last", str(amount).encode())  # default database
            if alice - amount < 0:
                raise ValueError("insufficient funds")
            return alice - amount

        return fn

    assert await env.run(transfer(30), write=True) == 70
    with pytest.raises(ValueError, match="insufficient"):
        await env.run(transfer(500), write=True)
    assert await accounts.get_multi(["alice", "bob"]) == {"alice": 70, "bob": 30}
    assert await log.get_multi([0, 1, 2]) == {0: "1", 1: "transfer 30", 2: None}
    assert await main.get(b"last") == b"30"


async def test_env_run_read(env: Environment) -> None:
    await env.get_default_database().put(b"k", b"v")
    assert await env.run(lambda txn: (txn.get(b"k"), txn.write)) == (b"v", False)


async def test_transaction_rejects_database_of_other_env(
    env: Environment, open_env: Callable[..., Environment]
) -> None:
    foreign = open_env().get_default_database()
    with pytest.raises(ValueError, match="another environment"):
        await env.run(lambda txn: txn[foreign].get(b"k"))


async def test_run_waits_for_databases_being_created(env: Environment) -> None:
    # Not awaited: created on the writer thread; run must wait so that txn[db] finds it.
    fresh = env.open_db("fresh")
    assert await env.run(lambda txn: txn[fresh].put(b"k", b"v"), write=True) is True
    assert await fresh.get(b"k") == b"v"


# --------------------------------------------------------------------------------------------
# coders
# --------------------------------------------------------------------------------------------


async def test_string_keys_json_values(env: Environment) -> None:
    docs = env.open_db("docs", key_coder=StringCoder(), value_coder=JSONCoder())
    raw = env.open_db("docs")  # same database, identity coders: the stored bytes
    doc = {"name": "Zoë", "tags": ["a", "b"], "n": 1}
    assert await docs.put("clé", doc)
    assert await docs.get("clé") == doc
    assert await raw.get("clé".encode()) == json.dumps(doc, ensure_ascii=False).encode()
    assert await docs.get_multi(["clé", "nope"], default={}) == {"clé": doc, "nope": {}}
    assert await docs.replace("clé", [1, 2]) == doc
    assert await docs.pop("clé") == [1, 2]
    assert await docs.delete_multi(["clé"]) == {"clé": False}


async def test_uint32_keys(env: Environment) -> None:
    nums = env.open_db("nums", key_coder=UInt32Coder(), value_coder=UInt32Coder())
    raw = env.open_db("nums")
    big = 2**32 - 1
    assert await nums.put_multi([(3, 21), (1, 7), (big, 0)]) == 3
    assert await nums.get_multi([1, 3, big, 0]) == {1: 7, 3: 21, big: 0, 0: None}
    assert await raw.get(struct.pack(">I", 3)) == struct.pack(">I", 21)
    assert await nums.update(1, lambda old: (old or 0) + 1) == 8


async def test_value_out_of_range_for_uint_coder(env: Environment) -> None:
    nums = env.open_db("nums", key_coder=UInt32Coder(), value_coder=UInt32Coder())
    with pytest.raises(ValueError, match="out of range"):
        await nums.put(1, 2**32)
    with pytest.raises(ValueError, match="out of range"):
        await nums.get(-1)
    bad: Any = True
    with pytest.raises(TypeError, match="bool"):
        await nums.put(bad, 1)
    assert await nums.count() == 0


async def test_compressed_values(env: Environment) -> None:
    coder = JSONCoder().compressed(9)
    big = env.open_db("big", key_coder=StringCoder(), value_coder=coder)
    raw = env.open_db("big")
    value = {"text": "abc" * 1000}
    assert await big.put("k", value)
    assert await big.get("k") == value
    stored = await raw.get(b"k")
    assert stored is not None
    assert len(stored) < 200  # compressed well below the 3 kB of JSON
    assert json.loads(zlib.decompress(stored)) == value


async def test_coders_replaced_at_runtime(env: Environment) -> None:
    db: AsyncDatabase[Any, Any] = env.open_db("swap")
    await db.put(b"k", b"raw")
    db.key_coder = StringCoder()
    db.value_coder = JSONCoder()
    await db.put("j", {"a": 1})
    assert await db.get("j") == {"a": 1}
    with pytest.raises(ValueError, match="JSONCoder cannot decode"):
        await db.get("k")  # b"raw" is not JSON
    with pytest.raises(TypeError, match="StringCoder"):
        await db.get(b"k")
    # The transaction view picks up the current coders too.
    assert await db.run(lambda txn: txn.get("j")) == {"a": 1}
    db.value_coder = aiolmdb.IdentityCoder()
    assert await db.get("j") == b'{"a": 1}'
    db.key_coder = aiolmdb.IdentityCoder()  # bytes in and out again
    assert await db.get(b"k") == b"raw"
    assert await db.put(b"k2", b"raw2")
    assert await db.get_multi([b"k", b"k2"]) == {b"k": b"raw", b"k2": b"raw2"}


async def test_get_default_database_coders_stick(env: Environment) -> None:
    main = env.get_default_database()
    main_any: AsyncDatabase[Any, Any] = main
    main_any.value_coder = JSONCoder()
    await main.put(b"k", [1, 2])  # type: ignore[arg-type]
    assert await main_any.get(b"k") == [1, 2]
    assert env.get_default_database() is main
    assert await env.open_db(None).get(b"k") == b"[1, 2]"


async def test_coder_errors(env: Environment, db: Db) -> None:
    docs = env.open_db("docs", key_coder=StringCoder(), value_coder=JSONCoder())
    bad: Any = object()
    with pytest.raises(TypeError, match="IdentityCoder cannot encode a str"):
        await db.put("str key", b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="IdentityCoder"):
        await db.put(b"k", bad)
    with pytest.raises(TypeError, match="IdentityCoder"):
        await db.get(bad)
    with pytest.raises(TypeError, match="JSONCoder cannot encode a set"):
        await docs.put("k", {1, 2})
    with pytest.raises(ValueError, match="StringCoder cannot encode"):
        await docs.put("\ud800", 1)
    assert await db.get(b"k") is None
    assert await docs.count() == 0


# --------------------------------------------------------------------------------------------
# invalid keys
# --------------------------------------------------------------------------------------------

KEY_OPS: list[Callable[[Db, bytes], Any]] = [
    lambda d, k: d.get(k),
    lambda d, k: d.get_multi([b"ok", k]),
    lambda d, k: d.put(k, b"v"),
    lambda d, k: d.put_multi([(b"ok", b"v"), (k, b"v")]),
    lambda d, k: d.delete(k),
    lambda d, k: d.delete_multi([b"ok", k]),
    lambda d, k: d.pop(k),
    lambda d, k: d.replace(k, b"v"),
    lambda d, k: d.update(k, lambda old: b"v"),
    lambda d, k: d.run(lambda txn: txn.get(k)),
    lambda d, k: d.run(lambda txn: txn.put(k, b"v"), write=True),
]
KEY_OP_IDS = [
    "get",
    "get_multi",
    "put",
    "put_multi",
    "delete",
    "delete_multi",
    "pop",
    "replace",
    "update",
    "run-get",
    "run-put",
]


@pytest.mark.parametrize("op", KEY_OPS, ids=KEY_OP_IDS)
async def test_invalid_keys(env: Environment, db: Db, op: Callable[[Db, bytes], Any]) -> None:
    mks = env.max_key_size()
    await db.put(b"ok", b"orig")
    with pytest.raises(InvalidKeyError, match="empty key") as empty:
        await op(db, b"")
    with pytest.raises(InvalidKeyError, match=f"{mks + 1} bytes.*max_key_size") as long:
        await op(db, b"k" * (mks + 1))
    for info in (empty, long):
        assert isinstance(info.value, lmdb.BadValsizeError)
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, aiolmdb.Error)
    assert await db.get(b"ok") == b"orig"
    assert await db.count() == 1


async def test_key_of_max_size_is_fine(env: Environment, db: Db) -> None:
    key = b"k" * env.max_key_size()
    assert await db.put(key, b"v")
    assert await db.get(key) == b"v"
    assert await db.get_multi([key]) == {key: b"v"}


async def test_invalid_key_names_the_encoded_size(env: Environment) -> None:
    text = env.open_db("text", key_coder=StringCoder())
    with pytest.raises(InvalidKeyError, match="empty key"):
        await text.put("", b"v")
    # 'é' is two bytes in UTF-8: the limit applies to the encoded key.
    key = "é" * (env.max_key_size() // 2 + 1)
    with pytest.raises(InvalidKeyError, match=f"{len(key.encode())} bytes"):
        await text.put(key, b"v")


async def test_lmdb_errors_pass_through(env: Environment) -> None:
    dups = env.open_db("dups", dupsort=True)
    # In a dupsort database values are limited like keys: LMDB's own error reaches the caller.
    with pytest.raises(lmdb.BadValsizeError) as info:
        await dups.put(b"k", b"v" * (env.max_key_size() + 1))
    assert not isinstance(info.value, aiolmdb.Error)
    assert await dups.count() == 0


# --------------------------------------------------------------------------------------------
# dupsort
# --------------------------------------------------------------------------------------------


async def test_dupsort_basic(env: Environment) -> None:
    dups = await env.open_db("d", dupsort=True)
    assert dups.dupsort is True
    assert await dups.put(b"k", b"b") is True
    assert await dups.put(b"k", b"a") is True
    assert await dups.put(b"k", b"c") is True
    assert await dups.put(b"k", b"a") is False  # the exact pair exists
    assert await dups.put(b"other", b"x") is True
    assert await dups.count() == 4
    assert await dups.get(b"k") == b"a"  # the first value in sort order

    assert await dups.delete(b"k", b"a") is True  # just that pair
    assert await dups.delete(b"k", b"a") is False
    assert await dups.get(b"k") == b"b"
    assert await dups.count() == 3
    assert await dups.put_multi([(b"k", b"b"), (b"k", b"d")]) == 1  # (k, b) existed
    assert await dups.count() == 4
    assert await dups.delete(b"k") is True  # every value
    assert await dups.get(b"k") is None
    assert await dups.count() == 1
    assert await dups.get(b"other") == b"x"


async def test_dupsort_run_view(env: Environment) -> None:
    dups = await env.open_db("d", dupsort=True)

    def fn(txn: Transaction[bytes, bytes]) -> tuple[bool, bool, bool]:
        return (txn.put(b"k", b"1"), txn.put(b"k", b"2"), txn.put(b"k", b"1"))

    assert await dups.run(fn, write=True) == (True, True, False)
    assert await dups.run(lambda txn: txn.delete(b"k", b"1"), write=True) is True
    assert await dups.count() == 1


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------


async def test_database_properties(env: Environment, db: Db) -> None:
    named = env.open_db("named", key_coder=StringCoder())
    assert db.name is None
    assert named.name == "named"
    assert named.environment is env
    assert db.environment is env
    assert db.dupsort is False
    assert "default" in repr(db)
    assert "'named'" in repr(named)
    assert "StringCoder" in repr(named)
    assert await named is named


async def test_misspelt_write_options_are_refused(env: aiolmdb.Environment) -> None:
    """put/delete options are keyword-only and typed for mypy; at run time a misspelt one
    raises instead of being ignored (which would write unconditionally)."""
    db = env.get_default_database()
    await db.put(b"k", b"v")
    misspelt: Any = {"if_versoin": 3}
    with pytest.raises(TypeError, match=r"put\(\) got an unexpected keyword argument.*if_versoin"):
        await db.put(b"k", b"new", **misspelt)
    with pytest.raises(TypeError, match=r"delete\(\) got an unexpected keyword argument"):
        await db.delete(b"k", **misspelt)
    with pytest.raises(TypeError, match=r"put\(\) got an unexpected keyword argument"):
        await db.run(lambda txn: txn.put(b"k", b"new", **misspelt), write=True)
    async with env.begin(write=True) as txn:
        with pytest.raises(TypeError, match=r"delete\(\) got an unexpected keyword argument"):
            await txn[db].delete(b"k", **misspelt)
    assert await db.get(b"k") == b"v"  # nothing was written
    assert await db.put(b"k", b"v2", overwrite=False) is False
    assert await db.put(b"n", b"v2", overwrite=False) is True


async def test_emptying_the_default_database_keeps_the_named_ones(open_env: OpenEnv) -> None:
    """LMDB's drop of the main database would delete the named databases' records too: every
    named database, the change log and aiolmdb's metadata lost."""
    env = open_env(changelog=True)
    named = await env.open_db("named")
    await named.put(b"k", b"v")
    main = env.get_default_database()
    await main.put_multi([(b"x", b"1"), (b"y", b"2" * 48)])  # a value shaped like a record
    before = await env.last_seq()
    await main.drop()
    assert await main.get(b"x") is None
    assert await main.get(b"y") is None
    assert await named.get(b"k") == b"v"
    names = [info.name for info in await env.databases(include_internal=True)]
    assert names == [None, "__aiolmdb__", "__aiolmdb_changes__", "named"]
    commits = [c async for c in env.commits(since=before, follow=False)]
    assert [[(ch.db, ch.kind, ch.key) for ch in c.changes] for c in commits] == [
        [(None, "delete", b"x"), (None, "delete", b"y")]
    ]
    await named.put(b"k2", b"v2")  # the log and the environment still work
    assert await env.last_seq() == before + 3
