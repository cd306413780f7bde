"""Secrets in the real OS keyring (GNOME Keyring over Secret Service), and without one."""

from __future__ import annotations

import uuid

import pytest
from keyring.backends import fail

from proxy.config.secrets import PART_CHARS, SecretError, SecretStore, secret_name


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


def test_a_long_value_is_kept_in_parts_each_small_enough_for_windows(os_keyring):
    """Windows' Credential Manager takes 2,560 bytes an entry; a sign-in is longer. The
    same parts on every system: here GNOME Keyring holds them."""
    store = SecretStore(os_keyring)
    name = f"test-{uuid.uuid4().hex}"
    long = "".join(chr(0x1F600 + i % 64) for i in range(PART_CHARS * 3 + 7))  # 4 bytes each
    store.set(name, long)
    assert store.get(name) == long
    header = os_keyring.get_password("lockgate", name)
    assert (header or "").startswith("lockgate-parts:v1:4:")
    parts = [os_keyring.get_password("lockgate:parts", f"{name}#{n}") for n in range(1, 6)]
    assert parts[4] is None
    assert "".join(p for p in parts if p) == long
    assert all(len(p.encode("utf-16-le")) <= 2560 for p in parts if p)

    # shorter again: the parts beyond are gone; short: no parts at all
    store.set(name, "b" * (PART_CHARS + 1))
    assert store.get(name) == "b" * (PART_CHARS + 1)
    assert os_keyring.get_password("lockgate:parts", f"{name}#3") is None
    store.set(name, "short")
    assert os_keyring.get_password("lockgate", name) == "short"
    assert os_keyring.get_password("lockgate:parts", f"{name}#1") is None
    # a value that looks like a header is stored in parts, so it reads back as itself
    store.set(name, "lockgate-parts:v1:1:0123456789abcdef")
    assert store.get(name) == "lockgate-parts:v1:1:0123456789abcdef"

    store.set(name, long)
    store.delete(name)
    assert store.find(name) is None
    assert all(
        os_keyring.get_password("lockgate:parts", f"{name}#{n}") is None for n in range(1, 6)
    )


def test_parts_changed_or_missing_are_an_error_never_a_wrong_secret(os_keyring):
    store = SecretStore(os_keyring)
    name = f"test-{uuid.uuid4().hex}"
    store.set(name, "x" * (PART_CHARS * 2))
    os_keyring.set_password("lockgate:parts", f"{name}#2", "y" * PART_CHARS)
    with pytest.raises(SecretError, match="some are missing or changed; store it again"):
        store.get(name)
    os_keyring.delete_password("lockgate:parts", f"{name}#2")
    with pytest.raises(SecretError, match="some are missing or changed"):
        store.find(name)
    assert store.discard(name) is True
    assert os_keyring.get_password("lockgate:parts", f"{name}#1") is None
