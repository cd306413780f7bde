"""The tools/call pipeline: decided by the policy (and a person, where it asks) before
anything goes upstream; in the audit log, committed, before it is sent (write-ahead), and
complete before its answer leaves.

A blocked call is answered here with a tool result marked ``isError`` that tells the
agent why; a hidden tool is answered like an unknown tool (-32602). Arguments that are
malformed whatever the policy says (not an object, numbers JSON cannot carry) are refused.

:class:`ToolCallPipeline` is given everything it uses (the enforcer, the approvals, the
audit log, the event bus, the clocks, and what refuses every call now); each front door's
route reaches it through :meth:`ToolCallPipeline.run`, with a ``send`` of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

import anyio
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR, INVALID_PARAMS

from proxy.audit.log import AuditError, AuditLog
from proxy.audit.records import CallDecision, CallRecord, Charge, Outcome
from proxy.audit.redact import redact, storable
from proxy.gateway.approvals import Answer, ApprovalBroker, Remember, SessionApproval
from proxy.gateway.events import CallDecided, CallFinished, CallStarted, EventBus
from proxy.gateway.secretscan import ScanOutcome, scan_result
from proxy.policy.decide import Basis, Decision, Enforcer, ToolCall, Verdict, agent_message
from proxy.policy.limits import CounterKey
from proxy.policy.model import SecretsMode
from proxy.upstream.connection import UpstreamUnavailable

__all__ = ["Caller", "Refusal", "Said", "Send", "ToolCallPipeline"]

log = logging.getLogger(__name__)

# The bases of a call a person was asked about and answered (or did not, in time, or it
# was cancelled while waiting): the audit log keeps how long it waited.
ANSWERED_BY_A_PERSON: Final = frozenset({"person", "refused", "timeout", "cancelled"})

# Sends an allowed call's params upstream and returns the server's result.
Send = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]
# Why Lockgate's own state refuses every call to a server now, as (basis, reason), or None.
Refusal = Callable[[str], "tuple[str, str] | None"]
# Why a call to one tool (server, tool) is held now (its pin), as (basis, reason), or None.
Held = Callable[[str, str], "tuple[str, str] | None"]
# results larger than this are scanned for secrets on a worker thread, off the loop (a
# scan costs up to half a millisecond a KiB: every other call would wait for it)
SCAN_ON_THREAD_BYTES = 8 * 1024


class Caller(Protocol):
    """What the pipeline needs of the session a call comes from (a
    :class:`~proxy.gateway.session.Session` is one)."""

    @property
    def id(self) -> str: ...  # its approvals are grouped by it

    @property
    def server(self) -> str: ...

    @property
    def client(self) -> str: ...

    @property
    def session_approvals(self) -> set[SessionApproval]: ...  # "allow for this session"

    @property
    def closed(self) -> bool: ...  # ended by the gateway: none of its calls may go on

    def scrub(self, text: str) -> str: ...  # without the secrets its upstreams know

    def secret_values(self) -> tuple[str, ...]: ...  # those secrets themselves

    async def why_down(self) -> str | None: ...  # why its server went away, if it did


@dataclass(frozen=True, slots=True)
class Said:
    """What a request says of itself that the log keeps and no decision rests on: the
    client program's own name and version (its ``clientInfo``: any program can claim
    any, so the policy goes by the token or the bridge's name) and the MCP version."""

    client_info: str | None = None
    protocol: str | None = None

    @classmethod
    def of(cls, info: Any, protocol: str | None) -> Said:
        """From a ``clientInfo`` object (``{"name", "version"}``), as ``"name version"``."""
        text = None
        if isinstance(info, Mapping) and isinstance(info.get("name"), str):
            version = info.get("version")
            text = f"{info['name']} {version}" if isinstance(version, str) else info["name"]
        return cls(text, protocol)


