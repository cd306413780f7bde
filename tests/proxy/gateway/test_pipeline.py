"""The tools/call pipeline on its own: a real enforcer, approvals broker, event bus and
SQLite audit log, clocks injected, and a ``send`` of the test's own.

``send`` is where the pipeline ends and a front door's upstream begins: here it is a
function that records what it was given and answers as a server would (or fails as one
does). That is the pipeline's real boundary, not a stand-in for part of it; the same calls
against real servers, through both doors, are in tests/system and tests/contract.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR, INVALID_PARAMS

from proxy.audit.log import AuditLog
from proxy.audit.records import Outcome
from proxy.gateway.approvals import ApprovalBroker, PendingApproval, Remember, SessionApproval
from proxy.gateway.events import (
    ApprovalPending,
    CallDecided,
    CallFinished,
    CallStarted,
    Event,
    EventBus,
)
from proxy.gateway.pipeline import ToolCallPipeline
from proxy.policy.decide import Enforcer
from proxy.policy.model import parse_policy
from proxy.upstream.connection import UpstreamUnavailable
from tests.support.waiting import eventually

POLICY = """{"version": "1", "default": "allow", "tools": {
  "delete_file": {"action": "deny", "reason": "not on this laptop"},
  "limited": {"action": "allow",
              "limits": [{"counter": "l", "window": 3600, "max": 1, "scope": "global"}]},
  "ask_me": {"action": "ask", "approval": {"timeout": 30}}
}}"""


@dataclass
class Caller:
    """The session a call comes from: who, to which server, with which secrets."""

    server: str = "fs"
    client: str = "agent"
    id: str = "session-1"
    session_approvals: set[SessionApproval] = field(default_factory=set)
    closed: bool = False
    secret: str = "s3cr3t"

    def scrub(self, text: str) -> str:
        return text.replace(self.secret, "[secret]")

    def secret_values(self) -> tuple[str, ...]:
        return (self.secret,)

    async def why_down(self) -> str | None:
        return None  # its "server" is the test's send function


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Pipe:
    pipeline: ToolCallPipeline
    audit: AuditLog
    events: list[Event]
    refusals: dict[str, tuple[str, str]]
    approvals: ApprovalBroker


@pytest.fixture
def pipe(tmp_path: Path) -> Any:
    clock = Clock()
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    audit = AuditLog(tmp_path / "audit.db")
    refusals: dict[str, tuple[str, str]] = {}
    approvals = ApprovalBroker(bus.emit, clock)
    pipeline = ToolCallPipeline(
        enforcer=Enforcer(parse_policy(POLICY), clock),
        approvals=approvals,
        audit=audit,
        bus=bus,
        refusal=refusals.get,
        clock=clock,
        monotonic=clock,
    )
    yield Pipe(pipeline, audit, events, refusals, approvals)
    audit.close()


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


async def test_a_call_is_recorded_and_committed_before_it_is_sent(pipe: Pipe) -> None:
    seen_in_log: list[str] = []

    async def send(params: Mapping[str, Any]) -> dict[str, Any]:
        (row,) = pipe.audit.query(limit=5)  # another reader sees it: it is committed
        seen_in_log.append(row.outcome.value)
        return {"content": [{"type": "text", "text": f"read {params['arguments']['path']}"}]}

    result = await pipe.pipeline.run(Caller(), call("read_file", path="/tmp/a"), send)
    assert result["content"][0]["text"] == "read /tmp/a"
    assert seen_in_log == ["pending"]
    (row,) = pipe.audit.query(limit=5)
    assert (row.tool, row.decision.value, row.outcome) == ("read_file", "allowed", Outcome.OK)
    kinds = [type(e) for e in pipe.events]
    assert kinds == [CallStarted, CallDecided, CallFinished]


async def test_a_denied_call_is_never_sent_and_tells_the_agent_why(pipe: Pipe) -> None:
    sent: list[Mapping[str, Any]] = []

    async def send(params: Mapping[str, Any]) -> dict[str, Any]:
        sent.append(params)
        return {}

    result = await pipe.pipeline.run(Caller(), call("delete_file", path="/"), send)
    assert result["isError"] is True
    assert "not on this laptop" in result["content"][0]["text"]
    assert sent == []
    (row,) = pipe.audit.query(limit=5)
    assert (row.decision.value, row.outcome) == ("denied", Outcome.BLOCKED)


async def test_a_standing_refusal_denies_before_the_policy_is_asked(pipe: Pipe) -> None:
    pipe.refusals["fs"] = ("pause", "Lockgate is paused")

    async def send(params: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError("a paused call was sent")

    result = await pipe.pipeline.run(Caller(), call("read_file"), send)
    assert "Lockgate is paused" in result["content"][0]["text"]
    (row,) = pipe.audit.query(limit=5)
    assert row.basis == "pause"


async def test_a_call_whose_record_cannot_be_written_is_not_sent(pipe: Pipe) -> None:
    pipe.audit.close()

    async def send(params: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError("sent with no record")

    with pytest.raises(MCPError) as caught:
        await pipe.pipeline.run(Caller(), call("read_file"), send)
    assert caught.value.error.code == INTERNAL_ERROR
    assert "did not send it" in caught.value.error.message
    assert pipe.pipeline.audit_failure is not None
    finished = [e for e in pipe.events if isinstance(e, CallFinished)]
    assert [e.outcome for e in finished] == ["blocked"]  # the app's row ends too


async def test_a_malformed_call_is_refused_whatever_the_policy(pipe: Pipe) -> None:
    async def send(params: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError("a malformed call was sent")

    malformed: list[dict[str, Any]] = [{"name": "read_file", "arguments": [1]}, {"arguments": {}}]
    for params in malformed:
        with pytest.raises(MCPError) as caught:
            await pipe.pipeline.run(Caller(), params, send)
        assert caught.value.error.code == INVALID_PARAMS
    assert [r.outcome for r in pipe.audit.query(limit=5)] == [Outcome.PROTOCOL_ERROR] * 2


async def test_a_server_error_gives_the_charge_back_a_drop_mid_call_does_not(pipe: Pipe) -> None:
    async def refuses(params: Mapping[str, Any]) -> dict[str, Any]:
        raise MCPError(code=INVALID_PARAMS, message="no such file")

    async def drops(params: Mapping[str, Any]) -> dict[str, Any]:
        raise MCPError(code=CONNECTION_CLOSED, message="Connection closed")

    async def answers(params: Mapping[str, Any]) -> dict[str, Any]:
        return {"content": []}

    with pytest.raises(MCPError, match="no such file"):
        await pipe.pipeline.run(Caller(), call("limited"), refuses)
    with pytest.raises(MCPError, match="went down during the call"):
        await pipe.pipeline.run(Caller(), call("limited"), drops)  # the one allowed: kept
    over = await pipe.pipeline.run(Caller(), call("limited"), answers)
    assert over["isError"] is True
    outcomes = [r.outcome for r in reversed(pipe.audit.query(limit=5))]
    assert outcomes == [Outcome.PROTOCOL_ERROR, Outcome.UPSTREAM_DOWN, Outcome.BLOCKED]


async def test_an_unreachable_server_gives_the_charge_back(pipe: Pipe) -> None:
    async def unreachable(params: Mapping[str, Any]) -> dict[str, Any]:
        raise UpstreamUnavailable("server 'fs' is down: s3cr3t in its error")

    async def answers(params: Mapping[str, Any]) -> dict[str, Any]:
        return {"content": []}

    with pytest.raises(MCPError) as caught:
        await pipe.pipeline.run(Caller(), call("limited"), unreachable)
    assert caught.value.error.code == CONNECTION_CLOSED
    assert "s3cr3t" not in caught.value.error.message  # scrubbed
    assert "isError" not in await pipe.pipeline.run(Caller(), call("limited"), answers)


async def test_a_call_that_asks_waits_for_a_person_and_goes_once_approved(pipe: Pipe) -> None:
    sent: list[str] = []

    async def send(params: Mapping[str, Any]) -> dict[str, Any]:
        sent.append(params["name"])
        return {"content": []}

    pipe.approvals.attach()
    task = asyncio.create_task(pipe.pipeline.run(Caller(), call("ask_me"), send))
    (pending,) = await eventually(pipe.approvals.pending, "the call to wait")
    assert sent == []
    assert pipe.approvals.answer(pending.id, True, digest=pending.digest)
    assert "isError" not in await task
    assert sent == ["ask_me"]
    (row,) = pipe.audit.query(limit=5)
    assert (row.decision.value, row.basis) == ("approved", "person")


async def test_a_call_cancelled_while_it_waits_is_recorded_as_cancelled(pipe: Pipe) -> None:
    async def send(params: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError("a cancelled call was sent")

    pipe.approvals.attach()
    task = asyncio.create_task(pipe.pipeline.run(Caller(), call("ask_me"), send))
    await eventually(pipe.approvals.pending, "the call to wait")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (row,) = pipe.audit.query(limit=5)
    assert row.outcome is Outcome.CANCELLED
    assert not pipe.approvals.pending()


# -- the "when" case that decided, and what "for this session" covers ----------------------

PUSH_CASES = """{"version": "1", "default": "allow", "tools": {
  "push": {"action": "allow", "when": [
    {"clients": ["ci"], "action": "deny"},
    {"arguments": {"required": ["force"]}, "action": "deny", "reason": "no force pushes"},
    {"arguments": {"required": ["ask"]}, "action": "ask"}
  ]}
}}"""


async def answers(params: Mapping[str, Any]) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": f"ran {params['name']}"}]}


async def test_the_case_that_decided_is_in_the_record_and_the_events(pipe: Pipe) -> None:
    pipe.pipeline.enforcer.swap_policy(parse_policy(PUSH_CASES))
    await pipe.pipeline.run(Caller(), call("push"), answers)
    await pipe.pipeline.run(Caller(), call("push", force=True), answers)
    await pipe.pipeline.run(Caller(), call("push", ask=1), answers)  # nobody to ask
    pipe.approvals.attach()
    task = asyncio.create_task(pipe.pipeline.run(Caller(), call("push", ask=2), answers))
    (pending,) = await eventually(pipe.approvals.pending, "the call to wait")
    assert pipe.approvals.answer(pending.id, True, digest=pending.digest)
    assert "isError" not in await task

    rows = list(reversed(pipe.audit.query(limit=10)))  # read back from SQLite
    assert [(r.decision.value, r.basis, r.rule, r.case) for r in rows] == [
        ("allowed", "rule", "push", None),
        ("denied", "rule", "push", 1),
        ("refused", "no_approver", "push", 2),
        ("approved", "person", "push", 2),
    ]
    decided = [(e.decision, e.case) for e in pipe.events if isinstance(e, CallDecided)]
    assert decided == [("allowed", None), ("denied", 1), ("refused", 2), ("approved", 2)]
    (asked,) = [e for e in pipe.events if isinstance(e, ApprovalPending)]
    assert (asked.rule, asked.case) == ("push", 2)


PUSH_TO_MAIN_ASKS = """{"version": "1", "default": "allow", "tools": {
  "push": {"action": "ask", "when": [
    {"arguments": {"properties": {"branch": {"const": "main"}}}, "action": "ask",
     "reason": "a push to main"}
  ]}
}}"""
PUSH_TO_MAIN_ASKS_EDITED = PUSH_TO_MAIN_ASKS.replace('{"const": "main"}', '{"pattern": "^ma"}')


@dataclass
class Asked:
    """A push waiting for a person: its approval, and the call's task."""

    pending: PendingApproval
    task: asyncio.Task[dict[str, Any]]

    @property
    def case(self) -> int | None:
        return self.pending.decision.case

    async def approved(self, pipe: Pipe, remember: Remember) -> None:
        pending = self.pending
        assert pipe.approvals.answer(pending.id, True, digest=pending.digest, remember=remember)
        assert "isError" not in await self.task


