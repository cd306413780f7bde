"""The control door's wire: one JSON request a line, one answer a line, every refusal an
``ok: false`` with words a person can act on. A real gateway (the harness's) and a raw
connection to its socket, as any client of the protocol would speak it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from keyring.backend import KeyringBackend

from proxy.config.secrets import SecretStore
from proxy.doors.local import MAX_CONTROLS
from tests.support.harness import Harness, LocalClient, recorder_servers, running, write_json
from tests.support.oauth import OAuthServer, callback_port, follow_authorization, listening
from tests.support.waiting import eventually


@asynccontextmanager
async def control_line(harness: Harness) -> AsyncIterator[Any]:
    assert harness.info is not None
    reader, writer = await asyncio.open_unix_connection(harness.info.socket)
    writer.write(b'{"lockgate": 1, "mode": "control"}\n')
    assert json.loads(await reader.readline()) == {"ok": True}

    async def ask(line: bytes | dict[str, Any]) -> dict[str, Any]:
        raw = line if isinstance(line, bytes) else json.dumps(line).encode()
        writer.write(raw + b"\n")
        return dict(json.loads(await asyncio.wait_for(reader.readline(), 10)))

    try:
        yield ask
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("request_line", "error"),
    [
        (b"not json", 'expected {"op": ...}'),
        (b'{"no": "op"}', 'expected {"op": ...}'),
        ({"op": "make-coffee"}, "unknown op 'make-coffee'"),
        ({"op": "answer", "id": "x", "approve": "true", "digest": "d"}, "approve must be"),
        ({"op": "answer", "id": "x", "approve": True}, "an answer must name the call's digest"),
        ({"op": "answer", "approve": True, "digest": "d", "remember": "forever"}, "remember must"),
        ({"op": "answer", "approve": True, "digest": "d", "reason": 5}, "reason must be text"),
        ({"op": "answer", "id": "x", "approve": True, "digest": "d"}, "no such pending approval"),
        ({"op": "answer", "approve": True, "digest": "d", "remember": "always"}, "a rule"),
    ],
)
async def test_a_request_that_cannot_be_done_is_refused_in_words(
    tmp_path: Path, request_line: Any, error: str
) -> None:
    harness = Harness(tmp_path)
    async with running(harness), control_line(harness) as ask:
        answer = await ask(request_line)
        assert answer["ok"] is False
        assert error in answer["error"]
        assert (await ask({"op": "status"}))["ok"] is True  # and the connection goes on


async def test_status_pause_resume_and_reloads_on_the_wire(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow", "tools": {"echo": {}}})
    async with running(harness), control_line(harness) as ask:
        status = await ask({"op": "status"})
        assert set(status) == {
            "ok", "paused", "servers", "disabled", "sessions", "policy", "servers_error", "approvers",
            "audit_error", "pending"
        }  # fmt: skip
        assert (status["servers"], status["disabled"]) == (["rec"], [])
        assert status["policy"] == {
            "source": str(harness.paths.policy_file), "rules": 1, "default": "allow", "error": None,
            "team": None,  # no team_policy set
        }  # fmt: skip
        assert await ask({"op": "pause"}) == {"ok": True, "paused": True}
        assert (await ask({"op": "status"}))["paused"] is True
        assert await ask({"op": "resume"}) == {"ok": True, "paused": False}
        harness.paths.servers_file.write_text('{"mcpServers": {"bad name!": {}}}')
        refused = await ask({"op": "reload-servers"})
        assert refused["ok"] is False
        assert "a server name is" in refused["error"]
        harness.paths.policy_file.write_text("{ broken")
        reloaded = await ask({"op": "reload-policy"})
        assert reloaded["ok"] is False
        assert reloaded["rules"] == 1  # the last good one is what is in force
        assert await ask({"op": "approvals"}) == {"ok": True, "pending": []}


async def test_status_names_the_servers_turned_off_and_a_waiting_call_its_case(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path)
    off = {"command": "no-such-server", "disabled": True}
    write_json(harness.paths.servers_file, recorder_servers(harness.record, off=off))
    harness.write_policy(
        {"default": "allow", "tools": {"echo": {"when": [
            {"clients": ["someone-else"], "action": "deny"},
            {"arguments": {"required": ["n"]}, "action": "ask"},
        ]}}}
    )  # fmt: skip
    async with (
        running(harness) as gateway,
        control_line(harness) as ask,
        LocalClient.open(harness) as client,
    ):
        status = await ask({"op": "status"})
        assert (status["servers"], status["disabled"]) == (["rec"], ["off"])
        await client.handshake(gateway)
        assert harness.info is not None
        reader, writer = await asyncio.open_unix_connection(harness.info.socket)
        try:
            writer.write(b'{"lockgate": 1, "mode": "control"}\n{"op": "watch"}\n')
            assert json.loads(await reader.readline()) == {"ok": True}
            assert json.loads(await reader.readline()) == {"ok": True, "pending": []}
            call = client.start_call("echo", {"n": 1})
            heard = json.loads(await asyncio.wait_for(reader.readline(), 10))
        finally:
            writer.close()
        assert heard["event"] == "pending"
        assert (heard["approval"]["rule"], heard["approval"]["case"]) == ("echo", 1)
        await eventually(gateway.approvals.pending, "the call to wait for a person")
        (listed,) = (await ask({"op": "approvals"}))["pending"]
        assert (listed["rule"], listed["case"]) == ("echo", 1)
        answered = await ask(
            {"op": "answer", "id": listed["id"], "approve": False, "digest": listed["digest"]}
        )
        assert answered == {"ok": True}
        assert (await client.answer(call))["result"]["isError"] is True


# -- a remote server's OAuth sign-in on the wire -------------------------------------------


async def open_control(harness: Harness) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert harness.info is not None
    reader, writer = await asyncio.open_unix_connection(harness.info.socket)
    writer.write(b'{"lockgate": 1, "mode": "control"}\n')
    assert json.loads(await reader.readline()) == {"ok": True}
    return reader, writer


async def next_answer(reader: asyncio.StreamReader, timeout: float = 30) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(reader.readline(), timeout)))


@pytest.mark.slow
async def test_auth_login_streams_the_address_then_the_outcome_and_closing_cancels_it(
    tmp_path: Path, oauth_server: OAuthServer, keyring_for_docs: KeyringBackend
) -> None:
    harness = Harness(tmp_path, secrets=SecretStore(keyring_for_docs))
    write_json(
        harness.paths.servers_file,
        recorder_servers(harness.record, docs={"url": oauth_server.mcp_url}),
    )
    async with running(harness), control_line(harness) as ask:
        status = await ask({"op": "auth-status"})
        assert list(status["servers"]) == ["docs"]  # not the command server
        assert status["servers"]["docs"]["state"] == "not_signed_in"

        # the person gives up (Ctrl-C): the connection closes, the sign-in ends with it
        reader, writer = await open_control(harness)
        writer.write(b'{"op": "auth-login", "server": "docs"}\n')
        first = await next_answer(reader)
        assert set(first) == {"ok", "open"}
        abandoned = callback_port(first["open"])
        assert listening(abandoned)
        writer.close()
        await eventually(lambda: not listening(abandoned), "the abandoned sign-in to end")

        async def sign_in_started() -> (
            tuple[asyncio.StreamReader, asyncio.StreamWriter, str] | None
        ):
            """A new sign-in (once the cancelled one has let go: until then the gateway
            says one is under way)."""
            reader, writer = await open_control(harness)
            writer.write(b'{"op": "auth-login", "server": "docs"}\n')
            answer = await next_answer(reader)
            if "open" in answer:
                return reader, writer, str(answer["open"])
            assert "already under way" in answer["error"], answer
            writer.close()
            return None

        reader, writer, url = await eventually(sign_in_started, "a new sign-in to start")
        try:
            assert await asyncio.to_thread(follow_authorization, url) == 200
            done = await next_answer(reader)
            assert set(done) == {"ok", "signed_in", "expires_at"}
            assert (done["ok"], done["signed_in"]) == (True, True)
            assert await reader.read() == b""  # the sign-in was the connection's last request
        finally:
            writer.close()
        assert oauth_server.stats()["authorizations"] == 1  # the abandoned page: never opened

        status = await ask({"op": "auth-status"})
        assert status["servers"]["docs"] == {
            "state": "signed_in", "why": None, "expires_at": done["expires_at"], "checked": True
        }  # fmt: skip
        tokens = json.loads(SecretStore(keyring_for_docs).find("docs.oauth.tokens") or "")
        told = json.dumps([first, done, status])
        assert tokens["access_token"] not in told
        assert tokens["refresh_token"] not in told

        assert await ask({"op": "auth-logout", "server": "docs"}) == {
            "ok": True,
            "signed_in": False,
        }
        assert (await ask({"op": "auth-status"}))["servers"]["docs"] == {
            "state": "needs_sign_in",
            "why": "it was signed out of in Lockgate",
            "expires_at": None,
            "checked": True,
        }
        assert SecretStore(keyring_for_docs).find("docs.oauth.tokens") is None


@pytest.mark.slow
async def test_a_sign_in_under_way_is_never_closed_to_make_room_for_other_connections(
    tmp_path: Path, oauth_server: OAuthServer, keyring_for_docs: KeyringBackend
) -> None:
    """A person at the sign-in page must not lose it to a program opening control
    connections (each `lockgate status` is one): idle ones go first."""
    harness = Harness(tmp_path, secrets=SecretStore(keyring_for_docs))
    write_json(
        harness.paths.servers_file,
        recorder_servers(harness.record, docs={"url": oauth_server.mcp_url}),
    )
    async with running(harness):
        reader, writer = await open_control(harness)
        writer.write(b'{"op": "auth-login", "server": "docs"}\n')
        url = (await next_answer(reader))["open"]
        flood = [await open_control(harness) for _ in range(MAX_CONTROLS)]
        try:
            assert await asyncio.to_thread(follow_authorization, url) == 200
            done = await next_answer(reader)
            assert (done["ok"], done["signed_in"]) == (True, True)
            assert await flood[0][0].read() == b""  # the oldest idle one made room
        finally:
            writer.close()
            for _, idle in flood:
                idle.close()


@pytest.mark.parametrize(
    ("request_line", "error"),
    [
        ({"op": "auth-login"}, "server must be text"),
        ({"op": "auth-login", "server": "rec"}, "'rec' is not a remote server Lockgate signs in"),
        ({"op": "auth-login", "server": "nope"}, "Lockgate has no server named 'nope'"),
    ],
)
async def test_a_sign_in_that_cannot_start_is_refused_and_ends_the_connection(
    tmp_path: Path, request_line: dict[str, Any], error: str
) -> None:
    harness = Harness(tmp_path)
    async with running(harness):
        reader, writer = await open_control(harness)
        try:
            writer.write(json.dumps(request_line).encode() + b"\n")
            answer = await next_answer(reader)
            assert answer["ok"] is False
            assert error in answer["error"]
            assert await reader.read() == b""
        finally:
            writer.close()


@pytest.mark.parametrize(
    ("request_line", "error"),
    [
        ({"op": "auth-logout", "server": 5}, "server must be text"),
        ({"op": "auth-logout", "server": "rec"}, "'rec' is not a remote server Lockgate signs in"),
    ],
)
async def test_a_sign_out_that_cannot_be_done_is_refused_in_words(
    tmp_path: Path, request_line: dict[str, Any], error: str
) -> None:
    harness = Harness(tmp_path)
    async with running(harness), control_line(harness) as ask:
        answer = await ask(request_line)
        assert answer["ok"] is False
        assert error in answer["error"]
        assert (await ask({"op": "auth-status"})) == {"ok": True, "servers": {}}
