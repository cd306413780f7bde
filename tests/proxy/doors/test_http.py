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

from tests.support.harness import (
    INITIALIZE_PARAMS,
    RECORDER,
    Harness,
    recorder_servers,
    running,
    write_json,
)

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
