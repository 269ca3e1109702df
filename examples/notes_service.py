"""A small HTTP JSON notes service built on aiolmdb and aiohttp.

Run it with::

    pip install -e '.[examples]'
    python examples/notes_service.py --host 127.0.0.1 --port 8080 --data ./notes-data

Endpoints (every body is JSON):

``PUT /notes/{id}``
    Store the JSON object of the body as the note's data: 201 if created, 200 if replaced
    (its tags are kept). With ``If-Match: "<etag>"`` it replaces the note only if it is still
    the one with that ETag (412 Precondition Failed if it changed or is gone: read it again,
    merge, retry); ``If-Match: *`` only if the note exists. The response carries the new
    ``ETag``.
``GET /notes/{id}``
    ``{"id", "data", "tags"}`` with an ``ETag`` header (the note's version), or 404.
``DELETE /notes/{id}``
    204, or 404. Removes the note and its tag links in one transaction; ``If-Match`` as for
    ``PUT`` (412 on a stale ETag).
``GET /notes?prefix=&limit=&after=``
    Notes in id order (a range query): ids starting with ``prefix``, at most ``limit``
    (default 100, at most 1000), after the id ``after``. ``next`` is the ``after`` value for the
    following page, or null on the last one.
``PUT /notes/{id}/tags``
    Body ``{"tags": [...]}``: set the note's tags (400 for an empty tag: ``GET /tags/`` could
    not address it). The note (database ``notes``) and the tag index (database ``tags``)
    change in ONE transaction: if the index rejects a link because its key ``(tag, note id)``
    is longer than LMDB's key limit once encoded (511 bytes: a tag and the id share it),
    nothing changes at all, the note included, and the answer is 400.
``POST /notes/{id}/move``
    Body ``{"to": "new-id"}``: rename a note, carrying its tag links, atomically. 409 if the
    target exists, 404 if the note does not, 400 if the new id is invalid (empty, too long,
    or too long for a link key with one of the note's tags); nothing changes in each case.
``GET /tags/{tag}?limit=&after=``
    ``{"tag", "notes": [ids], "next"}``: the ids of the tag's notes in id order (a prefix query
    over the index), every one without ``limit`` (at most 1000 with it), after the id
    ``after``; ``next`` is the ``after`` value for the following page, or null on the last one.
``GET /stats``
    ``{"notes", "tags", "tag_links"}`` from one consistent snapshot.
``GET /changes?since=&timeout=&limit=``
    A long poll of the notes' changes: ``{"changes": [{"seq", "kind", "id", "note"}], "next"}``
    with the changes after the sequence number ``since`` (required; 0: from the start of the
    log), at most ``limit`` (default 100, at most 1000), in commit order. ``kind`` is ``put``
    (``note`` is the note as written: ``{"data", "tags"}``), ``delete`` or ``drop`` (``note``
    null). When none is there yet it waits up to ``timeout`` seconds (default 0, at most 60)
    for one, and answers with an empty list when none came. ``next`` is the ``since`` of the
    following poll. 410 Gone when the log no longer keeps changes after ``since`` (it keeps
    the last ``--keep-changes``): ``oldest`` in the body is the oldest kept; rebuild from
    ``GET /notes``, then poll from ``oldest - 1``.

How aiolmdb is used: one environment opened at startup and closed at cleanup; ``notes`` maps
note ids (``StringCoder``) to JSON documents (``JSONCoder``) in a versioned database: every
write of a note gives it a new version, which is its ETag, and a conditional PUT is
``put(..., if_version=...)``, checked in the write transaction itself (see the versions
guide, docs/guide/versions.md); ``tags`` is the tag index, one
empty value per link under an ordered tuple key ``(tag, note id)`` (``TupleCoder``), so a
tag's notes are the keys with the prefix ``(tag,)``, in id order (see the modelling guide,
docs/guide/modelling.md). Every change to a note's tags writes the note and its index entries
in one write transaction, so the index never disagrees with the notes. Concurrent requests
are batched by aiolmdb: many PUTs arriving together share one commit, and every response is
sent only after its write is committed to disk.

The environment records its changes (``changelog=True``, see docs/guide/changes.md) in the
same write transaction as each change, so ``GET /changes`` never disagrees with the notes,
whichever worker process made the change; the log keeps the last ``keep_changes`` changes
(``--keep-changes``; the workers trim what is older after their commits).

Replication (``pip install -e '.[examples,nats]'`` and a ``nats-server -js``; see
docs/guide/replication.md): ``--nats URL`` makes this instance a leader that publishes its
commits to the JetStream stream ``--stream`` (default ``notes``); every successful write's
response carries ``X-Change-Seq``, the change log's sequence once the write committed. With
``--leader URL`` as well, it is a read replica of that stream instead: it serves the GETs of
notes, tags and stats from its own copy, answers every write (and ``GET /changes``, whose
log is the leader's) with ``307 Temporary Redirect`` to the same path on the leader, and says
how far it is in ``X-Applied-Seq``. A GET with ``X-Min-Seq: N`` (a leader's ``X-Change-Seq``)
waits until the replica has applied change N, up to 5 seconds (504 after that): read your own
writes on any replica. ``make demo-replication`` runs a leader and a replica.

Stored data: earlier versions of this example kept the tag index as a ``dupsort`` database of
tag -> note ids, and the notes without versions; this version reads neither, and refuses to
start on such a data directory (start with a new ``--data`` directory). A data directory of the
version before the change log is used as it is: its log starts at the first start of this
version (``GET /changes?since=0`` returns the changes made from then on, not the notes written
before: list those with ``GET /notes``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

import aiolmdb
from aiolmdb.replication import Publisher, Replica

Note = dict[str, Any]  # {"data": <JSON object>, "tags": [sorted tags]}
Link = tuple[Any, ...]  # a key of the tag index: (tag, note id)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEFAULT_MAP_SIZE = 256 * 1024 * 1024  # grows by itself when full
DEFAULT_KEEP_CHANGES = 1_000_000  # the change log's retention, in entries
MAX_POLL = 60  # seconds a GET /changes may wait
MIN_SEQ_WAIT = 5.0  # seconds a replica's GET with X-Min-Seq may wait for the replica


@dataclass(frozen=True)
class Store:
    """The open environment and its two databases."""

    env: aiolmdb.Environment
    notes: aiolmdb.AsyncDatabase[str, Note]  # note id -> note, versioned
    tags: aiolmdb.AsyncDatabase[Link, bytes]  # (tag, note id) -> b"": one key per link


STORE = web.AppKey("store", Store)


@dataclass(frozen=True)
class Replication:
    """This instance's part in replication: a leader publishing to ``stream`` on the NATS
    ``servers``, or, with ``leader_url``, a read replica of that stream redirecting writes
    to the leader at that URL."""

    servers: str
    stream: str = "notes"
    leader_url: str | None = None


REPLICATION = web.AppKey("replication", Replication)
REPLICA = web.AppKey("replica", Replica)


class NotFound(Exception):
    """No note with that id (404)."""


class Conflict(Exception):
    """The target of a move exists already (409)."""


class BadRequest(Exception):
    """The request is malformed (400)."""


class PreconditionFailed(Exception):
    """An If-Match header names a version the note no longer has (412)."""


class Gone(Exception):
    """The change log no longer keeps the changes asked for (410)."""

    def __init__(self, message: str, oldest: int) -> None:
        super().__init__(message)
        self.oldest = oldest


# ------------------------------------------------------------------------------ application
def create_app(
    env_path: str | os.PathLike[str],
    *,
    map_size: int = DEFAULT_MAP_SIZE,
    keep_changes: int | None = DEFAULT_KEEP_CHANGES,
    replication: Replication | None = None,
) -> web.Application:
    """The aiohttp application; the environment at ``env_path`` is opened on startup and
    closed on cleanup. ``keep_changes``: how many changes the log keeps (None: all).
    ``replication``: publish the commits to NATS JetStream, or serve as a read replica."""
    path = Path(env_path)

    async def storage(app: web.Application) -> AsyncIterator[None]:
        await asyncio.to_thread(path.mkdir, mode=0o700, parents=True, exist_ok=True)
        if replication is not None and replication.leader_url is not None:
            async with replica_storage(app, path, replication, map_size):
                yield
            return
        # mode=0o700: the data files are readable by this user only (0o600).
        env = aiolmdb.open(
            path,
            map_size=map_size,
            mode=0o700,
            changelog=True,  # GET /changes
            changelog_retention=keep_changes,
        )
        try:
            app[STORE] = await open_store(env, path)
            if replication is None:
                yield
            else:
                async with publishing(env, replication):
                    yield
        finally:
            await env.close()  # lets in-flight writes commit first

    app = web.Application(middlewares=[errors_as_json, replica_redirects])
    if replication is not None:
        app[REPLICATION] = replication
    app.cleanup_ctx.append(storage)
    app.add_routes(
        [
            web.get("/notes", list_notes),
            web.put("/notes/{id}", put_note),
            web.get("/notes/{id}", get_note),
            web.delete("/notes/{id}", delete_note),
            web.put("/notes/{id}/tags", set_tags),
            web.post("/notes/{id}/move", move_note),
            web.get("/tags/{tag}", get_tag),
            web.get("/stats", stats),
            web.get("/changes", changes),
        ]
    )
    return app


async def open_store(env: aiolmdb.Environment, path: Path) -> Store:
    """The notes' two databases in ``env`` (a leader's or a replica's)."""
    found = await env.database_info("notes")
    if found is not None and "versioned" not in found.flags:
        raise RuntimeError(
            f"{path} holds an earlier version's notes (without versions), which this "
            "version does not read: start with a new --data directory"
        )
    # Awaiting open_db surfaces an opening error here, at startup.
    notes = await env.open_db(
        "notes",
        key_coder=aiolmdb.StringCoder(),
        value_coder=aiolmdb.JSONCoder(),
        versioned=True,
    )
    tags = await env.open_db("tags", key_coder=aiolmdb.TupleCoder())
    if tags.dupsort:  # LMDB keeps a database's stored flags
        raise RuntimeError(
            f"{path} holds an earlier version's tag index (tag -> ids, dupsort), which "
            "this version does not read: start with a new --data directory"
        )
    return Store(env, notes, tags)


