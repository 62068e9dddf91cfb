"""Benchmark of `arbor server` through the official Python SDK.

Measures, against a real server it starts (its own instance, like the test suites):
  * `Sandbox.create()` + the first `commands.run("echo hi")`: p50 / p90 / p99 (target p50 <= 30 ms);
  * `Sandbox.create()` alone and `kill()` alone;
  * creates per second at concurrency 10 (target >= 100/s), sandboxes killed after each round.

    .venv/bin/python bench/api_bench.py [--runs 100] [--concurrent 100] [--concurrency 10]

Run as root after `scripts/setup.sh --no-start`. Loopback only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))

from novita_sandbox.core import Sandbox  # noqa: E402

from server_harness import start_server  # noqa: E402


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def row(name, ms):
    return f"| {name} | {pct(ms, 50):.1f} | {pct(ms, 90):.1f} | {pct(ms, 99):.1f} | {len(ms)} |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=100, help="sandboxes per concurrency round")
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    server = start_server()
    opts = server.sdk_opts()
    try:
        first, create, kill = [], [], []
        for i in range(args.warmup + args.runs):
            t0 = time.perf_counter()
            sbx = Sandbox.create(timeout=60, **opts)
            t1 = time.perf_counter()
            out = sbx.commands.run("echo hi")
            t2 = time.perf_counter()
            assert out.stdout == "hi\n"
            sbx.kill()
            t3 = time.perf_counter()
            if i >= args.warmup:
                create.append((t1 - t0) * 1000)
                first.append((t2 - t0) * 1000)
                kill.append((t3 - t2) * 1000)

        rates = []
        for _ in range(args.rounds):
            with ThreadPoolExecutor(args.concurrency) as pool:
                t0 = time.perf_counter()
                made = list(pool.map(lambda _: Sandbox.create(timeout=60, **opts), range(args.concurrent)))
                elapsed = time.perf_counter() - t0
                rates.append(args.concurrent / elapsed)
                list(pool.map(lambda s: s.kill(), made))

        load = os.getloadavg()
        print(f"Machine: {os.cpu_count()} CPUs; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end.")
        print("| measure (ms) | p50 | p90 | p99 | n |")
        print("|---|---|---|---|---|")
        print(row("`Sandbox.create()` + first `commands.run(\"echo hi\")`", first))
        print(row("`Sandbox.create()`", create))
        print(row("`kill()`", kill))
        print(
            f"\nCreates per second at concurrency {args.concurrency} ({args.concurrent} per round): "
            + ", ".join(f"{r:.0f}" for r in rates)
            + f" (median {statistics.median(rates):.0f}/s)"
        )
    finally:
        server.teardown()


if __name__ == "__main__":
    main()
