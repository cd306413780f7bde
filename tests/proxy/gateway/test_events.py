"""The event bus: every subscriber hears every event, in order; one that fails is logged
and the others still hear it; an unsubscribed one hears nothing more. And what an event
says in words."""

from __future__ import annotations

import logging

import pytest

from proxy.gateway.events import Event, EventBus, PauseChanged, ServersReloaded


def test_every_subscriber_hears_every_event_and_a_failing_one_stops_no_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    first: list[Event] = []
    second: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("a view that crashed")

    bus.subscribe(first.append)
    bus.subscribe(broken)
    stop = bus.subscribe(second.append)
    with caplog.at_level(logging.ERROR, logger="proxy.gateway.events"):
        bus.emit(PauseChanged(1.0, True))
    stop()
    stop()  # twice is harmless
    bus.emit(PauseChanged(2.0, False))
    assert [e.paused for e in first if isinstance(e, PauseChanged)] == [True, False]
    assert [e.paused for e in second if isinstance(e, PauseChanged)] == [True]
    assert "event subscriber" in caplog.text
    assert "PauseChanged" in caplog.text


@pytest.mark.parametrize(
    ("event", "words"),
    [
        (ServersReloaded(0, ("a",)), "no server changed"),
        (
            ServersReloaded(0, (), disabled=("x",), disabled_changed=True),
            "no server in force changed",
        ),
        (
            ServersReloaded(
                0,
                ("a", "b", "e"),
                added=("a", "b"),
                removed=("c", "d"),
                changed=("e",),
                disabled=("d",),
                turned_on=("b",),
                turned_off=("d",),
            ),
            "added a; turned on b; removed c; turned off d; changed e",
        ),
    ],
)
def test_a_servers_reload_says_what_changed_and_a_server_turned_off_is_not_removed(
    event: ServersReloaded, words: str
) -> None:
    assert event.summary() == words