async def asked_or_released(pipe: Pipe, caller: Caller, **arguments: Any) -> Asked | None:
    """Start a push; returns what it waits for, or None if it went without asking."""
    task = asyncio.create_task(pipe.pipeline.run(caller, call("push", **arguments), answers))
    await eventually(lambda: task.done() or pipe.approvals.pending(), "an answer or a question")
    if task.done():
        assert "isError" not in task.result()
        return None
    (pending,) = pipe.approvals.pending()
    return Asked(pending, task)


async def asked(pipe: Pipe, caller: Caller, **arguments: Any) -> Asked:
    """Start a push that must wait for a person."""
    waiting = await asked_or_released(pipe, caller, **arguments)
    assert waiting is not None, "it went without asking"
    return waiting


async def test_for_this_session_covers_only_the_question_the_person_answered(pipe: Pipe) -> None:
    """A person who allowed the rule's own question for the session is asked again about
    a call that a case asks about; and again about the case's calls once it was edited."""
    pipe.pipeline.enforcer.swap_policy(parse_policy(PUSH_TO_MAIN_ASKS))
    pipe.approvals.attach()
    session = Caller()
    first = await asked(pipe, session, branch="scratch/a")
    assert first.case is None
    await first.approved(pipe, Remember.SESSION)
    assert await asked_or_released(pipe, session, branch="scratch/b") is None  # as allowed

    to_main = await asked(pipe, session, branch="main")  # the case asks
    assert to_main.case == 0
    await to_main.approved(pipe, Remember.SESSION)
    assert await asked_or_released(pipe, session, branch="main") is None

    pipe.pipeline.enforcer.swap_policy(parse_policy(PUSH_TO_MAIN_ASKS_EDITED))
    again = await asked(pipe, session, branch="main")  # the case is not the same
    assert again.case == 0
    await again.approved(pipe, Remember.ONCE)
    assert await asked_or_released(pipe, session, branch="scratch/c") is None  # unchanged
    other = await asked(pipe, Caller(id="session-2"), branch="scratch/d")  # its own
    await other.approved(pipe, Remember.ONCE)
    bases = [r.basis for r in reversed(pipe.audit.query(limit=20))]
    assert bases == ["person", "session", "person", "session", "person", "session", "person"]


