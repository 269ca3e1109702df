"""The ``aiolmdb`` command line (``python -m aiolmdb``): inspect, edit, dump, load and copy
LMDB environments. See ``docs/cli.md`` for the reference.

Exit statuses: 0 success, 1 a key was not found (``get``, ``delete``), 2 usage or any other
error. Errors are one ``aiolmdb: error: ...`` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import stat as stat_module
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

import lmdb

from .. import DatabaseInfo, Entry
from .._codecs.common import missing
from .._codecs.compress import MAX_SIZE, Codec
from .._store.dumplog import parse_log_id, restore_records, stored_log_id, stored_records
from .._store.expiry import INDEX_NAME, restore_stored, stored_entries
from .._store.meta import LOG_NAME, META_NAME, has_log
from .._store.versions import MAX_VERSION, restore_counter, split, stored_counter, stored_value
from ..coders import Coder, IdentityCoder
from ..database import AsyncDatabase
from ..environment import Environment
from ..environment import open as open_environment
from ..errors import Error as AiolmdbError
from . import dumpfmt as _dumpfmt
from . import formats as _fmt
from . import shell as _shell
from .replicate import add_replicate_commands

__all__ = ["main"]

PROG = "aiolmdb"
EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_ERROR = 2

# Named databases the CLI can open at once (LMDB's max_dbs; each costs a few bytes per txn).
MAX_DBS = 1024
# Map size of an environment the CLI creates (it grows on demand).
DEFAULT_MAP_SIZE = 64 * 1024 * 1024
LOAD_CHUNK = 10_000
LOAD_IN_FLIGHT = 4
DUMP_BATCH = 10_000
SCAN_BATCH = 1_000

DB = AsyncDatabase[bytes, bytes]
# The dump header line of a versioned database (its values are dumped as stored).
VERSIONED_KEY = "aiolmdb_versioned"
VERSIONED_HEADER = {VERSIONED_KEY: "1"}
# The change log's block carries the highest sequence number trimmed (the numbers go on
# after it even when the log is empty).
CHANGES_TRIMMED_KEY = "aiolmdb_changes_trimmed"
# ... and the log's identity (hex), which load keeps: followers see the same log.
CHANGELOG_ID_KEY = "aiolmdb_changelog_id"
# The dump header line of an expiring database: its default ttl in seconds (its values are
# dumped as stored, expiry first; expired ones are left out).
TTL_KEY = "aiolmdb_ttl"
# Every block carries the environment's version counter (when it has one): a deleted entry may
# have had the highest version ever issued, and load must never issue it again.
LAST_VERSION_KEY = "aiolmdb_last_version"


class CLIError(Exception):
    """A failure reported as one line on stderr, with the exit status to use."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# ---------------------------------------------------------------------------- output
def _emit(data: bytes) -> None:
    """Write bytes to stdout (its binary buffer when there is one)."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is not None:
        sys.stdout.flush()
        buffer.write(data)
    else:  # a text-only stream (e.g. a StringIO)
        sys.stdout.write(data.decode("utf-8", "surrogateescape"))


def _emit_text(text: str) -> None:
    """Write text to stdout as UTF-8, whatever the locale."""
    _emit(text.encode("utf-8", "surrogateescape"))


def _flush_stdout() -> None:
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is not None:
        buffer.flush()


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _short(data: bytes, limit: int = 40) -> str:
    shown = repr(data[:limit])
    return shown + ("..." if len(data) > limit else "")


# ---------------------------------------------------------------------------- formats
@dataclass
class Formats:
    """The formats of one command: keys, values (with their compression), and how what they
    cannot show is shown (:class:`~aiolmdb._cli.formats.Shown`)."""

    keys: _fmt.Format
    values: _fmt.ValueCodec

    def shown(self, *, escape: bool) -> _fmt.Shown:
        """A fresh :class:`Shown` (it counts the fallbacks of one output)."""
        return _fmt.Shown(self.keys, self.values, escape)


def _format_name(text: str) -> str:
    """``--key-format``/``--value-format``'s argument checked (argparse: exit 2 if unknown)."""
    if text == "bytes":  # before 0.3 the default of --key-format: the --hex/--base64 bytes
        return text
    if text not in _fmt.FORMATS:
        raise argparse.ArgumentTypeError(
            f"unknown format {text!r}: use one of {', '.join(_fmt.FORMATS)}"
        )
    return text


def _compression(args: argparse.Namespace) -> Coder[bytes] | None:
    """The compressed coder of ``--compressed`` (None without it): it reads every stored form
    (zlib, zstd, LZ4, uncompressed) and writes ``--codec``'s, as ``Coder.compressed`` does."""
    dict_file: str | None = getattr(args, "zstd_dict", None)
    chosen: Codec | None = getattr(args, "codec", None)
    if not getattr(args, "compressed", False) and dict_file is None and chosen is None:
        return None
    codec: Codec = chosen or ("zstd" if dict_file is not None else "zlib")
    zstd_dict = None
    if dict_file is not None:
        if codec != "zstd":
            raise CLIError(f"--zstd-dict needs --codec zstd, not --codec {codec}")
        try:
            with open(dict_file, "rb") as stream:
                zstd_dict = stream.read()
        except OSError as exc:
            raise CLIError(f"cannot read the zstd dictionary {dict_file}: {exc.strerror}") from None
    max_size = args.max_size or None  # 0: no bound
    try:
        return IdentityCoder().compressed(codec=codec, zstd_dict=zstd_dict, max_size=max_size)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise CLIError(f"--zstd-dict {dict_file}: {exc}") from None


def _formats(args: argparse.Namespace) -> Formats:
    """The key and value formats of a command: ``--key-format``/``--value-format``, then the
    deprecated ``--hex``/``--base64`` for the side not given, then ``str``."""
    legacy: str | None = getattr(args, "encoding", None)
    key_name = getattr(args, "key_format", None)
    value_name = getattr(args, "value_format", None)
    key_name = (legacy or "str") if key_name in (None, "bytes") else key_name
    value_name = (legacy or "str") if value_name is None else value_name
    if value_name == "bytes":
        raise CLIError("--value-format bytes is not a format: use str, hex or base64")
    try:
        keys = _fmt.make_format(key_name)
        values = _fmt.make_format(value_name)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    return Formats(keys, _fmt.ValueCodec(values, _compression(args)))


def _warn_fallbacks(shown: _fmt.Shown) -> None:
    warning = shown.warning()
    if warning is not None:
        _warn(warning)


