"""The gateway as the OAuth client of a remote MCP server, end to end: a server that
asks for a sign-in is refused fast (no browser, no SSE fallback) and audited until a
person signs in through GatewayControl; the tokens then serve every session, are renewed
once at a time at the authorization server (after a restart too), a refused renewal asks
for a sign-in again, and no token reaches a file.

Nothing is a double: the gateway is ``proxy.doors.serve.serve`` (tests/support/harness),
the server is tests/servers/oauth_server.py (an authorization server and the MCP server
it protects), the keyring is GNOME Keyring on a private D-Bus, and the "browser" does
what a person's does when they click Allow.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from keyring.backend import KeyringBackend

from proxy.audit.records import CallRecord
from proxy.config.secrets import SecretStore
from proxy.config.servers import HttpServer
from proxy.gateway.control import GatewayControl
from proxy.gateway.core import Gateway
from proxy.gateway.events import OAuthStateChanged, UpstreamUp
from proxy.upstream.oauth import AuthState, SignInFailed
from tests.support.harness import (
    INITIALIZE_PARAMS,
    Harness,
    LocalClient,
    running,
    text_of,
    write_json,
)
from tests.support.oauth import OAuthServer, OAuthServerFactory, follow_authorization

pytestmark = pytest.mark.slow


class Clock:
    """The gateway's wall clock, moved by the test (token expiry is on it)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


async def browser(url: str) -> None:
    """The person clicks Allow; the callback is served on this loop, so off it."""
    status = await asyncio.to_thread(follow_authorization, url)
    assert status == 200, f"the callback answered {status}"


def harness_for(
    root: Path, os_keyring: KeyringBackend, entry: dict[str, Any], clock: Clock | None = None
) -> Harness:
    harness = Harness(root, secrets=SecretStore(os_keyring), clock=clock)
    write_json(harness.paths.servers_file, {"mcpServers": {"docs": entry}})
    harness.write_policy({"default": "allow"})
    return harness


def sign_in_message(why: str) -> str:
    return (
        f"server 'docs' needs sign-in: {why}. A person can sign in from Lockgate's Servers "
        "tab or run: lockgate auth login docs"
    )


async def history(gateway: Gateway) -> list[CallRecord]:
    return await asyncio.to_thread(GatewayControl(gateway).history, limit=100)


def who(answer: dict[str, Any]) -> dict[str, Any]:
    assert "result" in answer, answer
    found: dict[str, Any] = json.loads(text_of(answer))
    return found


async def test_a_server_that_asks_for_a_sign_in_is_refused_fast_until_a_person_signs_in(
    tmp_path: Path, oauth_server: OAuthServer, keyring_for_docs: KeyringBackend
) -> None:
    harness = harness_for(tmp_path, keyring_for_docs, {"url": oauth_server.mcp_url})
    async with running(harness) as gateway:
        control = GatewayControl(gateway)
        async with LocalClient.open(harness, server="docs") as client:
            refused = await client.request("initialize", INITIALIZE_PARAMS)
            # the 401 was taken for what it is, not for a server without streamable HTTP
            (session,) = gateway.sessions.values()
            assert isinstance(session.spec, HttpServer)
            assert session.spec.sse is None
            ups = [e for e in harness.events if isinstance(e, UpstreamUp)]
            assert len(ups) == 1  # one connection: no second one over SSE
        asks = sign_in_message("the server asks for an OAuth sign-in")
        assert refused["error"]["message"] == asks
        # and no browser, no registration
        stats = oauth_server.stats()
        assert (stats["authorizations"], stats["registrations"], stats["token_requests"]) == (
            0,
            0,
            0,
        )
        assert [e.state for e in harness.events if isinstance(e, OAuthStateChanged)] == [
            "needs_sign_in"
        ]
        status = control.auth_status()["docs"]
        assert (status.state, status.why, status.checked) == (
            "needs_sign_in",
            "the server asks for an OAuth sign-in",
            True,
        )
        listed = await control.list_tools()
        assert listed["docs"].error == asks

        await control.sign_in("docs", browser)

        assert control.auth_status()["docs"].state == "signed_in"
        async with LocalClient.open(harness, server="docs") as client:
            await client.handshake(gateway)
            me = who(await client.call("whoami"))
            echoed = await client.call("echo", {"message": "through Lockgate"})
        assert text_of(echoed) == "Echo: through Lockgate"
        assert me["resource"] == oauth_server.mcp_url
        stats = oauth_server.stats()
        assert (stats["registrations"], stats["authorizations"], stats["token_requests"]) == (
            1,
            1,
            1,
        )
        assert stats["last_authorize"]["code_challenge_method"] == "S256"
        assert stats["last_authorize"]["resource"] == oauth_server.mcp_url
        assert [t.get("name") for t in (await control.list_tools())["docs"].tools] == [
            "whoami",
            "echo",
        ]
        calls = await history(gateway)
        assert [(c.tool, c.outcome) for c in reversed(calls)] == [
            ("whoami", "ok"),
            ("echo", "ok"),
        ]


