"""Benchmark of public URLs: the proxy's overhead against a direct connection to the sandbox.

A real `arbor server` (its own instance, like the test suites) with a sandbox running a small Node.js
HTTP server (`ok`, keep-alive). `wrk` (Debian's package) measures requests/s and latency
percentiles:
  * direct: to the sandbox's own address on the host (what a request costs without Arbor);
  * proxied over HTTP: to the server with `Host: 8000-<id>.<domain>`;
  * proxied over TLS: the same through the TLS listener (when the server has one).

    .venv/bin/python bench/proxy_bench.py [--seconds 10] [--connections 32] [--threads 2]

Run as root after `scripts/setup.sh --no-start`. Loopback and the sandbox's host address only.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))

from novita_sandbox.core import Sandbox  # noqa: E402

from envd_harness import free_port  # noqa: E402
from server_harness import start_server  # noqa: E402

DOMAIN = "arbor.test"
NODE_SERVER = (
    "node -e \"require('http').createServer((q, s) => { s.setHeader('content-type', 'text/plain'); "
    "s.end('ok'); }).listen(8000)\""
)


def wrk(url: str, seconds: int, connections: int, threads: int, host: str | None = None) -> dict:
    cmd = ["wrk", "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", url]
    if host:
        cmd[1:1] = ["-H", f"Host: {host}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def latency(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": latency("50"), "p99": latency("99"), "errors": int(errors.group(1)) if errors else 0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    tls_port = free_port()
    server = start_server(domain=DOMAIN, tls_listen=f"127.0.0.1:{tls_port}")
    try:
        sbx = Sandbox.create(timeout=600, **server.sdk_opts())
        sbx.commands.run(NODE_SERVER, background=True)
        while sbx.commands.run("curl -s http://127.0.0.1:8000/ || true").stdout != "ok":
            time.sleep(0.05)
        db = sqlite3.connect(server.base / "data" / "arbor.db")
        (addr,) = db.execute("SELECT host_addr FROM sandboxes WHERE id = ?", (sbx.sandbox_id,)).fetchone()
        host = sbx.get_host(8000)
        port = server.url.rsplit(":", 1)[1]
        runs = {
            "direct to the sandbox": wrk(f"http://{addr}:8000/", args.seconds, args.connections, args.threads),
            "through the proxy (HTTP)": wrk(
                f"http://127.0.0.1:{port}/", args.seconds, args.connections, args.threads, host
            ),
            "through the proxy (TLS)": wrk(
                f"https://127.0.0.1:{tls_port}/", args.seconds, args.connections, args.threads, host
            ),
        }
        base = runs["direct to the sandbox"]
        print(f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, keep-alive, 2-byte body\n")
        print("| path | requests/s | p50 ms | p99 ms | non-2xx | rps vs direct | p99 vs direct |")
        print("|---|---|---|---|---|---|---|")
        for name, r in runs.items():
            print(
                f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} | "
                f"{r['rps'] / base['rps']:.2f} | {r['p99'] / base['p99']:.2f} |"
            )
        sbx.kill()
    finally:
        server.teardown()


if __name__ == "__main__":
    main()
