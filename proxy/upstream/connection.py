"""One connection to a real MCP server, for one client session.

The connection pumps JSON objects (the SDK's typed models would drop fields they do not
know): a stdio server through :class:`proxy.upstream.pipelink.PipeLink`, a remote one through the
SDK's ``JSONRPCDispatcher`` over its streamable HTTP or SSE client transport. It runs
in a supervisor task inside the gateway's task group, because anyio requires the task that
entered a transport's context to leave it. The client session's exit stack stops it.

When the server dies, in-flight calls fail at once with "Connection closed" (the
dispatcher's doing), and :attr:`Upstream.dead` is set the moment the dispatcher's read
loop ends, not when the transport has finished tearing down (that can take a second more,
during which a new call would fail again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol, TextIO

import anyio
import anyio.abc
import httpx2
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import CallOptions
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher

from proxy.config.servers import HttpServer, ServerSpec, StdioServer
from proxy.errors import LockgateError
from proxy.upstream.pipelink import EngineNotifyHandler, EngineRequestHandler, PipeLink
from proxy.upstream.process import stdio_pipes

__all__ = ["Backoff", "OnNotify", "OnRequest", "Upstream", "UpstreamUnavailable"]

log = logging.getLogger(__name__)

# What the gateway gives a connection for the server's requests and notifications.
OnRequest = Callable[[str, Mapping[str, Any] | None], Awaitable[dict[str, Any]]]
OnNotify = Callable[[str, Mapping[str, Any] | None], Awaitable[None]]

# The dispatcher already handled these: progress went to the caller's on_progress (with
# the token remapped), cancelled cancelled the matching handler. Forwarding them raw would
# deliver them twice, with the wrong ids.
_HANDLED_BY_DISPATCHER = frozenset({"notifications/progress", "notifications/cancelled"})


class UpstreamUnavailable(LockgateError):
    """The server cannot be reached now; the message says why, for the client and log."""

    title = "A server cannot be reached"


class Backoff:
    """When a crashed server may be started again: 1 s, 2 s, 4 s... up to 30 s; a server
    that then stays up for a minute starts from 1 s again."""

    def __init__(
        self,
        first: float = 1.0,
        longest: float = 30.0,
        healthy_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._first, self._longest, self._healthy_after = first, longest, healthy_after
        self._clock = clock
        self._delay = 0.0
        self._not_before = 0.0
        self._started = 0.0

    def started(self) -> None:
        self._started = self._clock()

    def crashed(self) -> None:
        now = self._clock()
        if self._started and now - self._started >= self._healthy_after:
            self._delay = 0.0
        self._delay = min(self._longest, self._delay * 2 if self._delay else self._first)
        self._not_before = now + self._delay

    def wait(self) -> float:
        """Seconds until a restart is allowed (0: now)."""
        return max(0.0, self._not_before - self._clock())


LAST_WORDS_LINES = 5  # of a dead server's log, in its error
LAST_WORDS_BYTES = 4096


class Upstream:
    """A live connection to one server for one client session."""

    def __init__(
        self,
        spec: ServerSpec,
        *,
        on_request: OnRequest,
        on_notify: OnNotify,
        errlog: TextIO,
        secrets: tuple[str, ...] = (),
        auth: httpx2.Auth | None = None,
        live_secrets: Collection[str] = (),
    ) -> None:
        """``auth`` authenticates a remote server's requests (an OAuth sign-in's
        :class:`proxy.upstream.oauth.KeeperAuth`); ``live_secrets`` are secret values
        that may grow while the connection lives (rotated tokens), scrubbed as
        ``secrets`` are."""
        self.spec = spec
        self._secrets = tuple(s for s in secrets if s)
        self._live_secrets = live_secrets
        self._auth = auth
        self._on_request = on_request
        self._on_notify = on_notify
        self._errlog = errlog
        self._dispatcher: _Peer | None = None
        self._scope = anyio.CancelScope()
        self.dead = anyio.Event()
        self.exit_reason: str | None = None
        self._stopping = False

    @property
    def name(self) -> str:
        return self.spec.name

    def _connect(self) -> contextlib.AbstractAsyncContextManager[_Peer]:
        spec = self.spec
        if isinstance(spec, StdioServer):
            return _pipe_link(stdio_pipes(spec, self._errlog))
        assert isinstance(spec, HttpServer)
        if spec.sse:
            return _dispatcher(sse_client(spec.url, headers=dict(spec.headers), auth=self._auth))
        client = httpx2.AsyncClient(
            headers=dict(spec.headers), timeout=httpx2.Timeout(30, read=300), auth=self._auth
        )
        return _dispatcher(
            _closing_client(client, streamable_http_client(spec.url, http_client=client))
        )

    async def supervise(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Run the connection until it ends or :meth:`aclose`; reports started once the
        dispatcher runs. Failures to start are raised to the starter."""
        started = False
        try:
            with self._scope:
                async with self._connect() as dispatcher:
                    self._dispatcher = dispatcher
                    async with anyio.create_task_group() as tg:
                        await tg.start(dispatcher.run, self._handle_request, self._handle_notify)
                        started = True
                        task_status.started()
                    # run() returned: the server closed its side (exited, or hung up)
                    self._mark_dead(
                        "the server closed the connection (did it exit?)" + self._last_words()
                    )
        except Exception as exc:
            self._mark_dead(f"{type(exc).__name__}: {exc}" + self._last_words())
            if not started:
                raise UpstreamUnavailable(
                    f"cannot start server {self.name!r}: {self.exit_reason}"
                ) from exc
            log.warning("server %s failed: %s", self.name, self.exit_reason)
        finally:
            self._mark_dead("stopped by Lockgate" if self._stopping else "ended")

    def _last_words(self) -> str:
        """``; it said: LINES`` with the last lines the server wrote to its log (stderr),
        where a server that fails says why ("missing API key"); "" if it wrote none."""
        path = getattr(self._errlog, "name", None)
        if not isinstance(self.spec, StdioServer) or not isinstance(path, str):
            return ""
        try:
            self._errlog.flush()
            with open(path, "rb") as log_file:
                log_file.seek(max(0, os.fstat(log_file.fileno()).st_size - LAST_WORDS_BYTES))
                tail = log_file.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [line.strip() for line in tail.splitlines() if line.strip()][-LAST_WORDS_LINES:]
        return f"; it said: {' / '.join(lines)}" if lines else ""

    def scrub(self, text: str) -> str:
        """``text`` without the secret values this connection was started with: a
        transport's error may quote a header or an argument verbatim."""
        for secret in (*self._secrets, *self._live_secrets):
            if secret:
                text = text.replace(secret, "[secret]")
        return text

    def _mark_dead(self, reason: str) -> None:
        if not self.dead.is_set():
            self.exit_reason = self.scrub(reason)
            self.dead.set()

    async def aclose(self) -> None:
        """Stop the connection (and the server process); waits at most 5 s."""
        self._stopping = True
        self._scope.cancel()
        with anyio.move_on_after(5, shield=True):
            await self.dead.wait()

    async def request(
        self, method: str, params: Mapping[str, Any] | None, options: CallOptions | None = None
    ) -> dict[str, Any]:
        """Send a request; returns the raw result.

        Raises:
            UpstreamUnavailable: the connection is down.
            mcp.shared.exceptions.MCPError: the server answered with an error, or the
                connection closed mid-call (code -32000).
        """
        dispatcher = self._dispatcher
        if dispatcher is None or self.dead.is_set():
            raise UpstreamUnavailable(f"server {self.name!r} is down: {self.exit_reason}")
        return await dispatcher.send_raw_request(method, params, options)

    async def notify(self, method: str, params: Mapping[str, Any] | None) -> None:
        dispatcher = self._dispatcher
        if dispatcher is not None and not self.dead.is_set():
            await dispatcher.notify(method, params)

    async def _handle_request(
        self, _ctx: object, method: str, params: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        if method == "ping":
            return {}
        return await self._on_request(method, params)

    async def _handle_notify(
        self, _ctx: object, method: str, params: Mapping[str, Any] | None
    ) -> None:
        if method not in _HANDLED_BY_DISPATCHER:
            await self._on_notify(method, params)


class _Peer(Protocol):
    """What the connection needs of its JSON-RPC engine (PipeLink or JSONRPCDispatcher)."""

    async def run(
        self,
        on_request: EngineRequestHandler,
        on_notify: EngineNotifyHandler,
        *,
        task_status: anyio.abc.TaskStatus[None] = ...,
    ) -> None: ...

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]: ...

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> None: ...


@contextlib.asynccontextmanager
async def _pipe_link(
    pipes: contextlib.AbstractAsyncContextManager[
        tuple[asyncio.StreamReader, asyncio.StreamWriter]
    ],
) -> AsyncIterator[_Peer]:
    async with pipes as (reader, writer):
        yield PipeLink(reader, writer)


@contextlib.asynccontextmanager
async def _dispatcher(
    transport: contextlib.AbstractAsyncContextManager[Any],
) -> AsyncIterator[_Peer]:
    async with transport as streams:
        yield JSONRPCDispatcher(streams[0], streams[1])


@contextlib.asynccontextmanager
async def _closing_client(
    client: httpx2.AsyncClient, transport: contextlib.AbstractAsyncContextManager[Any]
) -> Any:
    async with client, transport as streams:
        yield streams
