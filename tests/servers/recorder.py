"""A real MCP stdio server that records every ``tools/call`` it receives, for the tests of
Lockgate's guarantee ("a call the policy blocks never reaches the server").

    python recorder.py RECORD_FILE

Each ``tools/call`` is appended to RECORD_FILE as one JSON line (``{"name", "arguments",
"pid"}``), flushed to the file before the call is answered, so a test that has its
answer can read what the server got. The tools:

- any name: answers ``{"content": [{"type": "text", "text": "ran NAME"}]}``;
- ``refuse``: answers a JSON-RPC error (-32602), as a server that rejects a call;
- ``leak``: answers a JSON-RPC error (-32603) whose message and data quote the value of
  the environment variable ``SECRET``, as a careless server's error would;
- ``exit``: exits mid-call.

With ``LEAK_AT_START`` set, ``initialize`` itself fails, quoting ``SECRET``, as a server
that cannot start with a bad key might.

``tools/list`` lists ``TOOLS`` below. Written for Lockgate's tests; speaks newline-delimited
JSON-RPC 2.0 on stdio with nothing but the standard library, so it starts in milliseconds.
"""

from __future__ import annotations

import json
import os
import sys

TOOL_NAMES = (
    "echo",
    "fetch",
    "write_file",
    "delete_file",
    "ask_me",
    "limited",
    "checked",
    "hidden",
    "refuse",
    "leak",
    "exit",
)
TOOLS = [
    {"name": n, "description": f"{n} (recorded)", "inputSchema": {"type": "object"}}
    for n in TOOL_NAMES
]


def main() -> None:
    record_path = sys.argv[1]
    out = sys.stdout
    with open(record_path, "a", encoding="utf-8") as record:
        for line in sys.stdin:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict) or "id" not in message:
                continue
            ident, method = message["id"], message.get("method")
            params = message.get("params") or {}
            if method == "initialize" and os.environ.get("LEAK_AT_START"):
                secret = os.environ.get("SECRET", "")
                error = {"code": -32603, "message": f"cannot start with key {secret}"}
                reply = {"jsonrpc": "2.0", "id": ident, "error": error}
            elif method == "initialize":
                result = {
                    "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                    "capabilities": {"tools": {"listChanged": True}},
                    "serverInfo": {"name": "recorder", "version": "1"},
                }
                reply = {"jsonrpc": "2.0", "id": ident, "result": result}
            elif method == "tools/list":
                reply = {"jsonrpc": "2.0", "id": ident, "result": {"tools": TOOLS}}
            elif method == "tools/call":
                name = params.get("name")
                entry = {"name": name, "arguments": params.get("arguments"), "pid": os.getpid()}
                record.write(json.dumps(entry) + "\n")
                record.flush()
                if name == "exit":
                    os._exit(3)
                if name == "refuse":
                    error = {"code": -32602, "message": "refused: no such thing"}
                    reply = {"jsonrpc": "2.0", "id": ident, "error": error}
                elif name == "leak":
                    secret = os.environ.get("SECRET", "")
                    error = {
                        "code": -32603,
                        "message": f"upstream auth failed with token {secret}",
                        "data": {"token": secret, "hint": [f"Bearer {secret}"]},
                    }
                    reply = {"jsonrpc": "2.0", "id": ident, "error": error}
                else:
                    text = {"type": "text", "text": f"ran {name}"}
                    reply = {"jsonrpc": "2.0", "id": ident, "result": {"content": [text]}}
            elif method == "ping":
                reply = {"jsonrpc": "2.0", "id": ident, "result": {}}
            else:
                error = {"code": -32601, "message": f"no method {method}"}
                reply = {"jsonrpc": "2.0", "id": ident, "error": error}
            out.write(json.dumps(reply) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
