"""Sliding-window limits: exact at the edges, exact under concurrency, never over-strict."""

from __future__ import annotations

import json
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.policy.decide import Enforcer, ToolCall, Verdict
from proxy.policy.limits import CounterKey, Counters
from proxy.policy.model import Limit, Scope, parse_policy


class Clock:
    """An injected clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limited_policy(max_calls: int, window: float | str, scope: str = "grant"):
    limit = {"counter": "c", "window": window, "max": max_calls, "scope": scope}
    return parse_policy(
        json.dumps({"version": "1", "default": "deny", "tools": {"t": {"limits": [limit]}}})
    )


def test_window_is_half_open_a_call_stops_counting_exactly_one_window_later():
    clock = Clock(100.0)
    enforcer = Enforcer(limited_policy(1, 10), clock)
    call = ToolCall("s", "t")
    assert enforcer.decide(call).verdict is Verdict.ALLOW
    clock.now = 109.999
    blocked = enforcer.decide(call)
    assert blocked.verdict is Verdict.DENY
    assert blocked.retry_at == pytest.approx(110.0)
    assert blocked.counter == "c"
    clock.now = 110.0
    assert enforcer.decide(call).verdict is Verdict.ALLOW


@pytest.mark.parametrize(
    ("window", "seconds"),
    [("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400), (2.5, 2.5)],
)
def test_named_and_numeric_windows(window, seconds):
    clock = Clock(0.0)
    enforcer = Enforcer(limited_policy(2, window), clock)
    call = ToolCall("s", "t")
    assert [enforcer.decide(call).verdict for _ in range(3)] == [
        Verdict.ALLOW,
        Verdict.ALLOW,
        Verdict.DENY,
    ]
    clock.now = seconds - 1e-6
    assert enforcer.decide(call).verdict is Verdict.DENY
    clock.now = seconds
    assert enforcer.decide(call).verdict is Verdict.ALLOW


def test_blocked_calls_use_no_budget():
    clock = Clock(0.0)
    enforcer = Enforcer(limited_policy(1, 10), clock)
    call = ToolCall("s", "t")
    enforcer.decide(call)
    for step in range(1, 10):  # hammering while blocked must not push the retry time out
        clock.now = step
        assert enforcer.decide(call).retry_at == pytest.approx(10.0)
    clock.now = 10.0
    assert enforcer.decide(call).verdict is Verdict.ALLOW


def test_retry_at_is_when_enough_calls_have_aged_out():
    clock = Clock(0.0)
    enforcer = Enforcer(limited_policy(3, 10), clock)
    call = ToolCall("s", "t")
    for t in (0.0, 2.0, 5.0):
        clock.now = t
        enforcer.decide(call)
    clock.now = 6.0
    assert enforcer.decide(call).retry_at == pytest.approx(10.0)  # the call at 0 expires


def test_max_zero_blocks_always_with_no_retry_time():
    enforcer = Enforcer(limited_policy(0, 10), Clock())
    decision = enforcer.decide(ToolCall("s", "t"))
    assert decision.verdict is Verdict.DENY
    assert decision.retry_at is None


def test_grant_scope_counts_each_client_alone():
    enforcer = Enforcer(limited_policy(1, 60, "grant"), Clock())
    assert enforcer.decide(ToolCall("s", "t", client="a")).verdict is Verdict.ALLOW
    assert enforcer.decide(ToolCall("s", "t", client="b")).verdict is Verdict.ALLOW
    assert enforcer.decide(ToolCall("s", "t", client="a")).verdict is Verdict.DENY


def test_global_scope_counts_all_clients_together():
    enforcer = Enforcer(limited_policy(1, 60, "global"), Clock())
    assert enforcer.decide(ToolCall("s", "t", client="a")).verdict is Verdict.ALLOW
    blocked = enforcer.decide(ToolCall("s", "t", client="b"))
    assert blocked.verdict is Verdict.DENY
    assert "across all clients" in blocked.reason


def test_limits_with_one_counter_name_share_one_budget():
    policy = parse_policy("""{"version": "1", "tools": {
        "build_a": {"limits": [{"counter": "builds", "window": 60, "max": 2}]},
        "build_b": {"limits": [{"counter": "builds", "window": 60, "max": 2}]}}}""")
    enforcer = Enforcer(policy, Clock())
    verdicts = [
        enforcer.decide(ToolCall("s", tool)).verdict
        for tool in ("build_a", "build_b", "build_a", "build_b")
    ]
    assert verdicts == [Verdict.ALLOW, Verdict.ALLOW, Verdict.DENY, Verdict.DENY]


def test_all_limits_must_pass_and_a_call_charges_each_counter_once():
    policy = parse_policy("""{"version": "1", "tools": {"t": {"limits": [
        {"counter": "burst", "window": 1, "max": 2},
        {"counter": "burst", "window": 60, "max": 3},
        {"counter": "hourly", "window": "hour", "max": 100}]}}}""")
    clock = Clock(0.0)
    enforcer = Enforcer(policy, clock)
    call = ToolCall("s", "t")
    assert [enforcer.decide(call).verdict for _ in range(3)] == [
        Verdict.ALLOW,
        Verdict.ALLOW,
        Verdict.DENY,  # 2 per second
    ]
    clock.now = 1.0
    assert enforcer.decide(call).verdict is Verdict.ALLOW  # 3rd in the minute
    clock.now = 2.0
    blocked = enforcer.decide(call)
    assert blocked.verdict is Verdict.DENY  # 3 per minute reached, though the second is free
    assert blocked.retry_at == pytest.approx(60.0)
    assert len(enforcer.counters) == 3 + 3  # burst and hourly each charged once per call


def test_counters_survive_a_policy_swap():
    clock = Clock()
    enforcer = Enforcer(limited_policy(1, 60), clock)
    enforcer.decide(ToolCall("s", "t"))
    enforcer.swap_policy(limited_policy(1, 60))
    assert enforcer.decide(ToolCall("s", "t")).verdict is Verdict.DENY


def test_old_times_are_dropped_so_memory_stays_bounded():
    clock = Clock(0.0)
    enforcer = Enforcer(limited_policy(5, 1), clock)
    for step in range(10_000):
        clock.now = step * 0.1
        enforcer.decide(ToolCall("s", "t"))
    assert len(enforcer.counters) <= 5 + 1


def test_exact_under_concurrent_threads():
    # A real clock and real threads: no more than max calls get through, not one more.
    enforcer = Enforcer(limited_policy(50, 3600, "global"), time.monotonic)
    allowed = []
    barrier = threading.Barrier(8)

    def worker(client: str) -> None:
        barrier.wait()
        for _ in range(200):
            if enforcer.decide(ToolCall("s", "t", client=client)).verdict is Verdict.ALLOW:
                allowed.append(client)

    threads = [threading.Thread(target=worker, args=(f"c{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 50


# -- properties ---------------------------------------------------------------------------

gaps = st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=300)
@given(gaps, st.integers(min_value=0, max_value=5), st.floats(min_value=0.5, max_value=10))
def test_limiter_is_exact(steps, max_calls, window):
    """Never more than max in any window; never blocks a call that would fit; retry_at is
    the exact moment room appears."""
    counters = Counters()
    limit = Limit("c", window, max_calls, Scope.GLOBAL)
    key = CounterKey("c", None)
    allowed: list[float] = []
    now = 0.0
    for gap in steps:
        now += gap
        check = counters.check(limit, "client", now)
        in_window = [t for t in allowed if t + window > now and t <= now]
        assert check.passed is (len(in_window) < max_calls)
        if check.passed:
            counters.record([key], now, {"c": window})
            allowed.append(now)
        elif max_calls == 0:
            assert check.retry_at is None
        else:
            retry = check.retry_at
            assert retry is not None
            assert retry > now
            assert len([t for t in allowed if t + window > retry]) < max_calls
            check_then = counters.check(limit, "client", retry)
            assert check_then.passed  # retrying at the promised moment works
            just_before = retry - 1e-9
            if just_before > now:
                assert len([t for t in allowed if t + window > just_before]) >= max_calls
    for t in allowed:  # the densest window ends at an allowed call
        assert len([u for u in allowed if u + window > t and u <= t]) <= max_calls


def test_shortening_a_window_and_back_forgets_no_calls():
    # A person shortens a limit's window, a call goes through, and they change it back:
    # the calls made under the long window must still count against it.
    clock = Clock(0.0)
    enforcer = Enforcer(limited_policy(2, 3600), clock)
    call = ToolCall("s", "t")
    for t in (0.0, 1.0):
        clock.now = t
        assert enforcer.decide(call).verdict is Verdict.ALLOW
    enforcer.swap_policy(limited_policy(2, 10))
    clock.now = 20.0
    assert enforcer.decide(call).verdict is Verdict.ALLOW  # the 10 s window is empty
    enforcer.swap_policy(limited_policy(2, 3600))
    clock.now = 30.0
    assert enforcer.decide(call).verdict is Verdict.DENY  # 3 calls in the hour already


# -- refunds and charges without a known window ---------------------------------------------


def test_a_refund_gives_back_only_the_charge_made_at_that_moment():
    counters = Counters()
    limit = Limit("c", 60.0, 2, Scope.GLOBAL)
    key = CounterKey("c", None)
    counters.record([key], 10.0, {"c": 60.0})
    counters.record([key], 20.0, {"c": 60.0})
    assert not counters.check(limit, "any", 30.0).passed
    counters.refund([key], 15.0)  # no charge was made at 15: nothing is given back
    assert len(counters) == 2
    assert not counters.check(limit, "any", 30.0).passed
    counters.refund([key], 20.0)
    assert len(counters) == 1
    assert counters.check(limit, "any", 30.0).passed


def test_refunding_a_counter_never_charged_changes_nothing():
    counters = Counters()
    counters.record([CounterKey("c", "ann")], 10.0, {"c": 60.0})
    counters.refund([CounterKey("c", "bob"), CounterKey("other", None)], 10.0)
    assert len(counters) == 1
    assert not counters.check(Limit("c", 60.0, 1), "ann", 11.0).passed


def test_restored_charges_for_a_counter_no_rule_names_are_kept_for_when_it_returns():
    # charges read back from the audit log for a counter the policy in force no longer
    # names: with no window known nothing is dropped, so the rule coming back sees them
    clock = Clock(1000.0)
    no_limits = parse_policy(json.dumps({"version": "1", "tools": {"t": {}}}))
    enforcer = Enforcer(no_limits, clock)
    enforcer.restore([(CounterKey("c", "local"), 0.0), (CounterKey("c", "local"), 900.0)])
    assert len(enforcer.counters) == 2
    enforcer.swap_policy(limited_policy(2, 3600))
    blocked = enforcer.decide(ToolCall("s", "t"))
    assert blocked.verdict is Verdict.DENY
    assert blocked.retry_at == 3600.0  # when the call at 0 stops counting


def test_clearing_the_counters_gives_every_budget_back():
    clock = Clock(0.0)
    enforcer = Enforcer(limited_policy(1, 3600), clock)
    assert enforcer.decide(ToolCall("s", "t")).verdict is Verdict.ALLOW
    assert enforcer.decide(ToolCall("s", "t")).verdict is Verdict.DENY
    enforcer.counters.clear()
    assert len(enforcer.counters) == 0
    assert enforcer.decide(ToolCall("s", "t")).verdict is Verdict.ALLOW
