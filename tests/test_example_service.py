"""examples/notes_service.py, served for real on 127.0.0.1 and driven over HTTP.

The application runs in this process (aiohttp's AppRunner on an ephemeral port) and is driven
with a real ``aiohttp.ClientSession``; one test also runs the script itself (``main()``) as a
subprocess and stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web

import aiolmdb

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# examples/ is a directory of scripts, not a package (mypy checks them as top-level modules).
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))
import notes_service  # noqa: E402

TIMEOUT = 30.0
MAX_KEY = 511  # LMDB's default key size limit


@dataclass
class Service:
    app: web.Application
    http: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        url: str | yarl.URL,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request; returns the status and the decoded JSON body (None if empty)."""
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        async with self.http.request(method, url, params=params, **kwargs) as response:
            text = await response.text()
            if text:
                assert response.content_type == "application/json", text
                return response.status, await response.json()
            return response.status, None

    async def put(self, note_id: str, data: dict[str, Any]) -> int:
        status, _ = await self.call("PUT", f"/notes/{note_id}", data)
        return status

    async def get(self, note_id: str) -> Any:
        status, body = await self.call("GET", f"/notes/{note_id}")
        return body if status == 200 else status

    async def tag(self, tag: str) -> list[str]:
        status, body = await self.call("GET", f"/tags/{tag}")
        assert status == 200
        notes: list[str] = body["notes"]
        return notes

    async def stats(self) -> dict[str, int]:
        status, body = await self.call("GET", "/stats")
        assert status == 200
        return dict(body)

    async def links(self) -> list[tuple[str, str]]:
        """The tag index read straight from the database (not through the service), checked
        against the notes' own tags as read in the same snapshot; returns its links."""
        store = self.app[notes_service.STORE]
        raw = store.env.open_db("tags")  # the stored bytes, not the service's handle
        async with store.env.begin() as snap:
            notes = [pair async for pair in snap[store.notes].items()]
            stored = [pair async for pair in snap[raw].items()]
        coder = aiolmdb.TupleCoder()
        links = [coder.deserialize(key) for key, _ in stored]
        # Python orders tuples of str by code point, as the tuple layer's bytes do.
        assert links == sorted((tag, i) for i, note in notes for tag in note["tags"])
        assert all(value == b"" for _, value in stored)
        return links


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    app = notes_service.create_app(tmp_path / "notes-data", map_size=1 << 20)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        assert host == "127.0.0.1"
        assert port > 0
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", timeout=timeout) as http:
            yield Service(app, http)
    finally:
        await runner.cleanup()
    assert app[notes_service.STORE].env.closed  # cleanup closed the environment


async def test_crud(service: Service) -> None:
    assert await service.get("n1") == 404
    status, body = await service.call("PUT", "/notes/n1", {"text": "hello"})
    assert status == 201
    assert body == {"id": "n1", "data": {"text": "hello"}, "tags": []}
    assert await service.get("n1") == {"id": "n1", "data": {"text": "hello"}, "tags": []}

    assert await service.put("n1", {"text": "hello again", "n": [1, 2]}) == 200  # replaced
    assert (await service.get("n1"))["data"] == {"text": "hello again", "n": [1, 2]}

    unicode_id = "caf\u00e9 \u2615"
    assert await service.put(unicode_id, {"text": "\u00e9"}) == 201
    assert (await service.get(unicode_id))["data"] == {"text": "\u00e9"}

    assert await service.call("DELETE", "/notes/n1") == (204, None)
    assert await service.get("n1") == 404
    status, body = await service.call("DELETE", "/notes/n1")
    assert status == 404
    assert "n1" in body["error"]
    assert await service.stats() == {"notes": 1, "tags": 0, "tag_links": 0}


