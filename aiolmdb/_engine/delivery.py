"""What the engine's parts share: the lifecycle state, the request types, and how results
reach the event loop.

A write operation reports the conflicts it met with its result (:class:`Counted`, or a
:class:`~aiolmdb.ConflictError` raised), never through shared state.

Every result travels as ``(future, ok, value)``; a thread hands a whole batch of them to the
loop in ONE ``call_soon_threadsafe`` (:func:`post`), where :func:`deliver` resolves them. An
exception is made ready for its caller first (:func:`as_settable`): the local variables of its
finished frames are dropped, since they hold the transaction (and with it a reader slot).
A failure of a whole transaction (beginning it, committing it) reaches each of its callers as
the caller's own copy (:func:`own_error`): an exception object raised in several tasks would
gather each task's frames in its one traceback.

:class:`Part` is the base of the parts that take operations (the readers and the writer): each
keeps its own copy of the engine's state and loop, so that a submission checks them with one
attribute lookup, as if they were its own. Only the engine
(:class:`~aiolmdb._engine.engine.Engine`) sets them.
This module touches nothing but the futures and the loop it is given.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, NoReturn, Protocol

import lmdb

from ..errors import Error, TransactionError

if TYPE_CHECKING:
    from typing import TypeAlias

    from .config import EngineConfig
    from .gate import Gate

    # The engine opens every transaction with buffers=False: reads return bytes.
    Txn: TypeAlias = lmdb.Transaction[bytes]

__all__ = [
    "CLOSED",
    "CLOSING",
    "FORKED",
    "GUARDED",
    "OPEN",
    "Op",
    "Part",
    "Request",
    "Counted",
    "Result",
    "State",
    "WriteRequest",
    "as_settable",
    "broken_error",
    "deliver",
    "drop_frame_locals",
    "own_error",
    "post",
]

Op = Callable[..., Any]
# (future, fn, args): fn(txn, *args) is run and its result set on the future.
Request = tuple["asyncio.Future[Any]", Op, tuple[Any, ...]]
# A write: (future, fn, args, atomic). ``atomic``, set by whoever picked ``fn``: it makes at
# most one change and fails, if at all, before making it, so it runs without a child
# transaction.
WriteRequest = tuple["asyncio.Future[Any]", Op, tuple[Any, ...], bool]
# (future, ok, value): value is the result when ok, else the exception to set.
Result = tuple["asyncio.Future[Any]", bool, Any]


class Counted:
    """An operation's result together with the conflicts it met (conditions of writes that
    failed): the engine adds them to its count and delivers ``value``. Counted where the
    result is taken, so a batch run again (map growth) counts each conflict once."""

    __slots__ = ("conflicts", "value")

    def __init__(self, value: Any, conflicts: int = 1) -> None:
        self.value = value
        self.conflicts = conflicts


class State(enum.Enum):
    """The engine's lifecycle: OPEN -> CLOSING -> CLOSED, or FORKED in a child process."""

    OPEN = "open"
    CLOSING = "closing"  # no new work; queued work runs to its end
    CLOSED = "closed"  # threads stopped, LMDB environment closed
    GUARDED = "guarded"  # the writer's only: open, but a write guard refuses user writes
    FORKED = "forked"  # inherited across fork(): must not be touched


# Module-level names: a submission compares with one global lookup.
OPEN: Final = State.OPEN
CLOSING: Final = State.CLOSING
CLOSED: Final = State.CLOSED
GUARDED: Final = State.GUARDED
FORKED: Final = State.FORKED


class EngineHooks(Protocol):
    """What the engine's parts call back into the engine for."""

    def raise_state(self) -> NoReturn:
        """Raise the error of the engine's state (closed, forked)."""

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
        """Bind the running loop to the engine (first use) and return it."""

    def finish(self) -> None:
        """Writer thread, after the stop: close everything."""


