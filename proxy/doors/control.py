"""The local socket's control door: the wire form of :class:`~proxy.gateway.control.GatewayControl`.

After the hello ``{"lockgate": 1, "mode": "control"}``, JSON requests and answers, one a
line: ``status``, ``pause``, ``resume``, ``approvals``, ``answer``, ``reload-servers``,
``reload-policy`` (read policy.json now; answered once it is in force, or with its
error), ``end-sessions``; and ``watch``, which makes the connection an approver until it
closes and streams pending approvals to it.

A remote server's OAuth sign-in: ``auth-status`` (``servers``: each one Lockgate signs in
to, with its ``state``, ``why``, ``expires_at`` and ``checked``; never a token),
``auth-logout`` (``server``), and ``auth-login`` (``server``), the last request of its
connection: the gateway answers ``{"ok": true, "open": URL}`` as soon as it has the
authorization page for the person's browser, then, once the sign-in is over, ``{"ok":
true, "signed_in": true, "expires_at": ...}`` or ``{"ok": false, "error": ...}``. The
connection closing before then (the person pressed Ctrl-C) cancels the sign-in.

Tool pinning: ``tools-changes`` (``tools`` and ``instructions``: what is held, each with
its old and new definition, its findings and its ``fingerprint``) and ``tools-accept``
(``server`` and ``tool``, with the ``fingerprint`` shown if it must still be that one; or
``instructions``: true).

Every answer has ``ok``; a refusal has ``error``, the text of the
:class:`~proxy.errors.LockgateError` behind it. :mod:`proxy.bridge.control` is the
client side.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from proxy.doors.jsonlines import send_json
from proxy.errors import LockgateError
from proxy.gateway.approvals import PendingApproval, Remember
from proxy.gateway.control import GatewayControl, PolicyInForce
from proxy.gateway.events import ApprovalAnswered, ApprovalPending, Event
from proxy.upstream.oauth import AuthState

__all__ = ["ControlDoor"]


class ControlDoor:
    """Serves control connections on the gateway's loop."""

    def __init__(self, control: GatewayControl) -> None:
        self._control = control

    async def serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_lasting: Callable[[], None],
    ) -> None:
        """Answer requests until the peer closes; ``on_lasting`` is called when the
        connection becomes one a person waits on (an approver, or a sign-in under way),
        which then is all it does: the last to be closed to make room."""
        while line := await reader.readline():
            try:
                request = json.loads(line)
                op = request["op"]
            except (ValueError, KeyError, TypeError):
                await send_json(writer, {"ok": False, "error": 'expected {"op": ...}'})
                continue
            if op == "watch":
                on_lasting()
                await self._watch(reader, writer)
                return
            if op == "reload-policy":
                policy = await self._control.reload_policy()
                answer = {"ok": policy.error is None, "error": policy.error, **_policy_json(policy)}
                await send_json(writer, answer)
                continue
            if op == "end-sessions":
                client = request.get("client")
                if not isinstance(client, str):
                    await send_json(writer, {"ok": False, "error": "client must be text"})
                    continue
                ended = await self._control.end_sessions(client)
                await send_json(writer, {"ok": True, "ended": ended})
                continue
            if op == "auth-login":
                on_lasting()
                await self._sign_in(request.get("server"), reader, writer)
                return
            if op == "auth-logout":
                await send_json(writer, await self._sign_out(request.get("server")))
                continue
            if op == "tools-accept":
                await send_json(writer, await self._accept(request))
                continue
            try:
                await send_json(writer, self._op(op, request))
            except LockgateError as exc:
                await send_json(writer, {"ok": False, "error": exc.message})

    def _op(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        """The answer to one request.

        Raises:
            LockgateError: the request was refused; its message is the answer's error.
        """
        control = self._control
        if op == "status":
            status = control.status()
            return {
                "ok": True,
                "paused": status.paused,
                "servers": list(status.servers),
                "disabled": list(status.disabled),
                "sessions": [
                    {
                        "id": s.id,
                        "server": s.server,
                        "client": s.client,
                        "started": s.started,
                        "up": s.up,
                    }
                    for s in status.sessions
                ],
                "policy": {**_policy_json(status.policy), "error": status.policy.error},
                "servers_error": status.servers_error,
                "approvers": status.approvers,
                "audit_error": status.audit_error,
                "pending": status.pending,
            }
        if op == "pause":
            control.pause()
            return {"ok": True, "paused": True}
        if op == "resume":
            control.resume()
            return {"ok": True, "paused": False}
        if op == "reload-servers":
            return {"ok": True, "servers": control.reload_servers()}
        if op == "approvals":
            return {"ok": True, "pending": [_pending_json(p) for p in control.pending_approvals()]}
        if op == "auth-status":
            states = control.auth_status()
            return {"ok": True, "servers": {name: _auth_json(s) for name, s in states.items()}}
        if op == "answer":
            return self._answer(request)
        if op == "tools-changes":
            return {
                "ok": True,
                "tools": [c.as_dict() for c in control.tool_changes()],
                "instructions": [c.as_dict() for c in control.instruction_changes()],
            }
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            remember = Remember(request.get("remember", "once"))
        except ValueError:
            return {"ok": False, "error": "remember must be once or session"}
        approve, digest = request.get("approve"), request.get("digest")
        reason = request.get("reason")
        # Only JSON true approves ("false" is a true value in Python), and only with the
        # digest of the call the approver was shown.
        if not isinstance(approve, bool):
            return {"ok": False, "error": "approve must be true or false"}
        if not isinstance(digest, str):
            return {"ok": False, "error": "an answer must name the call's digest"}
        if reason is not None and not isinstance(reason, str):
            return {"ok": False, "error": "reason must be text"}
        self._control.answer(
            str(request.get("id")), approve, digest=digest, reason=reason, remember=remember
        )
        return {"ok": True}

    async def _accept(self, request: dict[str, Any]) -> dict[str, Any]:
        """A person's acceptance of a held tool (``tool``) or of a server's instructions
        (``instructions``: true)."""
        server, tool = request.get("server"), request.get("tool")
        if not isinstance(server, str):
            return {"ok": False, "error": "server must be text"}
        try:
            if request.get("instructions") is True:
                await self._control.accept_instructions(server)
                return {"ok": True}
            seen = request.get("fingerprint")
            if not isinstance(tool, str) or not isinstance(seen, str | None):
                return {"ok": False, "error": "tool and fingerprint must be text"}
            accepted = await self._control.accept_tool(server, tool, fingerprint_seen=seen)
        except LockgateError as exc:
            return {"ok": False, "error": exc.message}
        return {"ok": True, "accepted": accepted.as_dict()}

    async def _sign_out(self, server: object) -> dict[str, Any]:
        if not isinstance(server, str):
            return {"ok": False, "error": "server must be text"}
        try:
            await self._control.sign_out(server)
        except LockgateError as exc:
            return {"ok": False, "error": exc.message}
        return {"ok": True, "signed_in": False}

    async def _sign_in(
        self, server: object, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Sign in to ``server``: the authorization page's address as soon as the gateway
        has it, then how it ended. The peer going away first cancels it: a sign-in no one
        waits for would hold its loopback port, and the server's next sign-in, for
        minutes."""
        if not isinstance(server, str):
            await send_json(writer, {"ok": False, "error": "server must be text"})
            return

        async def open_url(url: str) -> None:
            await send_json(writer, {"ok": True, "open": url})

        signing_in = asyncio.ensure_future(self._control.sign_in(server, open_url))
        # EOF, or a reset: the person cancelled (Ctrl-C), or the command died
        closed = asyncio.ensure_future(reader.read())
        try:
            await asyncio.wait({signing_in, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not signing_in.done():
                return  # no one waits for it: the finally cancels it
            try:
                signing_in.result()
            except LockgateError as exc:
                answer: dict[str, Any] = {"ok": False, "error": exc.message}
            else:
                state = self._control.auth_status().get(server)
                expires = state.expires_at if state is not None else None
                answer = {"ok": True, "signed_in": True, "expires_at": expires}
            await send_json(writer, answer)
        finally:
            closed.cancel()
            if not signing_in.done():
                signing_in.cancel()
                await asyncio.wait({signing_in})  # its loopback port is closed when we go
            for task in (signing_in, closed):
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: never "exception was never retrieved"

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Be an approver while the connection lasts; stream approval events to it."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        control = self._control

        def on_event(event: Event) -> None:
            if isinstance(event, ApprovalPending):
                queue.put_nowait(
                    {
                        "event": "pending",
                        "approval": {
                            "id": event.approval_id,
                            "call_id": event.call_id,
                            "client": event.client,
                            "server": event.server,
                            "tool": event.tool,
                            "arguments": event.arguments,
                            "rule": event.rule,
                            "case": event.case,
                            "reason": event.reason,
                            "deadline": event.deadline,
                            "digest": _digest_of(control, event.approval_id),
                            "about": event.about,
                        },
                    }
                )
            elif isinstance(event, ApprovalAnswered):
                queue.put_nowait(
                    {"event": "answered", "id": event.approval_id, "answer": event.answer}
                )

        unsubscribe = control.subscribe(on_event)
        detach = control.attach_approver()
        # EOF, or a reset: the approver went away (a reset is no error of ours)
        closed = asyncio.ensure_future(reader.read())
        try:
            pending = [_pending_json(p) for p in control.pending_approvals()]
            await send_json(writer, {"ok": True, "pending": pending})
            while not closed.done():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    await send_json(writer, getter.result())
                else:
                    getter.cancel()
        except ConnectionError:
            pass  # it went away while being told something
        finally:
            detach()
            unsubscribe()
            closed.cancel()
            if closed.done() and not closed.cancelled():
                closed.exception()  # retrieved: never "Task exception was never retrieved"


def _policy_json(policy: PolicyInForce) -> dict[str, Any]:
    """The policy in force, as ``status`` and ``reload-policy`` report it."""
    team = policy.team
    return {
        "source": policy.policy.source,
        "rules": policy.rules,
        "default": policy.policy.default.value,
        # the team's layer above it (None: no team policy), and why its file is not it
        "team": None
        if team is None
        else {"source": team.source, "rules": len(team.rules), "error": policy.team_error},
    }


def _auth_json(state: AuthState) -> dict[str, Any]:
    """One server's sign-in as ``auth-status`` tells it: never a token."""
    return {
        "state": state.state,
        "why": state.why,
        "expires_at": state.expires_at,
        "checked": state.checked,
    }


def _digest_of(control: GatewayControl, approval_id: str) -> str | None:
    for pending in control.pending_approvals():
        if pending.id == approval_id:
            return pending.digest
    return None


def _pending_json(p: PendingApproval) -> dict[str, Any]:
    return {
        "id": p.id,
        "call_id": p.call_id,
        "client": p.call.client,
        "server": p.call.server,
        "tool": p.call.tool,
        "arguments": p.call.arguments,
        "rule": p.decision.rule,
        "case": p.decision.case,
        "reason": p.decision.reason,
        "deadline": p.deadline,
        "digest": p.digest,
        "about": p.about,
    }
