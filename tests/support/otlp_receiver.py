"""A real OTLP/HTTP receiver on loopback, for tests of what Lockgate exports.

:class:`OtlpReceiver` is an ``http.server`` on 127.0.0.1 (a port of its own) that takes
``POST /v1/logs`` and ``POST /v1/traces`` as a collector does: protobuf bodies, gzip or
deflate if the sender compressed them, decoded with the OpenTelemetry proto package the
exporter itself uses. It keeps every request (path, headers, decoded message) and answers
200, or the status :attr:`OtlpReceiver.fail_with` says (503 for an outage).
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["OtlpReceiver", "Received", "attributes_of", "value_of"]


@dataclass(frozen=True)
class Received:
    """One request as it arrived: its path, headers (names in lower case), status sent."""

    path: str
    headers: dict[str, str]
    message: ExportLogsServiceRequest | ExportTraceServiceRequest
    status: int


def value_of(value: AnyValue) -> Any:
    """An OTLP AnyValue as plain Python."""
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    return None if kind is None else getattr(value, kind)


def attributes_of(pairs: Any) -> dict[str, Any]:
    """OTLP attributes (KeyValue pairs) as a dict."""
    items: list[KeyValue] = list(pairs)
    return {pair.key: value_of(pair.value) for pair in items}


class OtlpReceiver:
    """A collector's OTLP/HTTP receiver on 127.0.0.1; a context manager."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.fail_with: int | None = None  # answer this status instead of taking the data
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                message: ExportLogsServiceRequest | ExportTraceServiceRequest
                if self.path == "/v1/logs":
                    message, answer = ExportLogsServiceRequest(), ExportLogsServiceResponse()
                elif self.path == "/v1/traces":
                    message, answer = ExportTraceServiceRequest(), ExportTraceServiceResponse()
                else:
                    self.send_error(404)
                    return
                message.ParseFromString(body)
                status = receiver.fail_with or 200
                headers = {name.lower(): value for name, value in self.headers.items()}
                with receiver._lock:
                    receiver.requests.append(Received(self.path, headers, message, status))
                payload = answer.SerializeToString() if status == 200 else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reads the requests

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def taken(self, path: str) -> list[Received]:
        """The requests to ``path`` answered 200, in order."""
        with self._lock:
            return [r for r in self.requests if r.path == path and r.status == 200]

    def log_records(self) -> Iterator[tuple[dict[str, Any], Any]]:
        """Every log record taken: (its resource's attributes, the LogRecord)."""
        for request in self.taken("/v1/logs"):
            assert isinstance(request.message, ExportLogsServiceRequest)
            for resource_logs in request.message.resource_logs:
                resource = attributes_of(resource_logs.resource.attributes)
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        yield resource, record

    def spans(self) -> Iterator[tuple[dict[str, Any], Any]]:
        """Every span taken: (its resource's attributes, the Span)."""
        for request in self.taken("/v1/traces"):
            assert isinstance(request.message, ExportTraceServiceRequest)
            for resource_spans in request.message.resource_spans:
                resource = attributes_of(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        yield resource, span
