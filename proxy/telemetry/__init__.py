"""Telemetry: the audit log, sent on to a team's own observability backend, opt-in.

:mod:`proxy.telemetry.otlp` tails the committed audit database (never the gateway's
in-memory events) and exports each finished call as one OpenTelemetry log record and one
span, over OTLP/HTTP with protobuf, to the collector the ``otlp_endpoint`` setting names;
its headers (API keys) come from the keyring secret ``otlp-headers``. What leaves is what
the audit log holds, already redacted. Its cursor (``otlp-cursor.json`` in the data
folder) makes an outage or a restart lose nothing; :func:`~proxy.telemetry.otlp.start_audit_export`
starts it, on a thread of its own, so that the gateway never waits for a collector.
"""

from proxy.telemetry.otlp import (
    CURSOR_FILE,
    HEADERS_SECRET,
    AuditExporter,
    ExportStatus,
    TelemetryError,
    start_audit_export,
)

__all__ = [
    "CURSOR_FILE",
    "HEADERS_SECRET",
    "AuditExporter",
    "ExportStatus",
    "TelemetryError",
    "start_audit_export",
]