def _emit_json(record: dict[str, Any]) -> None:
    _emit_text(json.dumps(record, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------- progress
class Progress:
    """A progress bar on stderr when it is a terminal and ``rich`` is installed; otherwise
    it does nothing."""

    def __init__(self, description: str, total: int | None, *, enabled: bool = True) -> None:
        self._bar: Any = None
        self._task: Any = None
        if not enabled or not _isatty(sys.stderr):
            return
        try:
            from rich.console import Console
            from rich.progress import Progress as RichProgress
        except ImportError:
            return
        self._bar = RichProgress(console=Console(file=sys.stderr), transient=True)
        self._task = self._bar.add_task(description, total=total)

    @property
    def active(self) -> bool:
        """True when a bar is shown."""
        return self._bar is not None

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, amount: int) -> None:
        """Count ``amount`` more units done."""
        if self._bar is not None:
            self._bar.advance(self._task, amount)

    def update(self, completed: int) -> None:
        """Set how many units are done."""
        if self._bar is not None:
            self._bar.update(self._task, completed=completed)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


# ---------------------------------------------------------------------------- environments
def _existing_env(path: str) -> bool:
    """Check that ``path`` holds an LMDB environment; return True for a directory (subdir)."""
    if not os.path.exists(path):
        raise CLIError(f"no LMDB environment at {path}: the path does not exist")
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "data.mdb")):
            raise CLIError(f"{path} is not an LMDB environment: it holds no data.mdb")
        return True
    return False


def _open_env(
    path: str,
    *,
    write: bool = False,
    create: bool = False,
    map_size: int | None = None,
    max_readers: int | None = None,
) -> Environment:
    """Open the environment at ``path``; read-only unless ``write``. Only ``create`` makes a
    new one (a missing path or an empty directory). A writer of an environment with a change
    log opens it with ``changelog=True``: its writes are logged."""
    kwargs: dict[str, Any] = {"max_dbs": MAX_DBS}
    is_new = create and (
        not os.path.exists(path)
        or (os.path.isdir(path) and not os.path.exists(os.path.join(path, "data.mdb")))
    )
    if is_new:
        kwargs["subdir"] = True
        kwargs["map_size"] = map_size or DEFAULT_MAP_SIZE
        if max_readers:
            kwargs["max_readers"] = max_readers
    else:
        kwargs["subdir"] = _existing_env(path)
        kwargs["map_size"] = 0  # 0: the size recorded in the environment
    if not write:
        kwargs.update(readonly=True, lock=True)
    elif not is_new and _logged(path):
        kwargs["changelog"] = True
    return open_environment(path, **kwargs)


def _logged(path: str) -> bool:
    """Whether ``path`` holds an environment that records its changes (a brief read-only
    open of its own, closed before aiolmdb opens it: one process opens a path once)."""
    if not os.path.exists(path) or (
        os.path.isdir(path) and not os.path.exists(os.path.join(path, "data.mdb"))
    ):
        return False
    env = lmdb.open(
        path, subdir=os.path.isdir(path), readonly=True, lock=True, max_dbs=MAX_DBS, map_size=0
    )
    try:
        return has_log(env)
    finally:
        env.close()


@dataclass
class DbInfo:
    """A database found in an environment: its name (None: the main database), the py-lmdb
    flags that are set, and its LMDB statistics."""

    name: bytes | None
    flags: dict[str, Any]
    stat: dict[str, int]

    @property
    def dump_flags(self) -> list[str]:
        """The flags under their mdb_dump names."""
        by_lmdb = {v: k for k, v in _dumpfmt.FLAG_NAMES.items() if v is not None}
        return [by_lmdb[name] for name in self.flags if name in by_lmdb]


def _name_text(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def _db_info(found: DatabaseInfo) -> DbInfo:
    flags: dict[str, Any] = dict.fromkeys(sorted(found.flags), True)
    if found.ttl is not None:
        flags["ttl"] = found.ttl  # open_db(**flags) opens it
    return DbInfo(found.key, flags, dict(found.stat))


async def _databases(env: Environment) -> list[DbInfo]:
    """The main database first, then every named database, in key order."""
    return [_db_info(found) for found in await env.databases(include_internal=True)]


async def _lookup(env: Environment, name: str) -> DbInfo | None:
    """The named database ``name``, or None if it does not exist."""
    if not name:
        raise CLIError("a database name cannot be empty")
    encoded = name.encode("utf-8", "surrogateescape")
    try:
        found = await env.database_info(encoded)
    except ValueError:
        raise CLIError(
            f"{name!r} is a key of the main database of {env.path}, not a database"
        ) from None
    return None if found is None else _db_info(found)


async def _open_database(env: Environment, name: str | None, *, create: bool = False) -> DB:
    """The database ``name`` (None: the main one) with its real flags; create=True makes a
    missing one, otherwise it is an error."""
    if name is None:
        return env.get_default_database()
    info = await _lookup(env, name)
    encoded = name.encode("utf-8", "surrogateescape")
    if info is None:
        if not create:
            raise CLIError(f"no database {name!r} in {env.path}")
        return await env.open_db(encoded)
    return await env.open_db(encoded, create=False, **info.flags)


# ---------------------------------------------------------------------------- stat
def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _active_readers(table: str) -> list[dict[str, Any]]:
    """The slots of LMDB's reader table holding a read transaction (``env.readers()``: a
    header, then ``pid thread txnid`` per slot, ``-`` for a free one), oldest first."""
    readers = []
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) == 3 and fields[2] != "-":
            readers.append({"pid": int(fields[0]), "thread": fields[1], "txnid": int(fields[2])})
    return sorted(readers, key=lambda r: (r["txnid"], r["pid"]))


def _stat_report(env: Environment, infos: list[DbInfo]) -> dict[str, Any]:
    info = env.info()
    psize = int(env.lmdb_environment.stat()["psize"])
    used = (int(info["last_pgno"]) + 1) * psize
    readers = _active_readers(env.readers())
    return {
        "path": env.path,
        "page_size": psize,
        "map_size": int(info["map_size"]),
        "map_used": used,
        "last_pgno": int(info["last_pgno"]),
        "last_txnid": int(info["last_txnid"]),
        "max_readers": int(info["max_readers"]),
        "num_readers": int(info["num_readers"]),
        "readers": readers,
        "max_key_size": env.max_key_size(),
        "databases": [
            {
                "name": None if db.name is None else _name_text(db.name),
                "entries": db.stat["entries"],
                "depth": db.stat["depth"],
                "branch_pages": db.stat["branch_pages"],
                "leaf_pages": db.stat["leaf_pages"],
                "overflow_pages": db.stat["overflow_pages"],
                "flags": sorted(db.flags),
            }
            for db in infos
        ],
    }