@contextlib.asynccontextmanager
async def publishing(env: aiolmdb.Environment, replication: Replication) -> AsyncIterator[None]:
    """Publish ``env``'s commits (every worker's) while the service runs. The databases are
    opened first, so the snapshot a new stream starts with already holds them."""
    async with Publisher(env, servers=replication.servers, stream=replication.stream):
        yield


@contextlib.asynccontextmanager
async def replica_storage(
    app: web.Application, path: Path, replication: Replication, map_size: int
) -> AsyncIterator[None]:
    """Run a replica at ``path`` (waiting for the leader's stream if it is not there yet)
    and serve reads from its environment."""
    options = {"map_size": map_size, "mode": 0o700}
    async with Replica(
        path, servers=replication.servers, stream=replication.stream, env_options=options
    ) as rep:
        app[REPLICA] = rep
        app[STORE] = await open_store(rep.env, path)
        yield


# Writes, and the change log (the leader's: a replica records none), are the leader's.
REPLICA_LOCAL = ("/notes", "/tags/", "/stats")


@web.middleware
async def replica_redirects(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On a replica: redirect writes to the leader and wait for ``X-Min-Seq``. On a leader:
    tell the writer the change sequence its write reached."""
    replication = request.app.get(REPLICATION)
    if replication is None:
        return await handler(request)
    if replication.leader_url is None:  # the leader
        response = await handler(request)
        if request.method not in ("GET", "HEAD") and response.status < 400:
            seq = await request.app[STORE].env.last_seq()
            response.headers["X-Change-Seq"] = str(seq)
        return response
    local = request.method in ("GET", "HEAD") and request.path.startswith(REPLICA_LOCAL)
    if not local:
        # 307 keeps the method and the body: the client repeats the write on the leader.
        target = replication.leader_url.rstrip("/") + str(request.rel_url)
        raise web.HTTPTemporaryRedirect(target)
    rep = request.app[REPLICA]
    wanted = request.headers.get("X-Min-Seq")
    if wanted is not None:
        if not wanted.isdigit():
            return error(400, "X-Min-Seq must be a change sequence number")
        try:
            await rep.wait_for(int(wanted), timeout=MIN_SEQ_WAIT)
        except asyncio.TimeoutError:
            return error(
                504,
                f"this replica has applied the changes up to {rep.applied}, not yet "
                f"{wanted}: retry, or read from the leader",
            )
    response = await handler(request)
    response.headers["X-Applied-Seq"] = str(rep.applied)
    return response


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map errors to JSON responses."""
    try:
        return await handler(request)
    except NotFound as exc:
        return error(404, str(exc))
    except Conflict as exc:
        return error(409, str(exc))
    except BadRequest as exc:
        return error(400, str(exc))
    except PreconditionFailed as exc:
        return error(412, str(exc))
    except Gone as exc:
        return web.json_response({"error": str(exc), "oldest": exc.oldest}, status=410)
    except aiolmdb.InvalidKeyError as exc:  # an empty or too long id, or too long a link
        return error(400, str(exc))
    except aiolmdb.ClosedError:
        return error(503, "shutting down")


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def location(note_id: str) -> str:
    """The note's path for a Location header, percent-encoded: an id may hold any character."""
    return "/notes/" + urllib.parse.quote(note_id, safe="")


def view(note_id: str, note: Note) -> dict[str, Any]:
    return {"id": note_id, "data": note["data"], "tags": note["tags"]}


def etag(version: int) -> str:
    """A note version as a (strong) ETag."""
    return f'"{version}"'


ANY = -1  # If-Match: * (any existing version)


def if_match(request: web.Request) -> int | None:
    """The version an If-Match header asks for: None without one, ANY for ``*``. An ETag
    this service never issued (a weak one included: If-Match compares strongly) matches no
    version: 0, which no note has."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    header = header.strip()
    if header == "*":
        return ANY
    text = header[1:-1] if len(header) >= 2 and header[0] == header[-1] == '"' else ""
    return int(text) if text.isdigit() and text[0] != "0" and len(text) <= 20 else 0


def check_match(note_id: str, entry: aiolmdb.Entry[Note] | None, wanted: int | None) -> None:
    """PreconditionFailed unless ``entry`` is the version an If-Match header asked for."""
    if wanted is None:
        return
    if entry is None:
        raise PreconditionFailed(f"no note {note_id!r} to match If-Match")
    if wanted != ANY and entry.version != wanted:
        raise PreconditionFailed(
            f"note {note_id!r} changed (its ETag is now {etag(entry.version)}): "
            "read it again and retry"
        )


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def int_param(request: web.Request, name: str, default: int | None, low: int, high: int) -> int:
    """The query parameter ``name`` as an int in [low, high]; ``default`` if absent (None:
    required)."""
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise BadRequest(f"{name} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


# ------------------------------------------------------------------------------ notes
async def put_note(request: web.Request) -> web.Response:
    store = request.app[STORE]
    note_id = request.match_info["id"]
    data = await json_object(request)
    wanted = if_match(request)

    def write(txn: aiolmdb.Transaction[bytes, bytes]) -> tuple[bool, aiolmdb.Entry[Note]]:
        # Runs on aiolmdb's writer thread, inside the write transaction: nothing can change
        # the note between reading its version and tags and writing it back.
        notes = txn[store.notes]
        old = notes.get_entry(note_id)
        note = {"data": data, "tags": [] if old is None else old.value["tags"]}
        if wanted is None or wanted <= 0:  # no condition, *, or an ETag never issued
            check_match(note_id, old, wanted)
            notes.put(note_id, note)
        elif not notes.put(note_id, note, if_version=wanted):
            check_match(note_id, old, wanted)  # says why: gone, or another version
        new = notes.get_entry(note_id)
        assert new is not None
        return old is None, new

    created, entry = await store.env.run(write, write=True)  # returns once committed
    response = web.json_response(view(note_id, entry.value), status=201 if created else 200)
    response.headers["ETag"] = etag(entry.version)
    if created:
        response.headers["Location"] = location(note_id)
    return response


async def get_note(request: web.Request) -> web.Response:
    store = request.app[STORE]
    note_id = request.match_info["id"]
    entry = await store.notes.get_entry(note_id)
    if entry is None:
        raise NotFound(f"no note {note_id!r}")
    response = web.json_response(view(note_id, entry.value))
    response.headers["ETag"] = etag(entry.version)
    return response


async def delete_note(request: web.Request) -> web.Response:
    store = request.app[STORE]
    note_id = request.match_info["id"]
    wanted = if_match(request)

    def remove(txn: aiolmdb.Transaction[bytes, bytes]) -> bool:
        notes = txn[store.notes]
        entry = notes.get_entry(note_id)
        if entry is None and wanted is None:
            return False
        check_match(note_id, entry, wanted)
        assert entry is not None
        notes.delete(note_id)
        for tag in entry.value["tags"]:
            txn[store.tags].delete((tag, note_id))
        return True

    if not await store.env.run(remove, write=True):
        raise NotFound(f"no note {note_id!r}")
    return web.Response(status=204)


async def list_notes(request: web.Request) -> web.Response:
    store = request.app[STORE]
    prefix = request.query.get("prefix") or None
    after = request.query.get("after") or None
    limit = int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    # Keys are in UTF-8 order; after + "\0" is the first possible id greater than after.
    start = None if after is None else after + "\0"
    page = [
        view(note_id, note)
        async for note_id, note in store.notes.items(start, prefix=prefix, limit=limit + 1)
    ]
    more = len(page) > limit
    page = page[:limit]
    return web.json_response({"notes": page, "next": page[-1]["id"] if more else None})


# ------------------------------------------------------------------------------ atomic updates
async def set_tags(request: web.Request) -> web.Response:
    store = request.app[STORE]
    note_id = request.match_info["id"]
    tags = (await json_object(request)).get("tags")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadRequest('the body must be {"tags": [strings]}')
    if "" in tags:
        raise BadRequest("a tag must not be empty")
    wanted = sorted(set(tags))

    def apply(txn: aiolmdb.Transaction[bytes, bytes]) -> Note:
        notes, index = txn[store.notes], txn[store.tags]
        note: Note | None = notes.get(note_id)
        if note is None:
            raise NotFound(f"no note {note_id!r}")
        old = set(note["tags"])
        note["tags"] = wanted
        notes.put(note_id, note)
        for tag in old.difference(wanted):
            index.delete((tag, note_id))
        for tag in wanted:
            if tag not in old:
                # A link key too long for LMDB raises InvalidKeyError here, after the note was
                # written: the exception rolls back the whole transaction, note included.
                index.put((tag, note_id), b"")
        return note

    note = await store.env.run(apply, write=True)
    return web.json_response(view(note_id, note))


async def move_note(request: web.Request) -> web.Response:
    store = request.app[STORE]
    source = request.match_info["id"]
    target = (await json_object(request)).get("to")
    if not isinstance(target, str):
        raise BadRequest('the body must be {"to": "new-id"}')

    def move(txn: aiolmdb.Transaction[bytes, bytes]) -> Note:
        notes, index = txn[store.notes], txn[store.tags]
        note: Note | None = notes.pop(source)
        if note is None:
            raise NotFound(f"no note {source!r}")
        if not notes.put(target, note, overwrite=False):
            raise Conflict(f"note {target!r} exists already")  # the pop is rolled back too
        for tag in note["tags"]:
            index.delete((tag, source))
            index.put((tag, target), b"")  # InvalidKeyError (400) rolls back the move
        return note

    note = await store.env.run(move, write=True)
    response = web.json_response(view(target, note))
    response.headers["Location"] = location(target)
    return response


# ------------------------------------------------------------------------------ reads
async def get_tag(request: web.Request) -> web.Response:
    store = request.app[STORE]
    tag = request.match_info["tag"]
    after = request.query.get("after") or None
    limit: int | None = None  # every note of the tag, unless asked for pages
    if "limit" in request.query:
        limit = int_param(request, "limit", MAX_LIMIT, 1, MAX_LIMIT)
    # (tag, after, None) encodes as (tag, after) plus one 0x00 byte: the first key after it.
    start = None if after is None else (tag, after, None)
    index = store.tags.keys(start, prefix=(tag,), limit=None if limit is None else limit + 1)
    ids = [note_id async for _, note_id in index]
    more = limit is not None and len(ids) > limit
    ids = ids[:limit]
    return web.json_response({"tag": tag, "notes": ids, "next": ids[-1] if more else None})


async def stats(request: web.Request) -> web.Response:
    store = request.app[STORE]
    async with store.env.begin() as snap:  # one consistent view of both databases
        notes = await snap[store.notes].count()
        links = await snap[store.tags].count()
        tags, last = 0, None
        async for tag, _ in snap[store.tags].keys():  # in tag order: count each tag once
            if tag != last:
                tags, last = tags + 1, tag
    return web.json_response({"notes": notes, "tags": tags, "tag_links": links})


# ------------------------------------------------------------------------------ changes
async def changes(request: web.Request) -> web.Response:
    store = request.app[STORE]
    since = int_param(request, "since", None, 0, 2**63 - 1)
    timeout = int_param(request, "timeout", 0, 0, MAX_POLL)
    limit = int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    try:
        found, after = await read_changes(store, since, limit)
        if not found and timeout:
            # Nothing yet: follow the log until one change arrives (or the time is up), then
            # take what else is there already.
            feed = store.env.changes(after, db=store.notes)
            try:
                first = await asyncio.wait_for(feed.__anext__(), timeout)
            except (asyncio.TimeoutError, StopAsyncIteration):  # timed out, or shutting down
                after = max(after, feed.last_seq or after)
            else:
                assert first.seq is not None
                found, after = await read_changes(store, first.seq, limit - 1)
                found.insert(0, change_view(first))
    except aiolmdb.ChangesTrimmedError as exc:
        raise Gone(
            f"the changes after {since} are no longer kept: rebuild from GET /notes, then "
            f"poll from since={exc.oldest - 1}",
            exc.oldest,
        ) from None
    return web.json_response({"changes": found, "next": after})


async def read_changes(store: Store, since: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The notes' changes after ``since`` already in the log (at most ``limit``), and the
    ``since`` of the next read."""
    found: list[dict[str, Any]] = []
    if limit == 0:
        return found, since
    feed = store.env.changes(since, db=store.notes, follow=False)
    async for change in feed:
        found.append(change_view(change))
        if len(found) == limit:
            assert change.seq is not None
            return found, change.seq  # the feed may have read further: resume after this one
    # Caught up: the last number scanned also skips the tag index's changes.
    return found, feed.last_seq if feed.last_seq is not None else since


def change_view(change: aiolmdb.Change) -> dict[str, Any]:
    note = change.value if change.kind == "put" else None
    return {"seq": change.seq, "kind": change.kind, "id": change.key, "note": note}


# ------------------------------------------------------------------------------ main
async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then shut down cleanly (closing the
    environment)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        for address in runner.addresses:
            print(f"notes service listening on http://{address[0]}:{address[1]}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A JSON notes service on aiolmdb.")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--data", default="./notes-data", help="environment directory (default: %(default)s)"
    )
    parser.add_argument(
        "--keep-changes",
        type=int,
        default=DEFAULT_KEEP_CHANGES,
        help="changes the log keeps for GET /changes (default: %(default)s)",
    )
    parser.add_argument(
        "--nats",
        metavar="URLS",
        help="replicate through NATS JetStream at these server URLs (comma-separated): "
        "publish this instance's commits, or with --leader follow them",
    )
    parser.add_argument(
        "--stream", default="notes", help="the JetStream stream (default: %(default)s)"
    )
    parser.add_argument(
        "--leader",
        metavar="URL",
        help="serve as a read replica of the leader at this base URL (needs --nats); writes "
        "are redirected there",
    )
    args = parser.parse_args(argv)
    if args.leader is not None and args.nats is None:
        parser.error("--leader needs --nats (the replica follows the leader's stream)")
    return args


def replication_of(args: argparse.Namespace) -> Replication | None:
    """The replication the command line asks for (None: a standalone service)."""
    if args.nats is None:
        return None
    return Replication(args.nats, args.stream, args.leader)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        app = create_app(
            args.data, keep_changes=args.keep_changes, replication=replication_of(args)
        )
        asyncio.run(serve(app, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
