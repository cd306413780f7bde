"""A real MCP stdio server that speaks only the 2026-07-28 era, for Lockgate's tests of a
handshake client in front of it.

    python modern_only.py RECORD_FILE

It refuses ``initialize`` as a server of that era does (-32022, naming the versions it
speaks), answers ``server/discover``, and serves only requests that carry the era's
envelope (``params._meta`` with the protocol version and the client's capabilities);
every result says what it is (``resultType``). Each ``tools/call`` is appended to
RECORD_FILE as one JSON line (``{"name", "arguments", "meta"}``, without the envelope's
capabilities) before it is answered. The tools:

- ``echo``: answers ``echo: TEXT``;
- ``confirm``: asks the client for a confirmation first, as the era asks: an
  input-required result with one elicitation and a ``requestState``; the retry that
  brings the answer (and the state) gets ``confirmed: ACTION``.

Written for Lockgate's tests; newline-delimited JSON-RPC 2.0 on stdio with nothing but the
standard library.
"""

from __future__ import annotations

import json
import sys
from typing import Any

VERSION = "2026-07-28"
META = "io.modelcontextprotocol/"
INFO = {"name": "modern-only", "version": "1"}
TOOLS = [
    {"name": "echo", "description": "says it back", "inputSchema": {"type": "object"}},
    {"name": "confirm", "description": "asks first", "inputSchema": {"type": "object"}},
]
STATE = "confirm-state-1"


def complete(result: dict[str, Any], cacheable: bool = False) -> dict[str, Any]:
    out = {**result, "resultType": "complete", "_meta": {META + "serverInfo": INFO}}
    if cacheable:
        out.update({"ttlMs": 0, "cacheScope": "private"})
    return out


def answer(message: dict[str, Any], record: Any) -> dict[str, Any]:
    method = message.get("method")
    params = message.get("params") or {}
    meta = params.get("_meta") or {}
    if method == "initialize":
        error = {
            "code": -32022,
            "message": "this server speaks the 2026-07-28 protocol only",
            "data": {"supported": [VERSION], "requested": params.get("protocolVersion")},
        }
        return {"error": error}
    if meta.get(META + "protocolVersion") != VERSION or META + "clientCapabilities" not in meta:
        return {"error": {"code": -32602, "message": f"{method} without the 2026 envelope"}}
    if method == "server/discover":
        return {
            "result": complete(
                {
                    "supportedVersions": [VERSION],
                    "capabilities": {"tools": {}},
                    "instructions": "a server of one era",
                },
                cacheable=True,
            )
        }
    if method == "tools/list":
        return {"result": complete({"tools": TOOLS}, cacheable=True)}
    if method == "tools/call":
        name = params.get("name")
        kept = {k: v for k, v in meta.items() if k != META + "clientCapabilities"}
        record.write(json.dumps({"name": name, "arguments": params.get("arguments"), "meta": kept}))
        record.write("\n")
        record.flush()
        if name == "echo":
            text = f"echo: {(params.get('arguments') or {}).get('text', '')}"
            return {"result": complete({"content": [{"type": "text", "text": text}]})}
        if name == "confirm":
            responses = params.get("inputResponses") or {}
            if params.get("requestState") == STATE and "ok" in responses:
                text = f"confirmed: {responses['ok'].get('action')}"
                return {"result": complete({"content": [{"type": "text", "text": text}]})}
            ask = {
                "method": "elicitation/create",
                "params": {
                    "mode": "form",
                    "message": "Go ahead?",
                    "requestedSchema": {"type": "object", "properties": {}},
                },
            }
            return {
                "result": {
                    "resultType": "input_required",
                    "inputRequests": {"ok": ask},
                    "requestState": STATE,
                }
            }
        return {"error": {"code": -32602, "message": f"no tool {name}"}}
    return {"error": {"code": -32601, "message": f"no method {method}"}}


def main() -> None:
    with open(sys.argv[1], "a", encoding="utf-8") as record:
        for line in sys.stdin:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict) or "id" not in message:
                continue  # notifications: the era has none for a server to act on
            reply = {"jsonrpc": "2.0", "id": message["id"], **answer(message, record)}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
