"""Redaction: values under secret-looking keys and strings that look like credentials are
replaced, and the JSON is capped in size.

Long strings: only their start can be kept, so only that much is scanned, and a credential
near the cut never shows, whole or in part.

With the default cap of 4096 bytes a string is scanned to 4096 + 1024 characters; the
last 1024 scanned are never kept, so a credential that begins there is dropped with them.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.audit.redact import DEFAULT_MAX_ARGUMENT_BYTES, REDACTED, redact

KEPT = DEFAULT_MAX_ARGUMENT_BYTES  # at most this much of a long string is kept
SCANNED = DEFAULT_MAX_ARGUMENT_BYTES + 1024  # this much is searched for credentials

CREDENTIALS = [
    "ghp_" + "A1b2C3d4E5" * 4,
    "Authorization: Bearer " + "z" * 40,
    "AKIAIOSFODNN7EXAMPLE",
]


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def kept_and_dropped(text: str) -> tuple[str, int]:
    """What ``redact`` kept of ``text``, and how many characters its marker says it cut."""
    out = redact({"log": text})
    assert len(compact(out).encode()) <= DEFAULT_MAX_ARGUMENT_BYTES
    kept, marker = out["log"].split("…")
    assert marker.startswith("[+")
    assert marker.endswith(" chars]")
    return kept, int(marker[2 : -len(" chars]")])


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize("start", [KEPT, KEPT + 1, (KEPT + SCANNED) // 2, SCANNED - 64])
def test_a_credential_in_the_part_only_scanned_is_dropped_with_it(credential, start):
    text = "a" * (start - 1) + " " + credential + " " + "b" * 20_000
    assert text.index(credential) == start
    kept, dropped = kept_and_dropped(text)
    assert set(kept) == {"a"}  # nothing of the credential, nor anything after it
    assert len(kept) + dropped == len(text)
    assert credential[:4] not in compact(redact({"log": text}))


@pytest.mark.parametrize("credential", CREDENTIALS[:2])
def test_a_credential_that_runs_on_into_the_part_only_scanned_is_redacted_whole(credential):
    start = KEPT - len(credential) + 2  # it begins in the part kept and ends 2 past it
    text = "a" * (start - 1) + " " + credential + " " + "b" * 20_000
    out = redact({"log": text})
    kept, marker = out["log"].split("…")
    prefix = "Authorization: " if credential.startswith("Authorization") else ""
    assert kept == "a" * (start - 1) + " " + prefix + REDACTED  # and nothing after it
    assert marker == f"[+{len(text) - (start + len(credential))} chars]"


# ---------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "db_password",
        "passwd",
        "passphrase",
        "client_secret",
        "secretKey",
        "AWS_SECRET_ACCESS_KEY",
        "token",
        "access_token",
        "accessToken",
        "refresh-token",
        "OAuthToken",
        "api_key",
        "apiKey",
        "API-KEY",
        "x-api-key",
        "Authorization",
        "auth",
        "auth_header",
        "Cookie",
        "set-cookie",
        "credentials",
        "private_key",
        "privateKey",
        "session",
        "sessionId",
        "session_token",
        "csrf",
    ],
)
def test_values_under_secret_keys_are_redacted(key):
    assert redact({key: "hunter2", "path": "/tmp/a"}) == {key: REDACTED, "path": "/tmp/a"}


@pytest.mark.parametrize(
    "key",
    [
        "author",
        "authors",
        "authority",
        "tokens_used",
        "max_tokens",
        "token_count",
        "tokenizer",
        "session_count",
        "key",
        "public_key",
        "path",
        "monkey",
        "passage",
        "compass",
    ],
)
def test_keys_that_only_resemble_secrets_are_kept(key):
    assert redact({key: "Ada Lovelace"}) == {key: "Ada Lovelace"}


def test_redaction_reaches_into_nested_objects_and_lists():
    arguments = {
        "request": {
            "headers": [{"name": "x"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
            "db": {"user": "me", "password": {"value": "hunter2"}},
        },
        "session": {"user": "me", "id": 7},
    }
    assert redact(arguments) == {
        "request": {
            "headers": [{"name": "x"}, {"Authorization": REDACTED}],
            "db": {"user": "me", "password": REDACTED},
        },
        "session": REDACTED,
    }


GHP = "ghp_" + "A1b2C3d4E5" * 4
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc==\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abcdefghij0123456789", f"Authorization: {REDACTED}"),
        ("curl -H 'Authorization: Basic dXNlcjpwYXNz' x", f"curl -H 'Authorization: {REDACTED}' x"),
        ("use bearer eyJhbGciOiJIUzI1NiJ9abcdef now", f"use bearer {REDACTED} now"),
        ("key sk-ant-api03-abcdefghijklmnopqrstuvwx.", f"key {REDACTED}."),
        ("sk-proj-0123456789abcdefghij", REDACTED),
        ("stripe sk_live_0123456789abcdefABCD", f"stripe {REDACTED}"),
        (
            f"git push https://x:{GHP}@github.com/a/b",
            f"git push https://x:{REDACTED}@github.com/a/b",
        ),
        (f"token {GHP} end", f"token {REDACTED} end"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", REDACTED),
        ("slack xoxb-123456789012-abcdefghij", f"slack {REDACTED}"),
        ("AKIAIOSFODNN7EXAMPLE", REDACTED),
        ("maps AIzaSyA1234567890abcdefghijklmnopqrstuv", f"maps {REDACTED}"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig_nature", REDACTED),
        (f"{PEM}\nafter", f"{REDACTED}\nafter"),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC", REDACTED),
        ("postgres://app:hunter2@db:5432/prod", f"postgres://app:{REDACTED}@db:5432/prod"),
        (
            "https://x.io/cb?code=1&access_token=abc.def&y=2",
            f"https://x.io/cb?code=1&access_token={REDACTED}&y=2",
        ),
        ("Cookie: sid=abc; theme=dark", f"Cookie: {REDACTED}"),
    ],
)
def test_strings_that_look_like_credentials_are_redacted_anywhere(text, expected):
    assert redact({"note": text, "list": [text]}) == {"note": expected, "list": [expected]}


@pytest.mark.parametrize(
    "text",
    [
        "Bearer of bad news",
        "sketch-notes-for-the-meeting",
        "task-0123456789abcdefghij",
        "AKIA1234",
        "https://example.com:8080/path@v2",
        "git@github.com:org/repo.git",
        "the authorization failed",
        "ghp_short",
        "",
    ],
)
def test_ordinary_strings_are_kept(text):
    assert redact({"note": text}) == {"note": text}


def test_long_strings_are_cut_with_a_marker_to_fit():
    out = redact({"content": "x" * 10_000, "path": "/a"}, max_bytes=500)
    assert len(compact(out).encode()) <= 500
    assert out["path"] == "/a"
    kept, marker = out["content"].split("…")
    assert set(kept) == {"x"}
    assert marker == f"[+{10_000 - len(kept)} chars]"


def test_the_longest_strings_are_cut_first():
    out = redact({"short": "s" * 50, "long": "l" * 2000}, max_bytes=400)
    assert out["short"] == "s" * 50
    assert out["long"].startswith("l" * 100)
    assert out["long"].endswith("chars]")


def test_too_much_to_cut_becomes_a_preview():
    arguments = {f"key{n}": n for n in range(1000)}
    out = redact(arguments, max_bytes=300)
    assert out["_truncated"] is True
    assert out["_preview"].startswith('{"key0":0,"key1":1,')
    assert len(compact(out).encode()) <= 300


def test_a_preview_shows_no_secrets():
    arguments = {"password": "hunter2", **{f"key{n}": GHP for n in range(200)}}
    out = redact(arguments, max_bytes=300)
    assert out["_truncated"] is True
    assert "hunter2" not in out["_preview"]
    assert "ghp_" not in out["_preview"]


def test_secrets_deep_in_a_very_long_string_are_still_redacted():
    text = "a" * 3000 + f" Authorization: Bearer {'z' * 40} " + "b" * 50_000
    out = redact({"log": text}, max_bytes=4096)
    assert "zzzz" not in compact(out)


def test_a_credential_straddling_the_scanned_part_of_a_long_string_is_not_shown():
    for offset in range(4096 + 1024 - 40, 4096 + 1024 + 1):
        text = "a" * offset + " " + GHP + " " + "b" * 10_000  # spaces: \b before ghp_
        assert "ghp_" not in compact(redact({"log": text}))


def test_a_huge_private_key_never_shows_even_when_the_rest_fits():
    text = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "Q" * 20_000
    out = redact({"key_file": "id_ed25519", "content": text})
    assert "QQQQ" not in compact(out)
    assert out["content"].startswith(REDACTED)


def test_unusual_values_become_plain_json():
    out = redact(
        {
            "nan": math.nan,
            "inf": -math.inf,
            "bytes": b"\x00\x01",
            "tuple": (1, 2),
            "big": 1 << 20_000,
            "surrogate": "a\ud800b",
            1: "int key",
        }
    )
    assert out == {
        "nan": "nan",
        "inf": "-inf",
        "bytes": "b'\\x00\\x01'",
        "tuple": [1, 2],
        "big": "[integer of 20001 bits]",
        "surrogate": "a\\ud800b",  # escaped: UTF-8 cannot hold a lone surrogate
        "1": "int key",
    }
    compact(out)


def test_arguments_that_are_not_an_object_are_kept_under_value():
    assert redact(["a", "Bearer abcdefghijklmnop0123"]) == {"_value": ["a", f"Bearer {REDACTED}"]}


def test_nesting_is_cut_past_32_levels():
    deep: Any = "bottom"
    for _ in range(200):
        deep = {"d": deep}
    text = compact(redact(deep, max_bytes=100_000))
    assert "[nested too deep]" in text
    assert "bottom" not in text


def test_a_cap_too_small_to_say_anything_is_refused():
    with pytest.raises(ValueError, match="128"):
        redact({}, max_bytes=100)


SECRET_KEYS = ["password", "db_password", "API-Key", "clientSecret", "access_token", "Cookie"]
SENTINEL = "correct-horse-battery-staple"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.builds(lambda part, times: part * times, st.text(max_size=20), st.integers(1, 400))
)
json_keys = st.text(max_size=12) | st.sampled_from(["author", "tokens_used", "note", "path"])


def json_values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=6) | st.dictionaries(json_keys, children, max_size=6)
        ),
        max_leaves=20,
    )


secret_objects = st.builds(lambda key: {key: SENTINEL}, st.sampled_from(SECRET_KEYS))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(json_keys, json_values(json_scalars | st.floats()), max_size=8),
    st.integers(min_value=128, max_value=2048),
)
def test_redacted_arguments_are_plain_json_within_the_cap(arguments, max_bytes):
    out = redact(arguments, max_bytes)
    assert len(compact(out).encode("utf-8")) <= max_bytes


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(json_keys, json_values(json_scalars | secret_objects), max_size=8),
    st.sampled_from(SECRET_KEYS),
    st.integers(min_value=128, max_value=8192),
)
def test_a_value_under_a_secret_key_never_reaches_the_log(arguments, key, max_bytes):
    out = redact({**arguments, key: SENTINEL}, max_bytes)
    assert SENTINEL not in compact(out)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(json_keys, json_values(json_scalars), max_size=8))
def test_redact_leaves_its_input_alone(arguments):
    before = copy.deepcopy(arguments)
    redact(arguments, 256)
    assert arguments == before