async def test_one_sign_in_serves_every_session_renewed_once_at_a_time_across_a_restart(
    tmp_path: Path, oauth_server_factory: OAuthServerFactory, keyring_for_docs: KeyringBackend
) -> None:
    server = oauth_server_factory(access_lifetime=300)
    clock = Clock(1_700_000_000.0)
    harness = harness_for(tmp_path, keyring_for_docs, {"url": server.mcp_url, "oauth": {}}, clock)
    held: set[str] = set()  # every token and secret value Lockgate held: none in a file
    async with running(harness) as gateway:
        control = GatewayControl(gateway)
        # "oauth" says a sign-in is needed: refused before anything is asked of the server
        async with LocalClient.open(harness, server="docs") as client:
            refused = await client.request("initialize", INITIALIZE_PARAMS)
        assert refused["error"]["message"] == sign_in_message(
            "no one has signed in to it in Lockgate yet"
        )
        assert server.stats()["authorizations"] == 0

        await control.sign_in("docs", browser)
        expires = control.auth_status()["docs"].expires_at
        assert expires == clock.now + 300

        async with (
            LocalClient.open(harness, server="docs") as one,
            LocalClient.open(harness, server="docs", client="other-agent") as two,
            LocalClient.open(harness, server="docs") as three,
        ):
            sessions = (one, two, three)
            for session in sessions:
                await session.handshake(gateway)
            for jump in range(3):
                for _ in range(3):
                    answers = await asyncio.gather(
                        *(s.call("echo", {"message": f"{jump}"}) for s in sessions)
                    )
                    assert [text_of(a) for a in answers] == [f"Echo: {jump}"] * 3
                clock.now += 241  # within a minute of expiry: the next call renews
            answers = await asyncio.gather(*(s.call("whoami") for s in sessions))
            assert len({who(a)["client_id"] for a in answers}) == 1
            stats = server.stats()
            assert (stats["refreshes"], stats["refresh_reuses"]) == (3, 0)
            assert stats["authorizations"] == 1

            # the server stops taking the token: renewed on its 401, the call goes through
            server.revoke_access()
            answers = await asyncio.gather(*(s.call("echo", {"message": "on"}) for s in sessions))
            assert [text_of(a) for a in answers] == ["Echo: on"] * 3
            stats = server.stats()
            assert (stats["refreshes"], stats["refresh_reuses"]) == (4, 0)
            keeper = gateway.keeper_for(gateway.servers["docs"])
            assert keeper is not None
            held.update(keeper.secrets)
            current = await keeper.bearer()
            assert current is not None
            for open_session in gateway.sessions.values():  # out of every error text
                assert open_session.scrub(f"said {current}!") == "said [secret]!"
        states = [e.state for e in harness.events if isinstance(e, OAuthStateChanged)]
        assert states.count("refreshing") == 4

    # a new gateway on the same keyring: the stored sign-in is used, renewed at the issuer
    token_requests = server.stats()["token_requests"]
    clock.now += 1
    harness.events.clear()
    async with running(harness) as gateway:
        control = GatewayControl(gateway)
        async with LocalClient.open(harness, server="docs") as client:
            await client.handshake(gateway)
            assert text_of(await client.call("echo", {"message": "again"})) == "Echo: again"
            server.expire_access()
            assert text_of(await client.call("echo", {"message": "later"})) == "Echo: later"
            stats = server.stats()
            assert stats["token_requests"] == token_requests + 1
            assert (stats["refreshes"], stats["refresh_reuses"]) == (5, 0)
            assert stats["authorizations"] == 1  # no browser after the restart

            # the authorization server will not renew it: the call fails saying so, and
            # the next is refused before it is sent, both in the audit log
            server.revoke_refresh()
            server.expire_access()
            failed = await client.call("echo", {"message": "refused"})
            refusal = failed["error"]["message"]
            assert refusal.startswith(
                "server 'docs' needs sign-in: the authorization server refused to renew it "
                "(invalid_grant"
            )
            assert refusal.endswith("or run: lockgate auth login docs")
            blocked = await client.call("echo", {"message": "not sent"})
            assert blocked["result"]["isError"] is True
            assert refusal in text_of(blocked)
            assert control.auth_status()["docs"].state == "needs_sign_in"

            # a refused sign-in changes nothing
            server.deny_next()
            with pytest.raises(SignInFailed, match="access_denied"):
                await control.sign_in("docs", browser)
            assert control.auth_status()["docs"].state == "needs_sign_in"

            # signed in again, the same session goes on, without a restart
            ups = sum(isinstance(e, UpstreamUp) for e in harness.events)
            await control.sign_in("docs", browser)
            assert text_of(await client.call("echo", {"message": "back"})) == "Echo: back"
            assert sum(isinstance(e, UpstreamUp) for e in harness.events) == ups
            keeper = gateway.keeper_for(gateway.servers["docs"])
            assert keeper is not None
            held.update(keeper.secrets)
        calls = await history(gateway)
        by_message = {c.arguments.get("message"): c for c in calls}
        assert by_message["refused"].outcome == "upstream_down"
        assert by_message["refused"].error == refusal
        assert (by_message["not sent"].decision, by_message["not sent"].basis) == (
            "denied",
            "needs_sign_in",
        )
        assert by_message["not sent"].outcome == "blocked"
        assert refusal in by_message["not sent"].reason

        await control.sign_out("docs")
        assert control.auth_status()["docs"] == AuthState(
            "needs_sign_in", "it was signed out of in Lockgate"
        )
        assert SecretStore(keyring_for_docs).find("docs.oauth.tokens") is None
        assert SecretStore(keyring_for_docs).find("docs.oauth.client") is not None

    # no token ever reached a file: not the config, the data, the audit log or a log
    assert len(held) >= 12
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "audit.db" for p in files)
    for path in files:
        data = await anyio.Path(path).read_bytes()
        leaked = [len(value) for value in held if value.encode() in data]
        assert not leaked, f"{path} holds a token"


async def test_signing_out_of_a_server_turned_off_revokes_its_tokens_at_the_issuer(
    tmp_path: Path, oauth_server: OAuthServer, keyring_for_docs: KeyringBackend
) -> None:
    """Turned off is not forgotten: its sign-in is still a live grant at the issuer,
    which a sign-out must end as it would for a server in service."""
    harness = harness_for(tmp_path, keyring_for_docs, {"url": oauth_server.mcp_url})
    async with running(harness) as gateway:
        control = GatewayControl(gateway)
        await control.sign_in("docs", browser)
        assert oauth_server.stats()["active_access_tokens"] == 1
        write_json(
            harness.paths.servers_file,
            {"mcpServers": {"docs": {"url": oauth_server.mcp_url, "disabled": True}}},
        )
        control.reload_servers()
        assert "docs" in gateway.disabled_servers
        await control.sign_out("docs")
    stats = oauth_server.stats()
    assert stats["revocations"] >= 1
    assert stats["active_access_tokens"] == 0
    store = SecretStore(keyring_for_docs)
    assert store.find("docs.oauth.tokens") is None
    assert store.find("docs.oauth.client") is not None  # the registration stays
