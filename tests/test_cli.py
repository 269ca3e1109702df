"""The ``aiolmdb`` command line: every subcommand, its errors, and dump files moving both ways
between aiolmdb and LMDB's own ``mdb_dump``/``mdb_load``.

Most tests call ``main([...])`` in-process (``asyncio.run`` inside, so they are plain sync
tests); two run ``python -m aiolmdb`` to prove the module entry point.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import aiolmdb
from aiolmdb import Change
from aiolmdb.__main__ import main as module_main
from aiolmdb._cli import commands as _cli
from aiolmdb._cli import dumpfmt as _dumpfmt
from aiolmdb._cli import formats as _formats
from aiolmdb._cli.commands import main
from aiolmdb._store import versions as _versions

Contents = dict[bytes | None, list[tuple[bytes, bytes]]]

HAVE_C_TOOLS = shutil.which("mdb_dump") is not None and shutil.which("mdb_load") is not None
needs_c_tools = pytest.mark.skipif(
    not HAVE_C_TOOLS, reason="mdb_dump/mdb_load (Debian package lmdb-utils) are not installed"
)
C_ENV = {**os.environ, "LC_ALL": "C"}  # mdb_dump -p: isprint() in the C locale

TEXT_MAIN = {
    b"alpha": b"1",
    b"beta": b"two\tcolumns\nand lines \\ backslash",
    "ключ".encode(): "значение".encode(),
    b"user:1": b"ann",
    b"user:2": b"bob",
    b"user:3": b"cat",
}
DUPS = [(b"k", b"1"), (b"k", b"2"), (b"k", b"3"), (b"m", b"x")]


def every_byte_pairs() -> list[tuple[bytes, bytes]]:
    """Binary keys and values that hold every byte value (0-255), NUL included."""
    return [(bytes([i, 255 - i, i]), bytes(range(i, 256)) + bytes(range(i))) for i in range(256)]


BINARY_DUPS = [(b"\x00\xff", bytes([i]) * 3) for i in range(256)] + [(b"\xff", b"\n")]


def make_env(path: Path, main: list[tuple[bytes, bytes]], named: dict[bytes, Any]) -> Path:
    """An environment made with plain py-lmdb. ``named`` maps names to (flags, pairs)."""
    env = lmdb.open(str(path), max_dbs=8, map_size=32 * 1024 * 1024)
    try:
        with env.begin(write=True) as txn:
            for key, value in main:
                txn.put(key, value)
            for name, (flags, pairs) in named.items():
                db = env.open_db(name, txn=txn, **flags)
                for key, value in pairs:
                    txn.put(key, value, db=db)
    finally:
        env.close()
    return path


def contents(path: Path) -> Contents:
    """Every database of an environment: {None: main pairs (without the records of named
    databases), name: pairs}."""
    env = lmdb.open(str(path), readonly=True, max_dbs=64, lock=False, subdir=path.is_dir())
    try:
        result: Contents = {}
        with env.begin() as txn:
            main: list[tuple[bytes, bytes]] = []
            for key, value in txn.cursor():
                try:
                    db = env.open_db(key, txn=txn, create=False)
                except lmdb.Error:
                    main.append((key, value))
                    continue
                result[key] = list(txn.cursor(db=db))
            result[None] = main
        return result
    finally:
        env.close()


@pytest.fixture
def text_env(tmp_path: Path) -> Path:
    """Main database of UTF-8 text (tabs, newlines, backslashes included), a dupsort database
    ``dups`` and a plain database ``plain``."""
    return make_env(
        tmp_path / "text",
        sorted(TEXT_MAIN.items()),
        {b"dups": ({"dupsort": True}, DUPS), b"plain": ({}, [(b"x", b"y")])},
    )


def binary_data(backslash: bool = True) -> tuple[list[tuple[bytes, bytes]], dict[bytes, Any]]:
    """(main pairs, named databases) holding every byte value; without 0x5c if not
    ``backslash``."""

    def strip(pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        if backslash:
            return pairs
        return [(k.replace(b"\\", b"/"), v.replace(b"\\", b"/")) for k, v in pairs]

    main = strip(every_byte_pairs())
    named = {
        b"dups": ({"dupsort": True}, strip(BINARY_DUPS)),
        b"bin": ({}, strip([(v[:300], k) for k, v in every_byte_pairs()])),
    }
    return main, named


@pytest.fixture
def binary_env(tmp_path: Path) -> Path:
    """Every byte value in keys and values: in the main database, a dupsort database ``dups``
    and a plain database ``bin``."""
    return make_env(tmp_path / "binary", *binary_data())


@pytest.fixture
def flat_env(tmp_path: Path) -> Path:
    """Only a main database (binary), no named databases."""
    return make_env(tmp_path / "flat", every_byte_pairs(), {})


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


@pytest.fixture
def stdin_bytes(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Call with bytes to make them main()'s stdin."""

    def feed(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))

    return feed


# ---------------------------------------------------------------------------- entry points
@pytest.mark.parametrize(
    "command", ["stat", "get", "put", "delete", "scan", "dump", "load", "copy", "changes", "shell"]
)
def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: aiolmdb {command}")


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in (
        "stat",
        "get",
        "put",
        "delete",
        "scan",
        "dump",
        "load",
        "copy",
        "bench",
        "shell",
    ):
        assert command in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert aiolmdb.__version__ in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys)
    assert code == 2
    assert "a command is required" in err
    code, _, err = run(capsys, "get", tmp_path)
    assert code == 2
    assert "required" in err
    code, _, err = run(capsys, "frobnicate")
    assert code == 2
    code, _, err = run(capsys, "scan", tmp_path, "--limit", "-3")
    assert code == 2
    code, _, err = run(capsys, "get", "--hex", "--base64", tmp_path, "00")
    assert code == 2


def test_module_main_is_the_cli() -> None:
    assert module_main is main


