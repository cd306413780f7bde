"""The HTTP front door: ``http://127.0.0.1:PORT/mcp/SERVER`` (streamable HTTP).

In front of the SDK's streamable HTTP app sits one plain ASGI gate that, in order:

1. refuses a request that gives ``Authorization``, ``Host``, ``Origin``,
   ``Mcp-Session-Id`` or ``MCP-Protocol-Version`` more than once: 400. Two readers of
   one request must never see two different values (the gate once checked the last
   session id while the SDK used the first);
2. refuses a ``Host`` or ``Origin`` that is not loopback: 403. A web page the person
   visits must not reach the gateway through DNS rebinding, whatever name it resolves;
3. answers 404 for anything but ``/mcp/<known server>``;
4. requires the client's bearer token: 401 when it is missing or wrong, with a body that
   says how to get one. The client's name becomes the session's identity (its grant).

The client is then handed to the SDK as the request's authenticated user, and the SDK's
session manager binds each session to the user that created it: every later request on
it (requests, responses, notifications, the GET stream, DELETE) must come from the same
client, or it is answered as an unknown session (404), so session ids cannot be probed.

Every refusal is a JSON-RPC error object, so MCP clients show its message. The SDK's own
DNS-rebinding checks stay on behind the gate.
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST

from proxy.config.tokens import TokenError, TokenStore
from proxy.doors.httplane import HttpLane
from proxy.doors.oversize import KEPT, Oversized, too_large
from proxy.doors.resume import RETRY_MILLISECONDS, EventLog, SessionEvents, current_log
from proxy.gateway._sdk import session_manager_of
from proxy.gateway.core import Gateway
from proxy.gateway.pipeline import AtTheDoor

__all__ = ["AccessGate", "build_http_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MCP_PATH = "/mcp/{server}"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_PATH = re.compile(r"^/mcp/([^/]+)/?$")
SESSION_IDLE_SECONDS = 900
# headers whose every reader must see one value: given twice, the request is refused
_SINGLE_HEADERS = frozenset(
    {"authorization", "host", "origin", "mcp-session-id", "mcp-protocol-version"}
)


def _is_loopback_host(host: str) -> bool:
    """``127.0.0.1:5625``, ``localhost``, ``[::1]:80`` and the like."""
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.lower() in _LOOPBACK_HOSTS


def _is_loopback_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and (parts.hostname or "") in _LOOPBACK_HOSTS


class AccessGate:
    """Loopback-only, token-checked access to the SDK app (see the module docstring)."""

    def __init__(self, app: ASGIApp, gateway: Gateway, tokens: TokenStore) -> None:
        self._app = app
        self._gateway = gateway
        self._tokens = tokens
        self.lane: HttpLane | None = None  # the fast lane: build_http_app gives it one
        self._in_flight: dict[str, set[str]] = {}  # session id -> request ids (as text)
        # session id -> its resumable events; held by the session's own tasks, so an
        # entry goes when the session does
        self._event_logs: weakref.WeakValueDictionary[str, EventLog] = weakref.WeakValueDictionary()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)  # lifespan: the SDK's session manager
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            if name in headers and name in _SINGLE_HEADERS:
                await _refuse(send, 400, f"the {name} header may be given only once")
                return
            headers[name] = raw_value.decode("latin-1")
        host = headers.get("host", "")
        if not _is_loopback_host(host):
            await _refuse(
                send,
                403,
                f"Host {host!r} is not this computer; Lockgate answers "
                "only 127.0.0.1 and localhost",
            )
            return
        origin = headers.get("origin")
        if origin is not None and not _is_loopback_origin(origin):
            await _refuse(
                send, 403, f"Origin {origin!r} may not use Lockgate; only local clients may"
            )
            return
        match = _PATH.match(scope.get("path", ""))
        if match is None:
            await _refuse(send, 404, "Lockgate serves MCP at /mcp/SERVER")
            return
        server = match.group(1)
        if (why := self._gateway.not_served(server)) is not None:
            await _refuse(send, 404, why)  # none, or turned off
            return
        client = self._client(headers.get("authorization", ""))
        if isinstance(client, _Refusal):
            await _refuse(
                send,
                client.status,
                client.message,
                [(b"www-authenticate", b'Bearer realm="lockgate"')],
            )
            return
        scope.setdefault("state", {})["lockgate_client"] = client
        scope["user"] = _user(client)  # the SDK binds sessions to it (see above)
        send = _json_refusals(send)
        session_id = headers.get("mcp-session-id")
        events: EventLog | None
        if session_id is None:
            events, send = self._opening_log(send)
        else:
            events = self._event_logs.get(session_id)
        resetting = current_log.set(events)
        try:
            await self._let_through(
                scope,
                receive,
                send,
                headers=headers,
                server=server,
                client=client,
                session_id=session_id,
            )
        finally:
            current_log.reset(resetting)

    def _opening_log(self, send: Send) -> tuple[EventLog, Send]:
        """A new session's event log, and ``send`` that files it under the session id the
        SDK gives the session (in its answer's header)."""
        events = EventLog()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", []):
                    if name.lower() == b"mcp-session-id":
                        self._event_logs[value.decode("latin-1")] = events
            await send(message)

        return events, sending

    async def _let_through(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        headers: Mapping[str, str],
        server: str,
        client: str,
        session_id: str | None,
    ) -> None:
        """Hand a request the gate accepted to the fast lane (a plain ``tools/call``:
        :mod:`proxy.doors.httplane`) or to the SDK (see the module docstring)."""
        lane = self.lane
        if scope.get("method") != "POST":
            if (
                scope.get("method") != "GET"
                or lane is None
                or not await lane.resume(
                    scope=scope, headers=headers, session_id=session_id, client=client, send=send
                )
            ):
                await self._app(scope, receive, send)
            return
        limit = self._gateway.max_message_bytes
        body, receive = await _read_body(receive, limit)
        if len(body) > limit:
            await self._too_large(body, receive, send, AtTheDoor(server, client))
            return
        if session_id is None:
            await self._app(scope, receive, send)
            return
        key = _request_key(body)
        if isinstance(key, _BadId):
            # The SDK would take it for a notification and answer 202: nothing would come.
            await _refuse(send, 400, "Invalid request: an id must be a string or an integer")
            return
        in_flight = self._in_flight.setdefault(session_id, set())
        if key is not None and key[1] in in_flight:
            # The SDK's transport keys a request's answer stream by the id's text: a second
            # request with an id equal as text (1 and "1", or 1 again) would take the
            # first one's answer. MCP forbids reusing an id in a session; refused.
            await _refuse(
                send, 409, "a request with this id is already in flight", request_id=key[0]
            )
            return
        if key is not None:
            in_flight.add(key[1])
        try:
            if lane is None or not await lane.serve(
                scope=scope,
                headers=headers,
                body=body,
                session_id=session_id,
                server=server,
                client=client,
                send=send,
            ):
                await self._app(scope, receive, send)
        finally:
            if key is not None:
                in_flight.discard(key[1])
                if not in_flight:
                    self._in_flight.pop(session_id, None)

    async def _too_large(
        self, head: bytes, receive: Receive, send: Send, caller: AtTheDoor
    ) -> None:
        """Refuse a body over the limit with a JSON-RPC error that gives it (413), after
        reading it to its end (at most eight times the limit: beyond that the connection
        goes); a ``tools/call`` is logged and shown as a refused call."""
        limit = self._gateway.max_message_bytes
        size, tail = len(head), head[-KEPT:]
        replayed = await receive()  # ``head`` again (see _read_body); then the rest of it
        more = bool(replayed.get("more_body"))
        while more and size <= 8 * limit:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            tail = (tail + chunk)[-KEPT:]
            more = bool(message.get("more_body"))
        oversized = Oversized(size, head[:KEPT], tail)
        reason = too_large(size, limit)
        if oversized.method == "tools/call":
            try:
                await self._gateway.tool_calls.refuse_too_large(
                    caller, oversized.tool, size, reason
                )
            except MCPError as exc:  # not recorded: the agent is told that instead
                reason = exc.error.message
        await _refuse(send, 413, reason, request_id=oversized.request_id)

    async def close_session(self, session_id: str, client: str) -> None:
        """End the HTTP session ``session_id`` of ``client`` as its DELETE would: the SDK
        forgets it, and the client's next request on it is told it is gone (404), upon
        which MCP clients open a new one."""
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "DELETE",
            "scheme": "http",
            "path": "/mcp/session",
            "raw_path": b"/mcp/session",
            "query_string": b"",
            "root_path": "",
            # an in-process request: a loopback Host the SDK's own check accepts
            "headers": [(b"host", b"127.0.0.1:0"), (b"mcp-session-id", session_id.encode())],
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
            "state": {"lockgate_client": client},
            "user": _user(client),
        }

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def discard(_message: Message) -> None:
            return None

        await self._app(scope, receive, discard)

    def _client(self, authorization: str) -> str | _Refusal:
        how = (
            "create a token with `lockgate token create CLIENT-NAME` and send it as the "
            "header 'Authorization: Bearer <token>'"
        )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _Refusal(401, f"Lockgate needs an access token: {how}")
        try:
            client = self._tokens.verify(token.strip())
        except TokenError as exc:
            return _Refusal(503, f"Lockgate cannot check tokens now: {exc}")
        if client is None:
            return _Refusal(401, f"this access token is not valid (revoked?): {how}")
        return client


