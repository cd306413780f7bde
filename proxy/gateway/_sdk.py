"""Every use of the mcp SDK's private attributes, in one place.

mcp 2.3 gives middleware no public way to reach the per-connection state and the
request-scoped back-channel a proxy needs. Both live on private attributes of
``ServerSession``. Keeping the access here means an SDK upgrade that moves them breaks
one module, and ``tests/proxy/gateway/test_sdk.py`` says so loudly.
"""

from __future__ import annotations

from typing import Any

from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.shared.dispatcher import DispatchContext

__all__ = ["connection_of", "request_channel_of"]


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