@dataclass(frozen=True, slots=True)
class AtTheDoor:
    """A caller known only by what its door saw: a message refused before a session read
    it (too large to read)."""

    server: str
    client: str
    id: str = ""
    session_approvals: set[SessionApproval] = field(default_factory=set)
    closed: bool = False

    def scrub(self, text: str) -> str:
        return text  # nothing of an upstream's has reached it

    def secret_values(self) -> tuple[str, ...]:
        return ()

    async def why_down(self) -> str | None:
        return None  # it has no server of its own


class ToolCallPipeline:
    """Every tools/call, from whichever door: decide, ask, record, send, record again."""

    def __init__(
        self,
        *,
        enforcer: Enforcer,
        approvals: ApprovalBroker,
        audit: AuditLog,
        bus: EventBus,
        refusal: Refusal,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        held: Held | None = None,
    ) -> None:
        self.enforcer = enforcer
        self.approvals = approvals
        self.audit = audit
        self.bus = bus
        self._server_refusal = refusal
        self._held = held
        self._clock = clock
        self._monotonic = monotonic
        # why the audit log refused the last write (None: the last one worked); shown in
        # the status, while each call that would go upstream is refused on its own
        self.audit_failure: str | None = None
        self._calls_in_flight = 0
        self._charges_pruned = -math.inf
        self._background: set[asyncio.Task[None]] = set()

    async def take_over(self) -> None:
        """Take over from the last run: its unanswered calls are marked interrupted, and
        its rate-limit charges count again.

        Raises:
            proxy.audit.log.AuditError: the audit log cannot be read or written.
        """
        interrupted = await asyncio.to_thread(self.audit.recover_interrupted)
        if interrupted:
            log.warning("%d calls of the last run were sent and never answered", interrupted)
        since = self.enforcer.now() - self._charge_horizon()
        charges = await asyncio.to_thread(self.audit.charges_since, since)
        self.enforcer.restore((CounterKey(c.counter, c.client), c.time) for c in charges)
        await self._prune_charges()

    async def aclose(self) -> None:
        """Wait for background work (pruning old charges) before the audit log closes."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def prune_soon(self) -> None:
        """Forget charges no limit of the (new) policy can count, in the background."""
        self._spawn(self._prune_charges())

    async def run(
        self,
        session: Caller,
        params: Mapping[str, Any],
        send: Send,
        *,
        said: Said | None = None,
    ) -> dict[str, Any]:
        """Decide the call ``params`` of ``session``; if it may go, record it, then
        ``send`` it upstream. ``said`` is what the request said of its client and its
        MCP version, kept in the log beside the call.

        Returns the result for the client (the server's, or a blocked call's ``isError``
        result). A call that goes upstream is in the audit log, committed, before it is
        sent; a blocked one is in it before its answer leaves.

        Raises:
            MCPError: the answer is a JSON-RPC error (malformed call, hidden tool, server
                down or answering with an error, audit log failing); its text is scrubbed
                of the session's secrets.
        """
        self._calls_in_flight += 1
        try:
            return await self._decide_and_forward(session, params, send, said or Said())
        finally:
            self._calls_in_flight -= 1

    async def refuse_too_large(self, session: Caller, tool: str, size: int, reason: str) -> None:
        """Record a ``tools/call`` refused for its size: never read whole, so never sent,
        and decided by no rule; its arguments are not kept, only their size. The listeners
        hear of it as of any call.

        Raises:
            MCPError: the record could not be committed.
        """
        shown = {"_lockgate": f"{size} bytes: too large to read, not kept"}
        call = ToolCall(session.server, storable(tool), shown, session.client)
        trace = _Trace(call, self._clock(), self._monotonic())
        self.bus.emit(CallStarted(trace.id, trace.time, call.client, call.server, call.tool, shown))
        refused = Decision(Verdict.DENY, Basis.ARGUMENTS, reason, None)
        await self._finish(
            session,
            trace.decided("size"),
            CallDecision.DENIED,
            refused,
            Outcome.PROTOCOL_ERROR,
            error=reason,
        )

    def _refusal_of(self, call: ToolCall) -> tuple[str, str] | None:
        """Why Lockgate's state refuses ``call`` now, whatever the policy says: its server
        (paused, off, removed, needs sign-in), or its tool's pin (held)."""
        refused = self._server_refusal(call.server)
        if refused is None and self._held is not None:
            refused = self._held(call.server, call.tool)
        return refused

    async def _decide_and_forward(
        self, session: Caller, params: Mapping[str, Any], send: Send, said: Said
    ) -> dict[str, Any]:
        name = params.get("name")
        arguments = params.get("arguments")
        arguments = {} if arguments is None else arguments
        tool = storable(name) if isinstance(name, str) else ""
        call = ToolCall(session.server, tool, arguments, session.client)
        trace = _Trace(call, self._clock(), self._monotonic(), said=said)
        shown = redact(arguments) if isinstance(arguments, Mapping) else {"_not_an_object": True}
        self.bus.emit(
            CallStarted(
                trace.id,
                trace.time,
                call.client,
                call.server,
                tool,
                shown,
                client_info=said.client_info,
                protocol=said.protocol,
            )
        )

        bad_name = _bad_name(name)
        problem = bad_name or _malformed(arguments)
        if problem is not None:
            # Malformed whatever the policy says: refused, and logged as an attempt.
            bad = Decision(Verdict.DENY, Basis.ARGUMENTS, problem, None)
            await self._finish(
                session,
                trace.decided("name" if bad_name else "arguments"),
                CallDecision.DENIED,
                bad,
                Outcome.PROTOCOL_ERROR,
                error=bad.reason,
            )
            raise MCPError(code=INVALID_PARAMS, message=f"tools/call {problem}")
        deciding = self._monotonic()
        try:
            verdict, decision, basis = await self._decide(call, trace, session)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._finish(
                    session,
                    trace.decided("cancelled"),
                    CallDecision.REFUSED,
                    _deny("the call was cancelled while waiting for approval"),
                    Outcome.CANCELLED,
                )
            raise
        trace = trace.decided(basis)
        if basis in ANSWERED_BY_A_PERSON:
            trace = replace(trace, waited=self._monotonic() - deciding)
        if decision.hidden:
            await self._finish(
                session,
                trace,
                verdict,
                decision,
                Outcome.BLOCKED,
                error="hidden tool: answered as unknown",
            )
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {tool}")
        if verdict in (CallDecision.DENIED, CallDecision.REFUSED):
            text = agent_message(call, decision, self.enforcer.now())
            result = _error_result(text)
            await self._finish(
                session, trace, verdict, decision, Outcome.BLOCKED, size=_size(result)
            )
            return result

        await self._begin(session, trace, verdict, decision)  # durable before it is sent
        timeout = self.enforcer.policy.timeout_of(call.server, call.tool)
        try:
            with anyio.move_on_after(timeout) as deadline:
                result = await send(params)
            if deadline.cancelled_caught:  # cancelled upstream as a client's cancel is
                text = (
                    f"Lockgate cancelled this call: it ran longer than the {timeout:g} s "
                    f"the policy allows {call.qualified}"
                )
                result = _error_result(text)
                await self._complete(
                    session, trace, decision, Outcome.TIMED_OUT, size=_size(result), error=text
                )
                return result
        except MCPError as exc:
            down = _connection_closed(exc)
            why = await session.why_down() if down else None
            message = session.scrub(
                f"server {session.server!r} went down during the call: {exc.error.message}"
                + (f" ({why})" if why else "")
                if down
                else exc.error.message
            )
            data = exc.error.data
            found: tuple[Mapping[str, str], ...] = ()
            if self.enforcer.policy.secrets_of(call.server, call.tool) is not SecretsMode.ALLOW:
                # an error's words are the server's too: its secrets redacted, whatever
                # the mode (nothing else of an error can be withheld or asked about)
                # (the keyring's own values are scrubbed at the door, as "[secret]")
                message, data, found = _redacted_error(message, data, ())
            # A server that answered with an error refused the request: it did not run,
            # so the charge goes back. One that went down may have run it: it stays.
            await self._complete(
                session,
                trace,
                decision,
                Outcome.UPSTREAM_DOWN if down else Outcome.PROTOCOL_ERROR,
                error=message[:500],
                refund=not down,
                findings=found,
                secrets="redacted" if found else None,
            )
            # (the front door's boundary scrubs what leaves, data included)
            raise MCPError(code=exc.error.code, message=message, data=data) from None
        except UpstreamUnavailable as exc:  # never reached the server: the charge goes back
            message = session.scrub(str(exc))
            await self._complete(
                session, trace, decision, Outcome.UPSTREAM_DOWN, error=message, refund=True
            )
            raise MCPError(code=CONNECTION_CLOSED, message=message) from None
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._complete(session, trace, decision, Outcome.CANCELLED)
            raise
        except Exception:
            log.exception("tools/call %s/%s failed", session.server, tool)
            await self._complete(
                session,
                trace,
                decision,
                Outcome.PROTOCOL_ERROR,
                error="Lockgate failed to handle the server's answer (see its log)",
            )
            raise
        outcome = Outcome.TOOL_ERROR if result.get("isError") is True else Outcome.OK
        size = _size(result)  # once: the scan goes by it, and the log keeps it
        try:
            inspected = await self._inspect(session, trace, decision, result, outcome, size=size)
        except anyio.get_cancelled_exc_class():  # while a person was asked, say
            with anyio.CancelScope(shield=True):
                await self._complete(session, trace, decision, Outcome.CANCELLED)
            raise
        await self._complete(
            session,
            trace,
            decision,
            inspected.outcome,
            size=size if inspected.result is result else _size(inspected.result),
            error=inspected.error,
            findings=inspected.findings,
            secrets=inspected.secrets,
        )
        return inspected.result

    async def _inspect(
        self,
        session: Caller,
        trace: _Trace,
        decision: Decision,
        result: dict[str, Any],
        outcome: Outcome,
        *,
        size: int,
    ) -> _Inspected:
        """The result (``size`` bytes as JSON) as the agent may have it: scanned for
        secrets, and redacted, withheld or asked about as the policy says (the rule's
        ``results``, else the policy's)."""
        policy = self.enforcer.policy
        mode = policy.secrets_of(trace.call.server, trace.call.tool)
        if mode is SecretsMode.ALLOW:
            return _Inspected(result, outcome)
        # a 2026 server's requestState is its own opaque token, given back to it as it is
        state = result.get("requestState")
        looked_at = {k: v for k, v in result.items() if k != "requestState"}
        scanned = await _scan(looked_at, session.secret_values(), size)
        found = tuple(f.as_dict() for f in scanned.findings)
        if not found and scanned.complete:
            return _Inspected(result, outcome)
        what = _what_was_found(scanned, found)
        if mode is SecretsMode.ASK:
            answer = await self._ask_about_result(session, trace, decision, what)
            if answer is Answer.APPROVED:
                # as the policy in force now says: a layer may have turned stricter meanwhile
                now = self.enforcer.policy.secrets_of(trace.call.server, trace.call.tool)
                if now in (SecretsMode.ASK, SecretsMode.ALLOW):
                    return _Inspected(result, outcome, findings=found, secrets="approved")
                mode = now  # redacted or withheld
        if mode is SecretsMode.REDACT and scanned.complete:
            assert scanned.redacted is not None
            redacted = (
                scanned.redacted if state is None else {**scanned.redacted, "requestState": state}
            )
            return _Inspected(redacted, outcome, findings=found, secrets="redacted")
        if mode is SecretsMode.ASK:
            why = {
                Answer.REFUSED: "a person refused to let it through",
                Answer.TIMEOUT: "nobody let it through in time",
                Answer.NO_APPROVER: "no one is there to ask (Lockgate runs without the app "
                "or `lockgate approvals`)",
                Answer.BUSY: "too many calls of this session are waiting for a person",
                Answer.WITHDRAWN: "the question was withdrawn before anyone let it through",
            }.get(answer, "it was not let through")
            text = (
                f"Lockgate withheld this tool's result: it held {what}, and {why}. "
                "Nothing of the result was kept or shown."
            )
            secrets = "refused" if answer is Answer.REFUSED else answer.value
        elif mode is SecretsMode.REDACT:  # what was not scanned cannot be redacted
            text = (
                f"Lockgate withheld this tool's result: it held {what}. A rule with "
                '"results": {"secrets": "allow"} lets this tool\'s results through unscanned.'
            )
            secrets = "too large to scan"
        else:
            text = (
                f"Lockgate withheld this tool's result: it held {what}, and the policy "
                "blocks results that hold secrets."
            )
            secrets = "blocked"
        return _Inspected(_error_result(text), Outcome.WITHHELD, text, found, secrets)

    async def inspect_task_result(self, session: Caller, result: dict[str, Any]) -> dict[str, Any]:
        """A tool's result that comes back outside its ``tools/call`` (``tasks/result`` of
        a task-augmented call): scanned as the policy's default says (which call made the
        task is the server's to know); "ask" withholds it, as there is no call to ask
        about any more."""
        mode = self.enforcer.policy.secrets_by_default
        if mode is SecretsMode.ALLOW:
            return result
        scanned = await _scan(result, session.secret_values(), _size(result))
        if not scanned.findings and scanned.complete:
            return result
        if mode is SecretsMode.REDACT and scanned.complete and scanned.redacted is not None:
            return scanned.redacted
        found = tuple(f.as_dict() for f in scanned.findings)
        return _error_result(
            f"Lockgate withheld this task's result: it held {_what_was_found(scanned, found)}."
        )

    async def _ask_about_result(
        self, session: Caller, trace: _Trace, decision: Decision, what: str
    ) -> Answer:
        """Ask a person whether a result that holds a secret may reach the agent. Only
        "once" counts: a later result is another secret."""
        rule = decision.source
        timeout = rule.approval_timeout if rule is not None else None
        question = Decision(
            Verdict.ASK,
            decision.basis,
            f"The result of this call holds {what}. Let it reach the agent?",
            decision.rule,
            approval_timeout=timeout or self.enforcer.default_approval_timeout,
            case=decision.case,
            source=rule,
        )
        asked = await self.approvals.ask(
            trace.call, trace.id, question, group=session.id, about="result"
        )
        return asked.answer  # withdrawn (paused, the server turned off): not let through

    async def _decide(
        self, call: ToolCall, trace: _Trace, session: Caller
    ) -> tuple[CallDecision, Decision, str]:
        """The policy's decision, a person's answer where it asks for one, and what the
        audit log names as the basis.

        A call that waited for a person is decided again when it is released, under the
        policy and state in force then; one whose prompt was withdrawn (the policy or the
        servers changed) is decided again from the start.

        "For this session" is remembered as the question the person answered (the tool,
        its rule and the ``when`` case that asked): a later call the policy asks about in
        other words (another case, another rule) is asked again. If the policy changed
        between the question and the answer so that it would ask in other words, the
        answer releases this call only.
        """
        while True:
            refusal = self._refusal_of(call) or _ended(session)
            if refusal is not None:
                return CallDecision.DENIED, _deny(refusal[1]), refusal[0]
            decision = self.enforcer.decide(call)
            if decision.verdict is Verdict.ALLOW:
                return CallDecision.ALLOWED, decision, decision.basis.value
            if decision.verdict is Verdict.DENY:
                return CallDecision.DENIED, decision, decision.basis.value
            if SessionApproval.of(call, decision) in session.session_approvals:
                released = self.enforcer.release(call)
                if released.verdict is not Verdict.ALLOW:
                    return CallDecision.DENIED, released, released.basis.value
                return (
                    CallDecision.APPROVED,
                    _reworded(released, "approved by a person for this session"),
                    "session",
                )
            result = await self.approvals.ask(call, trace.id, decision, group=session.id)
            if result.answer is Answer.WITHDRAWN:
                continue
            if result.answer is Answer.APPROVED:
                refusal = self._refusal_of(call) or _ended(session)
                if refusal is not None:
                    return CallDecision.DENIED, _deny(refusal[1]), refusal[0]
                released = self.enforcer.release(call)
                if released.verdict is not Verdict.ALLOW:
                    return CallDecision.DENIED, released, released.basis.value
                asked = SessionApproval.of(call, decision)
                if result.remember is Remember.SESSION and asked == SessionApproval.of(
                    call, released
                ):
                    session.session_approvals.add(asked)
                return CallDecision.APPROVED, released, "person"
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
            refused = Decision(
                Verdict.DENY,
                decision.basis,
                why,
                decision.rule,
                case=decision.case,
                source=decision.source,
                layer=decision.layer,
            )
            return CallDecision.REFUSED, refused, result.answer.value

    async def _begin(
        self, session: Caller, trace: _Trace, verdict: CallDecision, decision: Decision
    ) -> None:
        """Write the call's record, and the charges it makes, ahead of sending it.

        Raises:
            MCPError: the record could not be committed; the charges are given back and
                the call must not be sent.
        """
        charges = [
            Charge(key.counter, key.client, decision.charged_at)
            for key in decision.charges
            if decision.charged_at is not None
        ]
        record = self._record(session, trace, verdict, decision, Outcome.PENDING)
        try:
            with anyio.CancelScope(shield=True):
                await self.audit.begin(record, charges, alone=self._calls_in_flight == 1)
        except AuditError as exc:
            self.enforcer.refund(decision)
            self._audit_failed(exc)
            reason = (
                "Lockgate could not record this call in its audit log, so it did not send "
                f"it: {exc}"
            )
            now = self._clock()
            self.bus.emit(CallDecided(trace.id, now, "denied", "audit_unavailable", None, reason))
            self.bus.emit(CallFinished(trace.id, now, Outcome.BLOCKED.value, None, None, reason))
            raise MCPError(code=INTERNAL_ERROR, message=reason) from None
        self.audit_failure = None
        self.prune_charges_now_and_then()
        self._decided(trace, verdict, decision)

    async def _complete(
        self,
        session: Caller,
        trace: _Trace,
        decision: Decision,
        outcome: Outcome,
        *,
        size: int | None = None,
        error: str | None = None,
        refund: bool = False,
        findings: tuple[Mapping[str, str], ...] = (),
        secrets: str | None = None,
    ) -> None:
        """Complete the record :meth:`_begin` wrote. The call has run (or failed) by now,
        so a failure here is logged, not raised: the record stays ``pending``."""
        duration = round((self._monotonic() - trace.started) * 1000, 3)
        error = None if error is None else session.scrub(error)
        if refund:
            self.enforcer.refund(decision)
        try:
            with anyio.CancelScope(shield=True):
                await self.audit.finish(
                    trace.id,
                    outcome,
                    duration_ms=duration,
                    result_size=size,
                    error=error,
                    refund=refund,
                    alone=self._calls_in_flight == 1,
                    findings=findings,
                    secrets=secrets,
                )
        except AuditError as exc:
            self._audit_failed(exc)
        self.bus.emit(
            CallFinished(
                trace.id,
                self._clock(),
                outcome.value,
                duration,
                size,
                error,
                findings=findings,
                secrets=secrets,
            )
        )

    async def _finish(
        self,
        session: Caller,
        trace: _Trace,
        verdict: CallDecision,
        decision: Decision,
        outcome: Outcome,
        *,
        size: int | None = None,
        error: str | None = None,
    ) -> None:
        """Audit a call that was not sent (before its answer leaves) and tell the listeners.

        Raises:
            MCPError: the record could not be committed.
        """
        error = None if error is None else session.scrub(error)
        record = self._record(session, trace, verdict, decision, outcome, size=size, error=error)
        self._decided(trace, verdict, decision)
        try:
            with anyio.CancelScope(shield=True):
                await self.audit.write(record, alone=self._calls_in_flight == 1)
        except AuditError as exc:
            self._audit_failed(exc)
            reason = f"Lockgate could not record this call in its audit log: {exc}"
            self.bus.emit(CallFinished(trace.id, self._clock(), outcome.value, None, size, reason))
            raise MCPError(code=INTERNAL_ERROR, message=reason) from None
        self.audit_failure = None
        self.bus.emit(
            CallFinished(trace.id, self._clock(), outcome.value, record.duration_ms, size, error)
        )

    def _decided(self, trace: _Trace, verdict: CallDecision, decision: Decision) -> None:
        """Tell the listeners how the call was decided (the app's row shows it)."""
        self.bus.emit(
            CallDecided(
                trace.id,
                self._clock(),
                verdict.value,
                trace.basis,
                decision.rule,
                decision.reason,
                case=decision.case,
                layer=decision.layer,
            )
        )

    def _record(
        self,
        session: Caller,
        trace: _Trace,
        verdict: CallDecision,
        decision: Decision,
        outcome: Outcome,
        *,
        size: int | None = None,
        error: str | None = None,
    ) -> CallRecord:
        call = trace.call
        return CallRecord(
            id=trace.id,
            time=trace.time,
            client=call.client,
            server=call.server,
            tool=call.tool,
            arguments=call.arguments if isinstance(call.arguments, Mapping) else {},
            decision=verdict,
            basis=trace.basis,
            rule=decision.rule,
            case=decision.case,
            reason=session.scrub(decision.reason),
            outcome=outcome,
            duration_ms=round((self._monotonic() - trace.started) * 1000, 3),
            result_size=size,
            error=error,
            client_info=trace.said.client_info,
            protocol=trace.said.protocol,
            waited_ms=None if trace.waited is None else round(trace.waited * 1000, 3),
            layer=decision.layer,
        )

    def _charge_horizon(self) -> float:
        """How far back rate-limit charges are kept: the longest window of the policy in
        force, and at least a day (a broken policy.json at start must not forget them)."""
        windows = [limit.window for rule in self.enforcer.policy.all_rules for limit in rule.limits]
        return max([KEEP_CHARGES, *windows])

    async def _prune_charges(self) -> None:
        self._charges_pruned = self._monotonic()
        try:
            await self.audit.prune_charges(self.enforcer.now() - self._charge_horizon())
        except AuditError as exc:
            log.warning("could not prune old rate-limit charges: %s", exc)

    def prune_charges_now_and_then(self) -> None:
        """Forget charges no limit can count any more, at most once an hour."""
        if self._monotonic() - self._charges_pruned >= 3600:
            self._charges_pruned = self._monotonic()
            self._spawn(self._prune_charges())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _audit_failed(self, exc: AuditError) -> None:
        self.audit_failure = str(exc)
        log.error("audit log write failed; calls are refused until it works: %s", exc)


