"""Reliability: random operation sequences against a dict model (promise 5, stateful part).

A Hypothesis ``RuleBasedStateMachine`` drives one environment per example (``StringCoder``
keys, ``JSONCoder`` values) on an event loop the machine owns: each rule runs its coroutine
with ``loop.run_until_complete``. Rules cover put (with and without overwrite), get, delete,
pop, replace, update, put_multi, delete_multi, get_multi, range reads and count, with invalid
keys and values mixed in, plus a rule that submits several writes at once (one group commit)
and checks each against the model applied in submission order.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

import aiolmdb
from aiolmdb import InvalidKeyError, JSONCoder, StringCoder

from ._stress_util import TIMEOUT, Figures, MiB

MISSING = "<missing>"  # longer than any generated text value, so never a stored value
MAX_KEY = 511

GOOD_KEYS = st.sampled_from(["a", "b", "ab", "b\x00", "é", "zz", "\U0001f600", "k" * MAX_KEY])
BAD_KEYS: st.SearchStrategy[Any] = st.sampled_from(
    ["", "x" * (MAX_KEY + 1), "é" * (MAX_KEY // 2 + 1), None, 5, b"bytes", "\ud800"]
)
KEYS: st.SearchStrategy[Any] = st.one_of(GOOD_KEYS, GOOD_KEYS, GOOD_KEYS, BAD_KEYS)
GOOD_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.text(max_size=4),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.sampled_from(["x", "y"]), st.booleans(), max_size=2),
)
BAD_VALUES: st.SearchStrategy[Any] = st.sampled_from([{1, 2}, object(), "\udc80"])
VALUES: st.SearchStrategy[Any] = st.one_of(GOOD_VALUES, GOOD_VALUES, GOOD_VALUES, BAD_VALUES)

examples_run = 0
steps_run = 0


def key_error(key: Any) -> type[BaseException] | None:
    """The exception an operation on ``key`` must raise (None for a valid key)."""
    if not isinstance(key, str):
        return TypeError
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        return ValueError
    if not 0 < len(encoded) <= MAX_KEY:
        return InvalidKeyError
    return None


def value_error(value: Any) -> type[BaseException] | None:
    if isinstance(value, (set, frozenset)) or type(value) is object:
        return TypeError
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return ValueError
    return None


def check(got: Any, expected: Any, label: str) -> None:
    if isinstance(expected, type) and issubclass(expected, BaseException):
        assert isinstance(got, expected), f"{label}: expected {expected.__name__}, got {got!r}"
        if expected is ValueError:  # not mistaken for a key problem
            assert not isinstance(got, InvalidKeyError), f"{label}: {got!r}"
    else:
        assert not isinstance(got, BaseException), f"{label}: raised {got!r}"
        assert got == expected, f"{label}: {got!r} != {expected!r}"


def wrap(old: Any) -> Any:
    """The update function: deterministic, JSON-encodable for every JSON value."""
    return [old, "u"]


class Model:
    """The dict model; each method returns what the operation must return (or raise)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def put(self, key: Any, value: Any, overwrite: bool) -> Any:
        err = key_error(key) or value_error(value)
        if err:
            return err
        if not overwrite and key in self.data:
            return False
        self.data[key] = value
        return True

    def get(self, key: Any) -> Any:
        return key_error(key) or self.data.get(key, MISSING)

    def delete(self, key: Any) -> Any:
        err = key_error(key)
        if err:
            return err
        return self.data.pop(key, MISSING) is not MISSING

    def pop(self, key: Any) -> Any:
        return key_error(key) or self.data.pop(key, MISSING)

    def replace(self, key: Any, value: Any) -> Any:
        err = key_error(key) or value_error(value)
        if err:
            return err
        old = self.data.get(key)
        self.data[key] = value
        return old

    def update(self, key: Any) -> Any:
        err = key_error(key)
        if err:
            return err
        new = wrap(self.data.get(key, MISSING))
        self.data[key] = new
        return new

    def put_multi(self, pairs: list[tuple[Any, Any]]) -> Any:
        for key, value in pairs:
            err = key_error(key) or value_error(value)
            if err:
                return err  # all or nothing
        self.data.update(pairs)
        return len(pairs)

    def delete_multi(self, keys: list[Any]) -> Any:
        for key in keys:
            err = key_error(key)
            if err:
                return err
        # Each key maps to whether it existed before the call (a key given twice: True once).
        out = {key: key in self.data for key in keys}
        for key in keys:
            self.data.pop(key, None)
        return out

    def get_multi(self, keys: list[Any]) -> Any:
        for key in keys:
            err = key_error(key)
            if err:
                return err
        return {key: self.data.get(key, MISSING) for key in keys}

    def items(self, start: str | None, stop: str | None, reverse: bool, limit: int | None) -> Any:
        pairs = sorted(self.data.items(), key=lambda kv: kv[0].encode())
        lo = start.encode() if start is not None else None
        hi = stop.encode() if stop is not None else None
        pairs = [
            (k, v)
            for k, v in pairs
            if (lo is None or k.encode() >= lo) and (hi is None or k.encode() < hi)
        ]
        if reverse:
            pairs.reverse()
        return pairs[:limit] if limit is not None else pairs


