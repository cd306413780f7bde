"""The gateway exports its audit log when the ``otlp_endpoint`` setting names a
collector: real calls through a real gateway arrive at a real OTLP receiver on loopback,
and the calls made just before it stops are sent as it stops."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from keyring.backend import KeyringBackend

from proxy.config.secrets import SecretStore
from proxy.config.settings import settings_file
from tests.support.harness import Harness, LocalClient, running
from tests.support.otlp_receiver import OtlpReceiver, attributes_of
from tests.support.waiting import eventually

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio]


def tools_received(receiver: OtlpReceiver) -> list[str]:
    return [attributes_of(r.attributes)["lockgate.tool"] for _, r in receiver.log_records()]


async def test_calls_through_the_gateway_reach_the_collector(
    tmp_path: Path, os_keyring: KeyringBackend
) -> None:
    """(The real keyring: the collector's headers are read from it, none here.)"""
    secrets = SecretStore(os_keyring, service=f"lockgate-test-{uuid.uuid4().hex}")
    harness = Harness(tmp_path, secrets=secrets)
    harness.write_policy({"default": "allow", "tools": {"rec/delete_file": {"action": "deny"}}})
    with OtlpReceiver() as receiver:
        settings_file(harness.paths).write_text(json.dumps({"otlp_endpoint": receiver.endpoint}))
        async with running(harness) as gateway, LocalClient.open(harness, client="agent") as agent:
            await agent.handshake(gateway)
            await agent.call("echo", {"text": "hi"})
            await eventually(lambda: tools_received(receiver) == ["echo"], "the first call")
            await agent.call("delete_file", {"path": "/tmp/x"})
        # stopped: what was committed before the stop has gone out
        assert tools_received(receiver) == ["echo", "delete_file"]
        [denied] = [a for a in map(attributes_of, (s.attributes for _, s in receiver.spans()))
                    if a["lockgate.tool"] == "delete_file"]  # fmt: skip
        assert (denied["lockgate.client"], denied["lockgate.decision"]) == ("agent", "denied")


async def test_without_the_setting_nothing_is_sent(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    with OtlpReceiver() as receiver:
        async with running(harness) as gateway, LocalClient.open(harness) as agent:
            await agent.handshake(gateway)
            await agent.call("echo")
        # the gateway has stopped, so an exporter would have sent its last batch
        assert receiver.requests == []


async def test_an_export_that_cannot_start_is_logged_and_the_gateway_serves(
    tmp_path: Path, os_keyring: KeyringBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken cursor file stops the export, not the gateway: calls are decided and
    logged as ever, and the person is told why nothing is exported."""
    secrets = SecretStore(os_keyring, service=f"lockgate-test-{uuid.uuid4().hex}")
    harness = Harness(tmp_path, secrets=secrets)
    harness.paths.data_dir.mkdir(parents=True, exist_ok=True)
    (harness.paths.data_dir / "otlp-cursor.json").write_text("not json")
    with OtlpReceiver() as receiver:
        settings_file(harness.paths).write_text(json.dumps({"otlp_endpoint": receiver.endpoint}))
        async with running(harness) as gateway, LocalClient.open(harness) as agent:
            await agent.handshake(gateway)
            await agent.call("echo")
            assert gateway.audit.count() == 1
        assert receiver.requests == []
    assert "the audit log is not exported to OpenTelemetry" in caplog.text
    assert "otlp-cursor.json" in caplog.text