def _user(client: str) -> AuthenticatedUser:
    """The SDK's authenticated user for ``client`` (a token's name, never its value)."""
    return AuthenticatedUser(AccessToken(token=f"client:{client}", client_id=client, scopes=[]))


class _Refusal:
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def _json_refusals(send: Send) -> Send:
    """``send`` that turns a refusal the SDK writes as plain text (its transport checks:
    "Invalid Content-Type header") into a JSON-RPC error, as every refusal here is."""
    held: Message | None = None
    text: list[bytes] = []

    async def sending(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers", []))
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if message["status"] >= 400 and kind not in (b"application/json", b"text/event-stream"):
                held = message  # its body is text: sent once whole, as JSON
                return
        elif message["type"] == "http.response.body" and held is not None:
            text.append(message.get("body", b""))
            if message.get("more_body"):
                return
            reason = b"".join(text).decode("utf-8", "replace").strip() or "refused"
            await _refuse(send, int(held["status"]), reason)
            return
        await send(message)

    return sending


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, Receive]:
    """The request's body (up to about ``limit`` bytes), and a ``receive`` that hands it to
    the app again, then goes on with the real one (the rest of a longer body, or the
    client's disconnect)."""
    chunks: list[bytes] = []
    size, more = 0, True
    after: list[Message] = []
    while more and size <= limit:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            after, more = [message], False
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = bool(message.get("more_body"))
    body = b"".join(chunks)
    replay: list[Message] = [{"type": "http.request", "body": body, "more_body": more}, *after]

    async def again() -> Message:
        return replay.pop(0) if replay else await receive()

    return body, again


