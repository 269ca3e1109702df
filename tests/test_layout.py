"""The package's layout is not part of its API: public names report the modules users import
them from, so reprs, pickles and the docs do not change when the implementation moves."""

from __future__ import annotations

import datetime
import importlib
import pickle
import types

import pytest

import aiolmdb
from aiolmdb import coders


def _public_objects() -> list[tuple[str, object]]:
    found = [(name, getattr(aiolmdb, name)) for name in aiolmdb.__all__]
    found += [(f"coders.{name}", getattr(coders, name)) for name in coders.__all__]
    return [
        (name, obj)
        for name, obj in found
        if isinstance(obj, (type, types.FunctionType))  # not __version__ or type aliases
    ]


@pytest.mark.parametrize(("name", "obj"), _public_objects(), ids=lambda v: str(v)[:40])
def test_a_public_name_reports_a_public_module_that_has_it(name: str, obj: object) -> None:
    module_name: str = obj.__module__
    assert not any(part.startswith("_") for part in module_name.split(".")), (name, module_name)
    module = importlib.import_module(module_name)
    assert getattr(module, obj.__qualname__) is obj  # type: ignore[attr-defined]


def test_coders_report_the_coders_module_and_the_rest_aiolmdb() -> None:
    assert aiolmdb.CompressedCoder.__module__ == "aiolmdb.coders"
    assert aiolmdb.TupleCoder.__module__ == "aiolmdb.coders"
    assert aiolmdb.train_zstd_dict.__module__ == "aiolmdb.coders"
    for cls in (aiolmdb.Entry, aiolmdb.Change, aiolmdb.Retention, aiolmdb.Metrics):
        assert cls.__module__ == "aiolmdb"


@pytest.mark.parametrize(
    "value",
    [
        aiolmdb.Change(7, "orders", b"k", "put", b"v"),
        aiolmdb.Entry(b"v", 3),
        aiolmdb.Retention(entries=10, age=datetime.timedelta(hours=1)),
        aiolmdb.JSONCoder().compressed(codec="zlib", threshold=8),
        aiolmdb.JSONCoder().compressed(9),
        aiolmdb.TupleCoder(),
        aiolmdb.UInt64Coder(),
    ],
    ids=lambda v: type(v).__name__,
)
def test_pickles_name_only_public_modules_and_round_trip(value: object) -> None:
    data = pickle.dumps(value)
    assert b"aiolmdb._" not in data
    assert pickle.loads(data) == value
