"""Secrets in tool results: found with detect-secrets, every occurrence removed, nothing
else touched.

The fake keys are made here, at random, from their prefixes ("AKIA" + 16 characters...):
no key-shaped literal sits in the repository for a push-protection scanner to flag.
"""

from __future__ import annotations

import base64
import copy
import inspect
import json
import random
import re
import string
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.gateway import secretscan
from proxy.gateway.secretscan import (
    MAX_DEPTH,
    MAX_SECRETS,
    MAX_TEXT_CHARS,
    MAX_VALUES,
    ScanOutcome,
    SecretFinding,
    removed,
    scan_result,
)

DATA = Path(__file__).resolve().parents[2] / "data"
RNG = random.Random(20261202)
ALNUM = string.ascii_letters + string.digits
UPPER = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
B64URL = ALNUM + "-_"


def rand(alphabet: str, n: int) -> str:
    return "".join(RNG.choice(alphabet) for _ in range(n))


def digits(n: int) -> str:
    return str(RNG.randint(1, 9)) + rand(string.digits, n - 1)


def b64url(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def text_result(*texts: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text} for text in texts]}


def redacted(outcome: ScanOutcome) -> dict[str, Any]:
    assert outcome.redacted is not None
    return outcome.redacted


def everything(outcome: ScanOutcome) -> str:
    """All an agent and the audit log would see of an outcome."""
    return json.dumps(
        [outcome.redacted, [f.as_dict() for f in outcome.findings]], ensure_ascii=False
    ) + repr(outcome)


def pem_block(label: str = "RSA PRIVATE KEY") -> tuple[str, list[str]]:
    body = [rand(ALNUM + "+/", 64) for _ in range(8)] + [rand(ALNUM + "+/", 20) + "=="]
    return f"-----BEGIN {label}-----\n" + "\n".join(body) + f"\n-----END {label}-----", body


JWT = (
    b64url({"alg": "HS256", "typ": "JWT"})
    + "."
    + b64url({"sub": "1234567890", "name": "Dev Eloper", "iat": 1700000000})
    + "."
    + rand(B64URL, 43)
)
AWS_KEY_ID = "AKIA" + rand(UPPER, 16)
AWS_SECRET = rand(ALNUM + "/+", 40)
GITHUB = "ghp_" + rand(ALNUM, 36)
PASSWORD = rand(ALNUM, 16)
PEM, PEM_BODY = pem_block()

# (the detector's type name, a line as a tool might return it, the secret in it)
PROVIDERS = [
    ("AWS Access Key", f"aws_access_key_id = {AWS_KEY_ID}", AWS_KEY_ID),
    ("AWS Access Key", f'aws_secret_key = "{AWS_SECRET}"', AWS_SECRET),
    (
        "Azure Storage Account access key",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey="
        + (azure := rand(ALNUM + "+/", 86) + "==")
        + ";EndpointSuffix=core.windows.net",
        azure,
    ),
    ("GitHub Token", f"remote: token {GITHUB} accepted", GITHUB),
    ("GitLab Token", f"CI_JOB_TOKEN used {(gl := 'glpat-' + rand(ALNUM, 20))}", gl),
    (
        "Slack Token",
        f"bot: {(slack := 'xoxb-' + digits(12) + '-' + digits(12) + '-' + rand(HEX, 24))}",
        slack,
    ),
    (
        "Slack Token",
        "webhook "
        + (
            hook := "https://hooks.slack.com/services/T"
            + rand(UPPER, 8)
            + "/B"
            + rand(UPPER, 8)
            + "/"
            + rand(ALNUM, 24)
        ),
        hook,
    ),
    ("Stripe Access Key", f"stripe {(stripe := 'sk_live_' + rand(ALNUM, 24))}", stripe),
    ("Twilio API Key", f"twilio {(twilio := 'SK' + rand(HEX, 32))}", twilio),
    (
        "SendGrid API Key",
        f"mail: {(sendgrid := 'SG.' + rand(B64URL, 22) + '.' + rand(B64URL, 43))}",
        sendgrid,
    ),
    ("Mailchimp Access Key", f"mc {(mailchimp := rand(HEX, 32) + '-us12')}", mailchimp),
    (
        "NPM tokens",
        f"//registry.npmjs.org/:_authToken={(npm := 'npm_' + rand(ALNUM, 36))}",
        npm,
    ),
    ("PyPI Token", f"password = {(pypi := 'pypi-AgEIcHlwaS5vcmc' + rand(B64URL, 80))}", pypi),
    (
        "OpenAI Token",
        f"OPENAI {(openai := 'sk-proj-' + rand(ALNUM, 20) + 'T3BlbkFJ' + rand(ALNUM, 20))}",
        openai,
    ),
    (
        "Discord Bot Token",
        "discord "
        + (discord := "M" + rand(ALNUM, 23) + "." + rand(ALNUM, 6) + "." + rand(ALNUM, 27)),
        discord,
    ),
    ("Telegram Bot Token", f"bot {(telegram := digits(9) + ':' + rand(B64URL, 35))}", telegram),
    ("Square OAuth Secret", f"square {(square := 'sq0csp-' + rand(B64URL, 43))}", square),
    ("Artifactory Credentials", f'artifactory: "{(art := "AKC" + rand(ALNUM, 70))}"', art),
    (
        "IBM Cloud IAM Key",
        f'ibm_cloud_iam_api_key = "{(iam := rand(B64URL, 44))}"',
        iam,
    ),
    (
        "IBM COS HMAC Credentials",
        f'cos_hmac_secret_access_key = "{(cos := rand(HEX, 48))}"',
        cos,
    ),
    ("SoftLayer Credentials", f'softlayer_api_key = "{(sl := rand(HEX, 64))}"', sl),
    ("Cloudant Credentials", f'cloudant_password = "{(cl := rand(HEX, 64))}"', cl),
    ("JSON Web Token", f"Authorization: Bearer {JWT}", JWT),
    ("Basic Auth Credentials", f"postgres://app:{PASSWORD}@db.internal:5432/app", PASSWORD),
    ("Secret Keyword", f'db_password = "{(kw := rand(ALNUM, 14))}"', kw),
    ("Private Key", f"key.pem:\n{PEM}\n", PEM),
]