class AioLmdbMachine(RuleBasedStateMachine):
    inline_reads: bool | None = False  # None: reads="auto"
    writemap = False

    def __init__(self) -> None:
        super().__init__()
        global examples_run
        examples_run += 1
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.mkdtemp(prefix="aiolmdb-stateful-")
        # A small map: growth happens now and then in the middle of a sequence.
        self.env = aiolmdb.open(
            self.dir,
            map_size=1 * MiB,
            inline_reads=self.inline_reads,
            writemap=self.writemap,
            max_batch=4,
        )
        assert self.env.max_key_size() == MAX_KEY, "the key strategies assume LMDB's default"
        self.db: aiolmdb.AsyncDatabase[Any, Any] = self.run(
            self.env.open_db("m", key_coder=StringCoder(), value_coder=JSONCoder())
        )
        self.model = Model()

    def run(self, aw: Any) -> Any:
        """Run a coroutine on the machine's loop; its exception is returned, not raised."""

        async def guarded() -> Any:
            try:
                return await asyncio.wait_for(aw, TIMEOUT)
            except Exception as exc:
                return exc

        global steps_run
        steps_run += 1
        return self.loop.run_until_complete(guarded())

    def teardown(self) -> None:
        try:
            self.loop.run_until_complete(asyncio.wait_for(self.env.close(), TIMEOUT))
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # --------------------------------------------------------------------- single operations
    @rule(key=KEYS, value=VALUES, overwrite=st.booleans())
    def put(self, key: Any, value: Any, overwrite: bool) -> None:
        got = self.run(self.db.put(key, value, overwrite=overwrite))
        check(got, self.model.put(key, value, overwrite), f"put({key!r}, {value!r})")

    @rule(key=KEYS)
    def get(self, key: Any) -> None:
        check(self.run(self.db.get(key, MISSING)), self.model.get(key), f"get({key!r})")

    @rule(key=KEYS)
    def delete(self, key: Any) -> None:
        check(self.run(self.db.delete(key)), self.model.delete(key), f"delete({key!r})")

    @rule(key=KEYS)
    def pop(self, key: Any) -> None:
        check(self.run(self.db.pop(key, MISSING)), self.model.pop(key), f"pop({key!r})")

    @rule(key=KEYS, value=VALUES)
    def replace(self, key: Any, value: Any) -> None:
        got = self.run(self.db.replace(key, value))
        check(got, self.model.replace(key, value), f"replace({key!r}, {value!r})")

    @rule(key=KEYS)
    def update(self, key: Any) -> None:
        got = self.run(self.db.update(key, wrap, MISSING))
        check(got, self.model.update(key), f"update({key!r})")

    @rule(pairs=st.lists(st.tuples(KEYS, VALUES), max_size=5))
    def put_multi(self, pairs: list[tuple[Any, Any]]) -> None:
        got = self.run(self.db.put_multi(pairs))
        check(got, self.model.put_multi(pairs), f"put_multi({pairs!r})")

    @rule(keys=st.lists(KEYS, max_size=5))
    def delete_multi(self, keys: list[Any]) -> None:
        got = self.run(self.db.delete_multi(keys))
        check(got, self.model.delete_multi(keys), f"delete_multi({keys!r})")

    @rule(keys=st.lists(KEYS, max_size=6))
    def get_multi(self, keys: list[Any]) -> None:
        got = self.run(self.db.get_multi(keys, MISSING))
        check(got, self.model.get_multi(keys), f"get_multi({keys!r})")

    @rule(
        start=st.none() | GOOD_KEYS,
        stop=st.none() | GOOD_KEYS,
        reverse=st.booleans(),
        limit=st.none() | st.integers(0, 4),
        chunk=st.integers(1, 3),
    )
    def items(
        self, start: str | None, stop: str | None, reverse: bool, limit: int | None, chunk: int
    ) -> None:
        async def read() -> list[tuple[Any, Any]]:
            it = self.db.items(start, stop, reverse=reverse, limit=limit, batch_size=chunk)
            return [pair async for pair in it]

        got = self.run(read())
        expected = self.model.items(start, stop, reverse, limit)
        check(got, expected, f"items({start!r}, {stop!r}, reverse={reverse}, limit={limit})")

    # --------------------------------------------------------------------- one group commit
    @rule(
        ops=st.lists(
            st.one_of(
                st.tuples(st.just("put"), KEYS, VALUES),
                st.tuples(st.just("put_new"), KEYS, VALUES),
                st.tuples(st.just("delete"), KEYS, st.none()),
                st.tuples(st.just("replace"), KEYS, VALUES),
                st.tuples(st.just("pop"), KEYS, st.none()),
                st.tuples(st.just("multi"), KEYS, VALUES),
            ),
            min_size=2,
            max_size=8,
        )
    )
    def concurrent_writes(self, ops: list[tuple[str, Any, Any]]) -> None:
        """Writes submitted together are applied in submission order (one writer queue), each
        one failing alone."""
        db, model = self.db, self.model
        coros: list[Any] = []
        expected: list[Any] = []
        for kind, key, value in ops:
            if kind == "put":
                coros.append(db.put(key, value))
                expected.append(model.put(key, value, True))
            elif kind == "put_new":
                coros.append(db.put(key, value, overwrite=False))
                expected.append(model.put(key, value, False))
            elif kind == "delete":
                coros.append(db.delete(key))
                expected.append(model.delete(key))
            elif kind == "replace":
                coros.append(db.replace(key, value))
                expected.append(model.replace(key, value))
            elif kind == "pop":
                coros.append(db.pop(key, MISSING))
                expected.append(model.pop(key))
            else:
                pairs = [("multi", 1), (key, value)]
                coros.append(db.put_multi(pairs))
                expected.append(model.put_multi(pairs))

        async def together() -> list[Any]:
            return await asyncio.gather(*coros, return_exceptions=True)

        results = self.run(together())
        for i, (got, want) in enumerate(zip(results, expected, strict=True)):
            check(got, want, f"concurrent op {i} {ops[i]!r}")

    # --------------------------------------------------------------------- invariants
    @invariant()
    def count_matches(self) -> None:
        check(self.run(self.db.count()), len(self.model.data), "count()")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["threaded", "inline", "auto", "writemap"])
def test_random_sequences_match_a_dict_model(mode: str, figures: Figures) -> None:
    global examples_run, steps_run
    before_examples, before_steps = examples_run, steps_run

    class Machine(AioLmdbMachine):
        pass

    Machine.inline_reads = {"inline": True, "auto": None}.get(mode, False)
    Machine.writemap = mode == "writemap"
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=50,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    figures.add("hypothesis: state machine examples run", examples_run - before_examples)
    figures.add("hypothesis: operations run", steps_run - before_steps)