async def test_an_answer_to_a_question_the_policy_no_longer_asks_is_not_remembered(
    pipe: Pipe,
) -> None:
    """The person allowed a case's question for the session; before the call went on, the
    policy changed to ask about it under the rule's own action: the call goes (the person
    approved this very call), and the next one is asked about."""
    pipe.pipeline.enforcer.swap_policy(parse_policy(PUSH_TO_MAIN_ASKS_EDITED))
    pipe.approvals.attach()
    session = Caller()
    waiting = await asked(pipe, session, branch="main-2")
    assert waiting.case == 0
    pending = waiting.pending
    pipe.approvals.answer(pending.id, True, digest=pending.digest, remember=Remember.SESSION)
    pipe.pipeline.enforcer.swap_policy(parse_policy(PUSH_TO_MAIN_ASKS))  # before it goes on
    assert "isError" not in await waiting.task
    again = await asked(pipe, session, branch="main-2")
    assert again.case is None
    await again.approved(pipe, Remember.ONCE)


# --- what comes back: secrets in results and errors (from a red-team run of issue 16) ---

GITHUB_SHAPED = "ghp_" + "Lq7Vx2Nw9Rk4Tz8Pb3Hs6Jd1Mf5Gc0Ya2Uex"  # built, not a literal key


def answering(result: dict[str, Any]) -> Any:
    async def send(_params: Mapping[str, Any]) -> dict[str, Any]:
        return result

    return send