@pytest.mark.parametrize(("kind", "line", "secret"), PROVIDERS, ids=[p[0] for p in PROVIDERS])
def test_each_providers_key_is_found_and_removed_whole(kind: str, line: str, secret: str):
    outcome = scan_result(text_result(f"$ cat config\n{line}\nok"))
    assert kind in {finding.kind for finding in outcome.findings}
    assert SecretFinding(kind, "content[0].text") in outcome.findings
    assert outcome.complete
    assert outcome.redacted is not None
    text = outcome.redacted["content"][0]["text"]
    assert secret not in everything(outcome)
    for part in re.split(r"[^A-Za-z0-9]+", secret):  # no piece left behind either
        if len(part) >= 12:
            assert part not in text, part
    assert "[secret removed by Lockgate: " in text
    assert text.startswith("$ cat config\n")
    assert text.endswith("\nok")


def test_every_detector_of_detect_secrets_is_used_but_the_public_ip_one():
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    classes: list[type] = list(get_mapping_from_secret_type_to_class().values())
    every = {cls.__name__ for cls in classes}
    used = {type(plugin).__name__ for plugin, *_ in secretscan._PLUGINS}
    fuzzy = {"KeywordDetector", "Base64HighEntropyString", "HexHighEntropyString"}
    assert every - used - fuzzy == {"IPPublicDetector"}
    assert {kind for kind, *_ in PROVIDERS} == {
        plugin.secret_type for plugin, *_ in secretscan._PLUGINS
    } | {"Secret Keyword"}


def test_a_private_key_goes_whole_header_body_and_end():
    outcome = scan_result(text_result(f"id_rsa:\n{PEM}\nthat was the key"))
    text = redacted(outcome)["content"][0]["text"]
    assert text == "id_rsa:\n[secret removed by Lockgate: Private Key]\nthat was the key"
    for label in ("OPENSSH PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY", "PGP PRIVATE KEY BLOCK"):
        block, body = pem_block(label)
        seen = everything(scan_result(text_result(block)))
        assert not any(line in seen for line in body), label


def test_a_private_key_cut_short_goes_to_where_it_stops():
    cut = PEM.rsplit("\n", 3)[0]  # no END line: the text was cut
    outcome = scan_result(text_result(cut + "\n"))
    assert outcome.findings == (SecretFinding("Private Key", "content[0].text"),)
    assert not any(line in json.dumps(outcome.redacted) for line in PEM_BODY[:6])


def test_a_private_key_in_json_text_and_in_structured_content():
    result = {
        "content": [{"type": "text", "text": json.dumps({"deploy": {"key": PEM}}, indent=2)}],
        "structuredContent": {"deploy": {"key": PEM}},
    }
    outcome = scan_result(result)
    assert {f.where for f in outcome.findings} == {
        "content[0].text.deploy.key",
        "structuredContent.deploy.key",
    }
    assert not any(line in everything(outcome) for line in PEM_BODY)
    assert json.loads(redacted(outcome)["content"][0]["text"]) == {
        "deploy": {"key": removed("Private Key")}
    }


def test_a_jwt_goes_with_its_signature():
    signature = JWT.rsplit(".", 1)[1]
    outcome = scan_result(text_result(f"curl -H 'Authorization: Bearer {JWT}' https://api"))
    assert "JSON Web Token" in {f.kind for f in outcome.findings}
    assert signature not in everything(outcome)


