"""The types users see (issue 24, point 3): ``make type`` checks every ``assert_type`` below
with mypy --strict (a wrong overload fails it), and pytest runs the same calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiolmdb
from aiolmdb import Entry, JSONCoder, StringCoder, UInt64Coder

if TYPE_CHECKING:
    from typing_extensions import assert_type
else:

    def assert_type(value: Any, _type: Any) -> Any:
        return value


async def test_get_like_methods_type_their_default(env: aiolmdb.Environment) -> None:
    counts = env.open_db("counts", key_coder=StringCoder(), value_coder=UInt64Coder())
    await counts.put("a", 1)
    assert assert_type(await counts.get("a"), "int | None") == 1
    assert assert_type(await counts.get("b", default=0), int) == 0
    assert assert_type(await counts.get("b", 0), int) - 1 == -1  # no "None - int"
    assert assert_type(await counts.get("b", default="none"), "int | str") == "none"
    assert assert_type(await counts.get_multi(["a", "b"]), "dict[str, int | None]") == {
        "a": 1,
        "b": None,
    }
    assert assert_type(await counts.get_multi(["b"], default=0), "dict[str, int]") == {"b": 0}
    assert assert_type(await counts.pop("b", 0), int) == 0
    assert assert_type(await counts.pop("a"), "int | None") == 1
    assert assert_type(await counts.update("c", lambda n: n + 1, default=0), int) == 1
    assert assert_type(await counts.update("c", lambda n: (n or 0) + 1), int) == 2
    assert assert_type(await counts.exists("c"), bool) is True
    assert assert_type([k async for k in counts], "list[str]") == ["c"]

    async with env.begin(write=True) as txn:
        view = txn[counts]
        assert assert_type(await view.get("x", 7), int) == 7
        assert assert_type(await view.get("x"), "int | None") is None
        assert assert_type(await view.get_multi(["x"], 1), "dict[str, int]") == {"x": 1}
        assert assert_type(await view.pop("x", 2), int) == 2
        assert assert_type(await view.put("x", 3, overwrite=False), bool) is True
        assert assert_type(await view.delete("x", if_value=3), bool) is True

    def in_run(txn: aiolmdb.Transaction[str, int]) -> int:
        assert_type(txn.get("x"), "int | None")
        assert_type(txn[counts].get_multi(["x"], default=0), "dict[str, int]")
        assert_type(txn.exists("x"), bool)
        assert_type(list(txn), "list[str]")
        assert_type(txn.pop("x", 0), int)
        return assert_type(txn.get("x", 1), int)

    assert await counts.run(in_run, write=True) == 1


async def test_put_and_delete_keywords_are_typed(env: aiolmdb.Environment) -> None:
    docs = await env.open_db(
        "docs", key_coder=StringCoder(), value_coder=JSONCoder(), versioned=True
    )
    await docs.put("a", {"n": 1})
    entry = await docs.get_entry("a")
    assert entry is not None
    assert_type(entry, "Entry[Any]")
    assert isinstance(entry, Entry)
    stored = await docs.put(
        "a", {"n": 2}, overwrite=True, if_version=entry.version, raise_on_conflict=True
    )
    assert stored is True
    assert await docs.delete("a", if_version=entry.version) is False
    if TYPE_CHECKING:  # what mypy refuses: misspelt or mistyped keywords
        await docs.put("a", 1, if_versoin=3)  # type: ignore[call-arg]
        await docs.put("a", 1, overwrite="no")  # type: ignore[arg-type]
        await docs.delete("a", raise_on_conflict=None)  # type: ignore[arg-type]
