"""``aiolmdb shell PATH``: commands piped in (through ``python -m aiolmdb`` and ``main()``), the
prompt_toolkit prompt driven through a pipe input, its history, and the completer."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import aiolmdb
from aiolmdb import JSONCoder, MsgpackCoder, StringCoder
from aiolmdb._cli import commands as _cli
from aiolmdb._cli import shell as _shell
from aiolmdb._cli.commands import main

SCRIPT = """\
# a comment, then a blank line

put greeting hello
get greeting
use orders
format value msgpack
put o-1 '{"customer": "ann", "total": 12}'
get o-1
scan --json
format key hex
get 6f2d31 --value-format hex
format
dbs
get 00ff
quit
get greeting
"""


async def _fill(path: Path) -> None:
    async with aiolmdb.open(path, max_dbs=8, changelog=True) as env:
        orders = env.open_db("orders", key_coder=StringCoder(), value_coder=MsgpackCoder())
        await orders.put("o-0", {"customer": "zed"})
        await env.open_db("counts", value_coder=JSONCoder()).put(b"c", 1)


def test_piped_commands_through_the_entry_point(tmp_path: Path) -> None:
    path = tmp_path / "env"
    proc = subprocess.run(
        [sys.executable, "-m", "aiolmdb", "shell", str(path)],
        input=SCRIPT.encode(),
        capture_output=True,
        check=False,
        timeout=120,
    )
    out = proc.stdout.decode().splitlines()
    packed = MsgpackCoder().serialize({"customer": "ann", "total": 12}).hex()
    assert out == [
        "hello",
        '{"customer": "ann", "total": 12}',
        json.dumps({"key": "o-1", "value": {"customer": "ann", "total": 12}}),
        packed,
        "key: hex",
        "value: msgpack",
        "(main)",
        "orders",
    ]
    assert proc.returncode == 1  # the highest status: "get missing" found nothing
    err = proc.stderr.decode()
    assert "no database 'orders' yet: put creates it" in err
    assert "key not found: 00ff" in err  # hex: the argument as given
    assert "Traceback" not in err


def test_piped_errors_go_on_and_set_the_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "env"
    asyncio.run(_fill(path))
    script = "\n".join(
        [
            "frobnicate",
            "get 'unclosed",
            "format value yaml",
            "format value json --codec nope",
            "use a b",
            "scan --db orders --value-format msgpack",
            "get --help",
        ]
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(script + "\n"))
    assert main(["shell", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out.startswith('o-0\t{"customer": "zed"}\nusage: aiolmdb get')
    lines = err.splitlines()
    assert lines[0].startswith("aiolmdb: error: unknown command 'frobnicate'")
    assert lines[1].startswith("aiolmdb: error: cannot read the line")
    assert lines[2].startswith("aiolmdb: error: format key FMT or format value FMT")
    assert lines[3].startswith("aiolmdb: error: argument --codec: invalid choice: 'nope'")
    assert lines[4] == "aiolmdb: error: use takes one database name (none: the main database)"


class FakeTerminal:
    """The prompt on a pipe: keys typed into ``pipe``, output to nowhere."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from prompt_toolkit.input import create_pipe_input
        from prompt_toolkit.output import DummyOutput

        self._context = create_pipe_input()
        self.pipe = self._context.__enter__()
        monkeypatch.setattr(_cli, "_isatty", lambda stream: True)
        monkeypatch.setattr(
            _cli, "_prompt_io", lambda: {"input": self.pipe, "output": DummyOutput()}
        )

    def close(self) -> None:
        self._context.__exit__(None, None, None)


def test_interactive_prompt_with_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("prompt_toolkit")
    path = tmp_path / "env"
    asyncio.run(_fill(path))
    history = tmp_path / "state" / "history"
    terminal = FakeTerminal(monkeypatch)
    try:
        terminal.pipe.send_text("use orders\rget o-0 --value-format msgpack\rput x y\r")
        terminal.pipe.send_text("\x03")  # Ctrl-C at the prompt: a new line, not the end
        terminal.pipe.send_text("get x\r\x04")  # then Ctrl-D ends
        assert main(["shell", "--history", str(history), str(path)]) == 0
    finally:
        terminal.close()
    out, err = capsys.readouterr()
    assert out == '{"customer": "zed"}\ny\n'
    assert "Traceback" not in err
    saved = history.read_text()
    for line in ("use orders", "get o-0 --value-format msgpack", "put x y", "get x"):
        assert f"\n+{line}\n" in saved