def _format_stat(report: dict[str, Any]) -> str:
    map_size = report["map_size"]
    used = report["map_used"]
    share = 100.0 * used / map_size if map_size else 0.0
    lines = [
        f"environment   {report['path']}",
        f"map size      {_human(map_size)} ({map_size} bytes)",
        f"map used      {_human(used)} ({report['last_pgno'] + 1} pages of "
        f"{report['page_size']} bytes, {share:.1f}%)",
        f"last txn id   {report['last_txnid']}",
        f"readers       {report['num_readers']} of {report['max_readers']} slots in use",
        f"max key size  {report['max_key_size']} bytes",
        "",
    ]
    header = ("database", "entries", "depth", "branch", "leaf", "overflow", "size", "flags")
    rows = [header]
    for db in report["databases"]:
        pages = db["branch_pages"] + db["leaf_pages"] + db["overflow_pages"]
        rows.append(
            (
                "(main)" if db["name"] is None else db["name"],
                str(db["entries"]),
                str(db["depth"]),
                str(db["branch_pages"]),
                str(db["leaf_pages"]),
                str(db["overflow_pages"]),
                _human(pages * report["page_size"]),
                ",".join(db["flags"]) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:-1], strict=True)]
        cells.append(row[-1])
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


async def cmd_stat(args: argparse.Namespace) -> int:
    """``stat PATH``: environment and per-database statistics."""
    async with _open_env(args.path) as env:
        if args.db is None:
            infos = await _databases(env)
        else:
            found = await _lookup(env, args.db)
            if found is None:
                raise CLIError(f"no database {args.db!r} in {env.path}")
            infos = [found]
        report = _stat_report(env, infos)
    if args.json:
        _emit_text(json.dumps(report, indent=2) + "\n")
    else:
        _emit_text(_format_stat(report))
    return EXIT_OK


# ---------------------------------------------------------------------------- get/put/delete
def _not_found(what: str) -> int:
    print(f"{PROG}: {what}", file=sys.stderr)
    return EXIT_NOT_FOUND


async def cmd_get(args: argparse.Namespace) -> int:
    """``get PATH KEY``: print the value (every value, one per line, in a dupsort database)."""
    formats = _formats(args)
    key = formats.keys.parse(args.key, "key")
    async with _open_env(args.path) as env:
        db = await _open_database(env, args.db)
        versions: list[int | None] = []
        if db.dupsort:
            values = await db.get_all(key)
        elif db.versioned:
            entry = await db.get_entry(key)
            values = [] if entry is None else [entry.value]
            versions = [] if entry is None else [entry.version]
        else:
            value = await db.get(key)
            values = [] if value is None else [value]
    if not values:
        return _not_found(f"key not found: {args.key}")
    shown = formats.shown(escape=False)
    if args.json:
        for i, value in enumerate(values):
            record: dict[str, Any] = {}
            shown.key_json(key, record)
            if versions:
                record["version"] = versions[i]
            shown.value_json(value, record)
            _emit_json(record)
    else:
        version = f"{versions[0]}\t" if versions else ""
        _emit_text("".join(version + shown.value_text(v) + "\n" for v in values))
    _warn_fallbacks(shown)
    return EXIT_OK


async def cmd_put(args: argparse.Namespace) -> int:
    """``put PATH KEY VALUE``: store a value (creating the environment or database if
    needed)."""
    formats = _formats(args)
    key = formats.keys.parse(args.key, "key")
    value = formats.values.parse(args.value, "value")
    async with _open_env(args.path, write=True, create=True) as env:
        db = await _open_database(env, args.db, create=True)
        await db.put(key, value)
    return EXIT_OK


async def cmd_delete(args: argparse.Namespace) -> int:
    """``delete PATH KEY``: delete a key (every value of it in a dupsort database)."""
    key = _formats(args).keys.parse(args.key, "key")
    async with _open_env(args.path, write=True) as env:
        db = await _open_database(env, args.db)
        existed = await db.delete(key)
    if not existed:
        return _not_found(f"key not found: {args.key}")
    return EXIT_OK


# ---------------------------------------------------------------------------- scan
def _key_range(
    keys: _fmt.Format, start: bytes | None, stop: bytes | None, prefix: bytes | None
) -> tuple[bytes | None, bytes | None]:
    """``[start, stop)`` narrowed to the keys that start with ``prefix``, by the key format's
    own coder (a tuple prefix selects whole elements, as ``items(prefix=)`` does)."""
    if prefix is None:
        return start, stop
    end = keys.prefix_end(prefix)
    start = prefix if start is None else max(start, prefix)
    if end is not None:
        stop = end if stop is None else min(stop, end)
    return start, stop


async def cmd_scan(args: argparse.Namespace) -> int:
    """``scan PATH``: one ``key<TAB>value`` line (or JSON line) per entry of a key range."""
    formats = _formats(args)
    keys = formats.keys
    start = None if args.start is None else keys.parse(args.start, "--start")
    stop = None if args.stop is None else keys.parse(args.stop, "--stop")
    prefix = None if args.prefix is None else keys.parse(args.prefix, "--prefix")
    start, stop = _key_range(keys, start, stop, prefix)
    shown = formats.shown(escape=not args.json)

    def line(key: bytes, value: bytes, version: int | None) -> str:
        if args.json:
            record: dict[str, Any] = {}
            shown.key_json(key, record)
            if version is not None:
                record["version"] = version
            shown.value_json(value, record)
            return json.dumps(record, ensure_ascii=False) + "\n"
        middle = "\t" if version is None else f"\t{version}\t"
        return shown.key_text(key) + middle + shown.value_text(value) + "\n"

    async with _open_env(args.path) as env:
        db = await _open_database(env, args.db)
        if start is not None and stop is not None and start >= stop:
            pass  # an empty range (a prefix outside [START, STOP))
        elif db.versioned:
            versioned = db.entries(start, stop, reverse=args.reverse, limit=args.limit)
            async for found in versioned.batches(SCAN_BATCH):
                _emit_text("".join(line(k, e.value, e.version) for k, e in found))
        else:
            entries = db.items(start, stop, reverse=args.reverse, limit=args.limit)
            async for batch in entries.batches(SCAN_BATCH):
                _emit_text("".join(line(k, v, None) for k, v in batch))
    _warn_fallbacks(shown)
    return EXIT_OK


# ---------------------------------------------------------------------------- changes
# The Change fields shown under their own rules; any other field (a later aiolmdb's) is
# copied into the JSON line as it is.
_CHANGE_FIELDS = frozenset({"seq", "db", "key", "kind", "value"})


class _StoredLayouts:
    """What a database stores before a value, by name: a versioned database its 8-byte
    version (shown as ``version``). Looked up once per database, also for one that appears
    while following. (Expiring databases, when they store an expiry with the value, belong
    here too.)"""

    def __init__(self, env: Environment) -> None:
        self._env = env
        self._versioned: dict[str | None, bool] = {None: False}

    async def split(
        self, name: str | None, key: bytes | None, raw: bytes | None
    ) -> tuple[int | None, bytes | None]:
        """(version or None, the value) of a change's stored value."""
        if raw is None or key is None:
            return None, raw
        versioned = self._versioned.get(name)
        if versioned is None:
            try:
                info = None if name is None else await _lookup(self._env, name)
            except CLIError:  # the name is a plain key now: the database is gone
                info = None
            versioned = info is not None and bool(info.flags.get("versioned"))
            self._versioned[name] = versioned
        if not versioned:
            return None, raw
        try:
            version, value = split(key, raw)
        except ValueError:
            return None, raw  # shown as stored
        return version, bytes(value)


