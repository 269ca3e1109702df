"""The command line on typed data (issue 24): ``--key-format``/``--value-format`` through the
library's coders, compressed values, the base64 fallback of what a format cannot show, and
``changes`` with formats and its start. Through ``main()`` as ``aiolmdb`` runs it (and
``python -m aiolmdb`` for ``changes --follow``)."""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import aiolmdb
from aiolmdb import JSONCoder, MsgpackCoder, StringCoder, TupleCoder, UInt64Coder
from aiolmdb._cli import commands as _cli
from aiolmdb._cli import formats as _formats
from aiolmdb._cli.commands import main
from aiolmdb._codecs.compress import zstd_module

ORDERS = {
    "o-1": {"customer": "ann", "items": [1, 2], "total": 12.5, "paid": True},
    "o-2": {"customer": "bob", "items": [], "total": 0, "paid": False, "note": None},
}


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """main(argv) in this process: (exit status, stdout, stderr)."""
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(err: str, *fragments: str) -> None:
    """One ``aiolmdb: error:`` line holding every fragment, and no traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("aiolmdb: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


def json_lines(out: str) -> list[Any]:
    return [json.loads(line) for line in out.splitlines()]


async def _fill(path: Path, changelog: bool = False) -> None:
    """What a service writes with its own coders: msgpack orders, uint64 and tuple keys,
    compressed JSON in every stored form."""
    async with aiolmdb.open(path, max_dbs=16, changelog=changelog) as env:
        orders = env.open_db("orders", key_coder=StringCoder(), value_coder=MsgpackCoder())
        for key, value in ORDERS.items():
            await orders.put(key, value)
        counts = env.open_db("counts", key_coder=UInt64Coder(), value_coder=JSONCoder())
        for n in (1, 256, 2**64 - 1):
            await counts.put(n, {"n": str(n)})
        index = env.open_db("index", key_coder=TupleCoder(), value_coder=StringCoder())
        await index.put(("user", 42, "order", 1), "o-1")
        await index.put(("user", 42, "order", 2), "o-2")
        await index.put(("user", 420), "other")
        await index.put(("ab\x00c",), "escaped")  # starts with ("ab",)'s bytes, not its element
        await index.put(("ab",), "plain")


@pytest.fixture(scope="module")
def typed_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("typed") / "env"
    asyncio.run(_fill(path))
    return path


# ---------------------------------------------------------------------------- value formats
def test_scan_msgpack_values(capsys: pytest.CaptureFixture[str], typed_env: Path) -> None:
    code, out, err = run(capsys, "scan", "--db", "orders", "--value-format", "msgpack", typed_env)
    assert (code, err) == (0, "")
    rows = [line.split("\t") for line in out.splitlines()]
    assert [(k, json.loads(v)) for k, v in rows] == list(ORDERS.items())
    code, out, err = run(
        capsys, "scan", "--db", "orders", "--value-format", "msgpack", "--json", typed_env
    )
    assert (code, err) == (0, "")
    assert json_lines(out) == [{"key": k, "value": v} for k, v in ORDERS.items()]


def test_get_and_put_msgpack_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "env"
    asyncio.run(_fill(path))
    value = '{"customer": "cat", "items": [3], "total": 1.5}'
    assert run(
        capsys, "put", "--db", "orders", "--value-format", "msgpack", path, "o-3", value
    ) == (
        0,
        "",
        "",
    )
    code, out, _ = run(capsys, "get", "--db", "orders", "--value-format", "msgpack", path, "o-3")
    assert (code, json.loads(out)) == (0, json.loads(value))

    async def read() -> Any:
        async with aiolmdb.open(path, max_dbs=16) as env:
            db = env.open_db("orders", key_coder=StringCoder(), value_coder=MsgpackCoder())
            return await db.get("o-3")

    assert asyncio.run(read()) == json.loads(value)  # what MsgpackCoder reads
    code, out, _ = run(
        capsys, "get", "--db", "orders", "--value-format", "msgpack", "--json", path, "o-1"
    )
    assert json_lines(out) == [{"key": "o-1", "value": ORDERS["o-1"]}]
    # JSON values are stored exactly as JSONCoder writes them, whatever the spacing given.
    assert run(capsys, "put", "--value-format", "json", path, "j", '{"a":[1,2]}')[0] == 0
    assert run(capsys, "get", path, "j")[1] == '{"a": [1, 2]}\n'


def test_key_hex_and_value_str_separately(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "env"
    assert run(capsys, "put", "--key-format", "hex", path, "00ff", "välue")[0] == 0
    code, out, err = run(capsys, "get", "--key-format", "hex", path, "00ff")
    assert (code, out, err) == (0, "välue\n", "")
    code, out, _ = run(
        capsys, "get", "--key-format", "hex", "--value-format", "base64", path, "00ff"
    )
    assert out == base64.b64encode("välue".encode()).decode() + "\n"
    code, out, _ = run(capsys, "scan", "--key-format", "hex", path)
    assert out == "00ff\tvälue\n"
    code, out, _ = run(capsys, "scan", "--key-format", "base64", "--json", path)
    assert json_lines(out) == [{"key": "AP8=", "value": "välue"}]
    assert run(capsys, "delete", "--key-format", "hex", path, "00ff") == (0, "", "")
    assert run(capsys, "get", "--key-format", "hex", path, "00ff")[0] == 1


def test_deprecated_hex_flag_gives_way_to_an_explicit_format(
    capsys: pytest.CaptureFixture[str], typed_env: Path
) -> None:
    code, out, _ = run(
        capsys, "get", "--db", "orders", "--hex", "--value-format", "msgpack", typed_env, "6f2d31"
    )
    assert (code, json.loads(out)) == (0, ORDERS["o-1"])
    code, out, _ = run(capsys, "scan", "--db", "orders", "--hex", "--limit", "1", typed_env)
    key, value = out.split()
    assert (bytes.fromhex(key), bytes.fromhex(value)) == (
        b"o-1",
        MsgpackCoder().serialize(ORDERS["o-1"]),
    )


def test_uint64_keys(capsys: pytest.CaptureFixture[str], typed_env: Path) -> None:
    code, out, err = run(
        capsys,
        "scan",
        "--db",
        "counts",
        "--key-format",
        "uint64",
        "--value-format",
        "json",
        typed_env,
    )
    assert (code, err) == (0, "")
    big = 2**64 - 1
    assert out.splitlines() == [
        '1\t{"n": "1"}',
        '256\t{"n": "256"}',
        f'{big}\t{{"n": "{big}"}}',
    ]
    code, out, _ = run(capsys, "get", "--db", "counts", "--key-format", "uint64", typed_env, "256")
    assert (code, out) == (0, '{"n": "256"}\n')
    code, out, _ = run(
        capsys,
        "scan",
        "--db",
        "counts",
        "--key-format",
        "uint64",
        "--start",
        "2",
        "--json",
        typed_env,
    )
    assert [line["key"] for line in json_lines(out)] == [256, big]  # numbers in JSON
    code, _, err = run(capsys, "get", "--db", "counts", "--key-format", "uint64", typed_env, "-1")
    assert code == 2
    assert_error(err, "key is not an unsigned integer: '-1'")
    code, _, err = run(
        capsys, "get", "--db", "counts", "--key-format", "uint64", typed_env, str(2**64)
    )
    assert code == 2
    assert_error(err, "key is not valid uint64", "UInt64Coder cannot encode", "out of range")


def test_uint64_keys_written_by_the_cli_read_by_the_library(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "env"
    for n in ("7", "1_000_000"):
        assert run(capsys, "put", "--db", "n", "--key-format", "uint64", path, n, "x")[0] == 0

    async def read() -> list[int]:
        async with aiolmdb.open(path, max_dbs=4) as env:
            db = env.open_db("n", key_coder=UInt64Coder())
            return [k async for k, _ in db.items()]

    assert asyncio.run(read()) == [7, 1_000_000]


def test_tuple_keys_get_scan_and_prefix(
    capsys: pytest.CaptureFixture[str], typed_env: Path
) -> None:
    tuples = ("--db", "index", "--key-format", "tuple")
    code, out, _ = run(capsys, "get", *tuples, typed_env, "('user', 42, 'order', 2)")
    assert (code, out) == (0, "o-2\n")
    code, out, _ = run(capsys, "scan", *tuples, "--prefix", "('user', 42)", typed_env)
    assert out.splitlines() == ["('user', 42, 'order', 1)\to-1", "('user', 42, 'order', 2)\to-2"]
    # A tuple prefix selects whole elements: ("ab\x00c",) does not start with the element "ab".
    code, out, _ = run(capsys, "scan", *tuples, "--prefix", "('ab',)", typed_env)
    assert out == "('ab',)\tplain\n"
    code, out, _ = run(capsys, "scan", *tuples, "--prefix", "('user',)", "--json", typed_env)
    assert [line["key"] for line in json_lines(out)] == [
        ["user", 42, "order", 1],
        ["user", 42, "order", 2],
        ["user", 420],
    ]
    code, out, _ = run(
        capsys, "scan", *tuples, "--prefix", "('user',)", "--start", "('user', 100)", typed_env
    )
    assert out == "('user', 420)\tother\n"
    code, out, _ = run(
        capsys, "scan", *tuples, "--prefix", "('user',)", "--stop", "('a',)", typed_env
    )
    assert (code, out) == (0, "")  # the prefix outside [START, STOP): nothing


# ---------------------------------------------------------------------------- compressed values
def _compressed_env(path: Path, **options: Any) -> dict[str, Any]:
    values = {f"k{i}": {"i": i, "text": "lorem ipsum " * (i * 20)} for i in range(4)}

    async def fill() -> None:
        async with aiolmdb.open(path, max_dbs=4) as env:
            coder = JSONCoder().compressed(**options)
            db = env.open_db("c", key_coder=StringCoder(), value_coder=coder)
            for key, value in values.items():
                await db.put(key, value)

    asyncio.run(fill())
    return values


@pytest.mark.parametrize(
    "options",
    [
        {},  # ZlibCoder: plain zlib streams
        {"codec": "zlib", "threshold": 100},  # short ones stored as 0x00 + JSON
        {"codec": "zstd", "threshold": 50},
        {"codec": "lz4"},
    ],
    ids=["zlib", "zlib-threshold", "zstd", "lz4"],
)
def test_compressed_json_values(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, options: dict[str, Any]
) -> None:
    path = tmp_path / "env"
    values = _compressed_env(path, **options)
    fmt = ("--db", "c", "--value-format", "json", "--compressed")
    code, out, err = run(capsys, "scan", *fmt, "--json", path)
    assert (code, err) == (0, "")
    assert json_lines(out) == [{"key": k, "value": v} for k, v in values.items()]
    code, out, _ = run(capsys, "get", *fmt, path, "k2")
    assert json.loads(out) == values["k2"]
    # Without --compressed the stored bytes are no JSON: shown as base64, never an error.
    code, out, err = run(capsys, "get", "--db", "c", "--value-format", "json", path, "k3")
    assert code == 0
    assert out.startswith(_formats.TEXT_MARK)
    assert "is not json" in err


def test_put_compressed_is_read_by_the_library(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "env"
    value = {"text": "x" * 1000}
    for codec in ("zlib", "zstd", "lz4"):
        argv = ["put", "--db", "c", "--value-format", "json", "--compressed", "--codec", codec]
        assert run(capsys, *argv, path, codec, json.dumps(value))[0] == 0

    async def read() -> dict[str, Any]:
        async with aiolmdb.open(path, max_dbs=4) as env:
            db = env.open_db("c", key_coder=StringCoder(), value_coder=JSONCoder().compressed())
            raw = env.open_db("c")
            assert [v[0] async for v in raw.values()] == [
                0x04,
                0x78,
                0x28,
            ]  # LZ4, zlib, zstd frames
            return {k: v async for k, v in db.items()}

    assert asyncio.run(read()) == {"lz4": value, "zlib": value, "zstd": value}


def test_zstd_dictionary_frames(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "env"
    samples = [
        json.dumps({"user": i, "name": f"n{i}", "tags": ["a", i]}).encode() for i in range(400)
    ]
    trained = zstd_module("test").train_dict(samples, 1024)
    values = _compressed_env(path, codec="zstd", zstd_dict=trained)
    dict_file = tmp_path / "dict"
    dict_file.write_bytes(trained.dict_content)
    code, out, err = run(
        capsys, "scan", "--db", "c", "--value-format", "json", "--zstd-dict", dict_file, path
    )
    assert (code, err) == (0, "")
    assert [json.loads(line.split("\t")[1]) for line in out.splitlines()] == list(values.values())
    # Without the dictionary: base64, and the warning names the dictionary and the option.
    code, out, err = run(
        capsys, "scan", "--db", "c", "--value-format", "json", "--compressed", path
    )
    assert code == 0
    assert all(line.split("\t")[1].startswith(_formats.TEXT_MARK) for line in out.splitlines()[1:])
    assert f"zstd dictionary {trained.dict_id}" in err
    assert "--zstd-dict FILE" in err
    code, _, err = run(capsys, "scan", "--db", "c", "--zstd-dict", tmp_path / "nope", path)
    assert code == 2
    assert_error(err, "cannot read the zstd dictionary", "nope")
    code, _, err = run(
        capsys, "scan", "--db", "c", "--zstd-dict", dict_file, "--codec", "lz4", path
    )
    assert code == 2
    assert_error(err, "--zstd-dict needs --codec zstd")


def test_decompression_is_bounded(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "env"
    _compressed_env(path)
    fmt = ("--db", "c", "--value-format", "json", "--compressed")
    code, out, err = run(capsys, "get", *fmt, "--max-size", "100", path, "k3")
    assert code == 0
    assert out.startswith(_formats.TEXT_MARK)
    assert "max_size=100" in err
    code, out, err = run(capsys, "get", *fmt, "--max-size", "0", path, "k3")  # 0: no bound
    assert (code, err) == (0, "")
    assert json.loads(out)["i"] == 3


# ---------------------------------------------------------------------------- the fallback
def test_binary_values_in_json_lines_are_marked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "env"
    assert run(capsys, "put", "--value-format", "hex", path, "bin", "00ff10")[0] == 0
    assert run(capsys, "put", "--key-format", "hex", path, "ff", "text")[0] == 0
    assert run(capsys, "put", path, "json", '{"a": 1}')[0] == 0
    code, out, err = run(capsys, "scan", "--json", "--value-format", "json", path)
    assert code == 0
    assert json_lines(out) == [
        {"key": "bin", "value_b64": "AP8Q"},
        {"key": "json", "value": {"a": 1}},
        {"key_b64": "/w==", "value_b64": base64.b64encode(b"text").decode()},
    ]
    assert err.count("\n") == 1
    assert err.startswith("aiolmdb: warning: 3 keys or values shown as base64")
    assert "the first, value b'\\x00\\xff\\x10' is not json" in err


def test_msgpack_bytes_inside_a_value(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "env"

    async def fill() -> None:
        async with aiolmdb.open(path) as env:
            db = env.get_default_database()
            await db.put(b"k", MsgpackCoder().serialize({"raw": b"\xff\x00", 1: (2, 3)}))

    asyncio.run(fill())
    _, out, _ = run(capsys, "scan", "--json", "--value-format", "msgpack", path)
    assert json_lines(out) == [{"key": "k", "value": {"raw": {"$base64": "/wA="}, "1": [2, 3]}}]


def test_jsonable() -> None:
    import datetime
    import uuid

    u = uuid.UUID(int=5)
    when = datetime.datetime(2026, 12, 7, 5, 0)
    assert _formats.jsonable({(1, 2): {3}, "f": float("nan"), "u": u, "t": when}) == {
        "[1, 2]": [3],
        "f": "nan",
        "u": str(u),
        "t": "2026-12-07T05:00:00",
    }


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("option", ["--key-format", "--value-format"])
def test_unknown_format_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], typed_env: Path, option: str
) -> None:
    code, out, err = run(capsys, "get", option, "yaml", typed_env, "k")
    assert (code, out) == (2, "")
    assert f"argument {option}: unknown format 'yaml': use one of str, hex, base64" in err
    assert "Traceback" not in err


def test_bad_arguments_name_the_format(capsys: pytest.CaptureFixture[str], typed_env: Path) -> None:
    cases = [
        (("--value-format", "json", "k", "{nope"), "value is not valid JSON: '{nope'"),
        (("--key-format", "tuple", "user", "v"), "key is not a Python tuple literal"),
        (("--value-format", "msgpack", "k", "{1}"), "value is not valid JSON"),
        (("--value-format", "bytes", "k", "v"), "--value-format bytes is not a format"),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, "put", typed_env, *argv)
        assert (code, out) == (2, ""), argv
        assert_error(err, message)
    code, _, err = run(capsys, "delete", "--value-format", "json", typed_env, "k")
    assert code == 2  # delete takes no value: --value-format is unknown to it
    assert "unrecognized arguments: --value-format" in err


def test_msgpack_without_msgspec_names_the_extra(
    capsys: pytest.CaptureFixture[str], typed_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "msgspec", None)
    code, out, err = run(capsys, "scan", "--db", "orders", "--value-format", "msgpack", typed_env)
    assert (code, out) == (2, "")
    assert_error(err, "pip install 'aiolmdb[msgpack]'")


def test_zstd_without_its_package_names_the_extra(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sys.version_info >= (3, 14):
        pytest.skip("zstd is in the standard library")
    path = tmp_path / "env"
    _compressed_env(path, codec="zstd")
    monkeypatch.setitem(sys.modules, "backports.zstd", None)
    code, out, err = run(capsys, "scan", "--db", "c", "--compressed", path)
    assert (code, out) == (2, "")
    assert_error(err, "pip install 'aiolmdb[zstd]'")


# ---------------------------------------------------------------------------- changes
def test_changes_with_formats(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "env"
    asyncio.run(_fill(path, changelog=True))
    code, out, err = run(
        capsys,
        "changes",
        "--db",
        "index",
        "--key-format",
        "tuple",
        "--prefix",
        "('user', 42)",
        path,
    )
    assert (code, err) == (0, "")
    assert [(c["key"], c["value"]) for c in json_lines(out)] == [
        (["user", 42, "order", 1], "o-1"),
        (["user", 42, "order", 2], "o-2"),
    ]
    code, out, err = run(capsys, "changes", "--db", "orders", "--value-format", "msgpack", path)
    assert [(c["kind"], c["key"], c["value"]) for c in json_lines(out)] == [
        ("put", k, v) for k, v in ORDERS.items()
    ]
    # Every database at once: what a format cannot show is marked, per change.
    code, out, err = run(capsys, "changes", "--value-format", "json", "--key-format", "str", path)
    assert code == 0
    lines = json_lines(out)
    assert {line["db"] for line in lines} == {"orders", "counts", "index"}
    counts = [line for line in lines if line["db"] == "counts"]
    stored = [
        base64.b64decode(line["key_b64"]) if "key_b64" in line else line["key"].encode()
        for line in counts
    ]
    assert stored == [UInt64Coder().serialize(n) for n in (1, 256, 2**64 - 1)]
    assert "key" not in counts[2]  # 0xff... is no UTF-8: key_b64 instead
    assert [line["value"] for line in counts] == [{"n": "1"}, {"n": "256"}, {"n": str(2**64 - 1)}]
    assert "shown as base64" in err


def test_changes_of_a_missing_database(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "env"
    asyncio.run(_fill(path, changelog=True))
    code, out, err = run(capsys, "changes", "--db", "nosuchdb", path)
    assert (code, out) == (2, "")
    assert_error(err, "no database 'nosuchdb'")


def test_changes_of_a_versioned_database_carry_the_version(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "env"

    async def fill() -> int:
        async with aiolmdb.open(path, max_dbs=4, changelog=True) as env:
            db = env.open_db("v", versioned=True, value_coder=JSONCoder())
            await db.put(b"a", {"x": 1})
            entry = await db.get_entry(b"a")
            assert entry is not None
            await db.delete(b"a")
            return entry.version

    version = asyncio.run(fill())
    _, out, _ = run(capsys, "changes", "--value-format", "json", path)
    assert json_lines(out) == [
        {"seq": 1, "db": "v", "kind": "put", "key": "a", "version": version, "value": {"x": 1}},
        {"seq": 2, "db": "v", "kind": "delete", "key": "a", "value": None},
    ]


def test_changes_follow_starts_from_now(tmp_path: Path) -> None:
    """``changes --follow`` without ``--since`` is env.changes(): the log already written is not
    replayed, the first change printed is one committed after it started."""
    path = tmp_path / "env"
    asyncio.run(_fill(path, changelog=True))
    written = len(ORDERS) + 3 + 5
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiolmdb",
            "changes",
            "--follow",
            "--value-format",
            "json",
            str(path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: queue.Queue[bytes] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
    reader.start()
    try:

        async def write_until_seen() -> bytes:
            async with aiolmdb.open(path, changelog=True, max_dbs=16) as env:
                db = env.open_db("new", value_coder=JSONCoder())
                for i in range(200):  # until the follower has started and prints one
                    await db.put(b"n%d" % i, i)
                    try:
                        return lines.get(timeout=0.25)
                    except queue.Empty:
                        continue
            raise AssertionError("the follower printed nothing")

        first = json.loads(asyncio.run(write_until_seen()))
        assert first["db"] == "new"
        assert first["seq"] > written
        assert first["key"] == f"n{first['value']}"
    finally:
        proc.kill()
        proc.communicate(timeout=60)


def test_codec_implies_compressed_and_bytes_is_the_old_default(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "env"
    assert run(capsys, "put", "--codec", "lz4", path, "k", "x" * 100)[0] == 0
    assert run(capsys, "get", "--hex", path, "6b")[1].startswith("04224d18")  # an LZ4 frame
    assert run(capsys, "get", "--compressed", path, "k")[1] == "x" * 100 + "\n"
    assert run(capsys, "get", "--key-format", "bytes", "--compressed", path, "k")[0] == 0


class LaterChange(NamedTuple):
    """A change as a later aiolmdb may make it: a field more."""

    seq: int
    db: str | None
    key: bytes | None
    kind: str
    value: bytes | None
    txn: int


def test_changes_copy_fields_they_do_not_know() -> None:
    formats = _cli._formats(_cli.build_parser().parse_args(["changes", "p"]))
    layouts = _cli._StoredLayouts(None)  # type: ignore[arg-type]  # the main database only
    shown = formats.shown(escape=False)
    record = asyncio.run(
        _cli._change_record(LaterChange(9, None, b"k", "put", b"\xff", 4), shown, layouts)
    )
    assert record == {
        "seq": 9,
        "db": None,
        "kind": "put",
        "key": "k",
        "value_b64": "/w==",
        "txn": 4,
    }
