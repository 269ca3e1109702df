"""``aiolmdb replicate``: run replication from the command line (docs/cli-replicate.md).

* ``publish PATH``: publish the environment's change log (every process's commits) to a
  JetStream stream until SIGINT/SIGTERM, e.g. as a sidecar of a service that writes with
  ``changelog=True``.
* ``follow PATH``: keep a replica at PATH up to date until SIGINT/SIGTERM (``--once``: until it
  has caught up with the stream, then exit).
* ``status [PATH]``: the stream's position and, with PATH, the replica's and its lag.
* ``promote PATH``: catch the replica up and make it a writable leader (``--publish``: then
  publish from it, as ``publish`` does).

Each takes ``--servers`` and ``--stream``, and the connection options of ``nats.connect``
(``--user``/``--password``, ``--token``, ``--creds``, ``--nkeys-seed``, TLS files). The password
may come from ``$AIOLMDB_NATS_PASSWORD`` instead, so that it is not in the process list.

The replication package (and nats-py) is imported only when one of these commands runs, so
the rest of the command line starts without it. Errors are raised as the library's
exceptions (or ValueError for bad options), which the command's ``main`` prints as one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import ssl
import sys
from collections.abc import Awaitable
from typing import Any

__all__ = ["add_replicate_commands"]

PASSWORD_VARIABLE = "AIOLMDB_NATS_PASSWORD"
# How often a running publisher is checked for having stopped (fenced, connection lost for
# good): the library reports it as an attribute, not an event.
_CHECK_EVERY = 0.5


def _replication() -> Any:
    """The replication package; ValueError with the install line when nats-py is missing."""
    try:
        importlib.import_module("nats")
    except ImportError:
        raise ValueError(
            "aiolmdb replicate needs the nats-py package: pip install 'aiolmdb[nats]'"
        ) from None
    return importlib.import_module("aiolmdb.replication")


def _servers(text: str) -> list[str]:
    servers = [part.strip() for part in text.split(",") if part.strip()]
    if not servers:
        raise argparse.ArgumentTypeError("give at least one server URL, e.g. nats://host:4222")
    return servers


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _seconds(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return number


def connect_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``nats.connect`` keyword arguments the connection flags ask for."""
    options: dict[str, Any] = {}
    password = args.password or os.environ.get(PASSWORD_VARIABLE)
    if args.user is not None:
        options["user"] = args.user
        options["password"] = password or ""
    elif password:
        raise ValueError(f"--password (or ${PASSWORD_VARIABLE}) needs --user")
    if args.token is not None:
        options["token"] = args.token
    if args.creds is not None:
        options["user_credentials"] = args.creds
    if args.nkeys_seed is not None:
        options["nkeys_seed"] = args.nkeys_seed
    if args.tls_ca or args.tls_cert:
        if bool(args.tls_cert) != bool(args.tls_key):
            raise ValueError("--tls-cert and --tls-key go together (the client's certificate)")
        context = ssl.create_default_context(cafile=args.tls_ca)
        if args.tls_cert:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        options["tls"] = context
    return options


def _connection_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("NATS connection")
    group.add_argument(
        "--servers",
        type=_servers,
        required=True,
        metavar="URLS",
        help="NATS server URLs, comma-separated (nats://host:4222,...)",
    )
    group.add_argument(
        "--stream", required=True, metavar="NAME", help="the JetStream stream of the leader's log"
    )
    group.add_argument("--user", metavar="NAME", help="user name")
    group.add_argument(
        "--password", metavar="TEXT", help=f"password (default: ${PASSWORD_VARIABLE})"
    )
    group.add_argument("--token", metavar="TEXT", help="authentication token")
    group.add_argument("--creds", metavar="FILE", help="a .creds file (JWT and NKey seed)")
    group.add_argument("--nkeys-seed", metavar="FILE", help="a file holding an NKey seed")
    group.add_argument("--tls-ca", metavar="FILE", help="CA certificates to verify the server")
    group.add_argument("--tls-cert", metavar="FILE", help="client certificate (with --tls-key)")
    group.add_argument("--tls-key", metavar="FILE", help="client certificate's private key")
    return parent


