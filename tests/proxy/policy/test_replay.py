"""The replay's own rules, as a table of recorded calls: what is left out, what counts as
drift, how limits are warmed up, what is uncertain, and how the summary reads."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from proxy.policy.model import parse_policy
from proxy.policy.replay import RecordedCall, ReplayReport, change_of, replay, warm_up_seconds

T0 = 1_800_000_000.0


def policy(**tools: Any) -> Any:
    return parse_policy(json.dumps({"version": "1", "default": "allow", "tools": tools}))


def call(tool: str = "t", **changes: Any) -> RecordedCall:
    fields: dict[str, Any] = {
        "id": f"id-{tool}-{changes.get('time', T0)}",
        "time": T0,
        "client": "c",
        "server": "s",
        "tool": tool,
        "arguments": "{}",
        "decision": "allowed",
        "basis": "default",
        "rule": None,
        "outcome": "ok",
    }
    fields.update(changes)
    return RecordedCall(**fields)


def test_lockgates_own_refusals_are_left_out() -> None:
    calls = [
        call(basis="pause", decision="denied", outcome="blocked"),
        call(basis="quarantined", decision="denied", outcome="blocked"),
        call(basis="arguments", rule=None, decision="denied", outcome="protocol_error"),
        call(basis="pause", decision="denied", time=T0 - 100),  # before the period: not counted
        call(),
    ]
    report = replay(calls, policy(**{"s/t": {"action": "deny"}}), policy(), start=T0 - 10)
    assert (report.calls, report.skipped, report.changed) == (1, 3, 1)


def test_a_decision_made_under_another_policy_is_drift() -> None:
    calls = [call(decision="denied", basis="rule", rule="s/t")]  # denied then, allowed now
    report = replay(calls, policy(), policy())
    assert (report.drifted, report.changed) == (1, 0)


def test_the_calls_before_the_period_warm_the_limits_up() -> None:
    limited = policy(**{"s/t": {"limits": [{"counter": "n", "window": "minute", "max": 2}]}})
    assert warm_up_seconds(limited, policy()) == 60.0
    assert warm_up_seconds(policy()) == 0.0
    calls = [call(time=T0 - 30 + i) for i in range(2)] + [call(time=T0 + 1)]
    report = replay(calls, limited, policy(), start=T0)
    assert report.calls == 1
    assert dict(report.changes) == {"blocked": 1}  # the two before used the budget up
    refused = [call(time=T0 - 30, outcome="protocol_error"), call(time=T0 - 20), call(time=T0)]
    assert replay(refused, limited, policy(), start=T0).changed == 0  # its charge went back


def test_arguments_the_log_cut_make_a_change_uncertain() -> None:
    schema = {"s/t": {"arguments": {"properties": {"key": {"maxLength": 4}}}}}
    calls = [
        call(arguments='{"key": "[redacted]"}'),
        call(arguments='{"deep": [{"key": "[redacted]"}]}', time=T0 + 1),
        call(arguments='{"_truncated": true, "_preview": "{\\"key"}', time=T0 + 2),
        call(arguments='{"key": "abcdefgh"}', time=T0 + 3),  # kept whole: certain
        call(arguments="not json", time=T0 + 4),  # (never written so; read as no arguments)
        call(arguments="[1]", time=T0 + 5),
        call(arguments='{"key": ["[redacted]"]}', time=T0 + 6),  # a list: maxLength passes it
    ]
    report = replay(calls, policy(**schema), policy())
    assert report.changed == 2  # the redacted key and the long one fail the schema
    assert report.uncertain == 1
    assert report.summary().endswith(
        "1 of these hang on arguments the log keeps redacted, so may differ."
    )
    deny_all = policy(**{"s/t": {"action": "deny", "arguments": {"maxLength": 1}}})
    assert replay(calls, deny_all, policy()).uncertain == 0  # denied whatever they hold


def test_the_summary_names_the_clients_and_the_kinds_of_change() -> None:
    assert "No calls were recorded in the last day" in ReplayReport(None, None).summary(
        "the last day"
    )
    calls = [call(client=f"client{i}", time=T0 + i) for i in range(5)]
    calls += [call("u", decision="denied", basis="rule", rule="s/u", time=T0 + 9)]
    calls += [call("v", time=T0 + 10)]
    in_force = policy(**{"s/u": {"action": "deny"}})
    candidate = policy(**{"s/t": {"action": "deny"}, "s/v": {"action": "ask"}})
    report = replay(calls, candidate, in_force)
    text = report.summary()
    assert text.startswith("Of 7 calls in the period, this change would have blocked 5 calls")
    assert "(client0 1, client1 1, client2 1, …)" in text
    assert "would have allowed 1 call (c 1)" in text
    assert "would have asked a person about 1 call (c 1)" in text
    data = report.as_dict()
    assert data["changes"] == {"blocked": 5, "allowed": 1, "asks": 1}
    assert {e["change"] for e in data["examples"]} == {"blocked", "allowed", "asks"}
    assert data["by_client"][0] == {"change": "blocked", "client": "client0", "calls": 1}
    assert data["summary"] == text
    assert change_of("ask", "ask") == "same"
    same = replay(calls, in_force, in_force)
    assert same.summary() == (
        "This change would have decided all 7 calls of the period as the policy in force does."
    )


def test_the_same_arguments_are_decided_once_and_what_is_kept_stays_bounded(
    monkeypatch: Any,
) -> None:
    import proxy.policy.replay as replay_module

    monkeypatch.setattr(replay_module, "_ARGUMENTS_KEPT", 2)
    texts = ['{"path": "/tmp/a"}', '{"path": "/etc/b"}', '{"path": "/tmp/c"}']
    calls = [
        call(arguments=texts[n // 2 % 3], client="x" if n < 6 else "y", time=T0 + n)
        for n in range(12)
    ]
    only_tmp = policy(**{"s/t": {"arguments": {"properties": {"path": {"pattern": "^/tmp/"}}}}})
    report = replay(calls, only_tmp, policy())
    assert report.calls == 12
    assert dict(report.changes) == {"blocked": 4}  # every call with /etc/b, by either client
    assert {r.call.arguments for kept in report.examples.values() for r in kept} == {texts[1]}


def test_a_rule_on_arguments_with_a_limit_is_replayed_call_by_call() -> None:
    both = policy(**{"s/t": {
        "arguments": {"properties": {"path": {"pattern": "^/tmp/"}}},
        "limits": [{"counter": "n", "window": "minute", "max": 1}],
    }})  # fmt: skip
    calls = [call(arguments='{"path": "/tmp/a"}', time=T0 + n) for n in range(3)]
    calls.append(call(arguments='{"path": "[redacted]"}', time=T0 + 90))
    report = replay(calls, both, policy())
    assert dict(report.changes) == {"blocked": 3}  # two over the limit, one the schema's
    assert report.uncertain == 1  # the redacted one


def test_calls_that_agree_on_what_the_rules_read_are_decided_alike_and_no_others() -> None:
    """Deciding once per kind of arguments (the keys the schemas read) gives what deciding
    every call gives: verdicts, reasons and clients, for schemas that read a few keys and
    for ones that read the whole object."""
    import itertools

    from proxy.policy.decide import ToolCall, decide
    from proxy.policy.limits import Counters

    values: list[Any] = ["/tmp/a", "/etc/b", "[redacted]", 7, None]
    calls = []
    for n, (path, mode, extra, client) in enumerate(
        itertools.product(values, [None, "r", "w"], [None, "x"], ["c", "ci"])
    ):
        arguments = {k: v for k, v in (("path", path), ("mode", mode), ("extra", extra))
                     if v is not None}  # fmt: skip
        calls.append(call(arguments=json.dumps(arguments), client=client, time=T0 + n))
    schemas: list[dict[str, Any]] = [
        {"arguments": {"properties": {"path": {"type": "string", "pattern": "^/tmp/"}}}},
        {"arguments": {"required": ["mode"], "properties": {"mode": {"enum": ["r"]}}}},
        {"arguments": {"properties": {"path": {}}, "additionalProperties": False}},
        {"arguments": {"maxProperties": 1}},
        {"action": "ask", "when": [
            {"clients": ["ci"], "arguments": {"properties": {"mode": {"const": "r"}}},
             "action": "allow"}]},
        {"when": [{"arguments": {"required": ["extra"]}, "action": "deny", "reason": "no extra"}]},
    ]  # fmt: skip
    for spec in schemas:
        candidate, in_force = policy(**{"s/t": spec}), policy()
        report = replay(calls, candidate, in_force)
        expected: Counter[tuple[str, str]] = Counter()
        reasons = {}
        for recorded in calls:
            arguments = json.loads(recorded.arguments)
            tool_call = ToolCall("s", "t", arguments, recorded.client)
            now = decide(candidate, tool_call, Counters(), recorded.time)
            was = decide(in_force, tool_call, Counters(), recorded.time)
            if now.verdict != was.verdict:
                expected[change_of(was.verdict.value, now.verdict.value), recorded.client] += 1
                reasons[recorded.id] = now.reason
        assert Counter(dict(report.by_client)) == expected, spec
        for kept in report.examples.values():
            for replayed in kept:
                assert replayed.reason == reasons[replayed.call.id], spec