async def _change_record(change: Any, shown: _fmt.Shown, layouts: _StoredLayouts) -> dict[str, Any]:
    """One change as the JSON object of its line."""
    record: dict[str, Any] = {"seq": change.seq, "db": change.db, "kind": change.kind}
    shown.key_json(change.key, record)
    version, value = await layouts.split(change.db, change.key, change.value)
    if version is not None:
        record["version"] = version
    shown.value_json(value, record)
    for field in change._fields:
        if field not in _CHANGE_FIELDS:
            record[field] = _fmt.jsonable(getattr(change, field))
    return record


async def cmd_changes(args: argparse.Namespace) -> int:
    """``changes PATH``: the change log as JSON lines (``--follow``: then new changes)."""
    formats = _formats(args)
    prefix = None if args.prefix is None else formats.keys.parse(args.prefix, "--prefix")
    # Without --follow, the whole log (there is nothing else to print); with it, as
    # env.changes(): from now on. --since N starts after N either way.
    since = args.since
    if since is None and not args.follow:
        since = 0
    shown = formats.shown(escape=False)
    async with _open_env(args.path) as env:
        if args.db is not None and await _lookup(env, args.db) is None:
            raise CLIError(f"no database {args.db!r} in {env.path}")
        layouts = _StoredLayouts(env)
        feed = env.changes(since, db=args.db, prefix=prefix, follow=args.follow)
        async for change in feed:
            _emit_json(await _change_record(change, shown, layouts))
            if args.follow:
                _flush_stdout()
    _warn_fallbacks(shown)
    return EXIT_OK


# ---------------------------------------------------------------------------- dump
@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    """The dump's destination: the file ``path`` (removed again on failure) or stdout."""
    if path is None or path == "-":
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:
            raise CLIError("stdout takes no bytes here: use -o FILE")
        sys.stdout.flush()
        yield buffer
        buffer.flush()
        return
    try:
        stream = open(path, "wb")  # noqa: SIM115 - closed below, removed on failure
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        yield stream
    except BaseException:
        stream.close()
        with contextlib.suppress(OSError):
            if stat_module.S_ISREG(os.stat(path).st_mode):
                os.remove(path)
        raise
    stream.close()


async def cmd_dump(args: argparse.Namespace) -> int:
    """``dump PATH``: write the main database (or ``--db``, or ``--all``) in mdb_dump's
    format."""
    if args.all and args.db is not None:
        raise CLIError("--all and --db exclude each other")
    async with _open_env(args.path) as env:
        catalogue: set[bytes | None] = set()
        if args.db is not None:
            found = await _lookup(env, args.db)
            if found is None:
                raise CLIError(f"no database {args.db!r} in {env.path}")
            selected = [found]
        else:
            every = await _databases(env)
            catalogue = {db.name for db in every if db.name is not None}
            # aiolmdb's metadata and expiry index are not data: load rebuilds them from the
            # versioned and expiring blocks.
            every = [db for db in every if db.name not in (META_NAME, INDEX_NAME)]
            selected = every if args.all else every[:1]
            if catalogue and not args.all:
                _warn(
                    f"skipping the records of {len(catalogue)} named database(s) in the main "
                    "database: use --all to dump them"
                )
            if every[0].flags.get("dupsort"):
                raise CLIError("cannot dump a dupsort main database")
            # The change log first: a load into an environment with a log of its own is
            # refused before it loads anything.
            selected.sort(key=lambda db: db.name != LOG_NAME)
        info = env.info()
        psize = int(env.lmdb_environment.stat()["psize"])
        lmdb_env = env.lmdb_environment
        counter = await env.run(lambda txn: stored_counter(lmdb_env, txn.raw))
        counter_line = {LAST_VERSION_KEY: str(counter)} if counter else {}
        total = sum(db.stat["entries"] for db in selected)
        if any(db.name is None for db in selected):
            total -= len(catalogue)
        if args.db is not None and selected[0].name in (META_NAME, INDEX_NAME):
            raise CLIError(f"{args.db!r} is aiolmdb's metadata database, not data")
        with (
            _output(args.output) as out,
            Progress(
                "dump", total, enabled=args.output is not None or not _isatty(sys.stdout)
            ) as progress,
        ):
            for db_info in selected:
                extra = dict(VERSIONED_HEADER) if db_info.flags.get("versioned") else {}
                if db_info.flags.get("ttl") is not None:
                    extra[TTL_KEY] = repr(float(db_info.flags["ttl"]))
                records: list[tuple[bytes, bytes]] = []
                if db_info.name == LOG_NAME:
                    records, trimmed = await _log_records(env, None)
                    extra = {CHANGES_TRIMMED_KEY: str(trimmed)}
                    identity = await _log_identity(env)
                    if identity is not None:
                        extra[CHANGELOG_ID_KEY] = identity
                extra.update(counter_line)
                out.write(
                    _dumpfmt.format_header(
                        database=db_info.name,
                        mapsize=int(info["map_size"]),
                        maxreaders=int(info["max_readers"]),
                        pagesize=psize,
                        flags=db_info.dump_flags,
                        printable=args.printable,
                        extra=extra,
                    )
                )
                if db_info.name == LOG_NAME:
                    # The change log as stored: load restores it, numbers and all.
                    while records:
                        out.write(_dumpfmt.format_pairs(records, args.printable))
                        progress.advance(len(records))
                        records, _ = await _log_records(env, records[-1][0])
                    out.write(_dumpfmt.DATA_END)
                    continue
                if db_info.name is None:
                    db = env.get_default_database()
                    skip = catalogue
                else:
                    db = await env.open_db(db_info.name, create=False, **db_info.flags)
                    skip = set()
                if db.ttl is not None:
                    # Values as stored (expiry first), as for versions below.
                    assert db_info.name is not None  # the default database never expires
                    stored = await _expiring_records(env, db_info.name, None)
                    while stored:
                        out.write(_dumpfmt.format_pairs(stored, args.printable))
                        progress.advance(len(stored))
                        stored = await _expiring_records(env, db_info.name, stored[-1][0])
                    out.write(_dumpfmt.DATA_END)
                    continue
                if db.versioned:
                    # Values as stored (version first): mdb_load loads them as raw bytes,
                    # aiolmdb load restores the versions.
                    async for stamped in db.entries().batches(DUMP_BATCH):
                        raw = [(k, stored_value(e.version, e.value)) for k, e in stamped]
                        out.write(_dumpfmt.format_pairs(raw, args.printable))
                        progress.advance(len(raw))
                    out.write(_dumpfmt.DATA_END)
                    continue
                async for batch in db.items().batches(DUMP_BATCH):
                    if skip:
                        batch = [pair for pair in batch if pair[0] not in skip]
                    out.write(_dumpfmt.format_pairs(batch, args.printable))
                    progress.advance(len(batch))
                out.write(_dumpfmt.DATA_END)
    return EXIT_OK


