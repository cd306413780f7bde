"""tools/call: decided by the policy (and a person, where it asks) before anything goes
upstream, and in the audit log before its answer leaves.

A blocked call is answered here with a tool result marked ``isError`` that tells the
agent why; a hidden tool is answered like an unknown tool (-32602). Arguments that are
malformed whatever the policy says (not an object, numbers JSON cannot carry) are refused.
The :class:`Gateway <proxy.gateway.Gateway>` mixes this in; it owns the state used here.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError

from proxy.approvals import Answer, ApprovalBroker, Remember
from proxy.audit import AuditError, AuditLog, CallDecision, CallRecord, Outcome, redact
from proxy.decide import Basis, Decision, Enforcer, ToolCall, Verdict, agent_message
from proxy.events import CallDecided, CallFinished, CallStarted, EventBus
from proxy.session import Session
from proxy.upstream import Upstream, UpstreamUnavailable

__all__ = ["INTERNAL_ERROR", "INVALID_PARAMS", "UPSTREAM_ERROR", "Send", "ToolCalls"]

log = logging.getLogger("proxy.gateway")

INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UPSTREAM_ERROR = -32000  # the SDK's "Connection closed"; used for "server unavailable" too

# Sends an allowed call's params upstream and returns the server's result.
Send = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


class ToolCalls:
    """The tools/call path of the gateway (a mixin: the gateway provides the state)."""

    enforcer: Enforcer
    approvals: ApprovalBroker
    audit: AuditLog
    bus: EventBus
    paused: bool
    _audit_failure: str | None
    _calls_in_flight: int
    _clock: Callable[[], float]
    _monotonic: Callable[[], float]

    async def _live_upstream(self, session: Session) -> Upstream:
        raise NotImplementedError

    async def _forward(
        self,
        ctx: ServerRequestContext[Any, Any],
        session: Session,
        upstream: Upstream,
        method: str,
        params: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def _tool_call(
        self,
        ctx: ServerRequestContext[Any, Any],
        session: Session,
        params: Mapping[str, Any],
    ) -> dict[str, Any]:
        async def send(forwarded: Mapping[str, Any]) -> dict[str, Any]:
            upstream = await self._live_upstream(session)
            return await self._forward(ctx, session, upstream, "tools/call", forwarded)

        return await self.decide_and_send(session, params, send)

    async def decide_and_send(
        self, session: Session, params: Mapping[str, Any], send: Send
    ) -> dict[str, Any]:
        """Decide the call ``params`` of ``session``; if it may go, ``send`` it upstream.

        Returns the result for the client (the server's, or a blocked call's ``isError``
        result); the record is in the audit log by then.

        Raises:
            MCPError: the answer is a JSON-RPC error (malformed call, hidden tool, server
                down, audit log failing).
            UpstreamUnavailable: the server could not be started.
        """
        self._calls_in_flight += 1
        try:
            return await self._decide_and_forward(session, params, send)
        finally:
            self._calls_in_flight -= 1

    async def _decide_and_forward(
        self, session: Session, params: Mapping[str, Any], send: Send
    ) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str) or not name:
            raise MCPError(code=INVALID_PARAMS, message="tools/call needs a tool name")
        arguments = params.get("arguments")
        arguments = {} if arguments is None else arguments
        call = ToolCall(session.server, name, arguments, session.client)
        trace = _Trace(call, self._clock(), self._monotonic())
        shown = redact(arguments) if isinstance(arguments, Mapping) else {"_not_an_object": True}
        self.bus.emit(CallStarted(trace.id, trace.time, call.client, call.server, call.tool, shown))

        problem = _malformed(arguments)
        if problem is not None:
            # Malformed whatever the policy says: refused, and logged as an attempt.
            bad = Decision(Verdict.DENY, Basis.ARGUMENTS, problem, None)
            await self._finish(
                trace.decided("arguments"),
                CallDecision.DENIED,
                bad,
                Outcome.PROTOCOL_ERROR,
                error=bad.reason,
            )
            raise MCPError(code=INVALID_PARAMS, message=f"tools/call {problem}")
        try:
            verdict, decision, basis = await self._decide(call, trace, session)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._finish(
                    trace.decided("cancelled"),
                    CallDecision.REFUSED,
                    _deny("the call was cancelled while waiting for approval"),
                    Outcome.CANCELLED,
                )
            raise
        trace = trace.decided(basis)
        if decision.hidden:
            await self._finish(
                trace, verdict, decision, Outcome.BLOCKED, error="hidden tool: answered as unknown"
            )
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {name}")
        if verdict in (CallDecision.DENIED, CallDecision.REFUSED):
            text = agent_message(call, decision, self._monotonic())
            result = {"content": [{"type": "text", "text": text}], "isError": True}
            await self._finish(trace, verdict, decision, Outcome.BLOCKED, size=_size(result))
            return result

        try:
            result = await send(params)
        except MCPError as exc:
            down = exc.error.code == UPSTREAM_ERROR
            message = (
                f"server {session.server!r} went down during the call: {exc.error.message}"
                if down
                else exc.error.message
            )
            if session.upstream is not None:
                message = session.upstream.scrub(message)
            await self._finish(
                trace,
                verdict,
                decision,
                Outcome.UPSTREAM_DOWN if down else Outcome.PROTOCOL_ERROR,
                error=message[:500],
            )
            if down:
                raise MCPError(code=UPSTREAM_ERROR, message=message) from None
            raise
        except UpstreamUnavailable as exc:
            await self._finish(trace, verdict, decision, Outcome.UPSTREAM_DOWN, error=str(exc))
            raise
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._finish(trace, verdict, decision, Outcome.CANCELLED)
            raise
        outcome = Outcome.TOOL_ERROR if result.get("isError") is True else Outcome.OK
        await self._finish(trace, verdict, decision, outcome, size=_size(result))
        return result

    async def _decide(
        self, call: ToolCall, trace: _Trace, session: Session
    ) -> tuple[CallDecision, Decision, str]:
        """The policy's decision, a person's answer where it asks for one, and what the
        audit log names as the basis."""
        if self._audit_failure is not None:
            reason = (
                f"Lockgate cannot write its audit log ({self._audit_failure}), so it "
                "lets no call through"
            )
            return CallDecision.DENIED, _deny(reason), "audit_unavailable"
        if self.paused:
            reason = "Lockgate is paused: every tool call is denied until a person resumes it"
            return CallDecision.DENIED, _deny(reason), "pause"
        decision = self.enforcer.decide(call)
        if decision.verdict is Verdict.ALLOW:
            return CallDecision.ALLOWED, decision, decision.basis.value
        if decision.verdict is Verdict.DENY:
            return CallDecision.DENIED, decision, decision.basis.value
        if call.tool in session.approved_tools:
            approved = self.enforcer.approve(call, decision)
            if approved.verdict is not Verdict.ALLOW:
                return CallDecision.DENIED, approved, approved.basis.value
            return (
                CallDecision.APPROVED,
                _reworded(approved, "approved by a person for this session"),
                "session",
            )
        result = await self.approvals.ask(call, trace.id, decision, group=session.id)
        if result.answer is Answer.APPROVED:
            approved = self.enforcer.approve(call, decision)
            if approved.verdict is not Verdict.ALLOW:
                return CallDecision.DENIED, approved, approved.basis.value
            if result.remember is Remember.SESSION:
                session.approved_tools.add(call.tool)
            return CallDecision.APPROVED, approved, "person"
        why = {
            Answer.REFUSED: "a person refused this call"
            + (f": {result.reason}" if result.reason else ""),
            Answer.TIMEOUT: f"nobody approved this call within {decision.approval_timeout:g} s",
            Answer.NO_APPROVER: "this call needs a person's approval, and no one is there to "
            "ask (Lockgate runs without the app or `lockgate approvals`)",
            Answer.CANCELLED: "the call was cancelled while waiting for approval",
            Answer.BUSY: "too many calls of this session are already waiting for a person; "
            "try again once they are answered",
        }[result.answer]
        refused = Decision(Verdict.DENY, decision.basis, why, decision.rule, source=decision.source)
        return CallDecision.REFUSED, refused, result.answer.value

    async def _finish(
        self,
        trace: _Trace,
        verdict: CallDecision,
        decision: Decision,
        outcome: Outcome,
        *,
        size: int | None = None,
        error: str | None = None,
    ) -> None:
        """Audit the call (before its answer leaves) and tell the listeners."""
        now = self._monotonic()
        duration = (now - trace.started) * 1000
        basis = trace.basis
        record = CallRecord(
            id=trace.id,
            time=trace.time,
            client=trace.call.client,
            server=trace.call.server,
            tool=trace.call.tool,
            arguments=trace.call.arguments if isinstance(trace.call.arguments, Mapping) else {},
            decision=verdict,
            basis=basis,
            rule=decision.rule,
            reason=decision.reason,
            outcome=outcome,
            duration_ms=round(duration, 3),
            result_size=size,
            error=error,
        )
        self.bus.emit(
            CallDecided(
                trace.id, self._clock(), verdict.value, basis, decision.rule, decision.reason
            )
        )
        try:
            with anyio.CancelScope(shield=True):
                await self.audit.write(record, alone=self._calls_in_flight == 1)
        except AuditError as exc:
            self._audit_failure = str(exc)
            log.error("audit log write failed; new calls are denied until it works: %s", exc)
            raise MCPError(
                code=INTERNAL_ERROR, message="Lockgate could not record this call in its audit log"
            ) from None
        self._audit_failure = None
        self.bus.emit(
            CallFinished(trace.id, self._clock(), outcome.value, round(duration, 3), size, error)
        )


@dataclass(frozen=True, slots=True)
class _Trace:
    """One tool call on its way through: when it came, and what decided it."""

    call: ToolCall
    time: float  # wall clock, for the log
    started: float  # monotonic, for the duration
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    basis: str | None = None

    def decided(self, basis: str) -> _Trace:
        return replace(self, basis=basis)


def _deny(reason: str) -> Decision:
    """A denial that comes from Lockgate's state (paused, audit down), not from a rule."""
    return Decision(Verdict.DENY, Basis.RULE, reason, None)


def _reworded(decision: Decision, reason: str) -> Decision:
    return replace(decision, reason=reason)


def _malformed(arguments: Any) -> str | None:
    """What is wrong with a call's arguments whatever the policy says, or None."""
    if not isinstance(arguments, Mapping):
        return "arguments must be an object"
    if not _all_finite(arguments):
        # 1e400 reads as infinity but would be sent on as null: the policy would decide
        # about other arguments than the server gets.
        return "arguments hold a number JSON cannot carry (infinity or NaN)"
    return None


def _all_finite(value: Any, depth: int = 0) -> bool:
    """No float in ``value`` is infinite or NaN (deep structures count as not finite)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if depth > 64:
        return False
    if isinstance(value, Mapping):
        return all(_all_finite(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return all(_all_finite(v, depth + 1) for v in value)
    return True


def _size(result: Mapping[str, Any]) -> int:
    return len(json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
