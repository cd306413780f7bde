"""What happens in the gateway, as plain frozen dataclasses, and the bus that carries them.

The proxy core emits these and never knows who listens: the tray app adapts them to Qt
models, the CLI prints them, tests wait on them. Events are emitted on the gateway's event
loop thread; a subscriber must return quickly and must not block (the GUI's subscriber
appends to a queue that its own thread drains).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ApprovalAnswered",
    "ApprovalPending",
    "CallDecided",
    "CallFinished",
    "CallStarted",
    "Event",
    "EventBus",
    "OAuthStateChanged",
    "PauseChanged",
    "PolicyRejected",
    "PolicyReloaded",
    "ServersRejected",
    "ServersReloaded",
    "ToolPinsChanged",
    "UpstreamDown",
    "UpstreamUp",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PolicyReloaded:
    """A new policy is in force (or, with ``source`` None, the built-in default)."""

    time: float
    source: str | None
    rules: int
    default: str
    layer: str | None = None  # "team": the team's policy; None: policy.json


@dataclass(frozen=True, slots=True)
class PolicyRejected:
    """policy.json changed but cannot be used; the last good policy stays in force."""

    time: float
    source: str
    message: str  # every problem, one per line: file:line:col: path: message
    line: int | None = None
    layer: str | None = None  # "team": the team's policy; None: policy.json


@dataclass(frozen=True, slots=True)
class ServersReloaded:
    """servers.json was read and its servers are in force (new sessions use them): it
    changed, or it is valid again after an error (then nothing may have changed).

    ``servers``, ``added``, ``removed`` and ``changed`` are about the servers in force: a
    server turned off (``"disabled": true``) counts as removed, and turned on again as
    added; ``turned_off`` and ``turned_on`` say which those were. ``disabled`` are the
    servers of servers.json turned off now."""

    time: float
    servers: tuple[str, ...]
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()  # the same name, other settings
    disabled: tuple[str, ...] = ()
    turned_on: tuple[str, ...] = ()  # of added: in servers.json before, turned off
    turned_off: tuple[str, ...] = ()  # of removed: still in servers.json, turned off
    disabled_changed: bool = False  # servers turned off were added, removed or changed

    def summary(self) -> str:
        """What changed, in words: ``added a, b; removed c; turned off d``."""
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("added", [n for n in self.added if n not in self.turned_on]),
                ("turned on", self.turned_on),
                ("removed", [n for n in self.removed if n not in self.turned_off]),
                ("turned off", self.turned_off),
                ("changed", self.changed),
            )
            if names
        ]
        if parts:
            return "; ".join(parts)
        return "no server in force changed" if self.disabled_changed else "no server changed"


@dataclass(frozen=True, slots=True)
class ServersRejected:
    """servers.json changed but cannot be used; the servers in force stay."""

    time: float
    source: str
    message: str


@dataclass(frozen=True, slots=True)
class UpstreamUp:
    time: float
    server: str
    session: str


@dataclass(frozen=True, slots=True)
class UpstreamDown:
    time: float
    server: str
    session: str
    error: str | None  # None: stopped on purpose (session ended, idle, shutdown)


@dataclass(frozen=True, slots=True)
class CallStarted:
    call_id: str
    time: float
    client: str
    server: str
    tool: str
    arguments: Mapping[str, Any] = field(default_factory=dict)  # already redacted
    client_info: str | None = None  # what the client program says it is (unchecked)
    protocol: str | None = None  # the request's MCP version


@dataclass(frozen=True, slots=True)
class CallDecided:
    call_id: str
    time: float
    decision: str  # allowed, denied, approved, refused
    basis: str | None
    rule: str | None
    reason: str
    case: int | None = None  # the rule's "when" case that decided (from 0); None: the rule
    layer: str | None = None  # "team": the team's policy decided; None: policy.json


@dataclass(frozen=True, slots=True)
class CallFinished:
    call_id: str
    time: float
    outcome: str  # ok, tool_error, protocol_error, cancelled, upstream_down, blocked
    duration_ms: float | None
    result_size: int | None
    error: str | None = None
    # what the result held that looked like a secret: ({"kind", "where"}, ...), never a value
    findings: tuple[Mapping[str, str], ...] = ()
    secrets: str | None = None  # what was done about them: redacted, blocked, approved


@dataclass(frozen=True, slots=True)
class ToolPinsChanged:
    """What Lockgate has pinned of a server's tools changed: a tool was pinned, held or
    accepted (``server`` None: of several servers)."""

    server: str | None


@dataclass(frozen=True, slots=True)
class ApprovalPending:
    approval_id: str
    call_id: str
    time: float
    deadline: float
    client: str
    server: str
    tool: str
    arguments: Mapping[str, Any]
    rule: str | None
    reason: str
    case: int | None = None  # the rule's "when" case that asks (from 0); None: the rule
    about: str = "call"  # "call": may it be sent; "result": may its result reach the agent


@dataclass(frozen=True, slots=True)
class ApprovalAnswered:
    approval_id: str
    call_id: str
    time: float
    answer: str  # approved, refused, timeout, cancelled
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PauseChanged:
    time: float
    paused: bool


@dataclass(frozen=True, slots=True)
class OAuthStateChanged:
    """A remote server's OAuth sign-in changed state (never a token in it)."""

    time: float
    server: str
    state: str  # not_signed_in, needs_sign_in, signed_in, refreshing
    why: str | None = None


Event = (
    PolicyReloaded
    | PolicyRejected
    | ServersReloaded
    | ServersRejected
    | UpstreamUp
    | UpstreamDown
    | CallStarted
    | CallDecided
    | CallFinished
    | ApprovalPending
    | ApprovalAnswered
    | PauseChanged
    | OAuthStateChanged
    | ToolPinsChanged
)


class EventBus:
    """Hands each event to every subscriber. A failing subscriber is logged, never fatal."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Event], None]] = []

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback`` with every event from now on; returns the way to stop."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: Event) -> None:
        for callback in tuple(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", callback, type(event).__name__)
