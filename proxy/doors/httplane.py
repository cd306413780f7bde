"""tools/call on the HTTP door, without the SDK's streamable-HTTP machinery in the way.

The SDK serves every POST through its transport: the message validated into models, a
memory stream and a task per request, the answer sent back as a server-sent event
stream. For the request that dominates (an agent's ``tools/call``) that was most of the
gateway's CPU per call. The HTTP fast lane, like the local door's
(:mod:`proxy.doors.fastlane`), reads the body as JSON once, hands the call to the same
decide, audit and forward path as the SDK route
(:meth:`Gateway.call_tool <proxy.gateway.core.Gateway.call_tool>`) and answers with one
JSON body, which every client accepts (MCP's clients must accept both JSON and an event
stream).

It takes only what it serves exactly as the SDK route would; everything else goes to the
SDK unchanged (the handshake, other methods, the GET stream, DELETE, malformed bodies,
batches, calls with a progress token, a 2026-07-28 client's sessionless requests):

- a well-formed ``tools/call`` request (its strings all text, no progress token), with
  the headers the SDK requires of it (``Content-Type: application/json``, an ``Accept``
  of both JSON and event streams, ``MCP-Protocol-Version`` naming the session's version);
- on a live handshake session of the SDK's (not ending, not idle-timed-out) that the
  gateway opened for this very client and server, whose ``notifications/initialized`` is
  on its way upstream, and whose server is not spoken to in the 2026 era (those calls are
  translated on the SDK route);
- of a client that said it cannot be asked anything (no ``sampling``, ``elicitation`` or
  ``roots`` among its capabilities): a server's question during a call travels on that
  call's event stream, which a JSON answer does not have.

The SDK's own Host, Origin and Content-Type checks (its transport security, with its
settings) are made here too, and the body is read as the SDK reads it (UTF-8, one
message, not a response). While a call is served here the SDK's session is held in use,
as the SDK holds it for its own requests, so it does not time out under an agent that
only calls tools; when the session ends its calls here are cancelled, as the SDK cancels
its own. A client's ``notifications/cancelled`` for a call of this lane (on its own
session, past the same checks) cancels it here (it is recorded as cancelled), and the
call is answered ``Request cancelled`` (-32800), as the SDK answers in this era.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from mcp.server.streamable_http import check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware
from mcp_types.version import is_version_at_least
from starlette.requests import Request

from proxy.doors.fastlane import (
    answer_to_call,
    cancelled_id,
    lone_surrogate,
    plain_call,
    request_of,
    written,
)
from proxy.doors.resume import RETRY_MILLISECONDS, SessionEvents
from proxy.gateway._sdk import holding_http_session

if TYPE_CHECKING:
    from proxy.gateway.core import Gateway
    from proxy.gateway.session import Session

__all__ = ["HttpLane"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

_ASKING_CAPABILITIES: Final = ("sampling", "elicitation", "roots")
_RESUMABLE: Final = "2025-11-25"  # the first version whose streams resume (priming events)
_NOT_STORED: Final = "0"  # the event store's id for an event it has no session log for
_REQUEST_CANCELLED: Final = -32800
_Key = tuple[str, type, int | str]  # (session id, the id's type, the id)


def _is_json(content_type: str) -> bool:
    """``Content-Type`` as the SDK checks it."""
    parts = content_type.split(";", maxsplit=1)[0].split(",")
    return any(part.strip() == "application/json" for part in parts)


class HttpLane:
    """The HTTP door's fast lane (see the module docstring)."""

    def __init__(
        self, gateway: Gateway, manager: StreamableHTTPSessionManager, events: SessionEvents
    ) -> None:
        self._gateway = gateway
        self._manager = manager
        # the SDK's own Host, Origin and Content-Type checks, with its settings
        self._security = TransportSecurityMiddleware(manager.security_settings)
        self._events = events
        self._calls: dict[_Key, asyncio.Task[dict[str, Any]]] = {}
        # (session id, priming event id) -> the answer's (event id, data), for a client
        # that reconnects before it is there
        self._waiting: dict[tuple[str, str], asyncio.Future[tuple[str, str]]] = {}

    async def serve(
        self,
        *,
        scope: Scope,
        headers: Mapping[str, str],
        body: bytes,
        session_id: str,
        server: str,
        client: str,
        send: Send,
    ) -> bool:
        """Answer the POST ``body`` of ``client`` on ``session_id`` here, if it is the
        lane's; False: nothing was sent, the SDK must serve it."""
        message = request_of(body)
        if message is None:
            return False  # the SDK answers it (a parse error, a response, a batch...)
        method = message.get("method")
        cancelling = method == "notifications/cancelled" and "id" not in message
        plain = plain_call(message) if method == "tools/call" else None
        if not cancelling and (plain is None or lone_surrogate(body, message)):
            return False  # not the lane's: the SDK's, with no more looked at
        session = await self._session(scope, headers, session_id, server, client)
        if session is None:
            return False
        if plain is None:
            return await self._cancel(session_id, message.get("params"), send)
        request_id, params = plain
        with holding_http_session(self._manager, session_id) as live:
            if not live:
                return False  # the SDK says it is gone
            await self._answer(session, session_id, request_id, params, send)
        return True

    async def _session(
        self, scope: Scope, headers: Mapping[str, str], session_id: str, server: str, client: str
    ) -> Session | None:
        """The gateway's session of ``session_id``, if a POST on it may take the lane: the
        SDK's own checks of it pass, and the lane can answer as the SDK would."""
        session = self._gateway.http_sessions.get(session_id)
        if session is None or session.client != client or session.server != server:
            return None  # the SDK answers for sessions that are not this client's
        if not session.initialized or session.closed or session.modern_upstream:
            return None
        if headers.get("mcp-protocol-version") != session.protocol:
            return None
        if not _is_json(headers.get("content-type", "")):
            return None
        capabilities = (session.init_params or {}).get("capabilities")
        if not isinstance(capabilities, Mapping) or any(
            capabilities.get(name) is not None for name in _ASKING_CAPABILITIES
        ):
            return None
        request = Request(scope)
        if check_accept_headers(request) != (True, True):
            return None  # the SDK refuses it (406)
        if await self._security.validate_request(request, is_post=True) is not None:
            return None  # Host, Origin or Content-Type as the SDK refuses them
        return session

    async def _answer(
        self,
        session: Session,
        session_id: str,
        request_id: int | str,
        params: dict[str, Any],
        send: Send,
    ) -> None:
        """Run the call and answer it: as one JSON body, or, for a client of a version
        that resumes streams (2025-11-25 on), as the SDK would: an event stream opened
        with a priming event at once, the answer stored for a client that reconnects."""
        loop = asyncio.get_running_loop()
        key: _Key = (session_id, type(request_id), request_id)
        stream = str(request_id)  # the SDK's name for a request's stream
        task = loop.create_task(self._call(session, request_id, params))
        self._calls[key] = task  # from now on a cancellation finds it
        session.beside.add(task)  # and the session's end cancels it
        waiting: asyncio.Future[tuple[str, str]] | None = None
        priming = ""
        try:
            if is_version_at_least(session.protocol or "", _RESUMABLE):
                priming = self._events.store_text(stream, None)
                if priming != _NOT_STORED:
                    waiting = loop.create_future()
                    self._waiting[session_id, priming] = waiting
                await _start(send, b"text/event-stream", session_id)
                await _body(send, _event(priming, "", retry=RETRY_MILLISECONDS), more=True)
            answer = await task  # the door going cancels the call with it (recorded so)
        except BaseException:
            task.cancel()
            if waiting is not None:
                waiting.cancel()  # a client resuming is told the stream is over
                self._waiting.pop((session_id, priming), None)
            raise
        finally:
            self._calls.pop(key, None)
            session.beside.discard(task)
        data = written(request_id, answer)
        if not priming:
            await _start(send, b"application/json", session_id, length=len(data))
            await _body(send, data)
            return
        text = data.decode()
        number = self._events.store_text(stream, text)
        if waiting is not None:
            waiting.set_result((number, text))
            self._waiting.pop((session_id, priming), None)
        await _body(send, _event(number, text))

    async def resume(
        self,
        *,
        scope: Scope,
        headers: Mapping[str, str],
        session_id: str | None,
        client: str,
        send: Send,
    ) -> bool:
        """A client's reconnection (a ``GET`` with ``Last-Event-ID``) to a stream of this
        lane whose answer has not come yet: it gets the answer when it comes; False if
        the stream is not one of those, or the SDK would refuse the request (the SDK then
        answers: it replays what its store holds)."""
        last_event_id = headers.get("last-event-id")
        if session_id is None or last_event_id is None:
            return False
        session = self._gateway.http_sessions.get(session_id)
        waiting = self._waiting.get((session_id, last_event_id))
        if session is None or session.client != client or waiting is None:
            return False
        request = Request(scope)
        if not check_accept_headers(request)[1]:
            return False  # the SDK refuses it (406)
        if await self._security.validate_request(request, is_post=False) is not None:
            return False
        await _start(send, b"text/event-stream", session_id)
        try:
            number, data = await asyncio.shield(waiting)
        except asyncio.CancelledError:
            if not waiting.cancelled():
                raise  # the door is going
            await _body(send, b"")  # the call ended unanswered (the door is going)
            return True
        await _body(send, _event(number, data))
        return True

    async def _call(
        self, session: Session, request_id: int | str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """The call's JSON-RPC answer (a cancelled one's: the era answers it so)."""
        try:
            return await answer_to_call(self._gateway, session, request_id, params)
        except asyncio.CancelledError:
            error = {"code": _REQUEST_CANCELLED, "message": "Request cancelled"}
            return {"jsonrpc": "2.0", "id": request_id, "error": error}

    async def _cancel(self, session_id: str, params: Any, send: Send) -> bool:
        """A client's cancellation of one of this lane's calls: the call is cancelled and
        the notification accepted (202); False if the call is not the lane's."""
        request_id = cancelled_id(params)
        if request_id is None:
            return False
        task = self._calls.get((session_id, type(request_id), request_id))
        if task is None:
            return False  # not ours (or already answered): the SDK deals with it
        task.cancel()
        await _start(send, b"application/json", session_id, status=202, length=0)
        await _body(send, b"")
        return True


def _event(event_id: str, data: str, *, retry: int | None = None) -> bytes:
    """One server-sent event: a message (``data``), or a priming event (no data)."""
    head = f"id: {event_id}\n" + (f"retry: {retry}\n" if retry is not None else "")
    kind = "event: message\n" if data else ""
    return f"{kind}{head}data: {data}\n\n".encode()


async def _start(
    send: Send, kind: bytes, session_id: str, *, status: int = 200, length: int | None = None
) -> None:
    headers = [(b"content-type", kind), (b"mcp-session-id", session_id.encode())]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    else:
        headers.append((b"cache-control", b"no-cache, no-transform"))
    with contextlib.suppress(OSError):  # the client went away: the call is recorded anyway
        await send({"type": "http.response.start", "status": status, "headers": headers})


async def _body(send: Send, data: bytes, *, more: bool = False) -> None:
    with contextlib.suppress(OSError):
        await send({"type": "http.response.body", "body": data, "more_body": more})
