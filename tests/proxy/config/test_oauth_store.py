"""A remote server's OAuth sign-in in the real OS keyring (GNOME Keyring over Secret
Service): three JSON entries per server, each for the url it was made for."""

from __future__ import annotations

import json
import uuid

import pytest

from proxy.config.oauth_store import OAuthRecord, OAuthStore, StoredServer, StoredTokens
from proxy.config.secrets import SecretStore

URL = "https://docs.example.test/mcp"


def record(access: str = "at-1", client_id: str = "c-1") -> OAuthRecord:
    return OAuthRecord(
        tokens=StoredTokens(
            access_token=access,
            refresh_token="rt-1",
            token_type="Bearer",
            scope="read",
            expires_at=1_000.0,
            obtained_at=400.0,
            server_url=URL,
            resource=URL,
            client_id=client_id,
        ),
        client={"client_id": "c-1", "redirect_uris": ["http://127.0.0.1:5/callback"]},
        server=StoredServer(
            server_url=URL,
            auth_server_url="https://as.example.test/",
            authorization_server={
                "issuer": "https://as.example.test/",
                "token_endpoint": "https://as.example.test/token",
                "revocation_endpoint": "https://as.example.test/revoke",
            },
        ),
    )


@pytest.fixture
def store(os_keyring):
    return OAuthStore(SecretStore(os_keyring))


def test_a_sign_in_is_kept_in_three_entries_and_read_back(store):
    name = f"docs-{uuid.uuid4().hex[:8]}"
    saved = record()
    store.save(name, URL, saved)

    assert store.load(name, URL) == saved
    loaded = store.load(name, URL)
    assert loaded.server is not None
    assert loaded.server.token_endpoint == "https://as.example.test/token"
    assert loaded.server.revocation_endpoint == "https://as.example.test/revoke"
    for kind in ("tokens", "client", "server"):
        document = json.loads(store.secrets.get(f"{name}.oauth.{kind}"))
        assert (document["v"], document["server_url"]) == (1, URL)
    assert "at-1" not in repr(loaded)
    assert "rt-1" not in repr(loaded)


def test_what_is_not_this_servers_is_ignored(store):
    name = f"docs-{uuid.uuid4().hex[:8]}"
    store.save(name, URL, record())

    assert store.load(name, URL + "/moved") == OAuthRecord()  # another url: another server
    store.secrets.set(f"{name}.oauth.server", json.dumps({"v": 2, "server_url": URL}))
    store.secrets.set(f"{name}.oauth.client", "not json")
    assert store.load(name, URL).server is None
    assert store.load(name, URL).client is None
    store.save(name, URL, OAuthRecord(client={"client_id": "c-2"}))
    assert store.load(name, URL).tokens is None  # issued to c-1, the registration is c-2


def test_tokens_go_alone_or_everything_goes(store):
    name = f"docs-{uuid.uuid4().hex[:8]}"
    store.save(name, URL, record())

    store.delete_tokens(name)
    after = store.load(name, URL)
    assert after.tokens is None
    assert after.client is not None
    assert after.server is not None
    renewed = record(access="at-2").tokens
    assert renewed is not None
    store.save_tokens(name, renewed)
    assert store.load(name, URL).tokens == renewed

    store.delete(name)
    assert store.load(name, URL) == OAuthRecord()
    store.delete(name)  # nothing left: still fine
