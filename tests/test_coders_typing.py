"""A typed client of every coder: mypy --strict checks the annotations below (a wrong type
parameter anywhere in the coders' signatures fails ``make type``), and pytest runs them."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

import aiolmdb

if TYPE_CHECKING:
    import msgspec
else:
    msgspec = pytest.importorskip("msgspec", reason="pip install 'aiolmdb[msgspec]'")


class Item(msgspec.Struct):
    sku: str
    qty: int


async def test_typed_client(env: aiolmdb.Environment) -> None:
    items: aiolmdb.AsyncDatabase[tuple[Any, ...], Item] = env.open_db(
        "items", key_coder=aiolmdb.TupleCoder(), value_coder=aiolmdb.MsgspecCoder(Item)
    )
    await items.put(("shop", 1), Item("a", 2))
    got: Item | None = await items.get(("shop", 1))
    assert got == Item("a", 2)
    # The ignore must be needed (strict mode flags unused ones): get() is typed, not Any.
    not_an_int: int | None = await items.get(("shop", 1))  # type: ignore[assignment]
    del not_an_int
    keys: list[tuple[Any, ...]] = [k async for k in items.keys(prefix=("shop",))]
    assert keys == [("shop", 1)]

    json_items = env.open_db(
        "json-items",
        key_coder=aiolmdb.UInt32Coder(),
        value_coder=aiolmdb.MsgspecCoder(list[Item], format="json"),
    )
    await json_items.put(1, [Item("b", 3)])
    many: list[Item] | None = await json_items.get(1)
    assert many == [Item("b", 3)]

    packed = env.open_db("packed", value_coder=aiolmdb.MsgpackCoder())
    await packed.put(b"k", {"any": ["thing"]})
    anything: Any = await packed.get(b"k")
    assert anything == {"any": ["thing"]}

    compressed: aiolmdb.Coder[Item] = aiolmdb.MsgspecCoder(Item).compressed(
        codec="zlib", threshold=8
    )
    zipped = env.open_db("zipped", key_coder=aiolmdb.StringCoder(), value_coder=compressed)
    await zipped.put("x", Item("c", 4))
    also: Item | None = await zipped.get("x")
    assert also == Item("c", 4)

    index = env.open_db(
        "index", key_coder=aiolmdb.TupleCoder(), value_coder=aiolmdb.TupleCoder(), dupsort=True
    )
    await index.put(("tag", uuid.UUID(int=1)), ("shop", 1))
    pairs: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = [kv async for kv in index.items()]
    assert pairs == [(("tag", uuid.UUID(int=1)), ("shop", 1))]

    coder: aiolmdb.CompressedCoder[dict[str, Any]] = aiolmdb.CompressedCoder(
        aiolmdb.JSONCoder(), codec="zlib", threshold=4
    )
    assert coder.deserialize(coder.serialize({"a": 1})) == {"a": 1}
