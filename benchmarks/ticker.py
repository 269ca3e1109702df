"""A task sleeping 1 ms at a time beside measured work: how often the event loop got a turn."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from types import TracebackType

#: The ticker's sleep, in seconds (issue 22: "a 1 ms ticker").
TICK = 0.001


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method (0.0 if empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Ticker:
    """``async with Ticker() as t:`` runs a task that sleeps :data:`TICK` at a time while the
    body runs, and records the gap between its wake-ups in ``t.gaps`` (seconds).

    A gap much longer than the tick is time the loop could not run the ticker: some task held
    it. The gap still open when the body ends counts too, so a body that never let the ticker
    run shows one gap as long as itself. ``on_tick(now)`` runs at every wake-up (to sample
    counters). The ticker has taken its first turn before the body starts.
    """

    def __init__(self, on_tick: Callable[[float], None] | None = None) -> None:
        self.gaps: list[float] = []
        self.on_tick = on_tick
        self.started = 0.0
        self._last = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        sleep, clock, gaps, on_tick = asyncio.sleep, time.perf_counter, self.gaps, self.on_tick
        while True:
            await sleep(TICK)
            now = clock()
            gaps.append(now - self._last)
            self._last = now
            if on_tick is not None:
                on_tick(now)

    async def __aenter__(self) -> Ticker:
        self.started = self._last = time.perf_counter()
        self._task = asyncio.ensure_future(self._run())
        await asyncio.sleep(0)  # the ticker is asleep in its first tick before the work starts
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        now = time.perf_counter()
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.gaps.append(now - self._last)

    @property
    def max_gap_ms(self) -> float:
        """The longest gap, in milliseconds."""
        return max(self.gaps, default=0.0) * 1000

    def figures(self) -> dict[str, float]:
        """``max_gap_ms``, ``p99_gap_ms`` and ``ticks`` (the number of wake-ups)."""
        return {
            "max_gap_ms": self.max_gap_ms,
            "p99_gap_ms": percentile(self.gaps, 0.99) * 1000,
            "ticks": float(len(self.gaps) - 1),
        }
