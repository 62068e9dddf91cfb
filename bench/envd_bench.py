"""Benchmarks a real arbor-envd through the official Python SDK and raw Connect calls.

Run with the project venv (see bench/README.md):

    .venv/bin/python bench/envd_bench.py [--runs 300] [--warmup 30] [--size-mb 100] [--repeats 3]

Loopback only, bounded loops. Prints a markdown table to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List
from urllib.parse import quote

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))

from connect_raw import FLAG_END, parse_frames, start, start_direct, unary  # noqa: E402
from envd_harness import envd_binary, start_envd  # noqa: E402
from novita_sandbox.core import Sandbox  # noqa: E402

MIB = 1024 * 1024
# Targets from the spec; a row outside its target is marked.
TARGET_RUN_P50_MS = 3.0
TARGET_MB_S = 300.0
TARGET_RSS_KIB = 5 * 1024


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def percentile(sorted_ms: List[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    k = max(0, min(len(sorted_ms) - 1, round(p / 100 * len(sorted_ms) + 0.5) - 1))
    return sorted_ms[k]


def time_calls(fn: Callable[[], None], runs: int, warmup: int) -> List[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return sorted(out)


def check_raw(r: httpx.Response) -> None:
    frames = parse_frames(r.content)
    if r.status_code != 200 or frames[-1][0] != FLAG_END or "error" in frames[-1][1]:
        raise RuntimeError(f"raw Start failed: {r.status_code} {frames[-1:]}")
    if frames[-2][1]["event"]["end"].get("exitCode", 0) != 0:
        raise RuntimeError(f"raw Start: non-zero exit {frames[-2]}")


def throughput(fn: Callable[[], None], size: int, repeats: int) -> List[float]:
    """MB/s (10^6 bytes per second) of each repeat, best first."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(size / 1e6 / (time.perf_counter() - t0))
    return sorted(rates, reverse=True)


