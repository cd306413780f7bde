"""Client tokens: shown once, stored as hashes, checked in constant time."""

from __future__ import annotations

import json
import stat

import pytest

from proxy.config.tokens import TokenError, TokenStore


@pytest.fixture
def store(tmp_path):
    return TokenStore(tmp_path / "config" / "clients.json")


def test_create_verify_revoke(store):
    token = store.create("claude-desktop")
    assert token.startswith("lgt_")
    assert len(token) > 40
    assert store.verify(token) == "claude-desktop"
    assert store.verify(token + "x") is None
    assert store.verify("") is None
    store.revoke("claude-desktop")
    assert store.verify(token) is None


def test_only_hashes_are_stored_and_the_file_is_private(store):
    token = store.create("cursor")
    text = store.path.read_text()
    assert token not in text
    assert token[4:] not in text
    assert json.loads(text)["clients"]["cursor"]["sha256"]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700


def test_each_client_has_its_own_token(store):
    a, b = store.create("a"), store.create("b")
    assert a != b
    assert (store.verify(a), store.verify(b)) == ("a", "b")
    assert [c.name for c in store.clients()] == ["a", "b"]


def test_create_twice_needs_replace_and_replacing_kills_the_old_token(store):
    old = store.create("a")
    with pytest.raises(TokenError, match="already has a token"):
        store.create("a")
    new = store.create("a", replace=True)
    assert store.verify(old) is None
    assert store.verify(new) == "a"


@pytest.mark.parametrize("bad", ["", "-x", "has space", "a/b", "x" * 65, "ünïcode"])
def test_bad_client_names(store, bad):
    with pytest.raises(TokenError, match="not a valid client name"):
        store.create(bad)


def test_revoking_an_unknown_client(store):
    with pytest.raises(TokenError, match="no client named"):
        store.revoke("nobody")


def test_a_running_gateway_sees_tokens_another_process_created(tmp_path):
    path = tmp_path / "clients.json"
    gateway_view, cli_view = TokenStore(path), TokenStore(path)
    assert gateway_view.verify("lgt_nothing") is None
    token = cli_view.create("late")
    assert gateway_view.verify(token) == "late"
    cli_view.revoke("late")
    assert gateway_view.verify(token) is None


def test_a_corrupt_file_accepts_no_token(tmp_path):
    path = tmp_path / "clients.json"
    store = TokenStore(path)
    token = store.create("a")
    path.write_text("{not json")
    with pytest.raises(TokenError, match="cannot read the client tokens"):
        store.verify(token)
