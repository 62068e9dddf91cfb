"""A minimal Connect v1 (JSON codec) client on httpx, to check framing the SDKs take for granted and to
time envd without SDK overhead (bench/)."""

from __future__ import annotations

import json
import struct
from typing import List, Tuple

import httpx

FLAG_END = 0x02


def envelope(msg: dict, flags: int = 0) -> bytes:
    payload = json.dumps(msg).encode()
    return struct.pack(">BI", flags, len(payload)) + payload


def parse_frames(body: bytes) -> List[Tuple[int, dict]]:
    """Splits a server-stream body into (flags, message) pairs; raises on a torn frame."""
    frames, i = [], 0
    while i < len(body):
        if len(body) - i < 5:
            raise ValueError(f"torn envelope header at {i}")
        flags, n = struct.unpack(">BI", body[i : i + 5])
        if len(body) - i - 5 < n:
            raise ValueError(f"torn envelope payload at {i}")
        frames.append((flags, json.loads(body[i + 5 : i + 5 + n])))
        i += 5 + n
    return frames


STREAM_HEADERS = {
    "Content-Type": "application/connect+json",
    "Connect-Protocol-Version": "1",
}
UNARY_HEADERS = {"Content-Type": "application/json", "Connect-Protocol-Version": "1"}


def start(client: httpx.Client, cmd: str, headers: dict | None = None) -> httpx.Response:
    """One `process.Process/Start` of `/bin/bash -l -c cmd`, read to the end."""
    body = envelope({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]}, "stdin": False})
    return client.post("/process.Process/Start", content=body, headers={**STREAM_HEADERS, **(headers or {})})


def start_direct(client: httpx.Client, argv: List[str]) -> httpx.Response:
    """Start without a shell: the daemon's own cost, not bash's."""
    body = envelope({"process": {"cmd": argv[0], "args": argv[1:]}, "stdin": False})
    return client.post("/process.Process/Start", content=body, headers=STREAM_HEADERS)


def unary(client: httpx.Client, path: str, msg: dict, headers: dict | None = None) -> httpx.Response:
    return client.post(path, content=json.dumps(msg), headers={**UNARY_HEADERS, **(headers or {})})
