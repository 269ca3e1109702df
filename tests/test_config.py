"""Checking the options of ``aiolmdb.open`` (EngineConfig and the lmdb keyword arguments), and
the engine facade's methods that the rest of the package uses instead of its internals."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from conftest import MAP_SIZE, TIMEOUT

import aiolmdb
from aiolmdb import ClosedError, DeadlockError, Environment
from aiolmdb._engine.config import DEFAULT_MAX_BATCH, EngineConfig
from aiolmdb._engine.engine import FALLBACK, WriteSession

# (option, bad value, error type): aiolmdb's own options.
BAD_ENGINE_OPTIONS: list[tuple[str, Any, type[Exception]]] = [
    ("max_batch", 1.5, TypeError),
    ("max_batch", "64", TypeError),
    ("max_batch", True, TypeError),
    ("max_batch", None, TypeError),
    ("max_batch", 0, ValueError),
    ("max_batch", -3, ValueError),
    ("readers", 2.0, TypeError),
    ("readers", False, TypeError),
    ("readers", 0, ValueError),
    ("max_map_size", "big", TypeError),
    ("max_map_size", 1e9, TypeError),
    ("max_map_size", True, TypeError),
    ("max_map_size", 0, ValueError),
    ("max_map_size", -1, ValueError),
    ("inline_reads", 2, TypeError),
    ("inline_reads", "yes", TypeError),
    ("reads", "fast", ValueError),
    ("reads", True, TypeError),
    ("map_growth", -1, TypeError),
    ("map_growth", "no", TypeError),
    ("executor", "pool", TypeError),
    ("executor", object(), TypeError),
]


def ids(cases: list[tuple[str, Any, type[Exception]]]) -> list[str]:
    return [f"{name}={value!r}" for name, value, _ in cases]


@pytest.mark.parametrize(
    ("name", "value", "error"), BAD_ENGINE_OPTIONS, ids=ids(BAD_ENGINE_OPTIONS)
)
def test_engine_config_rejects(name: str, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        EngineConfig(**{name: value})
    message = str(caught.value)
    assert message.startswith(f"{name} must be ")
    assert message.endswith(f"got {value!r}")


def test_open_names_unknown_lmdb_options(path: Path) -> None:
    with pytest.raises(TypeError, match="unknown options: 'bogus', 'map_sise'"):
        aiolmdb.open(path, bogus=1, map_sise=MAP_SIZE, max_dbs=4)


def test_engine_config_defaults() -> None:
    config = EngineConfig()
    assert config.max_batch == DEFAULT_MAX_BATCH
    assert config.executor is None
    assert config.readers is None
    assert config.inline_reads is False
    assert config.map_growth is True
    assert config.max_map_size is None
    assert 2 <= config.reader_threads <= 8
    assert EngineConfig(readers=3).reader_threads == 3


def test_engine_config_takes_zero_and_one_as_bools() -> None:
    one: Any = 1
    zero: Any = 0
    config = EngineConfig(inline_reads=one, map_growth=zero)
    assert config.inline_reads is True
    assert config.map_growth is False


def test_engine_config_accepts_edge_values() -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        config = EngineConfig(
            executor=executor,
            readers=1,
            max_batch=1,
            inline_reads=True,
            map_growth=False,
            max_map_size=1,
        )
        assert config.executor is executor
    assert (config.readers, config.max_batch, config.max_map_size) == (1, 1, 1)


def test_engine_config_is_frozen() -> None:
    config = EngineConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_batch = 2  # type: ignore[misc]


async def test_open_accepts_good_lmdb_options(path: Path) -> None:
    env = aiolmdb.open(
        path,
        map_size=MAP_SIZE,
        max_readers=7,
        max_dbs=3,
        max_spare_txns=0,
        mode=0o700,
        sync=False,
        readahead=False,
        create=True,
    )
    async with env:
        assert env.lmdb_environment.max_readers() == 7
        await env.get_default_database().put(b"k", b"v")
        assert await env.get_default_database().get(b"k") == b"v"


# --------------------------------------------------------------------------------------------
# the facade
# --------------------------------------------------------------------------------------------


async def test_session_hold_and_release(env: Environment) -> None:
    engine = env._engine
    session = WriteSession(asyncio.current_task())
    engine.check_not_holding("anything")  # nothing held
    engine.hold_session(session)
    with pytest.raises(DeadlockError, match="a plain database write"):
        await engine.submit_write(lambda txn: None, (), False)
    with pytest.raises(DeadlockError, match="deleting a database"):
        engine.check_not_holding("deleting a database")

    async def other_task() -> None:
        engine.check_not_holding("anything")  # held by another task: no deadlock

    await other_task_run(other_task)
    engine.release_session(WriteSession(None))  # not the one held: changes nothing
    with pytest.raises(DeadlockError):
        engine.check_not_holding("anything")
    engine.release_session(session)
    engine.check_not_holding("anything")
    assert await env.get_default_database().put(b"k", b"v")


async def other_task_run(fn: Any) -> None:
    await asyncio.wait_for(asyncio.ensure_future(fn()), TIMEOUT)


class Releasable:
    def __init__(self) -> None:
        self.released = 0

    def release(self) -> None:
        self.released += 1


async def test_tracked_snapshots_are_released_on_close(path: Path) -> None:
    env = aiolmdb.open(path, map_size=MAP_SIZE)
    tracked = Releasable()
    env._engine.track_snapshot(tracked)
    assert tracked.released == 0
    await asyncio.wait_for(env.close(), TIMEOUT)
    assert tracked.released == 1


async def test_map_generation_counts_resizes(env: Environment) -> None:
    engine = env._engine
    db = env.get_default_database()
    await db.put(b"k", b"v")
    before = engine.map_generation
    size = env.info()["map_size"]
    await asyncio.wrap_future(engine.call_solo(lambda _env: engine.resize(size * 2)))
    assert engine.map_generation == before + 1
    assert env.info()["map_size"] == size * 2
    assert await db.get(b"k") == b"v"


async def test_every_part_sees_the_close(env: Environment) -> None:
    # The state is kept in the readers and the writer too: each one refuses work.
    engine = env._engine
    await env.get_default_database().put(b"k", b"v")
    assert not env.closed
    await asyncio.wait_for(env.close(), TIMEOUT)
    assert engine.closed
    with pytest.raises(ClosedError):
        engine.submit_read(lambda txn: None, ())
    with pytest.raises(ClosedError):
        engine.read_inline(lambda txn: None, ())
    with pytest.raises(ClosedError):
        engine.submit_write(lambda txn: None, (), False)
    with pytest.raises(ClosedError):
        engine.run_blocking(lambda: None)
    with pytest.raises(ClosedError):
        engine.submit_stream(lambda txn, emit: None, (), lambda item: None, lambda exc: None)
    with pytest.raises(ClosedError):
        engine.call_solo(lambda _env: None)
    with pytest.raises(ClosedError):
        engine.check_open()


async def test_read_inline_falls_back_while_resizing(path: Path) -> None:
    # While the writer resizes the map, the loop thread must not wait at the gate: read_inline
    # answers FALLBACK and the read takes the threaded path (which waits for the resize).
    async with aiolmdb.open(path, map_size=MAP_SIZE, inline_reads=True) as env:
        engine = env._engine
        db = env.get_default_database()
        await db.put(b"k", b"v")
        held = engine.begin_read()  # the resize waits for this transaction
        size = env.info()["map_size"]
        resized = engine.call_solo(lambda _env: engine.resize(size * 2))
        try:
            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while not engine._gate.resizing:  # the writer reaches the gate
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0)
            assert engine.read_inline(lambda txn: txn.get(b"k"), ()) is FALLBACK
            threaded = asyncio.ensure_future(db.get(b"k"))
        finally:
            engine.end_read(held)
        await asyncio.wait_for(asyncio.wrap_future(resized), TIMEOUT)
        assert await asyncio.wait_for(threaded, TIMEOUT) == b"v"
        assert engine.read_inline(lambda txn: txn.get(b"k"), ()) == b"v"


@pytest.mark.parametrize(
    ("reads", "inline_reads", "mode"),
    [
        (None, None, "auto"),
        ("auto", None, "auto"),
        ("inline", None, "inline"),
        ("threaded", None, "threaded"),
        (None, True, "inline"),
        (None, False, "threaded"),
        (None, 1, "inline"),
        ("inline", True, "inline"),
        ("threaded", False, "threaded"),
    ],
)
def test_engine_config_read_mode(reads: Any, inline_reads: Any, mode: str) -> None:
    config = EngineConfig(reads=reads, inline_reads=inline_reads)
    assert config.read_mode == mode
    assert config.inline_reads is (mode == "inline")


@pytest.mark.parametrize(
    ("reads", "inline_reads"),
    [("auto", True), ("auto", False), ("inline", False), ("threaded", True)],
)
def test_open_refuses_reads_and_inline_reads_that_disagree(
    path: Path, reads: Any, inline_reads: bool
) -> None:
    with pytest.raises(ValueError, match=r"disagree: give reads= only") as caught:
        aiolmdb.open(path, map_size=MAP_SIZE, reads=reads, inline_reads=inline_reads)
    assert f"reads={reads!r} and inline_reads={inline_reads!r}" in str(caught.value)
    assert not path.exists()  # refused before LMDB opened anything
