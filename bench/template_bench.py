"""Benchmark of templates: sandboxes created from a template whose start command runs in its memory
snapshot, and template (re)builds with the step cache.

Against a real server it starts (its own instance, like the test suites):
  * create from a template with a running HTTP server + the first request to it from inside the
    sandbox (`curl`): p50 / p90 / p99 (target p50 <= the 150 ms resume target of the persistence
    issue). Side by side, the way without a memory snapshot: create from the same files, start the
    same server, wait until it answers. Two servers: `python3 -m http.server` (starts in ~70 ms)
    and one with a ~1 s start-up (imports and a warm-up before it listens).
  * build times: a first build (uncached), an unchanged rebuild (all steps cached), a rebuild with
    only the last step changed.

    .venv/bin/python bench/template_bench.py [--runs 30] [--rebuilds 5]

Run as root after `scripts/setup.sh --no-start`. Loopback only (the builds themselves use no network).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))

from novita_sandbox.core import Sandbox  # noqa: E402

from server_harness import arbor_binary, start_server  # noqa: E402

SERVE = "cd /srv/www && python3 -m http.server 8000"
# A service with a real start-up cost before it listens (imports and a warm-up, ~1 s), as an app
# server loading its code and data would have.
SLOW_SERVE = (
    "cd /srv/www && python3 -c 'import asyncio, json, email, xml.dom.minidom, sqlite3, http.server, "
    "functools, socketserver; cache = {i: str(i) * 8 for i in range(2_000_000)}; "
    "http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=8000, bind=\"127.0.0.1\")'"
)
READY = "curl -sf http://127.0.0.1:8000/ >/dev/null"


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def row(name, ms):
    return f"| {name} | {pct(ms, 50):.0f} | {pct(ms, 90):.0f} | {pct(ms, 99):.0f} | {len(ms)} |"


def build(server, ctx: Path, name: str, *extra) -> float:
    env = dict(os.environ, ARBOR_API_URL=server.url, ARBOR_API_KEY=server.key, XDG_CONFIG_HOME=str(server.base))
    t = time.perf_counter()
    res = subprocess.run(
        [str(arbor_binary()), "template", "build", str(ctx), "--name", name, *extra],
        capture_output=True, text=True, env=env, timeout=900,
    )
    elapsed = (time.perf_counter() - t) * 1000
    if res.returncode != 0:
        raise SystemExit(f"build failed:\n{res.stdout}\n{res.stderr}")
    return elapsed


def dockerfile(marker: str, last: str) -> str:
    # Real work without the network: byte-compiling the standard library, 64 MiB of data, a hashed
    # series (a real build would download packages here, which only makes the cache worth more).
    return f"""FROM base
RUN echo {marker} > /etc/bench-marker
RUN python3 -m compileall -q -j 2 /usr/lib/python3.11 >/dev/null || true
RUN mkdir -p /srv/www && head -c 64M /dev/urandom > /srv/www/blob && echo ok > /srv/www/index.html
RUN seq 1 2000000 | sha256sum > /srv/www/series.sha256
RUN echo {last} > /srv/www/last.txt
"""


def measure(opts, template: str, serve: str, runs: int):
    """(template → first answer, its create, peer → first answer, its create) in ms; 2 warm-ups."""
    snapshot, snapshot_create, cold, cold_create = [], [], [], []
    for i in range(runs + 2):
        t = time.perf_counter()
        sbx = Sandbox.create(template=template, timeout=60, **opts)
        created = time.perf_counter()
        out = sbx.commands.run("curl -sf http://127.0.0.1:8000/index.html")
        done = time.perf_counter()
        assert out.stdout.strip() == "ok", out.stdout
        sbx.kill()
        if i >= 2:
            snapshot.append((done - t) * 1000)
            snapshot_create.append((created - t) * 1000)

        t = time.perf_counter()
        sbx = Sandbox.create(template="bench-app", timeout=60, **opts)
        created = time.perf_counter()
        sbx.commands.run(serve, background=True)
        while sbx.commands.run(f"{READY} && echo up || true").stdout.strip() != "up":
            pass
        done = time.perf_counter()
        sbx.kill()
        if i >= 2:
            cold.append((done - t) * 1000)
            cold_create.append((created - t) * 1000)
    return snapshot, snapshot_create, cold, cold_create


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rebuilds", type=int, default=5)
    args = ap.parse_args()

    server = start_server()
    opts = server.sdk_opts()
    ctx = Path(tempfile.mkdtemp(prefix="arbor-bench-tpl-"))
    try:
        marker = uuid.uuid4().hex
        (ctx / "Dockerfile").write_text(dockerfile(marker, "v1"))
        first = build(server, ctx, "bench-app")
        cached = [build(server, ctx, "bench-app") for _ in range(args.rebuilds)]
        last_changed = []
        for i in range(args.rebuilds):
            (ctx / "Dockerfile").write_text(dockerfile(marker, f"v{i + 2}"))
            last_changed.append(build(server, ctx, "bench-app"))
        (ctx / "Dockerfile").write_text(dockerfile(marker, "v1"))
        with_start = build(server, ctx, "bench-srv", "--start-cmd", SERVE, "--ready-cmd", READY)
        build(server, ctx, "bench-slow", "--start-cmd", SLOW_SERVE, "--ready-cmd", READY)
        results = {}
        for template, serve in (("bench-srv", SERVE), ("bench-slow", SLOW_SERVE)):
            results[template] = measure(opts, template, serve, args.runs)
        print("| measurement | p50 ms | p90 ms | p99 ms | n |")
        print("|---|---|---|---|---|")
        for template, what in (("bench-srv", "http.server"), ("bench-slow", "server with a ~1 s start-up")):
            snapshot, snapshot_create, cold, cold_create = results[template]
            print(row(f"{what}: create from the template (running) → first answer", snapshot))
            print(row("  of which create (restore of the memory snapshot)", snapshot_create))
            print(row(f"{what}: peer, create from the same files, start it, first answer", cold))
            print(row("  of which create (fresh boot)", cold_create))
            print(f"| {what}: ratio p50 template / peer | {pct(snapshot, 50) / pct(cold, 50):.2f} | | | |")
        print("\n| build | ms |\n|---|---|")
        print(f"| first build, 5 RUN steps, uncached | {first:.0f} |")
        print(f"| unchanged rebuild (all cached), p50 of {len(cached)} | {pct(cached, 50):.0f} |")
        print(f"| last step changed, p50 of {len(last_changed)} | {pct(last_changed, 50):.0f} |")
        print(f"| build with start command + memory snapshot (steps cached) | {with_start:.0f} |")
        print(f"\nspeed-up of an unchanged rebuild: {first / pct(cached, 50):.0f}x")
    finally:
        server.teardown()


if __name__ == "__main__":
    main()