def transfer_rows(sbx: Sandbox, envd, args) -> list:
    size = args.size_mb * MIB
    data = os.urandom(size)
    path = str(envd.home / "bench.bin")
    log(f"files.write {args.size_mb} MiB x{args.repeats}")
    up = throughput(lambda: sbx.files.write(path, data, request_timeout=600), size, args.repeats)
    if Path(path).stat().st_size != size:
        raise RuntimeError("upload size mismatch")
    log(f"files.read {args.size_mb} MiB x{args.repeats}")
    got = {}

    def download():
        got["data"] = sbx.files.read(path, format="bytes", request_timeout=600)

    down = throughput(download, size, args.repeats)
    if bytes(got["data"]) != data:
        raise RuntimeError("download content mismatch")
    del got
    measured = [(f"SDK `files.write` {args.size_mb} MiB", up, True), (f"SDK `files.read` {args.size_mb} MiB", down, True)]
    # curl is a client far cheaper than Python: what is left is the daemon's own rate.
    if shutil.which("curl"):
        src = envd.base / "bench-src.bin"
        src.write_bytes(data)
        url = f"{envd.url}/files?path={quote(path)}"
        curl = ["curl", "-sSf", "-o", "/dev/null", "--max-time", "600"]
        for name, extra in [
            ("multipart upload", ["-F", f"file=@{src}"]),
            ("octet-stream upload", ["-X", "POST", "-H", "Content-Type: application/octet-stream", "-T", str(src)]),
            ("download", []),
        ]:
            log(f"curl {name} x{args.repeats}")
            rates = throughput(lambda: subprocess.run([*curl, *extra, url], check=True), size, args.repeats)
            measured.append((f"raw (curl) {name} {args.size_mb} MiB", rates, False))
        src.unlink()
    del data
    rows = []
    for name, rates, has_target in measured:
        mark = "" if not has_target else (" ✓" if rates[0] >= TARGET_MB_S else f" ✗ (target ≥ {TARGET_MB_S:.0f})")
        rows.append((name, f"best {rates[0]:.0f} MB/s{mark} · median {statistics.median(rates):.0f} MB/s (n={len(rates)})"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=300, help="timed calls per latency row")
    ap.add_argument("--warmup", type=int, default=30, help="untimed calls before each latency row")
    ap.add_argument("--size-mb", type=int, default=100, help="file size for the transfer rows (MiB)")
    ap.add_argument("--repeats", type=int, default=3, help="transfers per direction")
    args = ap.parse_args()
    if not (1 <= args.runs <= 100_000 and 0 <= args.warmup <= 10_000 and 1 <= args.size_mb <= 4096):
        ap.error("out-of-range argument")

    envd = start_envd()
    rows = []
    try:
        time.sleep(0.5)  # let start-up allocations settle before the first RSS reading
        rss_start = (envd.rss_kib(), envd.anon_kib())
        sbx = Sandbox.create(debug=True, sandbox_url=envd.url)

        log(f"commands.run('true') x{args.runs} through the SDK")
        sdk = time_calls(lambda: sbx.commands.run("true"), args.runs, args.warmup)
        with httpx.Client(base_url=envd.url, timeout=30) as client:
            log("raw Connect Start of `bash -l -c true`")
            raw_bash = time_calls(lambda: check_raw(start(client, "true")), args.runs, args.warmup)
            log("raw unary List (the HTTP + Connect floor)")
            floor = time_calls(lambda: unary(client, "/process.Process/List", {}).raise_for_status(), args.runs, args.warmup)
            log("raw Connect Start of /bin/true (no shell)")
            raw_true = time_calls(lambda: check_raw(start_direct(client, ["/bin/true"])), args.runs, args.warmup)
        rss_after_runs = (envd.rss_kib(), envd.anon_kib())
        # The peer: the same commands spawned directly with posix_spawn (vfork + exec, the cheapest way to
        # start a process) and reaped by this process: no daemon, no HTTP. The ratio envd/direct is what
        # envd adds on this host. posix_spawn cannot change uid, so the peer runs as the bench's own user
        # with `user`'s environment (same HOME, so bash -l reads the same files).
        home = str(envd.home)
        env = {"HOME": home, "USER": "user", "LOGNAME": "user", "PATH": "/usr/local/bin:/usr/bin:/bin"}

        def spawn_direct(argv):
            pid = os.posix_spawn(argv[0], argv, env)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0

        log("direct spawn of `bash -l -c true` and /bin/true (the peer)")
        direct_bash = time_calls(lambda: spawn_direct(["/bin/bash", "-l", "-c", "true"]), args.runs, args.warmup)
        direct_true = time_calls(lambda: spawn_direct(["/bin/true"]), args.runs, args.warmup)

        for name, ms, target in [
            ("SDK `commands.run(\"true\")` (bash -l -c)", sdk, TARGET_RUN_P50_MS),
            ("raw Connect Start, `bash -l -c true`", raw_bash, None),
            ("raw Connect Start, `/bin/true`", raw_true, None),
            ("raw unary `process.Process/List` (HTTP floor)", floor, None),
            ("peer: direct spawn, `bash -l -c true`", direct_bash, None),
            ("peer: direct spawn, `/bin/true`", direct_true, None),
        ]:
            p50 = percentile(ms, 50)
            mark = "" if target is None else (" ✓" if p50 <= target else f" ✗ (target ≤ {target} ms)")
            rows.append(
                (name, f"p50 {p50:.2f} ms{mark} · p90 {percentile(ms, 90):.2f} · p99 {percentile(ms, 99):.2f}"
                 f" · max {ms[-1]:.2f} (n={len(ms)})")
            )

        for name, ours, peer in [
            ("ratio SDK run / direct spawn, `bash -l -c true` (p50)", sdk, direct_bash),
            ("ratio raw Start / direct spawn, `/bin/true` (p50)", raw_true, direct_true),
        ]:
            rows.append((name, f"{percentile(ours, 50) / percentile(peer, 50):.2f}× "
                               f"(+{percentile(ours, 50) - percentile(peer, 50):.2f} ms)"))

        try:
            rows += transfer_rows(sbx, envd, args)
        except Exception as e:  # a failing section is reported, the rest still runs
            rows.append((f"SDK `files.write`/`files.read` {args.size_mb} MiB", f"failed: {str(e)[:120]}"))

        time.sleep(1.0)
        rss_end = (envd.rss_kib(), envd.anon_kib())
        for name, kib in [
            ("daemon RSS, idle after start", rss_start),
            ("daemon RSS, after the command runs", rss_after_runs),
            ("daemon RSS, idle after transfers", rss_end),
        ]:
            rss, anon = kib
            mark = " ✓" if rss <= TARGET_RSS_KIB else f" ✗ (target ≤ {TARGET_RSS_KIB // 1024} MiB)"
            rows.append((name, f"{rss / 1024:.2f} MiB{mark} · private (RssAnon) {anon / 1024:.2f} MiB"))
    finally:
        envd.stop()
        shutil.rmtree(envd.base, ignore_errors=True)

    print(f"arbor-envd bench — binary `{envd_binary()}`, {os.cpu_count()} CPUs, loopback\n")
    print("| measure | result |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