async def _log_records(
    env: Environment, after: bytes | None
) -> tuple[list[tuple[bytes, bytes]], int]:
    """The change log's records after the key ``after`` as stored (a batch) and the highest
    sequence number trimmed."""
    lmdb_env = env.lmdb_environment
    return await env.run(lambda txn: stored_records(lmdb_env, txn.raw, after, DUMP_BATCH))


async def _expiring_records(
    env: Environment, name: bytes, after: bytes | None
) -> list[tuple[bytes, bytes]]:
    """An expiring database's entries after the key ``after`` as stored (a batch)."""
    lmdb_env = env.lmdb_environment
    return await env.run(lambda txn: stored_entries(lmdb_env, txn.raw, name, after, DUMP_BATCH))


async def _log_identity(env: Environment) -> str | None:
    """The change log's identity (hex; None: a log older than identities)."""
    lmdb_env = env.lmdb_environment
    return await env.run(lambda txn: stored_log_id(lmdb_env, txn.raw))


# ---------------------------------------------------------------------------- load
@contextlib.contextmanager
def _input(path: str | None) -> Iterator[tuple[IO[bytes], int | None]]:
    """The load's source and its size when known: the file ``path`` or stdin."""
    if path is None or path == "-":
        buffer = getattr(sys.stdin, "buffer", None)
        if buffer is None:
            raise CLIError("stdin gives no bytes here: name a FILE")
        yield buffer, None
        return
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None
    with stream:
        size = os.fstat(stream.fileno()).st_size
        yield stream, size if size > 0 else None


def _lmdb_flags(header: _dumpfmt.DumpHeader, label: str) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for name in header.flags:
        lmdb_name = _dumpfmt.FLAG_NAMES[name]
        if lmdb_name is None:
            raise CLIError(f"database {label} has the flag {name}, which py-lmdb cannot open")
        flags[lmdb_name] = True
    return flags


async def _load_target(env: Environment, header: _dumpfmt.DumpHeader, name: str | None) -> DB:
    label = "(main)" if name is None else repr(name)
    flags = _lmdb_flags(header, label)
    versioned = header.extra.get(VERSIONED_KEY) == "1"
    if versioned:
        flags["versioned"] = True
        if name is None:
            raise CLIError("a versioned database's dump loads into a named database (--db NAME)")
    ttl_text = header.extra.get(TTL_KEY)
    if ttl_text is not None:
        try:
            flags["ttl"] = float(ttl_text)
        except ValueError:
            raise CLIError(f"{TTL_KEY}={ttl_text!r} is not a number of seconds") from None
        if name is None:
            raise CLIError("an expiring database's dump loads into a named database (--db NAME)")
    if name is None:
        main = (await _databases(env))[0].flags
        if main != flags:
            raise CLIError(
                f"the dump's main database has flags {sorted(flags) or 'none'} but the "
                f"environment's has {sorted(main) or 'none'}: load it into a database (--db NAME)"
            )
        return env.get_default_database()
    info = await _lookup(env, name)
    encoded = name.encode("utf-8", "surrogateescape")
    if info is None:
        return await env.open_db(encoded, **flags)
    if bool(info.flags.get("versioned")) != versioned:
        which = "versioned" if versioned else "not versioned"
        raise CLIError(
            f"database {label} exists and the dump's database is {which}, this one is not: "
            "load it into another database (--db NAME)"
        )
    if (info.flags.get("ttl") is None) != (ttl_text is None):
        which = "expiring" if ttl_text is not None else "not expiring"
        raise CLIError(
            f"database {label} exists and the dump's database is {which}, this one is not: "
            "load it into another database (--db NAME)"
        )
    if info.flags != flags:
        _warn(
            f"database {label} exists with flags {sorted(info.flags) or 'none'}; the dump says "
            f"{sorted(flags) or 'none'}: keeping the database's"
        )
    return await env.open_db(encoded, create=False, **info.flags)


async def cmd_load(args: argparse.Namespace) -> int:
    """``load PATH [FILE]``: load an mdb_dump file (several databases, ``format=bytevalue`` or
    ``print``) into the environment, creating it if needed."""
    source = args.file if args.file not in (None, "-") else "<stdin>"
    with _input(args.file) as (stream, size):
        reader = _dumpfmt.DumpReader(stream)
        try:
            header = reader.next_header()
            if header is None:
                raise CLIError(f"{source} holds no mdb_dump data")
            logged = _logged(args.path)
            env = _open_env(
                args.path,
                write=True,
                create=True,
                map_size=header.mapsize,
                max_readers=header.maxreaders,
            )
            async with env:
                restored = False
                with Progress("load", size) as progress:
                    blocks = 0
                    while header is not None:
                        blocks += 1
                        if args.db is not None and blocks > 1:
                            raise CLIError(f"{source} holds several databases: --db takes only one")
                        tick = lambda: progress.update(reader.bytes_read)  # noqa: E731
                        is_log = header.database == LOG_NAME and args.db is None
                        if is_log and logged:
                            raise CLIError(
                                f"{source} holds a change log, and {args.path} has one "
                                "already: load the dump into a new environment"
                            )
                        # Before the block's data: a load stopped half-way issues no old version.
                        await _restore_counter(env, header, source)
                        if is_log:
                            await _load_log(env, header, reader.pair_chunks(), tick)
                            restored = True
                            header = reader.next_header()
                            continue
                        name = args.db
                        if name is None and header.database is not None:
                            name = header.database.decode("utf-8", "surrogateescape")
                        db = await _load_target(env, header, name)
                        await _load_pairs(db, reader.pair_chunks(), tick)
                        header = reader.next_header()
                if restored:
                    # Marked last: this process opened it without a log, and wrote until now.
                    await _restore_log(env, [], 0, mark=True)
        except _dumpfmt.DumpFormatError as exc:
            raise CLIError(f"{source}: {exc}") from None
    return EXIT_OK


async def _restore_counter(env: Environment, header: _dumpfmt.DumpHeader, source: str) -> None:
    """Raise the environment's version counter to the block's (and the clock): a dump without
    the header line (older aiolmdb, mdb_dump) leaves it as the stored versions make it."""
    text = header.extra.get(LAST_VERSION_KEY)
    if text is None:
        return
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= MAX_VERSION:
        block = "the main database" if header.database is None else repr(header.database)
        raise CLIError(
            f"{source}: the block of {block} has {LAST_VERSION_KEY}={text!r}, which is not a "
            "version (a number from 1 to 2**64-1): fix or remove that header line"
        )
    lmdb_env = env.lmdb_environment
    dumped = int(text)
    await env.run(lambda txn: restore_counter(lmdb_env, txn.raw, dumped), write=True)


