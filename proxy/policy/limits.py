"""Sliding-window call counters for the policy's rate limits.

A counter is the list of times at which calls it counts were let through. A limit of
``max`` per ``window`` passes at ``now`` when fewer than ``max`` of those times lie in the
half-open interval ``(now - window, now]``: a call made at ``t`` stops counting at exactly
``t + window``. Counters are keyed by name and, for ``scope: grant``, by client, so limits
that name the same counter share one budget.

Checking (:meth:`Counters.check`) never changes anything, which keeps the decision a pure
function; :meth:`Counters.record` charges a call that went ahead. Whoever decides and
records must do both under one lock (or on one event loop) for limits to be exact under
concurrency; :class:`proxy.policy.decide.Enforcer` does.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from proxy.policy.model import Limit, Scope

__all__ = ["CounterKey", "Counters", "LimitCheck", "counter_key"]

_EMPTY: list[float] = []


class CounterKey(NamedTuple):
    """Which budget a call is counted on: a counter name, per client or global (a tuple:
    it keys the counters' dictionary on every call, and hashes as one)."""

    counter: str
    client: str | None  # None: counted across all clients


def counter_key(limit: Limit, client: str) -> CounterKey:
    return CounterKey(limit.counter, client if limit.scope is Scope.GRANT else None)


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """The outcome of checking one limit at one moment."""

    limit: Limit
    key: CounterKey
    used: int
    passed: bool
    retry_at: float | None  # when blocked: the moment a call would pass again; None: never


class Counters:
    """The call times behind every rate-limit counter. Not thread-safe by itself."""

    def __init__(self) -> None:
        self._times: dict[CounterKey, list[float]] = {}
        # The longest window any limit has used per counter name, ever: a reload that
        # lengthens a window must still see the calls the shorter one had counted.
        self._horizons: dict[str, float] = {}

    def _span(self, key: CounterKey, window: float, now: float) -> tuple[list[float], int, int]:
        """The counted calls as ``times[start:end]``, without copying them.

        A call at ``t`` counts while ``t + window > now``: written so, the moment it stops
        counting is exactly the ``retry_at`` a blocked call is told, with no float rounding
        between the two (``now - window`` can round below ``t``).
        """
        times = self._times.get(key)
        if not times:
            return _EMPTY, 0, 0
        start = bisect_right(times, now, key=lambda t: t + window)
        end = bisect_right(times, now, lo=start)
        return times, start, end

    def record(self, keys: Iterable[CounterKey], now: float, horizons: Mapping[str, float]) -> None:
        """Charge one call at ``now`` to each of ``keys`` (each at most once).

        ``horizons`` gives, per counter name, the window of the limits charging it. Times
        older than the longest window ever used for that counter can never count again and
        are dropped, so memory stays bounded by the limits.
        """
        known = self._horizons
        for name, window in horizons.items():
            if window > known.get(name, 0.0):
                known[name] = window
        for key in set(keys):
            times = self._times.setdefault(key, [])
            insort(times, now)
            horizon = known.get(key.counter)
            if horizon is not None and times[0] + horizon <= now:
                _drop_expired(times, now, horizon)

    def refund(self, keys: Iterable[CounterKey], at: float) -> None:
        """Give back the charge :meth:`record` made at ``at`` to each of ``keys`` (a call
        that was charged and then never reached its server)."""
        for key in set(keys):
            times = self._times.get(key)
            if not times:
                continue
            index = bisect_left(times, at)
            if index < len(times) and times[index] == at:
                del times[index]

    def passes(self, limit: Limit, key: CounterKey, now: float) -> bool:
        """Whether one more call counted on ``key`` at ``now`` stays within ``limit``:
        :meth:`check`'s ``passed``, with nothing built for the common answer."""
        times = self._times.get(key)
        if times is None or len(times) < limit.max:
            return True  # fewer kept than the limit: fewer in its window too
        _, start, end = self._span(key, limit.window, now)
        return end - start < limit.max

    def check(self, limit: Limit, client: str, now: float) -> LimitCheck:
        """Whether one more call by ``client`` at ``now`` stays within ``limit``."""
        key = counter_key(limit, client)
        times, start, end = self._span(key, limit.window, now)
        used = end - start
        if used < limit.max:
            return LimitCheck(limit, key, used, True, None)
        if limit.max == 0:
            return LimitCheck(limit, key, used, False, None)
        # Enough of the counted calls must age out to leave room for one more.
        retry_at = times[start + used - limit.max] + limit.window
        return LimitCheck(limit, key, used, False, retry_at)

    def clear(self) -> None:
        self._times.clear()

    def __len__(self) -> int:
        return sum(len(t) for t in self._times.values())


def _drop_expired(times: list[float], now: float, horizon: float) -> None:
    del times[: bisect_right(times, now, key=lambda t: t + horizon)]