async def test_a_keyring_value_with_quotes_and_backslashes_is_redacted(pipe: Pipe) -> None:
    caller = Caller(secret='Zq9"wX\\v7Lm\tok')
    text = f"connected with {caller.secret} fine"
    result = await pipe.pipeline.run(
        caller,
        call("read_file", path="/a"),
        answering({"content": [{"type": "text", "text": text}]}),
    )
    assert caller.secret not in result["content"][0]["text"]
    (row,) = pipe.audit.query(limit=1)
    assert row.secrets == "redacted"


async def test_what_cannot_be_scanned_whole_is_withheld_under_redact(pipe: Pipe) -> None:
    deep: Any = {"token": GITHUB_SHAPED}
    for _ in range(40):  # past the scanner's 32 levels
        deep = {"a": deep}
    result = await pipe.pipeline.run(
        Caller(),
        call("read_file", path="/a"),
        answering({"content": [], "structuredContent": deep}),
    )
    assert result["isError"] is True
    assert GITHUB_SHAPED not in str(result)
    assert "more than Lockgate can scan whole" in result["content"][0]["text"]
    (row,) = pipe.audit.query(limit=1)
    assert (row.outcome, row.secrets) == (Outcome.WITHHELD, "too large to scan")


async def test_a_servers_error_is_redacted_of_its_secrets(pipe: Pipe) -> None:
    async def send(_params: Mapping[str, Any]) -> dict[str, Any]:
        raise MCPError(
            code=-32603, message=f"failed: GITHUB_TOKEN={GITHUB_SHAPED}", data={"t": GITHUB_SHAPED}
        )

    with pytest.raises(MCPError) as raised:
        await pipe.pipeline.run(Caller(), call("read_file", path="/a"), send)
    assert GITHUB_SHAPED not in raised.value.error.message
    assert GITHUB_SHAPED not in str(raised.value.error.data)
    (row,) = pipe.audit.query(limit=1)
    assert GITHUB_SHAPED not in (row.error or "")
    assert row.secrets == "redacted"


