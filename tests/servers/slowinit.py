"""A real MCP stdio server that is slow to start: it answers ``initialize`` only after
the number of seconds given as its argument (as a server that npx must fetch first
would), then lists one tool, ``echo``, and answers it."""

from __future__ import annotations

import json
import sys
import time


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    delay = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    for line in sys.stdin:
        message = json.loads(line)
        method, ident = message.get("method"), message.get("id")
        if ident is None or method is None:
            continue
        if method == "initialize":
            time.sleep(delay)
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "slowinit", "version": "1"},
            }
        elif method == "tools/list":
            schema = {"type": "object", "properties": {}}
            result = {"tools": [{"name": "echo", "inputSchema": schema}]}
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": "echo done"}]}
        else:
            result = {}
        send({"jsonrpc": "2.0", "id": ident, "result": result})


if __name__ == "__main__":
    main()
