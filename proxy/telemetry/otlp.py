"""The audit log, exported over OpenTelemetry (OTLP over HTTP, protobuf), opt-in.

Each call becomes one **log record** (its time, a sentence that says what happened, INFO
for a call that went through and WARN for one that was denied or refused, and every field
of the record as a ``lockgate.*`` attribute) and one **span** ``tools/call SERVER/TOOL``
(from the call's arrival to its end: ``duration_ms`` later, or the same instant for a
call that was blocked; status ERROR unless its outcome is ``ok``) with the same
attributes. The log record carries the span's trace and span id, so that a backend links
the two. The ids are derived from the call's id, so a call sent twice (see below) is the
same span twice, which backends fold into one.

What is sent is exactly what the audit log holds: its arguments as stored (redacted by
:func:`proxy.audit.redact.redact`), its findings as kind and place, never a value. Nothing
is sent unless the ``otlp_endpoint`` setting names a collector; plain http only to this
computer (``localhost``, a loopback address), https everywhere else, so that a laptop's
calls never cross a network in clear text. The collector's headers (often an API key) are
the keyring secret ``otlp-headers`` (``key=value,key2=value2``, values percent-encoded as
the OpenTelemetry environment variables have them; ``lockgate secret set otlp-headers``):
never in a file, never in a log line or an error's text.

**Tailing, not listening.** The exporter reads the committed audit database in commit
order (:meth:`proxy.audit.log.AuditReader.since`), a batch at a time, on a thread of its
own polling about once a second, so that the gateway never waits for a collector and a
collector never sees a call that is not in the audit log. A call is exported once it has
its outcome: a batch stops at the first call still ``pending`` (sent upstream, no answer
yet), and that call and every later one wait for the next poll, so that the order holds
and the cursor stays one number. A call that hangs keeps the later ones waiting until it
ends (or, after a restart, is marked ``interrupted``).

**The cursor** (``otlp-cursor.json`` in the data folder: the rowid of the last call the
collector accepted) is written atomically after each batch both signals accepted. After
an outage (the collector down, a 4xx or 5xx answer) or a restart, the export goes on from
there: nothing is lost. It is *at least once*: a crash between the collector's answer and
the cursor's write, or a batch whose logs were accepted and whose spans were not, sends
those calls again. An outage is logged once (logger ``proxy.telemetry.otlp``), retried
with a growing pause (up to a minute), and its end is logged too; it never touches the
gateway. With no cursor file the export starts at the log's first call: turning it on
sends the history the log keeps.

The OpenTelemetry SDK objects here are private to each exporter (no global provider is
set): its own ``LoggerProvider`` and ``TracerProvider`` build the records and spans, and
the OTLP exporters send each batch synchronously, so that the cursor moves only past
what the collector accepted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import (
    LoggerProvider,
    LogRecordProcessor,
    ReadableLogRecord,
    ReadWriteLogRecord,
)
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode

from proxy.audit.database import AuditError
from proxy.audit.log import AuditReader
from proxy.audit.records import CallDecision, CallRecord, Outcome
from proxy.cli.common import version
from proxy.config.atomic import write_atomic
from proxy.config.paths import Paths
from proxy.config.secrets import SecretError, SecretStore
from proxy.config.settings import Settings, SettingsError, check_otlp_endpoint
from proxy.errors import LockgateError

__all__ = [
    "CURSOR_FILE",
    "HEADERS_SECRET",
    "AuditExporter",
    "ExportStatus",
    "TelemetryError",
    "call_attributes",
    "parse_headers",
    "start_audit_export",
]

logger = logging.getLogger(__name__)

CURSOR_FILE: Final = "otlp-cursor.json"  # in the data folder
HEADERS_SECRET: Final = "otlp-headers"  # noqa: S105 (the keyring entry's name, not a value)
BATCH: Final = 512  # calls per export request
MAX_BACKOFF: Final = 60.0  # the longest pause between two tries in an outage, seconds
_SCOPE: Final = "lockgate.audit"
_HEADER_NAME_CHARS: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_THROUGH: Final = frozenset({CallDecision.ALLOWED, CallDecision.APPROVED})


class TelemetryError(LockgateError):
    """The audit log's export to OpenTelemetry cannot start as configured."""

    title = "The audit log cannot be exported to OpenTelemetry"


@dataclass(frozen=True, slots=True)
class ExportStatus:
    """How the export goes (for ``lockgate status``)."""

    endpoint: str  # the collector's base URL
    sent: int  # calls the collector accepted since this exporter started
    last_sent: float | None  # when it last accepted a batch (epoch seconds); None: not yet
    last_error: str | None  # why the last try failed; None: it did not (or none failed yet)
    cursor: int  # the rowid of the last call accepted (0: none yet)