async def _load_log(
    env: Environment,
    header: _dumpfmt.DumpHeader,
    chunks: Iterator[list[tuple[bytes, bytes]]],
    tick: Callable[[], None],
) -> None:
    """Restore a change log block as it was dumped (its records are not new changes)."""
    text = header.extra.get(CHANGES_TRIMMED_KEY, "0")
    if not text.isdigit():
        raise CLIError(f"the change log's {CHANGES_TRIMMED_KEY}={text!r} is not a number")
    identity = None
    dumped_id = header.extra.get(CHANGELOG_ID_KEY)
    if dumped_id is not None:
        try:
            identity = parse_log_id(dumped_id)
        except ValueError as exc:
            raise CLIError(f"{CHANGELOG_ID_KEY}: {exc}") from None
    batch: list[tuple[bytes, bytes]] = []
    for chunk in chunks:
        batch += chunk
        if len(batch) >= LOAD_CHUNK:
            await _restore_log(env, batch, 0, mark=False)
            batch = []
            tick()
    await _restore_log(env, batch, int(text), mark=False, identity=identity)
    tick()


async def _restore_log(
    env: Environment,
    pairs: list[tuple[bytes, bytes]],
    trimmed: int,
    *,
    mark: bool,
    identity: bytes | None = None,
) -> None:
    lmdb_env = env.lmdb_environment
    try:
        await env.run(
            lambda txn: restore_records(lmdb_env, txn.raw, pairs, trimmed, mark, identity),
            write=True,
        )
    except (ValueError, lmdb.KeyExistsError) as exc:
        raise CLIError(f"cannot restore the change log: {exc}") from None


def _entries_of(chunk: list[tuple[bytes, bytes]]) -> list[tuple[bytes, Entry[bytes]]]:
    """A versioned block's pairs (values as stored: version first) as (key, Entry) pairs."""
    out = []
    for key, raw in chunk:
        try:
            version, value = split(key, raw)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        out.append((key, Entry(bytes(value), version)))
    return out


def _restore_expiring(db: DB, pairs: list[tuple[bytes, bytes]]) -> Awaitable[int]:
    """Store an expiring block's pairs (values as stored: expiry first) with their expiries."""
    lmdb_env = db.environment.lmdb_environment
    assert db.name is not None  # the default database never expires
    name = db.name.encode("utf-8", "surrogateescape")

    def restore(txn: Any) -> int:
        try:
            return restore_stored(lmdb_env, txn.raw, name, pairs)
        except ValueError as exc:
            raise CLIError(str(exc)) from None

    return db.environment.run(restore, write=True)


async def _load_pairs(
    db: DB, chunks: Iterator[list[tuple[bytes, bytes]]], tick: Callable[[], None]
) -> None:
    """put_multi in chunks of about LOAD_CHUNK pairs, parsing the next ones while the writer
    stores earlier ones (a few in flight join one commit). Whatever was submitted is stored,
    even after an error. A versioned database's entries keep their versions."""

    def store(batch: list[tuple[bytes, bytes]]) -> Awaitable[int]:
        if db.ttl is not None:
            return _restore_expiring(db, batch)
        if db.versioned:
            return db.restore_entries(_entries_of(batch))
        return db.put_multi(batch)

    pending: deque[asyncio.Future[int]] = deque()
    try:
        batch: list[tuple[bytes, bytes]] = []
        for chunk in chunks:
            batch += chunk
            if len(batch) >= LOAD_CHUNK:
                pending.append(asyncio.ensure_future(store(batch)))
                batch = []
                await asyncio.sleep(0)  # let it reach the writer before parsing on
                if len(pending) >= LOAD_IN_FLIGHT:
                    await pending.popleft()
                    tick()
        if batch:
            pending.append(asyncio.ensure_future(store(batch)))
        while pending:
            await pending[0]
            pending.popleft()
            tick()
    finally:
        for future in pending:  # an error: the chunks already submitted still get stored
            with contextlib.suppress(Exception):
                await future


# ---------------------------------------------------------------------------- copy
def _prepare_copy(dest: str, subdir: bool) -> bool:
    """Check (and create) the copy's destination; True if this made the directory."""
    if not subdir:
        if os.path.exists(dest):
            raise CLIError(f"{dest} exists: the copy of a single-file environment is a new file")
        return False
    if os.path.exists(dest):
        if not os.path.isdir(dest) or os.listdir(dest):
            raise CLIError(f"{dest} exists and is not an empty directory")
        return False
    try:
        os.makedirs(dest)
    except OSError as exc:
        raise CLIError(f"cannot create {dest}: {exc.strerror or exc}") from None
    return True


async def cmd_copy(args: argparse.Namespace) -> int:
    """``copy PATH DEST``: hot backup into DEST (created; an existing one must be empty)."""
    subdir = _existing_env(args.path)
    created = _prepare_copy(args.dest, subdir)
    try:
        async with _open_env(args.path) as env:
            await env.copy(args.dest, compact=args.compact)
    except BaseException:
        if created:
            shutil.rmtree(args.dest, ignore_errors=True)
        raise
    return EXIT_OK


# ---------------------------------------------------------------------------- shell
async def _shell_run(argv: list[str]) -> int:
    """One shell line's command, as ``main`` runs it, in the shell's event loop."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # COMMAND --help, usage errors (already on stderr)
        return _exit_status(exc.code)
    try:
        status: int = await _run(args.handler, args)
    except BrokenPipeError:
        raise
    except Exception as exc:
        return _reported(exc)
    return status


def _command_options() -> dict[str, list[str]]:
    """The options each command a shell line may run takes."""
    parser = build_parser()
    found: dict[str, list[str]] = {}
    for action in parser._actions:  # argparse keeps its subcommands only there
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name in _shell.COMMANDS:
                    found[name] = sorted(o for o in sub._option_string_actions if o[:2] == "--")
    return found


async def _database_names(path: str) -> list[str]:
    """The named databases of ``path`` but aiolmdb's own, for completion (none when it cannot
    be read: not there yet, say)."""
    try:
        async with _open_env(path) as env:
            found = await _databases(env)
    except (CLIError, lmdb.Error, AiolmdbError, OSError):
        return []
    internal = {META_NAME, LOG_NAME}
    return [_name_text(db.name) for db in found if db.name is not None and db.name not in internal]


class _QuietParser(argparse.ArgumentParser):
    """Raises ValueError with argparse's message instead of printing usage and exiting."""

    def error(self, message: str) -> Any:
        """Raise ValueError(message)."""
        raise ValueError(message)


