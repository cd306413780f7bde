"""One client session on one server: what the gateway keeps about it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import anyio.abc
from mcp.server.connection import Connection

from proxy.config.servers import ServerSpec
from proxy.gateway.approvals import SessionApproval
from proxy.upstream.connection import Backoff, Upstream
from proxy.upstream.oauth import TokenKeeper

__all__ = ["ClientChannel", "Listener", "Session"]


class ClientChannel(Protocol):
    """Where a server's request to the client goes: a request's own stream (the SDK's
    dispatch context), or a 2026 call's input-required exchange."""

    @property
    def can_send_request(self) -> bool: ...

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: Any = None
    ) -> dict[str, Any]: ...


@dataclass(eq=False)
class Listener:
    """A 2026 client's ``subscriptions/listen`` stream: the notifications it asked for
    (and Lockgate honours), sent on its request's own channel."""

    methods: frozenset[str]
    channel: Any  # the listen request's channel (the SDK's dispatch context): its notify
    subscription_id: Any  # the listen request's id, on every frame it is sent
    ended: anyio.Event = field(default_factory=anyio.Event)

    async def tell(self, method: str, params: Mapping[str, Any] | None) -> None:
        out = dict(params or {})
        meta = out.get("_meta")
        out["_meta"] = {
            **(meta if isinstance(meta, Mapping) else {}),
            "io.modelcontextprotocol/subscriptionId": self.subscription_id,
        }
        await self.channel.notify(method, out)


@dataclass(eq=False)
class Session:
    """One client session on one server."""

    id: str
    server: str
    client: str
    connection: Connection
    spec: ServerSpec  # what the session's upstream is started from (SSE remembered)
    init_params: Mapping[str, Any] | None = None  # the handshake its upstream opens with
    protocol: str | None = None  # the MCP version its client's handshake agreed
    # the upstream's answer to it, or to server/discover (a 2026 client's serverInfo)
    server_hello: Mapping[str, Any] | None = None
    # a 2026 client's upstream that speaks 2026-07-28 too: requests pass as they came
    modern_upstream: bool = False
    # a 2026 client's pooled upstream: its listen streams (None: a handshake session,
    # whose client hears of changes on its own channel)
    listeners: list[Listener] | None = None
    envelope: Mapping[str, Any] | None = None  # the first request's (a 2026 upstream's)
    listening_upstream: bool = False  # a listen stream to its 2026 server is open
    # a 2026 server's tools' input schemas, as last listed (for Mcp-Param-* headers)
    tool_schemas: dict[str, Any] = field(default_factory=dict)
    # a pooled session: its calls running on (input-required exchanges), how many of its
    # requests were answered
    exchanges: set[Any] = field(default_factory=set)
    served: int = 0
    closed: bool = False  # it was ended: nothing of it starts again
    upstream: Upstream | None = None
    backoff: Backoff = field(default_factory=Backoff)
    # each call in flight upstream: where the server's requests to the client go
    inflight: dict[object, ClientChannel] = field(default_factory=dict)
    # "allow for this session": the questions a person answered so (tool, rule, case)
    session_approvals: set[SessionApproval] = field(default_factory=set)
    tool_names: tuple[str, ...] = ()  # every tool the upstream listed, hidden or not
    started: float = field(default_factory=time.time)
    task_group: anyio.abc.TaskGroup | None = None  # where the session's background work runs
    # the client's notifications/initialized is on its way upstream: what the client sends
    # from now on may overtake nothing that a server needs first
    initialized: bool = False
    # the servers.json entry the session began with: when servers.json changes it, the
    # next restart of the upstream uses the new one
    configured: ServerSpec | None = None
    # every secret value an upstream of this session was started with: no text that
    # reaches the client or the log may hold one
    secrets: set[str] = field(default_factory=set)
    # a remote server's OAuth sign-in (shared by its sessions): its tokens are secrets too
    keeper: TokenKeeper | None = None
    last_active: float = field(default_factory=time.monotonic)  # the last request's start
    active: int = 0  # requests of the client being handled now
    # calls served beside the SDK (the HTTP fast lane's): cancelled when the session
    # ends, as the SDK cancels its own
    beside: set[asyncio.Task[Any]] = field(default_factory=set)
    # ends the session from the gateway's side as its client would (HTTP: a DELETE), so
    # the client is told it is gone; None: the front door cannot (a local connection)
    close: Callable[[], Awaitable[None]] | None = None

    def secret_values(self) -> tuple[str, ...]:
        """The secrets this session's upstreams were given: keyring values, OAuth tokens."""
        held = self.keeper.secrets if self.keeper is not None else ()
        return (*self.secrets, *held)

    def scrub(self, text: str) -> str:
        """``text`` with every secret value of this session's upstreams replaced."""
        for secret in self.secret_values():
            if secret and secret in text:
                text = text.replace(secret, "[secret]")
        return text

    async def why_down(self) -> str | None:
        """Why the session's server went away (its recorded end, last words included),
        once its connection has noticed: at once, mostly; None after a second without."""
        upstream = self.upstream
        if upstream is None:
            return None
        with anyio.move_on_after(1, shield=True):
            await upstream.dead.wait()
        return upstream.exit_reason if upstream.dead.is_set() else None
