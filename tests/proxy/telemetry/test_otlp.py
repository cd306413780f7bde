"""The audit log's export to OpenTelemetry, against a real OTLP/HTTP receiver on loopback
(tests/support/otlp_receiver.py), with real calls in a real audit log and the collector's
headers in the real keyring (GNOME Keyring on a private D-Bus)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from keyring.backend import KeyringBackend

from proxy.audit.log import AuditLog
from proxy.audit.records import CallDecision, Outcome
from proxy.cli.common import version
from proxy.config.paths import Paths
from proxy.config.secrets import SecretStore
from proxy.config.settings import Settings
from proxy.telemetry import (
    CURSOR_FILE,
    HEADERS_SECRET,
    AuditExporter,
    TelemetryError,
    start_audit_export,
)
from proxy.telemetry.otlp import parse_headers
from tests.support.otlp_receiver import OtlpReceiver, attributes_of
from tests.support.records import make_record
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.timeout(60)

API_KEY = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(config_dir=tmp_path / "config", data_dir=tmp_path / "data")


@pytest.fixture
def audit(paths: Paths) -> Iterator[AuditLog]:
    with AuditLog(paths.audit_db) as log:
        yield log


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture
def secrets(os_keyring: KeyringBackend) -> SecretStore:
    """The real keyring, under a service of this test's own (so no test sees another's)."""
    return SecretStore(os_keyring, service=f"lockgate-test-{uuid.uuid4().hex}")


def exporter_for(paths: Paths, endpoint: str, **options: Any) -> AuditExporter:
    options.setdefault("clock", lambda: 1_800_000_000.0)
    return AuditExporter(
        paths.audit_db, endpoint, cursor_file=paths.data_dir / CURSOR_FILE, **options
    )


def cursor(paths: Paths) -> int | None:
    path = paths.data_dir / CURSOR_FILE
    return json.loads(path.read_text())["rowid"] if path.exists() else None


def call_ids(receiver: OtlpReceiver) -> list[str]:
    return [attributes_of(r.attributes)["lockgate.call_id"] for _, r in receiver.log_records()]


def span_ids(receiver: OtlpReceiver) -> list[str]:
    return [attributes_of(s.attributes)["lockgate.call_id"] for _, s in receiver.spans()]


def test_each_call_is_one_log_record_and_one_span_with_every_field_and_the_keyring_headers(
    paths: Paths, audit: AuditLog, receiver: OtlpReceiver, secrets: SecretStore
) -> None:
    secrets.set(HEADERS_SECRET, "x-api-key=team%2Dkey%3D42, X-Tenant = laptops")
    allowed = make_record(
        arguments={"path": "/home/me/notes.txt", "api_key": API_KEY},
        client_info="Claude Desktop 1.2",
        protocol="2025-11-25",
        case=1,
        findings=({"kind": "AWS Access Key", "where": "content[0].text"},),
        secrets="redacted",
        waited_ms=1500.0,  # a person let it through
        layer="team",  # the team's policy decided
    )
    denied = make_record(
        time=1_700_000_001.5,
        client="cursor",
        server="github",
        tool="delete_repo",
        arguments={"repo": "me/site"},
        decision=CallDecision.DENIED,
        basis="rule",
        rule="github/*",
        reason="github/delete_repo is denied by the policy",
        outcome=Outcome.BLOCKED,
        duration_ms=None,
        result_size=None,
    )
    failed = make_record(
        time=1_700_000_002.0,
        decision=CallDecision.APPROVED,
        basis="person",
        rule=None,
        outcome=Outcome.UPSTREAM_DOWN,
        error="the server files stopped",
        duration_ms=1500.0,
    )
    for record in (allowed, denied, failed):
        audit.write_sync(record)
    settings = Settings(otlp_endpoint=receiver.endpoint + "/")
    exporter = start_audit_export(
        paths, settings, secrets, interval=0.02, clock=lambda: 1_800_000_000.0
    )
    assert exporter is not None
    try:
        eventually_sync(lambda: len(call_ids(receiver)) == 3, "three log records")
        eventually_sync(lambda: len(span_ids(receiver)) == 3, "three spans")
        status = exporter.status
    finally:
        exporter.stop()
    assert (status.sent, status.cursor, status.last_error) == (3, 3, None)
    assert status.endpoint == receiver.endpoint
    assert cursor(paths) == 3

    for request in receiver.requests:  # the keyring's headers, as HTTP headers
        assert request.headers["x-api-key"] == "team-key=42"
        assert request.headers["x-tenant"] == "laptops"
        assert request.headers["content-type"] == "application/x-protobuf"
    assert {r.path for r in receiver.requests} == {"/v1/logs", "/v1/traces"}

    logs = list(receiver.log_records())
    spans = {
        attributes_of(s.attributes)["lockgate.call_id"]: (res, s) for res, s in receiver.spans()
    }
    assert [attributes_of(r.attributes)["lockgate.call_id"] for _, r in logs] == [
        allowed.id,
        denied.id,
        failed.id,
    ]
    for resource, _ in [*logs, *spans.values()]:
        assert resource["service.name"] == "lockgate"
        assert resource["service.version"] == version()
        assert resource["host.name"]

    (_, first), (_, second), (_, third) = logs
    assert attributes_of(first.attributes) == {
        "lockgate.call_id": allowed.id,
        "lockgate.client": "claude-desktop",
        "lockgate.client_info": "Claude Desktop 1.2",
        "lockgate.server": "files",
        "lockgate.tool": "read_file",
        "lockgate.decision": "allowed",
        "lockgate.basis": "rule",
        "lockgate.rule": "files/read_*",
        "lockgate.case": 1,
        "lockgate.reason": "files/read_file is allowed by the policy",
        "lockgate.outcome": "ok",
        "lockgate.duration_ms": 12.5,
        "lockgate.result_size": 321,
        "lockgate.secrets": "redacted",
        "lockgate.findings": '[{"kind":"AWS Access Key","where":"content[0].text"}]',
        "lockgate.arguments": '{"path":"/home/me/notes.txt","api_key":"[redacted]"}',
        "lockgate.protocol": "2025-11-25",
        "lockgate.waited_ms": 1500.0,
        "lockgate.layer": "team",
    }
    assert first.time_unix_nano == 1_700_000_000_250_000_000
    assert first.observed_time_unix_nano == 1_800_000_000_000_000_000  # the injected clock
    assert (first.severity_text, first.severity_number) == ("INFO", 9)
    assert first.body.string_value == (
        "claude-desktop called files/read_file: allowed (rule files/read_*), ok"
    )
    assert first.event_name == "lockgate.tool_call"

    assert attributes_of(second.attributes)["lockgate.outcome"] == "blocked"
    assert "lockgate.duration_ms" not in attributes_of(second.attributes)  # no null in OTLP
    assert (second.severity_text, second.severity_number) == ("WARN", 13)
    assert second.body.string_value == "cursor called github/delete_repo: denied (rule github/*)"
    assert second.time_unix_nano == 1_700_000_001_500_000_000
    assert third.body.string_value == (
        "claude-desktop called files/read_file: approved (person), upstream_down"
    )
    assert (third.severity_text, attributes_of(third.attributes)["lockgate.error"]) == (
        "INFO",
        "the server files stopped",
    )

    for _, log in logs:  # each log record names its span: the backend links them
        record_attributes = attributes_of(log.attributes)
        _, span = spans[record_attributes["lockgate.call_id"]]
        assert (log.trace_id, log.span_id) == (span.trace_id, span.span_id)
        assert len(span.trace_id) == 16
        assert len(span.span_id) == 8
        assert attributes_of(span.attributes) == record_attributes
        assert span.start_time_unix_nano == log.time_unix_nano
        assert span.parent_span_id == b""
    _, ok_span = spans[allowed.id]
    assert ok_span.name == "tools/call files/read_file"
    assert ok_span.end_time_unix_nano == 1_700_000_000_262_500_000  # 12.5 ms later
    assert ok_span.status.code == 0  # unset: fine
    _, blocked_span = spans[denied.id]
    assert blocked_span.name == "tools/call github/delete_repo"
    assert blocked_span.end_time_unix_nano == blocked_span.start_time_unix_nano
    assert (blocked_span.status.code, blocked_span.status.message) == (2, "blocked")
    _, down_span = spans[failed.id]
    assert down_span.end_time_unix_nano - down_span.start_time_unix_nano == 1_500_000_000
    assert (down_span.status.code, down_span.status.message) == (2, "the server files stopped")
    assert len({span.trace_id for _, span in spans.values()}) == 3  # a trace a call

    everything = b"".join(r.message.SerializeToString() for r in receiver.requests)
    assert API_KEY.encode() not in everything  # the audit log's redaction is what left
    assert b"[redacted]" in everything


def test_nothing_is_sent_or_read_when_no_endpoint_is_set(
    paths: Paths, audit: AuditLog, receiver: OtlpReceiver, secrets: SecretStore
) -> None:
    audit.write_sync(make_record())
    assert start_audit_export(paths, Settings(), secrets) is None
    assert Settings().otlp_endpoint == ""
    # the receiver works: a poll driven here reaches it, and nothing came before it
    exporter = exporter_for(paths, receiver.endpoint)
    assert receiver.requests == []
    assert exporter.export_once() == 1
    exporter.stop()
    assert [r.path for r in receiver.requests] == ["/v1/traces", "/v1/logs"]


def test_a_pending_call_waits_for_its_outcome_and_the_later_calls_wait_behind_it(
    paths: Paths, audit: AuditLog, receiver: OtlpReceiver
) -> None:
    first, later = make_record(), make_record(time=1_700_000_003.0)
    audit.write_sync(first)
    pending = make_record(time=1_700_000_002.0)
    asyncio.run(audit.begin(pending))
    audit.write_sync(later)
    exporter = exporter_for(paths, receiver.endpoint)
    assert exporter.export_once() == 1
    assert exporter.export_once() == 0  # the pending call holds the batch
    assert call_ids(receiver) == [first.id]
    assert cursor(paths) == 1
    asyncio.run(audit.finish(pending.id, Outcome.OK, duration_ms=3.0, result_size=10))
    assert exporter.export_once() == 2
    exporter.stop()
    assert call_ids(receiver) == [first.id, pending.id, later.id]
    finished = [r for _, r in receiver.log_records()][1]
    assert attributes_of(finished.attributes)["lockgate.outcome"] == "ok"
    assert cursor(paths) == 3


def test_an_outage_loses_nothing_sends_nothing_twice_and_is_logged_once(
    paths: Paths, audit: AuditLog, receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="proxy.telemetry.otlp")
    records = [make_record(time=1_700_000_000.0 + n) for n in range(3)]
    audit.write_sync(records[0])
    receiver.fail_with = 503
    exporter = exporter_for(paths, receiver.endpoint, interval=0.01, max_backoff=0.05, timeout=0.5)
    exporter.start()
    try:
        eventually_sync(lambda: len(receiver.requests) >= 3, "three tries in the outage")
        audit.write_sync(records[1])
        during = exporter.status
        assert during.last_error == f"the collector at {receiver.endpoint} did not take the spans"
        assert (during.sent, during.cursor, cursor(paths)) == (0, 0, None)
        receiver.fail_with = None
        eventually_sync(lambda: len(call_ids(receiver)) == 2, "the calls after the outage")
        audit.write_sync(records[2])
        eventually_sync(lambda: len(call_ids(receiver)) == 3, "the call after that")
    finally:
        exporter.stop()
    assert call_ids(receiver) == [r.id for r in records]  # each once, in order
    assert span_ids(receiver) == [r.id for r in records]
    assert cursor(paths) == 3
    assert exporter.status.last_error is None
    ours = [r for r in caplog.records if r.name == "proxy.telemetry.otlp"]
    assert next(r.getMessage() for r in ours).startswith(
        "exporting the audit log to OpenTelemetry failed (the collector at"
    )
    assert len(ours) == 2, [r.getMessage() for r in ours]  # failed once, works again once
    assert "works again" in ours[1].getMessage()


def test_a_restart_goes_on_from_the_cursor(
    paths: Paths, audit: AuditLog, receiver: OtlpReceiver
) -> None:
    before = [make_record(), make_record()]
    for record in before:
        audit.write_sync(record)
    exporter = exporter_for(paths, receiver.endpoint, batch=1)
    exporter.start()
    eventually_sync(lambda: len(call_ids(receiver)) == 2, "the first two calls")
    exporter.stop()
    exporter.stop()  # idempotent
    assert cursor(paths) == 2
    after = [make_record(), make_record(), make_record()]
    for record in after:
        audit.write_sync(record)
    again = exporter_for(paths, receiver.endpoint, batch=2)
    assert again.status.cursor == 2
    again.stop()  # stop sends what is committed, a batch at a time
    assert call_ids(receiver) == [r.id for r in before + after]
    assert cursor(paths) == 5


def test_a_broken_cursor_file_is_told_not_guessed(paths: Paths, receiver: OtlpReceiver) -> None:
    path = paths.data_dir / CURSOR_FILE
    path.parent.mkdir(parents=True)
    for text in ("{", '{"rowid": -1}', "[1]"):
        path.write_text(text)
        with pytest.raises(TelemetryError, match="delete it to send every call again"):
            exporter_for(paths, receiver.endpoint)


def test_no_audit_log_yet_is_nothing_to_send(paths: Paths, receiver: OtlpReceiver) -> None:
    exporter = exporter_for(paths, receiver.endpoint)
    assert exporter.export_once() == 0
    assert exporter.status.last_error is None
    exporter.stop()
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("endpoint", "told"),
    [
        ("http://192.0.2.10:4318", "must use https unless it is this computer"),
        ("http://otel.example.com", "must not cross a network in clear text"),
        ("ftp://127.0.0.1:4318", "must be an http or https URL"),
        ("https://user:hunter2@otel.example.com", "must not hold a user or password"),
    ],
)
def test_an_endpoint_that_would_send_calls_in_clear_text_is_refused(
    paths: Paths, secrets: SecretStore, endpoint: str, told: str
) -> None:
    with pytest.raises(TelemetryError, match=told) as refused:
        start_audit_export(paths, Settings(otlp_endpoint=endpoint), secrets)
    assert "hunter2" not in refused.value.told()


def test_headers_that_are_not_key_value_are_refused_without_repeating_them(
    paths: Paths, receiver: OtlpReceiver, secrets: SecretStore
) -> None:
    secrets.set(HEADERS_SECRET, "Authorization Bearer-abc123secret")
    with pytest.raises(TelemetryError, match="entry 1 is not") as refused:
        start_audit_export(paths, Settings(otlp_endpoint=receiver.endpoint), secrets)
    assert "abc123secret" not in refused.value.told()
    with pytest.raises(TelemetryError, match="a line break") as refused:
        parse_headers("a=1,x-key=abc%0D%0Ahunter2")
    assert "hunter2" not in refused.value.message
    assert parse_headers("") == {}
    assert parse_headers("a=1,,b = x=y ") == {"a": "1", "b": "x=y"}


def test_errors_never_carry_a_header_value(paths: Paths, audit: AuditLog) -> None:
    # a collector that cannot be reached: a closed port on loopback
    with OtlpReceiver() as gone:
        endpoint = gone.endpoint
    audit.write_sync(make_record())
    exporter = exporter_for(paths, endpoint, headers={"x-key": "v4lue-of-key"}, timeout=0.5)
    assert exporter.export_once() == 0
    error = exporter.status.last_error
    assert error is not None
    assert "v4lue-of-key" not in error
    assert exporter._scrubbed("boom v4lue-of-key") == "boom [redacted]"
    exporter.stop()