@dataclass(frozen=True, slots=True)
class _Inspected:
    """A result after its inspection: what the agent gets, and what the log keeps."""

    result: dict[str, Any]
    outcome: Outcome
    error: str | None = None
    findings: tuple[Mapping[str, str], ...] = ()
    secrets: str | None = None  # what was done: redacted, blocked, approved, refused, ...


async def _scan(result: Mapping[str, Any], known: tuple[str, ...], size: int) -> ScanOutcome:
    """The result (``size`` bytes as JSON) scanned for secrets (``known``: those Lockgate
    gave its server); a large one on a worker thread, so the loop (every other call) does
    not wait for it."""
    if size > SCAN_ON_THREAD_BYTES:
        return await asyncio.to_thread(scan_result, result, known)
    return scan_result(result, known)


def _redacted_error(
    message: str, data: Any, known: tuple[str, ...]
) -> tuple[str, Any, tuple[Mapping[str, str], ...]]:
    """A server's error message and data without the secrets in them, and what was found."""
    scanned = scan_result({"message": message, "data": data}, known)
    if scanned.redacted is None:
        return message, data, ()
    redacted = scanned.redacted
    text = redacted.get("message")
    found = tuple(f.as_dict() for f in scanned.findings)
    return (text if isinstance(text, str) else message), redacted.get("data"), found


