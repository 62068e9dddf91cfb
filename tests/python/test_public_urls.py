"""Public URLs of sandbox ports (`<port>-<sandboxID>.<domain>`) through the proxy, and egress control,
with the official Python SDK against a real server: a service started in a sandbox answers at
`get_host(port)`, WebSockets pass, a large download streams without the proxy buffering it; closed
ports, unknown, paused and token-protected sandboxes answer clearly; internet off and CIDR lists
(to test hosts this test creates in network namespaces) hold, also after set_network, a resume and in
clones."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

import httpx
import pytest

from novita_sandbox.core import Sandbox
from server_harness import PUBLIC_DOMAIN, run_public_client, start_public_server

DOMAIN = PUBLIC_DOMAIN


@pytest.fixture(scope="module")
def server():
    """One server for the module, with a TLS listener and the DNS responder: two servers of the
    harness's instance must never run at once (they would share its network table and pool)."""
    srv = start_public_server()
    yield srv
    srv.teardown()


def via_proxy(server, host: str, path: str = "/", **kw) -> httpx.Response:
    """A request to a public URL, sent to the server with that `Host` (no DNS needed)."""
    headers = {"Host": host, **kw.pop("headers", {})}
    return httpx.get(f"{server.url}{path}", headers=headers, timeout=30, **kw)