def add_replicate_commands(commands: Any, path_help: str) -> None:
    """Add ``replicate`` and its subcommands to the ``aiolmdb`` command's subparsers."""
    connection = _connection_parent()
    top = commands.add_parser(
        "replicate",
        help="read replicas through NATS JetStream: publish, follow, status, promote",
        description="Replication through NATS JetStream (needs: pip install 'aiolmdb[nats]').",
    )
    top.set_defaults(handler=None)
    subs = top.add_subparsers(dest="replicate_command", metavar="SUBCOMMAND", title="subcommands")

    def add(name: str, handler: Any, help_text: str) -> Any:
        sub = subs.add_parser(name, help=help_text, description=help_text, parents=[connection])
        sub.set_defaults(handler=handler)
        return sub

    def stream_limits(sub: Any) -> None:
        group = sub.add_argument_group("the stream, when this publisher creates it")
        group.add_argument("--max-age", type=_seconds, metavar="SECONDS", help="age limit")
        group.add_argument("--max-bytes", type=_positive, metavar="N", help="size limit")
        group.add_argument(
            "--replicas", type=_positive, default=1, metavar="N", help="copies (default: 1)"
        )
        sub.add_argument(
            "--snapshot-every",
            type=_positive,
            metavar="N",
            help="store a snapshot each time N changes were published since the last",
        )

    sub = add(
        "publish",
        cmd_publish,
        "publish the change log of PATH (every process's commits) until SIGINT/SIGTERM",
    )
    sub.add_argument("path", metavar="PATH", help=path_help + "; created if missing")
    stream_limits(sub)
    sub.add_argument(
        "--snapshot", action="store_true", help="store a snapshot once connected, then publish"
    )

    sub = add("follow", cmd_follow, "keep a replica at PATH up to date until SIGINT/SIGTERM")
    sub.add_argument("path", metavar="PATH", help="the replica's environment; created if missing")
    sub.add_argument(
        "--once", action="store_true", help="exit once the replica has caught up with the stream"
    )
    sub.add_argument(
        "--timeout", type=_seconds, metavar="SECONDS", help="with --once: give up after this long"
    )

    sub = add("status", cmd_status, "the stream's position, and a replica's with PATH")
    sub.add_argument("path", metavar="PATH", nargs="?", help="a replica's environment")
    sub.add_argument("--json", action="store_true", help="print JSON")

    sub = add(
        "promote",
        cmd_promote,
        "catch the replica at PATH up with the stream and make it a writable leader",
    )
    sub.add_argument("path", metavar="PATH", help="the replica's environment")
    sub.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long catching up may take (default: %(default)s)",
    )
    sub.add_argument(
        "--publish",
        action="store_true",
        help="then publish from it until SIGINT/SIGTERM (the new leader)",
    )
    stream_limits(sub)


# ---------------------------------------------------------------------------- running
def _say(message: str) -> None:
    print(f"aiolmdb replicate: {message}", file=sys.stderr, flush=True)


