"""policy.json hot reload: parse, validate, swap; keep the last good policy on errors."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import pytest

from proxy.gateway.events import EventBus, PolicyRejected, PolicyReloaded
from proxy.policy.store import PolicyStore, PolicyWatcher

GOOD = {"version": "1", "default": "deny", "tools": {"x": {"action": "allow"}}}
OTHER = {"version": "1", "default": "allow"}


class Watched:
    """A store + watcher over a temp folder, with the events queued for the test."""

    def __init__(self, path):
        self.path = path
        self.bus = EventBus()
        self.events: asyncio.Queue = asyncio.Queue()
        self.bus.subscribe(self.events.put_nowait)
        self.swapped: list[Any] = []
        self.store = PolicyStore(path, self.bus.emit, self.swapped.append)
        self.watcher = PolicyWatcher(self.store)

    async def next_event(self, timeout=5.0):
        return await asyncio.wait_for(self.events.get(), timeout)

    def write(self, document) -> None:
        text = document if isinstance(document, str) else json.dumps(document)
        self.path.write_text(text)


@pytest.fixture
async def watched(tmp_path):
    w = Watched(tmp_path / "config" / "policy.json")
    await w.watcher.start()
    yield w
    await w.watcher.stop()


async def test_missing_file_means_the_built_in_default(watched):
    event = await watched.next_event()
    assert isinstance(event, PolicyReloaded)
    assert event.source is None
    assert watched.store.policy.default.value == "ask"
    assert watched.store.error is None


async def test_a_valid_edit_is_in_force_within_a_fraction_of_a_second(watched):
    await watched.next_event()
    start = time.monotonic()
    watched.write(GOOD)
    event = await watched.next_event()
    elapsed = time.monotonic() - start
    assert isinstance(event, PolicyReloaded)
    assert event.source == str(watched.path)
    assert event.rules == 1
    assert watched.store.policy.default.value == "deny"
    assert watched.swapped[-1] is watched.store.policy
    assert elapsed < 1.0


async def test_a_broken_edit_keeps_the_last_good_policy_and_says_where(watched):
    await watched.next_event()
    watched.write(GOOD)
    await watched.next_event()
    good = watched.store.policy
    watched.write('{"version": "1",\n "default": "maybe"}')
    event = await watched.next_event()
    assert isinstance(event, PolicyRejected)
    assert event.line == 2
    assert 'policy.json:2:13: default: must be "allow", "deny" or "ask"' in event.message
    assert watched.store.policy is good
    assert watched.store.error is not None
    watched.write(OTHER)  # fixed: in force, error cleared
    event = await watched.next_event()
    assert isinstance(event, PolicyReloaded)
    assert watched.store.error is None
    assert watched.store.policy.default.value == "allow"


async def test_an_editor_save_by_rename_is_seen(watched):
    await watched.next_event()
    tmp = watched.path.with_name(".policy.json.swp")
    tmp.write_text(json.dumps(GOOD))
    os.replace(tmp, watched.path)
    event = await watched.next_event()
    assert isinstance(event, PolicyReloaded)
    assert watched.store.policy.default.value == "deny"


async def test_same_content_causes_no_second_reload(watched):
    await watched.next_event()
    watched.write(GOOD)
    await watched.next_event()
    watched.write(GOOD)  # e.g. the app's own write, already in force
    watched.write(OTHER)
    event = await watched.next_event()  # the next event is for OTHER, none for GOOD again
    assert isinstance(event, PolicyReloaded)
    assert watched.store.policy.default.value == "allow"


async def test_a_burst_of_writes_is_one_reload_of_the_last(watched):
    await watched.next_event()
    for i in range(20):
        watched.write({"version": "1", "default": "deny", "description": f"draft {i}"})
    watched.write(OTHER)
    event = await watched.next_event()
    assert isinstance(event, PolicyReloaded)
    assert watched.store.policy.default.value == "allow"
    with pytest.raises(TimeoutError):
        await watched.next_event(timeout=0.6)  # nothing more: the burst was one reload


async def test_deleting_the_file_goes_back_to_the_default(watched):
    await watched.next_event()
    watched.write(GOOD)
    await watched.next_event()
    watched.path.unlink()
    event = await watched.next_event()
    assert isinstance(event, PolicyReloaded)
    assert event.source is None
    assert watched.store.policy.default.value == "ask"


async def test_a_broken_file_at_start_keeps_the_default_and_reports(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text("{")
    w = Watched(path)
    await w.watcher.start()
    try:
        event = await w.next_event()
        assert isinstance(event, PolicyRejected)
        assert w.store.policy.default.value == "ask"  # never allowed because it broke
    finally:
        await w.watcher.stop()


def test_load_without_a_loop(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(GOOD))
    bus = EventBus()
    seen: list[Any] = []
    bus.subscribe(seen.append)
    store = PolicyStore(path, bus.emit)
    assert store.load() is True
    assert store.load() is False  # unchanged
    assert [type(e) for e in seen] == [PolicyReloaded]


def test_a_failing_subscriber_does_not_stop_the_others():
    bus = EventBus()
    seen: list[Any] = []

    def broken(event):
        raise RuntimeError("boom")

    bus.subscribe(broken)
    stop = bus.subscribe(seen.append)
    event = PolicyReloaded(0.0, None, 0, "ask")
    bus.emit(event)
    assert seen == [event]
    stop()
    bus.emit(event)
    assert seen == [event]
