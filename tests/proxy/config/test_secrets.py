"""Secrets in the real OS keyring (GNOME Keyring over Secret Service), and without one."""

from __future__ import annotations

import uuid

import pytest
from keyring.backends import fail

from proxy.config.secrets import SecretError, SecretStore, secret_name


def test_set_get_replace_delete_in_the_os_keyring(os_keyring):
    store = SecretStore(os_keyring)
    name = f"test-{uuid.uuid4().hex}"
    store.set(name, "first")
    assert store.get(name) == "first"
    store.set(name, "second")
    assert store.get(name) == "second"
    store.delete(name)
    with pytest.raises(SecretError, match=f"lockgate secret set {name}"):
        store.get(name)


def test_secrets_live_under_the_lockgate_service(os_keyring):
    name = f"test-{uuid.uuid4().hex}"
    SecretStore(os_keyring).set(name, "v")
    assert os_keyring.get_password("lockgate", name) == "v"
    assert os_keyring.get_password("other-app", name) is None


def test_deleting_a_missing_secret_says_so(os_keyring):
    with pytest.raises(SecretError, match="is not in the keyring"):
        SecretStore(os_keyring).delete(f"missing-{uuid.uuid4().hex}")


@pytest.mark.parametrize("bad", ["", " x", "x "])
def test_bad_names(os_keyring, bad):
    with pytest.raises(SecretError, match="must not be empty"):
        SecretStore(os_keyring).set(bad, "v")


def test_no_keyring_is_a_clear_error_not_a_traceback():
    # keyring's own "fail" backend is what it selects on a machine with no keyring at all.
    store = SecretStore(fail.Keyring())
    with pytest.raises(SecretError, match=r"the OS keyring cannot be used .*Secret Service"):
        store.get("anything")
    with pytest.raises(SecretError, match="cannot be used"):
        store.set("anything", "v")


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("keyring:github", "github"),
        ("keyring:", ""),
        ("plain", None),
        ("KEYRING:x", None),
        (5, None),
    ],
)
def test_secret_name(value, name):
    assert secret_name(value) == name


def test_find_and_discard_say_whether_a_secret_is_there(os_keyring):
    store = SecretStore(os_keyring)
    name = f"test-{uuid.uuid4().hex}"
    assert store.find(name) is None
    assert store.discard(name) is False
    store.set(name, "v")
    assert store.find(name) == "v"
    assert store.discard(name) is True
    assert store.find(name) is None
    unusable = SecretStore(fail.Keyring())
    with pytest.raises(SecretError, match="cannot be used"):
        unusable.find("anything")
    with pytest.raises(SecretError, match="cannot be used"):
        unusable.discard("anything")
