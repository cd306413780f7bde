"""What a person can ask of a running gateway, in one typed place.

The app's window, the local control socket (and so every ``lockgate`` command that talks
to a running gateway) and tests all go through :class:`GatewayControl`; none of them
reaches into the gateway's attributes. Every method runs on the gateway's event loop
thread, except :meth:`GatewayControl.history`, which reads SQLite and belongs on a worker
thread. (:meth:`GatewayControl.audit_summary` reads it too, on a worker thread of its own.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.audit.log import AuditSummary
from proxy.audit.records import CallRecord
from proxy.config.servers import ServerSpec
from proxy.errors import LockgateError
from proxy.gateway.approvals import PendingApproval, Remember
from proxy.gateway.core import Gateway
from proxy.gateway.events import Event
from proxy.gateway.pins import InstructionsChange, ToolChange
from proxy.policy.model import Policy, parse_policy_bytes
from proxy.policy.replay import ReplayReport, replay_history
from proxy.upstream.catalog import ServerTools
from proxy.upstream.oauth import AuthState, OpenUrl

__all__ = [
    "AnswerRefused",
    "GatewayControl",
    "PolicyInForce",
    "ServersInForce",
    "SessionStatus",
    "Status",
]


class AnswerRefused(LockgateError):
    """An answer to an approval that cannot be taken as given."""

    title = "The answer was not taken"


@dataclass(frozen=True, slots=True)
class SessionStatus:
    """One client session on one server."""

    id: str
    server: str
    client: str
    started: float
    up: bool  # its server is running


@dataclass(frozen=True, slots=True)
class PolicyInForce:
    """The policy the next call meets, and why policy.json is not it (if it is not)."""

    policy: Policy
    error: str | None  # policy.json is broken: the last good policy stays in force
    digest: str | None  # of the file's bytes in force (None: the built-in policy)
    deleted: bool = False  # policy.json is gone; the last policy in force stays
    # the team's layer above it (``policy.with_team(team)`` is what calls meet), and why
    # its file is not it, if it is not; None: no team policy
    team: Policy | None = None
    team_error: str | None = None

    @property
    def layered(self) -> Policy:
        """The policy a call meets: policy.json's under the team's layer."""
        return self.policy.with_team(self.team)

    @property
    def rules(self) -> int:
        return len(self.policy.rules)


@dataclass(frozen=True, slots=True)
class ServersInForce:
    """The servers the gateway serves, and why servers.json is not them (if it is not);
    and the servers of servers.json turned off (``"disabled": true``), which it does not
    serve but the window lists, to turn them on again."""

    servers: dict[str, ServerSpec]
    error: str | None
    disabled: dict[str, ServerSpec] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Status:
    """Everything ``lockgate status`` and the window's header say."""

    paused: bool
    servers: tuple[str, ...]
    sessions: tuple[SessionStatus, ...]
    policy: PolicyInForce
    servers_error: str | None
    approvers: int
    pending: int
    audit_error: str | None  # why the last audit write failed (calls are refused meanwhile)
    disabled: tuple[str, ...] = ()  # servers of servers.json turned off (not served)