def _check_value_options(argv: list[str]) -> None:
    """``format value``'s options checked as a command would check them (ValueError)."""
    parser = _QuietParser(add_help=False)
    _add_value_options(parser)
    try:
        _formats(parser.parse_args(argv))
    except CLIError as exc:
        raise ValueError(exc.message) from None


def _prompt_io() -> dict[str, Any]:
    """More PromptSession options (tests give it a pipe for input and a dummy output)."""
    return {}


async def cmd_shell(args: argparse.Namespace) -> int:
    """``shell PATH``: the commands at a prompt (commands piped in: one per line)."""
    host = _shell.ShellHost(
        run=_shell_run,
        options=_command_options(),
        databases=lambda: _database_names(args.path),
        value_options=_check_value_options,
    )
    shell = _shell.Shell(args.path, host)
    if not _isatty(sys.stdin):
        return await _shell.run_batch(shell)
    try:
        import prompt_toolkit  # noqa: F401 - only to say what is missing
    except ImportError:
        raise CLIError(missing("aiolmdb shell", "prompt_toolkit", "shell")) from None
    history = None if args.no_history else (args.history or _shell.history_path())
    return await _shell.run_interactive(shell, history, **_prompt_io())


# ---------------------------------------------------------------------------- bench
# The benchmark harness is not in the wheel: it lives in the repository's benchmarks/ package.
# `aiolmdb bench` runs it when this aiolmdb was imported from a source checkout (an editable
# install, or a run from the repository); elsewhere it says where to run it.
_NO_CHECKOUT = (
    "the benchmark suite is not part of the installed package: in a source checkout of "
    "aiolmdb, run `make bench` or `python -m benchmarks` (or `aiolmdb bench` with aiolmdb "
    "installed from that checkout: pip install -e .)"
)


def _source_checkout() -> str | None:
    """The source checkout this aiolmdb was imported from (the directory holding
    pyproject.toml and benchmarks/), or None for an installed wheel."""
    # This file is aiolmdb/_cli/commands.py: the checkout is three levels up.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for marker in ("pyproject.toml", os.path.join("benchmarks", "__main__.py")):
        if not os.path.isfile(os.path.join(root, marker)):
            return None
    return root


def _load_benchmarks(root: str) -> Any:
    """The ``benchmarks`` package of the checkout at ``root`` (ImportError if another module of
    that name is what imports)."""
    import importlib

    module = sys.modules.get("benchmarks")
    if module is None:
        sys.path.insert(0, root)
        try:
            module = importlib.import_module("benchmarks")
        finally:
            sys.path.remove(root)
    found = os.path.dirname(os.path.realpath(getattr(module, "__file__", None) or "?"))
    wanted = os.path.realpath(os.path.join(root, "benchmarks"))
    if found != wanted:
        raise ImportError(f"the module named 'benchmarks' is in {found}, not {wanted}")
    return module


def run_bench(argv: list[str]) -> int:
    """``bench [ARGS...]``: run the checkout's benchmark suite (``python -m benchmarks``) with
    ``argv``; outside a checkout, say where to run it and return 2."""
    root = _source_checkout()
    if root is None:
        _error(_NO_CHECKOUT)
        return EXIT_ERROR
    try:
        bench = _load_benchmarks(root)
    except ImportError as exc:
        _error(f"the benchmark suite of {root} cannot be imported: {exc}")
        return EXIT_ERROR
    try:
        status: int = bench.main(argv, prog=f"{PROG} bench")
    except SystemExit as exc:
        return _exit_status(exc.code)
    return status


# ---------------------------------------------------------------------------- parser
_DESCRIPTION = """\
Inspect, edit, dump, load and copy LMDB environments (through aiolmdb).
Keys and values are UTF-8 text unless --key-format/--value-format say otherwise
(str, hex, base64, uint64, uint32, uint16, tuple, json, msgpack).
Exit status: 0 success, 1 key not found, 2 usage or other error."""


