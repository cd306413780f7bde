"""What Lockgate's hop costs: tools/call through the gateway versus straight to the server.

    ./dev bench    (or: .venv/bin/python bench/bench_gateway.py [--calls 2000])

The server is server-everything (npm); the client is the mcp SDK's Client; the call is
``echo``. For each transport the direct and the proxied client alternate call by call, so
machine noise lands on both alike; the figures are the median and p99 of each, the
difference of the medians (what Lockgate adds), and throughput with 1 and 16 concurrent
callers as the ratio proxied/direct. A policy with a real rule (an argument check) is in
force, so every proxied call is decided and audited as in use. "door" is the HTTP door in
front of the stdio server against the stdio server direct (the door's own cost); "http" an
HTTP server direct and behind the door. Last, Node's fetch on one kept-alive connection,
direct and through the HTTP door (runs alternated), and through the door to the stdio
server. Not a pass/fail test.
Targets (issue 3): at most +0.5 ms at the median, at least 0.5x direct throughput at 16.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parent.parent
EVERYTHING = (
    REPO / "tests/servers/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
)
LOCKGATE = shutil.which("lockgate", path=str(Path(sys.executable).parent)) or "lockgate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


@contextlib.contextmanager
def gateway(http_url: str) -> Any:
    root = Path(tempfile.mkdtemp(prefix="lockgate-bench-"))
    config, data = root / "config", root / "data"
    config.mkdir()
    (config / "servers.json").write_text(
        json.dumps(
            {
                "mcpServers": {
                    "everything": {"command": "node", "args": [str(EVERYTHING), "stdio"]},
                    "remote": {"url": http_url},
                }
            }
        )
    )
    (config / "policy.json").write_text(
        json.dumps(
            {
                "version": "1",
                "default": "deny",
                "tools": {
                    "echo": {
                        "arguments": {
                            "properties": {"message": {"type": "string", "maxLength": 100}}
                        }
                    }
                },
            }
        )
    )
    env = {**os.environ, "LOCKGATE_CONFIG_DIR": str(config), "LOCKGATE_DATA_DIR": str(data)}
    token = subprocess.run(
        [LOCKGATE, "token", "create", "bench"], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [LOCKGATE, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        deadline = time.monotonic() + 30
        while not (data / "run" / "gateway.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield env, token, port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def everything_http() -> Any:
    port = free_port()
    proc = subprocess.Popen(
        ["node", str(EVERYTHING), "streamableHttp"],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def http_client(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=60)
    return http, Client(streamable_http_client(url, http_client=http), mode="legacy")


async def latency(direct: Client, proxied: Client, calls: int) -> tuple[list[float], list[float]]:
    out: tuple[list[float], list[float]] = ([], [])
    for i in range(calls + 50):
        for side, client in ((0, direct), (1, proxied)) if i % 2 else ((1, proxied), (0, direct)):
            start = time.perf_counter()
            result = await client.call_tool("echo", {"message": f"m{i}"})
            elapsed = (time.perf_counter() - start) * 1000
            assert not result.is_error
            if i >= 50:  # warm-up calls are not counted
                out[side].append(elapsed)
    return out


async def throughput(client: Client, callers: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await client.call_tool("echo", {"message": "t"})
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return done / (time.perf_counter() - start)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def compare(
    name: str, direct: Client, proxied: Client, *, calls: int, seconds: float, pid: int
) -> None:
    async with direct, proxied:
        d, p = await latency(direct, proxied, calls)
        rates = {}
        for callers in (1, 16):
            direct_rate = await throughput(direct, callers, seconds)
            before, start = cpu_seconds(pid), time.perf_counter()
            proxied_rate = await throughput(proxied, callers, seconds)
            used = cpu_seconds(pid) - before
            elapsed = time.perf_counter() - start
            rates[callers] = (
                direct_rate,
                proxied_rate,
                used / (proxied_rate * elapsed),
                used / elapsed,
            )
    md, mp = statistics.median(d), statistics.median(p)
    print(
        f"{name:<6} latency ms  direct median {md:6.2f} p99 {p99(d):6.2f} | "
        f"lockgate median {mp:6.2f} p99 {p99(p):6.2f} | added {mp - md:+.2f} ms "
        f"(x{mp / md:.2f})"
    )
    for callers, (rd, rp, cpu_per_call, load) in rates.items():
        print(
            f"{name:<6} {callers:>2} caller{'s' if callers > 1 else ' '}  direct {rd:7.0f}/s | "
            f"lockgate {rp:7.0f}/s | ratio {rp / rd:.2f} | gateway CPU "
            f"{cpu_per_call * 1e6:4.0f} us/call ({load:.0%} of a core)"
        )


KEEPALIVE_CLIENT = REPO / "tests/servers/keepalive_client.mjs"


def node_keepalive(url: str, calls: int, token: str | None = None) -> list[float]:
    """Each call's time, in ms, from Node's fetch on a kept-alive connection (what the
    TypeScript SDK's transport does): the client that met Nagle's algorithm (issue 13)."""
    out = subprocess.run(
        ["node", str(KEEPALIVE_CLIENT), url, str(calls), *([token] if token else [])],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    ms: list[float] = json.loads(out)["ms"][10:]  # the first ten warm up
    return ms


def compare_keepalive(direct_url: str, proxied_url: str, token: str, calls: int) -> None:
    d: list[float] = []
    p: list[float] = []
    for _ in range(4):  # alternated runs, so noise lands on both
        d += node_keepalive(direct_url, calls // 4 + 10)
        p += node_keepalive(proxied_url, calls // 4 + 10, token)
    md, mp = statistics.median(d), statistics.median(p)
    print(
        f"{'node':<6} kept-alive fetch ms  direct median {md:6.2f} p99 {p99(d):6.2f} | "
        f"lockgate median {mp:6.2f} p99 {p99(p):6.2f} | added {mp - md:+.2f} ms "
        f"(x{mp / md:.2f})"
    )


def door_keepalive(door_url: str, token: str, calls: int) -> None:
    """Node's kept-alive fetch through the HTTP door in front of the stdio server, against
    the SDK's stdio client straight to it (issue 18: at most 1.5 ms, direct about 1)."""
    p: list[float] = []
    for _ in range(4):
        p += node_keepalive(door_url, calls // 4 + 10, token)
    median = statistics.median(p)
    print(f"{'node':<6} kept-alive fetch through the door to stdio: median {median:6.2f} ms, "
          f"p99 {p99(p):6.2f} (the door line above gives direct stdio's median)")  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput run")
    args = parser.parse_args()
    if not EVERYTHING.exists():
        sys.exit("server-everything is missing: run ./dev test once (npm ci in tests/servers)")
    print(f"{args.calls} echo calls per side, interleaved; python {sys.version.split()[0]}")
    with everything_http() as url, gateway(url) as (env, token, port, pid):
        direct_stdio = Client(
            StdioServerParameters(command="node", args=[str(EVERYTHING), "stdio"]), mode="legacy"
        )
        bridged = Client(
            StdioServerParameters(
                command=LOCKGATE,
                args=["connect", "everything", "--client", "bench"],
                env={k: env[k] for k in ("LOCKGATE_CONFIG_DIR", "LOCKGATE_DATA_DIR")},
            ),
            mode="legacy",
        )
        await compare(
            "stdio", direct_stdio, bridged, calls=args.calls, seconds=args.seconds, pid=pid
        )
        # The HTTP door in front of the same stdio server: what the door itself costs
        # (issue 18's figures are against direct stdio).
        direct_stdio = Client(
            StdioServerParameters(command="node", args=[str(EVERYTHING), "stdio"]), mode="legacy"
        )
        door_url = f"http://127.0.0.1:{port}/mcp/everything"
        http_door, door = http_client(door_url, token)
        async with http_door:
            await compare(
                "door", direct_stdio, door, calls=args.calls, seconds=args.seconds, pid=pid
            )
        http_direct, direct = http_client(url)
        http_proxied, proxied = http_client(f"http://127.0.0.1:{port}/mcp/remote", token)
        async with http_direct, http_proxied:
            await compare("http", direct, proxied, calls=args.calls, seconds=args.seconds, pid=pid)
        compare_keepalive(url, f"http://127.0.0.1:{port}/mcp/remote", token, args.calls)
        door_keepalive(door_url, token, args.calls)


if __name__ == "__main__":
    asyncio.run(main())
