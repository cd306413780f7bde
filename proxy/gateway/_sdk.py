"""Every use of the mcp SDK's private attributes, in one place.

mcp 2.3 gives middleware no public way to reach the per-connection state and the
request-scoped back-channel a proxy needs. Both live on private attributes of
``ServerSession``. Keeping the access here means an SDK upgrade that moves them breaks
one module, and ``tests/proxy/gateway/test_sdk.py`` says so loudly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import anyio
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.dispatcher import DispatchContext

__all__ = ["connection_of", "holding_http_session", "request_channel_of", "session_manager_of"]


def connection_of(ctx: ServerRequestContext[Any, Any]) -> Connection:
    """The client connection a request arrived on: per-session ``state``, ``exit_stack``
    (unwound when the session ends) and the standalone channel to the client."""
    connection: Connection = ctx.session._connection
    return connection


def request_channel_of(ctx: ServerRequestContext[Any, Any]) -> DispatchContext[Any]:
    """The channel scoped to this request (on HTTP, the POST's response stream), which
    can carry server-to-client requests that belong to this call."""
    channel: DispatchContext[Any] = ctx.session._request_outbound
    return channel


def session_manager_of(server: Server[Any]) -> StreamableHTTPSessionManager:
    """The streamable-HTTP session manager ``server.streamable_http_app`` made."""
    manager = server._session_manager
    assert manager is not None, "streamable_http_app() makes it"
    return manager


@contextlib.contextmanager
def holding_http_session(manager: StreamableHTTPSessionManager, session_id: str) -> Iterator[bool]:
    """Whether the SDK's HTTP session ``session_id`` is live (known, not terminated, not
    being ended for idleness); while held, its idle countdown is suspended as the SDK's
    transport suspends it for a request it serves, so that requests served beside the
    SDK (the HTTP fast lane's) keep the session as much in use as its own do."""
    transport = manager._server_instances.get(session_id)
    if transport is None or transport.is_terminated:
        yield False
        return
    scope, timeout = transport.idle_scope, transport._idle_timeout
    if scope is None or timeout is None:
        yield True
        return
    if scope.cancel_called:
        yield False
        return
    transport._requests_in_flight += 1
    scope.deadline = math.inf
    try:
        yield True
    finally:
        transport._requests_in_flight -= 1
        if not transport._requests_in_flight:
            scope.deadline = anyio.current_time() + timeout
