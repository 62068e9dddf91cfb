#!/usr/bin/env python3
"""End-to-end checks of a running arbor-interpreter, parsed with the official
SDK's own stream parser (novita_sandbox.code_interpreter.models.parse_output).

Usage: INTERP=http://127.0.0.1:49999 [TOKEN=...] python e2e.py [check ...]
Needs httpx and novita_sandbox (e.g. /work/main/.venv/bin/python). The
interpreter must run with kernels for python and javascript (deno); bash and
the pandas/matplotlib checks are skipped when their kernels/modules are absent.
"""
import json
import os
import sys
import time

import httpx
from novita_sandbox.code_interpreter.models import Execution, parse_output

URL = os.environ.get("INTERP", "http://127.0.0.1:49999")
HEADERS = {"Content-Type": "application/json"}
if os.environ.get("TOKEN"):
    HEADERS["X-Access-Token"] = os.environ["TOKEN"]


def run(code, language=None, context_id=None, envs=None, timeout=60):
    body = {"code": code, "context_id": context_id, "language": language, "env_vars": envs}
    ex = Execution()
    with httpx.stream("POST", f"{URL}/execute", json=body, headers=HEADERS, timeout=timeout) as r:
        assert r.status_code == 200, (r.status_code, r.read())
        lines = []
        for line in r.iter_lines():
            assert line.strip(), "blank line in the stream"
            lines.append(line)
            parse_output(ex, line)
    assert json.loads(lines[-1])["type"] == "end_of_execution", lines
    ex.raw = lines
    return ex


def post(path, body=None):
    return httpx.post(f"{URL}{path}", json=body, headers=HEADERS, timeout=60)


def check_python():
    assert run("1+1").text == "2"
    ex = run("print('hi'); x = 41")
    assert ex.logs.stdout == ["hi\n"], ex.logs
    assert run("x + 1").text == "42"
    ex = run("1/0")
    assert ex.error.name == "ZeroDivisionError" and "division by zero" in ex.error.value
    assert isinstance(ex.error.traceback, str)
    assert "".join(run("!pwd").logs.stdout).strip()


def check_execution_count():
    a = run("'a'").execution_count
    b = run("'b'", envs={"FOO": "bar"}).execution_count
    assert b == a + 1, (a, b)


def check_javascript():
    assert run("console.log('Hello, World!')", language="js").logs.stdout == ["Hello, World!\n"]
    assert run("const add = (x, y) => x + y; add(1, 2)", language="javascript").text == "3"
    assert run("await Promise.resolve('Hello World!')", language="js").text == "Hello World!"
    ex = run("import { readFileSync } from 'node:fs'\nconsole.log(typeof readFileSync)", language="js")
    assert ex.logs.stdout == ["function\n"], ex.logs
    ex = run("throw new Error('boom')", language="js")
    assert ex.error.name == "Error" and ex.error.value == "boom", ex.error


def check_typescript():
    code = "function subtract(x: number, y: number): number { return x - y; }\nsubtract(1, 2);"
    assert run(code, language="ts").text == "-1"
    ex = run("const message: string = 'Hello, World!'; console.log(message)", language="typescript")
    assert ex.logs.stdout == ["Hello, World!\n"]


def check_env_vars():
    assert run("import os; os.environ.get('FOO')", envs={"FOO": "bar"}).text == "'bar'"
    assert run("os.environ.get('FOO', 'default')").text == "'default'"
    assert run("process.env.FOO", language="js", envs={"FOO": "bar"}).text.strip() == "bar"
    assert run("process.env.FOO || 'default'", language="js").text.strip() == "default"


def check_bash():
    ex = run("echo $FOO", language="bash", envs={"FOO": "bar"})
    assert ex.logs.stdout[0] == "bar\n", ex.logs
    ex = run("echo ${FOO:-default}", language="bash")
    assert ex.logs.stdout[0] == "default\n", ex.logs