def serve(sbx: Sandbox, port: int, directory: str = "/tmp") -> None:
    sbx.commands.run(f"cd {directory} && python3 -m http.server {port}", background=True)
    deadline = time.monotonic() + 30
    while sbx.commands.run(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/ || true").stdout != "200":
        assert time.monotonic() < deadline, f"port {port} never answered"
        time.sleep(0.05)


def test_get_host_serves_a_sandbox_port(server):
    sbx = Sandbox.create(timeout=120, **server.sdk_opts())
    try:
        sbx.files.write("/tmp/www/hello.txt", "hello through the proxy\n")
        serve(sbx, 8000, "/tmp/www")
        host = sbx.get_host(8000)
        assert host == f"8000-{sbx.sandbox_id}.{DOMAIN}:{server.tls_port}", host
        listing = via_proxy(server, host)
        assert listing.status_code == 200 and "hello.txt" in listing.text
        assert via_proxy(server, host, "/hello.txt").text == "hello through the proxy\n"
        # The API's own paths mean the sandbox's under its host.
        assert via_proxy(server, host, "/sandboxes").status_code == 404

        # A port nothing listens on: 502 naming the sandbox and the port (a page for browsers).
        closed = via_proxy(server, sbx.get_host(8001))
        assert closed.status_code == 502 and closed.json()["code"] == 502
        assert sbx.sandbox_id in closed.json()["message"] and "8001" in closed.json()["message"]
        page = via_proxy(server, sbx.get_host(8001), headers={"Accept": "text/html"})
        assert page.status_code == 502 and page.headers["content-type"].startswith("text/html")
    finally:
        sbx.kill()
    # Unknown (or killed) sandbox: 404.
    gone = via_proxy(server, sbx.get_host(8000))
    assert gone.status_code == 404 and gone.json()["code"] == 404


WS_ECHO = r'''
import base64, hashlib, socket, struct
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8765)); s.listen(5)
while True:
    c, _ = s.accept(); req = b""
    while b"\r\n\r\n" not in req: req += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
    acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    while True:
        h = c.recv(2)
        if len(h) < 2: break
        n = h[1] & 127
        if n == 126: n = struct.unpack(">H", c.recv(2))[0]
        mask = c.recv(4); data = b""
        while len(data) < n: data += c.recv(n - len(data))
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        if h[0] & 15 == 8: break
        out = b"echo:" + data
        c.sendall(bytes([0x81, len(out)]) + out if len(out) < 126 else bytes([0x81, 126]) + struct.pack(">H", len(out)) + out)
    c.close()
'''


def ws_roundtrip(server, host: str, messages):
    """A minimal WebSocket client (RFC 6455) through the proxy; returns the replies."""
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: " + host.encode() + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    assert accept in head
    replies = []
    for text in messages:
        data, mask = text.encode(), os.urandom(4)
        size = bytes([0x80 | len(data)]) if len(data) < 126 else bytes([0x80 | 126]) + struct.pack(">H", len(data))
        sock.sendall(bytes([0x81]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        h = sock.recv(2)
        n = h[1] & 127
        if n == 126:
            n = struct.unpack(">H", sock.recv(2))[0]
        body = b""
        while len(body) < n:
            body += sock.recv(n - len(body))
        replies.append(body.decode())
    return sock, replies


def test_websocket_echo_and_pause_closes_it(server):
    sbx = Sandbox.create(timeout=120, auto_pause=False, **server.sdk_opts())
    try:
        sbx.files.write("/tmp/ws.py", WS_ECHO)
        sbx.commands.run("python3 /tmp/ws.py", background=True)
        deadline = time.monotonic() + 30
        while sbx.commands.run("ss -ltn | grep -c ':8765 ' || true").stdout.strip() != "1":
            assert time.monotonic() < deadline, "the echo server never listened"
            time.sleep(0.05)
        sock, replies = ws_roundtrip(server, sbx.get_host(8765), ["one", "two" * 50])
        assert replies == ["echo:one", "echo:" + "two" * 50]
        # A pause ends the sandbox's connections; after the resume the URL works again.
        sbx.beta_pause()
        sock.settimeout(10)
        assert sock.recv(10) == b"", "the tunnel stays open across a pause"
        sock.close()
        paused = via_proxy(server, sbx.get_host(8765))
        assert paused.status_code == 409 and "paused" in paused.json()["message"]
        sbx.connect()
        sock, replies = ws_roundtrip(server, sbx.get_host(8765), ["after resume"])
        assert replies == ["echo:after resume"]
        sock.close()
    finally:
        sbx.kill()


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_large_download_streams_without_buffering(server):
    sbx = Sandbox.create(timeout=120, **server.sdk_opts())
    try:
        sbx.commands.run("mkdir -p /tmp/big && head -c 512M /dev/zero > /tmp/big/blob", user="root")
        serve(sbx, 8000, "/tmp/big")
        before = rss_kib(server.proc.pid)
        peak, total = before, 0
        port = int(server.url.rsplit(":", 1)[1])
        with httpx.stream("GET", f"http://127.0.0.1:{port}/blob", headers={"Host": sbx.get_host(8000)}, timeout=60) as r:
            assert r.status_code == 200
            for i, chunk in enumerate(r.iter_raw(1 << 20)):
                total += len(chunk)
                if i % 32 == 0:
                    peak = max(peak, rss_kib(server.proc.pid))
        assert total == 512 << 20
        assert peak - before < 64 * 1024, f"the server grew by {(peak - before) >> 10} MiB while streaming 512 MiB"
    finally:
        sbx.kill()


def test_traffic_token_when_public_traffic_is_off(server):
    sbx = Sandbox.create(timeout=120, network={"allow_public_traffic": False}, **server.sdk_opts())
    try:
        token = sbx.traffic_access_token
        assert token
        serve(sbx, 8000)
        host = sbx.get_host(8000)
        refused = via_proxy(server, host)
        assert refused.status_code == 403 and "traffic access token" in refused.json()["message"]
        assert via_proxy(server, host, headers={"E2B-Traffic-Access-Token": "wrong"}).status_code == 403
        assert via_proxy(server, host, headers={"E2B-Traffic-Access-Token": token}).status_code == 200
        # envd's own URL is guarded by its access token instead (the SDK sends it).
        assert sbx.commands.run("echo ok").stdout == "ok\n"
    finally:
        sbx.kill()


def test_paused_sandbox_with_auto_resume_is_resumed_by_its_url(server):
    sbx = Sandbox.create(timeout=120, metadata={"auto_resume": "true"}, **server.sdk_opts())
    try:
        sbx.files.write("/tmp/www/index.html", "resumed\n")
        serve(sbx, 8000, "/tmp/www")
        sbx.beta_pause()
        # The request is held while the sandbox resumes, then answered; http.server kept running.
        assert via_proxy(server, sbx.get_host(8000)).text == "resumed\n"
    finally:
        sbx.kill()


# ---- egress: test hosts in network namespaces of this test -------------------------------------------

NS = "arbtest-inet"
# Not the harness's sandbox veth prefix (`tst`): the sandbox rules would take these for sandboxes'.
HOST_IF, NS_IF = "xinet0", "xinet1"
NET_HOST, NET_NS = "198.51.100.1", "198.51.100.2"
NET_OTHER = "198.51.100.3"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def test_hosts():
    """Two addresses of a fake internet host in a namespace of its own, serving HTTP on port 80."""
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
    sh("ip", "link", "set", NS_IF, "netns", NS)
    sh("ip", "addr", "add", f"{NET_HOST}/24", "dev", HOST_IF)
    sh("ip", "link", "set", HOST_IF, "up")
    for addr in (NET_NS, NET_OTHER):
        sh("ip", "-n", NS, "addr", "add", f"{addr}/24", "dev", NS_IF)
    sh("ip", "-n", NS, "link", "set", NS_IF, "up")
    sh("ip", "-n", NS, "link", "set", "lo", "up")
    sh("ip", "-n", NS, "route", "add", "default", "via", NET_HOST)
    docroot = tempfile.mkdtemp(prefix="arbor-inet-")
    web = subprocess.Popen(
        ["ip", "netns", "exec", NS, "python3", "-m", "http.server", "80", "--bind", "0.0.0.0", "--directory", docroot],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if subprocess.run(["curl", "-sf", "-m", "1", f"http://{NET_NS}/"], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the test host never answered the host itself")
    yield
    web.kill()
    web.wait()
    os.rmdir(docroot)
    subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def reaches(sbx: Sandbox, addr: str) -> bool:
    """Whether the sandbox gets an HTTP answer from `addr` (three 1 s tries: a fresh path may drop the
    first packets)."""
    cmd = f"for i in 1 2 3; do curl -s -m 1 -o /dev/null http://{addr}/ && echo yes && exit 0; done; echo no"
    return sbx.commands.run(cmd).stdout.strip() == "yes"


def test_egress_internet_off_and_cidr_lists(server, test_hosts):
    opts = server.sdk_opts()
    online = Sandbox.create(timeout=120, **opts)
    offline = Sandbox.create(timeout=120, allow_internet_access=False, **opts)
    denied = Sandbox.create(timeout=120, network={"deny_out": [f"{NET_NS}/32"]}, **opts)
    clones = []
    try:
        assert reaches(online, NET_NS) and reaches(online, NET_OTHER)
        assert not reaches(offline, NET_NS)
        assert not reaches(denied, NET_NS) and reaches(denied, NET_OTHER)

        # set_network takes effect at once ...
        online.set_network(deny_out=[f"{NET_OTHER}/32"])
        assert reaches(online, NET_NS) and not reaches(online, NET_OTHER)
        # E2B's allow-list: all denied but what allow_out names (allow wins over deny).
        offline.set_network(allow_out=[f"{NET_OTHER}/32"], deny_out=["0.0.0.0/0"])
        assert reaches(offline, NET_OTHER) and not reaches(offline, NET_NS)
        # ... and holds after a pause and resume ...
        online.beta_pause()
        online.connect()
        assert reaches(online, NET_NS) and not reaches(online, NET_OTHER)
        # ... and in clones.
        clone = Sandbox.clone(denied.sandbox_id, 1, **opts)[0]
        clones.append(clone)
        assert not reaches(clone, NET_NS) and reaches(clone, NET_OTHER)
    finally:
        for s in (online, offline, denied, *clones):
            s.kill()


# ---- TLS with the generated CA and the built-in DNS, the SDK unmodified -----------------------------

CLIENT = r'''
import time, httpx
from novita_sandbox.core import Sandbox
# Only NOVITA_DOMAIN and NOVITA_API_KEY are set: the API is https://api.<domain>, envd is reached at
# https://49983-<id>.<domain>, as the SDK does by default.
sbx = Sandbox.create(timeout=120)
try:
    # Commands run in the sandbox (whose PID 1 is envd), not in a daemon elsewhere.
    assert "envd" in sbx.commands.run("cat /proc/1/comm").stdout, "commands did not run in the sandbox"
    sbx.files.write("/tmp/www/index.html", "over tls\n")
    sbx.commands.run("cd /tmp/www && python3 -m http.server 8000", background=True)
    ready = "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/index.html || true"
    deadline = time.monotonic() + 30
    while sbx.commands.run(ready).stdout != "200":
        assert time.monotonic() < deadline, "http.server never answered inside the sandbox"
        time.sleep(0.05)
    url = f"https://{sbx.get_host(8000)}/index.html"
    r = httpx.get(url, timeout=10)
    print(sbx.get_host(8000))
    print(r.http_version, r.text.strip())
    with httpx.Client(http2=True) as h2:
        print(h2.get(url).http_version)
finally:
    sbx.kill()
'''


def test_sdk_over_tls_with_the_generated_ca_and_the_builtin_dns(server, tmp_path):
    ca = server.base / "data" / "tls" / "ca.pem"
    assert ca.is_file()
    assert any(str(ca) in line for line in server.output), "the banner names the CA"
    (tmp_path / "client.py").write_text(CLIENT)
    out = run_public_client(server, [sys.executable, str(tmp_path / "client.py")], tmp_path, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    host, http1, http2 = out.stdout.strip().splitlines()
    assert host.startswith("8000-") and host.endswith(f".{DOMAIN}:{server.tls_port}"), host
    assert http1 == "HTTP/1.1 over tls", out.stdout
    assert http2 == "HTTP/2", out.stdout
