"""Timeouts of the server's listeners (issue 14, item 7), against a real server with its TLS listener:
clients that send nothing, a partial request line, headers a byte at a time, no or part of a TLS
ClientHello, or nothing after the handshake are cut at the default header (10 s) and handshake (10 s)
timeouts, also fifty of them at once; an idle keep-alive connection is closed after the idle timeout
(3 s here, `--http-idle-timeout`); and an SDK command that is silent for longer than all of them
(`sleep 15; echo done`) still completes, over plain HTTP and over TLS with the SDK's defaults."""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
from typing import Callable, Dict, List

import pytest

from novita_sandbox.core import Sandbox
from server_harness import PUBLIC_DOMAIN, Server, run_public_client, start_public_server

HEADER_TIMEOUT = 10.0  # the server's default, --http-header-timeout
HANDSHAKE_TIMEOUT = 10.0  # the server's default, --tls-handshake-timeout
IDLE_TIMEOUT = 3  # --http-idle-timeout, small so the test is quick
# A loaded 2-core machine may be late by this much.
MARGIN = 3.0


@pytest.fixture(scope="module")
def server():
    srv = start_public_server(http_idle_timeout=IDLE_TIMEOUT)
    yield srv
    srv.teardown()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def tls_context(server: Server) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.base / "data" / "tls" / "ca.pem"))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def seconds_until_closed(sock, started: float, trickle: bool = False, limit: float = 40) -> float:
    """Waits until the server closes `sock` (EOF, reset, or a failed write); with `trickle`, writes one
    header byte a second meanwhile, as a slowloris does. Returns the seconds since `started`."""
    sock.settimeout(0.2)
    next_byte = time.monotonic() + 1
    while time.monotonic() - started < limit:
        try:
            if trickle and time.monotonic() >= next_byte:
                sock.sendall(b"x")
                next_byte += 1
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except (OSError, ssl.SSLError):
            return time.monotonic() - started
    raise AssertionError(f"the server kept the connection open for {limit} s")


def test_slow_and_silent_clients_are_cut_at_the_default_timeouts(server: Server):
    plain, tls = server.port, server.tls_port  # type: ignore[attr-defined]

    def nothing(port: int) -> Callable[[], float]:
        def run() -> float:
            started = time.monotonic()
            return seconds_until_closed(connect(port), started)
        return run

    def partial_request_line() -> float:
        sock, started = connect(plain), time.monotonic()
        sock.sendall(b"GET /health HT")
        return seconds_until_closed(sock, started)

    def trickled_headers() -> float:
        sock, started = connect(plain), time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        return seconds_until_closed(sock, started, trickle=True)

    def partial_client_hello() -> float:
        sock, started = connect(tls), time.monotonic()
        sock.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))  # a record header and one byte of 512
        return seconds_until_closed(sock, started)

    def no_request_after_the_handshake() -> float:
        raw = connect(tls)
        sock = tls_context(server).wrap_socket(raw, server_hostname=f"x.{PUBLIC_DOMAIN}")
        started = time.monotonic()
        return seconds_until_closed(sock, started)

    def trickled_headers_over_tls() -> float:
        sock = tls_context(server).wrap_socket(connect(tls), server_hostname=f"x.{PUBLIC_DOMAIN}")
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        return seconds_until_closed(sock, started, trickle=True)

    cases: Dict[str, tuple] = {
        "plain, nothing sent": (nothing(plain), HEADER_TIMEOUT),
        "plain, partial request line": (partial_request_line, HEADER_TIMEOUT),
        "plain, headers a byte a second": (trickled_headers, HEADER_TIMEOUT),
        "tls, no ClientHello": (nothing(tls), HANDSHAKE_TIMEOUT),
        "tls, partial ClientHello": (partial_client_hello, HANDSHAKE_TIMEOUT),
        "tls, no request after the handshake": (no_request_after_the_handshake, HEADER_TIMEOUT),
        "tls, headers a byte a second": (trickled_headers_over_tls, HEADER_TIMEOUT),
    }
    # The assessment's load: fifty slow clients at once, half of them sending nothing.
    for i in range(50):
        cases[f"crowd {i:02d}"] = (trickled_headers if i % 2 else nothing(plain), HEADER_TIMEOUT)

    results: Dict[str, object] = {}

    def run(name: str, fn: Callable[[], float]) -> None:
        try:
            results[name] = fn()
        except BaseException as e:  # reported below, with the case's name
            results[name] = e

    threads = [threading.Thread(target=run, args=(name, fn)) for name, (fn, _) in cases.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, (_, timeout) in cases.items():
        took = results[name]
        assert isinstance(took, float), f"{name}: {took!r}"
        if not name.startswith("crowd"):
            print(f"{name}: closed after {took:.2f} s (timeout {timeout:.0f} s)")
        # A trickling client notices the close at its next write, up to a second later.
        assert timeout - 0.5 <= took <= timeout + MARGIN, f"{name}: closed after {took:.2f} s"
    crowd = sorted(float(results[n]) for n in cases if n.startswith("crowd"))  # type: ignore[arg-type]
    print(f"50 slow clients: closed after {crowd[0]:.2f} .. {crowd[-1]:.2f} s")

    # The server still serves at once.
    sock = connect(plain)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 401")


def read_response(sock) -> bytes:
    """One whole response with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(4096)
    return head


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(server: Server):
    def idle_close(sock) -> float:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 401")
        started = time.monotonic()
        return seconds_until_closed(sock, started)

    plain = idle_close(connect(server.port))
    tls_sock = tls_context(server).wrap_socket(connect(server.tls_port), server_hostname=f"x.{PUBLIC_DOMAIN}")  # type: ignore[attr-defined]
    tls = idle_close(tls_sock)
    print(f"idle keep-alive closed after {plain:.2f} s (plain), {tls:.2f} s (tls); timeout {IDLE_TIMEOUT} s")
    for took in (plain, tls):
        assert IDLE_TIMEOUT - 0.5 <= took <= IDLE_TIMEOUT + MARGIN, took


QUIET_CLIENT = r'''
from novita_sandbox.core import Sandbox
sbx = Sandbox.create(timeout=120)
try:
    print(sbx.commands.run("sleep 15; echo done", timeout=60).stdout.strip())
finally:
    sbx.kill()
'''


def test_a_command_silent_for_longer_than_the_timeouts_completes(server: Server, tmp_path):
    """`sleep 15` says nothing for longer than the header (10 s) and idle (3 s) timeouts: the stream is a
    request in flight, so neither applies. Over plain HTTP (NOVITA_SANDBOX_URL) and, at the same time,
    over TLS with the SDK's defaults (envd at https://49983-<id>.<domain>)."""
    (tmp_path / "client.py").write_text(QUIET_CLIENT)
    over_tls: List[object] = []
    tls_thread = threading.Thread(
        target=lambda: over_tls.append(run_public_client(server, [sys.executable, str(tmp_path / "client.py")], tmp_path))
    )
    tls_thread.start()
    sbx = Sandbox.create(timeout=120, **server.sdk_opts())
    try:
        started = time.monotonic()
        result = sbx.commands.run("sleep 15; echo done", timeout=60, request_timeout=60)
        assert result.stdout == "done\n" and result.exit_code == 0, result
        assert time.monotonic() - started >= 15
    finally:
        sbx.kill()
    tls_thread.join(timeout=180)
    out = over_tls[0]
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stdout + out.stderr  # type: ignore[attr-defined]
