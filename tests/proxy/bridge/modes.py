"""The two ways `lockgate connect` bridges, for every test that starts one.

A test module that starts `lockgate connect` imports the fixture under its own name
(``bridge_mode = modes.bridge_mode``) and asks for it: the test then runs once with the
pipes passed to the gateway (``fd``) and once relayed (``relay``), through the same
environment variable a person would set. Every `lockgate connect` the test starts with
this process's environment (``os.environ``, ``LiveGateway.env``) bridges that way; one
started with an environment of its own takes :func:`bridge_env` into it.
"""

from __future__ import annotations

import os

import pytest

from proxy.bridge.connect import BRIDGE_VARIABLE

__all__ = ["BRIDGE_VARIABLE", "MODES", "bridge_env", "bridge_mode"]

MODES = ("fd", "relay")


@pytest.fixture(params=MODES)
def bridge_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``fd`` or ``relay``: how every `lockgate connect` of this test bridges."""
    mode: str = request.param
    monkeypatch.setenv(BRIDGE_VARIABLE, mode)
    return mode


def bridge_env() -> dict[str, str]:
    """The bridge's variable as the running test has it, for an environment built from
    scratch (an MCP client's ``StdioServerParameters``)."""
    mode = os.environ.get(BRIDGE_VARIABLE)
    return {} if mode is None else {BRIDGE_VARIABLE: mode}