class Part:
    """Base of the engine's parts that take operations (see the module docstring)."""

    def __init__(
        self, env: lmdb.Environment, gate: Gate, config: EngineConfig, engine: EngineHooks
    ) -> None:
        self._env = env
        self._gate = gate
        self._max_batch = config.max_batch
        self._state = OPEN
        self._loop: asyncio.AbstractEventLoop | None = None
        self._raise_state = engine.raise_state
        self._bind_loop = engine.bind_loop

    def set_state(self, state: State) -> None:
        """Engine only: the engine's state changed."""
        self._state = state

    def set_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Engine only: the engine was bound to ``loop``."""
        self._loop = loop


def deliver(results: list[Result]) -> None:
    """Resolve a batch's futures on the loop thread (one callback per batch)."""
    for fut, ok, value in results:
        try:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        except asyncio.InvalidStateError:
            pass  # cancelled while it ran: its result is dropped


def post(loop: asyncio.AbstractEventLoop | None, results: list[Result]) -> None:
    """Any thread: have ``loop`` deliver ``results`` (dropped if there is no loop any more)."""
    if not results or loop is None:
        return
    try:
        loop.call_soon_threadsafe(deliver, results)
    except RuntimeError:
        # The loop is closed: nobody can await these futures any more.
        pass


# Frames of generators and coroutines: clearing one would close it.
_SUSPENDABLE: Final = (
    inspect.CO_GENERATOR
    | inspect.CO_COROUTINE
    | inspect.CO_ASYNC_GENERATOR
    | inspect.CO_ITERABLE_COROUTINE
)


def drop_frame_locals(exc: BaseException) -> None:
    """Clear the local variables of the finished function frames in the tracebacks of ``exc``
    and of the exceptions chained to it (file names and lines stay). Those frames hold the
    transaction the operation ran in, and py-lmdb frees a read transaction's reader slot only
    with the Transaction object: a caller keeping the exception would keep a reader slot."""
    todo: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if not frame.f_code.co_flags & _SUSPENDABLE:
                try:
                    frame.clear()
                except RuntimeError:
                    pass  # still running (the frame that caught it): it drops its own
            tb = tb.tb_next
        todo += (e.__cause__, e.__context__)


def as_settable(exc: BaseException) -> BaseException:
    """The exception of an operation, made ready for its caller (see drop_frame_locals); a
    future cannot carry StopIteration, so that one is wrapped."""
    drop_frame_locals(exc)
    if isinstance(exc, StopIteration):
        err = RuntimeError(f"operation raised StopIteration: {exc!r}")
        err.__cause__ = exc
        return err
    return exc


def own_error(cause: BaseException) -> BaseException:
    """One caller's own exception for ``cause``, the failure of a transaction (it could not
    begin or commit), which several operations may share: a fresh instance of its class, with
    its arguments and attributes, chained to it (``__cause__``), so ``except`` clauses match
    as before while no two callers raise (and add their frames to) the same object. A class
    that cannot be made so (a ``__new__`` that needs other arguments) is wrapped in an
    :class:`~aiolmdb.errors.Error` instead. The failure path only: never per operation."""
    drop_frame_locals(cause)
    cls = type(cause)
    try:
        fresh = cls.__new__(cls, *cause.args)
        if type(fresh) is not cls:
            raise TypeError(f"{cls.__name__}.__new__ made a {type(fresh).__name__}")
        if not isinstance(cls.__init__, types.FunctionType):
            # A built-in __init__ sets the fields of built-in classes from args (a
            # UnicodeError's reason, say); one written in Python may take other arguments
            # than args, so its attributes are copied instead.
            cls.__init__(fresh, *cause.args)
        # The notes get a list of their own.
        state = dict(vars(cause))
        if isinstance(state.get("__notes__"), list):
            state["__notes__"] = list(state["__notes__"])
        vars(fresh).update(state)
    except Exception:
        fresh = Error(
            f"the transaction this operation ran in failed with {cause!r}, shared by the "
            "operations that ran in it (it is this error's __cause__): catch aiolmdb.Error "
            "here, or give the exception's class a __new__ that takes its args, so each "
            "caller gets an instance of its own class"
        )
    fresh.__cause__ = cause
    return as_settable(fresh)


def broken_error(cause: BaseException | None) -> BaseException:
    """The error of a command sent to a write transaction that a failure made unusable."""
    err = TransactionError(
        f"the transaction can no longer be used after {cause!r}; it was rolled back"
    )
    err.__cause__ = cause
    return err