async def test_location_leads_back_for_any_id(service: Service) -> None:
    """Location headers are percent-encoded: ids with a slash, a control character (which a
    raw header could not carry) or non-ASCII text are reached by following them."""
    for odd in ("a/b", "line\r\nbreak", "nul\x00", "caf\u00e9 \u2615", "50%"):
        url = yarl.URL("/notes/" + urllib.parse.quote(odd, safe=""), encoded=True)
        async with service.http.put(url, json={}) as response:
            assert response.status == 201, odd
            created = response.headers["Location"]
        async with service.http.post(
            yarl.URL(created + "/move", encoded=True), json={"to": odd + "\n2"}
        ) as response:
            assert response.status == 200, odd
            moved = response.headers["Location"]
        assert created.isascii()
        assert moved.isascii()
        assert await service.call("GET", yarl.URL(created, encoded=True)) == (
            404,
            {"error": f"no note {odd!r}"},
        )
        status, body = await service.call("GET", yarl.URL(moved, encoded=True))
        assert (status, body["id"]) == (200, odd + "\n2")
    assert (await service.stats())["notes"] == 5


async def test_bad_requests(service: Service) -> None:
    async with service.http.put("/notes/x", data=b"{not json") as response:
        assert response.status == 400
        assert "JSON" in (await response.json())["error"]
    status, body = await service.call("PUT", "/notes/x", [1, 2])  # not an object
    assert status == 400
    assert "object" in body["error"]
    assert await service.put("k" * (MAX_KEY + 1), {"too": "long an id"}) == 400
    assert await service.put("k" * MAX_KEY, {"longest": "id"}) == 201
    for query in ("limit=0", "limit=1001", "limit=ten"):
        status, _ = await service.call("GET", f"/notes?{query}")
        assert status == 400, query
    status, _ = await service.call("PUT", "/notes/x/tags", {"tags": "not-a-list"})
    assert status == 400
    status, _ = await service.call("POST", "/notes/x/move", {"to": 42})
    assert status == 400
    assert (await service.stats())["notes"] == 1


