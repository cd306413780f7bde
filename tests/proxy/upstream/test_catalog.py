"""Listing every server's tools on connections of Lockgate's own (real servers)."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from proxy.config.secrets import SecretStore
from proxy.config.servers import StdioServer
from proxy.upstream.catalog import list_all_tools
from tests.support.live import BIN


async def test_a_server_that_cannot_start_is_reported_and_the_others_are_listed(tmp_path: Path):
    servers = {
        "time": StdioServer("time", str(BIN / "mcp-server-time")),
        "gone": StdioServer("gone", str(tmp_path / "no-such-server")),
    }
    logs: list[TextIO] = []

    def errlog(name: str) -> TextIO:  # a real file: the child's stderr goes there
        logs.append((tmp_path / f"{name}.log").open("a"))
        return logs[-1]

    try:
        found = await list_all_tools(servers, SecretStore(), errlog)
    finally:
        for log in logs:
            log.close()
    assert sorted(found) == ["gone", "time"]
    assert found["time"].error is None
    assert [t["name"] for t in found["time"].tools] == ["get_current_time", "convert_time"]
    assert [r.category.value for r in found["time"].risks] == ["read", "read"]
    assert found["gone"].tools == ()
    assert found["gone"].error is not None
    assert "cannot start server 'gone'" in found["gone"].error
