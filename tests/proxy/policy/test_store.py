"""policy.json hot reload: parse, validate, swap; keep the last good policy on errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from typing import Any

import pytest

from proxy.gateway.events import EventBus, PolicyRejected, PolicyReloaded
from proxy.policy.store import PolicyStore, PolicyWatcher, restore_last_good

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


async def test_a_policy_with_cases_is_reloaded_and_a_broken_case_keeps_the_last_good(watched):
    await watched.next_event()
    with_cases = {
        "version": "1",
        "default": "deny",
        "tools": {"push": {"action": "ask", "when": [{"clients": ["cursor"], "action": "allow"}]}},
    }
    watched.write(with_cases)
    assert isinstance(await watched.next_event(), PolicyReloaded)
    (rule,) = watched.store.policy.rules
    assert rule.cases[0].clients == frozenset({"cursor"})
    good = watched.store.policy
    broken = json.loads(json.dumps(with_cases))
    broken["tools"]["push"]["when"][0].pop("clients")  # a case for no one in particular
    watched.write(broken)
    event = await watched.next_event()
    assert isinstance(event, PolicyRejected)
    assert 'a case needs "clients" or "arguments"' in event.message
    assert watched.store.policy is good


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


# -- files that cannot be read, and the last good copy -------------------------------------


def test_a_policy_path_that_cannot_be_read_is_reported_and_the_default_stays(tmp_path):
    path = tmp_path / "policy.json"
    path.mkdir()  # a folder where the file should be
    seen: list[Any] = []
    store = PolicyStore(path, seen.append)
    assert store.load() is False
    assert [type(e) for e in seen] == [PolicyRejected]
    assert seen[0].message == f"{path}: (the whole file): is a directory, not a file"
    assert seen[0].line is None
    error = store.error
    assert error is not None
    assert error.issues[0].message == "is a directory, not a file"
    assert store.policy.default.value == "ask"  # the built-in default, which asks
    path.rmdir()
    path.write_text(json.dumps(GOOD))  # fixed: in force at once
    assert store.load() is True
    assert store.error is None
    assert store.policy.default.value == "deny"


def test_the_digest_is_of_the_bytes_in_force(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(GOOD))
    store = PolicyStore(path, lambda event: None)
    assert store.digest is None  # nothing applied yet
    store.load()
    assert store.digest == hashlib.sha256(path.read_bytes()).hexdigest()


def last_good_store(tmp_path, seen: list[Any]) -> PolicyStore:
    return PolicyStore(
        tmp_path / "config" / "policy.json",
        seen.append,
        last_good=tmp_path / "data" / "policy.last-good.json",
    )


def test_a_restart_with_a_broken_policy_puts_the_last_good_one_in_force(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    (config / "policy.json").write_text(json.dumps(GOOD))
    first_run = last_good_store(tmp_path, [])
    assert first_run.load() is True
    copy = tmp_path / "data" / "policy.last-good.json"
    assert copy.read_bytes() == (config / "policy.json").read_bytes()

    (config / "policy.json").write_text('{"version": "1",\n "default": "maybe"}')  # a bad edit
    seen: list[Any] = []
    restarted = last_good_store(tmp_path, seen)  # the gateway starts again
    assert restarted.load() is False
    assert [type(e) for e in seen] == [PolicyRejected, PolicyReloaded]
    assert seen[0].line == 2  # the error is reported all the same
    assert seen[1].source == str(copy)
    assert seen[1].rules == 1
    assert restarted.policy.default.value == "deny"  # the person's rules, not the default
    assert restarted.policy.rule_for("s", "x") is not None
    assert restarted.error is not None
    assert copy.read_bytes() == json.dumps(GOOD).encode()  # the broken file is not copied


@pytest.mark.parametrize(
    ("copy_text", "logged"),
    [
        (None, None),  # no copy yet: the first start was already broken
        ("{", "the last good copy of policy.json cannot be used"),
    ],
)
def test_without_a_usable_last_good_copy_the_default_is_in_force(
    tmp_path, caplog, copy_text, logged
):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "policy.json").write_text("{")
    if copy_text is not None:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "policy.last-good.json").write_text(copy_text)
    seen: list[Any] = []
    store = last_good_store(tmp_path, seen)
    with caplog.at_level(logging.WARNING, logger="proxy.policy.store"):
        assert store.load() is False
    assert [type(e) for e in seen] == [PolicyRejected]  # no swap: nothing else happened
    assert store.policy.default.value == "ask"  # the built-in default, which asks
    if logged is not None:
        assert logged in caplog.text
    else:
        assert "last good copy" not in caplog.text


def test_failing_to_keep_the_last_good_copy_does_not_stop_the_policy(tmp_path, caplog):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "policy.json").write_text(json.dumps(GOOD))
    (tmp_path / "data" / "policy.last-good.json").mkdir(parents=True)  # cannot be a file
    seen: list[Any] = []
    store = last_good_store(tmp_path, seen)
    with caplog.at_level(logging.WARNING, logger="proxy.policy.store"):
        assert store.load() is True
    assert "could not keep a copy of the policy in force" in caplog.text
    assert [type(e) for e in seen] == [PolicyReloaded]
    assert store.policy.default.value == "deny"
    assert store.error is None


def test_an_unchanged_policy_is_not_copied_again(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "policy.json").write_text(json.dumps(GOOD))
    last_good_store(tmp_path, []).load()
    copy = tmp_path / "data" / "policy.last-good.json"
    before = copy.stat().st_ino
    assert last_good_store(tmp_path, []).load() is True  # a restart, same policy.json
    assert copy.stat().st_ino == before  # the same file: not rewritten


def test_a_deleted_policy_keeps_the_last_one_in_force_loudly_until_it_is_restored(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    policy_file = config / "policy.json"
    policy_file.write_text(json.dumps(GOOD))
    seen: list[Any] = []
    store = last_good_store(tmp_path, seen)
    assert store.load() is True
    kept = tmp_path / "data" / "policy.last-good.json"

    policy_file.unlink()  # a sync tool, a checkout, a slip
    assert store.load() is False
    assert store.deleted
    assert isinstance(seen[-1], PolicyRejected)
    assert "policy.json was deleted; the last policy in force stays in force" in seen[-1].message
    assert store.policy.default.value == "deny"  # not the built-in "ask": nothing loosened
    assert store.policy.rule_for("s", "x") is not None

    restarted = last_good_store(tmp_path, [])  # the gateway starts again meanwhile
    assert restarted.load() is False
    assert restarted.deleted
    assert restarted.policy.default.value == "deny"

    restore_last_good(policy_file, kept)
    assert policy_file.read_bytes() == json.dumps(GOOD).encode()
    assert store.load() is True
    assert (store.deleted, store.error) == (False, None)
    with pytest.raises(OSError, match="exists; not overwritten"):
        restore_last_good(policy_file, kept)  # never over a policy.json that is there


def test_nothing_to_restore_before_any_policy_was_in_force(tmp_path):
    store = last_good_store(tmp_path, [])
    assert store.load() is True  # the built-in policy: a first run
    assert not store.deleted
    assert store.error is None
    with pytest.raises(OSError, match="keeps no copy"):
        restore_last_good(tmp_path / "config" / "policy.json", tmp_path / "data" / "x.json")


def test_a_deleted_policy_with_an_unusable_kept_copy_goes_back_to_the_default(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "policy.json").write_text(json.dumps(GOOD))
    store = last_good_store(tmp_path, [])
    assert store.load() is True
    (tmp_path / "data" / "policy.last-good.json").write_text("{")  # damaged meanwhile
    (tmp_path / "config" / "policy.json").unlink()
    assert store.load() is True
    assert not store.deleted
    assert store.policy.default.value == "ask"  # the built-in default, which asks
