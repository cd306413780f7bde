"""What each way of `lockgate connect` adds to a tools/call: the relay, fd passing, none.

    ./dev bench    (or: .venv/bin/python bench/bench_bridge.py [--calls 2000])

Three stdio clients (the mcp SDK's Client) of the same upstream, server-everything (npm),
calling ``echo``: straight to the server, through `lockgate connect` with the client's
pipes passed to the gateway (``LOCKGATE_BRIDGE=fd``), and through it relayed
(``LOCKGATE_BRIDGE=relay``: the bridge copies each message, a hop of its own). The gateway,
its policy and servers are bench_gateway.py's. The three take turns call by call, the
order rotating, so machine noise lands on all alike; the figures are each one's median and
p99, what each way adds to the direct median and its ratio to it, and the relay against fd
passing. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from bench_gateway import EVERYTHING, LOCKGATE, everything_http, gateway, p99
from mcp import Client, StdioServerParameters

from proxy.bridge.connect import BRIDGE_VARIABLE

WARM_UP = 50  # calls per client, not counted


def bridged(env: dict[str, str], mode: str) -> Client:
    folders = {k: env[k] for k in ("LOCKGATE_CONFIG_DIR", "LOCKGATE_DATA_DIR")}
    return Client(
        StdioServerParameters(
            command=LOCKGATE,
            args=["connect", "everything", "--client", f"bench-{mode}"],
            env={**folders, BRIDGE_VARIABLE: mode},
        ),
        mode="legacy",
    )


async def interleaved(clients: dict[str, Client], calls: int) -> dict[str, list[float]]:
    """Each call's time in ms, per client; the clients take turns, the order rotating."""
    names = list(clients)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(calls + WARM_UP):
        turn = i % len(names)
        for name in names[turn:] + names[:turn]:
            start = time.perf_counter()
            result = await clients[name].call_tool("echo", {"message": f"m{i}"})
            elapsed = (time.perf_counter() - start) * 1000
            assert not result.is_error, result
            if i >= WARM_UP:
                times[name].append(elapsed)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="per client")
    args = parser.parse_args()
    if not EVERYTHING.exists():
        sys.exit("server-everything is missing: run ./dev test once (npm ci in tests/servers)")
    print(f"{args.calls} echo calls per client, interleaved; python {sys.version.split()[0]}")
    with everything_http() as url, gateway(url) as (env, _token, _port, _pid):
        clients = {
            "direct": Client(
                StdioServerParameters(command="node", args=[str(EVERYTHING), "stdio"]),
                mode="legacy",
            ),
            "fd": bridged(env, "fd"),
            "relay": bridged(env, "relay"),
        }
        async with clients["direct"], clients["fd"], clients["relay"]:
            times = await interleaved(clients, args.calls)
    medians = {name: statistics.median(values) for name, values in times.items()}
    direct = medians["direct"]
    for name, values in times.items():
        line = f"{name:<7} median {medians[name]:6.3f} ms  p99 {p99(values):6.3f} ms"
        if name != "direct":
            added = medians[name] - direct
            line += f" | added {added:+.3f} ms | x{medians[name] / direct:.3f} direct"
        print(line)
    relay_over_fd = medians["relay"] - medians["fd"]
    print(
        f"relay against fd passing: {relay_over_fd:+.3f} ms per call "
        f"(x{medians['relay'] / medians['fd']:.3f}); the relay's hop, both ways"
    )


if __name__ == "__main__":
    asyncio.run(main())