class GatewayControl:
    """The one façade over a :class:`~proxy.gateway.core.Gateway` for its front ends."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    # -- reading -----------------------------------------------------------------------

    def status(self) -> Status:
        gateway = self._gateway
        return Status(
            paused=gateway.paused,
            servers=tuple(sorted(gateway.servers)),
            sessions=tuple(
                SessionStatus(
                    id=s.id,
                    server=s.server,
                    client=s.client,
                    started=s.started,
                    up=s.upstream is not None and not s.upstream.dead.is_set(),
                )
                for s in gateway.sessions.values()
            ),
            policy=self.policy(),
            servers_error=gateway.servers_error,
            approvers=gateway.approvals.approvers,
            pending=len(gateway.approvals.pending()),
            audit_error=gateway.tool_calls.audit_failure,
            disabled=tuple(sorted(gateway.disabled_servers)),
        )

    @property
    def paused(self) -> bool:
        return self._gateway.paused

    def policy(self) -> PolicyInForce:
        store, team = self._gateway.policy_store, self._gateway.team_store
        error = None if store.error is None else str(store.error)
        return PolicyInForce(
            store.policy,
            error,
            store.digest,
            deleted=store.deleted,
            team=None if team is None else self._gateway.policy.team,
            team_error=None if team is None or team.error is None else str(team.error),
        )

    def replay_candidate(self, data: bytes, start: float, end: float) -> ReplayReport:
        """What policy.json as ``data`` (a change about to be made, from
        :func:`proxy.policy.edit.preview`) would have done to the calls recorded from
        ``start`` to ``end``, against the policy in force, both under the team's layer.
        Reads the period's log: from a worker thread, never the loop or the GUI.

        Raises:
            PolicyError: ``data`` is not a valid policy.
            AuditError: the audit log cannot be read.
        """
        in_force = self._gateway.policy
        candidate = parse_policy_bytes(data, "the change").with_team(in_force.team)
        return replay_history(self._gateway.audit, candidate, in_force, start, end)

    def servers(self) -> ServersInForce:
        gateway = self._gateway
        return ServersInForce(
            dict(gateway.servers), gateway.servers_error, dict(gateway.disabled_servers)
        )

    async def list_tools(self) -> dict[str, ServerTools]:
        """Every tool of every server, asked of each server on a connection of its own."""
        return await self._gateway.list_tools()

    def auth_status(self) -> dict[str, AuthState]:
        """The OAuth sign-in of every remote server in force that Lockgate signs in to:
        its state, why, and when its access token expires (never a token). A server whose
        sign-in the keyring has not given yet this run says so (``checked`` False)."""
        return self._gateway.auth_status()

    def pending_approvals(self) -> list[PendingApproval]:
        return self._gateway.approvals.pending()

    def history(self, *, limit: int, before_id: str | None = None) -> list[CallRecord]:
        """The newest ``limit`` calls of the audit log (older than ``before_id``), newest
        first. Blocking: call it from a worker thread, never the loop or the GUI."""
        return self._gateway.audit.query(limit=limit, before_id=before_id)

    async def audit_summary(self) -> AuditSummary:
        """The audit log's size, its calls and the oldest one's time, counted on a worker
        thread (it reads the whole table's index).

        Raises:
            proxy.audit.log.AuditError: the database cannot be read.
        """
        return await asyncio.to_thread(self._gateway.audit.summary)

    @property
    def approval_timeout(self) -> float:
        """Seconds a person has to answer an ``ask`` whose rule sets no timeout."""
        return self._gateway.enforcer.default_approval_timeout

    @property
    def audit_retention(self) -> int:
        """Days the audit log keeps a call (0: for ever)."""
        return self._gateway.audit.retention_days

    @property
    def audit_max_megabytes(self) -> int:
        """The most room the audit log's calls may take, in MB (0: no bound)."""
        return self._gateway.audit.max_megabytes

    # -- changing ----------------------------------------------------------------------

    def pause(self) -> None:
        """Deny every call until :meth:`resume` (waiting approvals are withdrawn)."""
        self._gateway.pause()

    def resume(self) -> None:
        self._gateway.resume()

    def answer(
        self,
        approval_id: str,
        approve: bool,
        *,
        digest: str,
        reason: str | None = None,
        remember: Remember = Remember.ONCE,
    ) -> None:
        """Answer the call waiting for a person, bound to the ``digest`` the person was
        shown (a call with other arguments under the same id is not approved).

        Raises:
            AnswerRefused: no such call is waiting (answered, timed out, or not the call
                that was shown), or ``remember`` asks for what only a rule can do.
        """
        if remember is Remember.ALWAYS:
            raise AnswerRefused("always-allow is done by writing a rule")
        done = self._gateway.approvals.answer(
            approval_id, approve, reason=reason, remember=remember, digest=digest
        )
        if not done:
            raise AnswerRefused(
                "no such pending approval (answered, timed out, or not the call you were shown)"
            )

    async def reload_policy(self) -> PolicyInForce:
        """Read policy.json now; returns once what it says is in force (or its error)."""
        await self._gateway.reload_policy()
        return self.policy()

    def reload_servers(self) -> list[str]:
        """Read servers.json now; returns the server names in force.

        Raises:
            proxy.config.servers.ServersError: the file is broken; the servers in force stay.
        """
        return self._gateway.reload_servers()

    def set_approval_timeout(self, seconds: float) -> None:
        """How long a person has to answer an ``ask`` whose rule (and case) set no timeout,
        for calls decided from now on; a call already waiting keeps its deadline. (The app
        calls it with settings.json's ``approval_timeout_seconds`` once it is saved.)

        Raises:
            ValueError: not a number of seconds above 0.
        """
        self._gateway.enforcer.default_approval_timeout = seconds

    def set_audit_retention(self, days: int) -> None:
        """Keep each call ``days`` days in the audit log from now on (0: for ever). Returns
        at once: the log's writer thread prunes with it, at once and hourly. (The app
        calls it with settings.json's ``audit_retention_days`` once it is saved.)

        Raises:
            ValueError: not a whole number of days, 0 or more.
        """
        self._gateway.audit.set_retention(days)

    def set_audit_max_megabytes(self, megabytes: int) -> None:
        """Bound the audit log's calls to ``megabytes`` MB from now on (0: no bound).
        Returns at once: the log's writer thread looks at its size and prunes the oldest
        calls past it (the app calls it with settings.json's ``audit_max_megabytes``).

        Raises:
            ValueError: not a whole number, 0 or more.
        """
        self._gateway.audit.set_max_megabytes(megabytes)

    async def end_sessions(self, client: str) -> int:
        """End ``client``'s HTTP sessions (after its token was revoked); returns how many."""
        return await self._gateway.end_sessions_of(client)

    async def restart_server(self, server: str) -> int:
        """Restart ``server`` in every session that uses it; returns how many."""
        return await self._gateway.restart_server(server)

    async def sign_in(self, server: str, open_url: OpenUrl) -> None:
        """Sign in to the remote ``server`` with OAuth in the person's browser: returns
        once it is done (``open_url`` is given the authorization page to open; at most
        5 minutes). Its sessions use the new sign-in from their next request.

        Raises:
            proxy.upstream.oauth.SignInFailed: it did not work (refused, timed out, not a
                server Lockgate signs in to); the earlier sign-in stays.
            proxy.config.secrets.SecretError: the keyring cannot be used.
        """
        await self._gateway.sign_in(server, open_url)

    async def sign_out(self, server: str) -> None:
        """Forget ``server``'s OAuth tokens (revoked at its authorization server if it
        can); its calls are refused until a person signs in again.

        Raises:
            proxy.upstream.oauth.SignInFailed: not a server Lockgate signs in to.
            proxy.config.secrets.SecretError: the keyring cannot be used.
        """
        await self._gateway.sign_out(server)

    # -- tool pinning ------------------------------------------------------------------

    def tool_changes(self) -> list[ToolChange]:
        """Every tool held by its pin now (changed, renamed, new, poisoned), oldest first."""
        return self._gateway.tool_changes()

    def instruction_changes(self) -> list[InstructionsChange]:
        """Every server whose instructions are held now."""
        return self._gateway.instruction_changes()

    async def accept_tool(
        self, server: str, tool: str, *, fingerprint_seen: str | None = None
    ) -> ToolChange:
        """A person accepted ``tool``'s definition as it is now (``fingerprint_seen``: the
        one they were shown, which must still be it); returns what was accepted.

        Raises:
            proxy.gateway.pins.PinsError: Lockgate has not seen that tool, it changed since
                it was shown, or the pins cannot be saved.
        """
        return await self._gateway.accept_tool(server, tool, fingerprint_seen=fingerprint_seen)

    async def accept_instructions(self, server: str) -> None:
        """A person accepted ``server``'s instructions as they are now.

        Raises:
            proxy.gateway.pins.PinsError: none were seen, or the pins cannot be saved.
        """
        await self._gateway.accept_instructions(server)

    # -- listening ---------------------------------------------------------------------

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Hear every event of the gateway (on its loop thread); returns the unsubscribe."""
        return self._gateway.bus.subscribe(listener)

    def attach_approver(self) -> Callable[[], None]:
        """Count one more person who can answer approvals; returns the detach."""
        return self._gateway.approvals.attach()
