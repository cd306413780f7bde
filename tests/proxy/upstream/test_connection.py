"""One connection to a server: when a crashed one may start again (the backoff, on an
injected clock), and a connection that is down says so instead of sending."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from proxy.config.servers import StdioServer
from proxy.gateway.events import UpstreamDown
from proxy.upstream.connection import Backoff, Upstream, UpstreamUnavailable
from tests.support.harness import (
    INITIALIZE_PARAMS,
    Harness,
    LocalClient,
    recorder_servers,
    running,
    write_json,
)
from tests.support.waiting import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_server_that_keeps_crashing_waits_longer_each_time_up_to_the_longest() -> None:
    clock = Clock()
    backoff = Backoff(first=1, longest=8, healthy_after=60, clock=clock)
    assert backoff.wait() == 0  # a first start is never held back
    waits = []
    for _ in range(6):
        backoff.started()
        clock.now += 0.5
        backoff.crashed()
        waits.append(backoff.wait())
        clock.now += backoff.wait()
    assert waits == [1, 2, 4, 8, 8, 8]


def test_a_server_that_stayed_up_long_enough_starts_again_at_once_next_time() -> None:
    clock = Clock()
    backoff = Backoff(first=1, longest=30, healthy_after=60, clock=clock)
    for _ in range(3):
        backoff.started()
        backoff.crashed()
        clock.now += backoff.wait()
    assert backoff.wait() == 0
    backoff.started()
    clock.now += 61  # a minute of good health
    backoff.crashed()
    assert backoff.wait() == 1


async def test_a_connection_never_started_refuses_calls_and_scrubs_its_secret() -> None:
    async def no_requests(method: str, params: object) -> dict[str, object]:
        raise AssertionError(method)

    async def no_notes(method: str, params: object) -> None:
        return None

    upstream = Upstream(
        StdioServer("fs", "server-fs", ("--token", "tok-123")),
        on_request=no_requests,
        on_notify=no_notes,
        errlog=io.StringIO(),
        secrets=("tok-123",),
    )
    with pytest.raises(UpstreamUnavailable, match="server 'fs' is down"):
        await upstream.request("tools/list", None)
    await upstream.notify("notifications/initialized", None)  # dropped, not raised
    assert upstream.scrub("failed with tok-123") == "failed with [secret]"


FAILS_TO_START = (
    "import sys; print('starting', file=sys.stderr); "
    "print('fatal: missing API key', file=sys.stderr); sys.exit(3)"
)


async def test_a_server_that_fails_to_start_is_reported_with_its_last_words(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path)
    write_json(
        harness.paths.servers_file,
        recorder_servers(
            harness.record, broken={"command": sys.executable, "args": ["-c", FAILS_TO_START]}
        ),
    )
    harness.write_policy({"default": "allow"})
    async with running(harness), LocalClient.open(harness, server="broken") as client:
        answer = await client.request("initialize", INITIALIZE_PARAMS)
        assert answer["error"]["message"] == (  # what the agent is told
            "server 'broken' could not start: the server closed the connection (did it "
            "exit?); it said: starting / fatal: missing API key"
        )
        # What the Servers tab shows as the server's last error:
        await eventually(
            lambda: any(isinstance(e, UpstreamDown) and e.error for e in harness.events),
            "the server's end to be reported",
        )
        told = next(e.error for e in harness.events if isinstance(e, UpstreamDown) and e.error)
        assert "it said: starting / fatal: missing API key" in told, told