def test_python_dash_m(text_env: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aiolmdb", "stat", "--json", str(text_env)],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [db["name"] for db in report["databases"]] == [None, "dups", "plain"]


def test_python_dash_m_missing_key(text_env: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aiolmdb", "get", str(text_env), "nope"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert proc.stderr.decode().strip() == "aiolmdb: key not found: nope"


# ---------------------------------------------------------------------------- stat
def test_stat_table(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    code, out, err = run(capsys, "stat", text_env)
    assert code == 0, err
    assert "map size" in out
    assert "map used" in out
    assert "readers" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["(main)"][1] == str(len(TEXT_MAIN) + 2)  # + the two database records
    assert rows["dups"][1] == str(len(DUPS))
    assert rows["dups"][-1] == "dupsort"
    assert rows["plain"][1] == "1"


def test_stat_json(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    code, out, _ = run(capsys, "stat", "--json", text_env)
    assert code == 0
    report = json.loads(out)
    env = lmdb.open(str(text_env), readonly=True, lock=False, map_size=0)
    try:
        info, psize = env.info(), env.stat()["psize"]
    finally:
        env.close()
    assert report["map_size"] == info["map_size"]
    assert report["map_used"] == (info["last_pgno"] + 1) * psize
    assert 0 < report["map_used"] <= report["map_size"]
    assert report["page_size"] == psize
    assert report["max_readers"] >= report["num_readers"]
    by_name = {db["name"]: db for db in report["databases"]}
    assert set(by_name) == {None, "dups", "plain"}
    assert by_name["dups"]["entries"] == len(DUPS)
    assert by_name["dups"]["flags"] == ["dupsort"]
    assert by_name["plain"]["flags"] == []
    for db in report["databases"]:
        assert {"depth", "branch_pages", "leaf_pages", "overflow_pages"} <= set(db)


def test_stat_json_lists_live_readers(text_env: Path) -> None:
    """Run against an environment another process is reading: the read transactions that
    process holds are listed with its pid and the transaction they read (oldest first)."""
    env = lmdb.open(str(text_env), max_dbs=8)
    try:
        old = env.begin()
        with env.begin(write=True) as txn:
            txn.put(b"new", b"1")
        new = env.begin()
        proc = subprocess.run(
            [sys.executable, "-m", "aiolmdb", "stat", "--json", str(text_env)],
            capture_output=True,
            check=False,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        mine = [r for r in report["readers"] if r["pid"] == os.getpid()]
        assert [r["txnid"] for r in mine] == [old.id(), new.id()]
        assert new.id() == old.id() + 1 == report["last_txnid"]
        old.abort()
        new.abort()
    finally:
        env.close()
    code_report = json.loads(
        subprocess.run(
            [sys.executable, "-m", "aiolmdb", "stat", "--json", str(text_env)],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    )
    assert code_report["readers"] == []  # nobody reads it now


def test_stat_one_database(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    code, out, _ = run(capsys, "stat", "--json", "--db", "dups", text_env)
    assert code == 0
    assert [db["name"] for db in json.loads(out)["databases"]] == ["dups"]
    code, _, err = run(capsys, "stat", "--db", "nope", text_env)
    assert code == 2
    assert_error(err, "no database 'nope'")


def test_stat_without_named_databases(capsys: pytest.CaptureFixture[str], flat_env: Path) -> None:
    code, out, _ = run(capsys, "stat", "--json", flat_env)
    assert code == 0
    assert [db["name"] for db in json.loads(out)["databases"]] == [None]


def test_missing_environment_is_not_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing"
    commands: list[list[str | Path]] = [
        ["stat", missing],
        ["get", missing, "k"],
        ["delete", missing, "k"],
        ["scan", missing],
        ["dump", missing],
        ["copy", missing, tmp_path / "dest"],
    ]
    for argv in commands:
        code, out, err = run(capsys, *argv)
        assert code == 2, argv
        assert out == ""
        assert_error(err, str(missing), "does not exist")
        assert not missing.exists()
    assert not (tmp_path / "dest").exists()


def test_directory_without_environment(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "stat", tmp_path)
    assert code == 2
    assert_error(err, "not an LMDB environment")
    assert list(tmp_path.iterdir()) == []


def test_single_file_environment(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "single.mdb"
    env = lmdb.open(str(path), subdir=False)
    with env.begin(write=True) as txn:
        txn.put(b"k", b"v")
    env.close()
    assert run(capsys, "get", path, "k")[:2] == (0, "v\n")
    assert run(capsys, "put", path, "k2", "v2")[0] == 0
    assert run(capsys, "scan", path)[1] == "k\tv\nk2\tv2\n"
    copy = tmp_path / "copy.mdb"
    assert run(capsys, "copy", path, copy)[0] == 0
    assert contents(copy) == {None: [(b"k", b"v"), (b"k2", b"v2")]}
    code, _, err = run(capsys, "copy", path, copy)
    assert code == 2
    assert_error(err, "exists")


# ---------------------------------------------------------------------------- get/put/delete
def test_get(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    assert run(capsys, "get", text_env, "alpha") == (0, "1\n", "")
    # Text mode prints the value as it is: get prints one value, nothing to separate.
    assert run(capsys, "get", text_env, "beta")[1] == TEXT_MAIN[b"beta"].decode() + "\n"
    assert run(capsys, "get", text_env, "ключ")[1] == "значение\n"
    assert run(capsys, "get", "--hex", text_env, b"alpha".hex())[1] == "31\n"
    key64 = base64.b64encode(b"alpha").decode()
    assert (
        run(capsys, "get", "--base64", text_env, key64)[1] == base64.b64encode(b"1").decode() + "\n"
    )


def test_get_dupsort_prints_every_value(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    assert run(capsys, "get", "--db", "dups", text_env, "k") == (0, "1\n2\n3\n", "")
    assert run(capsys, "get", "--db", "plain", text_env, "x") == (0, "y\n", "")


def test_get_missing_key(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    assert run(capsys, "get", text_env, "nope") == (1, "", "aiolmdb: key not found: nope\n")
    assert run(capsys, "get", "--db", "dups", text_env, "zz")[0] == 1


def test_get_missing_database(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    code, out, err = run(capsys, "get", "--db", "nope", text_env, "k")
    assert (code, out) == (2, "")
    assert_error(err, "no database 'nope'")


def test_empty_database_name(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    code, _, err = run(capsys, "put", "--db", "", text_env, "k", "v")
    assert code == 2
    assert_error(err, "database name cannot be empty")


def test_db_naming_a_plain_key(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    code, _, err = run(capsys, "get", "--db", "alpha", text_env, "k")
    assert code == 2
    assert_error(err, "'alpha' is a key of the main database")


def test_bad_key_encodings(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    code, _, err = run(capsys, "get", "--hex", text_env, "zz")
    assert code == 2
    assert_error(err, "key is not valid hex", "'zz'")
    code, _, err = run(capsys, "get", "--base64", text_env, "!!!")
    assert code == 2
    assert_error(err, "key is not valid base64")
    code, _, err = run(capsys, "put", "--hex", text_env, "00", "0")
    assert code == 2
    assert_error(err, "value is not valid hex")
    code, _, err = run(capsys, "get", "--hex", text_env, "")
    assert code == 2
    assert_error(err, "empty key")


def test_non_utf8_output_falls_back_to_marked_base64(
    capsys: pytest.CaptureFixture[str], flat_env: Path
) -> None:
    key, value = every_byte_pairs()[65]
    code, out, err = run(capsys, "get", "--hex", flat_env, key.hex())
    assert (code, out) == (0, value.hex() + "\n")
    code, out, err = run(capsys, "get", "--hex", flat_env, key.hex(), "--base64")
    assert code == 2
    code, out, err = run(capsys, "put", "--hex", flat_env, "41", "ff")
    assert code == 0
    code, out, err = run(capsys, "get", flat_env, "A")
    assert (code, out) == (0, "\\base64:/w==\n")
    assert err.startswith("aiolmdb: warning: 1 key or value shown as base64")
    assert "value b'\\xff' is not str" in err


def test_put(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    assert run(capsys, "put", text_env, "new", "välue\tx") == (0, "", "")
    assert run(capsys, "get", text_env, "new")[1] == "välue\tx\n"
    assert run(capsys, "put", "--hex", text_env, "00ff", "0102")[0] == 0
    assert run(capsys, "put", "--base64", text_env, "AQ==", "Ag==")[0] == 0
    main_db = dict(contents(text_env)[None])
    assert main_db[b"\x00\xff"] == b"\x01\x02"
    assert main_db[b"\x01"] == b"\x02"
    assert run(capsys, "put", "--db", "dups", text_env, "k", "0")[0] == 0
    assert run(capsys, "get", "--db", "dups", text_env, "k")[1] == "0\n1\n2\n3\n"


def test_put_creates_environment_and_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "fresh"
    assert run(capsys, "put", "--db", "things", path, "a", "b") == (0, "", "")
    assert run(capsys, "put", path, "c", "d") == (0, "", "")
    assert contents(path) == {None: [(b"c", b"d")], b"things": [(b"a", b"b")]}


def test_delete(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    assert run(capsys, "delete", text_env, "alpha") == (0, "", "")
    assert run(capsys, "get", text_env, "alpha")[0] == 1
    assert run(capsys, "delete", text_env, "alpha") == (1, "", "aiolmdb: key not found: alpha\n")
    assert run(capsys, "delete", "--db", "dups", text_env, "k")[0] == 0
    assert contents(text_env)[b"dups"] == [(b"m", b"x")]
    code, _, err = run(capsys, "delete", "--db", "nope", text_env, "k")
    assert code == 2
    assert_error(err, "no database 'nope'")
    assert b"nope" not in contents(text_env)


# ---------------------------------------------------------------------------- scan
def test_escape_text() -> None:
    assert _formats.escape_text("a\tb\nc\\d\re") == "a\\tb\\nc\\\\d\\re"
    assert _formats.escape_text("plain") == "plain"


def test_scan_text_escapes(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    code, out, err = run(capsys, "scan", "--db", "plain", text_env)
    assert (code, out, err) == (0, "x\ty\n", "")
    code, out, _ = run(capsys, "scan", "--prefix", "beta", text_env)
    assert out == "beta\ttwo\\tcolumns\\nand lines \\\\ backslash\n"
    assert len(out.splitlines()) == 1


def test_scan_ranges(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    def keys(*options: str) -> list[str]:
        code, out, err = run(capsys, "scan", text_env, *options)
        assert code == 0, err
        return [line.split("\t")[0] for line in out.splitlines()]

    assert keys("--prefix", "user:") == ["user:1", "user:2", "user:3"]
    assert keys("--prefix", "user:", "--reverse") == ["user:3", "user:2", "user:1"]
    assert keys("--prefix", "user:", "--limit", "2") == ["user:1", "user:2"]
    assert keys("--start", "beta", "--stop", "user:2") == ["beta", "dups", "plain", "user:1"]
    assert keys("--start", "user:2", "--reverse", "--limit", "1") == ["ключ"]
    assert keys("--prefix", "nothing") == []
    assert keys("--limit", "0") == []


def test_scan_dupsort_and_encodings(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    _, out, _ = run(capsys, "scan", "--db", "dups", text_env)
    assert out.splitlines() == ["k\t1", "k\t2", "k\t3", "m\tx"]
    _, out, _ = run(capsys, "scan", "--db", "dups", "--hex", "--prefix", "6b", text_env)
    assert out.splitlines() == ["6b\t31", "6b\t32", "6b\t33"]
    _, out, _ = run(capsys, "scan", "--db", "dups", "--base64", "--start", "bQ==", text_env)
    assert out.splitlines() == ["bQ==\teA=="]


def test_scan_binary(capsys: pytest.CaptureFixture[str], flat_env: Path) -> None:
    code, out, _ = run(capsys, "scan", "--hex", flat_env)
    assert code == 0
    assert [tuple(bytes.fromhex(f) for f in line.split("\t")) for line in out.splitlines()] == (
        sorted(every_byte_pairs())
    )
    code, out, err = run(capsys, "scan", flat_env)  # str: the fallback, marked, never an error
    assert code == 0
    lines = [line.split("\t") for line in out.splitlines()]
    assert len(lines) == 256
    for (key, value), (shown_key, shown_value) in zip(
        sorted(every_byte_pairs()), lines, strict=True
    ):
        for data, shown in ((key, shown_key), (value, shown_value)):
            if shown.startswith(_formats.TEXT_MARK):
                assert base64.b64decode(shown[len(_formats.TEXT_MARK) :]) == data
            else:
                assert shown.encode() == data.replace(b"\\", b"\\\\")  # the escaped UTF-8 ones
    assert re.fullmatch(r"aiolmdb: warning: \d+ keys or values shown as base64 .*\n", err)
    code, _, err = run(capsys, "scan", "--hex", "--prefix", "xyz", flat_env)
    assert code == 2
    assert_error(err, "--prefix is not valid hex")


def test_scan_to_text_only_stdout(
    capsys: pytest.CaptureFixture[str], text_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    assert main(["scan", "--db", "dups", str(text_env), "--limit", "1"]) == 0
    assert stream.getvalue() == "k\t1\n"
    assert main(["dump", str(text_env)]) == 2  # dump needs bytes: -o FILE
    assert "use -o FILE" in capsys.readouterr().err


# ---------------------------------------------------------------------------- dump/load
def test_dump_main_skips_database_records(
    capsys: pytest.CaptureFixture[str], text_env: Path
) -> None:
    code, out, err = run(capsys, "dump", text_env)
    assert code == 0
    assert "warning: skipping the records of 2 named database(s)" in err
    [(header, pairs)] = _dumpfmt.parse_dump(out.encode())
    assert header.database is None
    assert dict(pairs) == TEXT_MAIN


def test_dump_all_blocks(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    code, out, err = run(capsys, "dump", "--all", text_env)
    assert (code, err) == (0, "")
    blocks = _dumpfmt.parse_dump(out.encode())
    assert [h.database for h, _ in blocks] == [None, b"dups", b"plain"]
    assert [h.flags for h, _ in blocks] == [{}, {"dupsort": True}, {}]
    assert blocks[1][1] == DUPS
    assert out.startswith("VERSION=3\nformat=bytevalue\ntype=btree\nmapsize=")
    assert out.count("HEADER=END\n") == 3
    assert out.count("DATA=END\n") == 3
    code, _, err = run(capsys, "dump", "--all", "--db", "dups", text_env)
    assert code == 2
    assert_error(err, "--all and --db")


def test_dump_missing_database(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    out_file = text_env.parent / "out.txt"
    code, out, err = run(capsys, "dump", "--db", "nope", "-o", out_file, text_env)
    assert (code, out) == (2, "")
    assert_error(err, "no database 'nope'")
    assert not out_file.exists()


@pytest.mark.parametrize("printable", [False, True], ids=["bytevalue", "print"])
def test_dump_load_round_trip(
    capsys: pytest.CaptureFixture[str], binary_env: Path, tmp_path: Path, printable: bool
) -> None:
    dump_file = tmp_path / "all.dump"
    extra = ["-p"] if printable else []
    assert run(capsys, "dump", "--all", "-o", dump_file, binary_env, *extra) == (0, "", "")
    text = dump_file.read_bytes()
    assert (b"format=print" in text) == printable
    target = tmp_path / "copy"
    assert run(capsys, "load", target, dump_file) == (0, "", "")
    assert contents(target) == contents(binary_env)
    # Loading again overwrites (same contents; dupsort pairs are not doubled).
    assert run(capsys, "load", target, dump_file)[0] == 0
    assert contents(target) == contents(binary_env)


def test_dump_stdout_load_stdin(
    capsys: pytest.CaptureFixture[str], text_env: Path, tmp_path: Path, stdin_bytes: Any
) -> None:
    code, out, _ = run(capsys, "dump", "--db", "dups", text_env)
    assert code == 0
    stdin_bytes(out.encode())
    target = tmp_path / "target"
    assert run(capsys, "load", target) == (0, "", "")
    assert contents(target) == {None: [], b"dups": DUPS}
    stdin_bytes(out.encode())
    assert run(capsys, "load", "--db", "renamed", target, "-")[0] == 0
    assert contents(target)[b"renamed"] == DUPS
    assert run(capsys, "scan", "--db", "renamed", target)[1].splitlines()[0] == "k\t1"


def test_load_with_db_needs_one_block(
    capsys: pytest.CaptureFixture[str], text_env: Path, tmp_path: Path
) -> None:
    dump_file = tmp_path / "all.dump"
    assert run(capsys, "dump", "--all", "-o", dump_file, text_env)[0] == 0
    code, _, err = run(capsys, "load", "--db", "x", tmp_path / "t", dump_file)
    assert code == 2
    assert_error(err, "several databases")


def test_load_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path, stdin_bytes: Any) -> None:
    target = tmp_path / "target"
    cases = [
        (b"", "holds no mdb_dump data"),
        (b"garbage\n", "line 1: expected key=value"),
        (b"VERSION=3\nHEADER=END\n 6\n 00\nDATA=END\n", "line 3: bad hex"),
        (b"VERSION=3\nformat=print\nHEADER=END\n \\zz\n", "line 4: bad printable text"),
        (b"VERSION=3\nHEADER=END\n 61\n", "no DATA=END"),
        (b"VERSION=3\nformat=xml\nHEADER=END\n", "unsupported format"),
        (b"VERSION=3\ndupsort=1\nHEADER=END\nDATA=END\n", "main database has flags"),
        (
            b"VERSION=3\ndatabase=r\nreversedup=1\nHEADER=END\nDATA=END\n",
            "reversedup, which py-lmdb cannot open",
        ),
    ]
    for data, message in cases:
        stdin_bytes(data)
        code, out, err = run(capsys, "load", target)
        assert (code, out) == (2, ""), data
        assert_error(err, message)
    code, _, err = run(capsys, "load", target, tmp_path / "no-such-file")
    assert code == 2
    assert_error(err, "cannot read", "no-such-file")


def test_load_into_existing_database_with_other_flags(
    capsys: pytest.CaptureFixture[str], text_env: Path, stdin_bytes: Any
) -> None:
    stdin_bytes(_dumpfmt.format_header(database=b"plain") + b" 61\n 62\n" + _dumpfmt.DATA_END)
    code, _, err = run(capsys, "load", text_env)
    assert code == 0
    assert "warning" not in err
    stdin_bytes(
        _dumpfmt.format_header(database=b"plain", flags=["dupsort"]) + b" 61\n 63\n" + b"DATA=END\n"
    )
    code, _, err = run(capsys, "load", text_env)
    assert code == 0
    assert "warning: database 'plain' exists with flags none" in err
    assert contents(text_env)[b"plain"] == [(b"a", b"c"), (b"x", b"y")]


def test_load_big_in_chunks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_cli, "LOAD_CHUNK", 100)
    pairs = [(b"%06d" % i, b"v" * (i % 50)) for i in range(1050)]
    dump_file = tmp_path / "big.dump"
    dump_file.write_bytes(
        _dumpfmt.format_header(mapsize=1 << 20) + _dumpfmt.format_pairs(pairs) + _dumpfmt.DATA_END
    )
    target = tmp_path / "big"
    assert run(capsys, "load", target, dump_file) == (0, "", "")
    assert contents(target) == {None: pairs}


def test_load_parse_error_midway_keeps_earlier_chunks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_cli, "LOAD_CHUNK", 10)
    monkeypatch.setattr(_dumpfmt, "_CHUNK_LINES", 20)  # the reader decodes 10 pairs at a time
    pairs = [(b"%03d" % i, b"v") for i in range(25)]
    dump_file = tmp_path / "bad.dump"
    dump_file.write_bytes(_dumpfmt.format_header() + _dumpfmt.format_pairs(pairs) + b" zz\n")
    target = tmp_path / "t"
    code, _, err = run(capsys, "load", target, dump_file)
    assert code == 2
    assert_error(err, "bad hex")
    assert contents(target) == {None: pairs[:20]}


def test_catalogue_ignores_lookalike_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Values of the size of LMDB's database record, under keys that are no databases.
    path = make_env(
        tmp_path / "e",
        [(b"a\0b", b"x" * 48), (b"plain48", b"y" * 48)],
        {b"real": ({}, [(b"k", b"v")])},
    )
    code, out, _ = run(capsys, "stat", "--json", path)
    assert code == 0
    assert [db["name"] for db in json.loads(out)["databases"]] == [None, "real"]
    code, out, _ = run(capsys, "dump", "--all", path)
    blocks = _dumpfmt.parse_dump(out.encode())
    assert [(h.database, pairs) for h, pairs in blocks] == [
        (None, [(b"a\0b", b"x" * 48), (b"plain48", b"y" * 48)]),
        (b"real", [(b"k", b"v")]),
    ]


def test_dump_output_file_removed_on_failure(
    capsys: pytest.CaptureFixture[str],
    text_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(pairs: Any, printable: bool = False) -> bytes:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_dumpfmt, "format_pairs", fail)
    out_file = tmp_path / "out.dump"
    code, _, err = run(capsys, "dump", "-o", out_file, "--all", text_env)
    assert code == 2
    assert_error(err, "No space left on device")
    assert not out_file.exists()
    code, _, err = run(capsys, "dump", "-o", tmp_path / "no" / "such" / "dir", "--all", text_env)
    assert code == 2
    assert_error(err, "cannot write")


# ---------------------------------------------------------------------------- the C tools
def c_dump(*argv: str | Path) -> bytes:
    """Run mdb_dump; its output."""
    proc = subprocess.run(
        ["mdb_dump", *map(str, argv)], capture_output=True, env=C_ENV, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def c_load(path: Path, data: bytes) -> None:
    """Run mdb_load into a (new) directory ``path``."""
    path.mkdir(exist_ok=True)
    proc = subprocess.run(
        ["mdb_load", str(path)], input=data, capture_output=True, env=C_ENV, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def c_envs(tmp_path: Path, printable: bool) -> tuple[Path, Path]:
    """(an environment with named databases, one with only a main database) of binary data.

    For format=print the data holds no backslash: LMDB 0.9.24's mdb_dump -p writes it bare,
    which mdb_load itself cannot read back.
    """
    main, named = binary_data(backslash=not printable)
    return make_env(tmp_path / "named", main, named), make_env(tmp_path / "flat", main, {})


@needs_c_tools
@pytest.mark.parametrize("printable", [False, True], ids=["bytevalue", "print"])
def test_our_dump_is_byte_identical_to_mdb_dump(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, printable: bool
) -> None:
    named_env, flat = c_envs(tmp_path, printable)
    extra = ["-p"] if printable else []
    ours = tmp_path / "ours"
    for name in ("dups", "bin"):
        assert run(capsys, "dump", "--db", name, "-o", ours, named_env, *extra)[0] == 0
        assert ours.read_bytes() == c_dump(*extra, "-s", name, named_env)
    assert run(capsys, "dump", "-o", ours, flat, *extra)[0] == 0
    assert ours.read_bytes() == c_dump(*extra, flat)


@needs_c_tools
@pytest.mark.parametrize("printable", [False, True], ids=["bytevalue", "print"])
def test_mdb_load_reads_our_dump(
    capsys: pytest.CaptureFixture[str], binary_env: Path, tmp_path: Path, printable: bool
) -> None:
    # Backslashes included: we write them as \5c, which every mdb_load reads right.
    extra = ["-p"] if printable else []
    dump_file = tmp_path / "ours.dump"
    assert run(capsys, "dump", "--all", "-o", dump_file, binary_env, *extra)[0] == 0
    target = tmp_path / "loaded-by-c"
    c_load(target, dump_file.read_bytes())
    assert contents(target) == contents(binary_env)
    # A backslash after other escaped bytes of its line (which mdb_load 0.9.24 garbles as \\).
    assert b"\x1f !" in dict(contents(target)[None])[b"\x01\xfe\x01"]
    assert b"[\\]" in dict(contents(target)[None])[b"\x01\xfe\x01"]
    # The dupsort flag travelled too.
    assert b"dupsort=1" in c_dump("-s", "dups", target)


@needs_c_tools
@pytest.mark.parametrize("printable", [False, True], ids=["bytevalue", "print"])
def test_we_load_mdb_dump_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, stdin_bytes: Any, printable: bool
) -> None:
    named_env, flat = c_envs(tmp_path, printable)
    extra = ["-p"] if printable else []
    # mdb_dump -a (LMDB 0.9.24) writes every named database but not the main one's data.
    named_dump = tmp_path / "named.dump"
    named_dump.write_bytes(c_dump(*extra, "-a", named_env))
    target = tmp_path / "target"
    assert run(capsys, "load", target, named_dump) == (0, "", "")
    expected = contents(named_env)
    loaded = contents(target)
    assert loaded[b"dups"] == expected[b"dups"]
    assert loaded[b"bin"] == expected[b"bin"]
    assert loaded[None] == []
    assert b"dupsort=1" in c_dump("-s", "dups", target)
    # A main database (no named databases in it), through stdin.
    stdin_bytes(c_dump(*extra, flat))
    target2 = tmp_path / "target2"
    assert run(capsys, "load", target2) == (0, "", "")
    assert contents(target2) == contents(flat)
    assert len(contents(target2)[None]) == 256


@needs_c_tools
def test_mdb_dump_print_backslash_is_refused_clearly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, stdin_bytes: Any
) -> None:
    env = make_env(tmp_path / "e", [(b"k", b"a\\b")], {})
    stdin_bytes(c_dump("-p", env))
    code, _, err = run(capsys, "load", tmp_path / "t")
    assert code == 2
    assert_error(err, "line 9", "dump such data without -p")


@needs_c_tools
def test_dupsort_main_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, stdin_bytes: Any
) -> None:
    # Only the C tools make one: mdb_load gives the main database the header's flags.
    block = _dumpfmt.format_header(flags=["dupsort"]) + b" 61\n 31\n 61\n 32\n" + b"DATA=END\n"
    path = tmp_path / "e"
    c_load(path, block)
    code, out, _ = run(capsys, "stat", "--json", path)
    assert json.loads(out)["databases"][0]["flags"] == ["dupsort"]
    code, _, err = run(capsys, "dump", path)
    assert code == 2
    assert_error(err, "dupsort main database")
    stdin_bytes(block.replace(b" 32\n", b" 33\n"))
    assert run(capsys, "load", path)[0] == 0  # the flags match
    assert contents(path)[None] == [(b"a", b"1"), (b"a", b"2"), (b"a", b"3")]


# ---------------------------------------------------------------------------- copy
@pytest.mark.parametrize("compact", [False, True], ids=["plain", "compact"])
def test_copy(
    capsys: pytest.CaptureFixture[str], binary_env: Path, tmp_path: Path, compact: bool
) -> None:
    # Free some pages so that compacting has something to do.
    env = lmdb.open(str(binary_env), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"bin", txn=txn), delete=True)
    env.close()
    dest = tmp_path / "backup" / "nested"
    argv: list[str | Path] = ["copy", binary_env, dest, *(["--compact"] if compact else [])]
    assert run(capsys, *argv) == (0, "", "")
    assert contents(dest) == contents(binary_env)
    original = (binary_env / "data.mdb").stat().st_size
    copied = (dest / "data.mdb").stat().st_size
    assert copied < original if compact else copied <= original


def test_copy_destination_rules(
    capsys: pytest.CaptureFixture[str], text_env: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(capsys, "copy", text_env, empty) == (0, "", "")
    assert contents(empty) == contents(text_env)
    code, _, err = run(capsys, "copy", text_env, empty)
    assert code == 2
    assert_error(err, "not an empty directory")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, err = run(capsys, "copy", text_env, a_file)
    assert code == 2
    assert_error(err, "not an empty directory")


# ---------------------------------------------------------------------------- bench
REPO = Path(__file__).resolve().parent.parent


def imported_from(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Make the CLI believe aiolmdb was imported from ``root`` (a checkout or site-packages)."""
    monkeypatch.setattr(_cli, "__file__", str(root / "aiolmdb" / "_cli" / "commands.py"))


def forget_benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unload ``benchmarks`` for this test; whatever was loaded (or nothing) comes back after.

    setitem records the original entry (or its absence), delitem then empties the slot.
    """
    monkeypatch.setitem(sys.modules, "benchmarks", None)
    monkeypatch.delitem(sys.modules, "benchmarks")


def test_bench_outside_a_checkout_says_where_to_run_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    site = tmp_path / "site-packages"
    (site / "benchmarks").mkdir(parents=True)  # someone else's package, no pyproject.toml
    (site / "benchmarks" / "__main__.py").write_text("raise SystemExit(99)\n")
    imported_from(monkeypatch, site)
    code, out, err = run(capsys, "bench", "--quick")
    assert (code, out) == (2, "")
    assert_error(err, "not part of the installed package", "make bench", "python -m benchmarks")
    # A checkout without the suite (pyproject.toml only) is no checkout to run it from.
    (tmp_path / "pyproject.toml").write_text("")
    imported_from(monkeypatch, tmp_path)
    assert _cli._source_checkout() is None


def test_bench_runs_the_checkouts_suite(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    imported_from(monkeypatch, REPO)
    assert _cli._source_checkout() == str(REPO)
    forget_benchmarks(monkeypatch)
    path_before = list(sys.path)
    code, out, err = run(capsys, "bench", "--help")
    assert (code, err) == (0, "")
    assert out.startswith("usage: aiolmdb bench")
    assert "--only" in out
    assert sys.path == path_before  # the checkout was on it only while importing
    module = sys.modules["benchmarks"]
    assert Path(str(module.__file__)).parent == REPO / "benchmarks"
    # Loaded now: used again as it is. Usage errors are the suite's, with its status.
    code, out, err = run(capsys, "bench", "--only", "W99")
    assert (code, out) == (2, "")
    assert err.startswith("usage: aiolmdb bench")
    assert "aiolmdb bench: error: unknown workload(s) W99" in err


def test_bench_refuses_another_module_named_benchmarks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    imported_from(monkeypatch, REPO)
    other = types.ModuleType("benchmarks")
    other.__file__ = str(tmp_path / "benchmarks" / "__init__.py")
    monkeypatch.setitem(sys.modules, "benchmarks", other)
    code, out, err = run(capsys, "bench")
    assert (code, out) == (2, "")
    assert_error(err, "cannot be imported", f"is in {tmp_path / 'benchmarks'}, not")


def test_bench_passes_arguments_and_exit_status(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    suite = tmp_path / "benchmarks"
    suite.mkdir()
    (suite / "__main__.py").write_text("")
    (suite / "__init__.py").write_text(
        "SEEN = []\n"
        "def main(argv=None, *, prog=None):\n"
        "    SEEN.append((argv, prog))\n"
        "    if argv == ['--exit']:\n"
        "        raise SystemExit(3)\n"
        "    if argv == ['--fail']:\n"
        "        raise SystemExit('bench: bad arguments')\n"
        "    return 5\n"
    )
    imported_from(monkeypatch, tmp_path)
    forget_benchmarks(monkeypatch)
    assert run(capsys, "bench", "--help", "-x")[0] == 5
    assert run(capsys, "bench", "--exit")[0] == 3
    assert run(capsys, "bench", "--fail") == (2, "", "bench: bad arguments\n")
    seen = sys.modules["benchmarks"].SEEN
    assert seen == [
        (["--help", "-x"], "aiolmdb bench"),
        (["--exit"], "aiolmdb bench"),
        (["--fail"], "aiolmdb bench"),
    ]


# ---------------------------------------------------------------------------- failures
def test_unexpected_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], text_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(args: Any) -> int:
        raise RuntimeError("something\nbroke")

    async def interrupted(args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli, "cmd_stat", boom)
    code, _, err = run(capsys, "stat", text_env)
    assert code == 2
    assert_error(err, "unexpected RuntimeError: something broke")
    monkeypatch.setattr(_cli, "cmd_stat", interrupted)
    code, _, err = run(capsys, "stat", text_env)
    assert code == 130
    assert_error(err, "interrupted")


def test_broken_pipe_is_quiet(tmp_path: Path) -> None:
    path = make_env(tmp_path / "big", [(b"%08d" % i, b"x" * 100) for i in range(20000)], {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiolmdb", "scan", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert proc.stdout.readline() == b"00000000\t" + b"x" * 100 + b"\n"
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in err
    assert err == b""


# ---------------------------------------------------------------------------- progress
def test_progress_off_without_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with _cli.Progress("x", 10) as progress:
        progress.advance(3)
        progress.update(5)
    assert not progress.active
    assert capsys.readouterr().err == ""


def test_progress_off_without_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cli, "_isatty", lambda stream: True)
    monkeypatch.setitem(sys.modules, "rich.progress", None)
    with _cli.Progress("x", 10) as progress:
        progress.advance(1)
    assert not progress.active


def test_progress_bar_with_rich(
    capsys: pytest.CaptureFixture[str],
    binary_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("rich")
    monkeypatch.setattr(_cli, "_isatty", lambda stream: True)
    with _cli.Progress("x", 10) as progress:
        assert progress.active
        progress.advance(4)
        progress.update(10)
    dump_file = tmp_path / "all.dump"
    assert run(capsys, "dump", "--all", "-o", dump_file, binary_env)[0] == 0
    assert run(capsys, "load", tmp_path / "t", dump_file)[0] == 0
    assert contents(tmp_path / "t") == contents(binary_env)


# ---------------------------------------------------------------------------- the format
def test_print_format_every_byte() -> None:
    data = bytes(range(256))
    text = _dumpfmt.encode_print(data)
    assert text.startswith(b"\\00\\01")
    assert b"\\5c" in text  # the backslash
    assert b"AB" in text
    assert _dumpfmt.decode_print(b"\\\\") == b"\\"  # also read as mdb_dump may write it
    assert _dumpfmt.decode_print(text) == data
    assert _dumpfmt.encode_print(b"plain text") == b"plain text"
    assert _dumpfmt.decode_print(b"plain") == b"plain"
    for bad in (b"\\", b"\\4", b"\\xg", b"a\\q1"):
        with pytest.raises(ValueError, match="backslash"):
            _dumpfmt.decode_print(bad)


def test_header_layout() -> None:
    header = _dumpfmt.format_header(
        database=b"db",
        mapsize=1 << 20,
        maxreaders=126,
        pagesize=4096,
        flags={"dupsort": True, "reversekey": True, "integerkey": False},
        printable=True,
    )
    assert header.decode().splitlines() == [
        "VERSION=3",
        "format=print",
        "database=db",
        "type=btree",
        "mapsize=1048576",
        "maxreaders=126",
        "duplicates=1",
        "reversekey=1",
        "dupsort=1",
        "db_pagesize=4096",
        "HEADER=END",
    ]
    with pytest.raises(ValueError, match="unknown database flag"):
        _dumpfmt.format_header(flags=["sideways"])
    with pytest.raises(ValueError, match="line break"):
        _dumpfmt.format_header(database=b"a\nb")


def test_reader_details() -> None:
    data = (
        b"\n\r\nVERSION=3\r\nformat=bytevalue\r\ndatabase=n\r\nmapsize=4096\r\nmaxreaders=9\r\n"
        b"db_pagesize=4096\r\nduplicates=1\r\ndupsort=1\r\nintegerkey=0\r\nfuture=yes\r\n"
        b"HEADER=END\r\n 00\r\n ff\r\nDATA=END\r\n"
        b"VERSION=3\nformat=print\nHEADER=END\n a\\5cb\n c\\\\d\nDATA=END\n"
    )
    [(first, pairs1), (second, pairs2)] = _dumpfmt.parse_dump(data)
    assert first.database == b"n"
    assert (first.mapsize, first.maxreaders, first.pagesize) == (4096, 9, 4096)
    assert first.flags == {"dupsort": True}
    assert first.extra == {"future": "yes"}
    assert pairs1 == [(b"\x00", b"\xff")]
    assert second.printable
    assert second.database is None
    assert pairs2 == [(b"a\\b", b"c\\d")]


def test_reader_skips_unread_blocks() -> None:
    data = _dumpfmt.format_header(database=b"a") + b" 61\n 62\n" + _dumpfmt.DATA_END
    data += _dumpfmt.format_header(database=b"b") + _dumpfmt.DATA_END
    reader = _dumpfmt.DumpReader(io.BytesIO(data))
    first = reader.next_header()
    assert first is not None
    assert first.database == b"a"
    second = reader.next_header()
    assert second is not None
    assert second.database == b"b"
    assert list(reader.pairs()) == []
    assert reader.next_header() is None
    assert list(reader.pairs()) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"VERSION=4\nHEADER=END\n", "line 1: unsupported VERSION 4"),
        (b"VERSION=x\n", "VERSION must be a number"),
        (b"mapsize=-1\n", "mapsize must not be negative"),
        (b"type=hash\n", "unsupported type"),
        (b"VERSION=3\n", "unexpected end of input in a header"),
        (b"VERSION=3\n 00\n", "data line before HEADER=END"),
        (b"HEADER=END\n 00\nDATA=END\n", "a key without a value"),
        (b"HEADER=END\n 00\nHEADER=END\n", "expected a data line or DATA=END"),
    ],
)
def test_reader_errors(data: bytes, message: str) -> None:
    with pytest.raises(_dumpfmt.DumpFormatError, match=message):
        _dumpfmt.parse_dump(data)


def test_str_and_byte_formats() -> None:
    text = _formats.make_format("str")
    assert text.parse("a\udcff", "key") == b"a\xff"  # bytes the OS passed, kept
    assert text.text(b"a\tb") == "a\tb"
    with pytest.raises(ValueError, match="not valid utf-8"):
        text.text(b"\xff" * 100)
    with pytest.raises(_formats.FormatError, match="unknown format 'rot13'"):
        _formats.make_format("rot13")
    assert _formats.make_format("base64").parse("YQ==", "key") == b"a"
    with pytest.raises(_formats.FormatError, match="key is not valid base64"):
        _formats.make_format("base64").parse("é", "key")


@pytest.mark.parametrize("chunk_lines", [1, 2, 3, 4, 5, 7, 4096])
def test_reader_chunk_boundaries(monkeypatch: pytest.MonkeyPatch, chunk_lines: int) -> None:
    monkeypatch.setattr(_dumpfmt, "_CHUNK_LINES", chunk_lines)
    pairs = [(b"k%d" % i, b"v%d" % i) for i in range(5)]
    data = _dumpfmt.format_header(database=b"a") + _dumpfmt.format_pairs(pairs)
    data += _dumpfmt.DATA_END + _dumpfmt.format_header(database=b"b") + _dumpfmt.DATA_END
    data += _dumpfmt.format_header(printable=True) + _dumpfmt.format_pairs(pairs, True)
    data += _dumpfmt.DATA_END
    blocks = _dumpfmt.parse_dump(data)
    assert [(h.database, p) for h, p in blocks] == [(b"a", pairs), (b"b", []), (None, pairs)]
    reader = _dumpfmt.DumpReader(io.BytesIO(data))
    while reader.next_header() is not None:
        list(reader.pairs())
    assert reader.bytes_read == len(data)
    assert reader.lineno == data.count(b"\n")
    # Errors name the right line wherever the chunks end.
    header = _dumpfmt.format_header()
    first_data_line = header.count(b"\n") + 1
    for bad in range(10):
        lines = _dumpfmt.format_pairs(pairs).splitlines(keepends=True)
        lines[bad] = b" xyz\n"
        with pytest.raises(
            _dumpfmt.DumpFormatError, match=f"line {first_data_line + bad}: bad hex"
        ):
            _dumpfmt.parse_dump(header + b"".join(lines) + _dumpfmt.DATA_END)


# ---------------------------------------------------------------------------- tuple keys
def test_tuple_keys(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "tuples"
    for key, value in [('("user", 42)', "a"), ('("user", 420)', "b"), ('("user", 42, "x")', "c")]:
        assert run(capsys, "put", path, "--key-format", "tuple", key, value)[0] == 0
    assert run(capsys, "get", path, "--key-format", "tuple", '("user", 420)') == (0, "b\n", "")
    code, out, _ = run(capsys, "scan", path, "--key-format", "tuple", "--prefix", '("user", 42)')
    assert (code, out) == (0, "('user', 42)\ta\n('user', 42, 'x')\tc\n")
    code, out, _ = run(
        capsys, "scan", path, "--key-format", "tuple", "--start", "('user', 43)", "--reverse"
    )
    assert (code, out) == (0, "('user', 420)\tb\n")
    assert run(capsys, "delete", path, "--key-format", "tuple", "('user', 420)")[0] == 0
    code, out, _ = run(capsys, "get", path, "--key-format", "tuple", "('user', 420)")
    assert code == _cli.EXIT_NOT_FOUND
    # The bytes are TupleCoder's: a program reads them with the same coder.
    raw = run(capsys, "scan", path, "--hex")[1].split()[0]
    assert aiolmdb.TupleCoder().deserialize(bytes.fromhex(raw)) == ("user", 42)


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("user", "not a Python tuple literal"),
        ("'user'", "not a tuple"),
        ("(float('nan'),)", "not a Python tuple literal"),
        ("([1],)", "a list element"),
    ],
)
def test_tuple_key_argument_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, key: str, fragment: str
) -> None:
    code, _, err = run(capsys, "put", tmp_path / "e", "--key-format", "tuple", key, "v")
    assert code == _cli.EXIT_ERROR
    assert_error(err, "key", fragment)


def test_tuple_keys_over_other_keys(capsys: pytest.CaptureFixture[str], text_env: Path) -> None:
    code, out, err = run(capsys, "scan", text_env, "--key-format", "tuple", "--limit", "1")
    assert code == 0
    assert out == _formats.TEXT_MARK + base64.b64encode(b"alpha").decode() + "\t1\n"
    assert "key b'alpha' is not tuple: TupleCoder cannot decode" in err


# ---------------------------------------------------------------------------- versioned databases
def make_versioned(path: Path) -> dict[bytes, aiolmdb.Entry[bytes]]:
    """A versioned database ``v`` (and a plain ``p``); the entries of ``v``."""

    async def fill() -> dict[bytes, aiolmdb.Entry[bytes]]:
        async with aiolmdb.open(path) as env:
            db = await env.open_db("v", versioned=True)
            await db.put(b"a", b"1")
            await db.put(b"b", b"two\tcols")
            await db.put(b"a", b"3")
            await db.restore_entries([(b"far", aiolmdb.Entry(b"x", 2**62))])
            await (await env.open_db("p")).put(b"x", b"y")
            return {k: e async for k, e in db.entries()}

    return asyncio.run(fill())


def versioned_entries(path: Path) -> dict[bytes, aiolmdb.Entry[bytes]]:
    async def read() -> dict[bytes, aiolmdb.Entry[bytes]]:
        async with aiolmdb.open(path, readonly=True) as env:
            db = env.open_db("v", versioned=True)
            return {k: e async for k, e in db.entries()}

    return asyncio.run(read())


def test_get_and_scan_show_versions(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "env"
    entries = make_versioned(path)
    assert run(capsys, "get", "--db", "v", path, "a") == (0, f"{entries[b'a'].version}\t3\n", "")
    code, out, _ = run(capsys, "scan", "--db", "v", path)
    assert code == 0
    assert out.splitlines() == [
        f"{k.decode()}\t{e.version}\t{_formats.escape_text(e.value.decode())}"
        for k, e in entries.items()
    ]
    assert run(capsys, "get", "--db", "p", path, "x") == (0, "y\n", "")
    assert run(capsys, "get", "--db", "v", path, "nope")[0] == _cli.EXIT_NOT_FOUND
    code, out, _ = run(capsys, "stat", path)
    assert "versioned" in out


def test_dump_load_round_trips_versions(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "env"
    entries = make_versioned(path)
    dump_file = tmp_path / "all.dump"
    assert run(capsys, "dump", "--all", "-o", dump_file, path)[0] == 0
    text = dump_file.read_bytes()
    assert b"aiolmdb_versioned=1" in text
    assert b"database=__aiolmdb__" not in text  # metadata is rebuilt, not loaded
    target = tmp_path / "loaded"
    assert run(capsys, "load", target, dump_file) == (0, "", "")
    assert versioned_entries(target) == entries

    async def write_after_load() -> int:
        async with aiolmdb.open(target) as env:
            db = await env.open_db("v", versioned=True)
            await db.put(b"new", b"n")
            entry = await db.get_entry(b"new")
            assert entry is not None
            return entry.version

    # The fresh environment's counter starts above every version it loaded.
    assert asyncio.run(write_after_load()) > 2**62
    # Into a plain database of that name: refused, not misread.
    plain = tmp_path / "plain"
    assert run(capsys, "put", "--db", "v", plain, "k", "v")[0] == 0
    code, _, err = run(capsys, "load", plain, dump_file)
    assert code != 0
    assert_error(err, "versioned")
    # The metadata database is not data.
    code, _, err = run(capsys, "dump", "--db", "__aiolmdb__", path)
    assert code != 0
    assert_error(err, "metadata")


def test_load_versioned_dump_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    header = _dumpfmt.format_header(database=None, extra={"aiolmdb_versioned": "1"})
    dump_file = tmp_path / "main.dump"
    dump_file.write_bytes(
        header + _dumpfmt.format_pairs([(b"k", b"\0" * 8 + b"v")]) + b"DATA=END\n"
    )
    code, _, err = run(capsys, "load", tmp_path / "a", dump_file)
    assert code != 0
    assert_error(err, "named database")
    named = _dumpfmt.format_header(database=b"v", extra={"aiolmdb_versioned": "1"})
    dump_file.write_bytes(named + _dumpfmt.format_pairs([(b"k", b"short")]) + b"DATA=END\n")
    code, _, err = run(capsys, "load", tmp_path / "b", dump_file)
    assert code != 0
    assert_error(err, "not a versioned value")
    with pytest.raises(ValueError, match="extra header"):
        _dumpfmt.format_header(extra={"bad key": "1"})


class Clock:
    """The versions' clock, set by hand (in microseconds): one machine's clock against
    another's, without sleeping."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, micros: int) -> None:
        self.micros = micros
        monkeypatch.setattr(_versions, "clock", self)

    def __call__(self) -> int:
        return self.micros * 1000


async def _put_version(path: Path, key: bytes, value: bytes) -> int:
    """Put ``key`` in the versioned database ``docs`` of ``path``; the version it got."""
    async with aiolmdb.open(path) as env:
        db = await env.open_db("docs", versioned=True)
        await db.put(key, value)
        entry = await db.get_entry(key)
        assert entry is not None
        return entry.version


def _counter(path: Path) -> int:
    env = lmdb.open(str(path), max_dbs=8, readonly=True)
    try:
        with env.begin() as txn:
            return _versions.stored_counter(env, txn)
    finally:
        env.close()


def _deleted_top(path: Path, clock: Clock) -> int:
    """A versioned database whose highest version ever issued was a deleted entry's, drawn
    while the clock ran ahead; that version."""

    async def write() -> int:
        async with aiolmdb.open(path) as env:
            db = await env.open_db("docs", versioned=True)
            clock.micros = 1_000_000
            await db.put(b"keep", b"k")
            clock.micros = 5_000_000  # this machine's clock runs ahead
            await db.put(b"doc", b"v1")
            read = await db.get_entry(b"doc")  # a client keeps this version
            assert read is not None
            await db.delete(b"doc")
            return read.version

    return asyncio.run(write())


def test_load_never_reissues_a_deleted_entrys_version(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 25: the highest version belonged to a deleted entry, and the source's clock ran
    ahead of the target's. After dump and load, a new write must not reissue it, or a client's
    stale put(if_version=...) would overwrite the document."""
    clock = Clock(monkeypatch, 0)
    source = tmp_path / "source"
    stale = _deleted_top(source, clock)
    counter = _counter(source)
    assert counter >= stale
    dump_file = tmp_path / "all.dump"
    assert run(capsys, "dump", "--all", "-o", dump_file, source)[0] == 0
    assert f"aiolmdb_last_version={counter}\n".encode() in dump_file.read_bytes()
    # The target machine's clock is behind: it reaches the stale version's time only now.
    clock.micros = 2_000_000
    target = tmp_path / "target"
    assert run(capsys, "load", target, dump_file) == (0, "", "")
    assert _counter(target) == counter
    clock.micros = stale
    assert asyncio.run(_put_version(target, b"doc", b"v2")) > counter

    async def stale_write() -> bool:
        async with aiolmdb.open(target) as env:
            db = await env.open_db("docs", versioned=True)
            return await db.put(b"doc", b"stale", if_version=stale)

    assert asyncio.run(stale_write()) is False


def test_load_counter_is_the_highest_of_dump_stored_and_clock(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, 100)

    def dump(counter: int | None, version: int) -> Path:
        extra = {"aiolmdb_versioned": "1"}
        if counter is not None:
            extra["aiolmdb_last_version"] = str(counter)
        dump_file = tmp_path / "crafted.dump"
        dump_file.write_bytes(
            _dumpfmt.format_header(database=b"docs", extra=extra)
            + _dumpfmt.format_pairs([(b"k", struct.pack(">Q", version) + b"v")])
            + _dumpfmt.DATA_END
        )
        return dump_file

    # The dumped counter is the highest.
    assert run(capsys, "load", tmp_path / "a", dump(5_000, 300))[0] == 0
    assert _counter(tmp_path / "a") == 5_000
    # A stored version is (a dump edited by hand).
    assert run(capsys, "load", tmp_path / "b", dump(200, 300))[0] == 0
    assert _counter(tmp_path / "b") == 300
    # The clock is.
    clock.micros = 9_000
    assert run(capsys, "load", tmp_path / "c", dump(5_000, 300))[0] == 0
    assert _counter(tmp_path / "c") == 9_000
    # A load never lowers the counter of the environment it loads into.
    clock.micros = 100
    assert run(capsys, "load", tmp_path / "c", dump(5_000, 300))[0] == 0
    assert _counter(tmp_path / "c") == 9_000
    # An old dump (no counter line) loads as before: up to the highest stored version.
    assert run(capsys, "load", tmp_path / "d", dump(None, 300))[0] == 0
    assert _counter(tmp_path / "d") == 300
    assert asyncio.run(_put_version(tmp_path / "d", b"new", b"n")) == 301


@pytest.mark.parametrize("bad", ["abc", "0", "-1", str(2**64), "١٢"])
def test_load_refuses_a_bad_counter(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, bad: str
) -> None:
    dump_file = tmp_path / "bad.dump"
    header = _dumpfmt.format_header(database=b"p", extra={"aiolmdb_last_version": bad})
    dump_file.write_bytes(header + _dumpfmt.format_pairs([(b"k", b"v")]) + _dumpfmt.DATA_END)
    code, _, err = run(capsys, "load", tmp_path / "t", dump_file)
    assert code == _cli.EXIT_ERROR
    assert_error(err, f"aiolmdb_last_version={bad!r}", "'p'", "not a version")
    # Refused before the block's data.
    assert contents(tmp_path / "t").get(b"p") is None


def test_every_dumped_block_carries_the_counter(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch, 0)
    source = tmp_path / "source"
    _deleted_top(source, clock)
    counter = _counter(source)
    line = f"aiolmdb_last_version={counter}".encode()
    # One database alone (--db) carries it too, loaded under another name.
    code, out, _ = run(capsys, "dump", "--db", "docs", source)
    assert code == 0
    assert line in out.encode()
    dump_file = tmp_path / "docs.dump"
    dump_file.write_bytes(out.encode())
    clock.micros = 1
    assert run(capsys, "load", "--db", "renamed", tmp_path / "t", dump_file)[0] == 0
    assert _counter(tmp_path / "t") == counter
    # --all: every block, the main database's included; an environment never versioned has none.
    assert run(capsys, "dump", "--all", "-o", dump_file, source)[0] == 0
    blocks = _dumpfmt.parse_dump(dump_file.read_bytes())
    assert [h.extra.get("aiolmdb_last_version") for h, _ in blocks] == [str(counter)] * 2
    plain = tmp_path / "plain"
    assert run(capsys, "put", plain, "k", "v")[0] == 0
    code, out, _ = run(capsys, "dump", "--all", plain)
    assert code == 0
    assert "aiolmdb_last_version" not in out


def test_a_counter_only_dump_raises_a_restored_backup(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remedy docs/guide/versions.md gives for a backup restored while versions issued
    after it may be above its counter and the clock: load a block holding only the counter."""
    clock = Clock(monkeypatch, 1_000)
    env_path = tmp_path / "env"
    asyncio.run(_put_version(env_path, b"a", b"1"))
    dump_file = tmp_path / "counter.dump"
    dump_file.write_bytes(
        _dumpfmt.format_header(extra={"aiolmdb_last_version": "7000"}) + _dumpfmt.DATA_END
    )
    assert run(capsys, "load", env_path, dump_file) == (0, "", "")
    assert _counter(env_path) == 7_000
    assert contents(env_path)[None] == []  # no data loaded
    clock.micros = 2_000
    assert asyncio.run(_put_version(env_path, b"a", b"2")) == 7_001


_MOVES = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "delete", "dump_load", "copy", "compact"]),
        st.sampled_from([b"a", b"b"]),
        # The clock of the machine the step runs on, in microseconds: a few values, so that
        # one machine's clock is often behind another's.
        st.sampled_from([10, 20, 30, 40]),
    ),
    max_size=10,
)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=_MOVES)
# Issue 25: the highest version belonged to a deleted entry, and the target's clock is behind.
@example(
    steps=[("put", b"a", 30), ("delete", b"a", 30), ("dump_load", b"a", 10), ("put", b"b", 20)]
)
def test_versions_never_repeat_across_moves(
    capsys: pytest.CaptureFixture[str],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    steps: list[tuple[str, bytes, int]],
) -> None:
    """Writes and deletes, with the data moved by dump/load and copies between machines whose
    clocks disagree: every write gets a version above every version issued before it."""
    clock = Clock(monkeypatch, 1)
    root = tmp_path_factory.mktemp("moves")
    path = root / "env0"
    issued = 0  # the highest version issued so far, in the life of the data

    async def write(kind: str, key: bytes) -> int | None:
        async with aiolmdb.open(path) as env:
            db = await env.open_db("docs", versioned=True)
            if kind == "delete":
                await db.delete(key)
                return None
            await db.put(key, b"v")
            entry = await db.get_entry(key)
            assert entry is not None
            return entry.version

    async def copy(dest: Path, compact: bool) -> None:
        async with aiolmdb.open(path) as env:
            await env.copy(dest, compact=compact)

    asyncio.run(write("put", b"a"))
    issued = _counter(path)
    for index, (kind, key, micros) in enumerate(steps, 1):
        clock.micros = micros
        dest = root / f"env{index}"
        if kind == "dump_load":
            dump_file = root / f"{index}.dump"
            assert run(capsys, "dump", "--all", "-o", dump_file, path)[0] == 0
            assert run(capsys, "load", dest, dump_file)[0] == 0
            path = dest
        elif kind in ("copy", "compact"):
            dest.mkdir()
            asyncio.run(copy(dest, kind == "compact"))
            path = dest
        else:
            got = asyncio.run(write(kind, key))
            if got is not None:
                assert got > issued, f"version {got} issued again (highest so far {issued})"
                issued = got


@needs_c_tools
def test_versioned_dump_loads_with_mdb_load(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """mdb_load takes aiolmdb's dump of a versioned database as raw data (version first)."""
    path = tmp_path / "env"
    entries = make_versioned(path)
    code, out, _ = run(capsys, "dump", "--db", "v", path)
    assert code == 0
    target = tmp_path / "c"
    c_load(target, out.encode())
    env = lmdb.open(str(target), max_dbs=4, readonly=True)
    with env.begin() as txn:
        raw = dict(txn.cursor(env.open_db(b"v", txn=txn, create=False)))
    env.close()
    assert raw == {k: struct.pack(">Q", e.version) + e.value for k, e in entries.items()}


# ---------------------------------------------------------------------------- changes
async def _logged_env(path: Path) -> None:
    async with aiolmdb.open(path, changelog=True, max_dbs=8) as env:
        await env.open_db("a").put(b"k", b"v")
        await env.get_default_database().put(b"m", b"\xff")
        await env.open_db("a").delete(b"k")


def test_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "logged"
    asyncio.run(_logged_env(path))
    code, out, _ = run(capsys, "changes", "--hex", path)
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"seq": 1, "db": "a", "kind": "put", "key": "6b", "value": "76"},
        {"seq": 2, "db": None, "kind": "put", "key": "6d", "value": "ff"},
        {"seq": 3, "db": "a", "kind": "delete", "key": "6b", "value": None},
    ]
    code, out, _ = run(capsys, "changes", "--since", "1", "--db", "a", path)
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [3]
    code, out, err = run(capsys, "changes", path)  # str: \xff is not UTF-8, shown as base64
    assert code == 0
    assert json.loads(out.splitlines()[1]) == {
        "seq": 2,
        "db": None,
        "kind": "put",
        "key": "m",
        "value_b64": "/w==",
    }
    assert "1 key or value shown as base64" in err


def test_changes_refuses_a_position_beyond_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "logged"
    asyncio.run(_logged_env(path))
    code, out, _ = run(capsys, "changes", "--since", "3", path)  # the end: caught up
    assert (code, out) == (0, "")
    code, out, err = run(capsys, "changes", "--since", "4", path)
    assert (code, out) == (2, "")
    assert_error(err, "changes(since=4)", "last sequence number is 3", "restored")


def _changelog_id(path: Path) -> str | None:
    async def read() -> str | None:
        async with aiolmdb.open(path, readonly=True, max_dbs=8) as env:
            return await env.changelog_id()

    return asyncio.run(read())


def test_dump_load_keeps_the_log_identity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "logged"
    asyncio.run(_logged_env(path))
    identity = _changelog_id(path)
    assert identity is not None
    dump_file = tmp_path / "all.dump"
    assert run(capsys, "dump", "--all", "-o", dump_file, path)[0] == 0
    text = dump_file.read_bytes()
    assert f"aiolmdb_changelog_id={identity}\n".encode() in text
    target = tmp_path / "loaded"
    assert run(capsys, "load", target, dump_file) == (0, "", "")
    assert _changelog_id(target) == identity
    assert run(capsys, "put", "--db", "a", target, "after", "load") == (0, "", "")
    assert _changelog_id(target) == identity  # the first writer with the log keeps it
    # A dump from before identities: the loaded log gets one at its first writable open.
    old = tmp_path / "old.dump"
    old.write_bytes(text.replace(f"aiolmdb_changelog_id={identity}\n".encode(), b""))
    older = tmp_path / "older"
    assert run(capsys, "load", older, old) == (0, "", "")
    assert _changelog_id(older) is None
    assert run(capsys, "put", "--db", "a", older, "after", "load") == (0, "", "")
    made = _changelog_id(older)
    assert made is not None
    assert made != identity
    # A damaged identity is refused, naming it.
    bad = tmp_path / "bad.dump"
    bad.write_bytes(text.replace(identity.encode(), b"xyz"))
    code, _, err = run(capsys, "load", tmp_path / "bad", bad)
    assert code == 2
    assert_error(err, "aiolmdb_changelog_id", "'xyz'", "16 bytes in hex")


def test_changes_without_a_log(text_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "changes", text_env)
    assert code == 2
    assert_error(err, "no change log")


def test_changes_follow(tmp_path: Path) -> None:
    path = tmp_path / "logged"
    asyncio.run(_logged_env(path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiolmdb", "changes", "--follow", "--since", "3", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        async def write() -> None:
            async with aiolmdb.open(path, changelog=True, max_dbs=8) as env:
                await env.open_db("a").put(b"new", b"1")

        asyncio.run(write())
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the follower prints it (killed on failure)
        assert json.loads(line) == {"seq": 4, "db": "a", "kind": "put", "key": "new", "value": "1"}
    finally:
        proc.kill()
        proc.communicate(timeout=60)  # reaps it and closes the pipes


def _log_of(path: Path) -> list[Change]:
    async def read() -> list[Change]:
        async with aiolmdb.open(path, readonly=True, max_dbs=8) as env:
            return [c async for c in env.changes(0, follow=False)]

    return asyncio.run(read())


def test_dump_load_restores_the_change_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "logged"
    asyncio.run(_logged_env(path))
    before = _log_of(path)
    dump_file = tmp_path / "all.dump"
    assert run(capsys, "dump", "--all", "-o", dump_file, path)[0] == 0
    text = dump_file.read_bytes()
    assert b"database=__aiolmdb_changes__\n" in text
    assert b"aiolmdb_changes_trimmed=0\n" in text
    target = tmp_path / "loaded"
    assert run(capsys, "load", target, dump_file) == (0, "", "")
    # The same log, as it was (the loaded data is not logged again), and the same data.
    assert _log_of(target) == before
    assert contents(target) == contents(path)
    # It is marked as logged: a writer without the log is refused, the CLI's writers log.
    with pytest.raises(ValueError, match="changelog=True"):
        aiolmdb.open(target, max_dbs=8)
    assert run(capsys, "put", "--db", "a", target, "after", "load") == (0, "", "")
    after = _log_of(target)
    assert after[:-1] == before
    assert after[-1][:4] == (len(before) + 1, "a", b"after", "put")
    # A dump with a log into an environment that has one: refused, nothing loaded.
    code, _, err = run(capsys, "load", target, dump_file)
    assert code != 0
    assert_error(err, "change log", "new environment")
    assert _log_of(target) == after
    # --db dumps the log alone, as stored.
    assert run(capsys, "dump", "--db", "__aiolmdb_changes__", "-o", dump_file, path)[0] == 0
    assert (
        dump_file.read_bytes()
        == text[text.index(b"VERSION=3\nformat=bytevalue\ndatabase=__aiolmdb_changes__") :][
            : len(dump_file.read_bytes())
        ]
    )


def test_dump_load_of_a_trimmed_log_keeps_numbers_growing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "trimmed"

    async def fill() -> None:
        async with aiolmdb.open(
            path, changelog=True, changelog_retention=aiolmdb.Retention(entries=0), max_dbs=8
        ) as env:
            db = env.open_db("a")
            await db.put_multi([(b"%04d" % i, b"v") for i in range(300)])  # queues a trim

            def log_size(txn: aiolmdb.Transaction[bytes, bytes]) -> int:
                log = env.lmdb_environment.open_db(b"__aiolmdb_changes__", txn=txn.raw)
                return int(txn.raw.stat(log)["entries"])

            # Trim steps requeue behind writes: the log empties within a few transactions.
            sizes = [await env.run(log_size, write=True) for _ in range(3)]
            assert sizes[-1] == 0

    asyncio.run(fill())
    dump_file = tmp_path / "all.dump"
    assert run(capsys, "dump", "--all", "-o", dump_file, path)[0] == 0
    text = dump_file.read_bytes()
    assert re.search(  # no record left
        rb"aiolmdb_changes_trimmed=300\naiolmdb_changelog_id=[0-9a-f]{32}\nHEADER=END\nDATA=END\n",
        text,
    )
    target = tmp_path / "loaded"
    assert run(capsys, "load", target, dump_file) == (0, "", "")
    assert run(capsys, "put", "--db", "a", target, "new", "v") == (0, "", "")
    [change] = _log_of_since(target, 300)
    assert change[:3] == (301, "a", b"new")
    with pytest.raises(aiolmdb.ChangesTrimmedError):
        _log_of(target)


def _log_of_since(path: Path, since: int) -> list[Change]:
    async def read() -> list[Change]:
        async with aiolmdb.open(path, readonly=True, max_dbs=8) as env:
            return [c async for c in env.changes(since, follow=False)]

    return asyncio.run(read())


def test_compacting_copy_keeps_numbers_growing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "logged"
    asyncio.run(_logged_env(path))
    dest = tmp_path / "compact"
    assert run(capsys, "copy", "--compact", path, dest) == (0, "", "")
    assert _log_of(dest) == _log_of(path)
    assert run(capsys, "put", "--db", "a", dest, "k2", "v") == (0, "", "")
    assert [c.seq for c in _log_of(dest)] == [1, 2, 3, 4]


def test_cli_writers_log_their_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "logged"
    asyncio.run(_logged_env(path))
    assert run(capsys, "put", "--db", "a", path, "x", "1") == (0, "", "")
    assert run(capsys, "delete", "--db", "a", path, "x") == (0, "", "")
    plain = tmp_path / "plain"
    assert run(capsys, "put", "--db", "b", plain, "y", "2") == (0, "", "")
    dump_file = tmp_path / "b.dump"
    assert run(capsys, "dump", "--all", "-o", dump_file, plain)[0] == 0
    assert run(capsys, "load", path, dump_file) == (0, "", "")
    assert [c[:5] for c in _log_of(path)[3:]] == [
        (4, "a", b"x", "put", b"1"),
        (5, "a", b"x", "delete", None),
        (6, "b", b"y", "put", b"2"),
    ]
    # An environment without a log stays without one.
    assert run(capsys, "put", plain, "z", "3") == (0, "", "")
    code, _, err = run(capsys, "changes", plain)
    assert code == 2
    assert_error(err, "no change log")
