"""The ``lockgate`` command line, as a person uses it: arguments in, text and exit code out."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from proxy.cli.main import main
from tests.proxy.policy.test_model import POLICY_MD_EXAMPLE

# The example policy of POLICY.md: six rules, one of each kind.
EXAMPLE_POLICY: dict[str, Any] = json.loads(POLICY_MD_EXAMPLE)

# Written out by hand so the typo's line and column are the ones a person sees in an editor.
TYPO_POLICY = """\
{
  "version": "1",
  "default": "ask",
  "tools": {
    "python_test": {
      "limits": [
        {"counter": "python_test_rate", "windw": "minute", "max": 10}
      ]
    }
  }
}
"""

READ_TOOL = {
    "name": "read_file",
    "description": "Read the complete contents of a file.",
    "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}},
}
DELETE_TOOL = {
    "name": "delete_entities",
    "description": "Delete multiple entities from the knowledge graph.",
    "inputSchema": {"type": "object", "properties": {"entityNames": {"type": "array"}}},
}


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run ``lockgate ARGS...`` in this process; argparse's exits become exit codes."""

    def run(*argv: str | Path) -> Result:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = 0 if exc.code is None else int(exc.code)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def write(path: Path, content: str | dict[str, Any] | list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content, indent=2)
    path.write_text(text, "utf-8")
    return path