def _stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (where the loop can take signal handlers)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows; not main thread
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _until(stop: asyncio.Event, failed: Awaitable[object]) -> None:
    """Wait for ``stop`` or for ``failed`` to end (its exception propagates)."""
    stopper = asyncio.ensure_future(stop.wait())
    watcher = asyncio.ensure_future(failed)
    try:
        done, _ = await asyncio.wait({stopper, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if watcher in done:
            watcher.result()
    finally:
        for task in (stopper, watcher):
            task.cancel()
        await asyncio.gather(stopper, watcher, return_exceptions=True)


async def _publisher_stopped(pub: Any) -> None:
    # The publisher reports its end as an attribute only; a check twice a second is cheap.
    while pub.error is None:  # noqa: ASYNC110
        await asyncio.sleep(_CHECK_EVERY)
    raise pub.error


def _publisher_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_age": args.max_age,
        "max_bytes": args.max_bytes,
        "replicas": args.replicas,
        "snapshot_every": args.snapshot_every,
    }


async def _publish(env: Any, args: argparse.Namespace, stop: asyncio.Event) -> int:
    replication = _replication()
    async with replication.Publisher(
        env,
        servers=args.servers,
        stream=args.stream,
        **_publisher_options(args),
        **connect_options(args),
    ) as pub:
        if getattr(args, "snapshot", False):
            covered = await pub.snapshot()
            _say(f"snapshot of {args.path} stored, covering change {covered}")
        _say(f"publishing {args.path} to stream {args.stream} (published: {pub.published})")
        await _until(stop, _publisher_stopped(pub))
        published = await pub.sync()
    _say(f"stopped; stream {args.stream} holds the changes up to {published}")
    return 0


async def cmd_publish(args: argparse.Namespace) -> int:
    """``replicate publish PATH``."""
    from ..environment import open as open_environment

    stop = _stop_event()
    _replication()
    async with open_environment(args.path, changelog=True, max_dbs=1024) as env:
        return await _publish(env, args, stop)


async def cmd_follow(args: argparse.Namespace) -> int:
    """``replicate follow PATH``."""
    replication = _replication()
    stop = _stop_event()
    async with replication.Replica(
        args.path, servers=args.servers, stream=args.stream, **connect_options(args)
    ) as rep:
        if args.once:
            reached = await _bounded(rep.caught_up(), args.timeout, args)
            _say(f"replica {args.path} caught up with stream {args.stream}: applied {reached}")
            return 0
        _say(f"following stream {args.stream} into {args.path} (applied: {rep.applied})")
        await _until(stop, rep.wait_for(2**63 - 1))
        _say(f"stopped; replica {args.path} applied the changes up to {rep.applied}")
    return 0


async def _bounded(work: Awaitable[int], timeout: float | None, args: argparse.Namespace) -> int:
    try:
        return await asyncio.wait_for(work, timeout)
    except asyncio.TimeoutError:
        raise ValueError(
            f"replica {args.path} did not catch up with stream {args.stream} within "
            f"{timeout:g} s: is its leader publishing, and can this replica reach "
            f"{', '.join(args.servers)}?"
        ) from None


async def cmd_status(args: argparse.Namespace) -> int:
    """``replicate status [PATH]``."""
    replication = _replication()
    report: dict[str, Any] = {
        "stream": await replication.stream_status(
            args.servers, args.stream, **connect_options(args)
        )
    }
    if args.path is not None:
        if not await asyncio.to_thread(os.path.exists, args.path):
            raise ValueError(f"no replica at {args.path}: the path does not exist")
        replica: dict[str, Any] | None = await replication.replica_status(args.path)
        if replica is None:
            raise ValueError(f"{args.path} is not a replica (it stores no replicated position)")
        if replica.get("stream") not in (None, args.stream):
            raise ValueError(
                f"replica {args.path} follows stream {replica['stream']}, not {args.stream}"
            )
        leader = report["stream"].get("leader_seq")
        applied = replica.get("seq") or 0
        replica["lag_changes"] = None if leader is None else max(0, leader - applied)
        report["replica"] = replica
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(format_status(args.stream, report))
    return 0


def format_status(stream: str, report: dict[str, Any]) -> str:
    """The status report as text."""
    info = report["stream"]
    if not info.get("exists", True):
        lines = [f"stream {stream}: does not exist (no leader has published to it yet)"]
    else:
        snapshot = info.get("snapshot")
        lines = [
            f"stream {stream}:",
            f"  messages        {info.get('messages', 0)} (stream seq "
            f"{info.get('first_seq')}..{info.get('last_seq')}, {info.get('bytes', 0)} bytes)",
            f"  leader log      {info.get('log_id') or '-'}",
            f"  leader change   {info.get('leader_seq') or 0} (last published)",
            "  snapshot        "
            + ("none" if not snapshot else f"covers change {snapshot.get('seq')}"),
        ]
    replica = report.get("replica")
    if replica is not None:
        lag = replica.get("lag_changes")
        lines += [
            "replica:",
            f"  applied change  {replica.get('seq') or 0}",
            f"  lag             {'-' if lag is None else f'{lag} changes'}",
        ]
    return "\n".join(lines)


async def cmd_promote(args: argparse.Namespace) -> int:
    """``replicate promote PATH``."""
    replication = _replication()
    stop = _stop_event()
    rep = replication.Replica(
        args.path, servers=args.servers, stream=args.stream, **connect_options(args)
    )
    await rep.start()
    try:
        reached = await _bounded(rep.caught_up(), args.timeout, args)
        env = await rep.promote()
    finally:
        await rep.close()
    try:
        _say(f"promoted {args.path} at change {reached}: it is a writable leader now")
        if args.publish:
            return await _publish(env, args, stop)
    finally:
        await env.close()
    return 0