def test_a_password_in_a_url_goes_and_the_rest_of_the_url_stays():
    outcome = scan_result(text_result(f"DATABASE_URL=postgres://app:{PASSWORD}@db:5432/app"))
    text = redacted(outcome)["content"][0]["text"]
    assert text == (
        "DATABASE_URL=postgres://app:[secret removed by Lockgate: Basic Auth Credentials]"
        "@db:5432/app"
    )


ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/home/dev",
    "PWD": "/home/dev/project",
    "OLDPWD": "/home/dev",
    "HOSTNAME": "3f2a9c1b7d4e",
    "GPG_KEY": "A035C8C19219BA821ECEA86B64E628F8D684696D",
    "PYTHON_SHA256": rand(HEX, 64),
    "LS_COLORS": "rs=0:di=01;34:ln=01;36:mh=00:pi=40;33",
    "PASSWORD_STORE_DIR": "/home/dev/.password-store",
    "SSH_AUTH_SOCK": "/tmp/ssh-XXXXabc/agent.123",
    "TERM": "xterm-256color",
    "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    "GITHUB_TOKEN": GITHUB,
    "DB_PASSWORD": (DB_PASSWORD := "dev-" + rand(ALNUM, 8)),
    "SESSION_TOKEN": (SESSION := rand(ALNUM, 48)),
}
ENV_SECRETS = (AWS_KEY_ID, AWS_SECRET, GITHUB, DB_PASSWORD, SESSION)
ENV_HARMLESS = ("/home/dev/project", "3f2a9c1b7d4e", ENV["GPG_KEY"], ENV["PYTHON_SHA256"])


def test_an_env_dump_of_key_value_lines():
    dump = "\n".join(f"{name}={value}" for name, value in ENV.items())
    outcome = scan_result(text_result(dump))
    seen = everything(outcome)
    assert not any(secret in seen for secret in ENV_SECRETS)
    assert all(value in seen for value in ENV_HARMLESS)
    lines = redacted(outcome)["content"][0]["text"].splitlines()
    assert lines[:11] == dump.splitlines()[:11]  # the harmless ones, untouched
    assert lines[11:] == [
        "AWS_ACCESS_KEY_ID=[secret removed by Lockgate: AWS Access Key]",
        "AWS_SECRET_ACCESS_KEY=[secret removed by Lockgate: Secret Keyword]",
        "GITHUB_TOKEN=[secret removed by Lockgate: GitHub Token]",
        "DB_PASSWORD=[secret removed by Lockgate: Secret Keyword]",
        "SESSION_TOKEN=[secret removed by Lockgate: Base64 High Entropy String]",
    ]


def test_get_env_json_in_a_text_block_is_read_as_json():
    """server-everything's get-env: JSON.stringify(process.env, null, 2) in a text block."""
    text = json.dumps(ENV, indent=2)
    outcome = scan_result(text_result(text))
    assert {f.where: f.kind for f in outcome.findings} == {
        "content[0].text.AWS_ACCESS_KEY_ID": "AWS Access Key",
        "content[0].text.AWS_SECRET_ACCESS_KEY": "Secret Keyword",
        "content[0].text.GITHUB_TOKEN": "GitHub Token",
        "content[0].text.DB_PASSWORD": "Secret Keyword",
        "content[0].text.SESSION_TOKEN": "Base64 High Entropy String",
    }
    shown = redacted(outcome)["content"][0]["text"]
    assert shown.count("\n") == text.count("\n")  # written as it was, only values replaced
    env = json.loads(shown)
    assert env["DB_PASSWORD"] == removed("Secret Keyword")
    assert {name: env[name] for name in list(ENV)[:11]} == {
        name: ENV[name] for name in list(ENV)[:11]
    }


def test_structured_content_keys_say_what_their_values_are():
    result: dict[str, Any] = {
        "content": [],
        "structuredContent": {
            "env": {"AWS_SECRET_ACCESS_KEY": AWS_SECRET, "OPENAI_API_KEY": "sk-" + rand(ALNUM, 40)},
            "db": {"user": "app", "password": "hunter22", "password_required": "yes"},
            "oauth": {
                "access_token": rand(ALNUM, 40),
                "token_type": "Bearer",
                "expires_in": 3600,
                "nextPageToken": rand(ALNUM, 40),
            },
            "keys": {"public_key": rand(ALNUM + "+/", 60), "secret_name": "prod-db"},
        },
    }
    outcome = scan_result(result)
    assert {f.where: f.kind for f in outcome.findings} == {
        "structuredContent.env.AWS_SECRET_ACCESS_KEY": "Secret Keyword",
        "structuredContent.env.OPENAI_API_KEY": "Secret Keyword",
        "structuredContent.db.password": "Secret Keyword",
        "structuredContent.oauth.access_token": "Base64 High Entropy String",
    }
    kept = redacted(outcome)["structuredContent"]
    assert kept["db"]["user"] == "app"
    assert kept["db"]["password_required"] == "yes"
    assert kept["oauth"]["token_type"] == "Bearer"
    assert kept["oauth"]["nextPageToken"] == result["structuredContent"]["oauth"]["nextPageToken"]
    assert kept["keys"] == result["structuredContent"]["keys"]