def position_of(text: str, needle: str) -> tuple[int, int]:
    """1-based line and column of ``needle`` in ``text``, as an editor shows them."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number, line.index(needle) + 1
    raise AssertionError(f"{needle!r} not in the text")


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return write(tmp_path / "example.json", EXAMPLE_POLICY)


@pytest.fixture
def config_dir(lockgate_dirs: tuple[Path, Path]) -> Path:
    return lockgate_dirs[0]


# --- policy check ------------------------------------------------------------------------


def test_check_valid_file(cli: Cli, example: Path) -> None:
    result = cli("policy", "check", example)
    assert result.code == 0
    assert result.out == f"{example}: valid (6 rules, default ask)\n"
    assert result.err == ""


def test_check_names_file_line_column_and_json_path_of_a_typo(cli: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "policy.json", TYPO_POLICY)
    line, column = position_of(TYPO_POLICY, '"windw"')
    result = cli("policy", "check", path)
    assert result.code == 1
    assert result.out == ""
    errors = result.err.splitlines()
    assert (
        f'{path}:{line}:{column}: tools."python_test".limits[0].windw: unknown field' in result.err
    ), errors
    assert "did you mean 'window'?" in result.err
    assert errors[-1] == f"{path}: invalid (2 problems)"


@pytest.mark.parametrize(
    ("text", "needle", "expected"),
    [
        pytest.param(
            '{\n  "version": "1",\n  "default": \n}\n',
            "}",
            "(the whole file): not valid JSON: Expecting value",
            id="truncated-json",
        ),
        pytest.param(
            '{"version": "2", "default": "ask"}',
            '"2"',
            'version: unsupported version; supported versions: "1"',
            id="version",
        ),
        pytest.param(
            '{"version": "1",\n "default": "maybe"}',
            '"maybe"',
            'default: must be "allow", "deny" or "ask"; got "maybe"',
            id="default",
        ),
        pytest.param(
            '{"version": "1",\n "tool": {}}',
            '"tool"',
            "tool: unknown field (did you mean 'tools'?)",
            id="top-level-typo",
        ),
    ],
)
def test_check_invalid_files(
    cli: Cli, tmp_path: Path, text: str, needle: str, expected: str
) -> None:
    path = write(tmp_path / "policy.json", text)
    line, column = position_of(text, needle)
    result = cli("policy", "check", path)
    assert result.code == 1
    assert f"{path}:{line}:{column}: {expected}" in result.err
    assert result.err.splitlines()[-1].startswith(f"{path}: invalid (")


def test_check_missing_explicit_file_is_an_error(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    result = cli("policy", "check", missing)
    assert result.code == 1
    assert f"{missing}: (the whole file): no such file" in result.err


def test_check_json_valid(cli: Cli, example: Path) -> None:
    result = cli("policy", "check", "--json", example)
    assert result.code == 0
    assert json.loads(result.out) == {
        "valid": True,
        "file": str(example),
        "exists": True,
        "rules": 6,
        "default": "ask",
    }


def test_check_json_invalid(cli: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "policy.json", TYPO_POLICY)
    line, column = position_of(TYPO_POLICY, '"windw"')
    result = cli("policy", "check", path, "--json")
    assert result.code == 1
    data = json.loads(result.out)
    assert data["valid"] is False
    assert data["file"] == str(path)
    typo = [
        e for e in data["errors"] if e["path"] == ["tools", "python_test", "limits", 0, "windw"]
    ]
    assert len(typo) == 1, data["errors"]
    assert typo[0]["line"] == line
    assert typo[0]["column"] == column
    assert typo[0]["message"].startswith("unknown field")
    assert typo[0]["text"].startswith(
        f'{path}:{line}:{column}: tools."python_test".limits[0].windw: unknown field'
    )
    assert {e["message"] for e in data["errors"]} >= {"'window' is required"}


def test_check_without_file_uses_policy_json_in_the_config_dir(cli: Cli, config_dir: Path) -> None:
    policy = write(config_dir / "policy.json", EXAMPLE_POLICY)
    result = cli("policy", "check")
    assert result.code == 0
    assert result.out == f"{policy}: valid (6 rules, default ask)\n"


def test_check_without_file_reports_an_invalid_policy_json(cli: Cli, config_dir: Path) -> None:
    policy = write(config_dir / "policy.json", TYPO_POLICY)
    result = cli("policy", "check")
    assert result.code == 1
    assert f"{policy}:7:" in result.err
    assert "windw: unknown field" in result.err


@pytest.mark.parametrize(
    "where",
    ["before", "between", "after"],
)
def test_config_dir_option_wins_over_the_environment(
    cli: Cli, config_dir: Path, tmp_path: Path, where: str
) -> None:
    # The environment's folder holds a broken policy, so using it would exit 1.
    write(config_dir / "policy.json", TYPO_POLICY)
    other = tmp_path / "other"
    policy = write(other / "policy.json", EXAMPLE_POLICY)
    option = ["--config-dir", str(other)]
    argv = {
        "before": [*option, "policy", "check"],
        "between": ["policy", *option, "check"],
        "after": ["policy", "check", *option],
    }[where]
    result = cli(*argv)
    assert result.code == 0, result.err
    assert result.out == f"{policy}: valid (6 rules, default ask)\n"


def test_check_without_any_policy_file_says_the_default_applies(cli: Cli, config_dir: Path) -> None:
    result = cli("policy", "check")
    assert result.code == 0
    assert (
        result.err
        == f"no policy file at {config_dir / 'policy.json'}: the built-in default policy applies\n"
    )


def test_check_json_without_any_policy_file(cli: Cli, config_dir: Path) -> None:
    result = cli("policy", "check", "--json")
    assert result.code == 0
    data = json.loads(result.out)
    assert data["valid"] is True
    assert data["exists"] is False
    assert data["file"] == str(config_dir / "policy.json")
    assert "built-in default" in data["message"]


def test_policy_without_an_action_is_a_usage_error(cli: Cli) -> None:
    result = cli("policy")
    assert result.code == 2
    assert "ACTION" in result.err


# --- policy explain ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "tool", "arguments", "decision", "rule", "reason"),
    [
        pytest.param(
            "devtools",
            "git_status",
            {},
            "allow",
            "devtools/git_*",
            "devtools/git_status is allowed by the policy",
            id="glob-allow",
        ),
        pytest.param(
            "ci",
            "python_build",
            {},
            "deny",
            "python_build",
            "Builds run in CI, not from the agent.",
            id="deny-with-reason",
        ),
        pytest.param(
            "memory",
            "delete_entities",
            {},
            "ask",
            "*delete*",
            "memory/delete_entities needs a person's approval",
            id="glob-ask",
        ),
        pytest.param(
            "filesystem",
            "write_file",
            {"path": "/home/ann/projects/notes.md"},
            "allow",
            "filesystem/write_file",
            "filesystem/write_file is allowed by the policy",
            id="arguments-pass",
        ),
        pytest.param(
            "devtools",
            "python_test",
            {},
            "allow",
            "python_test",
            "devtools/python_test is allowed by the policy",
            id="with-limit",
        ),
        pytest.param(
            "other",
            "frobnicate",
            {},
            "ask",
            None,
            "no rule matches other/frobnicate; the policy's default is to ask a person",
            id="default",
        ),
    ],
)
def test_explain_json(
    cli: Cli,
    example: Path,
    *,
    server: str,
    tool: str,
    arguments: dict[str, Any],
    decision: str,
    rule: str | None,
    reason: str,
) -> None:
    result = cli(
        "policy",
        "explain",
        server,
        tool,
        "--policy",
        example,
        "--args",
        json.dumps(arguments),
        "--json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["decision"], data["rule"], data["reason"]) == (decision, rule, reason)
    assert data["call"] == {
        "server": server,
        "tool": tool,
        "arguments": arguments,
        "client": "local",
    }
    assert data["policy"] == str(example)
    assert (data["agent_message"] is not None) == (decision == "deny")


def test_explain_names_the_failed_argument_constraint(cli: Cli, example: Path) -> None:
    args = json.dumps({"path": "/etc/passwd"})
    result = cli(
        "policy",
        "explain",
        "filesystem",
        "write_file",
        "--policy",
        example,
        "--args",
        args,
        "--json",
    )
    assert result.code == 0
    data = json.loads(result.out)
    assert data["decision"] == "deny"
    assert data["basis"] == "arguments"
    assert data["argument_path"] == "$.path"
    assert "arguments rejected at $.path" in data["reason"]
    assert "constraint: properties/path/pattern" in data["reason"]
    assert "Lockgate's policy blocked this call to filesystem/write_file" in data["agent_message"]


def test_explain_text_for_a_blocked_call(cli: Cli, example: Path) -> None:
    result = cli("policy", "explain", "filesystem", "write_file", "--policy", example)
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == "decision: deny"
    assert lines[1] == 'rule:     "filesystem/write_file"  (exact scoped)'
    assert lines[2] == (
        "reason:   arguments rejected at $: 'path' is a required property (constraint: required)"
    )
    assert lines[3] == f"policy:   {example}"
    assert lines[-1].startswith("the agent is told: Lockgate's policy blocked this call")


def test_explain_text_for_an_ask_shows_the_pattern_and_timeout(cli: Cli, example: Path) -> None:
    result = cli("policy", "explain", "fs", "delete_file", "--policy", example)
    assert result.code == 0
    assert 'rule:     "*delete*"  (glob)' in result.out
    assert "approval: denied if nobody answers within 60 s" in result.out
    assert "the agent is told" not in result.out


def test_explain_uses_the_approval_timeout_setting_and_names_the_case(
    cli: Cli, config_dir: Path, tmp_path: Path
) -> None:
    write(config_dir / "settings.json", {"approval_timeout_seconds": 45})
    policy = write(
        tmp_path / "p.json",
        {"version": "1", "default": "allow", "tools": {"git/push": {"when": [
            {"clients": ["ci"], "action": "deny"},
            {"arguments": {"required": ["force"]}, "action": "ask"},
        ]}}},
    )  # fmt: skip
    args = ["policy", "explain", "git", "push", "--policy", policy, "--args", '{"force": true}']
    result = cli(*args)
    assert result.code == 0
    assert 'rule:     "git/push"  (exact scoped), its when[1]' in result.out
    assert "approval: denied if nobody answers within 45 s" in result.out  # the setting's
    data = json.loads(cli(*args, "--json").out)
    assert (data["case"], data["approval_timeout"]) == (1, 45)
    write(config_dir / "settings.json", {"approval_timeout_seconds": "soon"})
    broken = cli(*args)
    assert broken.code == 0  # the decision is still explained
    assert "the default approval timeout is shown" in broken.err
    assert "approval: denied if nobody answers within 120 s" in broken.out


def test_explain_passes_the_client(cli: Cli, example: Path) -> None:
    result = cli(
        "policy",
        "explain",
        "devtools",
        "python_test",
        "--policy",
        example,
        "--client",
        "claude",
        "--json",
    )
    assert json.loads(result.out)["call"]["client"] == "claude"


def test_explain_lists_less_specific_matches(cli: Cli, tmp_path: Path) -> None:
    policy = write(
        tmp_path / "p.json",
        {"version": "1", "tools": {"*": {"action": "deny"}, "git_*": {"action": "allow"}}},
    )
    result = cli("policy", "explain", "git", "git_push", "--policy", policy, "--json")
    data = json.loads(result.out)
    assert (data["decision"], data["rule"], data["also_matching"]) == ("allow", "git_*", ["*"])


def test_explain_uses_policy_json_in_the_config_dir(cli: Cli, config_dir: Path) -> None:
    policy = write(config_dir / "policy.json", EXAMPLE_POLICY)
    result = cli("policy", "explain", "ci", "python_build", "--json")
    data = json.loads(result.out)
    assert (data["decision"], data["policy"]) == ("deny", str(policy))


@pytest.mark.parametrize(
    ("tool", "rule", "timeout"),
    [
        ("delete_file", "*delete*", 60),
        ("read_file", "*", 120),
    ],
)
def test_explain_without_a_policy_uses_the_built_in_default(
    cli: Cli, config_dir: Path, tool: str, rule: str, timeout: int
) -> None:
    result = cli("policy", "explain", "fs", tool, "--json")
    assert result.code == 0
    data = json.loads(result.out)
    assert data["decision"] == "ask"
    assert data["rule"] == rule
    assert data["approval_timeout"] == timeout
    assert data["policy"] == f"built-in default (no file at {config_dir / 'policy.json'})"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("{path: 1}", "--args is not valid JSON: Expecting property name"),
        ("", "--args is not valid JSON: Expecting value"),
        ("[1, 2]", "--args must be a JSON object"),
        ('"/tmp/x"', "--args must be a JSON object"),
        ("null", "--args must be a JSON object"),
    ],
)
def test_explain_bad_args_is_a_usage_error(
    cli: Cli, example: Path, args: str, message: str
) -> None:
    result = cli("policy", "explain", "s", "t", "--policy", example, "--args", args)
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith(f"lockgate: error: {message}")


def test_explain_with_an_invalid_policy_fails(cli: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "policy.json", TYPO_POLICY)
    result = cli("policy", "explain", "s", "python_test", "--policy", path)
    assert result.code == 1
    assert result.out == ""
    assert 'tools."python_test".limits[0].windw: unknown field' in result.err
    assert "keeps its last good policy" in result.err


def test_explain_with_a_missing_policy_file_fails(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    result = cli("policy", "explain", "s", "t", "--policy", missing)
    assert result.code == 1
    assert f"{missing}: (the whole file): no such file" in result.err


# --- policy schema -----------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema_that_matches_the_loader(cli: Cli) -> None:
    result = cli("policy", "schema")
    assert result.code == 0
    schema = json.loads(result.out)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(EXAMPLE_POLICY)) == []
    assert list(validator.iter_errors(json.loads(TYPO_POLICY))) != []


# --- risk ----------------------------------------------------------------------------------


def risk_rows(out: str) -> dict[str, tuple[str, str]]:
    """The text table as {name: (category, level)}."""
    rows = {}
    for line in out.splitlines():
        name, category, level, *_ = line.split()
        rows[name] = (category, level)
    return rows


@pytest.mark.parametrize(
    ("document", "names"),
    [
        pytest.param(READ_TOOL, ["read_file"], id="one-tool"),
        pytest.param([READ_TOOL, DELETE_TOOL], ["read_file", "delete_entities"], id="list"),
        pytest.param(
            {"tools": [READ_TOOL, DELETE_TOOL]}, ["read_file", "delete_entities"], id="tools-list"
        ),
        pytest.param(
            {"jsonrpc": "2.0", "id": 1, "result": {"tools": [READ_TOOL, DELETE_TOOL]}},
            ["read_file", "delete_entities"],
            id="json-rpc",
        ),
    ],
)
def test_risk_accepts_every_shape(
    cli: Cli, tmp_path: Path, document: Any, names: list[str]
) -> None:
    path = write(tmp_path / "tools.json", document)
    result = cli("risk", path)
    assert result.code == 0, result.err
    expected = {"read_file": ("read", "low"), "delete_entities": ("destructive", "high")}
    assert risk_rows(result.out) == {n: expected[n] for n in names}
    assert list(risk_rows(result.out)) == names  # in the order the server listed them


def test_risk_reads_standard_input(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"tools": [DELETE_TOOL]})))
    result = cli("risk", "-", "--json")
    assert result.code == 0
    assert [(r["name"], r["category"]) for r in json.loads(result.out)] == [
        ("delete_entities", "destructive")
    ]


def test_risk_json(cli: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "tools.json", [READ_TOOL, DELETE_TOOL])
    result = cli("risk", "--json", path)
    assert result.code == 0
    data = json.loads(result.out)
    assert [(r["name"], r["category"], r["level"]) for r in data] == [
        ("read_file", "read", "low"),
        ("delete_entities", "destructive", "high"),
    ]
    for row in data:
        assert set(row) == {"name", "category", "level", "signals"}
        assert row["signals"], row
        assert all(isinstance(s, str) and s for s in row["signals"])
    assert 'name: word "delete" -> destructive' in data[1]["signals"]


def test_risk_text_explains_each_badge(cli: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "tools.json", [DELETE_TOOL])
    result = cli("risk", path)
    assert 'name: word "delete" -> destructive' in result.out


def test_risk_accepts_a_byte_order_mark(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "tools.json"
    path.write_text("\ufeff" + json.dumps(READ_TOOL), "utf-8")
    result = cli("risk", path)
    assert result.code == 0, result.err
    assert risk_rows(result.out) == {"read_file": ("read", "low")}


def test_risk_bad_json_names_line_and_column(cli: Cli, tmp_path: Path) -> None:
    text = '{"tools": [\n  {"name": "x",}\n]}'
    path = write(tmp_path / "tools.json", text)
    line, column = position_of(text, ",}")
    column += 1  # the stray "}" after the comma
    result = cli("risk", path)
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith(f"{path}:{line}:{column}: not valid JSON")


def test_risk_non_utf8_file_is_invalid_not_a_crash(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "tools.json"
    path.write_bytes(b'{"name": "caf\xe9"}')
    result = cli("risk", path)
    assert result.code == 1
    assert result.err == f"{path}: not UTF-8 text (byte 13 cannot be decoded)\n"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param({"tools": []}, "expected a tool definition", id="empty-tools"),
        pytest.param([], "expected a tool definition", id="empty-list"),
        pytest.param(
            {"jsonrpc": "2.0", "id": 1, "result": {"tools": []}},
            "expected a tool definition",
            id="empty-result",
        ),
        pytest.param(42, "expected a tool definition", id="number"),
        pytest.param(
            {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "no"}},
            'item 0 is not a tool definition (an object with a "name")',
            id="json-rpc-error",
        ),
        pytest.param(
            [READ_TOOL, {"description": "nameless"}],
            'item 1 is not a tool definition (an object with a "name")',
            id="nameless",
        ),
    ],
)
def test_risk_document_without_tools_is_invalid(
    cli: Cli, tmp_path: Path, document: Any, message: str
) -> None:
    path = write(tmp_path / "tools.json", document)
    result = cli("risk", path)
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith(f"{path}: {message}")


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_risk_unreadable_file_is_a_usage_error(cli: Cli, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope.json" if kind == "missing" else tmp_path
    result = cli("risk", path)
    assert result.code == 2
    assert result.err.startswith(f"lockgate: error: cannot read {path}: ")


# --- paths, version, status ----------------------------------------------------------------


def paths_shown(out: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in out.splitlines())
    return {key.strip(): value.strip() for key, value in pairs}


def test_paths_follow_the_environment(cli: Cli, lockgate_dirs: tuple[Path, Path]) -> None:
    config, data = lockgate_dirs
    result = cli("paths")
    assert result.code == 0
    assert paths_shown(result.out) == {
        "config dir": str(config),
        "policy": str(config / "policy.json"),
        "servers": str(config / "servers.json"),
        "clients": str(config / "clients.json"),
        "data dir": str(data),
        "audit log": str(data / "audit.db"),
    }


@pytest.mark.parametrize(
    ("options", "config_is_option", "data_is_option"),
    [
        (["--config-dir", "{c}"], True, False),
        (["--data-dir", "{d}"], False, True),
        (["--config-dir", "{c}", "--data-dir", "{d}"], True, True),
    ],
)
@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_paths_options_override_the_environment(
    cli: Cli,
    lockgate_dirs: tuple[Path, Path],
    tmp_path: Path,
    *,
    options: list[str],
    config_is_option: bool,
    data_is_option: bool,
    before: bool,
) -> None:
    config_env, data_env = lockgate_dirs
    config_opt, data_opt = tmp_path / "c-opt", tmp_path / "d-opt"
    filled = [o.format(c=config_opt, d=data_opt) for o in options]
    argv = [*filled, "paths"] if before else ["paths", *filled]
    shown = paths_shown(cli(*argv).out)
    assert shown["config dir"] == str(config_opt if config_is_option else config_env)
    assert shown["data dir"] == str(data_opt if data_is_option else data_env)


def test_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.code == 0
    assert result.out == f"lockgate {version('lockgate')}\n"


@pytest.mark.parametrize(
    ("policy", "code", "expected"),
    [
        (None, 0, "policy: built-in default (no file at"),
        (EXAMPLE_POLICY, 0, "6 rules, default ask"),
        (TYPO_POLICY, 1, "policy: INVALID"),
    ],
)
def test_no_command_prints_status(
    cli: Cli, config_dir: Path, policy: str | dict[str, Any] | None, code: int, expected: str
) -> None:
    if policy is not None:
        write(config_dir / "policy.json", policy)
    result = cli()
    assert result.code == code
    assert result.out.startswith(f"Lockgate {version('lockgate')}\n")
    assert expected in result.out


# --- the installed console script --------------------------------------------------------


@pytest.fixture(scope="module")
def lockgate_exe() -> str:
    exe = shutil.which("lockgate", path=str(Path(sys.executable).parent))
    assert exe is not None, "the lockgate console script is not installed next to python"
    return exe


def run_exe(
    exe: str, *argv: str | Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [exe, *map(str, argv)],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def test_console_script_version(lockgate_exe: str) -> None:
    proc = run_exe(lockgate_exe, "--version")
    assert (proc.returncode, proc.stdout) == (0, f"lockgate {version('lockgate')}\n")


def test_console_script_checks_a_policy(lockgate_exe: str, tmp_path: Path) -> None:
    path = write(tmp_path / "policy.json", TYPO_POLICY)
    proc = run_exe(lockgate_exe, "policy", "check", path)
    assert proc.returncode == 1
    assert 'tools."python_test".limits[0].windw: unknown field' in proc.stderr


def test_console_script_reads_tools_from_stdin(lockgate_exe: str, config_dir: Path) -> None:
    # The subprocess inherits the test's LOCKGATE_CONFIG_DIR.
    proc = run_exe(lockgate_exe, "risk", "-", stdin=json.dumps({"tools": [DELETE_TOOL]}))
    assert proc.returncode == 0, proc.stderr
    assert risk_rows(proc.stdout) == {"delete_entities": ("destructive", "high")}
    paths = run_exe(lockgate_exe, "paths")
    assert paths_shown(paths.stdout)["config dir"] == str(config_dir)


@pytest.mark.parametrize("command", [["clients", "--json"], ["autostart"], ["paths"]])
def test_python_dash_m_runs_every_command(command: list[str], tmp_path: Path) -> None:
    """`python -m proxy.cli` once stopped at a `__main__` block placed above the functions
    it calls (NameError for clients, autostart, init, route)."""
    env = {
        **_env_without_session(),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "proxy.cli", *command],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "NameError" not in proc.stderr


def _env_without_session() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}


def test_main_blocks_come_last() -> None:
    """A module's `if __name__ == "__main__":` block is its last statement, so everything
    it calls is defined by the time it runs."""
    import ast

    root = Path(__file__).resolve().parents[3]
    for path in [*root.glob("proxy/**/*.py"), *root.glob("desktop/**/*.py")]:
        body = ast.parse(path.read_text()).body
        for index, node in enumerate(body):
            if (
                isinstance(node, ast.If)
                and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name)
                and node.test.left.id == "__name__"
            ):
                assert index == len(body) - 1, f"{path}: the __main__ block is not last"


def test_a_result_question_is_answered_once_or_not_at_all(monkeypatch, capsys):
    """A result that holds a secret: "session" and "always" (a rule) are not answers."""
    from proxy.cli import gateway

    typed = iter(["a", "s", "y"])
    monkeypatch.setattr("builtins.input", lambda _prompt: next(typed))
    assert gateway._ask_choice(sys.stdout, about_result=True) == "once"
    assert capsys.readouterr().out.count("please answer y or n") == 2
