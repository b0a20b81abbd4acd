"""The API against hostile clients, on a real `scadawatch run` process on loopback: request
bodies of any size are refused before they are read, with or without a token, and the
server's memory stays where it was (its RSS, read from /proc); every answer carries the
browser security headers. Bounds of the request models and suppression names are in
tests/api/test_alarm_api.py; the page under its Content-Security-Policy in
tests/system/test_page.py.
"""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support.harness import RUN_LIMIT

from api.security.middleware import BODY_LIMIT, BODY_LIMITS, POLICY
from api.tokens import TokenStore
from scadawatch.ports import free_port

MIB = 1 << 20
PIECE = b"a" * (64 << 10)


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    port: int
    token: str  # an operator's: it may acknowledge alarms
    base_rss: int

    def peak_rss(self) -> int:
        """The process's peak resident set so far (VmHWM), bytes."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines()
                   if line.startswith("VmHWM:"))
        return int(kib) * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`scadawatch run` on a site with one point and no device: the API of the all-in-one
    process a field gateway runs."""
    folder = tmp_path_factory.mktemp("limits")
    port = free_port()
    config = folder / "site.toml"
    config.write_text(f'[site]\nname = "limits"\ndata_dir = "data"\n\n[api]\nport = {port}\n\n'
                      '[[points]]\ntag = "t1"\nzone = "z1"\n')
    _, token = TokenStore(folder / "data").create("operator")
    with (folder / "run.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "scadawatch", "run", "--config",
                                 str(config)], stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + RUN_LIMIT
        while True:
            assert proc.poll() is None, (folder / "run.log").read_text()
            assert time.monotonic() < deadline, "the API did not start"
            try:
                httpx.get(f"{url}/api/v1/health", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        running = Server(proc, url, port, token, 0)
        running.base_rss = running.peak_rss()
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=RUN_LIMIT)


def post_until_answered(port: int, path: str, size: int, *, token: str | None,
                        chunked: bool, start: bytes = b"") -> tuple[int, int]:
    """POST a body of `size` bytes (`start`, then filler), declared by Content-Length or sent
    in chunks, 64 KiB at a time for as long as the server has not answered: (the answer's
    status, 0 if the connection closed without one; bytes sent by then)."""
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
            "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"]
    if token is not None:
        head.append(f"Authorization: Bearer {token}")
    with socket.create_connection(("127.0.0.1", port), timeout=RUN_LIMIT) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sock.setblocking(False)
        body, out, sent = start, b"", 0
        deadline = time.monotonic() + RUN_LIMIT
        while sent < size and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1.0)
            if readable:
                break  # the answer (or the close) came
            if not writable:
                continue
            if not out:
                data = (body or PIECE)[: size - sent]
                body = b""
                out = f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data
            try:
                n = sock.send(out)
            except (BrokenPipeError, ConnectionResetError):
                break
            out, sent = out[n:], sent + n
        sock.settimeout(RUN_LIMIT)
        answer = b""
        try:
            while b"\r\n" not in answer and (got := sock.recv(4096)):
                answer += got
        except ConnectionResetError:
            pass
    return (int(answer.split()[1]) if answer.startswith(b"HTTP/1.1 ") else 0), sent


HUGE = [  # (id, path, body size, with a token, chunked, how the body starts, status)
    ("100MiB-no-token", "/api/v1/alarms/ack", 100 * MIB, False, False, b"", {401, 413}),
    ("100MiB-no-token-chunked", "/api/v1/alarms/ack", 100 * MIB, False, True, b"", {401, 413}),
    ("100MiB-operator", "/api/v1/alarms/ack", 100 * MIB, True, False, b"", {413}),
    ("100MiB-operator-chunked", "/api/v1/alarms/ack", 100 * MIB, True, True, b"", {413}),
    ("100MiB-comment", "/api/v1/alarms/x:y:1/comment", 100 * MIB, True, True, b"", {413}),
    ("100MiB-page", "/index.html", 100 * MIB, False, True, b"", {405, 413}),
    # 10,000 ids of 100 kB each: 1 GB of JSON.
    ("ack-10000-ids-of-100kB", "/api/v1/alarms/ack", 10_000 * 100_004 + 10, True, False,
     b'{"ids": ["', {413}),
]


@pytest.mark.reliability
@pytest.mark.parametrize(("path", "size", "with_token", "chunked", "start", "status"),
                         [case[1:] for case in HUGE], ids=[case[0] for case in HUGE])
def test_a_huge_body_is_refused_before_it_is_read(server: Server, path: str, size: int,
                                                 with_token: bool, chunked: bool,
                                                 start: bytes, status: set[int]) -> None:
    got, sent = post_until_answered(server.port, path, size, chunked=chunked, start=start,
                                    token=server.token if with_token else None)
    assert got in status, f"answered {got} after {sent:,} bytes"
    # What the kernel's socket buffers take before the server answers, not the body.
    assert sent < 16 * MIB, f"{sent:,} bytes sent before the answer"
    growth = server.peak_rss() - server.base_rss
    # docs/development.md's reliability suite has these figures: pytest -s ... -k huge
    print(f"answered {got} after {sent / MIB:.1f} MiB sent; server's peak RSS "
          f"{server.peak_rss() / MIB:.0f} MiB, +{growth / MIB:.1f} MiB since start")
    assert growth < 32 * MIB, f"peak RSS grew by {growth / MIB:.0f} MiB"


def test_the_body_limits_are_named(server: Server) -> None:
    auth = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=RUN_LIMIT) as http:
        over = http.post("/api/v1/alarms/x:y:1/comment", content=b" " * (BODY_LIMIT + 1),
                         headers={"Content-Type": "application/json"})
        ack_limit = BODY_LIMITS["POST /api/v1/alarms/ack"]
        under = http.post("/api/v1/alarms/ack",  # 1,000 ids of 100 characters: 100 kB
                          json={"ids": [f"{i:0100d}" for i in range(1000)]})
        over_ack = http.post("/api/v1/alarms/ack", content=b" " * (ack_limit + 1),
                             headers={"Content-Type": "application/json"})
    assert over.status_code == 413
    assert over.json()["detail"] == (f"request body: at most {BODY_LIMIT:,} bytes, got "
                                     f"{BODY_LIMIT + 1:,}")
    assert under.status_code == 200 and len(under.json()["skipped"]) == 1000
    assert over_ack.status_code == 413 and f"at most {ack_limit:,} bytes" in over_ack.text


@pytest.mark.parametrize("path", ["/", "/app.js", "/api/v1/health", "/api/v1/points",
                                  "/openapi.json", "/nowhere", "/docs"])
def test_every_answer_carries_the_browser_security_headers(server: Server, path: str) -> None:
    answer = httpx.get(server.url + path, timeout=RUN_LIMIT)
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    # One policy for all: /docs is the package's own Swagger UI, no inline script, no CDN
    # (tests/system/test_page.py renders both under it).
    assert policy == POLICY
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