class _BadId:
    """A request whose id is not a string or an integer."""


_BAD_ID = _BadId()


def _request_key(body: bytes) -> tuple[int | str, str] | _BadId | None:
    """A request's id and its text, if ``body`` is one request (what the SDK keys by);
    :data:`_BAD_ID` if its id is of no type an id may have; None for anything else."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or "method" not in message or "id" not in message:
        return None
    request_id = message["id"]
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        return _BAD_ID
    return request_id, str(request_id)


async def _refuse(
    send: Send,
    status: int,
    message: str,
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    request_id: int | str | None = None,
) -> None:
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": INVALID_REQUEST if status != 503 else INTERNAL_ERROR,
                "message": message,
            },
        }
    ).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def build_http_app(gateway: Gateway, tokens: TokenStore) -> ASGIApp:
    """The whole HTTP app: the gate in front of the SDK's streamable HTTP transport.

    Serve it as the root app: its lifespan (the SDK's session manager, which owns every
    session's tasks) must run.
    """
    server = gateway.build_server()
    events = SessionEvents()
    sdk_app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        max_request_body_size=gateway.max_message_bytes,  # the gate refuses larger ones first
        session_idle_timeout=SESSION_IDLE_SECONDS,
        max_sessions=1000,
        host="127.0.0.1",
        event_store=events,
        retry_interval=RETRY_MILLISECONDS,
    )
    gate = AccessGate(sdk_app, gateway, tokens)
    gate.lane = HttpLane(gateway, session_manager_of(server), events)
    gateway.close_http_session = gate.close_session
    return gate
