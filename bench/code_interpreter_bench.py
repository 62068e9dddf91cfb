"""Benchmark of the code interpreter: time to the first result of `run_code("1+1")` through the
official `novita_sandbox.code_interpreter` SDK, the way users reach it (TLS with the generated CA,
names from the built-in DNS, `https://49999-<id>.<domain>`).

  * new sandbox: `Sandbox.create()` of `code-interpreter-v1` (a restore of the node's memory snapshot
    with the Python kernel running), then the first `run_code("1+1")` (target <= 100 ms), both
    together, and the first JavaScript cell (its kernel starts on first use);
  * warm sandbox: `run_code("1+1")` again and again, Python and JavaScript (target <= 10 ms);
  * peer: the same `1+1` sent by Jupyter's own client (`jupyter_client`, the template's) straight to
    an ipykernel in the same sandbox: the kernel's own round trip, without Arbor's proxy, TLS and
    interpreter in between.

    .venv/bin/python bench/code_interpreter_bench.py [--new 20] [--warm 200]

Run as root after `scripts/setup.sh --no-start`. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))

from server_harness import run_public_client, start_public_server  # noqa: E402

CLIENT = r'''
import json, sys, time
from novita_sandbox.code_interpreter import Sandbox
new_runs, warm_runs = int(sys.argv[1]), int(sys.argv[2])
res = {"create": [], "first": [], "new_total": [], "first_js": [], "warm_py": [], "warm_js": [], "peer": []}

def first_result(sbx, code, **kw):
    """ms until the first result line reached the client (on_result), and the text."""
    t = time.perf_counter()
    seen = []
    e = sbx.run_code(code, on_result=lambda r: seen.append(time.perf_counter()), **kw)
    assert e.text == "2", (e.text, e.error)
    return (seen[0] - t) * 1000

# The first create of a server takes the node's memory snapshot of the template: not measured.
Sandbox.create(timeout=60).kill()
for _ in range(new_runs):
    t = time.perf_counter()
    sbx = Sandbox.create(timeout=60)
    created = (time.perf_counter() - t) * 1000
    first = first_result(sbx, "1+1")
    res["create"].append(created)
    res["first"].append(first)
    res["new_total"].append(created + first)
    # JavaScript's kernel is not in the snapshot (Deno holds ~180 MB): its first cell starts it.
    res["first_js"].append(first_result(sbx, "1+1", language="js"))
    sbx.kill()

sbx = Sandbox.create(timeout=300)
try:
    for _ in range(5):
        first_result(sbx, "1+1")
        first_result(sbx, "1+1", language="js")
    for _ in range(warm_runs):
        res["warm_py"].append(first_result(sbx, "1+1"))
    for _ in range(warm_runs):
        res["warm_js"].append(first_result(sbx, "1+1", language="js"))
    peer = sbx.commands.run(
        "python3 - <<'EOF'\n"
        "import json, time\n"
        "from jupyter_client.manager import start_new_kernel\n"
        "km, kc = start_new_kernel(kernel_name='python3')\n"
        "def run():\n"
        "    t = time.perf_counter(); msg_id = kc.execute('1+1')\n"
        "    while True:\n"
        "        m = kc.get_iopub_msg(timeout=10)\n"
        "        if m['parent_header'].get('msg_id') == msg_id and m['msg_type'] == 'execute_result':\n"
        "            return (time.perf_counter() - t) * 1000\n"
        f"for _ in range(5): run()\n"
        f"print(json.dumps([run() for _ in range({warm_runs})]))\n"
        "kc.stop_channels(); km.shutdown_kernel(now=True)\n"
        "EOF",
        timeout=120,
    )
    res["peer"] = json.loads(peer.stdout.strip().splitlines()[-1])
finally:
    sbx.kill()
print("RESULT " + json.dumps(res))
'''


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=20)
    ap.add_argument("--warm", type=int, default=200)
    args = ap.parse_args()
    server = start_public_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "client.py").write_text(CLIENT)
            argv = [sys.executable, str(Path(tmp) / "client.py"), str(args.new), str(args.warm)]
            done = run_public_client(server, argv, Path(tmp), timeout=1800)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                sys.exit(f"the client failed:\n{done.stdout}\n{done.stderr}")
            res = json.loads(lines[-1][7:])
    finally:
        server.teardown()
    rows = [
        ("new sandbox: `Sandbox.create()` (restore with the Python kernel running)", "create"),
        ("new sandbox: first `run_code(\"1+1\")` → first result", "first"),
        ("new sandbox: create + first result", "new_total"),
        ("new sandbox: first `run_code(\"1+1\", language=\"js\")` (starts Deno's kernel)", "first_js"),
        ("warm: `run_code(\"1+1\")` Python → first result", "warm_py"),
        ("warm: `run_code(\"1+1\", language=\"js\")` → first result", "warm_js"),
        ("peer: `jupyter_client` → ipykernel in the sandbox, `1+1`", "peer"),
    ]
    print("| measurement | p50 ms | p90 ms | p99 ms | runs |")
    print("|---|---|---|---|---|")
    for name, key in rows:
        v = res[key]
        print(f"| {name} | {pct(v, 50):.1f} | {pct(v, 90):.1f} | {pct(v, 99):.1f} | {len(v)} |")
    print()
    print(f"warm Python vs peer (p50): {pct(res['warm_py'], 50) / pct(res['peer'], 50):.2f}×")


if __name__ == "__main__":
    main()
