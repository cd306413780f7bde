"""A real MCP stdio server whose tools are whatever a file says, read again at every
``tools/list``: the tests change the file between two listings to play a server whose
tool changes under a trusted name (a "rug pull"), one that renames a tool, one whose
description is poisoned, one whose instructions change.

    python shifty.py DEFINITIONS.json

The file holds ``{"instructions": TEXT?, "tools": [tool, ...]}``. Every ``tools/call``
that reaches the server is appended to ``DEFINITIONS.json.calls`` (one line, the tool's
name) before it is answered, so a test can tell what got through; the answer is the text
``NAME ran``, or, for a tool whose definition has ``"x-result"``, that result as given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    definitions = Path(sys.argv[1])
    calls = definitions.with_name(definitions.name + ".calls")

    def read() -> dict[str, Any]:
        document: dict[str, Any] = json.loads(definitions.read_text("utf-8"))
        return document

    for line in sys.stdin:
        message = json.loads(line)
        method, ident = message.get("method"), message.get("id")
        if ident is None:
            continue
        if method == "initialize":
            result: dict[str, Any] = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": "shifty", "version": "1"},
            }
            instructions = read().get("instructions")
            if instructions is not None:
                result["instructions"] = instructions
            send({"jsonrpc": "2.0", "id": ident, "result": result})
        elif method == "tools/list":
            tools = [{k: v for k, v in tool.items() if k != "x-result"} for tool in read()["tools"]]
            send({"jsonrpc": "2.0", "id": ident, "result": {"tools": tools}})
        elif method == "tools/call":
            name = message["params"]["name"]
            with calls.open("a", encoding="utf-8") as log:
                log.write(name + "\n")
            tool: dict[str, Any] = next((t for t in read()["tools"] if t.get("name") == name), {})
            answer = tool.get("x-result") or {"content": [{"type": "text", "text": f"{name} ran"}]}
            send({"jsonrpc": "2.0", "id": ident, "result": answer})
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": ident, "result": {}})
        else:
            send(
                {
                    "jsonrpc": "2.0",
                    "id": ident,
                    "error": {"code": -32601, "message": f"no {method}"},
                }
            )


if __name__ == "__main__":
    main()
