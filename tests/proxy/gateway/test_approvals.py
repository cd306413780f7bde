"""Asking a person: answers, timeouts, no approver, cancellation, exact binding."""

from __future__ import annotations

import asyncio

import pytest

from proxy.gateway.approvals import Answer, ApprovalBroker, Remember, call_digest
from proxy.gateway.events import ApprovalAnswered, ApprovalPending
from proxy.policy.decide import Basis, Decision, ToolCall, Verdict
from tests.support.waiting import eventually


def asked(timeout: float = 5.0) -> Decision:
    return Decision(Verdict.ASK, Basis.RULE, "needs a person", "*delete*", approval_timeout=timeout)


@pytest.fixture
def broker():
    events: list = []
    b = ApprovalBroker(events.append)
    b.events = events  # type: ignore[attr-defined]  # what the broker emitted, for the tests
    return b


async def wait_pending(broker, count=1):
    await eventually(lambda: len(broker.pending()) >= count, f"{count} pending", interval=0)
    return broker.pending()


async def test_no_approver_is_refused_at_once(broker):
    result = await broker.ask(ToolCall("s", "delete"), "c1", asked())
    assert result.answer is Answer.NO_APPROVER
    assert broker.events == []


async def test_approve_releases_the_waiting_call(broker):
    broker.attach()
    call = ToolCall("fs", "delete_file", {"path": "/tmp/x"}, client="cursor")
    task = asyncio.create_task(broker.ask(call, "c1", asked()))
    (pending,) = await wait_pending(broker)
    assert pending.call == call
    assert isinstance(broker.events[0], ApprovalPending)
    assert broker.events[0].arguments == {"path": "/tmp/x"}
    assert broker.answer(pending.id, True, remember=Remember.SESSION)
    result = await task
    assert result.approved
    assert result.remember is Remember.SESSION
    assert broker.pending() == []
    assert isinstance(broker.events[-1], ApprovalAnswered)
    assert broker.events[-1].answer == "approved"


async def test_refuse_with_a_reason_for_the_agent(broker):
    broker.attach()
    task = asyncio.create_task(broker.ask(ToolCall("s", "t"), "c1", asked()))
    (pending,) = await wait_pending(broker)
    broker.answer(pending.id, False, reason="not on main", remember=Remember.ALWAYS)
    result = await task
    assert (result.answer, result.reason) == (Answer.REFUSED, "not on main")
    assert result.remember is Remember.ONCE  # a refusal is never remembered as approval


async def test_timeout_refuses(broker):
    broker.attach()
    result = await broker.ask(ToolCall("s", "t"), "c1", asked(timeout=0.05))
    assert result.answer is Answer.TIMEOUT
    assert broker.pending() == []
    assert broker.events[-1].answer == "timeout"


async def test_an_answer_after_the_timeout_changes_nothing(broker):
    broker.attach()
    task = asyncio.create_task(broker.ask(ToolCall("s", "t"), "c1", asked(timeout=0.05)))
    (pending,) = await wait_pending(broker)
    assert (await task).answer is Answer.TIMEOUT
    assert broker.answer(pending.id, True) is False


async def test_a_cancelled_call_leaves_the_queue(broker):
    broker.attach()
    task = asyncio.create_task(broker.ask(ToolCall("s", "t"), "c1", asked()))
    (pending,) = await wait_pending(broker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert broker.pending() == []
    assert broker.events[-1].answer == "cancelled"
    assert broker.answer(pending.id, True) is False


async def test_several_pending_are_answered_independently(broker):
    broker.attach()
    tasks = [
        asyncio.create_task(broker.ask(ToolCall("s", f"t{i}"), f"c{i}", asked())) for i in range(3)
    ]
    pending = await wait_pending(broker, 3)
    assert [p.call.tool for p in pending] == ["t0", "t1", "t2"]
    broker.answer(pending[1].id, True)
    broker.answer(pending[0].id, False)
    broker.answer(pending[2].id, True)
    results = [await t for t in tasks]
    assert [r.answer for r in results] == [Answer.REFUSED, Answer.APPROVED, Answer.APPROVED]


async def test_an_answer_is_bound_to_the_exact_arguments(broker):
    broker.attach()
    call = ToolCall("fs", "write", {"path": "/tmp/a"})
    task = asyncio.create_task(broker.ask(call, "c1", asked()))
    (pending,) = await wait_pending(broker)
    other = call_digest(ToolCall("fs", "write", {"path": "/etc/passwd"}))
    assert broker.answer(pending.id, True, digest=other) is False
    assert broker.pending() == [pending]
    assert broker.answer(pending.id, True, digest=call_digest(call)) is True
    assert (await task).approved


def test_digest_is_canonical():
    a = call_digest(ToolCall("s", "t", {"a": 1, "b": [1, 2]}))
    b = call_digest(ToolCall("s", "t", {"b": [1, 2], "a": 1}))
    assert a == b
    assert a != call_digest(ToolCall("s", "t", {"a": 1, "b": [2, 1]}))


async def test_detaching_the_last_approver_refuses_new_asks(broker):
    detach = broker.attach()
    detach()
    detach()  # idempotent
    assert not broker.has_approver
    assert (await broker.ask(ToolCall("s", "t"), "c", asked())).answer is Answer.NO_APPROVER


async def test_cancel_all_refuses_everything(broker):
    broker.attach()
    tasks = [
        asyncio.create_task(broker.ask(ToolCall("s", "t"), f"c{i}", asked())) for i in range(2)
    ]
    await wait_pending(broker, 2)
    broker.cancel_all("Lockgate is shutting down")
    assert [(await t).reason for t in tasks] == ["Lockgate is shutting down"] * 2
