"""A real MCP stdio server whose messages nest deeper than JSON parsers like, on purpose.

It answers the handshake and lists its tools. Nested values are written as text
(``[[[...]]]``), never built as Python objects, so any depth can be sent.

``tools/list`` with the cursor ``nest:N`` answers with the tools and an extra
``nested`` value N levels deep (N = 100000 cannot be parsed by a recursive parser;
N = 900 can, but is deeper than most serialisers write).

``tools/call`` by name:
- ``nest``: answers with a result whose ``nested`` value is ``depth`` levels deep
  (argument ``depth``, 100000 by default); with ``id_last`` true the ``id`` comes after
  the result, so a reader must get through all of it to find whose answer it is;
- ``broken``: answers with a line that has the request's id but is not valid JSON;
- ``anonymous``: writes an unreadable answer without an id, then answers properly;
- ``ask-deep``: first sends a request (``roots/list``) and a notification whose params
  are unreadably deep, then answers properly;
- ``ask-nested``: sends a request (``roots/list``) whose params nest ``depth`` levels
  (300 by default: readable, but too deep to pass on), waits for its answer and answers
  the call with that answer as text;
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
    for name in ("nest", "broken", "anonymous", "ask-deep", "ask-nested", "echo")
]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def send(message: dict) -> None:
    write(json.dumps(message))


def text(ident: object, words: str) -> None:
    send({"jsonrpc": "2.0", "id": ident, "result": {"content": [{"type": "text", "text": words}]}})


def call(ident: object, name: str, arguments: dict) -> None:
    if name == "nest":
        depth = int(arguments.get("depth", 100_000))
        result = '{"content":[{"type":"text","text":"deep"}],"nested":' + nested(depth) + "}"
        if arguments.get("id_last"):
            write('{"jsonrpc":"2.0","result":' + result + ',"id":' + json.dumps(ident) + "}")
        else:
            write('{"jsonrpc":"2.0","id":' + json.dumps(ident) + ',"result":' + result + "}")
    elif name == "broken":
        write('{"jsonrpc":"2.0","id":' + json.dumps(ident) + ',"result":{"content":[}')
    elif name == "anonymous":
        write('{"jsonrpc":"2.0","result":' + nested(100_000) + "}")
        text(ident, "anonymous done")
    elif name == "ask-deep":
        deep = nested(100_000)
        write('{"jsonrpc":"2.0","id":"s1","method":"roots/list","params":{"x":' + deep + "}}")
        write('{"jsonrpc":"2.0","method":"notifications/message","params":{"x":' + deep + "}}")
        text(ident, "ask-deep done")
    elif name == "ask-nested":
        deep = nested(int(arguments.get("depth", 300)))
        write('{"jsonrpc":"2.0","id":"s2","method":"roots/list","params":{"x":' + deep + "}}")
        while line := sys.stdin.readline():
            answer = json.loads(line)
            if answer.get("id") == "s2" and "method" not in answer:
                text(ident, json.dumps(answer))
                return
    else:
        text(ident, f"{name} done")


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        method, ident = message.get("method"), message.get("id")
        params = message.get("params") or {}
        if ident is None or "method" not in message:
            continue  # notifications, and the client's answers to our requests
        if method == "initialize":
            send(
                {
                    "jsonrpc": "2.0",
                    "id": ident,
                    "result": {
                        "protocolVersion": params["protocolVersion"],
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "deep", "version": "1"},
                    },
                }
            )
        elif method == "tools/list":
            cursor = params.get("cursor") or ""
            tools = json.dumps(TOOLS)
            if cursor.startswith("nest:"):
                deep = nested(int(cursor.removeprefix("nest:")))
                write(
                    '{"jsonrpc":"2.0","id":'
                    + json.dumps(ident)
                    + ',"result":{"tools":'
                    + tools
                    + ',"nested":'
                    + deep
                    + "}}"
                )
            else:
                send({"jsonrpc": "2.0", "id": ident, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            call(ident, params["name"], params.get("arguments") or {})
        else:
            send({"jsonrpc": "2.0", "id": ident, "result": {}})


if __name__ == "__main__":
    main()
