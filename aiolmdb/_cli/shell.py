"""``aiolmdb shell PATH``: the command line's commands at a prompt, on one environment.

A line is a command of the ``aiolmdb`` command without its ``PATH`` (``get KEY``, ``scan
--prefix user:``, ``put KEY VALUE``...), plus the shell's own: ``use [DB]`` (the database the
commands work on), ``dbs``, ``format [key|value FMT [options]]`` (the formats used when a line
gives none), ``help`` and ``quit``. Each command opens the environment for itself, as the
command line does, so other processes' writes show at once.

On a terminal it is a prompt_toolkit prompt (the ``shell`` extra) with history and completion
of commands, options, formats and database names; with commands piped in (stdin not a
terminal) it runs them one per line and needs nothing more. This module knows nothing of the
commands themselves: :mod:`aiolmdb._cli.commands` hands it a :class:`ShellHost` (no import
cycle between the two).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from .formats import FORMATS

__all__ = ["COMMANDS", "Completions", "Shell", "ShellHost", "history_path", "make_completer"]

# The command line's commands a shell line may run (PATH is the shell's).
COMMANDS: Final = ("get", "put", "delete", "scan", "changes", "stat")
# The shell's own.
OWN: Final = ("use", "dbs", "format", "help", "quit", "exit")
KEY_OPTIONS: Final = frozenset({"--key-format", "--hex", "--base64"})
VALUE_OPTIONS: Final = frozenset(
    {"--value-format", "--hex", "--base64", "--compressed", "--codec", "--zstd-dict", "--max-size"}
)
HISTORY_FILE: Final = ".aiolmdb_history"

HELP: Final = """\
Commands (as `aiolmdb COMMAND --help` says, without PATH; `COMMAND --help` shows them):
  get KEY, put KEY VALUE, delete KEY, scan [--prefix P] [--limit N]..., changes [...], stat
The shell's own:
  use [DB]                 work on database DB (none: the main database)
  dbs                      list the databases
  format                   show the formats in use
  format key FMT           the key format when a line gives none
  format value FMT [--compressed] [--codec C] [--zstd-dict FILE] [--max-size N]
  help, quit (or Ctrl-D)
Formats: """ + ", ".join(FORMATS)


@dataclass
class ShellHost:
    """What the shell needs from the command line: run one command's arguments (its exit
    status; errors already reported on stderr), the options each command takes, and the
    databases of the environment (an empty list when it cannot be read)."""

    run: Callable[[list[str]], Awaitable[int]]
    options: dict[str, list[str]]
    databases: Callable[[], Awaitable[list[str]]]
    value_options: Callable[[list[str]], Any] = field(default=lambda argv: argv)
    """Checks ``format value``'s options (raises ValueError with the reason)."""


def history_path(environ: dict[str, str] | None = None) -> str:
    """Where the shell keeps its history: ``$XDG_STATE_HOME/aiolmdb/history`` when that is
    set, else ``~/.aiolmdb_history``."""
    environ = dict(os.environ) if environ is None else environ
    state = environ.get("XDG_STATE_HOME")
    if state:
        return os.path.join(state, "aiolmdb", "history")
    return os.path.join(os.path.expanduser("~"), HISTORY_FILE)


class Completions:
    """What completes the word under the cursor: commands first, then their options, formats
    after ``--key-format``/``--value-format``/``format key|value``, database names after
    ``use`` and ``--db``."""

    def __init__(self, options: dict[str, list[str]]) -> None:
        self._options = options
        self.databases: list[str] = []

    def words(self, line: str) -> tuple[str, list[str]]:
        """The word being typed at the end of ``line`` and the words that may complete it."""
        words = line.split()
        if not line or line[-1].isspace():
            words.append("")
        current, before = words[-1], words[:-1]
        if not before:
            return current, [*COMMANDS, *OWN]
        command, last = before[0], before[-1]
        if last == "--db" or (command == "use" and len(before) == 1):
            return current, self.databases
        if last in ("--key-format", "--value-format") or (
            command == "format" and len(before) == 2 and before[1] in ("key", "value")
        ):
            return current, list(FORMATS)
        if command == "format" and len(before) == 1:
            return current, ["key", "value"]
        if last == "--codec":
            return current, ["zlib", "zstd", "lz4"]
        if current.startswith("-"):
            if command == "format" and before[1:2] == ["value"]:
                return current, sorted(VALUE_OPTIONS - {"--value-format", "--hex", "--base64"})
            return current, self._options.get(command, [])
        return current, []

    def complete(self, line: str) -> list[str]:
        """The candidates for the word being typed at the end of ``line``."""
        current, candidates = self.words(line)
        return [c for c in candidates if c.startswith(current)]


def make_completer(completions: Completions) -> Any:
    """A prompt_toolkit completer over ``completions`` (ImportError without prompt_toolkit)."""
    from prompt_toolkit.completion import CompleteEvent, Completer, Completion
    from prompt_toolkit.document import Document

    class ShellCompleter(Completer):
        """prompt_toolkit's side of :class:`Completions`."""

        def get_completions(
            self, document: Document, complete_event: CompleteEvent
        ) -> Iterable[Completion]:
            current, _ = completions.words(document.text_before_cursor)
            for candidate in completions.complete(document.text_before_cursor):
                yield Completion(candidate, start_position=-len(current))

    return ShellCompleter()