async def test_a_2026_request_state_goes_back_as_it_came(pipe: Pipe) -> None:
    state = "eyJhbGciOiJIUzI1NiJ9." + "eyJzdGF0ZSI6InJvdW5kLTEifQ" + ".c2lnbmF0dXJlLXBhcnQ"
    given = {"resultType": "input_required", "inputRequests": {}, "requestState": state}
    result = await pipe.pipeline.run(Caller(), call("read_file", path="/a"), answering(given))
    assert result["requestState"] == state


@contextlib.asynccontextmanager
async def asked_about_its_result(pipe: Pipe) -> AsyncIterator[asyncio.Task[dict[str, Any]]]:
    """A call whose result holds a secret, running, its result asked about (policy "ask",
    someone there to answer): the task and its one pending question."""
    pipe.pipeline.enforcer.swap_policy(
        parse_policy('{"version": "1", "default": "allow", "results": {"secrets": "ask"}}')
    )
    detach = pipe.approvals.attach()
    try:
        text = {"content": [{"type": "text", "text": f"token {GITHUB_SHAPED}"}]}
        running = asyncio.create_task(
            pipe.pipeline.run(Caller(), call("read_file", path="/a"), answering(text))
        )
        await eventually(pipe.approvals.pending, "the question about the result")
        yield running
    finally:
        detach()


async def test_a_result_question_withdrawn_is_not_asked_again_and_withholds(pipe: Pipe) -> None:
    async with asked_about_its_result(pipe) as running:
        (pending,) = pipe.approvals.pending()
        pipe.approvals.withdraw(pending.id, "Lockgate was paused")
        result = await asyncio.wait_for(running, 10)
    assert GITHUB_SHAPED not in str(result)
    assert "withdrawn" in result["content"][0]["text"]
    assert pipe.approvals.pending() == []


async def test_a_call_cancelled_while_its_result_is_asked_about_is_recorded_cancelled(
    pipe: Pipe,
) -> None:
    async with asked_about_its_result(pipe) as running:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    (row,) = pipe.audit.query(limit=1)
    assert row.outcome == Outcome.CANCELLED
    assert isinstance(pipe.events[-1], CallFinished)