def _error_result(text: str) -> dict[str, Any]:
    """A tool result that tells the agent, as an error, why it got no other."""
    return {"content": [{"type": "text", "text": text}], "isError": True}


def _what_was_found(scanned: ScanOutcome, found: tuple[Mapping[str, str], ...]) -> str:
    """What a result held, for the agent and the person: ``what looks like a secret: ...``,
    or that it could not be scanned whole."""
    if scanned.complete:
        return "what looks like " + _findings_text(found)
    what = "more than Lockgate can scan whole for secrets (too large or too deep)"
    return what + (", and " + _findings_text(found) if found else "")


def _findings_text(found: tuple[Mapping[str, str], ...]) -> str:
    """``an AWS Access Key (content[0].text)`` for one, ``secrets: a, b (and 3 more)``."""
    parts = [f"{f['kind']} ({f['where']})" for f in found[:3]]
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    if len(found) == 1:
        return f"a secret: {parts[0]}"
    return "secrets: " + ", ".join(parts) + more


@dataclass(frozen=True, slots=True)
class _Trace:
    """One tool call on its way through: when it came, and what decided it."""

    call: ToolCall
    time: float  # wall clock, for the log
    started: float  # monotonic, for the duration
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    basis: str | None = None
    said: Said = field(default_factory=Said)
    waited: float | None = None  # seconds waiting for a person's answer; None: not asked

    def decided(self, basis: str) -> _Trace:
        return replace(self, basis=basis)


