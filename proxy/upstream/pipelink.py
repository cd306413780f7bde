"""JSON-RPC with a stdio server, lean: JSON objects in and out, nothing typed in between.

The SDK's ``JSONRPCDispatcher`` over its stdio transport validates every line into typed
models, serialises every message back through them, opens a tracing span per request
and hands each message across several anyio streams and tasks. A stdio server is the
gateway's commonest upstream and every tool call crosses this link twice, so here the
same contract is kept with plain asyncio: :meth:`PipeLink.send_raw_request`,
:meth:`PipeLink.notify` and :meth:`PipeLink.run` behave as the dispatcher's do, as far as
the gateway uses them:

- a request's answer is its ``result`` object, or :class:`MCPError` with the server's
  error; every call in flight fails with ``Connection closed`` (-32000) when the server
  closes its side, and a ``timeout`` fails with -32001 after a courtesy cancel;
- ``on_progress`` sets the request id as the progress token, and the server's progress
  for it is delivered there (never as a notification);
- a caller that stops waiting (its task cancelled) sends ``notifications/cancelled``,
  unless ``cancel_on_abandon`` is False;
- the server's own requests (sampling, elicitation, roots, ping) go to ``on_request`` in
  tasks of their own, its ``notifications/cancelled`` cancels them, and its other
  notifications go to ``on_notify`` in order.

Lines that are not JSON-RPC are skipped, as the SDK skips them, but no call is left
waiting forever for an answer that came and could not be used:

- an answer whose result is not an object fails its call (-32603);
- a line that cannot be parsed (not valid JSON, or nested deeper than the parser's
  recursion limit) is scanned for its top-level ``id``, tracking only the nesting depth
  (no recursion; on a worker thread when the line is long). If the id names a call in
  flight and the line has no top-level ``method`` (it is an answer, not the server's own
  request), that call fails with -32603 saying the server's answer could not be read. A
  line that names no call is skipped and logged; so is an unreadable request or
  notification from the server (nothing can be answered);
- a message that parses but nests deeper than :data:`MAX_NESTING` levels is not passed
  on: the gateway writes every answer out again (the SDK's models refuse to serialise
  about 255 levels, ``json.dumps`` runs into the recursion limit), so such an answer fails
  its call with -32603, such a request from the server is answered with an error, and
  such a notification is dropped.

Messages that are ready together leave in one write: a pipe write that wakes the server
costs far more than its bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio.abc
from mcp.shared.dispatcher import CallOptions, ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR, INVALID_REQUEST, REQUEST_TIMEOUT

__all__ = ["MAX_NESTING", "EngineNotifyHandler", "EngineRequestHandler", "PipeLink"]

log = logging.getLogger(__name__)

# How deep a message from the server may nest (the message itself is level 1). Every
# answer is written out again to the client, and what cannot be written must not get
# through: the SDK's models stop at about 255 levels and ``json.dumps`` at the recursion
# limit (1000, less the stack in use). 128 is also serde_json's default limit, so clients
# built on it could read no deeper; real MCP messages nest a few levels (tool schemas
# perhaps 20).
MAX_NESTING = 128

# What an engine calls for the server's requests and notifications: (context, method,
# params), as the SDK's dispatcher calls its handlers, so either engine serves an Upstream.
EngineRequestHandler = Callable[[object, str, Mapping[str, Any] | None], Awaitable[dict[str, Any]]]
EngineNotifyHandler = Callable[[object, str, Mapping[str, Any] | None], Awaitable[None]]

_HIGH_WATER = 1 << 20  # bytes queued for the server before senders wait for it to read
# An unreadable line longer than this is scanned for its id on a worker thread: the scan
# costs about a microsecond per string or bracket run, seconds for a hostile 32 MiB line.
_SCAN_ON_LOOP = 1 << 20


class PipeLink:
    """One JSON-RPC peer over a server's stdout (``reader``) and stdin (``writer``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._progress: dict[int, ProgressFnT] = {}
        self._handlers: dict[Any, asyncio.Task[None]] = {}
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._running = False
        self._closed = False

    # -- sending ----------------------------------------------------------------------

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        """Send a request and return the server's result.

        Raises:
            MCPError: the server answered with an error; -32000 when the connection
                closed, -32001 when ``opts["timeout"]`` passed.
        """
        if self._closed:
            raise MCPError(code=CONNECTION_CLOSED, message="Connection closed")
        if not self._running:
            raise RuntimeError("PipeLink.send_raw_request called before run()")
        opts = opts or {}
        request_id = self._next_id
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        on_progress = opts.get("on_progress")
        if on_progress is not None:
            out = dict(params or {})
            out["_meta"] = {**(out.get("_meta") or {}), "progressToken": request_id}
            message["params"] = out
            self._progress[request_id] = on_progress
        elif params:
            message["params"] = params
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        timeout = opts.get("timeout")
        try:
            self._send(message)
            if self._buffered() > _HIGH_WATER:
                await self._writer.drain()
            async with asyncio.timeout(timeout):
                return await answer
        except TimeoutError:
            if timeout is None or _answered(answer):
                raise
            self._abandon(request_id, f"timed out after {timeout}s", opts)
            raise MCPError(code=REQUEST_TIMEOUT, message=f"Request {method!r} timed out") from None
        except asyncio.CancelledError:
            if not _answered(answer):
                self._abandon(request_id, "caller cancelled", opts)
            raise
        finally:
            self._pending.pop(request_id, None)
            self._progress.pop(request_id, None)

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> None:
        if self._closed:
            return
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params:
            message["params"] = params
        self._send(message)
        if self._buffered() > _HIGH_WATER:
            await self._writer.drain()

    def _abandon(self, request_id: int, reason: str, opts: CallOptions) -> None:
        if opts.get("cancel_on_abandon", True) and not self._closed:
            params = {"requestId": request_id, "reason": reason}
            self._send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params})

    def _send(self, message: Mapping[str, Any]) -> None:
        # ensure_ascii: a lone surrogate read from JSON cannot be encoded as UTF-8
        self._out.append(json.dumps(message, separators=(",", ":")).encode())
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        data = b"\n".join(self._out) + b"\n"
        self._out.clear()
        if not self._writer.is_closing():
            with contextlib.suppress(ConnectionError):
                self._writer.write(data)

    def _buffered(self) -> int:
        return self._writer.transport.get_write_buffer_size()

    # -- receiving --------------------------------------------------------------------

    async def run(
        self,
        on_request: EngineRequestHandler,
        on_notify: EngineNotifyHandler,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read the server's messages until it closes its side; then every call in
        flight fails with ``Connection closed``."""
        self._running = True
        task_status.started()
        try:
            with contextlib.suppress(ConnectionError, ValueError):  # ValueError: line too long
                while line := await self._reader.readline():
                    await self._receive(line, on_request, on_notify)
        finally:
            self._closed = True
            closed = MCPError(code=CONNECTION_CLOSED, message="Connection closed")
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(closed)
            for handler in self._handlers.values():
                handler.cancel()

    async def _receive(
        self, line: bytes, on_request: EngineRequestHandler, on_notify: EngineNotifyHandler
    ) -> None:
        if line.startswith(_BOM):  # some servers' first line (Windows tools write one)
            line = line[len(_BOM) :]
        try:
            message = json.loads(line)
        except RecursionError:
            await self._unreadable(line, "it is nested too deeply")
            return
        except ValueError:
            await self._unreadable(line, "it is not valid JSON")
            return
        if not isinstance(message, dict):
            return
        too_deep = _nests_deeper(line, message, MAX_NESTING)
        if not too_deep and _SURROGATE_ESCAPE.search(line):
            message = _text_only(message)
        method = message.get("method")
        if isinstance(method, str):
            if too_deep:
                self._refuse_deep(message, method)
                return
            params = message.get("params")
            if params is not None and not isinstance(params, dict):
                return
            if "id" in message:
                self._start_handler(message["id"], method, params, on_request)
            else:
                await self._notification(method, params, on_notify)
            return
        if "id" not in message:
            return
        if too_deep:
            log.warning(
                "the server's answer to request %r nests more than %d levels deep; not passed on",
                message["id"],
                MAX_NESTING,
            )
            self._fail(
                message["id"],
                f"the server's answer nests more than {MAX_NESTING} levels deep; "
                "Lockgate does not pass it on",
            )
        else:
            self._answer(message)

    async def _unreadable(self, line: bytes, why: str) -> None:
        """A line that does not parse: fail the call it answers, if it says which."""
        if not line.strip():
            return
        try:
            if len(line) > _SCAN_ON_LOOP:  # seconds, perhaps: not on the loop everyone uses
                peeked = await asyncio.to_thread(_peek_top_level, line)
            else:
                peeked = _peek_top_level(line)
        except Exception:  # a line that reads oddly must never end the link
            log.exception("could not scan a line from the server that is not JSON")
            return
        if peeked is None:
            log.debug("skipped a line from the server that is not JSON")
            return
        has_method, request_id = peeked
        if has_method:
            log.warning(
                "skipped a request or notification from the server that cannot be read "
                "(%s; %d bytes)",
                why,
                len(line),
            )
        elif request_id is _NO_ID or not self._fail(
            request_id, f"the server's answer could not be read: {why}"
        ):
            log.warning(
                "skipped a line from the server that cannot be read and answers no call "
                "in flight (%s; %d bytes)",
                why,
                len(line),
            )
        else:
            log.warning("the server's answer to request %r cannot be read (%s)", request_id, why)

    def _refuse_deep(self, message: dict[str, Any], method: str) -> None:
        """A request or notification from the server that nests too deeply to pass on."""
        log.warning(
            "the server's %s nests more than %d levels deep; not passed on", method, MAX_NESTING
        )
        request_id = message.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, int | str):
            return  # a notification (or no usable id): nothing to answer
        if not self._closed:
            self._send(
                {
                    "jsonrpc": "2.0",
                    "id": request_id,
                    "error": {
                        "code": INVALID_REQUEST,
                        "message": f"Lockgate does not pass on messages that nest more than "
                        f"{MAX_NESTING} levels deep",
                    },
                }
            )

    def _waiting(self, request_id: Any) -> asyncio.Future[dict[str, Any]] | None:
        """The caller still waiting for the answer with ``request_id``, if any."""
        if isinstance(request_id, str) and request_id.isdigit():
            request_id = int(request_id)  # a server that echoes 7 as "7"
        if isinstance(request_id, bool) or not isinstance(request_id, int):
            return None
        answer = self._pending.get(request_id)
        if answer is None or answer.done():
            return None  # late (cancelled, timed out) or never asked
        return answer

    def _fail(self, request_id: Any, why: str) -> bool:
        """Fail the call in flight with ``request_id`` (-32603); False if there is none."""
        answer = self._waiting(request_id)
        if answer is None:
            return False
        answer.set_exception(MCPError(code=INTERNAL_ERROR, message=why))
        return True

    def _answer(self, message: dict[str, Any]) -> None:
        answer = self._waiting(message["id"])
        if answer is None:
            return  # late (cancelled, timed out) or never asked: dropped
        error = message.get("error")
        result = message.get("result")
        if isinstance(error, dict):
            code, text = error.get("code"), error.get("message")
            answer.set_exception(
                MCPError(
                    code=code if isinstance(code, int) else INTERNAL_ERROR,
                    message=text if isinstance(text, str) else "the server sent a malformed error",
                    data=error.get("data"),
                )
            )
        elif isinstance(result, dict):
            answer.set_result(result)
        else:
            answer.set_exception(
                MCPError(
                    code=INTERNAL_ERROR, message="the server's answer is not a JSON-RPC result"
                )
            )

    async def _notification(
        self, method: str, params: dict[str, Any] | None, on_notify: EngineNotifyHandler
    ) -> None:
        if method == "notifications/progress":
            token = (params or {}).get("progressToken")
            on_progress = self._progress.get(token) if isinstance(token, int) else None
            progress = (params or {}).get("progress")
            if on_progress is not None and isinstance(progress, int | float):
                total, text = params.get("total"), params.get("message")  # type: ignore[union-attr]
                await on_progress(
                    progress,
                    total if isinstance(total, int | float) else None,
                    text if isinstance(text, str) else None,
                )
            return
        if method == "notifications/cancelled":
            handler = self._handlers.get(_key((params or {}).get("requestId")))
            if handler is not None:
                handler.cancel()
            return
        try:
            await on_notify(None, method, params)
        except Exception:
            log.exception("handling the server's %s failed", method)

    def _start_handler(
        self,
        request_id: Any,
        method: str,
        params: dict[str, Any] | None,
        on_request: EngineRequestHandler,
    ) -> None:
        if isinstance(request_id, bool) or not isinstance(request_id, int | str):
            return
        task = asyncio.get_running_loop().create_task(
            self._handle(request_id, method, params, on_request)
        )
        key = _key(request_id)
        self._handlers[key] = task
        task.add_done_callback(lambda _task: self._handlers.pop(key, None))

    async def _handle(
        self,
        request_id: int | str,
        method: str,
        params: dict[str, Any] | None,
        on_request: EngineRequestHandler,
    ) -> None:
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        try:
            answer["result"] = await on_request(None, method, params)
        except asyncio.CancelledError:
            return  # cancelled by the server, or the link is closing: no answer
        except MCPError as exc:
            answer["error"] = exc.error.model_dump(by_alias=True, exclude_none=True, mode="json")
        except Exception:
            log.exception("handling the server's %s request failed", method)
            answer["error"] = {"code": INTERNAL_ERROR, "message": "Lockgate failed to handle it"}
        if not self._closed:
            self._send(answer)


# a JSON escape of a UTF-16 surrogate (\\ud800-\\udfff): the one way a line can carry
# something that is not text
_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark: not part of the JSON text


def _text_only(value: Any) -> Any:
    """``value`` with every lone surrogate (JSON carries ``"\\ud800"``, but it is not text:
    UTF-8, the SDK's writers and the client's parser refuse it) replaced by U+FFFD, in
    keys and strings alike. Pairs that make a real character were joined by the parser."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_text_only(k): _text_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text_only(v) for v in value]
    return value


def _answered(answer: asyncio.Future[dict[str, Any]]) -> bool:
    """Whether the server answered (a future awaited by a cancelled task is cancelled too)."""
    return answer.done() and not answer.cancelled()


def _key(request_id: Any) -> tuple[type, Any]:
    return (type(request_id), request_id)


def _nests_deeper(line: bytes, message: dict[str, Any], limit: int) -> bool:
    """Whether ``message`` (parsed from ``line``) nests more than ``limit`` levels.

    Every level needs an opening bracket in the line, so a line with at most ``limit`` of
    them (the common case, counted at C speed) needs no walk.
    """
    if line.count(b"{") + line.count(b"[") <= limit:
        return False
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(message, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


# -- reading the top level of a line that does not parse --------------------------------

_NO_ID: Any = object()  # the line has no top-level id that could name a request
_WHITESPACE = b" \t\r\n"
# One pass of the regex engine over the line, yielding what the depth depends on: a
# whole string (with the colon after it, when it is a key), or a run of opening or of
# closing brackets (a nesting bomb is a handful of runs). Possessive, so a string that
# never ends costs one scan, not one per quote.
_TOKEN = re.compile(rb'("(?:[^"\\]++|\\.)*+(?:"|\Z))(?:[ \t\r\n]*+(:))?|[{\[]++|[}\]]++', re.DOTALL)
# an integer of at most 19 digits (int() refuses thousands), or a string
_ID_VALUE = re.compile(
    rb'[ \t\r\n]*+(?:(-?(?:0|[1-9][0-9]{0,18}+))(?![0-9.eE])|("(?:[^"\\]++|\\.)*+"))',
    re.DOTALL,
)
_LONGEST_KEY = 24  # the keys that matter, even written with \u escapes, are shorter
_KEYS = {b'"id"': "id", b'"method"': "method", b'"result"': "result", b'"error"': "error"}


def _peek_top_level(data: bytes) -> tuple[bool, Any] | None:
    """Whether the JSON object on ``data`` has a top-level ``method``, and its top-level
    ``id`` (an integer or a string; else ``_NO_ID``), read without parsing what lies
    deeper, so without recursion: only the nesting depth is tracked. None if the line is
    not an object at all.

    It stops as soon as the answer is known: at a ``method`` (a request), or once it has
    an ``id`` and a ``result`` or ``error`` key (an answer; writers put the id first, so
    the usual unreadable answer costs a few tokens). Else it reads the whole line, about a
    microsecond per string or bracket run.
    """
    start = 0
    while start < len(data) and data[start] in _WHITESPACE:
        start += 1
    if start >= len(data) or data[start] != 0x7B:  # {
        return None
    depth = 0
    answer, request_id = False, _NO_ID
    for token in _TOKEN.finditer(data, start):
        first = data[token.start()]
        if first == 0x22:  # a string: a top-level key, perhaps
            if depth != 1 or token.start(2) < 0:
                continue
            key = _top_key(token.group(1))
            if key == "method":
                return True, request_id
            if key == "id":
                request_id = _id_at(data, token.end())
            elif key in ("result", "error"):
                answer = True
            if answer and request_id is not _NO_ID:
                break
            continue
        run = token.end() - token.start()
        if first in b"{[":
            depth += run
        elif run >= depth:
            break  # the top-level object ends here; what follows is not its
        else:
            depth -= run
    return False, request_id


def _top_key(raw: bytes) -> str | None:
    """A top-level key that matters (``id``, ``method``, ``result``, ``error``), from its
    string token; None for any other."""
    known = _KEYS.get(raw)
    if known is not None or b"\\" not in raw or len(raw) > _LONGEST_KEY:
        return known
    try:
        text = json.loads(raw)  # one flat string: "\u0069d" is "id"
    except ValueError:
        return None
    return text if isinstance(text, str) and text in _KEYS.values() else None


def _id_at(data: bytes, i: int) -> Any:
    """The request id whose value starts at ``i``: an integer or a string, else
    ``_NO_ID`` (null, a fraction, an object...)."""
    value = _ID_VALUE.match(data, i)
    if value is None:
        return _NO_ID
    if value.group(1) is not None:
        return int(value.group(1))
    try:
        text = json.loads(value.group(2))
    except ValueError:
        return _NO_ID
    return text if isinstance(text, str) else _NO_ID
