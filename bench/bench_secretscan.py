"""What looking for secrets in a tool's result costs: scan_result against json.dumps.

    ./dev bench    (or: .venv/bin/python bench/bench_secretscan.py [--runs N])

Realistic results, made here the same way each run: the short texts most calls return
(an echo, a time), a 100 KB git log (random SHAs), a
1 MB file read (this repository's Python source, as a filesystem server returns it), an
environment dump with a few secrets (server-everything's get-env: JSON text; and the same
as ``KEY=value`` lines), a directory listing as structuredContent (5,000 entries with
SHA-256s), a 1 MB PNG in an image block; then the worst texts of their size this scanner
knows: 4 MB of base64 in a text block (past the 4 MiB bound; every line holds runs some
needles take), 90,000 lines that each name a key or token (every line a candidate of five
detectors), and 4 MB of minified code on one line. Each is timed ``--runs`` times,
alternating with the baseline, ``json.dumps`` of the same result (what merely writing it
to the agent costs); the figures are medians and their ratio. For the git log, also what
detect-secrets' way costs, each plugin on each line: what the needles save.
Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detect_secrets.plugins.keyword import KeywordDetector

from proxy.gateway import secretscan
from proxy.gateway.secretscan import scan_result

REPO = Path(__file__).resolve().parent.parent


def git_log(rng: random.Random, size: int) -> str:
    words = "fix add the gateway policy audit tray window test for a an of when is not".split()
    files = [f"proxy/{p}.py" for p in ("core", "pipeline", "session", "decide", "log")]
    out: list[str] = []
    while sum(map(len, out)) < size:
        sha = "".join(rng.choice("0123456789abcdef") for _ in range(40))
        subject = " ".join(rng.choice(words) for _ in range(rng.randint(4, 10)))
        out.append(
            f"commit {sha}\nAuthor: Dev Eloper <dev@example.com>\n"
            f"Date:   Mon Nov {rng.randint(1, 28)} 12:{rng.randint(10, 59)}:00 2026 +0100\n\n"
            f"    {subject.capitalize()}\n\n"
            + "".join(
                f" {f} | {rng.randint(1, 90)} {'+' * rng.randint(1, 20)}\n"
                for f in rng.sample(files, 2)
            )
            + f" 2 files changed, {rng.randint(1, 99)} insertions(+)\n\n"
        )
    return "".join(out)[:size]


def source_text(size: int) -> str:
    text = ""
    for path in sorted((REPO / "proxy").rglob("*.py")) + sorted((REPO / "tests").rglob("*.py")):
        text += path.read_text("utf-8")
        if len(text) >= size:
            break
    return text[:size]


def environment(rng: random.Random) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/home/dev",
        "PWD": "/home/dev/project",
        "SHELL": "/bin/bash",
        "LANG": "en_US.UTF-8",
        "HOSTNAME": "3f2a9c1b7d4e",
        "GPG_KEY": "A035C8C19219BA821ECEA86B64E628F8D684696D",
        "LS_COLORS": "rs=0:di=01;34:ln=01;36:mh=00:pi=40;33:so=01;35:do=01;35",
        "AWS_ACCESS_KEY_ID": "AKIA"
        + "".join(rng.choice(string.ascii_uppercase) for _ in range(16)),
        "AWS_SECRET_ACCESS_KEY": "".join(rng.choice(string.ascii_letters) for _ in range(40)),
        "GITHUB_TOKEN": "ghp_" + "".join(rng.choice(string.ascii_letters) for _ in range(36)),
        "DATABASE_URL": "postgres://app:" + "s3cr3t-pw" + "@db:5432/app",
    }
    for i in range(70):
        env[f"APP_SETTING_{i}"] = rng.choice(["1", "true", "/var/lib/app", "info", "8080"])
    return env


def png(rng: random.Random, size: int) -> str:
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + rng.randbytes(size)).decode()


def results(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    env = environment(rng)
    listing = [
        {
            "name": f"file_{i}.txt",
            "size": rng.randint(0, 10**6),
            "sha256": rng.randbytes(32).hex(),
            "id": f"{rng.randbytes(16).hex()}",
        }
        for i in range(5000)
    ]
    blob = base64.b64encode(rng.randbytes(3 * 1024 * 1024)).decode()
    worst = "\n".join(blob[i : i + 76] for i in range(0, len(blob), 76))
    words = "\n".join(
        f"    self.{rng.choice(['key', 'token', 'password', 'secret'])}_{i} = lookup(path, pattern)"
        for i in range(90_000)
    )
    minified = ";".join(f"var k{i}={{key:a.key,pass:p,token:t[{i}]}}" for i in range(110_000))
    clock = "The current time in Europe/Paris is 2026-12-02T07:55:12+01:00 (Wednesday)."
    return [
        ("echo, a short text", {"content": [{"type": "text", "text": "Echo: hello world"}]}),
        ("a time zone's time, 1 line", {"content": [{"type": "text", "text": clock}]}),
        ("git log, 100 KB text", {"content": [{"type": "text", "text": git_log(rng, 100_000)}]}),
        (
            "file read, 1 MB source",
            {
                "content": [
                    {
                        "type": "resource",
                        "resource": {"uri": "file:///x.py", "text": source_text(1_000_000)},
                    }
                ]
            },
        ),
        ("env dump, get-env JSON", {"content": [{"type": "text", "text": json.dumps(env)}]}),
        (
            "env dump, KEY=value",
            {"content": [{"type": "text", "text": "\n".join(f"{k}={v}" for k, v in env.items())}]},
        ),
        (
            "listing, 5000 entries structured",
            {"content": [], "structuredContent": {"files": listing}},
        ),
        (
            "image block, 1 MB PNG",
            {"content": [{"type": "image", "mimeType": "image/png", "data": png(rng, 1 << 20)}]},
        ),
        ("worst: 4 MB base64 as text", {"content": [{"type": "text", "text": worst}]}),
        ("worst: 4 MB of key/token lines", {"content": [{"type": "text", "text": words}]}),
        ("worst: 4 MB minified, one line", {"content": [{"type": "text", "text": minified}]}),
    ]


def every_plugin_on_every_line(text: str) -> int:
    """What detect-secrets itself does with a text: each plugin on each line (its
    scan_line, without the settings' and filters' overhead): what the needles save."""
    plugins = [plugin for plugin, *_ in secretscan._PLUGINS] + [KeywordDetector()]
    return sum(
        1 for line in text.splitlines() for plugin in plugins for _ in plugin.analyze_string(line)
    )


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    rng = random.Random(1)
    print(f"python {sys.version.split()[0]}, {args.runs} runs each, medians")
    print(f"{'result':<34} {'size':>9} {'found':>5} {'scan ms':>9} {'dumps ms':>9} {'x dumps':>8}")
    for name, result in results(rng):
        outcome = scan_result(result)  # warm the caches
        scans: list[float] = []
        dumps: list[float] = []
        for _ in range(args.runs):
            dumps.append(timed(lambda result=result: json.dumps(result)))  # type: ignore[misc]
            scans.append(timed(lambda result=result: scan_result(result)))  # type: ignore[misc]
        scan, dump = statistics.median(scans), statistics.median(dumps)
        size = len(json.dumps(result))
        flag = "" if outcome.complete else " (incomplete)"
        print(
            f"{name:<34} {size / 1000:>7.0f}KB {len(outcome.findings):>5} "
            f"{scan:>9.2f} {dump:>9.2f} {scan / dump:>8.1f}{flag}"
        )
        if name.startswith("git log"):
            text = result["content"][0]["text"]
            naive = statistics.median(
                timed(lambda text=text: every_plugin_on_every_line(text))  # type: ignore[misc]
                for _ in range(3)
            )
            label = "  the same, every plugin on every line"
            print(f"{label:<44} {naive:>9.2f} {dump:>9.2f} {naive / dump:>8.1f}")


if __name__ == "__main__":
    main()
