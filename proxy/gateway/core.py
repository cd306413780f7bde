"""The gateway: client sessions in, real MCP servers out, the policy in between.

One low-level SDK ``Server`` hosts every client session, used only as a transport host:
a single middleware sees each message raw and pumps it, as JSON objects, to the session's
own upstream connection (see :mod:`proxy.upstream.connection`). Everything passes through unchanged
except:

- ``tools/call``: decided by the policy before anything goes upstream. A blocked call is
  answered here with a tool result marked ``isError`` that tells the agent why; a hidden
  tool is answered like an unknown tool (-32602). Every call, allowed or not, is in the
  audit log before its answer leaves.
- ``tools/list``: hidden tools are left out.
- progress and cancellation: the SDK's dispatchers remap ids on both sides; the client's
  progress token is replaced by the upstream call's own, and progress is re-emitted to
  the client with the client's token.
- server-to-client requests (sampling, elicitation, roots): sent to the client on the
  channel of a call in flight that can carry requests, else on the session's standalone
  channel.

Clients speak either era of MCP. A handshake-era session (``initialize`` first) is bound
to the server it opened and the client that opened it; a request for another server or
from another client on the same session is refused. A 2026-07-28 request has no session:
it names its server (the HTTP path, or the local connection's hello) and comes from its
client (the token, or the local connection), and is served on the upstream connection
pooled for that server and client (:mod:`proxy.gateway.modern`), opened with the
handshake at the client's first request and kept while it is used. Its ``tools/call`` is
decided, audited and sent exactly as a session's is; ``server/discover`` is answered from
the upstream's handshake.

``servers`` are the servers in force: those of servers.json not turned off
(``"disabled": true``), which ``disabled_servers`` holds. Every lookup of a server goes
through ``servers``, so a server turned off is refused as one removed is, with words of
its own (:meth:`Gateway.not_served`) that say how to turn it on. When servers.json turns a
server off or removes it, the open sessions' server processes are stopped and every
request of those sessions is refused (a ``tools/call`` as a blocked call, in the audit
log; anything else as a JSON-RPC error); turned on again, a session's next request starts
it again. A server whose entry only *changed* keeps its processes until they restart.

A remote server that asks for an OAuth sign-in has one :class:`~proxy.upstream.oauth.
TokenKeeper` here (:meth:`Gateway.keeper_for`), shared by all its sessions: each of their
connections authenticates through it, and while it needs a person to sign in, the
server's calls are refused (audited, basis ``needs_sign_in``) rather than sent to meet a
401; :meth:`Gateway.sign_in` puts a new sign-in in force for the open sessions too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import anyio
import anyio.abc
from mcp.server.connection import Connection
from mcp.server.context import CallNext, ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
)
from mcp_types.methods import INPUT_REQUIRED_METHODS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from proxy.audit.log import AuditLog
from proxy.config.oauth_store import OAuthStore
from proxy.config.secrets import SecretError, SecretStore
from proxy.config.servers import (
    HttpServer,
    ServersError,
    ServerSpec,
    ServersRead,
    oauth_applies,
    open_server_log,
    read_servers_file,
    resolve_secrets,
    secret_values,
)
from proxy.config.settings import DEFAULT_MAX_MESSAGE_BYTES
from proxy.config.watch import FileWatcher
from proxy.gateway._sdk import connection_of, request_channel_of
from proxy.gateway.approvals import ApprovalBroker
from proxy.gateway.events import (
    EventBus,
    OAuthStateChanged,
    PauseChanged,
    ServersRejected,
    ServersReloaded,
    ToolPinsChanged,
    UpstreamDown,
    UpstreamUp,
)
from proxy.gateway.modern import (
    LISTENABLE,
    InputExchange,
    ModernPool,
    check_request,
    discovered,
    envelope_of,
    for_handshake,
    handshake_answer,
    handshake_envelope,
    modern_headers,
    only_2026,
    param_headers,
    shaped,
    speaks_2026,
    upstream_handshake,
    with_envelope,
    without_envelope,
    without_subscription,
)
from proxy.gateway.pins import InstructionsChange, PinsError, ToolChange, ToolPins
from proxy.gateway.pipeline import Said, ToolCallPipeline
from proxy.gateway.session import ClientChannel, Listener, Session
from proxy.policy.decide import Enforcer, Verdict, hidden_tools
from proxy.policy.model import DEFAULT_APPROVAL_TIMEOUT, Policy, team_layer
from proxy.policy.store import PolicyStore, PolicyWatcher, team_unreadable
from proxy.upstream.catalog import ServerTools, list_all_tools
from proxy.upstream.connection import Backoff, Upstream, UpstreamUnavailable
from proxy.upstream.oauth import (
    AuthState,
    KeeperAuth,
    OpenUrl,
    SignInFailed,
    SignInNeeded,
    TokenKeeper,
)

__all__ = ["Gateway", "Session"]  # Session is re-exported from proxy.gateway.session

log = logging.getLogger(__name__)

MAX_SESSIONS_PER_CLIENT = 32  # each one is a server process
# a 2026 client's pooled upstream unused this long is ended (as an idle HTTP session is)
MODERN_IDLE_SECONDS = 900.0
# how long a server's question to a 2026 client waits for the client's retry with its answer
INPUT_SECONDS = 300.0
MAX_INPUT_ROUNDS = 10  # a 2026 server's input-required rounds in one call, at most
IDLE_SWEEP_SECONDS = 60.0  # how often idle pooled upstreams are looked for
MAX_CALLS_PER_CLIENT = 64  # a 2026 client's calls in flight to handshake servers, per door
MAX_LISTENERS = 16  # a 2026 client's listen streams to one server, per door

_INIT_OPTIONS: CallOptions = {"cancel_on_abandon": False, "timeout": 60}
_DISCOVER_OPTIONS: CallOptions = {"cancel_on_abandon": False, "timeout": 60}


class Gateway:
    """The policy-enforcing proxy core, with no transport of its own (see proxy.doors.http and
    proxy.doors.local for the front doors). Lives on one event loop."""

    def __init__(
        self,
        *,
        servers: Mapping[str, ServerSpec],
        policy_path: Path,
        audit: AuditLog,
        secrets: SecretStore,
        bus: EventBus,
        log_dir: Path,
        servers_file: Path | None = None,
        last_good_policy: Path | None = None,
        team_policy: Path | None = None,
        last_good_team_policy: Path | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        default_approval_timeout: float = DEFAULT_APPROVAL_TIMEOUT,
        pins: ToolPins | None = None,
    ) -> None:
        """``default_approval_timeout`` is how long a person has to answer an ``ask`` whose
        rule says nothing (settings.json's ``approval_timeout_seconds``); it can be changed
        while the gateway runs (:attr:`enforcer`). ``pins`` are the servers' pinned tool
        definitions (the data folder's ``tool-pins.json``; None: kept in memory).

        Raises:
            ValueError: ``default_approval_timeout`` is not a number of seconds above 0.
        """
        self.servers, self.disabled_servers = _in_force(servers)
        self.servers_error: str | None = None  # while servers.json is broken
        self._servers_digest: str | None = None
        self._servers_watcher = (
            FileWatcher(servers_file, read_servers_file, self._servers_read)
            if servers_file is not None
            else None
        )
        self.audit = audit
        self.secrets = secrets
        self.oauth_store = OAuthStore(secrets)
        # a remote server's OAuth sign-in, one per server for all its sessions; made when
        # first needed (or at start, to know the state), dropped with the server
        self._keepers: dict[str, TokenKeeper] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.bus = bus
        self._log_dir = log_dir
        self._clock = clock
        self._monotonic = monotonic
        self.max_message_bytes = max_message_bytes  # per client message, at either door
        self.policy_store = PolicyStore(
            policy_path, bus.emit, self._policy_swapped, last_good=last_good_policy
        )
        # the team's layer, which policy.json cannot loosen: until its file is read (and
        # whenever it cannot be, with no copy of it kept) it refuses every call
        self.team_store = (
            None
            if team_policy is None
            else PolicyStore(
                team_policy,
                bus.emit,
                self._policy_swapped,
                last_good=last_good_team_policy,
                missing=team_unreadable(team_policy),
                layer="team",
            )
        )
        self.enforcer = Enforcer(
            self._layered(), clock, default_approval_timeout=default_approval_timeout
        )
        self.approvals = ApprovalBroker(bus.emit, clock)
        self.watcher = PolicyWatcher(self.policy_store)
        self.team_watcher = None if self.team_store is None else PolicyWatcher(self.team_store)
        self.pins = pins if pins is not None else ToolPins(None, clock=clock)
        self._pins_saved = self.pins.version
        self._pins_lock = asyncio.Lock()
        self._pin_saves: set[asyncio.Task[None]] = set()  # awaited at stop, never cancelled
        self.tool_calls = ToolCallPipeline(
            enforcer=self.enforcer,
            approvals=self.approvals,
            audit=audit,
            bus=bus,
            refusal=self._refusal,
            held=self._held,
            clock=clock,
            monotonic=monotonic,
        )
        self.paused = False
        self.sessions: dict[str, Session] = {}
        # the handshake sessions of the HTTP door, by the session id the SDK gave them
        self.http_sessions: dict[str, Session] = {}
        self._errlogs: dict[str, TextIO] = {}
        # set by the HTTP front door: ends an HTTP session (id, client) as a DELETE would
        self.close_http_session: Callable[[str, str], Coroutine[Any, Any, None]] | None = None

    # -- life -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the policy and start watching it and servers.json; take over from the
        last run: its unanswered calls are marked interrupted, and its rate-limit charges
        count again.

        Raises:
            proxy.audit.log.AuditError: the audit log cannot be read or written.
        """
        await asyncio.to_thread(self.pins.load)
        self._pins_saved = self.pins.version
        if self.team_watcher is not None:  # first: policy.json alone is never in force
            await self.team_watcher.start()
        await self.watcher.start()
        if self._servers_watcher is not None:
            await self._servers_watcher.start()
        await self.tool_calls.take_over()
        self._load_keepers(self.servers.values())

    async def stop(self) -> None:
        """Refuse pending approvals and stop watching; sessions end with their transports."""
        self.approvals.cancel_all("Lockgate is shutting down")
        await self.watcher.stop()
        if self.team_watcher is not None:
            await self.team_watcher.stop()
        if self._servers_watcher is not None:
            await self._servers_watcher.stop()
        await self.tool_calls.aclose()  # its background work ends before the log closes
        for task in list(self._background):
            task.cancel()
        # a save under way finishes (its thread would write on, after the last one)
        await asyncio.gather(*self._pin_saves, return_exceptions=True)
        await self._save_pins()  # what was pinned last is not lost
        for keeper in self._keepers.values():
            await keeper.aclose()  # a refresh under way reaches the keyring
        for errlog in self._errlogs.values():
            errlog.close()
        self._errlogs.clear()

    def build_server(
        self,
        *,
        server: str | None = None,
        client: str | None = None,
        on_session: Callable[[Session], None] | None = None,
        on_modern: Callable[[], None] | None = None,
    ) -> Server[Any]:
        """An SDK ``Server`` whose sessions this gateway serves.

        ``server``/``client`` fix the session's server and client (the local socket front
        door knows both up front); on HTTP they come from the path and the token.
        ``on_session`` hears of each session once its ``initialize`` has succeeded, and
        ``on_modern`` of each 2026-07-28 request answered without an error.

        The server's lifespan (the HTTP app's, or one local connection's) holds the task
        group its upstreams run in and the pool of 2026 clients' upstreams.
        """

        @contextlib.asynccontextmanager
        async def lifespan(_server: Server[Any]) -> Any:
            pool = ModernPool()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._sweep_idle, pool)
                try:
                    yield {"tg": tg, "pool": pool}
                finally:
                    for pooled in list(pool.sessions.values()):
                        self.sessions.pop(pooled.id, None)  # its upstream ends with tg
                    tg.cancel_scope.cancel()

        sdk_server: Server[Any] = Server("lockgate", lifespan=lifespan)

        async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> Any:
            result = await self._handle(ctx, call_next, server, client)
            if on_session is not None and ctx.method == "initialize":
                on_session(connection_of(ctx).state["lockgate"])
            if on_modern is not None and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
                on_modern()
            return result

        sdk_server.middleware = [middleware]  # replaces the SDK's default (OpenTelemetry)
        return sdk_server

    def pause(self) -> None:
        """Deny every tool call, with a reason, until :meth:`resume`; calls waiting for a
        person are refused too."""
        if not self.paused:
            self.paused = True
            for pending in self.approvals.pending():
                self.approvals.withdraw(pending.id, "Lockgate was paused")
            self.bus.emit(PauseChanged(self._clock(), True))

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.bus.emit(PauseChanged(self._clock(), False))

    async def list_tools(self) -> dict[str, ServerTools]:
        """Every server's tools, asked of each server on a connection of its own; what
        they say is pinned as a client's listing is."""
        listed = await list_all_tools(self.servers, self.secrets, self._errlog, self.keeper_for)
        for name, found in listed.items():
            if found.error is None:
                self._observe_tools(name, found.tools)
                self._pinned_instructions(name, {"instructions": found.instructions})
        return listed

    # -- tool pinning ------------------------------------------------------------------

    def _held(self, server: str, tool: str) -> tuple[str, str] | None:
        """Why a call to ``tool`` is held by its pin (basis, reason), or None. A tool the
        policy hides is left to the policy: it is unknown, held or not."""
        policy = self.policy
        if policy.hides(server, tool):
            return None
        change = self.pins.held(server, tool, policy.pinning)
        return None if change is None else ("quarantined", change.reason())

    def tool_changes(self) -> list[ToolChange]:
        """Every tool held by its pin now."""
        return self.pins.changes(self.policy.pinning)

    def instruction_changes(self) -> list[InstructionsChange]:
        return self.pins.instruction_changes(self.policy.pinning)

    async def accept_tool(
        self, server: str, tool: str, *, fingerprint_seen: str | None = None
    ) -> ToolChange:
        """A person accepted ``tool``'s definition as it is now (``fingerprint_seen``: the
        one they were shown, which must still be it): its calls are decided by the policy
        again, and the server's sessions are told their tool list changed.

        Raises:
            PinsError: Lockgate has not seen that tool, it changed since it was shown, or
                the pins cannot be saved.
        """
        change = self.pins.accept(server, tool, fingerprint_seen=fingerprint_seen)
        await self._save_pins(raising=True)
        self._tools_changed_for(server)
        return change

    async def accept_instructions(self, server: str) -> None:
        """A person accepted ``server``'s instructions as they are now (sessions opened
        from now on are given them).

        Raises:
            PinsError: none were seen, or the pins cannot be saved.
        """
        self.pins.accept_instructions(server)
        await self._save_pins(raising=True)
        self.bus.emit(ToolPinsChanged(server))

    def _tools_changed_for(self, server: str) -> None:
        self.bus.emit(ToolPinsChanged(server))
        for session in list(self.sessions.values()):
            if session.server == server and session.tool_names and session.task_group:
                session.task_group.start_soon(self._notify_tools_changed, session)

    def _pins_moved(self, server: str | None = None) -> None:
        """Save the pins soon if they changed, and tell the listeners."""
        if self.pins.version == self._pins_saved:
            return
        task = asyncio.get_running_loop().create_task(self._save_pins())
        self._pin_saves.add(task)
        task.add_done_callback(self._pin_saves.discard)
        self.bus.emit(ToolPinsChanged(server))

    async def _save_pins(self, *, raising: bool = False) -> None:
        async with self._pins_lock:
            version = self.pins.version
            if version == self._pins_saved:
                return
            data = self.pins.snapshot()
            try:
                await asyncio.to_thread(self.pins.save, data)
            except PinsError as exc:
                log.error("%s", exc)
                if raising:
                    raise
                return
            self._pins_saved = version

    async def _check_pins(self, session: Session) -> None:
        """List the tools of ``session``'s server (it said they changed) and check them
        against their pins, so a change is held, and shown, before a client lists them."""
        upstream = session.upstream
        if upstream is None or session.closed or session.modern_upstream:
            return  # (a 2026 server's list is checked when its client lists it)
        try:
            result = await upstream.request("tools/list", None)
        except Exception as exc:  # a server that cannot list now is listed by its client
            log.info("could not list %s's tools after it changed them: %s", session.server, exc)
            return
        tools = result.get("tools")
        if isinstance(tools, list):
            self._observe_tools(session.server, tools)

    def _observe_tools(self, server: str, tools: Sequence[Any]) -> frozenset[str]:
        """Check what ``server`` listed against its pins (saved soon if they moved); the
        names of the listed tools that are held."""
        held = self.pins.observe(server, tools, self.policy.pinning)
        self._pins_moved(server)
        return held

    def _pinned_instructions(self, server: str, answer: dict[str, Any]) -> dict[str, Any]:
        """A handshake (or discover) answer without the server's instructions while they
        are held."""
        held = self.pins.observe_instructions(
            server, answer.get("instructions"), self.policy.pinning
        )
        self._pins_moved(server)
        if not held:
            return answer
        return {k: v for k, v in answer.items() if k != "instructions"}

    # -- OAuth sign-in of remote servers ---------------------------------------------

    def keeper_for(self, spec: ServerSpec) -> TokenKeeper | None:
        """The sign-in of ``spec``'s server (None: not one Lockgate signs in to), made
        at first use; a server whose url or ``oauth`` changed gets a new one."""
        if not isinstance(spec, HttpServer) or not oauth_applies(spec):
            return None
        keeper = self._keepers.get(spec.name)
        if keeper is None or keeper.identity != (spec.url, spec.oauth):
            name = spec.name

            def changed(state: AuthState) -> None:
                self.bus.emit(OAuthStateChanged(self._clock(), name, state.state, state.why))

            keeper = self._keepers[name] = TokenKeeper(
                spec, self.oauth_store, clock=self._clock, on_change=changed
            )
        else:
            keeper.spec = spec  # its headers may have changed: a sign-in sends them
        return keeper

    def _load_keepers(self, specs: Iterable[ServerSpec]) -> None:
        """Read the sign-ins of ``specs`` from the keyring in the background, so their
        state is known before a session needs them."""
        for spec in specs:
            keeper = self.keeper_for(spec)
            if keeper is not None and not keeper.status().checked:
                self._spawn(keeper.load())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background; :meth:`stop` cancels what is left of it."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _served_keeper(self, server: str) -> TokenKeeper:
        """The sign-in of ``server``, which must be in force and one Lockgate signs in to.

        Raises:
            SignInFailed: it is not.
        """
        spec = self.servers.get(server)
        if spec is None:
            raise SignInFailed(self.not_served(server) or f"no server {server!r}")
        keeper = self.keeper_for(spec)
        if keeper is None:
            raise SignInFailed(
                f"server {server!r} is not a remote server Lockgate signs in to (a "
                '"command" server, or one whose Authorization header servers.json sets)'
            )
        return keeper

    async def sign_in(self, server: str, open_url: OpenUrl) -> None:
        """Sign in to ``server`` in the person's browser (``open_url`` is given the
        page); its sessions use the new tokens from their next request.

        Raises:
            SignInFailed: it did not work; the earlier sign-in stays.
            proxy.config.secrets.SecretError: the keyring cannot be used.
        """
        await self._served_keeper(server).sign_in(open_url)

    async def sign_out(self, server: str) -> None:
        """Forget ``server``'s tokens (revoked at its authorization server where it can);
        its calls are refused until a person signs in again. A server turned off is
        signed out of the same way; one no longer in servers.json too, though without
        its metadata its tokens cannot be revoked (its keyring entries go).

        Raises:
            SignInFailed: it is not a server Lockgate signs in to.
            proxy.config.secrets.SecretError: the keyring cannot be used.
        """
        off = self.disabled_servers.get(server)
        if off is not None and isinstance(off, HttpServer) and oauth_applies(off):
            # turned off, not forgotten: revoked at its issuer like any, registration kept
            await TokenKeeper(off, self.oauth_store, clock=self._clock).sign_out()
            return
        if server not in self.servers:
            await asyncio.to_thread(self.oauth_store.delete, server)
            return
        await self._served_keeper(server).sign_out()

    def auth_status(self) -> dict[str, AuthState]:
        """The sign-in of every remote server in force that Lockgate signs in to."""
        found: dict[str, AuthState] = {}
        for name in sorted(self.servers):
            keeper = self.keeper_for(self.servers[name])
            if keeper is not None:
                found[name] = keeper.status()
        return found

    def _sign_in_refusal(self, server: str) -> str | None:
        """Why calls to ``server`` are refused for want of a sign-in (None: they are not,
        or its sign-in has not been read yet: starting its upstream reads it)."""
        keeper = self._keepers.get(server)
        return keeper.refusal() if keeper is not None else None

    async def reload_policy(self) -> PolicyStore:
        """Read policy.json now (it is also watched) and put it in force before returning:
        the next call is decided by it. The watcher's own event for the same content
        later changes nothing (the store compares hashes). Returns the store, whose
        ``digest`` says which content is in force and ``error`` what is wrong with a
        broken file (the last good policy then stays)."""
        await self.watcher.reload_now()
        return self.policy_store

    def reload_servers(self) -> list[str]:
        """Read servers.json now (it is also watched): new servers can be reached at
        once; a changed server's open sessions use the new settings from their next
        restart, and a removed or turned off server's processes are stopped and its
        sessions' requests refused. Returns the names in force (not those turned off).

        Raises:
            ServersError: the file is not valid; the servers in force stay as they were.
        """
        if self._servers_watcher is not None:
            result = self._servers_watcher.reload_now_blocking()
            if result.error is not None:
                raise ServersError(result.error)
        return sorted(self.servers)

    def _servers_read(self, result: ServersRead) -> None:
        if result.digest == self._servers_digest:
            return
        self._servers_digest = result.digest
        if result.error is not None:
            self.servers_error = result.error
            log.warning("servers.json not applied, the servers in force stay:\n%s", result.error)
            self.bus.emit(ServersRejected(self._clock(), result.source, result.error))
            return
        was_broken, self.servers_error = self.servers_error is not None, None
        servers, disabled = _in_force(result.servers)
        if (servers, disabled) == (self.servers, self.disabled_servers) and not was_broken:
            return
        old, was_disabled = self.servers, self.disabled_servers
        self.servers, self.disabled_servers = servers, disabled
        log.info(
            "servers in force: %s%s",
            ", ".join(sorted(servers)) or "none",
            f" (turned off: {', '.join(sorted(disabled))})" if disabled else "",
        )
        added, removed = servers.keys() - old.keys(), old.keys() - servers.keys()
        self.bus.emit(
            ServersReloaded(
                self._clock(),
                tuple(sorted(servers)),
                added=tuple(sorted(added)),
                removed=tuple(sorted(removed)),
                changed=tuple(
                    sorted(n for n in servers.keys() & old.keys() if servers[n] != old[n])
                ),
                disabled=tuple(sorted(disabled)),
                turned_on=tuple(sorted(added & was_disabled.keys())),
                turned_off=tuple(sorted(removed & disabled.keys())),
                disabled_changed=disabled != was_disabled,
            )
        )
        for pending in self.approvals.pending():
            server = pending.call.server
            if server in disabled:
                self.approvals.withdraw(pending.id, f"server {server!r} was turned off in Lockgate")
            elif server not in servers:
                self.approvals.withdraw(
                    pending.id, f"server {server!r} was removed from servers.json"
                )
        for session in list(self.sessions.values()):
            if session.server not in servers:
                self._stop_upstream_soon(session)
        for name, keeper in list(self._keepers.items()):
            spec = servers.get(name)
            if not (isinstance(spec, HttpServer) and oauth_applies(spec)) or (
                keeper.identity != (spec.url, spec.oauth)
            ):
                del self._keepers[name]  # its keyring entries stay until a sign-out
        self._load_keepers(servers.values())  # the new and changed ones

    def _stop_upstream_soon(self, session: Session) -> None:
        """Stop the server process of ``session`` (its server is no longer in force).

        The session lets go of it at once, and it is stopped in the session's task group
        (this runs in a callback that cannot wait): turned on again, even before it has
        exited, the session's next request starts a new one (its backoff forgotten)."""
        upstream = session.upstream
        if upstream is None or upstream.dead.is_set() or session.task_group is None:
            return
        log.info(
            "stopping server %s for session %s: it is not in force", session.server, session.id
        )
        session.upstream = None
        session.backoff = Backoff(clock=self._monotonic)
        session.task_group.start_soon(upstream.aclose)
        for listener in session.listeners or ():
            listener.ended.set()  # its server is gone: the client hears the stream end

    async def end_sessions_of(self, client: str) -> int:
        """End every HTTP session of ``client`` (its token was revoked: its sessions and
        their servers must not live on until they idle out). Returns how many."""
        ended = 0
        for session in list(self.sessions.values()):
            if session.client == client and session.close is not None:
                self.sessions.pop(session.id, None)
                await session.close()
                ended += 1
        return ended

    async def restart_server(self, server: str) -> int:
        """Stop every connection to ``server``; each starts again on its session's next
        request, at once (the backoff is forgotten). Returns how many were stopped."""
        stopped = 0
        for session in list(self.sessions.values()):
            if session.server == server and session.upstream is not None:
                upstream = session.upstream
                session.backoff = Backoff(clock=self._monotonic)
                if not upstream.dead.is_set():
                    await upstream.aclose()
                    stopped += 1
        return stopped

    # -- every message ----------------------------------------------------------------

    async def _handle(
        self,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
        fixed_server: str | None,
        fixed_client: str | None,
    ) -> Any:
        connection = connection_of(ctx)

        def scrub(text: str) -> str:
            session: Session | None = connection.state.get("lockgate")
            return text if session is None else session.scrub(text)

        session: Session | None = connection.state.get("lockgate")
        if session is not None:
            session.active += 1
        try:
            with _as_protocol_errors(ctx.method, scrub):
                return await self._route(ctx, call_next, fixed_server, fixed_client)
        finally:
            if session is not None:
                session.active -= 1

    async def call_tool(self, session: Session, params: Mapping[str, Any]) -> dict[str, Any]:
        """A ``tools/call`` of ``session`` that reached the gateway without the SDK's server
        (a door's fast lane, :mod:`proxy.doors.fastlane`): decided, sent on the
        session's upstream (restarted if it went down), audited. The call carries no
        progress token.

        Raises:
            MCPError: the JSON-RPC error the client gets, whatever went wrong.
        """

        async def send(forwarded: Mapping[str, Any]) -> dict[str, Any]:
            upstream = await self._live_upstream(session)
            try:
                return await upstream.request("tools/call", forwarded)
            except MCPError as exc:
                self._raise_sign_in_failure(session, exc)
                raise

        session.last_active = self._monotonic()
        said = Said.of((session.init_params or {}).get("clientInfo"), session.protocol)
        session.active += 1  # in use: not a session to end to make room
        try:
            with _as_protocol_errors("tools/call", session.scrub):
                return await self.tool_calls.run(session, params, send, said=said)
        finally:
            session.active -= 1

    async def _route(
        self,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
        fixed_server: str | None,
        fixed_client: str | None,
    ) -> Any:
        method, params = ctx.method, ctx.params
        connection = connection_of(ctx)
        session: Session | None = connection.state.get("lockgate")
        if ctx.request_id is None:  # a notification (or a request without a usable id)
            if method == "notifications/initialized":
                await call_next(ctx)
            if not method.startswith("notifications/"):
                # A "tools/call" without an id would reach the server undecided and
                # unlogged: only real notifications travel, and nothing else without an id.
                log.warning("dropped a %s without a request id", method)
                return None
            if method in ("notifications/cancelled", "notifications/progress"):
                return None  # the SDK's dispatchers handle these on both sides
            if session is None or session.upstream is None:
                return None
            if (fixed_server, fixed_client) == (None, None) and self._identity(
                ctx, fixed_server, fixed_client
            ) != (session.server, session.client):
                return None  # not this session's client: nothing of theirs goes upstream
            if not session.modern_upstream:  # the 2026 era has none for a server
                await session.upstream.notify(method, params)
            if method == "notifications/initialized":
                session.initialized = True
            return None
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return await self._modern(ctx, fixed_server, fixed_client)
        if method == "server/discover":
            # the 2026 era's probe, without its envelope: a handshake client's mistake
            raise MCPError(
                code=METHOD_NOT_FOUND,
                message="server/discover needs the 2026-07-28 envelope; or use initialize",
            )
        server, client = self._identity(ctx, fixed_server, fixed_client)
        if method == "initialize":
            return await self._initialize(ctx, connection, session, server, client)
        if session is None:
            if method == "ping":
                return {}
            raise MCPError(code=INVALID_REQUEST, message="the session is not initialized")
        if server != session.server or client != session.client:
            raise MCPError(
                code=INVALID_REQUEST, message="this session belongs to another server or client"
            )
        session.last_active = self._monotonic()
        if method == "tools/call":  # decided first: a blocked call needs no server
            return await self._tool_call(ctx, session, params or {})
        why = self.not_served(session.server)
        if why is not None:  # turned off or removed since the session opened
            raise MCPError(code=INVALID_REQUEST, message=why)
        if method == "ping":
            return {}
        upstream = await self._live_upstream(session)
        result = await self._forward(ctx, session, upstream, method, params)
        if method == "tools/list":
            result = self._hide_tools(session, result)
        elif method == "tasks/result":  # a task-augmented tools/call's result, at last
            result = await self.tool_calls.inspect_task_result(session, result)
        return result

    async def _modern(
        self,
        ctx: ServerRequestContext[Any, Any],
        fixed_server: str | None,
        fixed_client: str | None,
    ) -> dict[str, Any]:
        """A 2026-07-28 request: served on the pooled upstream of its server and client,
        its ``tools/call`` through the same pipeline as a session's (see the module)."""
        method, version = ctx.method, ctx.protocol_version
        check_request(method, version, ctx.params)
        server, client = self._identity(ctx, fixed_server, fixed_client)
        why = self.not_served(server)
        if why is not None:
            raise MCPError(code=INVALID_PARAMS, message=why)
        connection = connection_of(ctx)
        session = await self._pooled(ctx.lifespan_context, server, client, ctx.params, connection)
        connection.state["lockgate"] = session  # this request's errors are scrubbed
        session.active += 1
        session.last_active = self._monotonic()
        passing = session.modern_upstream  # else translated for a handshake server
        params = dict(ctx.params or {}) if passing else without_envelope(ctx.params) or {}
        headers = modern_headers(method, params) if passing else None
        if headers is not None and method == "tools/call":
            given = ctx.request.headers if ctx.request is not None else None
            schema = session.tool_schemas.get(str(params.get("name")))
            headers.update(param_headers(schema, params.get("arguments"), given))
        try:
            if method == "server/discover" and not passing:
                raise self._no_discover(ctx.lifespan_context["pool"], session)
            if method == "subscriptions/listen":
                result = await self._listen(ctx, session, params)
            elif method in INPUT_REQUIRED_METHODS and not passing:
                result = await self._interactive(ctx, session, method, params)
            elif method == "tools/call":
                result = await self._tool_call(ctx, session, params, headers)
            else:
                why = self.not_served(session.server)
                if why is not None:
                    raise MCPError(code=INVALID_REQUEST, message=why)
                upstream = await self._live_upstream(session)
                result = await self._forward(
                    ctx, session, upstream, method, params, headers=headers
                )
                if method == "tools/list":
                    result = self._hide_tools(session, result)
                elif method == "tasks/result":
                    result = await self.tool_calls.inspect_task_result(session, result)
                elif method == "server/discover":
                    result = self._pinned_instructions(session.server, discovered(result))
        finally:
            session.active -= 1
            session.served += 1
        server_info = None if passing else (session.server_hello or {}).get("serverInfo")
        return shaped(method, result, server_info)

    async def _listen(
        self, ctx: ServerRequestContext[Any, Any], session: Session, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A 2026 client's ``subscriptions/listen``: acknowledged with what Lockgate
        honours (the three list changes: the server's, and Lockgate's own when the
        policy hides or shows a tool), then open until the client closes it or its
        upstream ends. A 2026 server is listened to once for all its clients' streams."""
        assert session.listeners is not None
        if len(session.listeners) >= MAX_LISTENERS:
            raise MCPError(
                code=INVALID_REQUEST,
                message=f"{len(session.listeners)} listen streams are open for this client "
                "and server, the most Lockgate allows; close some",
            )
        wanted = params.get("notifications")
        honoured = {
            flag: True
            for flag in LISTENABLE
            if isinstance(wanted, Mapping) and wanted.get(flag) is True
        }
        listener = Listener(
            frozenset(LISTENABLE[flag] for flag in honoured),
            request_channel_of(ctx),
            ctx.request_id,
        )
        await listener.tell("notifications/subscriptions/acknowledged", {"notifications": honoured})
        session.listeners.append(listener)
        if session.modern_upstream:
            self._listen_upstream(session)
        try:
            await listener.ended.wait()
        finally:
            session.listeners.remove(listener)
        return {"_meta": {SUBSCRIPTION_ID_META_KEY: ctx.request_id}}

    def _listen_upstream(self, session: Session) -> None:
        """Keep one listen stream open to a 2026 server for a pooled session's clients."""
        if session.listening_upstream or session.task_group is None:
            return
        session.listening_upstream = True
        params = {
            "notifications": dict.fromkeys(LISTENABLE, True),
            "_meta": dict(session.envelope or {}),
        }

        async def listen() -> None:
            try:
                upstream = await self._live_upstream(session)
                await upstream.request(
                    "subscriptions/listen",
                    params,
                    {"headers": modern_headers("subscriptions/listen", params)},
                )
            except Exception as exc:  # the server went or refused: the next listen retries
                log.info("server %s stopped listening: %s", session.server, exc)
            finally:
                session.listening_upstream = False

        session.task_group.start_soon(listen)

    async def _interactive(
        self,
        ctx: ServerRequestContext[Any, Any],
        session: Session,
        method: str,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        """A 2026 client's ``tools/call``, ``prompts/get`` or ``resources/read`` to a
        server of the handshake era, which may ask the client things mid-call: the call
        runs on (:class:`~proxy.gateway.modern.InputExchange`), and the client gets its
        result, or the server's questions as an input-required result; its retry with
        the answers (and the ``requestState`` it was given) goes on with the same call,
        which the policy decided and the log recorded once."""
        pool: ModernPool = ctx.lifespan_context["pool"]
        state = params.pop("requestState", None)
        responses = params.pop("inputResponses", None)
        target = params.get("name", params.get("uri"))
        owner = (session.server, session.client, method, str(target))
        if state is not None:
            exchange = pool.exchanges.get(state) if isinstance(state, str) else None
            if exchange is None or exchange.owner != owner:
                raise MCPError(
                    code=INVALID_PARAMS,
                    message="this requestState is not one Lockgate gave for this call, "
                    "or its call has ended",
                )
            if isinstance(responses, Mapping):
                exchange.answer(responses)
        else:
            mine = sum(1 for e in pool.exchanges.values() if e.owner[1] == session.client)
            if mine >= MAX_CALLS_PER_CLIENT:
                raise MCPError(
                    code=INVALID_REQUEST,
                    message=f"client {session.client!r} has {mine} calls in flight here, "
                    "the most Lockgate allows; let some finish",
                )
            capabilities = envelope_of(ctx.params).get(CLIENT_CAPABILITIES_META_KEY)
            exchange = InputExchange(
                owner=owner,
                capabilities=capabilities if isinstance(capabilities, Mapping) else {},
                ttl=INPUT_SECONDS,
            )
            pool.exchanges[exchange.state] = exchange
            session.exchanges.add(exchange)
            if method == "tools/call":
                call = self._tool_call(ctx, session, params, channel=exchange)
            else:
                call = self._forward_live(ctx, session, method, params, exchange)

            def ended() -> None:
                pool.exchanges.pop(exchange.state, None)
                session.exchanges.discard(exchange)

            exchange.run(call, on_end=ended)
        try:
            answer = await exchange.next_answer()
        except asyncio.CancelledError:
            # The client closed its request: at 2026-07-28 that is its cancellation. The
            # call ends too (cancelled upstream; one waiting for a person is withdrawn).
            exchange.cancel()
            pool.exchanges.pop(exchange.state, None)
            raise
        except BaseException:
            if exchange.outcome.done():
                pool.exchanges.pop(exchange.state, None)
            raise
        if answer.get("resultType") != "input_required":
            pool.exchanges.pop(exchange.state, None)  # the client has the result
        return answer

    async def _forward_live(
        self,
        ctx: ServerRequestContext[Any, Any],
        session: Session,
        method: str,
        params: Mapping[str, Any],
        channel: InputExchange,
    ) -> dict[str, Any]:
        why = self.not_served(session.server)
        if why is not None:
            raise MCPError(code=INVALID_REQUEST, message=why)
        upstream = await self._live_upstream(session)
        return await self._forward(ctx, session, upstream, method, params, channel=channel)

    def _no_discover(self, pool: ModernPool, session: Session) -> MCPError:
        """What ``server/discover`` gets for a server that speaks only the handshake:
        what the server itself answers, so a client that probes falls back to the
        handshake as it would without Lockgate (one that does not probe is served in
        2026-07-28 all the same). The upstream opened to find out goes at once, unless
        requests use it."""
        if session.active <= 1 and not session.inflight and not session.served:
            self._retire_soon(pool, session)  # opened for this probe only
        return MCPError(
            code=METHOD_NOT_FOUND,
            message=f"server {session.server!r} speaks the initialize handshake, not "
            "server/discover",
        )

    async def discover(
        self,
        lifespan: Mapping[str, Any],
        server: str,
        client: str,
        params: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """``server/discover`` asked on a local connection before its era is chosen (the
        SDK's loop would choose 2026-07-28 for good, and a client that probes a server
        of the handshake era could not fall back to it): answered here, as
        :meth:`_modern` answers it. ``lifespan`` is the connection's server's state.

        Raises:
            MCPError: the JSON-RPC error the client gets.
        """
        check_request("server/discover", MODERN_PROTOCOL_VERSIONS[-1], params)
        why = self.not_served(server)
        if why is not None:
            raise MCPError(code=INVALID_PARAMS, message=why)
        connection = Connection.from_envelope(MODERN_PROTOCOL_VERSIONS[-1], None, None)
        with _as_protocol_errors("server/discover", lambda text: text):
            # what its opening says is scrubbed with the new session's secrets there
            session = await self._pooled(lifespan, server, client, params, connection)
        with _as_protocol_errors("server/discover", session.scrub):
            session.active += 1
            try:
                if not session.modern_upstream:
                    raise self._no_discover(lifespan["pool"], session)
                upstream = await self._live_upstream(session)
                result = await upstream.request(
                    "server/discover",
                    params,
                    {**_DISCOVER_OPTIONS, "headers": modern_headers("server/discover", params)},
                )
            finally:
                session.active -= 1
            result = self._pinned_instructions(server, discovered(result))
            return shaped("server/discover", result, None)

    async def _pooled(
        self,
        lifespan: Mapping[str, Any],
        server: str,
        client: str,
        params: Mapping[str, Any] | None,
        connection: Connection,
    ) -> Session:
        """The upstream session ``client``'s 2026 requests to ``server`` use in this
        door's pool (in ``lifespan``): the one open, or one opened now (one for
        concurrent requests)."""
        pool: ModernPool = lifespan["pool"]
        self._end_idle(pool)
        key = (server, client)
        session = pool.sessions.get(key)
        if session is not None:
            return session
        opening = pool.opening.get(key)
        if opening is None:
            opening = asyncio.get_running_loop().create_task(
                self._open_pooled(lifespan, server, client, params or {}, connection)
            )
            pool.opening[key] = opening

            def opened(task: asyncio.Task[Session]) -> None:
                pool.opening.pop(key, None)
                if not task.cancelled():
                    task.exception()  # retrieved: each waiter has its own copy

            opening.add_done_callback(opened)
        return await asyncio.shield(opening)

    async def _open_pooled(
        self,
        lifespan: Mapping[str, Any],
        server: str,
        client: str,
        params: Mapping[str, Any],
        connection: Connection,
    ) -> Session:
        pool: ModernPool = lifespan["pool"]
        await self._make_room_for(client)
        spec = self.servers.get(server)
        if spec is None:
            raise MCPError(code=INVALID_PARAMS, message=self.not_served(server) or server)
        session = Session(
            id=uuid.uuid4().hex,
            server=server,
            client=client,
            # the first request's: it refuses requests to the client, as the era does
            connection=connection,
            spec=spec,
            configured=spec,
            init_params=upstream_handshake(params.get("_meta"), client),
            task_group=lifespan["tg"],
            backoff=Backoff(clock=self._monotonic),
            listeners=[],
            envelope=envelope_of(params),
        )

        async def close() -> None:
            upstream = self._retire(pool, session)
            if upstream is not None:
                await upstream.aclose()

        session.close = close
        self.sessions[session.id] = session
        session.active += 1  # being opened: not a session to end to make room
        try:
            with _as_protocol_errors("the upstream's opening", session.scrub):
                await self._open_pooled_upstream(session, params)
            if session.closed:  # ended while it opened (its token revoked, say)
                raise MCPError(code=INVALID_REQUEST, message="this client's session was ended")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await close()
            raise
        finally:
            session.active -= 1
        session.initialized = True
        pool.sessions[(server, client)] = session
        log.info("2026-07-28 client %s reached server %s (session %s)", client, server, session.id)
        return session

    async def _open_pooled_upstream(self, session: Session, params: Mapping[str, Any]) -> None:
        """Start a pooled session's upstream in the era it speaks: asked first with
        ``server/discover`` in the client's envelope (as the SDK's own client asks), a
        server that offers 2026-07-28 is spoken to in it, every request passed on as the
        client sent it; any other gets the handshake, and requests without the envelope.
        """
        upstream = await self._start_upstream(session)
        probe = {"_meta": envelope_of(params)}
        try:
            hello = await upstream.request(
                "server/discover",
                probe,
                {**_DISCOVER_OPTIONS, "headers": modern_headers("server/discover", probe)},
            )
        except MCPError as exc:
            if _connection_lost(exc):
                raise
            log.debug("server %s has no server/discover (%s): the handshake", session.server, exc)
        else:
            if speaks_2026(hello):
                session.modern_upstream = True
                session.server_hello = hello
                return
        session.server_hello = await self._open_upstream(session, upstream)
        opened = session.upstream  # over SSE, a new one
        assert opened is not None
        await opened.notify("notifications/initialized", None)

    def _end_idle(self, pool: ModernPool) -> None:
        """End the pooled upstreams of ``pool`` that no request has used for
        :data:`MODERN_IDLE_SECONDS`."""
        now = self._monotonic()
        for session in list(pool.sessions.values()):
            idle = now - session.last_active
            if session.active or session.inflight or idle < MODERN_IDLE_SECONDS:
                continue
            log.info("ending the idle upstream of %s on %s", session.client, session.server)
            self._retire_soon(pool, session)

    async def _sweep_idle(self, pool: ModernPool) -> None:
        """End idle pooled upstreams even when no 2026 request comes to notice them."""
        while True:
            await anyio.sleep(IDLE_SWEEP_SECONDS)
            self._end_idle(pool)

    def _retire(self, pool: ModernPool, session: Session) -> Upstream | None:
        """End a pooled session at once: forgotten, its calls cancelled (a call waiting
        for a person is withdrawn), its listen streams ended, and nothing of it starts
        its server again; returns its upstream, for the caller to stop."""
        session.closed = True
        self.sessions.pop(session.id, None)
        pool.forget(session)
        for listener in session.listeners or ():
            listener.ended.set()
        for exchange in list(session.exchanges):
            exchange.cancel()
        for pending in self.approvals.pending():
            if pending.group == session.id:
                self.approvals.withdraw(pending.id, "the client's session was ended")
        upstream, session.upstream = session.upstream, None
        return upstream

    def _retire_soon(self, pool: ModernPool, session: Session) -> None:
        upstream = self._retire(pool, session)
        if upstream is not None and session.task_group is not None:
            session.task_group.start_soon(upstream.aclose)

    async def _tool_call(
        self,
        ctx: ServerRequestContext[Any, Any],
        session: Session,
        params: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        channel: InputExchange | None = None,
    ) -> dict[str, Any]:
        """A ``tools/call`` on the SDK's route: the pipeline, sending with the request's
        own back-channel (progress, server-to-client requests), or ``channel``."""

        async def send(forwarded: Mapping[str, Any]) -> dict[str, Any]:
            upstream = await self._live_upstream(session)
            return await self._forward(
                ctx, session, upstream, "tools/call", forwarded, headers=headers, channel=channel
            )

        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:  # each request says its own
            info = envelope_of(ctx.params).get(CLIENT_INFO_META_KEY)
        else:
            info = (session.init_params or {}).get("clientInfo")
        said = Said.of(info, ctx.protocol_version)
        return await self.tool_calls.run(session, params, send, said=said)

    def not_served(self, server: str) -> str | None:
        """Why a client asking for ``server`` is refused (None: it is served): it is
        turned off in Lockgate, or servers.json has no such server. Every door says it
        in these words."""
        if server in self.servers:
            return None
        if server in self.disabled_servers:
            return _turned_off(server)
        known = ", ".join(sorted(self.servers)) or "none yet (add them to servers.json)"
        return f"Lockgate has no server named {server!r}; known: {known}"

    def _refusal(self, server: str) -> tuple[str, str] | None:
        """Why Lockgate's own state refuses every call to ``server`` now (basis, reason)."""
        if self.paused:
            return "pause", (
                "Lockgate is paused: every tool call is denied until a person resumes it"
            )
        if server in self.disabled_servers:
            return "server_disabled", self._no_longer_served(server)
        if server not in self.servers:
            return "server_removed", self._no_longer_served(server)
        refused = self._sign_in_refusal(server)
        if refused is not None:
            return "needs_sign_in", refused
        return None

    def _no_longer_served(self, server: str) -> str:
        """Why nothing goes to ``server`` of an open session: turned off, or removed."""
        if server in self.disabled_servers:
            return f"{_turned_off(server)}; Lockgate sends it nothing"
        return f"server {server!r} is no longer in servers.json; Lockgate sends it nothing"

    def _identity(
        self,
        ctx: ServerRequestContext[Any, Any],
        fixed_server: str | None,
        fixed_client: str | None,
    ) -> tuple[str, str]:
        request = ctx.request
        server = fixed_server
        client = fixed_client
        if request is not None:
            server = server or request.path_params.get("server")
            client = client or request.scope.get("state", {}).get("lockgate_client")
        if not server or not client:
            # The front doors always set both; reaching here is a wiring fault.
            raise MCPError(code=INVALID_REQUEST, message="unknown server or client")
        return server, client

    # -- sessions and upstreams -------------------------------------------------------

    async def _initialize(
        self,
        ctx: ServerRequestContext[Any, Any],
        connection: Connection,
        session: Session | None,
        server: str,
        client: str,
    ) -> Any:
        if session is not None:
            raise MCPError(code=INVALID_REQUEST, message="the session is already initialized")
        await self._make_room_for(client)
        why = self.not_served(server)
        if why is not None:
            raise MCPError(code=INVALID_PARAMS, message=why)
        spec = self.servers[server]
        session = Session(
            id=uuid.uuid4().hex,
            server=server,
            client=client,
            connection=connection,
            spec=spec,
            configured=spec,
            init_params=ctx.params,
            task_group=ctx.lifespan_context["tg"],
            backoff=Backoff(clock=self._monotonic),
        )
        connection.state["lockgate"] = session
        if connection.session_id is not None and self.close_http_session is not None:
            closer, session_id = self.close_http_session, connection.session_id

            async def close() -> None:
                await closer(session_id, client)

            session.close = close
            self.http_sessions[session_id] = session
            connection.exit_stack.callback(self.http_sessions.pop, session_id, None)
        connection.exit_stack.push_async_callback(self._end_session, session)
        self.sessions[session.id] = session
        answer = self._pinned_instructions(server, await self._open_upstream(session))
        version = answer.get("protocolVersion")
        session.protocol = version if isinstance(version, str) else None
        return _announcing_list_changes(answer)

    async def _open_upstream(
        self, session: Session, upstream: Upstream | None = None
    ) -> dict[str, Any]:
        """Start the session's upstream (unless ``upstream`` is it, started) and send it
        the handshake (``init_params``); its ``initialize`` result. A remote server that
        refuses streamable HTTP is tried over SSE, and remembered so for its restarts.

        Raises:
            MCPError: the server refused or failed the handshake (its reason, scrubbed).
            UpstreamUnavailable: it could not be started.
        """
        server = session.server
        if upstream is None:
            upstream = await self._start_upstream(session)
        try:
            return await upstream.request("initialize", session.init_params, _INIT_OPTIONS)
        except MCPError as exc:
            if only_2026(exc) and session.listeners is None:
                return await self._speak_2026_for(session, upstream)
            if exc.error.code == CONNECTION_CLOSED and exc.error.message == "Connection closed":
                # It exited before it answered: say why, in its own last words.
                why = await session.why_down()
                if why:
                    raise MCPError(
                        code=CONNECTION_CLOSED,
                        message=session.scrub(f"server {server!r} could not start: {why}"),
                    ) from None
            # a 401 is an HTTP error without JSON-RPC, as a server without streamable
            # HTTP answers: the sign-in says which it was, before SSE is tried
            self._raise_sign_in_failure(session, exc)
            if not _refused_streamable_http(session.spec, exc):
                raise
        # The spec's backward compatibility: a server that refuses streamable HTTP may be
        # an older one that speaks SSE. Remember it, for restarts too.
        log.info("server %s refused streamable HTTP; trying SSE", session.server)
        await upstream.aclose()
        assert isinstance(session.spec, HttpServer)
        session.spec = replace(session.spec, sse=True)
        upstream = await self._start_upstream(session)
        try:
            return await upstream.request("initialize", session.init_params, _INIT_OPTIONS)
        except MCPError as exc:
            self._raise_sign_in_failure(session, exc)
            raise

    async def _speak_2026_for(self, session: Session, upstream: Upstream) -> dict[str, Any]:
        """A handshake client's server that speaks only 2026-07-28: asked
        ``server/discover`` in an envelope made of the client's ``initialize``, its
        answer given to the client as the handshake's; every request of the session then
        goes with that envelope (:meth:`_forward`), and its list changes are listened to.

        Raises:
            MCPError: the server refused that too.
        """
        session.modern_upstream = True
        session.envelope = handshake_envelope(session.init_params)
        probe = {"_meta": dict(session.envelope)}
        hello = await upstream.request(
            "server/discover",
            probe,
            {**_DISCOVER_OPTIONS, "headers": modern_headers("server/discover", probe)},
        )
        session.server_hello = hello
        log.info(
            "server %s speaks only 2026-07-28: its handshake client is translated", session.server
        )
        self._listen_upstream(session)
        return handshake_answer(hello, session.init_params)

    async def _input_rounds(
        self,
        ctx: ServerRequestContext[Any, Any],
        upstream: Upstream,
        request: tuple[str, Mapping[str, Any], CallOptions],
        result: dict[str, Any],
    ) -> dict[str, Any]:
        """A 2026 server's input-required result, for a handshake client: each question
        asked of the client as the handshake asks (a request on the call's own stream),
        the call sent again with the answers, until it completes."""
        method, params, options = request
        for _ in range(MAX_INPUT_ROUNDS):
            if result.get("resultType") != "input_required":
                return result
            asked = result.get("inputRequests")
            answers: dict[str, Any] = {}
            for key, question in (asked if isinstance(asked, Mapping) else {}).items():
                if not isinstance(question, Mapping) or not isinstance(question.get("method"), str):
                    raise MCPError(code=INTERNAL_ERROR, message="the server asked nonsense")
                answers[key] = await self._ask_client(
                    ctx, question["method"], question.get("params")
                )
            again = {**params, "inputResponses": answers}
            if result.get("requestState") is not None:
                again["requestState"] = result["requestState"]
            result = await upstream.request(method, again, options)
        raise MCPError(
            code=INTERNAL_ERROR,
            message=f"the server asked for input more than {MAX_INPUT_ROUNDS} times in one call",
        )

    async def _ask_client(
        self, ctx: ServerRequestContext[Any, Any], method: str, params: Any
    ) -> dict[str, Any]:
        channel = request_channel_of(ctx)
        sent = params if isinstance(params, Mapping) else None
        if channel.can_send_request:
            return dict(await channel.send_raw_request(method, sent))
        return dict(await connection_of(ctx).send_raw_request(method, sent))

    def _raise_sign_in_failure(self, session: Session, exc: Exception) -> None:
        """Raise what the session's sign-in says of ``exc`` (a request that failed),
        if it says anything: the sign-in is needed, or could not be renewed just now.

        Raises:
            SignInNeeded: a person must sign in (the call never reached the server).
            UpstreamUnavailable: the sign-in could not be renewed just now.
        """
        keeper = session.keeper
        if keeper is None or (why := keeper.explain(exc)) is None:
            return
        if keeper.refusal() is not None:
            raise SignInNeeded(why) from None
        raise UpstreamUnavailable(why) from None

    async def _make_room_for(self, client: str) -> None:
        """Make room for one more session of ``client``: at the cap, its least recently
        used idle session (no request in flight) that can be reopened (HTTP: the client
        starts a new one when told its session is gone) is ended.

        Raises:
            MCPError: every one of its sessions is busy or cannot be reopened.
        """
        mine = [s for s in self.sessions.values() if s.client == client]
        if len(mine) < MAX_SESSIONS_PER_CLIENT:
            return
        idle = [s for s in mine if s.close is not None and not s.inflight and not s.active]
        if not idle:
            raise MCPError(
                code=INVALID_REQUEST,
                message=f"client {client!r} has {len(mine)} sessions open, all in use; "
                "Lockgate allows that many at most (close some)",
            )
        oldest = min(idle, key=lambda s: s.last_active)
        log.info(
            "client %s is at its %d sessions: ending its least recently used one, %s",
            client,
            MAX_SESSIONS_PER_CLIENT,
            oldest.id,
        )
        self.sessions.pop(oldest.id, None)
        assert oldest.close is not None
        await oldest.close()

    async def _start_upstream(self, session: Session) -> Upstream:
        keeper = session.keeper = self.keeper_for(session.spec)
        if keeper is not None:
            await keeper.load()
            refused = keeper.refusal()
            if refused is not None:  # it would answer 401: nothing is started
                raise SignInNeeded(refused)
        try:
            spec = resolve_secrets(session.spec, self.secrets)
        except SecretError as exc:
            raise UpstreamUnavailable(f"cannot start server {session.server!r}: {exc}") from None

        async def on_request(method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
            return await self._to_client_request(session, method, params)

        async def on_notify(method: str, params: Mapping[str, Any] | None) -> None:
            if method == "notifications/tools/list_changed" and session.task_group:
                # its tools changed: checked against their pins now, whatever the client does
                session.task_group.start_soon(self._check_pins, session)
            await self._tell_client(session, method, params)

        secrets = secret_values(session.spec, spec)
        session.secrets.update(s for s in secrets if s)
        upstream = Upstream(
            spec,
            on_request=on_request,
            on_notify=on_notify,
            errlog=self._errlog(session.server),
            secrets=tuple(secrets),
            auth=KeeperAuth(keeper) if keeper is not None else None,
            live_secrets=keeper.secrets if keeper is not None else (),
        )
        tg = session.task_group
        assert tg is not None
        session.backoff.started()
        try:
            await tg.start(upstream.supervise)
        except UpstreamUnavailable as exc:
            session.backoff.crashed()
            self.bus.emit(UpstreamDown(self._clock(), session.server, session.id, str(exc)))
            raise
        session.upstream = upstream
        self.bus.emit(UpstreamUp(self._clock(), session.server, session.id))
        tg.start_soon(self._watch_upstream, session, upstream)
        if session.server not in self.servers:
            # servers.json turned it off (or removed it) while it started: stopped at once
            await upstream.aclose()
            raise UpstreamUnavailable(self._no_longer_served(session.server))
        return upstream

    async def _watch_upstream(self, session: Session, upstream: Upstream) -> None:
        await upstream.dead.wait()
        stopped = upstream.exit_reason == "stopped by Lockgate"
        if not stopped:
            session.backoff.crashed()
            log.warning(
                "server %s (session %s) went down: %s",
                session.server,
                session.id,
                upstream.exit_reason,
            )
        current = session.upstream
        if stopped and current not in (None, upstream) and not current.dead.is_set():
            return  # a newer process of the session is up, and said so: this end is not news
        self.bus.emit(
            UpstreamDown(
                self._clock(), session.server, session.id, None if stopped else upstream.exit_reason
            )
        )

    async def _live_upstream(self, session: Session) -> Upstream:
        """The session's upstream, restarted (with backoff) if it went down.

        Raises:
            UpstreamUnavailable: it is down and may not start yet, or cannot start, or its
                server is not in force (turned off or removed, even while it still runs:
                a call decided before that is not sent after it).
        """
        if session.closed:  # a pooled session ended: nothing of it may start a server
            raise UpstreamUnavailable("this client's session was ended")
        configured = self.servers.get(session.server)
        if configured is None:
            raise UpstreamUnavailable(self._no_longer_served(session.server))
        refused = self._sign_in_refusal(session.server)
        if refused is not None:
            raise SignInNeeded(refused)
        upstream = session.upstream
        if upstream is not None and not upstream.dead.is_set():
            return upstream
        wait = session.backoff.wait()
        reason = upstream.exit_reason if upstream is not None else "not started"
        if wait > 0:
            raise UpstreamUnavailable(
                f"server {session.server!r} went down ({reason}); Lockgate restarts it in "
                f"{math.ceil(wait)} s, on the next request after that"
            )
        if configured != session.configured:  # servers.json changed it meanwhile
            session.spec = session.configured = configured
        log.info("restarting server %s for session %s", session.server, session.id)
        upstream = await self._start_upstream(session)
        if not session.modern_upstream:  # 2026-07-28 has no handshake to replay
            # The new process has no session: replay the client's handshake.
            await upstream.request("initialize", session.init_params, _INIT_OPTIONS)
            await upstream.notify("notifications/initialized", None)
        return upstream

    async def _end_session(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        session.closed = True  # nothing of it may start its server again
        for task in list(session.beside):
            task.cancel()
        if session.upstream is not None:
            await session.upstream.aclose()

    def _errlog(self, server: str) -> TextIO:
        """Where a stdio server's stderr goes: a private log file per server."""
        errlog = self._errlogs.get(server)
        if errlog is None or errlog.closed:
            errlog = self._errlogs[server] = open_server_log(self._log_dir, server)
        return errlog

    # -- forwarding -------------------------------------------------------------------

    async def _forward(
        self,
        ctx: ServerRequestContext[Any, Any],
        session: Session,
        upstream: Upstream,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        headers: Mapping[str, str] | None = None,
        channel: ClientChannel | None = None,
    ) -> dict[str, Any]:
        """Send a request upstream for the client and return its result. What the server
        asks the client meanwhile goes on ``channel`` (default: the request's own). For a
        handshake client of a server that speaks only 2026, the request carries the
        session's envelope and the result loses the era's fields."""
        translating = session.modern_upstream and session.listeners is None
        if translating:
            params = with_envelope(params, session.envelope or {})
            headers = modern_headers(method, params)
        forwarded, token = _without_progress_token(params)
        options: CallOptions = {} if headers is None else {"headers": dict(headers)}
        if token is not None:
            client_session = ctx.session

            async def on_progress(
                progress: float, total: float | None, message: str | None
            ) -> None:
                # an input-required call outlives its first request: its stream may be gone
                with contextlib.suppress(Exception) if channel is not None else _nothing():
                    await client_session.report_progress(progress, total, message)

            options["on_progress"] = on_progress
        key = object()  # ids may repeat: 2026 requests of many clients share a session
        session.inflight[key] = channel if channel is not None else request_channel_of(ctx)
        try:
            result = await upstream.request(method, forwarded, options)
            if translating:
                sent = (method, forwarded or {}, options)
                result = for_handshake(await self._input_rounds(ctx, upstream, sent, result))
            return result
        except MCPError as exc:
            self._raise_sign_in_failure(session, exc)
            raise
        finally:
            session.inflight.pop(key, None)

    async def _to_client_request(
        self, session: Session, method: str, params: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """A server-to-client request (sampling, elicitation, roots) from the upstream.

        Nothing on the wire says which call it belongs to, so it goes on the newest
        in-flight call's channel that can carry requests, else the standalone channel;
        either way it reaches the right client session.
        """
        if session.listeners is not None:  # pooled: the calls of many requests share it
            return await self._to_one_exchange(session, method, params)
        for channel in reversed(list(session.inflight.values())):
            if channel.can_send_request:
                return dict(await channel.send_raw_request(method, params))
        return dict(await session.connection.send_raw_request(method, params))

    async def _to_one_exchange(
        self, session: Session, method: str, params: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """A handshake server's question on a pooled session: given to the one call in
        flight whose client can answer it. With several, nothing says which call asks
        (the handshake's requests name none), and a question must never reach another
        program's call: it is refused to the server instead."""
        able = [
            c
            for c in session.inflight.values()
            if isinstance(c, InputExchange) and c.can_answer(method)
        ]
        if len(able) == 1:
            return dict(await able[0].send_raw_request(method, params))
        raise MCPError(
            code=INVALID_REQUEST,
            message=f"Lockgate cannot tell which of {len(able)} calls this {method} is for"
            if able
            else f"the client cannot answer {method} (it did not say it can)",
        )

    def _hide_tools(self, session: Session, result: dict[str, Any]) -> dict[str, Any]:
        tools = result.get("tools")
        if not isinstance(tools, list):
            return result
        names = tuple(t.get("name") for t in tools if isinstance(t, dict))
        session.tool_names = tuple(n for n in names if isinstance(n, str))
        if session.modern_upstream:  # what its calls' Mcp-Param-* headers are made from
            session.tool_schemas = {
                t["name"]: t.get("inputSchema")
                for t in tools
                if isinstance(t, dict) and isinstance(t.get("name"), str)
            }
        held = self._observe_tools(session.server, tools)
        hidden = hidden_tools(self.policy, session.server, session.tool_names) | held
        if not hidden:
            return result
        kept = [t for t in tools if not (isinstance(t, dict) and t.get("name") in hidden)]
        return {**result, "tools": kept}

    def _layered(self) -> Policy:
        """The policy in force: policy.json's, under the team's layer if there is one."""
        personal = self.policy_store.policy
        if self.team_store is None:
            return personal
        return personal.with_team(team_layer(self.team_store.policy))

    @property
    def policy(self) -> Policy:
        """The policy the next call meets (both layers)."""
        return self.enforcer.policy

    def _policy_swapped(self, _swapped: Policy) -> None:
        """policy.json or the team's file changed: the two, layered, go in force."""
        policy = self._layered()
        old = self.enforcer.policy
        self.enforcer.swap_policy(policy)
        # A call waiting for a person was asked under the old policy: if the new one
        # does not ask about it, its prompt goes and it is decided again under the new.
        for pending in self.approvals.pending():
            if pending.about != "call":
                continue  # the call ran: what is asked is its result, which no rule changes
            now = self.enforcer.preview(pending.call)
            if now.verdict is Verdict.DENY:
                self.approvals.withdraw(pending.id, f"the policy changed: {now.reason}")
            elif now.verdict is Verdict.ALLOW:
                self.approvals.withdraw(pending.id, "the policy changed: it allows this call now")
        self.tool_calls.prune_soon()
        for session in list(self.sessions.values()):
            names = session.tool_names
            changed = hidden_tools(old, session.server, names) != hidden_tools(
                policy, session.server, names
            )
            if names and changed and session.task_group is not None:
                session.task_group.start_soon(self._notify_tools_changed, session)

    async def _notify_tools_changed(self, session: Session) -> None:
        log.debug("telling session %s its tool list changed", session.id)
        try:
            await self._tell_client(session, "notifications/tools/list_changed", None)
        except Exception:  # the client may be gone; its session ends on its own
            log.warning("could not tell session %s its tools changed", session.id, exc_info=True)

    async def _tell_client(
        self, session: Session, method: str, params: Mapping[str, Any] | None
    ) -> None:
        """A notification for the session's client: on its own channel, or (2026) on the
        listen streams that asked for it; a 2026 server's own listen frames are told
        again with the listening client's ids."""
        if method == "notifications/subscriptions/acknowledged":
            return  # the answer to Lockgate's own listen stream
        if session.listeners is None or method not in LISTENABLE.values():
            if session.modern_upstream:  # a handshake client's: as the handshake tells it
                params = without_subscription(params) or None
            await session.connection.notify(method, params)
            return
        for listener in list(session.listeners):
            if method in listener.methods:
                try:
                    await listener.tell(method, without_subscription(params))
                except Exception:  # its stream is gone: the client left
                    listener.ended.set()


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextlib.contextmanager
def _as_protocol_errors(method: str, scrub: Callable[[str], str]) -> Iterator[None]:
    """Whatever goes wrong handling a request leaves as a JSON-RPC error (MCPError), its
    text (message and data) scrubbed of the session's secrets: an upstream's error may
    quote a header or an environment variable."""
    try:
        yield
    except MCPError as exc:
        error = exc.error
        message = scrub(error.message)
        data = _scrub_data(error.data, scrub)
        if message == error.message and data == error.data:
            raise
        raise MCPError(code=error.code, message=message, data=data) from None
    except UpstreamUnavailable as exc:
        raise MCPError(code=CONNECTION_CLOSED, message=scrub(str(exc))) from None
    except Exception:
        # Never leak a traceback's text to the client; the log has it.
        log.exception("error handling %s", method)
        raise MCPError(
            code=INTERNAL_ERROR, message="Lockgate failed to handle this request (see its log)"
        ) from None


def _scrub_data(value: Any, scrub: Callable[[str], str], depth: int = 0) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if depth > 32:
        return None
    if isinstance(value, Mapping):
        return {scrub(str(k)): _scrub_data(v, scrub, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_data(v, scrub, depth + 1) for v in value]
    return value


def _in_force(
    servers: Mapping[str, ServerSpec],
) -> tuple[dict[str, ServerSpec], dict[str, ServerSpec]]:
    """``servers`` split into those served and those turned off (``"disabled": true``)."""
    served = {name: spec for name, spec in servers.items() if not spec.disabled}
    return served, {name: spec for name, spec in servers.items() if spec.disabled}


def _turned_off(server: str) -> str:
    return (
        f"server {server!r} is turned off in Lockgate; a person can turn it on in "
        'Lockgate\'s Servers tab (or remove its "disabled": true from servers.json)'
    )


def _connection_lost(exc: MCPError) -> bool:
    """Whether a request failed because its server went away (not an answer)."""
    return exc.error.code == CONNECTION_CLOSED and exc.error.message == "Connection closed"


def _refused_streamable_http(spec: ServerSpec, exc: MCPError) -> bool:
    """Whether ``initialize`` failed the way a server without streamable HTTP fails it
    (HTTP 404, or another 4xx without a JSON-RPC body), on a server whose transport
    servers.json leaves open."""
    if not isinstance(spec, HttpServer) or spec.sse is not None:
        return False
    error = exc.error
    return error.code == METHOD_NOT_FOUND or (
        error.code == INTERNAL_ERROR and error.message == "Server returned an error response"
    )


def _without_progress_token(
    params: Mapping[str, Any] | None,
) -> tuple[dict[str, Any] | None, Any]:
    """``params`` without the client's progress token, and the token (None if absent).

    The upstream dispatcher puts its own token in (its request id) when progress is
    wanted; the client's token must not travel upstream.
    """
    if params is None:
        return None, None
    out = dict(params)
    meta = out.get("_meta")
    if not isinstance(meta, Mapping) or "progressToken" not in meta:
        return out, None
    meta = dict(meta)
    token = meta.pop("progressToken")
    if meta:
        out["_meta"] = meta
    else:
        del out["_meta"]
    return out, token


def _announcing_list_changes(result: dict[str, Any]) -> dict[str, Any]:
    """The server's initialize result, saying its tool list may change: Lockgate sends
    ``notifications/tools/list_changed`` when the policy hides or shows a tool, whatever
    the server itself would do."""
    capabilities = result.get("capabilities")
    if not isinstance(capabilities, dict) or not isinstance(capabilities.get("tools"), dict):
        return result  # a server with no tools: nothing to announce
    tools = {**capabilities["tools"], "listChanged": True}
    return {**result, "capabilities": {**capabilities, "tools": tools}}
