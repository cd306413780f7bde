"""A real MCP stdio server that answers ``tools/call`` with whatever a script says, for
Lockgate's fuzz tests (tests/system/test_fuzz.py): the server side of the gateway is fed
wrong ids, duplicate answers, malformed results and errors, deep nesting, huge lines,
invalid JSON, its own requests and notifications, garbage, and exits mid-call.

    python fuzzserver.py SCRIPT_DIR LOG_FILE

It answers ``initialize``, ``tools/list`` (tools ``run``, ``forbidden``, ``quiet``) and
``ping`` correctly, every other request with -32601. Each ``tools/call`` is appended to
LOG_FILE as one JSON line (``{"name", "arguments", "pid", "id"}``, flushed before anything
else happens), then its script runs: ``SCRIPT_DIR/<marker>.json``, where ``marker`` is the
call's ``arguments["marker"]``, written by the test before the call. Without a script the
call is answered normally (``ran NAME``).

A script is ``{"steps": [...], "finale": {...}, "after": [...]}``: the steps are written
first, then the finale (which must answer the call, or end the connection), then the
``after`` steps (late duplicates, late requests). Every step is an object:

- ``{"send": VALUE, "id": HOW}``: ``VALUE`` as one JSON line; if ``HOW`` is given, the
  line's top-level ``id`` is set first: ``"call"`` (the call's id), ``"str"`` (the call's
  id as a string), ``"float"`` (as a float), ``"bool"``, ``"list"``, ``"null"``,
  ``"plus:N"`` (the call's id + N). Non-finite floats are written as the tokens ``NaN``
  and ``Infinity`` (as Python's ``json`` does).
- ``{"raw": TEXT}``: ``TEXT`` written as it is, with ``{ID}`` replaced by the call's id (so
  a line can be truncated JSON, hold ``\\ud800`` escapes, or be garbage).
- ``{"bytes": HEX}``: those bytes, as they are (invalid UTF-8, NUL...), then a newline.
- ``{"huge": N, "valid": BOOL, "id": HOW}``: an answer about N bytes long whose result
  text is N bytes of ``x``; not valid JSON (unterminated) when ``valid`` is false.
- ``{"deep": N, "kind": KIND, "id": HOW}``: a message whose payload nests N levels,
  written as text: ``"result"`` (an answer), ``"error"`` (an error whose data nests),
  ``"request"`` (a ``roots/list`` request from the server), ``"notification"``.
- ``{"request": METHOD, "params": VALUE, "wait": SECONDS}``: a request from the server
  (id ``s<n>``); with ``wait``, the server reads its input until the answer to it
  comes (or the time passes), handling nothing else meanwhile.
- ``{"notify": METHOD, "params": VALUE}``: a notification from the server. For
  ``notifications/progress``, a ``progressToken`` of ``"call"`` becomes the call's own
  progress token (when it has one; else its id).
- ``{"sleep": SECONDS}`` (at most 0.2).
- ``{"close_stdout": true}``: closes stdout (the gateway sees the connection end) and
  waits for stdin to close.
- ``{"exit": CODE}``: exits at once, mid-call.

Standard library only, so it starts in milliseconds.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from pathlib import Path
from typing import Any

TOOLS = [
    {"name": name, "description": f"{name} (fuzzed)", "inputSchema": {"type": "object"}}
    for name in ("run", "forbidden", "quiet")
]

out = sys.stdout.buffer
server_ids = iter(range(1, 1 << 62))


def write(data: bytes) -> None:
    out.write(data.rstrip(b"\n") + b"\n")
    out.flush()


def send(message: Any) -> None:
    write(json.dumps(message).encode())


def with_id(message: Any, how: Any, call_id: Any) -> Any:
    """``message`` with its top-level id set as ``how`` says (see the module docstring)."""
    if how is None or not isinstance(message, dict):
        return message
    ident: Any
    if how == "call":
        ident = call_id
    elif how == "str":
        ident = str(call_id)
    elif how == "float":
        ident = float(call_id) if isinstance(call_id, int) else 0.5
    elif how == "bool":
        ident = True
    elif how == "list":
        ident = [call_id]
    elif how == "null":
        ident = None
    elif isinstance(how, str) and how.startswith("plus:") and isinstance(call_id, int):
        ident = call_id + int(how[5:])
    else:
        ident = how
    return {"jsonrpc": "2.0", **message, "id": ident}


def raw_id(how: Any, call_id: Any) -> str:
    return json.dumps(with_id({}, how if how is not None else "call", call_id)["id"])


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


class Input:
    """Lines from stdin, read with our own buffer (a buffered file and ``select`` do not
    mix: a line already in the file's buffer never makes the descriptor readable)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._eof = False

    def readline(self, timeout: float | None = None) -> bytes | None:
        """One line (with its newline, or the last bytes before the end), or None when
        the input has ended or ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer and not self._eof:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            ready, _, _ = select.select([0], [], [], left)
            if not ready:
                return None
            chunk = os.read(0, 1 << 20)
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True
        if not self._buffer:
            return None
        line, sep, rest = self._buffer.partition(b"\n")
        self._buffer = rest
        return line + sep


stdin = Input()


def await_answer(request_id: str, seconds: float) -> None:
    """Read input until the answer to our request ``request_id`` comes, or time is up."""
    deadline = time.monotonic() + min(seconds, 3.0)
    while (left := deadline - time.monotonic()) > 0:
        line = stdin.readline(left)
        if line is None:
            return
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(message, dict)
            and message.get("id") == request_id
            and "method" not in message
        ):
            return


def step(action: dict[str, Any], call_id: Any, progress_token: Any) -> None:
    """Carry out one step of a script (see the module docstring)."""
    if "send" in action:
        send(with_id(action["send"], action.get("id"), call_id))
    elif "raw" in action:
        write(str(action["raw"]).replace("{ID}", raw_id(None, call_id)).encode("utf-8", "replace"))
    elif "bytes" in action:
        write(bytes.fromhex(action["bytes"]))
    elif "huge" in action:
        size = max(0, int(action["huge"]))
        head = '{"jsonrpc":"2.0","id":' + raw_id(action.get("id"), call_id)
        head += ',"result":{"content":[{"type":"text","text":"'
        tail = '"}]}}' if action.get("valid", True) else ""
        chunk = b"x" * (1 << 20)
        out.write(head.encode())
        left = size
        while left > 0:
            out.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
        out.write(tail.encode() + b"\n")
        out.flush()
    elif "deep" in action:
        depth, kind = max(1, int(action["deep"])), action.get("kind", "result")
        ident = raw_id(action.get("id"), call_id)
        if kind == "result":
            line = f'{{"jsonrpc":"2.0","id":{ident},"result":{{"nested":{nested(depth)}}}}}'
        elif kind == "error":
            line = (
                f'{{"jsonrpc":"2.0","id":{ident},"error":{{"code":-32000,"message":"deep",'
                f'"data":{nested(depth)}}}}}'
            )
        elif kind == "request":
            line = (
                f'{{"jsonrpc":"2.0","id":"s{next(server_ids)}","method":"roots/list",'
                f'"params":{{"nested":{nested(depth)}}}}}'
            )
        else:
            line = (
                f'{{"jsonrpc":"2.0","method":"notifications/message",'
                f'"params":{{"level":"info","data":{nested(depth)}}}}}'
            )
        write(line.encode())
    elif "request" in action:
        request_id = f"s{next(server_ids)}"
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": action["request"]}
        if "params" in action:
            message["params"] = action["params"]
        send(message)
        if action.get("wait"):
            await_answer(request_id, float(action["wait"]))
    elif "notify" in action:
        message = {"jsonrpc": "2.0", "method": action["notify"]}
        if "params" in action:
            params = action["params"]
            if isinstance(params, dict) and params.get("progressToken") == "call":
                token = progress_token if progress_token is not None else call_id
                params = {**params, "progressToken": token}
            message["params"] = params
        send(message)
    elif "sleep" in action:
        time.sleep(min(0.2, max(0.0, float(action["sleep"]))))
    elif "close_stdout" in action:
        out.flush()
        os.close(1)
        while stdin.readline() is not None:  # until the gateway closes our input (or kills us)
            pass
        os._exit(0)
    elif "exit" in action:
        out.flush()
        os._exit(int(action["exit"]) & 0xFF)


def tools_call(script_dir: Path, log: Any, ident: Any, params: Any) -> None:
    name = params.get("name") if isinstance(params, dict) else None
    arguments = params.get("arguments") if isinstance(params, dict) else None
    entry = {"name": name, "arguments": arguments, "pid": os.getpid(), "id": ident}
    log.write(json.dumps(entry) + "\n")
    log.flush()
    marker = arguments.get("marker") if isinstance(arguments, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    script: dict[str, Any] = {}
    if isinstance(marker, str) and marker.isalnum():
        try:
            script = json.loads((script_dir / f"{marker}.json").read_text("utf-8"))
        except (OSError, ValueError):
            script = {}
    if not script:
        text = {"type": "text", "text": f"ran {name}"}
        send({"jsonrpc": "2.0", "id": ident, "result": {"content": [text]}})
        return
    for action in [*script.get("steps", []), script["finale"], *script.get("after", [])]:
        step(action, ident, token)


def main() -> None:
    script_dir, log_path = Path(sys.argv[1]), sys.argv[2]
    with open(log_path, "a", encoding="utf-8") as log:
        while (line := stdin.readline()) is not None:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict) or "id" not in message or "method" not in message:
                continue  # notifications, and answers to our own requests
            ident, method = message["id"], message.get("method")
            params = message.get("params")
            if method == "initialize":
                version = params.get("protocolVersion") if isinstance(params, dict) else None
                result = {
                    "protocolVersion": version or "2025-06-18",
                    "capabilities": {"tools": {"listChanged": True}},
                    "serverInfo": {"name": "fuzzserver", "version": "1"},
                }
                send({"jsonrpc": "2.0", "id": ident, "result": result})
            elif method == "tools/list":
                send({"jsonrpc": "2.0", "id": ident, "result": {"tools": TOOLS}})
            elif method == "ping":
                send({"jsonrpc": "2.0", "id": ident, "result": {}})
            elif method == "tools/call":
                tools_call(script_dir, log, ident, params)
            else:
                error = {"code": -32601, "message": f"no method {method}"}
                send({"jsonrpc": "2.0", "id": ident, "error": error})


if __name__ == "__main__":
    main()
