"""`lockgate token` and `lockgate secret`, as a person uses them."""

from __future__ import annotations

import io
import os
import pty
import select
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import keyring
import pytest

from proxy.config.tokens import TokenStore
from tests.proxy.cli.test_main import cli  # noqa: F401 - the fixture


def test_token_create_prints_only_the_token_and_it_works(cli, config_dir):  # noqa: F811
    result = cli("token", "create", "claude-desktop")
    assert result.code == 0
    token = result.out.strip()
    assert result.out == token + "\n"  # alone on stdout, ready to pipe
    assert "shown only this once" in result.err
    assert TokenStore(config_dir / "clients.json").verify(token) == "claude-desktop"


def test_token_list_and_revoke(cli, config_dir):  # noqa: F811
    token = cli("token", "create", "cursor").out.strip()
    cli("token", "create", "vscode")
    listed = cli("token", "list")
    assert [line.split("\t")[0] for line in listed.out.splitlines()] == ["cursor", "vscode"]
    assert token not in listed.out
    assert cli("token", "revoke", "cursor").code == 0
    assert TokenStore(config_dir / "clients.json").verify(token) is None
    assert cli("token", "revoke", "cursor").code == 1


def test_token_errors(cli):  # noqa: F811
    assert cli("token", "create", "a").code == 0
    again = cli("token", "create", "a")
    assert again.code == 1
    assert "already has a token" in again.err
    assert cli("token", "create", "a", "--replace").code == 0
    assert "not a valid client name" in cli("token", "create", "bad name").err
    empty = cli("token", "list", "--config-dir", "/nonexistent-lockgate-dir")
    assert empty.code == 0
    assert "no client has a token" in empty.err


@pytest.fixture
def real_keyring(os_keyring, monkeypatch):
    monkeypatch.setattr(keyring.core, "_keyring_backend", os_keyring)
    return os_keyring


def test_secret_set_from_stdin_and_delete(cli, real_keyring, monkeypatch):  # noqa: F811
    name = f"cli-{uuid.uuid4().hex}"
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cr3t-value\n"))
    result = cli("secret", "set", name, "--stdin")
    assert result.code == 0
    assert f'"keyring:{name}"' in result.err
    assert "s3cr3t-value" not in result.out + result.err
    assert real_keyring.get_password("lockgate", name) == "s3cr3t-value"
    assert cli("secret", "delete", name).code == 0
    assert real_keyring.get_password("lockgate", name) is None
    assert cli("secret", "delete", name).code == 1


def test_secret_set_asks_on_the_terminal_without_echo(real_keyring, tmp_path):
    # A real pseudo-terminal: the installed command prompts on its controlling tty, a
    # "person" types the value, and the value must never appear on the screen.
    lockgate = shutil.which("lockgate", path=str(Path(sys.executable).parent))
    assert lockgate is not None
    name = f"tty-{uuid.uuid4().hex}"
    master, slave = pty.openpty()

    # In a new session, take the pty as controlling terminal, then become the command.
    shim = (
        "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", shim, lockgate, "secret", "set", name],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        close_fds=True,
    )
    os.close(slave)
    screen = b""
    try:
        screen += read_until(master, b"(not shown): ")
        os.write(master, b"typed-secret-value\n")
        screen += read_until(master, b"servers.json")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert b"typed-secret-value" not in screen
    assert real_keyring.get_password("lockgate", name) == "typed-secret-value"


def read_until(fd: int, marker: bytes, timeout: float = 20.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {marker!r} in {data!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side closed
                break
            data += chunk
    return data


def test_secret_set_refuses_an_empty_value(cli, real_keyring, monkeypatch):  # noqa: F811
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    result = cli("secret", "set", "x", "--stdin")
    assert result.code == 1
    assert "empty secret was not stored" in result.err


def test_secret_without_a_keyring_is_a_clear_error(cli, monkeypatch):  # noqa: F811
    from keyring.backends import fail

    monkeypatch.setattr(keyring.core, "_keyring_backend", fail.Keyring())
    monkeypatch.setattr("sys.stdin", io.StringIO("v\n"))
    result = cli("secret", "set", "x", "--stdin")
    assert result.code == 1
    assert "the OS keyring cannot be used" in result.err
    assert "Traceback" not in result.err


def test_secret_list_names_an_oauth_client_secret_too(cli, real_keyring, config_dir):  # noqa: F811
    name = f"cli-{uuid.uuid4().hex}"
    real_keyring.set_password("lockgate", name, "cs-value")
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "servers.json").write_text(
        '{"mcpServers": {"docs": {"url": "https://docs.example.test/mcp", "oauth": '
        f'{{"client_id": "lockgate", "client_secret": "keyring:{name}"}}}}}}}}'
    )
    listed = cli("secret", "list")
    assert listed.code == 0
    assert listed.out == f"{name}\tused by docs\tstored\n"
    assert "cs-value" not in listed.out + listed.err


def test_secret_set_and_delete_leave_a_sign_in_to_lockgate_auth(cli, real_keyring, monkeypatch):  # noqa: F811
    monkeypatch.setattr("sys.stdin", io.StringIO("forged\n"))
    for command in (("set", "docs.oauth.tokens", "--stdin"), ("delete", "docs.oauth.client")):
        result = cli("secret", *command)
        assert result.code == 1
        assert "use lockgate auth login or lockgate auth logout" in result.err
    assert real_keyring.get_password("lockgate", "docs.oauth.tokens") is None
