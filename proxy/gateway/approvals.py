"""Asking a person: calls under ``ask`` wait here until someone answers or time runs out.

A pending call is a flow that can be intercepted (mitmproxy's model): the call's task
awaits a future; an approver (the tray app, ``lockgate approvals`` in a terminal)
resolves it. Each pending approval belongs to exactly one call and is bound to its exact
arguments: its ``digest`` covers server, tool and arguments, and an answer that names a
digest must match it, so an approver can never approve something other than what it
was shown.

Fail closed: with no approver attached, ``ask`` is refused at once (nobody could answer);
an unanswered request is refused when its timeout runs out; a call whose client gave up
(cancelled) leaves the queue. When what the call was asked under changes (the policy, the
servers, a pause), the gateway *withdraws* it: the prompt goes, with the reason, and the
waiting call is decided again from the start.

A person's "for this session" (:class:`Remember.SESSION`) releases later calls of the same
session only when the policy asks the same question about them
(:class:`SessionApproval`): the same tool, under the same rule and the same ``when`` case
of it. A call that a case singles out for asking (some arguments, say) is asked about
again, whatever the person allowed of the rule's other calls.

All methods run on the gateway's event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from proxy.gateway.events import ApprovalAnswered, ApprovalPending, Event
from proxy.policy.decide import Decision, ToolCall

__all__ = [
    "Answer",
    "ApprovalBroker",
    "ApprovalResult",
    "PendingApproval",
    "Remember",
    "SessionApproval",
    "call_digest",
]


class Answer(StrEnum):
    APPROVED = "approved"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    NO_APPROVER = "no_approver"
    CANCELLED = "cancelled"
    BUSY = "busy"  # too many calls of the same session already waiting
    WITHDRAWN = "withdrawn"  # what it was asked under changed: decide the call again


class Remember(StrEnum):
    """How far an approval reaches; the gateway and the app act on it."""

    ONCE = "once"  # this call only
    SESSION = "session"  # this tool, as the policy asked, for the rest of this client session
    ALWAYS = "always"  # the app writes an allow rule to policy.json


@dataclass(frozen=True, slots=True)
class SessionApproval:
    """What "allow for this session" allowed: calls of ``tool`` that the policy asks about
    under ``rule`` and its ``when`` case ``case`` (None: the rule's own action, or the
    policy's default) of the same ``layer``, that case as it was written then (an edit of
    the case, or another case put before it, is another question)."""

    tool: str
    rule: str | None
    case: int | None
    case_text: str | None  # the case's conditions and action, canonical JSON
    # the layer that asked ("team", or None: policy.json): a rule of the same pattern in
    # the other layer is another question, and so is the other layer's default
    layer: str | None = None

    @classmethod
    def of(cls, call: ToolCall, decision: Decision) -> SessionApproval:
        """The question ``decision`` (an ``ask``) asks about ``call``."""
        text = None
        rule = decision.source
        if decision.case is not None and rule is not None and decision.case < len(rule.cases):
            case = rule.cases[decision.case]
            clients = None if case.clients is None else sorted(case.clients)
            text = json.dumps(
                [clients, case.arguments, case.action.value],
                sort_keys=True,
                separators=(",", ":"),
                default=str,
            )
        return cls(call.tool, decision.rule, decision.case, text, decision.layer)


@dataclass(frozen=True, slots=True)
class ApprovalResult:
    answer: Answer
    reason: str | None = None
    remember: Remember = Remember.ONCE

    @property
    def approved(self) -> bool:
        return self.answer is Answer.APPROVED


def call_digest(call: ToolCall) -> str:
    """A short hash of server, tool and exact arguments (canonical JSON)."""
    canonical = json.dumps(
        [call.server, call.tool, call.arguments],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """One call waiting for a person."""

    id: str
    call_id: str
    call: ToolCall
    decision: Decision
    created: float
    deadline: float
    digest: str
    group: str = ""
    about: str = "call"  # "call": may it be sent; "result": may its result reach the agent


class ApprovalBroker:
    """The queue of calls waiting for a person, and the approvers who may answer them."""

    def __init__(
        self, emit: Callable[[Event], None], clock: Callable[[], float] = time.time
    ) -> None:
        self._emit = emit
        self._clock = clock
        self._approvers = 0
        self.max_per_group = 8
        self._pending: dict[str, tuple[PendingApproval, asyncio.Future[ApprovalResult]]] = {}

    @property
    def has_approver(self) -> bool:
        return self._approvers > 0

    @property
    def approvers(self) -> int:
        """How many approvers are attached now."""
        return self._approvers

    def attach(self) -> Callable[[], None]:
        """Register an approver; returns the way to detach it (idempotent).

        When the last approver leaves, pending calls stay until their timeout: a tray
        app that restarts can still answer them.
        """
        self._approvers += 1
        attached = True

        def detach() -> None:
            nonlocal attached
            if attached:
                attached = False
                self._approvers -= 1

        return detach

    def pending(self) -> list[PendingApproval]:
        """Calls waiting now, oldest first."""
        return [p for p, _ in self._pending.values()]

    async def ask(
        self,
        call: ToolCall,
        call_id: str,
        decision: Decision,
        *,
        group: str = "",
        about: str = "call",
    ) -> ApprovalResult:
        """Wait for a person's answer to ``call`` (decided ``ask``), at most its timeout.
        ``about`` says what is asked: whether the call may be sent (``"call"``), or
        whether its result, which holds a secret, may reach the agent (``"result"``).

        ``group`` (the client session) may have at most :attr:`max_per_group` calls
        waiting: an agent cannot bury the person in requests.

        Raises:
            asyncio.CancelledError: the caller was cancelled (the client gave up); the
                request leaves the queue and approvers are told.
        """
        if not self.has_approver:
            return ApprovalResult(Answer.NO_APPROVER)
        if sum(1 for p, _ in self._pending.values() if p.group == group) >= self.max_per_group:
            return ApprovalResult(Answer.BUSY)
        now = self._clock()
        timeout = decision.approval_timeout or 0.0
        pending = PendingApproval(
            id=uuid.uuid4().hex,
            call_id=call_id,
            call=call,
            decision=decision,
            created=now,
            deadline=now + timeout,
            digest=call_digest(call),
            group=group,
            about=about,
        )
        future: asyncio.Future[ApprovalResult] = asyncio.get_running_loop().create_future()
        self._pending[pending.id] = (pending, future)
        self._emit(
            ApprovalPending(
                pending.id,
                call_id,
                now,
                pending.deadline,
                call.client,
                call.server,
                call.tool,
                call.arguments,
                decision.rule,
                decision.reason,
                case=decision.case,
                about=about,
            )
        )
        try:
            result = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            result = ApprovalResult(Answer.TIMEOUT)
            self._finish(pending, result)
        except asyncio.CancelledError:
            self._finish(pending, ApprovalResult(Answer.CANCELLED))
            raise
        return result

    def answer(
        self,
        approval_id: str,
        approved: bool,
        *,
        reason: str | None = None,
        remember: Remember = Remember.ONCE,
        digest: str | None = None,
    ) -> bool:
        """Answer a pending approval; False if it is not pending (answered, timed out,
        cancelled) or ``digest`` does not match what it is about."""
        entry = self._pending.get(approval_id)
        if entry is None:
            return False
        pending, future = entry
        if digest is not None and digest != pending.digest:
            return False
        result = ApprovalResult(
            Answer.APPROVED if approved else Answer.REFUSED,
            reason,
            remember if approved else Remember.ONCE,
        )
        self._finish(pending, result)
        if not future.done():
            future.set_result(result)
        return True

    def cancel_all(self, reason: str) -> None:
        """Refuse everything pending (the gateway is stopping)."""
        for approval_id in list(self._pending):
            self.answer(approval_id, False, reason=reason)

    def withdraw(self, approval_id: str, reason: str) -> bool:
        """Take a pending approval back: the prompt goes (approvers hear ``reason``) and
        the waiting call is decided again. False if it is not pending."""
        entry = self._pending.get(approval_id)
        if entry is None:
            return False
        pending, future = entry
        result = ApprovalResult(Answer.WITHDRAWN, reason)
        self._finish(pending, result)
        if not future.done():
            future.set_result(result)
        return True

    def _finish(self, pending: PendingApproval, result: ApprovalResult) -> None:
        if self._pending.pop(pending.id, None) is None:
            return
        self._emit(
            ApprovalAnswered(
                pending.id, pending.call_id, self._clock(), result.answer.value, result.reason
            )
        )
