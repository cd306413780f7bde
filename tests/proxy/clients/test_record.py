"""The routing record: an entry's text with its secrets cut out, and given back whole."""

from __future__ import annotations

import json

import pytest

from proxy.clients.files import RouteError
from proxy.clients.record import (
    RECORD_VERSION,
    cut_secrets,
    fill_secrets,
    load_record,
    save_record,
)
from proxy.config.secrets import SecretStore


@pytest.mark.parametrize(
    "literal",
    ['"s3cr\\u00e9t"', '"s3crét"', '"s3cr\\u00E9t"'],  # ascii escape, UTF-8, unusual escape
    ids=["ascii", "utf8", "literal"],
)
def test_cut_secrets_leave_no_value_behind_and_fill_gives_back_the_same_bytes(os_keyring, literal):
    store = SecretStore(os_keyring)
    text = '{"env": {"TOKEN": ' + literal + ', "OTHER": "x"}}'
    start = text.index(literal)
    value = json.loads(literal)
    holed, holes, extra = cut_secrets(text, [(start, start + len(literal), "srv.env.TOKEN", value)])
    assert "s3cr" not in holed
    store.set("srv.env.TOKEN", value)
    for name, kept in extra.items():  # only a literal JSON cannot rebuild is kept as is
        store.set(name, kept)
    assert bool(extra) == (literal == '"s3cr\\u00E9t"')
    assert fill_secrets(holed, holes, store) == text


def test_a_secret_gone_from_the_keyring_is_a_clear_error(os_keyring):
    holed, holes, _ = cut_secrets('{"a": "v"}', [(6, 9, "gone.env.A", "v")])
    with pytest.raises(RouteError, match="cannot put the original back"):
        fill_secrets(holed, holes, SecretStore(os_keyring))


def test_records_round_trip_and_an_unknown_version_is_refused(tmp_path):
    path = tmp_path / "routes" / "cursor.json"
    assert load_record(path) is None
    save_record(path, {"version": RECORD_VERSION, "entries": []})
    assert load_record(path) == {"version": RECORD_VERSION, "entries": []}
    path.write_text(json.dumps({"version": RECORD_VERSION + 1}))
    with pytest.raises(RouteError, match="unknown version"):
        load_record(path)
    path.write_text("{")
    with pytest.raises(RouteError, match="cannot be read"):
        load_record(path)
