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

Lines that are not JSON-RPC are skipped, as the SDK skips them; an answer whose result is
not an object fails its call instead of leaving it waiting forever. Messages that are
ready together leave in one write: a pipe write that wakes the server costs far more than
its bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio.abc
from mcp.shared.dispatcher import CallOptions, ProgressFnT
from mcp.shared.exceptions import MCPError

__all__ = ["PipeLink"]

log = logging.getLogger(__name__)

CONNECTION_CLOSED = -32000
REQUEST_TIMEOUT = -32001
INTERNAL_ERROR = -32603

OnRequest = Callable[[object, str, Mapping[str, Any] | None], Awaitable[dict[str, Any]]]
OnNotify = Callable[[object, str, Mapping[str, Any] | None], Awaitable[None]]

_HIGH_WATER = 1 << 20  # bytes queued for the server before senders wait for it to read


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
        on_request: OnRequest,
        on_notify: OnNotify,
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

    async def _receive(self, line: bytes, on_request: OnRequest, on_notify: OnNotify) -> None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            if line.strip():
                log.debug("skipped a line from the server that is not JSON")
            return
        if not isinstance(message, dict):
            return
        method = message.get("method")
        if isinstance(method, str):
            params = message.get("params")
            if params is not None and not isinstance(params, dict):
                return
            if "id" in message:
                self._start_handler(message["id"], method, params, on_request)
            else:
                await self._notification(method, params, on_notify)
            return
        if "id" in message:
            self._answer(message)

    def _answer(self, message: dict[str, Any]) -> None:
        request_id = message["id"]
        if isinstance(request_id, str) and request_id.isdigit():
            request_id = int(request_id)  # a server that echoes 7 as "7"
        answer = self._pending.get(request_id) if isinstance(request_id, int) else None
        if answer is None or answer.done():
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
        self, method: str, params: dict[str, Any] | None, on_notify: OnNotify
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
        self, request_id: Any, method: str, params: dict[str, Any] | None, on_request: OnRequest
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
        on_request: OnRequest,
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


def _answered(answer: asyncio.Future[dict[str, Any]]) -> bool:
    """Whether the server answered (a future awaited by a cancelled task is cancelled too)."""
    return answer.done() and not answer.cancelled()


def _key(request_id: Any) -> tuple[type, Any]:
    return (type(request_id), request_id)