def test_interactive_without_prompt_toolkit_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prompt_toolkit", None)
    monkeypatch.setattr(_cli, "_isatty", lambda stream: True)
    assert main(["shell", str(tmp_path / "env")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == (
        "aiolmdb: error: aiolmdb shell needs the 'prompt_toolkit' package: "
        "pip install 'aiolmdb[shell]' (or: pip install prompt_toolkit)"
    )


def test_history_path() -> None:
    assert _shell.history_path({"XDG_STATE_HOME": "/state"}) == "/state/aiolmdb/history"
    assert _shell.history_path({"HOME": "/home/u"}).endswith(".aiolmdb_history")


# ---------------------------------------------------------------------------- completion
def _shell_on(path: Path) -> _shell.Shell:
    host = _shell.ShellHost(
        run=_cli._shell_run,
        options=_cli._command_options(),
        databases=lambda: _cli._database_names(str(path)),
    )
    return _shell.Shell(str(path), host)


def test_completion_of_commands_options_formats_and_databases(tmp_path: Path) -> None:
    path = tmp_path / "env"
    asyncio.run(_fill(path))
    shell = _shell_on(path)
    complete = shell.completions.complete
    assert complete("") == [*_shell.COMMANDS, *_shell.OWN]
    assert complete("s") == ["scan", "stat"]
    assert complete("use ") == []  # not read yet
    asyncio.run(shell.refresh())
    # aiolmdb's own databases (the change log here) are not offered.
    assert complete("use ") == ["counts", "orders"]
    assert complete("use o") == ["orders"]
    assert complete("scan --db c") == ["counts"]
    assert complete("format ") == ["key", "value"]
    assert complete("format value m") == ["msgpack"]
    assert complete("get k --key-format u") == ["uint64", "uint32", "uint16"]
    assert complete("scan --li") == ["--limit"]
    assert complete("delete k --") == ["--base64", "--db", "--help", "--hex", "--key-format"]
    assert complete("format value json --c") == ["--codec", "--compressed"]
    assert complete("put k v --codec z") == ["zlib", "zstd"]
    assert complete("get some") == []


def test_the_prompt_toolkit_completer(tmp_path: Path) -> None:
    pytest.importorskip("prompt_toolkit")
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    path = tmp_path / "env"
    asyncio.run(_fill(path))
    shell = _shell_on(path)
    asyncio.run(shell.refresh())
    completer = _shell.make_completer(shell.completions)
    found = list(completer.get_completions(Document("use or"), CompleteEvent()))
    assert [(c.text, c.start_position) for c in found] == [("orders", -2)]
    found = list(completer.get_completions(Document("sc"), CompleteEvent()))
    assert [(c.text, c.start_position) for c in found] == [("scan", -2)]


def test_shell_defaults_give_way_to_the_line(tmp_path: Path) -> None:
    shell = _shell_on(tmp_path / "env")
    shell.db = "orders"
    shell.key_format = "tuple"
    shell.value_options = ["--value-format", "json", "--compressed"]
    path = str(tmp_path / "env")
    assert shell.argv("get", ["k"]) == [
        "get",
        path,
        "--db",
        "orders",
        "--key-format",
        "tuple",
        "--value-format",
        "json",
        "--compressed",
        "k",
    ]
    assert shell.argv("get", ["k", "--hex", "--db=other"]) == [
        "get",
        path,
        "k",
        "--hex",
        "--db=other",
    ]
    assert shell.argv("delete", ["k"]) == [
        "delete",
        path,
        "--db",
        "orders",
        "--key-format",
        "tuple",
        "k",
    ]
    assert shell.argv("stat", []) == ["stat", path, "--db", "orders"]


def test_own_commands_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "env"
    asyncio.run(_fill(path))
    script = [
        "help",
        "dbs",
        "use counts",
        "format key hex extra",
        "format key hex",
        "format value json --compressed --codec lz4",
        "format",
        "put 6b 5",
        "use",
        "get 6b --db counts",
        "exit",
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(script) + "\n"))
    assert main(["shell", str(path)]) == 2  # "format key hex extra"
    out, err = capsys.readouterr()
    assert out.startswith(_shell.HELP + "\n(main)\ncounts\norders\n")
    assert out.endswith("key: hex\nvalue: json --compressed --codec lz4\n5\n")
    assert err == "aiolmdb: error: format key takes a format only\n"


def test_ctrl_c_stops_a_running_command_not_the_shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("prompt_toolkit")
    path = tmp_path / "env"
    asyncio.run(_fill(path))
    started = threading.Event()
    run_command = _cli._shell_run

    async def run_and_tell(argv: list[str]) -> int:
        if argv[0] == "changes":
            started.set()
        return await run_command(argv)

    monkeypatch.setattr(_cli, "_shell_run", run_and_tell)

    def interrupt() -> None:  # Ctrl-C once the command runs
        if started.wait(60):
            os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Thread(target=interrupt, daemon=True)
    interrupter.start()
    terminal = FakeTerminal(monkeypatch)
    try:
        terminal.pipe.send_text(
            "changes --follow\rget greeting\rput greeting hi\rget greeting\r\x04"
        )
        assert main(["shell", "--no-history", str(path)]) == 0
    finally:
        terminal.close()
        interrupter.join(60)
    out, err = capsys.readouterr()
    assert started.is_set()
    assert out == "hi\n"  # the commands after the interrupted one ran
    assert "aiolmdb: interrupted" in err
    assert "key not found: greeting" in err
