"""tools/call on the local front door, without the SDK's server machinery in the way.

A client of ``lockgate connect`` speaks newline-delimited JSON-RPC on the local socket,
and its ``tools/call`` requests are the hot path: every step of an agent is one. The SDK's
server validates each message into typed models, spawns a task with a tracing span for
it, passes it through its runner and the middleware, and serialises the answer through
the models again; on a 2-core machine that was about half of the gateway's CPU per call.
The fast lane reads the line as JSON once, hands the call to the same decide, audit and
forward path as the SDK route (:meth:`Gateway.call_tool <proxy.gateway.core.Gateway.call_tool>`)
and writes the answer line itself.

It takes only what it serves exactly as the SDK route would: a well-formed ``tools/call``
request whose strings are all text (a lone surrogate escape such as ``"\\ud800"``, which
the SDK's parser refuses, goes to the SDK for the same parse error), without a progress
token (progress needs the SDK's token remapping), of a session whose
``notifications/initialized`` is already on its way upstream (so nothing overtakes it).
Everything else goes to the SDK unchanged: the handshake, other methods, notifications,
malformed lines, calls with progress. A client's ``notifications/cancelled`` for a
fast-lane call cancels it here (the upstream dispatcher then cancels it upstream), and,
as the spec says, a cancelled request gets no answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR

if TYPE_CHECKING:
    from proxy.gateway.core import Gateway
    from proxy.gateway.session import Session

__all__ = [
    "FastLane",
    "answer_to_call",
    "cancelled_id",
    "lone_surrogate",
    "plain_call",
    "request_of",
    "written",
]

log = logging.getLogger(__name__)

_Key = tuple[type, int | str]  # JSON-RPC ids 1 and "1" are different requests


def lone_surrogate(line: bytes, message: Any) -> bool:
    """Whether the JSON ``line`` (parsed: ``message``) holds a lone UTF-16 surrogate
    (``"\\ud800"``), which is not text. Python's parser accepts it; the SDK's refuses the
    message, so the fast lane leaves it to the SDK rather than answer otherwise."""
    if b"\\u" not in line or b"\\ud" not in line.lower():  # the common case: no escape
        return False
    try:
        json.dumps(message, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def request_of(body: bytes) -> dict[str, Any] | None:
    """``body`` as one JSON-RPC message that is not a response, read as the SDK reads
    it (UTF-8 only, no byte order mark); None for anything else."""
    try:
        message = json.loads(body.decode("utf-8"))  # bytes: json would guess UTF-16 too
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return None
    if "result" in message or "error" in message:
        return None  # the SDK reads it as a response
    return message


def cancelled_id(params: Any) -> int | str | None:
    """The id of the request a ``notifications/cancelled`` names; None if it names none
    an id may be."""
    if not isinstance(params, dict):
        return None
    request_id = params.get("requestId")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        return None
    return request_id


def plain_call(message: dict[str, Any]) -> tuple[int | str, dict[str, Any]] | None:
    """A ``tools/call`` request's id and params, if a fast lane may serve it as the SDK
    route would: an id of a type ids have, params an object, no progress token (progress
    needs the SDK's token remapping); None: the SDK serves it."""
    request_id, params = message.get("id"), message.get("params")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        return None
    if not isinstance(params, dict):
        return None
    meta = params.get("_meta")
    if meta is not None and (not isinstance(meta, dict) or "progressToken" in meta):
        return None
    return request_id, params


async def answer_to_call(
    gateway: Gateway, session: Session, request_id: int | str, params: dict[str, Any]
) -> dict[str, Any]:
    """The JSON-RPC answer to a ``tools/call`` a fast lane serves (by the same
    :meth:`Gateway.call_tool <proxy.gateway.core.Gateway.call_tool>` on both doors).

    Raises:
        asyncio.CancelledError: the call was cancelled; each door answers that its way.
    """
    answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
    try:
        answer["result"] = await gateway.call_tool(session, params)
    except MCPError as exc:
        answer["error"] = exc.error.model_dump(by_alias=True, exclude_none=True, mode="json")
    except Exception:  # call_tool turns failures into MCPError; this is a last guard
        log.exception("fast lane: tools/call %r failed", request_id)
        answer["error"] = {"code": INTERNAL_ERROR, "message": "Lockgate failed to handle this call"}
    return answer


def written(request_id: int | str, answer: dict[str, Any]) -> bytes:
    """``answer`` as compact JSON; an error in its place if JSON cannot carry it."""
    try:
        return json.dumps(answer, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError):
        log.exception("fast lane: the answer to tools/call %r cannot be sent", request_id)
        error = {"code": INTERNAL_ERROR, "message": "the server's answer could not be passed on"}
        return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()


class FastLane:
    """The fast lane of one local client connection."""

    def __init__(self, gateway: Gateway, outgoing: asyncio.StreamWriter) -> None:
        self._gateway = gateway
        self._out = outgoing
        self.session: Session | None = None
        self._calls: dict[_Key, asyncio.Task[None]] = {}
        self._answers: list[bytes] = []
        self._flush_scheduled = False

    def attach(self, session: Session) -> None:
        """The connection's session, once its ``initialize`` has succeeded."""
        self.session = session

    def take(self, line: bytes) -> bool:
        """Serve ``line`` here if it is the fast lane's; False: the SDK must handle it."""
        session = self.session
        if session is None or not session.initialized:
            return False
        message = request_of(line)
        if message is None:
            return False  # the SDK answers it (a parse error, a response, a batch...)
        if lone_surrogate(line, message):
            return False  # the SDK's parser refuses these: the same answer on every door
        method = message.get("method")
        if method == "tools/call":
            return self._start(session, message)
        if method == "notifications/cancelled" and "id" not in message:
            return self._cancel(message.get("params"))
        return False

    def _start(self, session: Session, message: dict[str, Any]) -> bool:
        plain = plain_call(message)
        if plain is None:
            return False
        request_id, params = plain
        key: _Key = (type(request_id), request_id)
        if key in self._calls:
            return False  # a repeated id: the SDK's answer to it stands
        task = asyncio.get_running_loop().create_task(self._serve(session, request_id, params))
        self._calls[key] = task
        task.add_done_callback(lambda _task: self._calls.pop(key, None))
        return True

    def _cancel(self, params: Any) -> bool:
        request_id = cancelled_id(params)
        if request_id is None:
            return False
        task = self._calls.get((type(request_id), request_id))
        if task is None:
            return False  # not ours (or already answered): the SDK deals with it
        task.cancel()
        return True

    async def _serve(self, session: Session, request_id: int | str, params: dict[str, Any]) -> None:
        try:
            answer = await answer_to_call(self._gateway, session, request_id, params)
        except asyncio.CancelledError:
            return  # a cancelled request gets no answer
        self._send(written(request_id, answer))
        with contextlib.suppress(ConnectionError):
            await self._out.drain()

    def _send(self, line: bytes) -> None:
        """Queue an answer; the answers ready in this turn of the loop leave in one write
        (16 agents calling at once wake the client once, not 16 times)."""
        self._answers.append(line)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = b"\n".join(self._answers) + b"\n"
        self._answers.clear()
        if not self._out.is_closing():
            self._out.write(data)

    def cancel_all(self) -> None:
        """Cancel every call in flight (the client has gone)."""
        for task in list(self._calls.values()):
            task.cancel()

    async def aclose(self) -> None:
        """Cancel every call in flight and wait until each is recorded."""
        self.cancel_all()
        calls = list(self._calls.values())
        if calls:
            await asyncio.wait(calls)
