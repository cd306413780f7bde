"""The tools model on its own (qtmodeltester): the rule in force for each tool and where
it comes from."""

from __future__ import annotations

from desktop.toolsview import ToolsModel
from proxy.policy.model import parse_policy
from proxy.policy.risk import classify
from proxy.upstream.catalog import ServerTools


def test_tools_model_shows_the_rule_in_force_and_where_it_comes_from(qtmodeltester):
    tools = [
        {"name": "read_file", "description": "Read a file", "inputSchema": {}},
        {"name": "delete_file", "description": "Delete a file", "inputSchema": {}},
        {"name": "search", "description": "Search", "inputSchema": {}},
    ]
    model = ToolsModel()
    model.set_catalog(
        {
            "fs": ServerTools("fs", tuple(tools), tuple(classify(t) for t in tools)),
            "down": ServerTools("down", error="cannot start server 'down'"),
        }
    )
    qtmodeltester.check(model)
    policy = parse_policy(
        '{"version": "1", "default": "ask", "tools": {"*delete*": {"action": "deny"},'
        ' "fs/read_file": {"action": "allow"}, "search": {"action": "deny", "hide": true}}}'
    )
    model.set_policy(policy)
    rules = [model.index(r, 3).data() for r in range(3)]
    assert rules == ["allow · rule fs/read_file", "deny · pattern *delete*", "hide · rule search"]
    assert model.errors == {"down": "cannot start server 'down'"}
    assert model.data(model.index(1, 2)).startswith("high")