def _ended(session: Caller) -> tuple[str, str] | None:
    """A session the gateway ended (its client's token revoked, say): its calls stop."""
    if session.closed:
        return "session_ended", "this client's session was ended by Lockgate"
    return None


def _deny(reason: str) -> Decision:
    """A denial that comes from Lockgate's state (paused, a server removed), not a rule."""
    return Decision(Verdict.DENY, Basis.STATE, reason, None)


def _reworded(decision: Decision, reason: str) -> Decision:
    return replace(decision, reason=reason)


KEEP_CHARGES = 86400.0  # rate-limit charges are kept at least this long (seconds)
MAX_TOOL_NAME = 1024  # far past any real tool's name (the spec suggests 128 at most)


def _bad_name(name: Any) -> str | None:
    """What is wrong with a call's tool name whatever the policy says, or None.

    A name is what the policy matches and the log and the person see: text a log cannot
    store (a lone surrogate) or a screen cannot show plainly (control characters) is
    refused before anything else happens, identically on every front door.
    """
    if not isinstance(name, str) or not name:
        return "needs a tool name"
    if storable(name) != name:
        return "tool name holds a lone surrogate, which is not text (UTF-8 cannot carry it)"
    if any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in name):
        return "tool name holds control characters"
    if len(name) > MAX_TOOL_NAME:
        return f"tool name is longer than {MAX_TOOL_NAME} characters"
    return None


def _connection_closed(exc: MCPError) -> bool:
    """Whether the server went away mid-call (the JSON-RPC engines' own -32000 "Connection
    closed"), rather than answering with an error: -32000 is also the first code servers
    use for errors of their own ("file not found"), and those calls did not run."""
    return exc.error.code == CONNECTION_CLOSED and exc.error.message == "Connection closed"


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
    """Bytes of the answer as JSON text (never raises: a result is what a server sent)."""
    try:
        return len(json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError, RecursionError):  # not text (a lone surrogate), ...
        return len(json.dumps(result, separators=(",", ":"), default=str))
