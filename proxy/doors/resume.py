"""Resumable streams on the HTTP door: what a client missed while its SSE stream was down.

The SDK's streamable-HTTP transport stores each message it sends on an SSE stream in an
event store, sends a priming event (an event id, and how long to wait before reconnecting)
at the start of each stream, and replays what came after the id a reconnecting client
gives in ``Last-Event-ID``. Its session manager shares one store among every session, and
names a stream by its request's id ("1", "2"…), so two sessions' streams have the same
names: a store keyed by stream alone would replay one client's answers to another.

:class:`SessionEvents` therefore keeps each session's events apart. The door's gate puts
the session's :class:`EventLog` in :data:`current_log` for every request it lets through
(a new one for the request that opens a session, the session's own for the later ones),
and the SDK's tasks for the session inherit it; an event id is looked up only in the log
of the session that asks. Memory is bounded: a session keeps its newest
:data:`SESSION_EVENTS` events and :data:`SESSION_BYTES` bytes, all sessions together
:data:`TOTAL_BYTES`, the oldest going first; a session's log goes with the session.
"""

from __future__ import annotations

import contextvars
import itertools
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

from mcp.server.streamable_http import (
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    StreamId,
)
from mcp_types import JSONRPCMessage
from pydantic import TypeAdapter

__all__ = [
    "RETRY_MILLISECONDS",
    "EventLog",
    "SessionEvents",
    "current_log",
]

RETRY_MILLISECONDS = 1000  # what a client is told to wait before it reconnects
SESSION_EVENTS = 512
SESSION_BYTES = 8 * 1024 * 1024
TOTAL_BYTES = 64 * 1024 * 1024

_MESSAGE = TypeAdapter[JSONRPCMessage](JSONRPCMessage)
_serials = itertools.count(1)


@dataclass(eq=False)
class EventLog:
    """One session's events, oldest first: event number -> (stream, message as JSON)."""

    serial: int = field(default_factory=lambda: next(_serials))
    events: OrderedDict[int, tuple[StreamId, str | None]] = field(default_factory=OrderedDict)
    size: int = 0
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_number(self) -> int:
        return next(self._numbers)


# The log of the session a request (and the SDK's tasks for it) belongs to; None: none.
current_log: contextvars.ContextVar[EventLog | None] = contextvars.ContextVar(
    "lockgate_event_log", default=None
)


class SessionEvents(EventStore):
    """The HTTP door's event store: every session's events apart (see the module)."""

    def __init__(
        self,
        *,
        session_events: int = SESSION_EVENTS,
        session_bytes: int = SESSION_BYTES,
        total_bytes: int = TOTAL_BYTES,
    ) -> None:
        self._session_events = session_events
        self._session_bytes = session_bytes
        self._total_bytes = total_bytes
        self._logs: weakref.WeakValueDictionary[int, EventLog] = weakref.WeakValueDictionary()
        # every stored event of every session, oldest first: (log serial, number) -> size
        self._order: OrderedDict[tuple[int, int], int] = OrderedDict()
        self.size = 0

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        data = (
            None if message is None else message.model_dump_json(by_alias=True, exclude_unset=True)
        )
        return self.store_text(stream_id, data)

    def store_text(self, stream_id: StreamId, data: str | None) -> EventId:
        """:meth:`store_event` of a message already written as JSON (the HTTP fast
        lane's answers); None for a priming event."""
        log = current_log.get()
        if log is None:  # nothing to resume into: an id that replays nothing
            return "0"
        if log.serial not in self._logs:
            self._logs[log.serial] = log
            weakref.finalize(log, self._forget, log.serial, log.events)
        number = log.next_number()
        size = 64 + (0 if data is None else len(data))
        log.events[number] = (stream_id, data)
        log.size += size
        self._order[(log.serial, number)] = size
        self.size += size
        while len(log.events) > self._session_events or (
            log.size > self._session_bytes and len(log.events) > 1
        ):
            self._drop(log, next(iter(log.events)))
        while self.size > self._total_bytes and len(self._order) > 1:
            serial, oldest = next(iter(self._order))
            owner = self._logs.get(serial)
            if owner is None:
                self.size -= self._order.pop((serial, oldest))
            else:
                self._drop(owner, oldest)
        return str(number)

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        log = current_log.get()
        if log is None or not last_event_id.isdecimal():
            return None
        number = int(last_event_id)
        found = log.events.get(number)
        if found is None:  # not this session's, or too old to be kept
            return None
        stream_id = found[0]
        later = [(n, d) for n, (s, d) in log.events.items() if n > number and s == stream_id]
        for n, data in later:
            if data is not None:  # a priming event carries no message
                await send_callback(EventMessage(_MESSAGE.validate_json(data), str(n)))
        return stream_id

    def _drop(self, log: EventLog, number: int) -> None:
        _stream, data = log.events.pop(number)
        size = self._order.pop((log.serial, number), 64 + (0 if data is None else len(data)))
        log.size -= size
        self.size -= size

    def _forget(self, serial: int, events: OrderedDict[int, tuple[StreamId, str | None]]) -> None:
        """A session's log is gone (the session ended): its events go from the count too."""
        for number in events:
            self.size -= self._order.pop((serial, number), 0)
