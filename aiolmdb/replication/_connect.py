"""Connecting to NATS: the optional package, and a first connection that fails clearly.

nats-py retries a refused first connection (wrong credentials included) for minutes, once per
``reconnect_time_wait``. Here an authorization error during the first connection ends it at
once with :class:`~aiolmdb.errors.ReplicationError` naming the servers; later disconnections
reconnect as the options say.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import ReplicationError

__all__ = ["bucket_of", "cancel_and_wait", "connect", "require_nats", "subject_of"]

_INSTALL = "pip install 'aiolmdb[nats]'"
FIRST_CONNECT_TIMEOUT = 20.0
"""Seconds the first connection may take (its retries included) before it fails."""


def require_nats() -> Any:
    """The ``nats`` package, or ImportError with the line that installs it."""
    try:
        return importlib.import_module("nats")
    except ImportError as exc:
        raise ImportError(f"aiolmdb.replication needs the nats-py package: {_INSTALL}") from exc


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` and wait until they end. Cancelled again while they run on: on Python
    3.11 ``asyncio.wait_for`` (nats-py's requests) can lose a cancellation that meets its
    result, and the task would go on."""
    pending = {task for task in tasks if task is not None and not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    for ended in tasks:
        if ended is not None and not ended.cancelled():
            ended.exception()  # retrieved: the owner reports it


def subject_of(stream: str) -> str:
    """The subject a stream's commits are published on."""
    return f"aiolmdb.{stream}"


def bucket_of(stream: str) -> str:
    """The Object Store bucket of a stream's snapshots."""
    return f"{stream}_snapshots"


def _servers_label(servers: str | list[str]) -> str:
    return servers if isinstance(servers, str) else ", ".join(servers)


async def connect(servers: str | list[str], options: dict[str, Any]) -> Any:
    """A connected ``nats.aio.client.Client``; ReplicationError at once on refused
    credentials or when no server can be reached."""
    require_nats()
    errors = importlib.import_module("nats.errors")
    auth_failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    user_cb: Callable[[Exception], Awaitable[None]] | None = options.get("error_cb")

    async def error_cb(exc: Exception) -> None:
        text = str(exc).lower()
        if (
            isinstance(exc, errors.AuthorizationError) or "authorization" in text
        ) and not auth_failed.done():
            auth_failed.set_result(exc)
        if user_cb is not None:
            await user_cb(exc)

    kwargs = dict(options)
    kwargs["error_cb"] = error_cb
    # Once connected, reconnect for as long as it takes: a server restart must not end a
    # leader's publishing or a replica's following.
    kwargs.setdefault("max_reconnect_attempts", -1)
    kwargs.setdefault("connect_timeout", 5)
    label = _servers_label(servers)
    client = importlib.import_module("nats.aio.client").Client()
    attempt = asyncio.ensure_future(client.connect(servers, **kwargs))
    try:
        await asyncio.wait(
            [attempt, auth_failed],
            timeout=FIRST_CONNECT_TIMEOUT,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if attempt.done() and attempt.exception() is None:
            return client
        attempt.cancel()
        with contextlib.suppress(BaseException):
            await attempt
        if auth_failed.done():
            exc = auth_failed.result()
            raise ReplicationError(
                f"NATS server {label} refused the credentials ({exc}): check user/password, "
                "token, user_credentials or nkeys_seed passed to the Publisher/Replica"
            ) from exc
        failure = attempt.exception() if not attempt.cancelled() else None
        if failure is None:
            raise ReplicationError(
                f"cannot connect to NATS at {label} within {FIRST_CONNECT_TIMEOUT:g} s: is the "
                "server running, and are servers= and the TLS options right?"
            )
        raise ReplicationError(
            f"cannot connect to NATS at {label}: {failure!r}; is the server running, and "
            "are servers= and the TLS options right?"
        ) from failure
    except BaseException:
        # A failed first connection leaves its socket open: close it (nats-py leaks it).
        with contextlib.suppress(Exception):
            await client.close()
        raise
