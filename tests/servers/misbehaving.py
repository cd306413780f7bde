"""A real MCP stdio server that misbehaves on purpose, for Lockgate's bad-input tests.

It answers the handshake and lists three tools; then:
- ``garbage``: writes a line that is not JSON, then answers properly;
- ``exit``: exits at once, mid-call (the process dies with the call in flight), saying
  so on stderr;
- ``not-an-object``: answers with a result that is a list, not an object;
- ``string-id``: answers with its request id as a string ("7" for 7);
- ``silent``: never answers;
- ``bom``: answers on a line that starts with a UTF-8 byte order mark;
- ``surrogate``: answers with a text holding a lone surrogate (``"\\ud800"``);
- ``echo``: answers normally.
"""

from __future__ import annotations

import json
import sys

TOOLS = [
    {
        "name": name,
        "description": f"{name} on purpose",
        "inputSchema": {"type": "object", "properties": {}},
    }
    for name in (
        "garbage",
        "exit",
        "not-an-object",
        "string-id",
        "silent",
        "bom",
        "surrogate",
        "echo",
    )
]


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        method, ident = message.get("method"), message.get("id")
        if ident is None:
            continue
        if method == "initialize":
            send(
                {
                    "jsonrpc": "2.0",
                    "id": ident,
                    "result": {
                        "protocolVersion": message["params"]["protocolVersion"],
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "misbehaving", "version": "1"},
                    },
                }
            )
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": ident, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            name = message["params"]["name"]
            if name == "exit":
                print("misbehaving: exiting on purpose", file=sys.stderr, flush=True)
                sys.exit(3)
            if name == "silent":
                continue
            if name == "not-an-object":
                send({"jsonrpc": "2.0", "id": ident, "result": [1, 2]})
                continue
            if name == "string-id":
                ident = str(ident)
            if name == "garbage":
                sys.stdout.write("this is not JSON {{{\n")
                sys.stdout.flush()
            if name in ("bom", "surrogate"):
                text = "bom done" if name == "bom" else "a \\ud800 b"  # JSON text, escaped
                result = '{"content":[{"type":"text","text":"' + text + '"}]}'
                answer = f'{{"jsonrpc":"2.0","id":{json.dumps(ident)},"result":{result}}}\n'
                bom = b"\xef\xbb\xbf" if name == "bom" else b""
                sys.stdout.buffer.write(bom + answer.encode())
                sys.stdout.flush()
                continue
            send(
                {
                    "jsonrpc": "2.0",
                    "id": ident,
                    "result": {"content": [{"type": "text", "text": f"{name} done"}]},
                }
            )
        else:
            send({"jsonrpc": "2.0", "id": ident, "result": {}})


if __name__ == "__main__":
    main()