def _non_negative(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {number}")
    return number


_FORMAT_HELP = (
    "str (UTF-8 text, the default), hex, base64, uint64/uint32/uint16 (a decimal number, "
    "stored by UInt64Coder...: big-endian), tuple (a Python tuple literal, TupleCoder), json "
    "(JSONCoder), msgpack (given as JSON, MsgpackCoder)"
)


def _add_key_options(parser: argparse.ArgumentParser) -> None:
    """``--key-format`` and the deprecated ``--hex``/``--base64``."""
    parser.add_argument(
        "--key-format",
        metavar="FMT",
        type=_format_name,
        help="how keys are given and shown: " + _FORMAT_HELP,
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--hex",
        dest="encoding",
        action="store_const",
        const="hex",
        help="deprecated: --key-format hex --value-format hex",
    )
    group.add_argument(
        "--base64",
        dest="encoding",
        action="store_const",
        const="base64",
        help="deprecated: --key-format base64 --value-format base64",
    )


def _add_value_options(parser: argparse.ArgumentParser) -> None:
    """``--value-format`` and the compression options."""
    parser.add_argument(
        "--value-format",
        metavar="FMT",
        type=_format_name,
        help="how values are given and shown (the same formats as --key-format)",
    )
    parser.add_argument(
        "--compressed",
        action="store_true",
        help="values are stored by a compressed coder (Coder.compressed): read in any form it "
        "writes (zlib, zstd, LZ4, uncompressed), written with --codec",
    )
    parser.add_argument(
        "--codec",
        choices=("zlib", "zstd", "lz4"),
        help="the codec put writes compressed values with (default zlib, as "
        "Coder.compressed()); implies --compressed",
    )
    parser.add_argument(
        "--zstd-dict",
        metavar="FILE",
        help="the zstd dictionary (its bytes, dict_content) values were compressed with; "
        "implies --compressed --codec zstd",
    )
    parser.add_argument(
        "--max-size",
        metavar="N",
        type=_non_negative,
        default=MAX_SIZE,
        help=f"with --compressed, the most bytes a value may decompress to (default {MAX_SIZE}; "
        "0: no bound)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``aiolmdb`` command."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    major, minor, patch = lmdb.version()
    parser.add_argument(
        "--version",
        action="version",
        version=f"{PROG} {__version__} (py-lmdb {lmdb.__version__}, LMDB {major}.{minor}.{patch})",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    db_option = argparse.ArgumentParser(add_help=False)
    db_option.add_argument(
        "--db", metavar="NAME", help="a named database instead of the main one (UTF-8 name)"
    )
    key_formats = argparse.ArgumentParser(add_help=False)
    _add_key_options(key_formats)
    formats = argparse.ArgumentParser(add_help=False)
    _add_key_options(formats)
    _add_value_options(formats)
    path_help = "the environment: a directory (or a single-file environment)"

    def add(name: str, handler: Any, help_text: str, *parents: argparse.ArgumentParser) -> Any:
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=parents)
        sub.set_defaults(handler=handler)
        return sub

    sub = add("stat", cmd_stat, "environment and database statistics", db_option)
    sub.add_argument("path", metavar="PATH", help=path_help)
    sub.add_argument("--json", action="store_true", help="print JSON instead of a table")

    json_lines = "print JSON lines: key, value (key_b64/value_b64: bytes FMT cannot show)"
    sub = add("get", cmd_get, "print the value of a key", db_option, formats)
    sub.add_argument("path", metavar="PATH", help=path_help)
    sub.add_argument("key", metavar="KEY")
    sub.add_argument("--json", action="store_true", help=json_lines)

    sub = add("put", cmd_put, "store a value under a key", db_option, formats)
    sub.add_argument("path", metavar="PATH", help=path_help + "; created if missing")
    sub.add_argument("key", metavar="KEY")
    sub.add_argument("value", metavar="VALUE")

    sub = add("delete", cmd_delete, "delete a key", db_option, key_formats)
    sub.add_argument("path", metavar="PATH", help=path_help)
    sub.add_argument("key", metavar="KEY")

    sub = add(
        "scan",
        cmd_scan,
        "print key<TAB>value lines for a key range [START, STOP)",
        db_option,
        formats,
    )
    sub.add_argument("path", metavar="PATH", help=path_help)
    sub.add_argument("--prefix", metavar="P", help="only keys starting with P")
    sub.add_argument("--start", metavar="S", help="first key (inclusive)")
    sub.add_argument("--stop", metavar="S", help="end key (exclusive)")
    sub.add_argument("--reverse", action="store_true", help="from the last key down")
    sub.add_argument("--limit", metavar="N", type=_non_negative, help="at most N entries")
    sub.add_argument("--json", action="store_true", help=json_lines)
    sub.epilog = (
        "In str format a backslash, tab, newline and carriage return in a key or value are "
        "written as \\\\, \\t, \\n and \\r. A key or value its format cannot show is "
        f"written as {_fmt.TEXT_MARK}BASE64 (JSON lines: key_b64/value_b64), with a warning."
    )

    sub = add("dump", cmd_dump, "write databases in mdb_dump's text format", db_option)
    sub.add_argument("path", metavar="PATH", help=path_help)
    sub.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    sub.add_argument(
        "-a", "--all", action="store_true", help="every database: the main one, then each named one"
    )
    sub.add_argument(
        "-p",
        "--print",
        dest="printable",
        action="store_true",
        help="format=print: printable characters as is (mdb_dump -p)",
    )

    sub = add(
        "load",
        cmd_load,
        "load an mdb_dump file (creates the environment and databases if needed)",
        db_option,
    )
    sub.add_argument("path", metavar="PATH", help=path_help + "; created if missing")
    sub.add_argument("file", metavar="FILE", nargs="?", help="the dump (default: stdin)")
    sub.epilog = "With --db the input must hold a single database; it is loaded into NAME."

    sub = add(
        "changes",
        cmd_changes,
        "print the change log (changelog=True) as JSON lines: seq, db, kind, key, value",
        db_option,
        formats,
    )
    sub.add_argument("path", metavar="PATH", help=path_help)
    sub.add_argument(
        "--since",
        metavar="N",
        type=_non_negative,
        help="the changes after sequence number N (0: the whole log)",
    )
    sub.add_argument(
        "--follow",
        action="store_true",
        help="wait for new changes and print them as they commit (Ctrl-C ends)",
    )
    sub.add_argument("--prefix", metavar="P", help="only keys starting with P (in --key-format)")
    sub.epilog = (
        "Where it starts: without --follow, the whole log (as --since 0), then it exits. With "
        "--follow, like env.changes(): only changes committed after the command starts (add "
        "--since 0 to replay the log first). A key or value its format cannot show is written "
        "as key_b64/value_b64 (base64) instead of key/value; a versioned database's changes "
        "carry their version."
    )

    sub = add(
        "shell",
        cmd_shell,
        "an interactive shell on one environment (history, completion; the shell extra)",
    )
    sub.add_argument("path", metavar="PATH", help=path_help + "; put creates it")
    sub.add_argument(
        "--history",
        metavar="FILE",
        help="the history file (default: $XDG_STATE_HOME/aiolmdb/history, else ~/.aiolmdb_history)",
    )
    sub.add_argument("--no-history", action="store_true", help="keep no history file")
    sub.epilog = (
        "Lines are the commands without PATH (get KEY, scan --prefix P, put KEY VALUE...) and "
        "the shell's own: use [DB], dbs, format [key|value FMT], help, quit. Commands piped in "
        "(stdin not a terminal) run one per line, without prompt_toolkit; the exit status is "
        "then the highest of theirs."
    )

    sub = add("copy", cmd_copy, "hot backup of an environment")
    sub.add_argument("path", metavar="PATH", help=path_help)
    sub.add_argument("dest", metavar="DEST", help="new (or empty) directory for the copy")
    sub.add_argument(
        "--compact", action="store_true", help="omit free pages (slower, smaller copy)"
    )

    add_replicate_commands(commands, path_help)

    sub = commands.add_parser(
        "bench",
        help="run the benchmark suite of a source checkout (arguments go to it)",
        add_help=False,
    )
    sub.add_argument("args", nargs=argparse.REMAINDER)
    sub.set_defaults(handler=None)
    return parser


# ---------------------------------------------------------------------------- main
def _exit_status(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_ERROR


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the ``aiolmdb`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit
    status."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments and arguments[0] == "bench":
        return run_bench(arguments[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:  # --help, --version, usage errors
        return _exit_status(exc.code)
    handler: Callable[[argparse.Namespace], Awaitable[int]] | None = getattr(args, "handler", None)
    if handler is None:
        if args.command == "bench":  # pragma: no cover - handled above
            return run_bench(args.args)
        parser.print_usage(sys.stderr)
        _error("a command is required")
        return EXIT_ERROR
    try:
        return asyncio.run(_run(handler, args))
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. "| head"): stop quietly.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        return _reported(exc)


def _reported(exc: Exception) -> int:
    """A command's failure as one line on stderr; its exit status."""
    if isinstance(exc, CLIError):
        _error(exc.message)
        return exc.status
    if isinstance(exc, (lmdb.Error, AiolmdbError, OSError, ValueError, UnicodeError, ImportError)):
        _error(_describe(exc))  # ImportError: an optional package, with its pip line
        return EXIT_ERROR
    _error(f"unexpected {type(exc).__name__}: {_describe(exc)}")
    return EXIT_ERROR


async def _run(handler: Callable[[argparse.Namespace], Awaitable[int]], args: Any) -> int:
    try:
        return await handler(args)
    finally:
        _flush_stdout()