def test_high_entropy_strings_only_in_key_like_places():
    token, sha = rand(ALNUM, 48), rand(HEX, 40)
    noisy = [
        f"commit {sha}",
        f"sha256: {rand(HEX, 64)}",
        f"id: {rand(ALNUM, 48)}",
        f'"{rand(ALNUM + "+/", 60)}"',
        f"public_key = {rand(ALNUM + '+/', 60)}",
        f"page_token: {rand(ALNUM, 48)}",
    ]
    assert scan_result(text_result("\n".join(noisy))).findings == ()
    for line in (
        f"SLACK_SIGNING_SECRET_V2={token}",
        f"api-token: {token}",
        f'"auth": "{token}"',
        f"Authorization: Bearer {token}",
        f"export GH_PAT={token}",
        f"token={sha}",
    ):
        outcome = scan_result(text_result(line))
        assert outcome.findings, line
        assert token not in everything(outcome)
        assert sha not in everything(outcome)


def test_the_value_is_never_in_a_finding():
    for kind, line, secret in PROVIDERS:
        result = {
            "content": [{"type": "text", "text": line}],
            "structuredContent": {secret: line, "nested": {secret: [secret]}},
            "_meta": {"note": secret},
        }
        outcome = scan_result(result)
        for finding in outcome.findings:
            assert secret not in repr(finding)
            assert secret not in json.dumps(finding.as_dict())
            assert set(finding.as_dict()) == {"kind", "where"}
        assert secret not in everything(outcome), kind


def test_every_occurrence_is_removed_in_every_block_and_key():
    github, aws = GITHUB, AWS_KEY_ID
    result = {
        "content": [
            {"type": "text", "text": f"first {github}"},
            {"type": "text", "text": f"again {github} and {aws}"},
            {"type": "resource", "resource": {"uri": "file:///x", "text": f"x{github}x"}},
            {"type": "resource_link", "uri": "file:///y", "name": "y", "description": aws},
        ],
        "structuredContent": {github: {"aws": [aws, aws]}, "plain": "value"},
        "_meta": {"why": f"token={github}"},
        "isError": False,
    }
    before = copy.deepcopy(result)
    outcome = scan_result(result)
    assert result == before  # the result itself is left alone
    seen = everything(outcome)
    assert github not in seen
    assert aws not in seen
    assert seen.count(removed("GitHub Token")) >= 5
    assert {f.where for f in outcome.findings} >= {
        "content[0].text",
        "content[1].text",
        "content[2].resource.text",
        "content[3].description",
        "_meta.why",
    }
    shown = redacted(outcome)
    assert shown["structuredContent"][removed("GitHub Token")] == {
        "aws": [removed("AWS Access Key")] * 2
    }
    assert shown["structuredContent"]["plain"] == "value"
    assert shown["isError"] is False


def test_the_same_text_in_two_places_is_a_finding_in_each():
    outcome = scan_result(text_result(f"token {GITHUB}", f"token {GITHUB}"))
    assert outcome.findings == (
        SecretFinding("GitHub Token", "content[0].text"),
        SecretFinding("GitHub Token", "content[1].text"),
    )


def test_json_text_written_with_escapes_is_still_redacted():
    escaped = json.dumps({"env": {"KEY": AWS_SECRET, "token": GITHUB}}).replace("/", "\\/")
    spelled = escaped.replace("ghp_", "\\u0067hp_")  # the token as no literal search sees it
    outcome = scan_result(text_result(spelled))
    text = redacted(outcome)["content"][0]["text"]
    assert GITHUB not in json.dumps(json.loads(text))
    assert AWS_SECRET not in text
    assert json.loads(text)["env"]["token"] == removed("GitHub Token")


def test_json_inside_json_inside_a_string():
    inner = json.dumps({"config": {"password": "Hunter2-" + rand(ALNUM, 6)}})
    result = {"content": [], "structuredContent": {"body": inner, "escaped": json.dumps(inner)}}
    outcome = scan_result(result)
    assert {f.where for f in outcome.findings} == {
        "structuredContent.body.config.password",
        "structuredContent.escaped.config.password",
    }
    shown = redacted(outcome)["structuredContent"]
    assert json.loads(shown["body"]) == {"config": {"password": removed("Secret Keyword")}}
    assert json.loads(json.loads(shown["escaped"])) == json.loads(shown["body"])


def test_a_short_or_word_like_secret_goes_only_where_it_stands_alone():
    text = "DB_PASS=dev\nmount /dev/sdb1 on the device\npostgresql://app:postgres@db/x"
    outcome = scan_result(text_result(text))
    shown = redacted(outcome)["content"][0]["text"]
    assert shown.splitlines() == [
        "DB_PASS=[secret removed by Lockgate: Secret Keyword]",
        "mount /[secret removed by Lockgate: Secret Keyword]/sdb1 on the device",
        "postgresql://app:[secret removed by Lockgate: Basic Auth Credentials]@db/x",
    ]


