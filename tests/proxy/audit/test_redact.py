"""Redaction of long strings: only their start can be kept, so only that much is scanned,
and a credential near the cut never shows, whole or in part.

With the default cap of 4096 bytes a string is scanned to 4096 + 1024 characters; the
last 1024 scanned are never kept, so a credential that begins there is dropped with them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

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
