"""The SDK's private parts Lockgate relies on (proxy/gateway/_sdk.py) are where it expects
them: an SDK upgrade that moves them fails here, by name, before anything else does."""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
from mcp import Client
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server

from proxy.gateway._sdk import connection_of, request_channel_of


async def test_a_request_context_reaches_its_connection_and_its_request_channel():
    seen: list[tuple[Any, Any]] = []

    async def middleware(ctx: ServerRequestContext, call_next):
        if ctx.method == "tools/list":
            seen.append((connection_of(ctx), request_channel_of(ctx)))
        return await call_next(ctx)

    async def list_tools(ctx, params):
        return types.ListToolsResult(tools=[])

    server: Server = Server("sdk-probe", on_list_tools=list_tools)
    server.middleware = [middleware]  # as the gateway sets it

    with anyio.fail_after(20):
        async with Client(server) as client:
            await client.list_tools()
    ((connection, channel),) = seen
    assert isinstance(connection, Connection)
    assert isinstance(connection.state, dict)
    assert callable(channel.send_raw_request)  # a DispatchContext: it can ask the client


def test_a_servers_http_session_manager_is_reached_and_an_unknown_session_is_not_live():
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from proxy.gateway._sdk import holding_http_session, session_manager_of

    server: Server = Server("sdk-probe")
    server.streamable_http_app(session_idle_timeout=60)
    manager = session_manager_of(server)
    assert isinstance(manager, StreamableHTTPSessionManager)
    assert manager.session_idle_timeout == 60
    with holding_http_session(manager, "no-such-session") as live:
        assert live is False