def check_rich():
    ex = run("import pandas as pd\npd.DataFrame({'a': [1, 2, 3]})")
    assert ex.results[0].html and len(ex.results[0].data["a"]) == 3, ex.results
    ex = run("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
    assert ex.results[0].png and ex.results[0].chart.type == "line", ex.results
    ex = run("from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))")
    assert ex.results[0].html == "<b>x</b>" and not ex.results[0].is_main_result


def check_contexts():
    r = post("/contexts", {"language": "python", "cwd": "/tmp"})
    assert r.status_code == 200, r.text
    ctx = r.json()
    assert set(ctx) == {"id", "language", "cwd"} and ctx["cwd"] == "/tmp"
    assert ctx["id"] in [c["id"] for c in httpx.get(f"{URL}/contexts", headers=HEADERS).json()]
    assert run("import os; os.getcwd()", context_id=ctx["id"]).text == "'/tmp'"
    run("y = 1", context_id=ctx["id"])
    assert run("y = 1; y").text == "1"  # default context unaffected by ...
    assert post(f"/contexts/{ctx['id']}/restart").is_success
    ex = run("y", context_id=ctx["id"])
    assert ex.error and ex.error.value == "name 'y' is not defined", ex.error
    assert run("import os; os.getcwd()", context_id=ctx["id"]).text == "'/tmp'"
    assert httpx.delete(f"{URL}/contexts/{ctx['id']}", headers=HEADERS).is_success
    assert ctx["id"] not in [c["id"] for c in httpx.get(f"{URL}/contexts", headers=HEADERS).json()]
    js = post("/contexts", {"language": "js", "cwd": "/tmp"}).json()
    assert js["language"] == "javascript"
    assert run("Deno.cwd()", context_id=js["id"]).text == "/tmp"
    httpx.delete(f"{URL}/contexts/{js['id']}", headers=HEADERS)


def check_errors():
    body = {"code": "1", "context_id": "nope", "language": None, "env_vars": None}
    r = httpx.post(f"{URL}/execute", json=body, headers=HEADERS)
    assert r.status_code == 404 and "nope" in r.text, r.text
    body = {"code": "1", "context_id": "x", "language": "python", "env_vars": None}
    assert httpx.post(f"{URL}/execute", json=body, headers=HEADERS).status_code == 400
    body = {"code": "1", "context_id": None, "language": "r", "env_vars": None}
    r = httpx.post(f"{URL}/execute", json=body, headers=HEADERS)
    assert r.status_code == 404 and "available: python" in r.text, r.text


def check_interrupt():
    for lang, spin, probe, want in [
        ("python", "z = 5\nwhile True: pass", "z", "5"),
        ("js", "globalThis.z = 5; while (true) {}", "globalThis.z", "5"),
    ]:
        try:
            run(spin, language=lang, timeout=1.5)
            raise AssertionError("did not time out")
        except httpx.ReadTimeout:
            pass
        t = time.time()
        assert run(probe, language=lang).text == want
        print(f"  {lang}: usable {time.time() - t:.2f}s after the client timed out")


def check_kernel_death():
    body = {"code": "import os; os._exit(1)", "context_id": None, "language": None, "env_vars": None}
    with httpx.stream("POST", f"{URL}/execute", json=body, headers=HEADERS, timeout=60) as r:
        lines = [json.loads(l)["type"] for l in r.iter_lines()]
    assert lines[-1] == "unexpected_end_of_execution", lines
    assert run("1+1").text == "2"  # a fresh kernel


def check_restored():
    """After a CRIU restore: state from before the dump (`before = 123` in
    python, `globalThis.before = 123` in js) is still there, print works."""
    ex = run("print('after'); before + 1")
    assert ex.logs.stdout == ["after\n"] and ex.text == "124", ex.raw
    ex = run("console.log('after'); globalThis.before + 1", language="js")
    assert ex.logs.stdout == ["after\n"] and ex.text == "124", ex.raw


def check_restored_runs(n=20):
    """After a CRIU restore: n runs per language, each with its output complete."""
    for i in range(n):
        ex = run(f"print('p{i}'); before + {i}")
        assert ex.logs.stdout == [f"p{i}\n"] and ex.text == str(123 + i), ex.raw
        ex = run(f"console.log('j{i}'); globalThis.before + {i}", language="js")
        assert ex.logs.stdout == [f"j{i}\n"] and ex.text == str(123 + i), ex.raw


def prepare_restore():
    run("before = 123")
    run("globalThis.before = 123", language="js")


CHECKS = [check_python, check_execution_count, check_javascript, check_typescript, check_env_vars,
          check_bash, check_rich, check_contexts, check_errors, check_interrupt, check_kernel_death]

if __name__ == "__main__":
    names = sys.argv[1:]
    todo = [globals()[n] for n in names] if names else CHECKS
    failed = 0
    for check in todo:
        try:
            check()
            print(f"ok   {check.__name__}")
        except Exception as e:  # noqa: BLE001 - report every check
            failed += 1
            import traceback

            print(f"FAIL {check.__name__}: {e!r}")
            traceback.print_exc()
    sys.exit(1 if failed else 0)