def parse_headers(text: str) -> dict[str, str]:
    """The headers in ``text`` (``key=value,key2=value2``; values percent-decoded).

    Raises:
        TelemetryError: ``text`` is not that; the message never repeats a value.
    """
    headers: dict[str, str] = {}
    for number, entry in enumerate(text.split(","), 1):
        if not entry.strip():
            continue
        name, sep, value = entry.partition("=")
        name = name.strip()
        if not sep or not name or not set(name) <= _HEADER_NAME_CHARS:
            raise TelemetryError(
                f"the keyring secret {HEADERS_SECRET!r} must be headers as "
                f'"key=value,key2=value2"; its entry {number} is not; store it again with: '
                f"lockgate secret set {HEADERS_SECRET}"
            )
        decoded = unquote(value.strip())
        if any(ch in decoded for ch in "\r\n\0"):
            raise TelemetryError(
                f"the keyring secret {HEADERS_SECRET!r}: the value of header {name!r} holds "
                f"a line break; store it again with: lockgate secret set {HEADERS_SECRET}"
            )
        headers[name] = decoded
    return headers


def _text(value: str) -> str:
    """``value`` as UTF-8 can carry it (a lone surrogate escaped), for protobuf."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _json(value: Any) -> str:
    return _text(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def call_attributes(record: CallRecord) -> dict[str, str | int | float]:
    """The ``lockgate.*`` attributes of ``record``'s log record and span: every field the
    audit log keeps, those it has no value for left out (OpenTelemetry has no null)."""
    fields: dict[str, Any] = record.as_dict()  # the record as `lockgate log --json` has it
    del fields["time"], fields["ts"]  # the log record's and the span's own timestamps
    fields["call_id"] = fields.pop("id")
    fields["findings"] = _json(fields["findings"])
    fields["arguments"] = _json(fields["arguments"])
    return {
        f"lockgate.{name}": _text(value) if isinstance(value, str) else value
        for name, value in fields.items()
        if value is not None
    }


def _sentence(record: CallRecord) -> str:
    """What happened, in a line: ``cursor called github/delete_repo: denied (rule github/*)``."""
    why = " ".join(part for part in (record.basis, record.rule) if part)
    text = f"{record.client} called {record.server}/{record.tool}: "
    text += CallDecision(record.decision).value + (f" ({why})" if why else "")
    if record.outcome is not Outcome.BLOCKED:
        text += f", {Outcome(record.outcome).value}"
    return _text(text)


def _nanos(seconds: float) -> int:
    return round(seconds * 1_000_000) * 1000  # to the microsecond: no float noise below


class _CallIds(IdGenerator):
    """Trace and span ids from the call's id (set just before its span starts): a call
    sent twice is the same span twice. Used by the exporter's own thread only."""

    def __init__(self) -> None:
        self.call_id = ""

    def _digest(self) -> bytes:
        return hashlib.sha256(self.call_id.encode("utf-8", "backslashreplace")).digest()

    def generate_trace_id(self) -> int:
        return int.from_bytes(self._digest()[:16], "big") or 1

    def generate_span_id(self) -> int:
        return int.from_bytes(self._digest()[16:24], "big") or 1


class _KeepLogs(LogRecordProcessor):
    """Keeps what the logger emits, for the exporter to send as one batch."""

    def __init__(self) -> None:
        self.kept: list[ReadableLogRecord] = []

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        # made read-only as the SDK's own processors do before they export
        assert log_record.resource is not None  # Logger.emit sets it
        self.kept.append(
            ReadableLogRecord(
                log_record=log_record.log_record,
                resource=log_record.resource,
                instrumentation_scope=log_record.instrumentation_scope,
                limits=log_record.limits,
            )
        )

    def shutdown(self) -> None:
        self.kept.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _KeepSpans(SpanProcessor):
    """Keeps the spans that end, for the exporter to send as one batch."""

    def __init__(self) -> None:
        self.kept: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.kept.append(span)

    def shutdown(self) -> None:
        self.kept.clear()


class AuditExporter:
    """Sends the committed calls of the audit database ``audit_db`` to the collector at
    ``endpoint`` (its base URL: the signals go to ``/v1/logs`` and ``/v1/traces``).

    :meth:`start` runs it on a daemon thread that polls every ``interval`` seconds;
    :meth:`export_once` runs one batch on the calling thread (tests drive it so). The
    cursor lives in ``cursor_file``. ``clock`` stamps :attr:`status` and the records'
    observed time.
    """

    def __init__(
        self,
        audit_db: Path,
        endpoint: str,
        *,
        cursor_file: Path,
        headers: Mapping[str, str] | None = None,
        interval: float = 1.0,
        batch: int = BATCH,
        timeout: float = 10.0,
        max_backoff: float = MAX_BACKOFF,
        clock: Callable[[], float] = time.time,
        service_version: str | None = None,
        host_name: str | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self._reader = AuditReader(audit_db)
        self._endpoint = endpoint.rstrip("/")
        self._cursor_file = cursor_file
        self._secrets = tuple(v for v in (headers or {}).values() if v)
        self._interval = interval
        self._batch = batch
        self._max_backoff = max_backoff
        self._clock = clock
        self._cursor = _read_cursor(cursor_file)
        self._sent = 0
        self._last_sent: float | None = None
        self._last_error: str | None = None
        self._failures = 0  # tries failed in a row: the outage's length
        self._lock = threading.Lock()  # one batch at a time; the status
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        resource = Resource.create(
            {
                "service.name": "lockgate",
                "service.version": service_version or version(),
                "host.name": host_name or socket.gethostname(),
            }
        )
        self._logs = _KeepLogs()
        self._log_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self._log_provider.add_log_record_processor(self._logs)
        self._logger = self._log_provider.get_logger(_SCOPE, version())
        self._ids = _CallIds()
        self._spans = _KeepSpans()
        self._tracer_provider = TracerProvider(
            sampler=ALWAYS_ON, resource=resource, shutdown_on_exit=False, id_generator=self._ids
        )
        self._tracer_provider.add_span_processor(self._spans)
        self._tracer = self._tracer_provider.get_tracer(_SCOPE, version())
        sending: dict[str, Any] = {
            "headers": dict(headers or {}),
            "timeout": timeout,
            "compression": Compression.Gzip,
        }
        self._log_exporter = OTLPLogExporter(endpoint=f"{self._endpoint}/v1/logs", **sending)
        self._span_exporter = OTLPSpanExporter(endpoint=f"{self._endpoint}/v1/traces", **sending)

    @property
    def status(self) -> ExportStatus:
        with self._lock:
            return ExportStatus(
                self._endpoint, self._sent, self._last_sent, self._last_error, self._cursor
            )

    def start(self) -> None:
        """Poll and send on a daemon thread, until :meth:`stop`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lockgate-otlp", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop polling, send what is committed (unless the collector is failing: that
        waits for the next start), and let the SDK go. Idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            failing = self._failures > 0
        while not failing and self.export_once() == self._batch:
            pass  # a full batch: there may be more
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._log_exporter.shutdown()  # type: ignore[no-untyped-call]  # unannotated in the SDK
        self._span_exporter.shutdown()  # type: ignore[no-untyped-call]
        self._log_provider.shutdown()
        self._tracer_provider.shutdown()

    def export_once(self) -> int:
        """Send the next batch of finished calls; how many the collector accepted (0: none
        was waiting, or the try failed: :attr:`status` says why). Never raises for a
        collector or a database that fails."""
        with self._lock:
            try:
                rows = self._reader.since(self._cursor, limit=self._batch)
            except AuditError as exc:
                if not self._reader.path.exists():
                    return 0  # no call yet: the gateway makes the log as it starts
                self._failed(f"cannot read the audit log: {exc}")
                return 0
            ready: list[tuple[int, CallRecord]] = []
            for row in rows:
                if row[1].outcome is Outcome.PENDING:
                    break  # it and the later ones wait for its outcome: the order holds
                ready.append(row)
            if not ready:
                return 0
            try:
                logs, spans = self._convert([record for _, record in ready])
                if self._span_exporter.export(spans) is not SpanExportResult.SUCCESS:
                    self._failed(f"the collector at {self._endpoint} did not take the spans")
                    return 0
                if self._log_exporter.export(logs) is not LogRecordExportResult.SUCCESS:
                    self._failed(f"the collector at {self._endpoint} did not take the logs")
                    return 0
            except Exception as exc:  # an SDK's fault must not stop the export for good
                self._failed(f"{type(exc).__name__}: {exc}")
                return 0
            cursor = ready[-1][0]
            try:
                _write_cursor(self._cursor_file, cursor)
            except OSError as exc:
                # sent, and sent again after a restart unless a later write succeeds
                self._failed(f"cannot write {self._cursor_file}: {exc}")
            else:
                self._recovered()
            self._cursor = cursor
            self._sent += len(ready)
            self._last_sent = self._clock()
            return len(ready)

    def _convert(
        self, records: Sequence[CallRecord]
    ) -> tuple[list[ReadableLogRecord], list[ReadableSpan]]:
        self._logs.kept.clear()
        self._spans.kept.clear()
        observed = _nanos(self._clock())
        for record in records:
            attributes = call_attributes(record)
            start = _nanos(record.time)
            end = start + round((record.duration_ms or 0.0) * 1_000_000)
            self._ids.call_id = record.id
            span = self._tracer.start_span(
                f"tools/call {record.server}/{record.tool}",
                context=otel_context.Context(),  # a root: never a parent from this thread
                kind=SpanKind.SERVER,
                attributes=attributes,
                start_time=start,
            )
            if record.outcome is not Outcome.OK:
                span.set_status(Status(StatusCode.ERROR, _text(record.error or record.outcome)))
            span.end(end_time=max(start, end))
            through = record.decision in _THROUGH
            self._logger.emit(
                timestamp=start,
                observed_timestamp=observed,
                context=trace.set_span_in_context(span, otel_context.Context()),
                severity_number=SeverityNumber.INFO if through else SeverityNumber.WARN,
                severity_text="INFO" if through else "WARN",
                body=_sentence(record),
                attributes=attributes,
                event_name="lockgate.tool_call",
            )
        return list(self._logs.kept), list(self._spans.kept)

    def _scrubbed(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def _failed(self, why: str) -> None:
        why = self._scrubbed(why)
        if self._failures == 0:
            logger.warning(
                "exporting the audit log to OpenTelemetry failed (%s); retrying, the calls "
                "wait in the audit log",
                why,
            )
        self._failures += 1
        self._last_error = why

    def _recovered(self) -> None:
        if self._failures:
            logger.warning(
                "exporting the audit log to OpenTelemetry works again, after %d failed tries",
                self._failures,
            )
        self._failures = 0
        self._last_error = None

    def _pause(self) -> float:
        with self._lock:
            failures = self._failures
        if failures == 0:
            return self._interval
        return min(self._interval * 2.0 ** min(failures, 30), self._max_backoff)

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self.export_once() == self._batch:
                continue  # a full batch: more may wait
            self._stopping.wait(self._pause())


def _read_cursor(path: Path) -> int:
    """The rowid in the cursor file; 0 (from the first call) when there is none.

    Raises:
        TelemetryError: the file is there but unreadable or not a cursor (a person may
            delete it to send the whole log again).
    """
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TelemetryError(
            f"{path}: cannot read it ({exc}); delete it to send every call again"
        ) from None
    rowid = data.get("rowid") if isinstance(data, dict) else None
    if not isinstance(rowid, int) or isinstance(rowid, bool) or rowid < 0:
        raise TelemetryError(f"{path}: not an export cursor; delete it to send every call again")
    return rowid


def _write_cursor(path: Path, rowid: int) -> None:
    write_atomic(path, (json.dumps({"rowid": rowid}) + "\n").encode("utf-8"))


def start_audit_export(
    paths: Paths,
    settings: Settings,
    secrets: SecretStore,
    *,
    interval: float = 1.0,
    clock: Callable[[], float] = time.time,
    max_backoff: float = MAX_BACKOFF,
) -> AuditExporter | None:
    """Start exporting ``paths.audit_db`` to ``settings.otlp_endpoint`` on a thread of its
    own; None (and nothing sent, nothing read) when that setting is empty. Stop it with
    :meth:`AuditExporter.stop`. Blocking (the keyring): call it off the event loop.

    Raises:
        TelemetryError: the endpoint is not one to send calls to (plain http over a
            network), the headers secret is not ``key=value,...``, the keyring cannot be
            read, or the cursor file is broken.
    """
    endpoint = settings.otlp_endpoint
    if not endpoint:
        return None
    try:  # Settings made in code are not checked as settings.json is
        check_otlp_endpoint(endpoint)
    except SettingsError as exc:
        raise TelemetryError(exc.message) from None
    try:
        text = secrets.find(HEADERS_SECRET)
    except SecretError as exc:
        raise TelemetryError(
            f"cannot read the collector's headers ({HEADERS_SECRET}): {exc.message}"
        ) from None
    exporter = AuditExporter(
        paths.audit_db,
        endpoint,
        cursor_file=paths.data_dir / CURSOR_FILE,
        headers=parse_headers(text or ""),
        interval=interval,
        clock=clock,
        max_backoff=max_backoff,
    )
    exporter.start()
    return exporter