def test_a_comparison_with_the_secret_first_is_found():
    value = "Zq" + rand(ALNUM, 12)
    long_line = "x = 1; " * 400 + f'if ("{value}" == db_password) {{ ok() }}'
    for line in (f'if "{value}" == db_password:', long_line):
        outcome = scan_result(text_result(line))
        assert outcome.findings == (SecretFinding("Secret Keyword", "content[0].text"),)
        assert value not in everything(outcome)


def test_what_only_looks_like_a_jwt_is_not_one():
    fake = "eyJ" + rand(ALNUM, 20) + ".eyJ" + rand(ALNUM, 20) + "."
    assert scan_result(text_result(f"note {fake}")).findings == ()


def test_two_keys_that_were_secrets_of_one_kind_both_stay():
    github2 = "ghp_" + rand(ALNUM, 36)
    outcome = scan_result({"content": [], "structuredContent": {GITHUB: 1, github2: 2}})
    assert redacted(outcome)["structuredContent"] == {
        removed("GitHub Token"): 1,
        removed("GitHub Token") + " (2)": 2,
    }


def test_a_long_where_is_cut_short():
    result = {"content": [], "structuredContent": {"k" * 200: {"j" * 200: GITHUB}}}
    (finding,) = scan_result(result).findings
    assert len(finding.where) == 300
    assert finding.where.endswith("…")


def test_a_redacted_result_scans_clean():
    for kind, line, _ in PROVIDERS:
        outcome = scan_result({"content": [{"type": "text", "text": line}], "x": {"api_key": line}})
        assert outcome.redacted is not None
        again = scan_result(outcome.redacted)
        assert again == ScanOutcome((), None, complete=True), kind


# --- nothing where there is nothing --------------------------------------------------------


def git_log(commits: int) -> str:
    out = []
    for i in range(commits):
        sha, parent = rand(HEX, 40), rand(HEX, 40)
        out.append(
            f"commit {sha}\nMerge: {sha[:7]} {parent[:7]}\n"
            f"Author: Dev Eloper <dev{i}@example.com>\nDate:   Mon Nov 3 12:00:{i % 60:02d} 2026\n\n"
            f"    Fix the token refresh when the key rotates (#{i})\n\n"
            f"    Change-Id: I{rand(HEX, 40)}\n    Signed-off-by: Dev <dev@example.com>\n\n"
            f"diff --git a/proxy/auth.py b/proxy/auth.py\nindex {sha[:7]}..{parent[:7]} 100644\n"
            f"--- a/proxy/auth.py\n+++ b/proxy/auth.py\n@@ -1,3 +1,3 @@\n"
            f"-    password = get_password(user)\n+    password = keyring.get(user)\n"
        )
    return "\n".join(out)


def png(size: int) -> str:
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + RNG.randbytes(size)).decode()


LISTING = "\n".join(
    f"-rw-r--r--  1 dev dev {RNG.randint(0, 10**6):>8} Nov  3 12:00 {name}"
    for name in (
        "secrets.py",
        "password_reset.html",
        "api_key_rotation.md",
        "id_rsa.pub",
        ".env.example",
        f"{uuid.UUID(int=RNG.getrandbits(128))}.json",
        f"{rand(HEX, 40)}.pack",
    )
)


def ordinary_results() -> list[tuple[str, dict[str, Any]]]:
    tools = json.loads((DATA / "risk_labelled_tools.json").read_text("utf-8"))
    uuids = [str(uuid.UUID(int=RNG.getrandbits(128))) for _ in range(200)]
    return [
        ("git log", text_result(git_log(150))),
        ("uuids", {"content": [], "structuredContent": {"requestId": uuids[0], "ids": uuids}}),
        ("uuids in text", text_result("\n".join(f"id={u} session_id={u}" for u in uuids))),
        (
            "binary",
            {
                "content": [
                    {"type": "image", "mimeType": "image/png", "data": png(100_000)},
                    {"type": "audio", "mimeType": "audio/wav", "data": png(50_000)},
                    {"type": "resource", "resource": {"uri": "file:///a.bin", "blob": png(50_000)}},
                ]
            },
        ),
        ("listing", text_result(LISTING)),
        (
            "structured listing",
            {
                "content": [],
                "structuredContent": {
                    "files": [
                        {
                            "name": f"f{i}.txt",
                            "sha256": rand(HEX, 64),
                            "etag": rand(HEX, 32),
                            "id": rand(ALNUM, 40),
                        }
                        for i in range(300)
                    ]
                },
            },
        ),
        ("tool descriptions", text_result(*(t["tool"].get("description", "") for t in tools))),
        ("tools as JSON text", text_result(json.dumps(tools, indent=2))),
        ("tools as structure", {"content": [], "structuredContent": {"tools": tools}}),
        (
            "harmless env",
            text_result(
                "\n".join(
                    f"{k}={v}"
                    for k, v in ENV.items()
                    if v in ENV_HARMLESS
                    or k
                    in (
                        "PATH",
                        "HOME",
                        "LS_COLORS",
                        "PASSWORD_STORE_DIR",
                        "SSH_AUTH_SOCK",
                        "OLDPWD",
                    )
                )
            ),
        ),
        (
            "python source",
            text_result(
                *(inspect.getsource(m) for m in (json.decoder, base64, __import__("smtplib")))
            ),
        ),
    ]


