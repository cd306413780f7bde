"""What the audit log keeps: one record a call (who, what, the decision, how it ended),
and the rate-limit charges calls make. Plain frozen data: :mod:`proxy.audit.log` stores
and reads it, the app and ``lockgate log`` show it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = ["CallDecision", "CallRecord", "Charge", "Outcome"]


class CallDecision(StrEnum):
    """What was decided about a call: the policy's verdict, or a person's answer."""

    ALLOWED = "allowed"  # the policy allowed it (a rule or the default)
    DENIED = "denied"  # the policy denied it (a rule, the default, arguments, a limit)
    APPROVED = "approved"  # the policy asked, and a person approved it
    REFUSED = "refused"  # the policy asked, and a person refused or nobody answered in time


class Outcome(StrEnum):
    """How a call ended."""

    OK = "ok"  # the upstream answered with a result
    TOOL_ERROR = "tool_error"  # the upstream answered with a result marked isError
    PROTOCOL_ERROR = "protocol_error"  # a JSON-RPC error or an answer that made no sense
    CANCELLED = "cancelled"  # the client cancelled it before the answer
    UPSTREAM_DOWN = "upstream_down"  # the server could not be reached or died
    BLOCKED = "blocked"  # never sent upstream: denied or refused
    PENDING = "pending"  # recorded, then sent upstream; no answer (yet)
    INTERRUPTED = "interrupted"  # sent upstream; Lockgate stopped before the answer came
    WITHHELD = "withheld"  # the upstream answered; its result was kept from the agent
    TIMED_OUT = "timed_out"  # the rule's timeout passed: cancelled upstream


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """One answered tool call and its decision, as the audit log keeps it.

    ``arguments`` are stored redacted (see :func:`proxy.audit.redact.redact`), so a record
    read back from the log holds the redacted arguments, not the ones written.
    """

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: float  # when the call arrived, epoch seconds
    client: str
    server: str
    tool: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    decision: CallDecision
    basis: str | None = None  # rule, default, arguments, limit, pause, timeout, ...
    rule: str | None = None  # the deciding rule's pattern; None when no rule decided
    case: int | None = None  # the rule's "when" case that decided (from 0); None: the rule
    reason: str
    outcome: Outcome
    duration_ms: float | None = None
    result_size: int | None = None  # bytes of the answer sent to the client
    error: str | None = None  # short text, for the outcomes that are errors
    # what the client program says it is ("name version", its clientInfo: unchecked, so
    # shown, never decided on) and the MCP version of the request
    client_info: str | None = None
    protocol: str | None = None
    # what the result held that looked like a secret ({"kind", "where"}: never a value),
    # and what was done about it ("redacted", "blocked", "approved", "refused")
    findings: tuple[Mapping[str, str], ...] = ()
    secrets: str | None = None
    waited_ms: float | None = None  # how long a person took to answer; None: not asked
    layer: str | None = None  # "team": the team's policy decided; None: policy.json

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``lockgate log --json``): ``time`` as ISO-8601 UTC text,
        ``ts`` as epoch seconds. The arguments are copied as they are; a record read from the
        log holds them redacted already."""
        return {
            "id": self.id,
            "time": datetime.fromtimestamp(self.time, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "ts": self.time,
            "client": self.client,
            "server": self.server,
            "tool": self.tool,
            "arguments": dict(self.arguments),
            "decision": CallDecision(self.decision).value,
            "basis": self.basis,
            "rule": self.rule,
            "case": self.case,
            "reason": self.reason,
            "outcome": Outcome(self.outcome).value,
            "duration_ms": self.duration_ms,
            "result_size": self.result_size,
            "error": self.error,
            "client_info": self.client_info,
            "protocol": self.protocol,
            "findings": [dict(f) for f in self.findings],
            "secrets": self.secrets,
            "waited_ms": self.waited_ms,
            "layer": self.layer,
        }


@dataclass(frozen=True, slots=True)
class Charge:
    """One rate-limit charge: a call counted on ``counter`` (for ``client``, or globally
    when None) at ``time``."""

    counter: str
    client: str | None
    time: float
