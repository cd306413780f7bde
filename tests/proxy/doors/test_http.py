"""The HTTP door's checks, each on a real gateway with a real HTTP client: a token, a
loopback Host and Origin, a known server; every refusal a JSON-RPC error that says why,
and nothing refused ever reaching the server."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata
from pydantic import AnyUrl

from tests.support.harness import (
    INITIALIZE_PARAMS,
    RECORDER,
    Harness,
    recorder_servers,
    running,
    write_json,
)
from tests.support.oauth import MemoryTokenStorage

INIT = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE_PARAMS})


def headers(token: str | None, **extra: str) -> dict[str, str]:
    out = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token is not None:
        out["Authorization"] = f"Bearer {token}"
    return {**out, **extra}


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("no token", 401, "needs an access token"),
        ("a wrong token", 401, "not valid"),
        ("a foreign Origin", 403, "may not use Lockgate"),
        ("an unknown server", 404, "no server named 'nope'"),
        ("another path", 404, "Lockgate serves MCP at /mcp/SERVER"),
    ],
)
async def test_a_request_the_door_refuses_says_why(
    tmp_path: Path, case: str, status: int, words: str
) -> None:
    harness = Harness(tmp_path)
    async with running(harness):
        token = harness.token("agent")
        url = harness.http_url + "rec"
        sent: dict[str, Any] = {"url": url, "headers": headers(token)}
        if case == "no token":
            sent["headers"] = headers(None)
        elif case == "a wrong token":
            sent["headers"] = headers("lg_" + "x" * 40)
        elif case == "a foreign Origin":
            sent["headers"] = headers(token, Origin="https://evil.example")
        elif case == "an unknown server":
            sent["url"] = harness.http_url + "nope"
        else:
            sent["url"] = url.replace("/mcp/", "/other/")
        async with httpx2.AsyncClient() as http:
            response = await http.post(sent["url"], content=INIT, headers=sent["headers"])
        assert response.status_code == status
        assert words in response.json()["error"]["message"]
        assert harness.recorded() == []


async def test_a_server_turned_off_is_refused_saying_how_to_turn_it_on(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    off = {
        "command": sys.executable,
        "args": [str(RECORDER), str(harness.record)],
        "disabled": True,
    }
    write_json(harness.paths.servers_file, recorder_servers(harness.record, off=off))
    async with running(harness):
        token = harness.token("agent")
        async with httpx2.AsyncClient() as http:
            response = await http.post(
                harness.http_url + "off", content=INIT, headers=headers(token)
            )
            served = await http.post(harness.http_url + "rec", content=INIT, headers=headers(token))
        assert response.status_code == 404
        assert response.json()["error"]["message"] == (
            "server 'off' is turned off in Lockgate; a person can turn it on in Lockgate's "
            'Servers tab (or remove its "disabled": true from servers.json)'
        )
        assert served.status_code == 200  # the door answers the server next to it
        assert harness.recorded() == []


async def test_a_local_client_with_its_token_is_served(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    async with running(harness):
        token = harness.token("agent")
        async with httpx2.AsyncClient() as http:
            response = await http.post(
                harness.http_url + "rec",
                content=INIT,
                headers=headers(token, Origin=harness.http_url.removesuffix("/mcp/")),
            )
        assert response.status_code == 200
        assert response.headers["mcp-session-id"]


async def test_the_door_never_invites_a_client_into_an_oauth_sign_in(tmp_path: Path) -> None:
    """A client that signs in with OAuth on a 401 (Claude Code, VS Code, the SDKs) must
    find nothing to sign in to at Lockgate's door: no challenge naming resource metadata,
    no metadata, no registration; it fails with Lockgate's words instead of opening a
    browser on a flow that can never end (and never reconnecting)."""
    harness = Harness(tmp_path)
    async with running(harness):
        url = harness.http_url + "rec"
        origin = harness.http_url.split("/mcp/")[0]
        async with httpx2.AsyncClient() as http:
            refused = await http.post(url, content=INIT, headers=headers(None))
            assert refused.status_code == 401
            # the challenge HTTP requires, naming no resource metadata to discover
            assert refused.headers["www-authenticate"] == 'Bearer realm="lockgate"'
            for path in (
                "/.well-known/oauth-protected-resource/mcp/rec",
                "/.well-known/oauth-protected-resource",
                "/.well-known/oauth-authorization-server",
                "/.well-known/openid-configuration",
            ):
                found = await http.get(origin + path)
                assert found.status_code == 404, path
                assert "Lockgate serves MCP at /mcp/SERVER" in found.json()["error"]["message"]
            registered = await http.post(origin + "/register", json={"redirect_uris": []})
            assert registered.status_code == 404

        # the MCP SDK's own client, with an OAuth provider, as a signing-in client is
        opened: list[str] = []

        async def browser(url: str) -> None:
            opened.append(url)

        async def no_callback() -> AuthorizationCodeResult:
            raise AssertionError("no authorization can begin here")

        provider = OAuthClientProvider(
            server_url=url,
            client_metadata=OAuthClientMetadata(redirect_uris=[AnyUrl("http://127.0.0.1:1/cb")]),
            storage=MemoryTokenStorage(),
            redirect_handler=browser,
            callback_handler=no_callback,
        )
        with pytest.raises(BaseException) as failed:  # noqa: PT011 - the SDK's, any of them
            async with (
                httpx2.AsyncClient(auth=provider, timeout=30) as http,
                Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
            ):
                await client.list_tools()
        assert opened == []
        assert "Registration failed: 404" in repr(failed.value)  # and Lockgate's words
        assert harness.recorded() == []
