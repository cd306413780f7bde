"""The promise as one invariant, driven at random (Hypothesis, stateful).

A model of the policy (which tools are allowed, denied, hidden, limited, argument-checked
or asked about; the default; pause; whether servers.json has the server) predicts, for
every call, whether it may reach the server. A real gateway (tests/support/harness.py) with
the recording upstream (tests/servers/recorder.py) is driven through both front doors
(HTTP, the local socket's fast lane and its SDK route) with calls, approvals answered,
refused, cancelled and timing out, policy swaps, servers.json changes, pause and resume,
time passing (an injected clock) and restarts of the whole gateway. After every step:

- the calls the server received are exactly the calls the model says may run: none that
  the policy in force when it left blocked, none over a limit, across restarts too;
- each of them has its audit row, committed, allowed or approved, and complete;
- every call the model expects an answer for has been answered.

``LOCKGATE_INVARIANT_EXAMPLES`` sets how many runs (default 20, each up to 30 steps);
``bench/invariant.py`` runs a longer profile and reports the number of steps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import os
import re
import tempfile
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from proxy.gateway.approvals import Remember
from tests.support.harness import (
    Harness,
    HttpSession,
    LocalClient,
    recorder_servers,
    write_json,
)
from tests.support.waiting import eventually

T = TypeVar("T")
pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("LOCKGATE_INVARIANT_EXAMPLES", "20"))
STEPS = int(os.environ.get("LOCKGATE_INVARIANT_STEPS", "30"))
STATS = {"runs": 0, "steps": 0, "calls": 0, "ran": 0}

TOOLS = ("echo", "delete_file", "hidden", "limited", "checked", "ask_me", "fetch")
# None: no rule, the default decides; allow and ask twice as likely, so that calls run
ACTIONS = (None, "allow", "allow", "deny", "hide", "ask", "ask")
WINDOW = 60.0
SAFE = "^/safe/[a-z]+$"
MAX_WAITING = 8  # ApprovalBroker.max_per_group: calls of one session waiting at once
DOORS = ("http", "local", "local-sdk")  # local-sdk: a progress token sends it the SDK way


@dataclass(frozen=True)
class PolicyModel:
    default: str
    actions: dict[str, str | None]
    limit: int  # "limited": at most this many per WINDOW, across all clients
    fast_timeout: bool  # "ask_me" times out at once (0.05 s) instead of waiting

    def document(self) -> dict[str, Any]:
        tools: dict[str, Any] = {}
        for tool, action in self.actions.items():
            if action is None:
                continue
            rule: dict[str, Any] = {"action": "deny" if action == "hide" else action}
            if action == "hide":
                rule["hide"] = True
            if tool == "limited" and action in ("allow", "ask"):
                rule["limits"] = [{"counter": "lim", "window": WINDOW, "max": self.limit}]
                rule["limits"][0]["scope"] = "global"
            if tool == "checked" and action in ("allow", "ask"):
                rule["arguments"] = {
                    "type": "object",
                    "properties": {"path": {"type": "string", "pattern": SAFE}},
                    "required": ["path"],
                }
            if tool == "ask_me" and action == "ask" and self.fast_timeout:
                rule["approval"] = {"timeout": 0.05}
            tools[tool] = rule
        return {"version": "1", "default": self.default, "tools": tools}


policies = st.builds(
    PolicyModel,
    default=st.sampled_from(["allow", "allow", "deny", "ask"]),
    actions=st.fixed_dictionaries({tool: st.sampled_from(ACTIONS) for tool in TOOLS}),
    limit=st.integers(0, 3),
    fast_timeout=st.booleans(),
)


CALLS = st.lists(
    st.tuples(st.sampled_from(TOOLS), st.sampled_from(["/safe/x", "/etc/passwd", None, 7])),
    min_size=1,
    max_size=4,
)


@dataclass
class Call:
    marker: int
    door: str
    tool: str
    arguments: dict[str, Any]
    answer: concurrent.futures.Future[dict[str, Any]] | None = None
    request_id: int | None = None  # local doors: to cancel it
    question: tuple[str, bool] | None = None  # what a person is asked (see _question)


@dataclass
class Door:
    kind: str
    client: str
    local: LocalClient | None = None
    http: HttpSession | None = None
    approved: set[tuple[str, bool]] = field(default_factory=set)  # "allow for this session"
    exit: contextlib.AsyncExitStack | None = None


class LoopThread:
    """An event loop on a thread of its own: the gateway and the clients live there, and
    the (synchronous) state machine hands them work."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def submit(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(work, self.loop)

    def close(self) -> None:
        async def cancel_the_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_the_rest(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class GatewayMachine(RuleBasedStateMachine):
    ROOT: Path | None = None  # where each run's folders go (the test's tmp_path)

    def __init__(self) -> None:
        super().__init__()
        self.loop = LoopThread()
        self.root = Path(tempfile.mkdtemp(dir=GatewayMachine.ROOT))
        self.now = 1_000_000.0
        self.harness = Harness(self.root, clock=lambda: self.now)
        self.markers = itertools.count(1)
        self.policy: PolicyModel | None = None
        self.paused = False
        self.server_present = True
        self.ran: set[int] = set()  # markers the model says reached the server
        self.charges: list[float] = []  # when "limited" was charged
        self.pending: list[Call] = []  # waiting for a person, oldest first
        self.doors: dict[str, Door] = {}
        self.http: httpx2.AsyncClient | None = None
        STATS["runs"] += 1

    # -- set-up and teardown ---------------------------------------------------------

    @initialize(policy=policies)
    def start(self, policy: PolicyModel) -> None:
        self.policy = policy
        write_json(self.harness.paths.policy_file, policy.document())
        self._start_gateway()

    def _start_gateway(self) -> None:
        async def go() -> None:
            gateway = await self.harness.start()
            gateway.approvals.attach()
            if self.http is None:
                self.http = httpx2.AsyncClient(timeout=30)
            for kind in DOORS:
                await self._open_door(kind)

        self.loop.run(go())

    async def _open_door(self, kind: str) -> None:
        client = {"http": "web-agent", "local": "local-agent", "local-sdk": "sdk-agent"}[kind]
        door = Door(kind, client)
        self.doors[kind] = door
        if not self.server_present:
            return  # servers.json has no such server: nothing can be opened now
        if kind == "http":
            assert self.http is not None
            door.http = HttpSession(self.http, self.harness.http_url + "rec", "")
            door.http.token = self.harness.token(client)
            await door.http.open()
        else:
            door.exit = contextlib.AsyncExitStack()
            door.local = await door.exit.enter_async_context(
                LocalClient.open(self.harness, client=client)
            )
            assert self.harness.gateway is not None
            await door.local.handshake(self.harness.gateway)

    def _stop_gateway(self) -> None:
        async def go() -> None:
            await self.harness.stop()
            for door in self.doors.values():
                if door.exit is not None:
                    with contextlib.suppress(Exception):
                        await door.exit.aclose()
            self.doors.clear()

        self.loop.run(go())

    def teardown(self) -> None:
        try:
            if self.harness.gateway is not None:
                self._stop_gateway()
            if self.http is not None:
                self.loop.run(self.http.aclose())
        finally:
            self.loop.close()

    # -- the model -------------------------------------------------------------------

    def _charges_now(self) -> int:
        return sum(1 for t in self.charges if t + WINDOW > self.now)

    def _verdict(self, tool: str, arguments: dict[str, Any]) -> str:
        """What the gateway decides now: run, deny, hidden or ask (before a person)."""
        assert self.policy is not None
        if self.paused or not self.server_present:
            return "deny"
        action = self.policy.actions[tool]
        if action is None:
            return {"allow": "run", "deny": "deny", "ask": "ask"}[self.policy.default]
        if action == "hide":
            return "hidden"
        if action == "deny":
            return "deny"
        if tool == "checked":
            path = arguments.get("path")
            if not (isinstance(path, str) and _safe(path)):
                return "deny"
        if tool == "limited" and self._charges_now() >= self.policy.limit:
            return "deny"
        return "run" if action == "allow" else "ask"

    def _question(self, tool: str) -> tuple[str, bool]:
        """What the policy asks a person about a call of ``tool``: the tool, and whether
        its own rule asks (else the default does). "For this session" covers only that
        question: asked under the other, the next call is asked about again."""
        assert self.policy is not None
        return tool, self.policy.actions[tool] is not None

    def _runs(self, call: Call) -> None:
        self.ran.add(call.marker)
        if call.tool == "limited" and self._limited_rule():
            self.charges.append(self.now)

    def _limited_rule(self) -> bool:
        assert self.policy is not None
        return self.policy.actions["limited"] in ("allow", "ask")

    def _release(self, call: Call) -> str:
        """A person approved ``call``: decided again now (run, deny or hidden)."""
        verdict = self._verdict(call.tool, call.arguments)
        if verdict in ("run", "ask"):
            self._runs(call)
            return "run"
        return verdict

    # -- calls -----------------------------------------------------------------------

    def _send(self, door: Door, call: Call) -> concurrent.futures.Future[dict[str, Any]]:
        async def go() -> dict[str, Any]:
            if door.http is not None:
                return await door.http.call(call.tool, call.arguments)
            assert door.local is not None
            params: dict[str, Any] = {"name": call.tool, "arguments": call.arguments}
            if door.kind == "local-sdk":
                params["_meta"] = {"progressToken": f"p{call.marker}"}
            request_id = call.marker
            call.request_id = request_id
            door.local.send({"id": request_id, "method": "tools/call", "params": params})
            return await door.local.answer(request_id, timeout=30)

        return self.loop.submit(go())

    # One rule a door, each a few calls, so that calls are most of what happens.
    @rule(calls=CALLS)
    def call_over_http(self, calls: list[tuple[str, Any]]) -> None:
        for tool, path in calls:
            self.call("http", tool, path)

    @rule(calls=CALLS)
    def call_on_the_fast_lane(self, calls: list[tuple[str, Any]]) -> None:
        for tool, path in calls:
            self.call("local", tool, path)

    @rule(calls=CALLS)
    def call_on_the_local_sdk_route(self, calls: list[tuple[str, Any]]) -> None:
        for tool, path in calls:
            self.call("local-sdk", tool, path)

    def call(self, door: str, tool: str, path: Any) -> None:
        opened = self.doors.get(door)
        if opened is None or (opened.http is None and opened.local is None):
            return
        arguments: dict[str, Any] = {"n": next(self.markers)}
        if path is not None:
            arguments["path"] = path
        call = Call(arguments["n"], door, tool, arguments)
        STATS["calls"] += 1
        verdict = self._verdict(tool, arguments)
        if verdict == "ask" and self._question(tool) in opened.approved:
            verdict = "run"  # approved for this session earlier: released at once
        if verdict == "ask" and sum(1 for c in self.pending if c.door == door) >= MAX_WAITING:
            verdict = "deny"  # one session may not bury the person in requests
        call.answer = self._send(opened, call)
        if verdict == "ask":
            assert self.policy is not None
            if tool == "ask_me" and self.policy.fast_timeout and self.policy.actions[tool]:
                answer = call.answer.result(30)  # nobody answers in 0.05 s
                assert _refused(answer), answer
                assert "nobody approved this call" in _text(answer)
                return
            call.question = self._question(tool)
            self._wait_pending(call.marker)
            self.pending.append(call)
            return
        answer = call.answer.result(30)
        if verdict == "run":
            self._runs(call)
            assert _text(answer) == f"ran {tool}", answer
        elif verdict == "hidden":
            assert answer["error"]["code"] == -32602, answer
        elif door == "http" and not self.server_present:
            # the HTTP door itself refuses a server that servers.json no longer has
            assert "no server named 'rec'" in answer["error"]["message"], answer
        else:
            assert _refused(answer), answer

    def _wait_pending(self, marker: int) -> None:
        async def go() -> None:
            gateway = self.harness.gateway
            assert gateway is not None
            await eventually(
                lambda: any(p.call.arguments.get("n") == marker for p in _pending(gateway)),
                f"call {marker} to wait for a person",
                interval=0.002,
            )

        self.loop.run(go())

    def _settle(
        self, calls: list[Call], expected: dict[int, str], *, closing: bool = False
    ) -> None:
        """Wait for the answers of ``calls``; ``expected[marker]``: how it was decided
        (run, deny, hidden). ``closing``: the gateway stopped, and a connection may close
        before an answer."""
        for call in calls:
            assert call.answer is not None
            try:
                answer = call.answer.result(30)
            except (OSError, httpx2.HTTPError, asyncio.IncompleteReadError, TimeoutError):
                if closing:
                    continue
                raise
            why = (call, expected[call.marker], answer, self.policy, self.paused)
            if expected[call.marker] == "run":
                assert _text(answer) == f"ran {call.tool}", why
            elif expected[call.marker] == "hidden":
                assert answer["error"]["code"] == -32602, why
            else:
                assert _refused(answer), why

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), approve=st.booleans(), for_session=st.booleans())
    def answer(self, data: st.DataObject, approve: bool, for_session: bool) -> None:
        call = data.draw(st.sampled_from(self.pending))
        self.pending.remove(call)
        gateway = self.harness.gateway
        assert gateway is not None
        remember = Remember.SESSION if for_session else Remember.ONCE

        def send() -> bool:
            for p in _pending(gateway):
                if p.call.arguments.get("n") == call.marker:
                    return gateway.approvals.answer(
                        p.id, approve, digest=p.digest, remember=remember
                    )
            return False

        assert self.loop.run(_on_loop(send))
        verdict = self._release(call) if approve else "deny"
        # remembered only if the policy still asks the question the person answered
        if verdict == "run" and for_session and call.question == self._question(call.tool):
            assert call.question is not None
            self.doors[call.door].approved.add(call.question)
        self._settle([call], {call.marker: verdict})

    @precondition(lambda self: any(c.door != "http" for c in self.pending))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        call = data.draw(st.sampled_from([c for c in self.pending if c.door != "http"]))
        self.pending.remove(call)
        door = self.doors[call.door]
        assert door.local is not None
        door.local.send(
            {"method": "notifications/cancelled", "params": {"requestId": call.request_id}}
        )

        async def gone() -> None:
            gateway = self.harness.gateway
            assert gateway is not None
            await eventually(
                lambda: (
                    not any(p.call.arguments.get("n") == call.marker for p in _pending(gateway))
                ),
                f"call {call.marker} to be answered",
                interval=0.002,
            )

        self.loop.run(gone())
        assert call.answer is not None
        call.answer.cancel()  # a cancelled request gets no answer

    # -- changes of state --------------------------------------------------------------

    @rule(policy=policies, broken=st.booleans())
    def swap_policy(self, policy: PolicyModel, broken: bool) -> None:
        gateway = self.harness.gateway
        assert gateway is not None
        if broken:  # a broken file: the last good policy stays in force
            self.harness.paths.policy_file.write_text('{"version": "1", "default": ')
            store = self.loop.run(gateway.reload_policy())
            assert store.error is not None
            return
        previews: dict[int, str | None] = {c.marker: None for c in self.pending}
        self.policy = policy
        write_json(self.harness.paths.policy_file, policy.document())
        # Which waiting calls leave: those the new policy would not ask about now.
        for call in self.pending:
            previews[call.marker] = self._verdict(call.tool, call.arguments)
        self.loop.run(gateway.reload_policy())
        self._withdraw([c for c in self.pending if previews[c.marker] != "ask"])

    def _withdraw(self, calls: list[Call]) -> None:
        """These waiting calls were withdrawn: each is decided again, oldest first."""
        expected: dict[int, str] = {}
        for call in calls:
            self.pending.remove(call)
            verdict = self._verdict(call.tool, call.arguments)
            expected[call.marker] = verdict
            if verdict == "run":
                self._runs(call)
        self._settle(calls, expected)

    @rule()
    def pause(self) -> None:
        gateway = self.harness.gateway
        assert gateway is not None
        self.loop.run(_on_loop(gateway.pause))
        self.paused = True
        self._withdraw(list(self.pending))

    @rule()
    def resume(self) -> None:
        gateway = self.harness.gateway
        assert gateway is not None
        self.loop.run(_on_loop(gateway.resume))
        self.paused = False

    @rule()
    def toggle_server(self) -> None:
        gateway = self.harness.gateway
        assert gateway is not None
        self.server_present = not self.server_present
        servers = recorder_servers(self.harness.record)
        write_json(
            self.harness.paths.servers_file, servers if self.server_present else {"mcpServers": {}}
        )
        self.loop.run(_on_loop(gateway.reload_servers))
        if not self.server_present:
            self._withdraw(list(self.pending))
            return

        async def reopen() -> None:
            for kind, door in list(self.doors.items()):
                if door.http is None and door.local is None:
                    await self._open_door(kind)

        self.loop.run(reopen())

    @rule(seconds=st.sampled_from([1.0, 20.0, 59.0, 61.0, 120.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def restart(self) -> None:
        waiting = list(self.pending)
        self.pending.clear()
        self._stop_gateway()
        self.paused = False  # a pause lasts while the gateway runs
        self._settle(waiting, dict.fromkeys((c.marker for c in waiting), "deny"), closing=True)
        self._start_gateway()

    # -- the invariant ---------------------------------------------------------------

    @invariant()
    def only_what_may_run_ran_and_all_of_it_is_in_the_log(self) -> None:
        STATS["steps"] += 1
        recorded = [entry["arguments"]["n"] for entry in self.harness.recorded()]
        assert len(recorded) == len(set(recorded)), "a call reached the server twice"
        assert set(recorded) == self.ran, (
            f"ran but blocked: {sorted(set(recorded) - self.ran)}; "
            f"allowed but never ran: {sorted(self.ran - set(recorded))}"
        )
        STATS["ran"] = max(STATS["ran"], len(recorded))
        gateway = self.harness.gateway
        if gateway is None:
            return
        rows = gateway.audit.query(limit=100_000)
        by_marker = {r.arguments.get("n"): r for r in rows if isinstance(r.arguments, dict)}
        for marker in recorded:
            row = by_marker.get(marker)
            assert row is not None, f"call {marker} ran with no audit record"
            assert row.decision.value in ("allowed", "approved"), row
            assert row.outcome.value == "ok", row


def _safe(path: str) -> bool:
    return re.fullmatch(r"/safe/[a-z]+", path) is not None


def _pending(gateway: Any) -> list[Any]:
    return list(gateway.approvals.pending())


async def _on_loop(fn: Any) -> Any:
    return fn()


def _text(answer: dict[str, Any]) -> str:
    result = answer.get("result")
    if not isinstance(result, dict):
        return ""
    return "".join(c.get("text", "") for c in result.get("content", []))


def _refused(answer: dict[str, Any]) -> bool:
    """A blocked call: an isError result that says Lockgate blocked it."""
    result = answer.get("result")
    return isinstance(result, dict) and result.get("isError") is True and "blocked" in _text(answer)


@pytest.mark.timeout(120 + 30 * EXAMPLES)  # a longer profile takes longer
def test_only_what_the_policy_allows_reaches_the_server(tmp_path: Path) -> None:
    GatewayMachine.ROOT = tmp_path
    machine = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        derandomize=os.environ.get("LOCKGATE_INVARIANT_RANDOM") is None,
        database=None,
    )(GatewayMachine)
    machine.TestCase().runTest()
    print(f"\ninvariant: {json.dumps(STATS)}")
    assert STATS["steps"] >= EXAMPLES