async def test_concurrent_requests(service: Service) -> None:
    n = 200
    ids = [f"note:{i:04d}" for i in range(n)]
    shuffled = random.Random(7).sample(ids, n)
    statuses = await asyncio.gather(*(service.put(i, {"n": int(i[5:])}) for i in shuffled))
    assert statuses == [201] * n

    # Mixed concurrent traffic: reads, replacements, tag updates, listings, stats.
    results = await asyncio.gather(
        *(service.get(i) for i in ids),
        *(service.put(i, {"n": int(i[5:]), "v": 2}) for i in ids[:50]),
        *(service.call("PUT", f"/notes/{i}/tags", {"tags": ["even"]}) for i in ids[::2]),
        *(service.call("GET", "/notes?prefix=note:01&limit=5") for _ in range(20)),
        service.stats(),
    )
    notes = results[:n]
    assert [note["data"]["n"] for note in notes] == list(range(n))
    assert results[n : n + 50] == [200] * 50
    assert all(r[0] == 200 for r in results[n + 50 : n + 150])
    for status, page in results[n + 150 : n + 170]:
        assert status == 200
        assert [note["id"] for note in page["notes"]] == ids[100:105]

    assert await service.stats() == {"notes": n, "tags": 1, "tag_links": n // 2}
    assert await service.tag("even") == ids[::2]
    assert await service.links() == [("even", i) for i in ids[::2]]
    assert (await service.get("note:0001"))["data"] == {"n": 1, "v": 2}
    assert (await service.get("note:0000"))["tags"] == ["even"]

    # Concurrent deletes: each answered once with 204, then everything is gone.
    deleted = await asyncio.gather(*(service.call("DELETE", f"/notes/{i}") for i in ids))
    assert deleted == [(204, None)] * n
    assert await service.stats() == {"notes": 0, "tags": 0, "tag_links": 0}
    assert await service.links() == []


async def test_listing_order_prefix_and_pages(service: Service) -> None:
    ids = ["b:2", "a:10", "a:9", "b:1", "a:1", "ab", "c", "a:2", "\u00e9t\u00e9", "Z"]
    for note_id in ids:
        assert await service.put(note_id, {"id": note_id}) == 201

    status, body = await service.call("GET", "/notes")
    assert status == 200
    # UTF-8 byte order: uppercase before lowercase, "a:10" before "a:9", accents last.
    assert [n["id"] for n in body["notes"]] == sorted(ids, key=lambda s: s.encode())
    assert [n["id"] for n in body["notes"]] == [
        "Z", "a:1", "a:10", "a:2", "a:9", "ab", "b:1", "b:2", "c", "\u00e9t\u00e9",
    ]  # fmt: skip
    assert body["next"] is None
    assert all(n["data"] == {"id": n["id"]} for n in body["notes"])

    status, body = await service.call("GET", "/notes?prefix=a:")
    assert [n["id"] for n in body["notes"]] == ["a:1", "a:10", "a:2", "a:9"]
    status, body = await service.call("GET", "/notes?prefix=a")
    assert [n["id"] for n in body["notes"]] == ["a:1", "a:10", "a:2", "a:9", "ab"]
    status, body = await service.call("GET", "/notes?prefix=zz")
    assert body == {"notes": [], "next": None}

    # Pages of 3 within a prefix, following "next".
    seen: list[str] = []
    after = ""
    while True:
        query = {"prefix": "a", "limit": "3", "after": after}
        status, body = await service.call("GET", "/notes", params=query)
        assert status == 200
        assert len(body["notes"]) <= 3
        seen += [n["id"] for n in body["notes"]]
        if body["next"] is None:
            break
        after = body["next"]
    assert seen == ["a:1", "a:10", "a:2", "a:9", "ab"]

    status, body = await service.call("GET", "/notes?limit=2")
    assert [n["id"] for n in body["notes"]] == ["Z", "a:1"]
    assert body["next"] == "a:1"


async def test_tags_update_both_databases_atomically(service: Service) -> None:
    await service.put("n1", {"text": "one"})
    await service.put("n2", {"text": "two"})
    status, body = await service.call("PUT", "/notes/n1/tags", {"tags": ["work", "urgent"]})
    assert status == 200
    assert body["tags"] == ["urgent", "work"]
    await service.call("PUT", "/notes/n2/tags", {"tags": ["work"]})
    assert await service.tag("work") == ["n1", "n2"]
    assert await service.tag("urgent") == ["n1"]
    before = await service.stats()
    assert before == {"notes": 2, "tags": 2, "tag_links": 3}

    assert await service.links() == [("urgent", "n1"), ("work", "n1"), ("work", "n2")]

    # A link key too long for LMDB is rejected by the tags index AFTER the note and the
    # "home" link were written in the same transaction: everything rolls back. The empty tag
    # is rejected before anything is written.
    for bad, reason in (("", "empty"), ("t" * (MAX_KEY + 1), "max_key_size")):
        status, body = await service.call("PUT", "/notes/n1/tags", {"tags": ["home", bad]})
        assert status == 400, bad
        assert reason in body["error"]
        assert (await service.get("n1"))["tags"] == ["urgent", "work"]
        assert await service.tag("home") == []
        assert await service.stats() == before

    # A missing note: 404 and nothing written.
    status, _ = await service.call("PUT", "/notes/nope/tags", {"tags": ["home"]})
    assert status == 404
    assert await service.tag("home") == []

    # Replacing tags removes stale links; replacing the note's data keeps its tags.
    await service.call("PUT", "/notes/n1/tags", {"tags": ["home"]})
    assert await service.tag("work") == ["n2"]
    assert await service.tag("urgent") == []
    assert await service.put("n1", {"text": "one, edited"}) == 200
    assert (await service.get("n1"))["tags"] == ["home"]

    assert await service.links() == [("home", "n1"), ("work", "n2")]

    # Deleting a note removes its links in the same transaction.
    assert (await service.call("DELETE", "/notes/n2"))[0] == 204
    assert await service.tag("work") == []
    assert await service.stats() == {"notes": 1, "tags": 1, "tag_links": 1}
    assert await service.links() == [("home", "n1")]


async def test_move_is_atomic(service: Service) -> None:
    await service.put("draft", {"text": "moving"})
    await service.call("PUT", "/notes/draft/tags", {"tags": ["a", "b"]})
    await service.put("taken", {"text": "already here"})

    # The target exists: 409, and the source's removal (done first) is rolled back.
    status, body = await service.call("POST", "/notes/draft/move", {"to": "taken"})
    assert status == 409
    assert "taken" in body["error"]
    assert (await service.get("draft"))["data"] == {"text": "moving"}
    assert (await service.get("taken"))["data"] == {"text": "already here"}
    assert await service.tag("a") == ["draft"]

    # An invalid target id: 400, same guarantee.
    status, _ = await service.call("POST", "/notes/draft/move", {"to": ""})
    assert status == 400
    assert (await service.get("draft"))["tags"] == ["a", "b"]

    status, _ = await service.call("POST", "/notes/ghost/move", {"to": "anything"})
    assert status == 404
    assert await service.get("anything") == 404

    status, body = await service.call("POST", "/notes/draft/move", {"to": "final"})
    assert status == 200
    assert body == {"id": "final", "data": {"text": "moving"}, "tags": ["a", "b"]}
    assert await service.get("draft") == 404
    assert await service.tag("a") == ["final"]
    assert await service.tag("b") == ["final"]
    assert await service.stats() == {"notes": 2, "tags": 2, "tag_links": 2}
    assert await service.links() == [("a", "final"), ("b", "final")]


async def test_concurrent_moves_of_one_note(service: Service) -> None:
    """Many clients race to move the same note: exactly one wins, the others get 404."""
    await service.put("src", {"text": "contested"})
    await service.call("PUT", "/notes/src/tags", {"tags": ["t"]})
    results = await asyncio.gather(
        *(service.call("POST", "/notes/src/move", {"to": f"dst{i}"}) for i in range(50))
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [404] * 49
    winner = next(body["id"] for status, body in results if status == 200)
    assert await service.tag("t") == [winner]
    assert await service.stats() == {"notes": 1, "tags": 1, "tag_links": 1}
    assert await service.links() == [("t", winner)]


async def test_tag_query_is_an_exact_prefix(service: Service) -> None:
    """GET /tags/a scans the keys (a, ...): not those of tags that merely start like "a"."""
    tags = {"plain": "a", "longer": "ab", "spaced": "a b", "nul": "a\x00b", "upper": "A"}
    for note_id, tag in tags.items():
        assert await service.put(note_id, {}) == 201
        status, _ = await service.call("PUT", f"/notes/{note_id}/tags", {"tags": [tag]})
        assert status == 200
    await service.put("both", {})
    await service.call("PUT", "/notes/both/tags", {"tags": ["a", "ab"]})
    assert await service.tag("a") == ["both", "plain"]
    assert await service.tag("ab") == ["both", "longer"]
    assert await service.tag("a b") == ["spaced"]
    assert await service.tag("A") == ["upper"]
    assert await service.tag("b") == []
    assert await service.stats() == {"notes": 6, "tags": 5, "tag_links": 7}
    assert [tag for tag, _ in await service.links()] == ["A", "a", "a", "a\x00b", "a b", "ab", "ab"]


async def test_tag_pages(service: Service) -> None:
    ids = ["n", "n\x00", "n1", "n10", "n2", "\u00e9", "N"]
    for note_id in ids:
        assert await service.put(note_id, {}) == 201
        status, _ = await service.call("PUT", f"/notes/{note_id}/tags", {"tags": ["t", "other"]})
        assert status == 200
    await service.put("untagged", {})
    expected = sorted(ids)  # code point order
    assert await service.tag("t") == expected

    seen: list[str] = []
    after = ""
    while True:
        status, body = await service.call("GET", "/tags/t", params={"limit": "2", "after": after})
        assert status == 200
        assert body["tag"] == "t"
        assert 1 <= len(body["notes"]) <= 2
        seen += body["notes"]
        if body["next"] is None:
            break
        assert body["next"] == body["notes"][-1]
        after = body["next"]
    assert seen == expected

    status, body = await service.call("GET", "/tags/t", params={"after": "n1"})
    assert body == {"tag": "t", "notes": ["n10", "n2", "\u00e9"], "next": None}
    status, body = await service.call("GET", "/tags/t", params={"limit": str(len(ids))})
    assert body == {"tag": "t", "notes": expected, "next": None}
    status, body = await service.call("GET", "/tags/t", params={"after": "\u00e9"})
    assert body == {"tag": "t", "notes": [], "next": None}
    for query in ("limit=0", "limit=1001", "limit=two"):
        status, _ = await service.call("GET", f"/tags/t?{query}")
        assert status == 400, query


async def test_link_keys_share_the_key_limit(service: Service) -> None:
    """A tag may be as long as its link key (tag, note id) fits LMDB's key limit once encoded:
    for a longer note id, or after a move to one, the same tag no longer fits."""
    coder = aiolmdb.TupleCoder()
    longest = "x" * (MAX_KEY - len(coder.serialize(("", "n1"))))
    assert len(coder.serialize((longest, "n1"))) == MAX_KEY
    await service.put("n1", {})
    status, body = await service.call("PUT", "/notes/n1/tags", {"tags": [longest + "x"]})
    assert status == 400
    assert "max_key_size" in body["error"]
    status, body = await service.call("PUT", "/notes/n1/tags", {"tags": [longest, "short"]})
    assert status == 200
    assert await service.tag(longest) == ["n1"]

    # Moving to a longer id would make that link too long: 400, and nothing moves.
    status, body = await service.call("POST", "/notes/n1/move", {"to": "n12"})
    assert status == 400
    assert "max_key_size" in body["error"]
    assert await service.get("n12") == 404
    assert (await service.get("n1"))["tags"] == ["short", longest]
    assert await service.links() == [("short", "n1"), (longest, "n1")]
    status, _ = await service.call("POST", "/notes/n1/move", {"to": "n3"})  # same length: fits
    assert status == 200
    assert await service.links() == [("short", "n3"), (longest, "n3")]

    # A tag longer than any link can be is simply not found.
    status, body = await service.call("GET", f"/tags/{'y' * (MAX_KEY + 1)}")
    assert status == 200
    assert body["notes"] == []


async def test_concurrent_tag_changes_keep_the_index_consistent(service: Service) -> None:
    """Tag updates, moves and deletes racing over a few notes: after every round, the index
    holds exactly the links of the notes, whatever order the transactions ran in."""
    rng = random.Random(13)
    pool = [f"tag{i}" for i in range(8)]
    for round_ in range(3):
        ids = [f"r{round_}-{i}" for i in range(6)]
        for note_id in ids:
            assert await service.put(note_id, {}) == 201
        requests = [
            *(
                service.call("PUT", f"/notes/{rng.choice(ids)}/tags", {"tags": rng.sample(pool, 3)})
                for _ in range(40)
            ),
            *(
                service.call(
                    "POST", f"/notes/{rng.choice(ids)}/move", {"to": f"{rng.choice(ids)}m"}
                )
                for _ in range(10)
            ),
            *(service.call("DELETE", f"/notes/{rng.choice(ids)}") for _ in range(3)),
        ]
        rng.shuffle(requests)
        results = await asyncio.gather(*requests)
        assert {status for status, _ in results} <= {200, 204, 404, 409}
        links = await service.links()
        stats = await service.stats()
        assert stats["tag_links"] == len(links)
        assert stats["tags"] == len({tag for tag, _ in links})
        for tag in {tag for tag, _ in links}:
            assert await service.tag(tag) == [i for t, i in links if t == tag]


async def test_refuses_an_earlier_versions_data(tmp_path: Path) -> None:
    """A data directory whose tag index is the earlier dupsort layout: startup fails with
    what to do, and the environment is closed again."""
    data = tmp_path / "old-data"
    async with aiolmdb.open(data) as env:
        old = env.open_db(
            "tags", key_coder=aiolmdb.StringCoder(), value_coder=aiolmdb.StringCoder(), dupsort=True
        )
        await old.put("work", "n1")
    runner = web.AppRunner(notes_service.create_app(data, map_size=1 << 20))
    with pytest.raises(RuntimeError, match="new --data directory"):
        await runner.setup()
    await runner.cleanup()
    # It was closed: this process may open it again. The data is left as it was; the start
    # gave it an (empty) change log, so later writers pass changelog=True.
    async with aiolmdb.open(data, changelog=True) as env:
        assert await env.open_db("tags").get_all(b"work") == [b"n1"]
        assert [c async for c in env.changes(since=0, follow=False)] == []


async def test_etags_and_if_match(service: Service) -> None:
    """GET returns the note's version as an ETag; PUT and DELETE with If-Match write only if
    the note still has it, else 412 and nothing changes."""
    async with service.http.put("/notes/n", json={"v": 1}) as response:
        assert response.status == 201
        created = response.headers["ETag"]
    async with service.http.get("/notes/n") as response:
        first = response.headers["ETag"]
    assert first == created
    assert first.startswith('"')
    assert first.endswith('"')
    async with service.http.put("/notes/n", json={"v": 2}, headers={"If-Match": first}) as r:
        assert r.status == 200
        second = r.headers["ETag"]
    assert second != first
    assert int(second.strip('"')) > int(first.strip('"'))
    # A stale ETag: 412, the note unchanged.
    async with service.http.put("/notes/n", json={"v": 3}, headers={"If-Match": first}) as r:
        assert r.status == 412
        assert second in (await r.json())["error"]
    assert (await service.get("n"))["data"] == {"v": 2}
    for odd in ('W/"1"', "garbage", '"0"', '"-5"', '""', '"' + "9" * 30 + '"'):
        async with service.http.put("/notes/n", json={"v": 9}, headers={"If-Match": odd}) as r:
            assert r.status == 412, odd
    async with service.http.put("/notes/n", json={"v": 3}, headers={"If-Match": "*"}) as r:
        assert r.status == 200
        third = r.headers["ETag"]
    async with service.http.put("/notes/new", json={}, headers={"If-Match": "*"}) as r:
        assert r.status == 412
    async with service.http.put("/notes/new", json={}, headers={"If-Match": third}) as r:
        assert r.status == 412
    assert await service.get("new") == 404
    # Tag changes are writes too: they change the ETag.
    assert (await service.call("PUT", "/notes/n/tags", {"tags": ["t"]}))[0] == 200
    async with service.http.get("/notes/n") as response:
        fourth = response.headers["ETag"]
    assert fourth != third
    async with service.http.delete("/notes/n", headers={"If-Match": third}) as r:
        assert r.status == 412
    async with service.http.delete("/notes/gone", headers={"If-Match": third}) as r:
        assert r.status == 412
    async with service.http.delete("/notes/n", headers={"If-Match": fourth}) as r:
        assert r.status == 204
    assert await service.get("n") == 404
    assert await service.tag("t") == []


async def test_concurrent_edits_of_one_etag(service: Service) -> None:
    """Clients that read the same ETag and PUT at once: exactly one wins, the others get 412."""
    assert await service.put("n", {"v": 0}) == 201
    async with service.http.get("/notes/n") as response:
        seen = response.headers["ETag"]

    async def edit(n: int) -> int:
        async with service.http.put(
            "/notes/n", json={"v": n}, headers={"If-Match": seen}
        ) as response:
            return response.status

    statuses = await asyncio.gather(*(edit(n) for n in range(1, 9)))
    assert sorted(statuses) == [200] + [412] * 7
    winner = statuses.index(200) + 1
    assert (await service.get("n"))["data"] == {"v": winner}


async def test_refuses_unversioned_notes(tmp_path: Path) -> None:
    data = tmp_path / "old-notes"
    async with aiolmdb.open(data) as env:
        await env.open_db("notes").put(b"n1", b"{}")
    runner = web.AppRunner(notes_service.create_app(data, map_size=1 << 20))
    with pytest.raises(RuntimeError, match="without versions"):
        await runner.setup()
    await runner.cleanup()


def test_parse_args_defaults() -> None:
    args = notes_service.parse_args([])
    assert (args.host, args.port, args.data) == ("127.0.0.1", 8080, "./notes-data")
    assert args.keep_changes == notes_service.DEFAULT_KEEP_CHANGES
    args = notes_service.parse_args(["--port", "0", "--data", "/tmp/x", "--host", "127.0.0.1"])
    assert (args.host, args.port, args.data) == ("127.0.0.1", 0, "/tmp/x")


async def _start_script(data: Path) -> tuple[asyncio.subprocess.Process, str]:
    """Run examples/notes_service.py --port 0 and wait for the address it prints."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "notes_service.py"),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data",
        str(data),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
    assert line.startswith("notes service listening on http://127.0.0.1:"), line
    return proc, line.split()[-1]


async def _stop_script(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 0, stderr.decode()


@pytest.mark.skipif(sys.platform == "win32", reason="stops the server with SIGTERM")
async def test_main_serves_and_persists(tmp_path: Path) -> None:
    data = tmp_path / "data"
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    proc, url = await _start_script(data)
    try:
        async with (
            aiohttp.ClientSession(url, timeout=timeout) as http,
            http.put("/notes/kept", json={"text": "survives a restart"}) as response,
        ):
            assert response.status == 201
    finally:
        await _stop_script(proc)
    if os.name == "posix":
        assert (data / "data.mdb").stat().st_mode & 0o077 == 0  # private to its user

    proc, url = await _start_script(data)  # same data directory, new process
    try:
        async with (
            aiohttp.ClientSession(url, timeout=timeout) as http,
            http.get("/notes/kept") as response,
        ):
            assert response.status == 200
            assert (await response.json())["data"] == {"text": "survives a restart"}
    finally:
        await _stop_script(proc)


# ------------------------------------------------------------------------------ GET /changes
async def test_changes_after_a_put(service: Service) -> None:
    assert await service.put("n1", {"text": "hello"}) == 201
    assert await service.call("PUT", "/notes/n1/tags", {"tags": ["t"]}) == (
        200,
        {"id": "n1", "data": {"text": "hello"}, "tags": ["t"]},
    )
    assert (await service.call("DELETE", "/notes/n1"))[0] == 204
    status, body = await service.call("GET", "/changes?since=0")
    assert status == 200
    # The notes' changes only (the tag index's are skipped), decoded, in commit order.
    assert body["changes"] == [
        {"seq": 1, "kind": "put", "id": "n1", "note": {"data": {"text": "hello"}, "tags": []}},
        {"seq": 2, "kind": "put", "id": "n1", "note": {"data": {"text": "hello"}, "tags": ["t"]}},
        {"seq": 4, "kind": "delete", "id": "n1", "note": None},
    ]
    # next skips the tag index's last change (seq 5, the link deleted with the note).
    assert body["next"] == 5
    assert await service.call("GET", "/changes?since=5") == (200, {"changes": [], "next": 5})
    # limit: a page ends at its last change, and the next page goes on from there.
    status, body = await service.call("GET", "/changes?since=0&limit=2")
    assert [c["seq"] for c in body["changes"]] == [1, 2]
    assert body["next"] == 2
    status, body = await service.call("GET", "/changes?since=2&limit=2")
    assert [c["seq"] for c in body["changes"]] == [4]
    assert body["next"] == 5


async def test_changes_long_poll_receives_a_later_write(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await service.put("before", {}) == 201
    status, body = await service.call("GET", "/changes?since=0")
    since = body["next"]
    # Know when the poll found nothing and goes on to wait (its first read came back empty).
    read_changes = notes_service.read_changes
    found_nothing = asyncio.Event()

    async def observed(store: Any, after: int, limit: int) -> Any:
        found, following = await read_changes(store, after, limit)
        if not found:
            found_nothing.set()
        return found, following

    monkeypatch.setattr(notes_service, "read_changes", observed)
    poll = asyncio.ensure_future(
        service.call("GET", f"/changes?since={since}&timeout={int(TIMEOUT)}&limit=10")
    )
    await asyncio.wait_for(found_nothing.wait(), TIMEOUT)
    assert not poll.done()
    assert await service.put("after", {"n": 1}) == 201
    status, body = await asyncio.wait_for(poll, TIMEOUT)
    assert status == 200
    assert body["changes"] == [
        {"seq": since + 1, "kind": "put", "id": "after", "note": {"data": {"n": 1}, "tags": []}}
    ]
    assert body["next"] == since + 1


async def test_changes_poll_times_out_empty(service: Service) -> None:
    assert await service.put("n", {}) == 201
    status, body = await service.call("GET", "/changes?since=1&timeout=1")
    assert (status, body) == (200, {"changes": [], "next": 1})


async def test_changes_bad_parameters(service: Service) -> None:
    for query in (
        "",
        "since=",
        "since=-1",
        "since=x",
        "since=0&timeout=61",
        "since=0&timeout=-1",
        "since=0&limit=0",
        "since=0&limit=1001",
    ):
        status, body = await service.call("GET", f"/changes?{query}")
        assert status == 400, query
        assert body["error"], query


async def test_changes_trimmed_is_gone(tmp_path: Path) -> None:
    app = notes_service.create_app(tmp_path / "notes-data", map_size=1 << 22, keep_changes=3)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            service = Service(app, http)
            notes = app[notes_service.STORE].notes
            # More than one trim check's worth of changes, then a write queued behind the trim.
            await notes.put_multi([(f"n{i:03d}", {"data": {}, "tags": []}) for i in range(300)])
            assert await service.put("last", {}) == 201
            status, body = await service.call("GET", "/changes?since=0")
            assert status == 410
            oldest = body["oldest"]
            assert 1 < oldest <= 301 - 2
            assert f"since={oldest - 1}" in body["error"]
            status, body = await service.call("GET", f"/changes?since={oldest - 1}")
            assert status == 200
            assert body["changes"][-1]["id"] == "last"
            assert body["changes"][0]["seq"] == oldest
    finally:
        await runner.cleanup()


async def test_data_without_a_change_log_starts_one(tmp_path: Path) -> None:
    """A data directory of the version before the change log: served as it is, its log starts
    at this start (the notes written before are in GET /notes, not in GET /changes)."""
    data = tmp_path / "data"
    async with aiolmdb.open(data) as env:
        notes = env.open_db(
            "notes",
            key_coder=aiolmdb.StringCoder(),
            value_coder=aiolmdb.JSONCoder(),
            versioned=True,
        )
        await notes.put("old", {"data": {"n": 0}, "tags": []})
    app = notes_service.create_app(data, map_size=1 << 20)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            service = Service(app, http)
            assert await service.call("GET", "/changes?since=0") == (
                200,
                {"changes": [], "next": 0},
            )
            assert (await service.get("old"))["data"] == {"n": 0}
            assert await service.put("new", {}) == 201
            _status, body = await service.call("GET", "/changes?since=0")
            assert [(c["seq"], c["id"]) for c in body["changes"]] == [(1, "new")]
    finally:
        await runner.cleanup()
