"""Waiting for something that will happen: one way, for every test.

:func:`eventually` (in a coroutine) and :func:`eventually_sync` (in a thread) poll a
condition until it holds and return its value, or fail with what was awaited once the
deadline passes. They wait for things to *happen*; nothing here proves that something
does not: for that a test waits for a later event that would have come after it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["eventually", "eventually_sync"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 20.0


@overload
async def eventually(
    condition: Callable[[], Awaitable[T | None]],
    what: str = ...,
    *,
    timeout: float = ...,
    interval: float = ...,
) -> T: ...


@overload
async def eventually(
    condition: Callable[[], T | None],
    what: str = ...,
    *,
    timeout: float = ...,
    interval: float = ...,
) -> T: ...


async def eventually(
    condition: Callable[[], Any],
    what: str = "the condition",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.005,
) -> Any:
    """``condition()``'s first true value, polled on this loop every ``interval`` s; a
    condition may be a coroutine function (one that asks the gateway, say).

    Raises:
        AssertionError: it was not true within ``timeout`` s (the message says ``what``).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


def eventually_sync(
    condition: Callable[[], T | None],
    what: str = "the condition",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.02,
) -> T:
    """:func:`eventually` for a test's own thread (subprocesses, files, sockets)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return value
