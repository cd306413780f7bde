"""The crossing from the gateway's thread to the GUI: order, and a backlog in slices.

The host is the real GatewayHost, not started: its inbox is filled here exactly as the
gateway's event bus fills it (``inbox.append`` from another thread), and answers come
back through its real worker pool."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QTimer

from desktop.host import EventPump, GatewayHost
from proxy.config.paths import Paths
from proxy.gateway.events import CallStarted


def started(n: int, start: int = 0) -> list[CallStarted]:
    return [CallStarted(f"c{i}", 1.0, "a", "s", "t", {}) for i in range(start, start + n)]


def host_for(tmp_path: Any) -> GatewayHost:
    return GatewayHost(Paths(config_dir=tmp_path / "config", data_dir=tmp_path / "data"))


def test_a_backlog_is_handed_on_in_slices_in_order(qtbot, tmp_path):
    host = host_for(tmp_path)
    pump = EventPump(host, interval_ms=10, budget_ms=0.0)  # one chunk per turn of the loop
    seen: list[Any] = []
    batches: list[int] = []
    between: list[int] = []  # how much was handed on when the loop next had a turn

    def on_batch(events: list[Any]) -> None:
        seen.extend(events)
        batches.append(len(events))
        if len(batches) == 1:
            QTimer.singleShot(0, lambda: between.append(len(seen)))

    pump.batch.connect(on_batch)
    answered: list[int] = []

    def on_done(future: Any) -> None:  # on the GUI thread, after every event before it
        answered.append(len(seen))

    feeder_events = started(5 * EventPump.CHUNK)
    host._inbox.extend(feeder_events[:1000])
    host.blocking(lambda: None, on_done).result(5)  # its answer is queued after the 1000
    host._inbox.extend(feeder_events[1000:])
    qtbot.waitUntil(lambda: len(seen) == len(feeder_events), timeout=5000)
    assert seen == feeder_events
    assert answered == [1000]
    assert max(batches) <= EventPump.CHUNK
    assert 0 < between[0] < len(feeder_events)  # the loop had turns while it was worked off
    pump.stop()
    host.stop()


def test_pump_hands_on_everything_at_once(qtbot, tmp_path):
    host = host_for(tmp_path)
    pump = EventPump(host, interval_ms=60_000)
    seen: list[Any] = []
    pump.batch.connect(seen.extend)
    events = started(2000)
    host._inbox.extend(events)
    pump.pump()  # as the app does at quit: the last news, whatever the budget
    assert seen == events
    assert pump.backlog == 0
    pump.stop()
    host.stop()


def test_heavy_traffic_slows_the_pump_and_light_traffic_speeds_it_up_again(qtbot, tmp_path):
    host = host_for(tmp_path)
    pump = EventPump(host, interval_ms=20)
    seen: list[Any] = []
    pump.batch.connect(seen.extend)
    host._inbox.extend(started(EventPump.HEAVY + 1))
    qtbot.waitUntil(lambda: pump.interval_ms == 60, timeout=2000)  # fewer repaints
    host._inbox.extend(started(5, start=10_000))
    qtbot.waitUntil(lambda: pump.interval_ms == 20, timeout=2000)
    assert len(seen) == EventPump.HEAVY + 6
    pump.stop()
    host.stop()