@pytest.mark.parametrize(
    ("name", "result"), ordinary_results(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_nothing_is_found_in_ordinary_results(name: str, result: dict[str, Any]):
    assert scan_result(result) == ScanOutcome((), None, complete=True)


# --- odd input ------------------------------------------------------------------------------


def cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {"content": []}
    loop["self"] = loop
    return loop


def deep(levels: int, leaf: object) -> Any:
    value = leaf
    for _ in range(levels):
        value = {"d": value}
    return value


ODD: list[Any] = [
    None,
    [],
    "text",
    42,
    {},
    {"content": None},
    {"content": "x"},
    {"content": [None, 1, "s", [], {"type": 5}, {"type": "text"}, {"type": "text", "text": 5}]},
    {
        "content": [
            {"type": "image", "data": 5},
            {"type": "audio"},
            {"type": "resource", "resource": "x"},
        ]
    },
    {"content": [{"type": "resource", "resource": {"blob": None, "text": ["list"]}}]},
    {1: "a", (1, 2): GITHUB, None: "c", 2**100: "d", 1.5: "e", frozenset(): "g"},
    {"x": float("nan"), "y": float("inf"), "z": 10**5000, "w": -0.0},
    {"b": b"bytes " + GITHUB.encode(), "o": object(), "s": {1, 2}, "t": (GITHUB, 1)},
    {"s": "\ud800 lone surrogate " + GITHUB + " \udfff"},
    {"t": "{not json " + GITHUB},
    {"t": "[" * 100_000},
    {"t": "[" + "1" * 5000 + "]"},
    {"t": "  \n [1, 2, " + json.dumps(GITHUB) + "]"},
    cyclic(),
    deep(10_000, GITHUB),
    {"content": [{"type": "text", "text": "x" * 10 + "\n" * 1000}]},
]


@pytest.mark.parametrize("result", ODD, ids=[str(i) for i in range(len(ODD))])
def test_odd_input_never_raises(result: Any):
    outcome = scan_result(result)
    assert isinstance(outcome, ScanOutcome)
    assert outcome.redacted is None or isinstance(outcome.redacted, dict)
    if not isinstance(result, dict):
        assert outcome == ScanOutcome((), None, complete=False)
    if outcome.redacted is not None:
        assert GITHUB not in repr(outcome.redacted.get("s", "")) + repr(outcome.findings)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from([GITHUB, PEM, JWT, f"KEY={AWS_SECRET}", "ghp_", "-----BEGIN", "{", "["]),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(max_size=20)
            | st.sampled_from(["text", "data", "type", "password", "content", "resource", "blob"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["content", "structuredContent", "_meta", "isError"]), JSON_VALUES
    )
)
def test_any_json_never_raises(result: dict[str, Any]):
    outcome = scan_result(result)
    assert outcome.complete
    if outcome.redacted is not None:
        json.dumps(outcome.redacted)
    else:
        assert outcome.findings == ()


# --- bounds ---------------------------------------------------------------------------------


def test_past_the_text_bound_the_scan_is_incomplete_and_what_was_seen_is_redacted():
    filler = "an ordinary line of text, nothing to see\n" * (MAX_TEXT_CHARS // 40)
    result = text_result(f"GITHUB_TOKEN={GITHUB}\n" + filler + f"again {GITHUB}\nlate {AWS_KEY_ID}")
    outcome = scan_result(result)
    assert not outcome.complete
    assert outcome.findings == (SecretFinding("GitHub Token", "content[0].text"),)
    text = redacted(outcome)["content"][0]["text"]
    assert GITHUB not in text  # past the bound too: every occurrence of what was found
    assert AWS_KEY_ID in text  # never looked at
    assert len(text) > MAX_TEXT_CHARS


def test_a_secret_only_past_the_bound_is_not_found_and_says_so():
    result = text_result("x" * MAX_TEXT_CHARS, f"token {GITHUB}")
    assert scan_result(result) == ScanOutcome((), None, complete=False)


def test_past_the_depth_bound_the_scan_is_incomplete():
    result = {
        "content": [],
        "structuredContent": {"shallow": GITHUB, "deep": deep(MAX_DEPTH, AWS_KEY_ID)},
    }
    outcome = scan_result(result)
    assert not outcome.complete
    assert outcome.findings == (SecretFinding("GitHub Token", "structuredContent.shallow"),)
    assert redacted(outcome)["structuredContent"]["shallow"] == removed("GitHub Token")


def test_past_the_count_bound_the_scan_is_incomplete():
    result = {
        "content": [{"type": "text", "text": GITHUB}],
        "structuredContent": {"n": [0] * MAX_VALUES},
    }
    outcome = scan_result(result)
    assert not outcome.complete
    assert outcome.findings == (SecretFinding("GitHub Token", "content[0].text"),)


def test_hundreds_of_secrets_are_all_removed_but_not_every_glued_one():
    tokens = ["ghp_" + rand(ALNUM, 36) for _ in range(400)]  # past the forms searched for
    result = {
        "content": [
            {"type": "text", "text": "\n".join(f"TOKEN_{i}={t}" for i, t in enumerate(tokens))}
        ],
        "structuredContent": {"again": " ".join(tokens), "list": tokens},
    }
    outcome = scan_result(result)
    assert not outcome.complete  # one glued to other letters could be missed: said so
    seen = everything(outcome)
    assert not any(token in seen for token in tokens)


def test_past_the_secrets_bound_the_scan_is_incomplete():
    tokens = ["ghp_" + rand(ALNUM, 36) for _ in range(MAX_SECRETS + 5)]
    outcome = scan_result(text_result(*tokens))
    assert not outcome.complete
    assert len(outcome.findings) == MAX_SECRETS
    assert tokens[0] not in everything(outcome)


def test_past_the_secrets_bound_in_json_values_the_scan_is_incomplete():
    values = {f"password_{i}": "Pw" + rand(ALNUM, 12) for i in range(MAX_SECRETS + 5)}
    outcome = scan_result({"content": [], "structuredContent": values})
    assert not outcome.complete
    assert len(outcome.findings) == MAX_SECRETS


def test_binary_data_is_neither_scanned_nor_counted():
    data = png(MAX_TEXT_CHARS)  # larger than the text bound
    result = {
        "content": [
            {"type": "image", "mimeType": "image/png", "data": data},
            {"type": "text", "text": "hi"},
        ]
    }
    assert scan_result(result) == ScanOutcome((), None, complete=True)


def test_a_secret_in_binary_data_is_left_alone():
    result = {"content": [{"type": "image", "data": GITHUB}, {"type": "text", "text": GITHUB}]}
    outcome = scan_result(result)
    assert redacted(outcome)["content"][0]["data"] == GITHUB
    assert redacted(outcome)["content"][1]["text"] == removed("GitHub Token")


# --- faithful to detect-secrets -------------------------------------------------------------

FRAGMENTS = [
    *(line for _, line, _ in PROVIDERS),
    *(f"{k}={v}" for k, v in ENV.items()),
    "password",
    "PASSWORD",
    "passwd",
    "pwd",
    "Pass",
    "secret",
    "SECRET",
    "api_key",
    "ApiKey",
    "db_pass",
    "private_key",
    "client_key",
    "contraseña",
    "CONTRASEÑA",
    "key",
    "token",
    "aws",
    "AWS",
    "AKIA",
    "ASIA",
    "A3T",
    "ghp_",
    "glpat-",
    "xoxb-",
    "xox",
    "sk_live_",
    "rk_live_",
    "SG.",
    "-us1",
    "T3BlbkFJ",
    "eyJ",
    "pypi-AgE",
    "sq0csp-",
    "AKC",
    "AP0",
    "AccountKey=",
    "://",
    ":_authToken=",
    "BEGIN RSA PRIVATE KEY",
    "PuTTY-User-Key-File-2",
    "cloudant",
    "softlayer",
    "ibm",
    "cos_hmac",
    "hooks.slack.com/services/T",
    "\u017f",
    "\u212a",
    "\u0130",
    "\u0131",
    "\u017fecret",
    "KEY",
    "İ",
    '"',
    "'",
    "`",
    "=",
    "==",
    "!=",
    ":=",
    "=>",
    ": ",
    " = ",
    ";",
    "(",
    ")",
    "[",
    "]",
    "@",
    "/",
    ".",
    ",",
    " ",
    "\t",
    "\r",
    "$",
    "{",
    "}",
    "<",
    ">",
]
TOKENISH = st.text(alphabet=ALNUM + "+/=_-.", min_size=1, max_size=70)
NAMES = st.sampled_from(
    "api_key apikey auth_key db_pass database_password key_pass password passwd pwd secret "
    "contraseña client_key priv_key aws_secret ibm_api_key cl_pwd sl_token "
    "cos_hmac_secret_access_key".split()
)
ASSIGNMENTS = st.tuples(
    st.sampled_from(["", "my_", "export ", "self.", "DB_", "x"]),
    NAMES | NAMES.map(str.upper) | NAMES.map(str.title),
    st.sampled_from(["", "_x", "[]", '"', "'"]),
    st.sampled_from(["=", " = ", ": ", ":", " := ", " == ", " => ", "(", ".assign(", " ", " !== "]),
    st.sampled_from(["", '"', "'", "`", '@"']),
    TOKENISH,
    st.sampled_from(["", '"', "'", '";', "',", ")"]),
).map("".join)
LINES = (
    st.lists(st.sampled_from(FRAGMENTS) | TOKENISH | ASSIGNMENTS, min_size=1, max_size=12)
    .map("".join)
    .map(lambda line: line.replace("\n", " "))
)


def plugin_values(detector_index: int, line: str) -> set[str]:
    """What detect-secrets' own plugin reports on ``line`` (before any filter)."""
    if detector_index < len(secretscan._PLUGINS):
        return set(secretscan._PLUGINS[detector_index][0].analyze_string(line))
    from detect_secrets.plugins.keyword import CONFIG_DENYLIST_REGEX_TO_GROUP, KeywordDetector

    found = {
        value
        for value in KeywordDetector().analyze_string(line)
        if not secretscan._WORDS.fullmatch(value)  # lower-case words: ours are not secrets
    }
    if secretscan._ENV_LINE.fullmatch(line):
        found |= set(KeywordDetector().analyze_string(line, CONFIG_DENYLIST_REGEX_TO_GROUP))
    return found


def check_faithful(line: str) -> None:
    """Every line a plugin finds something in is a line its needles point at, and there
    our finder finds what the plugin does (its value, or the secret around it)."""
    line = line.rstrip()
    noise = "nothing here\n" * 3
    joined = secretscan._Joined([noise + line + "\n" + noise, "another text"])
    start = len(noise)
    pointed = joined.line(start, start + len(line))
    keyword = len(secretscan._PLUGINS)
    for index, detector in enumerate(secretscan._DETECTORS[: keyword + 1]):
        expected = plugin_values(index, line)
        if not expected:
            continue
        assert (start, start + len(line)) in joined.lines(detector.needles), (index, line)
        ours = [secret for _, secret in detector.find(pointed)]
        for value in expected:
            assert any(value in secret or secret in value for secret in ours), (index, line, value)


@pytest.mark.parametrize(("kind", "line", "secret"), PROVIDERS, ids=[p[0] for p in PROVIDERS])
def test_faithful_to_the_plugins_on_the_providers_lines(kind: str, line: str, secret: str):
    for part in line.splitlines():
        check_faithful(part)


@settings(max_examples=400, deadline=None)
@given(LINES)
def test_faithful_to_the_plugins_on_any_line(line: str):
    check_faithful(line)


@settings(max_examples=60, deadline=None)
@given(st.lists(LINES, min_size=20, max_size=60))
def test_faithful_to_the_keyword_plugin_on_long_lines(parts: list[str]):
    line = " ; ".join(parts) + " x" * 1100  # past _LONG_LINE: the anchored search
    assert len(line) > secretscan._LONG_LINE
    check_faithful(line)


def test_the_keyword_needles_are_in_every_word_of_its_list():
    from detect_secrets.plugins.keyword import DENYLIST

    for word in DENYLIST:
        for spelled in (word.replace("_?", "_"), word.replace("_?", "")):
            assert secretscan._KEYWORD_WORD.fullmatch(spelled)
            assert any(needle in spelled for needle in secretscan._KEYWORD_NEEDLES)


def test_folding_reads_case_as_ignorecase_does():
    """The case-blind needles look in the text lowered; every character IGNORECASE takes
    for an ASCII letter must lower to it."""
    letters = re.compile("(?i)[a-z]")
    for code in range(128, sys.maxunicode + 1):
        char = chr(code)
        if letters.fullmatch(char):
            folded = secretscan._Joined([char]).folded
            assert len(folded) == 1, hex(code)
            assert re.fullmatch(f"(?i){re.escape(folded)}", char), hex(code)


# --- detect-secrets' global settings --------------------------------------------------------


def test_detect_secrets_settings_are_not_read_nor_changed(monkeypatch: pytest.MonkeyPatch):
    import requests
    from detect_secrets.settings import get_settings, transient_settings

    result = text_result(f"token {GITHUB}\n" + "\n".join(f"{k}={v}" for k, v in ENV.items()))
    before = get_settings().json()
    outcome = scan_result(result)
    assert get_settings().json() == before

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a secret was sent to be verified")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(requests, "post", no_network)
    verify = "detect_secrets.filters.common.is_ignored_due_to_verification_policies"
    with transient_settings(
        {
            "plugins_used": [{"name": "AWSKeyDetector"}],
            "filters_used": [{"path": verify, "min_level": 2}],
        }
    ):
        assert scan_result(result) == outcome


def test_scans_in_threads_while_another_swaps_the_settings():
    from detect_secrets.settings import transient_settings

    result = text_result(f"token {GITHUB}\npassword = '{PASSWORD}'")
    expected = scan_result(result)
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            with transient_settings({"plugins_used": [{"name": "KeywordDetector"}]}):
                pass

    outcomes: list[ScanOutcome] = []

    def scan() -> None:
        outcomes.extend(scan_result(result) for _ in range(30))

    swapper = threading.Thread(target=swap)
    scanners = [threading.Thread(target=scan) for _ in range(3)]
    swapper.start()
    for thread in scanners:
        thread.start()
    for thread in scanners:
        thread.join()
    stop.set()
    swapper.join()
    assert outcomes == [expected] * 90
