"""Connect framing and HTTP details checked on the wire, below the SDKs (protocol notes §4.2, §4.5)."""

from __future__ import annotations

import base64

import httpx
import pytest

from connect_raw import FLAG_END, STREAM_HEADERS, envelope, parse_frames, start, unary


@pytest.fixture
def client(envd):
    with httpx.Client(base_url=envd.url, timeout=15) as c:
        yield c


def test_stream_framing(client):
    r = start(client, "echo framed; exit 2")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/connect+json"
    frames = parse_frames(r.content)
    flags = [f for f, _ in frames]
    assert flags[-1] == FLAG_END and FLAG_END not in flags[:-1], flags
    assert frames[-1][1] == {} or "error" not in frames[-1][1], frames[-1]
    events = [m["event"] for f, m in frames[:-1]]
    assert "start" in events[0] and events[0]["start"]["pid"] > 0
    out = b"".join(base64.b64decode(e["data"]["stdout"]) for e in events if "data" in e and "stdout" in e["data"])
    assert out == b"framed\n"
    end = events[-1]["end"]
    assert end["exitCode"] == 2
    assert end["exited"] is True
    assert end["status"] == "exit status 2"


def test_killed_status_string(client):
    r = start(client, "kill -9 $$")
    end = parse_frames(r.content)[-2][1]["event"]["end"]
    assert end.get("exited", False) is False
    assert end["status"] == "signal: killed"


def test_stream_errors_are_in_the_end_frame(client):
    body = envelope({"process": {"cmd": "/bin/bash", "args": ["-c", "true"], "cwd": "/no/such/dir"}})
    r = client.post("/process.Process/Start", content=body, headers=STREAM_HEADERS)
    # JS ignores the body of a non-200 stream response, so errors go in an end-stream frame.
    assert r.status_code == 200
    frames = parse_frames(r.content)
    assert len(frames) == 1 and frames[0][0] == FLAG_END
    assert frames[0][1]["error"]["code"] in {"not_found", "invalid_argument"}
    assert frames[0][1]["error"]["message"]


def test_deadline_ends_stream_with_deadline_exceeded(client):
    r = start(client, "sleep 30", headers={"Connect-Timeout-Ms": "300"})
    frames = parse_frames(r.content)
    assert frames[-1][0] == FLAG_END
    assert frames[-1][1]["error"]["code"] == "deadline_exceeded"


def test_keepalive_events(client):
    r = start(client, "sleep 2.5", headers={"Keepalive-Ping-Interval": "1"})
    events = [m["event"] for f, m in parse_frames(r.content)[:-1]]
    assert sum(1 for e in events if "keepalive" in e) >= 1, events


def test_unary_content_type_and_body(client):
    r = unary(client, "/process.Process/List", {})
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == "application/json"  # JS insists
    assert isinstance(r.json(), dict)


def test_unary_error_shape(client):
    r = unary(client, "/process.Process/SendSignal", {"process": {"pid": 99999999}, "signal": "SIGNAL_SIGKILL"})
    assert r.status_code == 404
    body = r.json()
    assert body["code"] == "not_found"
    assert isinstance(body["message"], str) and body["message"]


def test_unary_accepts_snake_case_and_enum_numbers(client):
    r = unary(client, "/process.Process/SendSignal", {"process": {"pid": 99999999}, "signal": 9})
    assert r.json()["code"] == "not_found"


def test_bad_json_is_invalid_argument(client):
    r = client.post("/process.Process/List", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_argument"


def test_unknown_method(client):
    r = unary(client, "/process.Process/NoSuchMethod", {})
    assert r.status_code == 404
    assert r.json()["code"] in {"unimplemented", "not_found"}


def test_unknown_route_is_json_404(client):
    r = client.get("/no/such/endpoint")
    assert r.status_code == 404
    body = r.json()
    assert body["code"] == 404 and body["message"]


def test_health_is_204(client):
    r = client.get("/health")
    assert r.status_code == 204


def test_files_error_body_is_json(client, work):
    r = client.get("/files", params={"path": str(work / "missing")})
    assert r.status_code == 404
    body = r.json()
    assert body["code"] == 404 and body["message"]


def test_files_upload_response_keys_exactly(client, work):
    r = client.post("/files", params={"path": str(work / "k.txt")}, files={"file": (str(work / "k.txt"), b"k")})
    assert r.status_code == 200
    # Python builds WriteInfo(**item): any extra key is a TypeError in the SDK.
    assert r.json() == [{"name": "k.txt", "type": "file", "path": str(work / "k.txt")}]


def test_rpc_auth_error_is_a_connect_error(token_envd):
    """A rejected token on a Connect route is a Connect error (string code), not the /files JSON shape."""
    with httpx.Client(base_url=token_envd.url, timeout=15) as c:
        r = unary(c, "/process.Process/List", {}, headers={"X-Access-Token": "wrong"})
        assert r.status_code == 401
        assert r.json()["code"] == "unauthenticated"
        r = start(c, "true", headers={"X-Access-Token": "wrong"})
        # Streams: HTTP 200 + end-stream error (JS reads no body of a non-200 stream response), or a
        # Connect error body; either way the code must be the Connect name.
        if r.status_code == 200:
            frames = parse_frames(r.content)
            assert frames[-1][1]["error"]["code"] == "unauthenticated"
        else:
            assert r.status_code == 401
            assert r.json()["code"] == "unauthenticated"