class Shell:
    """The shell's state (database, default formats) and one line's execution."""

    def __init__(self, path: str, host: ShellHost) -> None:
        self.path = path
        self.host = host
        self.db: str | None = None
        self.key_format: str | None = None
        self.value_options: list[str] = []
        self.completions = Completions(host.options)
        self.done = False

    @property
    def prompt(self) -> str:
        """``aiolmdb> `` or ``aiolmdb:DB> ``."""
        return "aiolmdb> " if self.db is None else f"aiolmdb:{self.db}> "

    async def refresh(self) -> None:
        """Read the database names again (for completion)."""
        self.completions.databases = await self.host.databases()

    def argv(self, command: str, words: list[str]) -> list[str]:
        """The command line's arguments for a shell line: PATH, then the shell's database and
        formats where the line gives none and the command takes them, then the line's."""
        takes = set(self.host.options.get(command, []))
        given = {word.split("=", 1)[0] for word in words if word.startswith("--")}
        defaults: list[str] = []
        if self.db is not None and "--db" in takes and "--db" not in given:
            defaults += ["--db", self.db]
        if self.key_format and "--key-format" in takes and not given & KEY_OPTIONS:
            defaults += ["--key-format", self.key_format]
        if self.value_options and "--value-format" in takes and not given & VALUE_OPTIONS:
            defaults += self.value_options
        return [command, self.path, *defaults, *words]

    async def execute(self, line: str) -> int:
        """Run one line; its exit status (0 for a blank line or a comment)."""
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            return _fail(f"cannot read the line: {exc}")
        if not words:
            return 0
        command, rest = words[0], words[1:]
        if command in ("quit", "exit"):
            self.done = True
            return 0
        if command == "help":
            print(HELP)
            return 0
        if command == "use":
            return await self._use(rest)
        if command == "dbs":
            await self.refresh()
            print("(main)")
            for name in self.completions.databases:
                print(name)
            return 0
        if command == "format":
            return self._format(rest)
        if command not in COMMANDS:
            known = ", ".join((*COMMANDS, *OWN))
            return _fail(f"unknown command {command!r}: one of {known} (help)")
        status = await self.host.run(self.argv(command, rest))
        if command == "put":
            await self.refresh()  # it may have made a database
        return status

    async def _use(self, rest: list[str]) -> int:
        if len(rest) > 1:
            return _fail("use takes one database name (none: the main database)")
        await self.refresh()
        if rest and rest[0] not in self.completions.databases:
            print(
                f"aiolmdb: no database {rest[0]!r} yet: put creates it, the other commands "
                "report it missing",
                file=sys.stderr,
            )
        self.db = rest[0] if rest else None
        return 0

    def _format(self, rest: list[str]) -> int:
        if not rest:
            values = " ".join(self.value_options[1:]) if self.value_options else "str"
            print(f"key: {self.key_format or 'str'}\nvalue: {values}")
            return 0
        side, options = rest[0], rest[1:]
        if side not in ("key", "value") or not options or options[0] not in FORMATS:
            return _fail(
                f"format key FMT or format value FMT [options], with FMT one of "
                f"{', '.join(FORMATS)}"
            )
        if side == "key":
            if len(options) > 1:
                return _fail("format key takes a format only")
            self.key_format = options[0]
            return 0
        argv = ["--value-format", *options]
        try:
            self.host.value_options(argv)
        except ValueError as exc:
            return _fail(str(exc))
        self.value_options = argv
        return 0


def _fail(message: str) -> int:
    print(f"aiolmdb: error: {message}", file=sys.stderr)
    return 2


async def run_batch(shell: Shell) -> int:
    """Run the lines of stdin (not a terminal); the highest exit status of its commands."""
    loop = asyncio.get_running_loop()
    status = 0
    while not shell.done:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        status = max(status, await shell.execute(line))
        sys.stdout.flush()
    return status


async def run_interactive(shell: Shell, history: str | None, **session: Any) -> int:
    """The prompt on a terminal until ``quit`` or Ctrl-D; Ctrl-C clears the line, or stops the
    command running (``changes --follow``). ``session``: more PromptSession options (tests
    give an input and an output)."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    if history is not None:
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(history) or ".", exist_ok=True)
    prompt: PromptSession[str] = PromptSession(
        history=InMemoryHistory() if history is None else FileHistory(history),
        completer=make_completer(shell.completions),
        complete_while_typing=False,
        **session,
    )
    await shell.refresh()
    loop = asyncio.get_running_loop()
    while not shell.done:
        try:
            line = await prompt.prompt_async(shell.prompt)
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        task = asyncio.ensure_future(shell.execute(line))
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            print("aiolmdb: interrupted", file=sys.stderr)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGINT)
    return 0
