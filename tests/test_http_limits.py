"""Connection limits of a real `approvalctl serve` process, before any authentication.

Raw sockets play the hostile client: endless header lines, headers that never finish, an
idle kept-alive connection, more connections than the cap. Limits come from the config file
(`http_limits:`), set low so each test is quick; the defaults are in docs/api.md "Limits".
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import env_for, free_port, stop_process, wait_http

pytestmark = pytest.mark.slow


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Serve:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc, self.port = proc, port
        self.url = f"http://127.0.0.1:{port}"
        self.socks: list[socket.socket] = []

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.socks.append(sock)
        return sock


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[callable]:
    procs: list[subprocess.Popen[str]] = []
    servers: list[Serve] = []

    def start(limits: str) -> Serve:
        config = tmp_path / "config.yaml"
        config.write_text("http_limits:\n" + limits)
        env = env_for(tmp_path / "approvals.db")
        env["APPROVALCTL_CONFIG"] = str(config)
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "approvalctl", "serve", "--port",
                                 str(port)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=30, status=200)
        servers.append(Serve(proc, port))
        return servers[-1]

    yield start
    for server in servers:
        for sock in server.socks:
            sock.close()
    for proc in procs:
        stop_process(proc)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as the
    end: the server may close with our unread bytes still queued)."""
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def _read_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_endless_header_lines_are_cut_off_and_memory_stays_bounded(serve) -> None:
    server = serve("  max_header_bytes: 8192\n  header_timeout: 60s\n")
    before = _rss_kib(server.proc.pid)
    socks = [server.connect() for _ in range(4)]
    cut = 0
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    for sock in socks:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(20_000):  # 20 MB per connection if nothing stopped it
                sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            cut += 1
            continue
    assert cut == 4, "the server kept reading header lines past the bound"
    # Memory: well below what 80 MB of buffered headers would have cost.
    assert _rss_kib(server.proc.pid) - before < 20 * 1024
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_oversized_header_block_gets_431_problem(serve) -> None:
    server = serve("  max_header_bytes: 4096\n")
    sock = server.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 5000 + b"\r\n")
    answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"application/problem+json" in answer and b"4096 bytes" in answer
    whole = server.connect()  # a complete block in one packet is bounded too
    whole.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n")
    assert _read_all(whole).startswith(b"HTTP/1.1 431 ")
    fits = server.connect()
    fits.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " +
                 b"b" * 3000 + b"\r\n\r\n")
    assert _read_all(fits).startswith(b"HTTP/1.1 200 ")


def test_too_many_header_fields_get_431(serve) -> None:
    server = serve("  max_headers: 20\n")
    sock = server.connect()
    fields = b"".join(b"X-H%d: v\r\n" % i for i in range(30))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"more than 20 header fields" in answer
    ok = server.connect()  # twenty fields are still fine
    ok.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
               b"".join(b"X-H%d: v\r\n" % i for i in range(15)) + b"\r\n")
    assert _read_all(ok).startswith(b"HTTP/1.1 200 ")


def test_headers_that_never_finish_are_timed_out(serve) -> None:
    server = serve("  header_timeout: 1s\n")
    socks = [server.connect() for _ in range(50)]
    for sock in socks:  # slowloris: a start, then nothing more
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    silent = server.connect()  # connects and never sends a byte
    for sock in socks:
        sock.settimeout(30)
        answer = _read_all(sock)  # returns only when the server closes the connection
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    silent.settimeout(30)
    assert _read_all(silent).startswith(b"HTTP/1.1 408 ")
    # A client trickling a byte at a time does not reset the header clock.
    trickle = server.connect()
    trickle.settimeout(30)
    closed = False
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Trickle: " + b"t" * 40:
        try:
            trickle.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.1)
    assert closed or _read_all(trickle).startswith(b"HTTP/1.1 408 ")
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_idle_keep_alive_connection_is_closed(serve) -> None:
    server = serve("  keep_alive_timeout: 1s\n  header_timeout: 30s\n")
    sock = server.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(30)
    first = _read_response(sock)
    assert first.startswith(b"HTTP/1.1 200 ")
    assert _read_all(sock) == b""  # closed by the server, not by the 30 s timeout above


def test_connections_beyond_the_cap_get_503_and_open_ones_still_work(serve) -> None:
    server = serve("  max_connections: 10\n  header_timeout: 60s\n  keep_alive_timeout: 60s\n")
    held = [server.connect() for _ in range(10)]
    held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _read_response(held[0]).startswith(b"HTTP/1.1 200 ")
    extra = server.connect()
    answer = _read_all(extra)
    assert answer.startswith(b"HTTP/1.1 503 ") and b"10 open connections" in answer
    held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # the open ones still work
    assert _read_response(held[0]).startswith(b"HTTP/1.1 200 ")
    for sock in held:
        sock.close()
    deadline = time.monotonic() + 10
    while True:  # once they are gone, new connections are served again
        try:
            if httpx.get(server.url + "/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)
    metrics = httpx.get(server.url + "/metrics").text
    assert 'approvalctl_http_limit_rejections_total{limit="connections"} 1.0' in metrics


def test_bad_http_limits_stop_serve_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("http_limits:\n  header_timeout: never\n")
    env = env_for(tmp_path / "approvals.db")
    env["APPROVALCTL_CONFIG"] = str(config)
    result = subprocess.run([sys.executable, "-m", "approvalctl", "serve", "--port", "0"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "http_limits.header_timeout" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_raises_its_open_file_limit_to_hold_the_connection_cap(tmp_path: Path) -> None:
    """With the usual soft limit of 1024 files, accept() would fail long before a cap of
    10,000 connections; serve raises its soft limit (up to the hard one)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 10_256:
        pytest.skip("the hard open-file limit is too low to raise to")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "approvalctl", "serve", "--port", str(port)],
        env=env_for(tmp_path / "approvals.db"), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard)))
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=30, status=200)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert int(line.split()[3]) >= 10_256
    finally:
        stop_process(proc)


def test_a_body_trickled_after_the_headers_is_timed_out(serve, tmp_path: Path) -> None:
    """With a valid key, headers complete, then a body sent a byte at a time: without a body
    deadline such connections are held for ever and fill the connection cap."""
    server = serve("  body_timeout: 1s\n")
    env = env_for(tmp_path / "approvals.db")
    key = subprocess.run([sys.executable, "-m", "approvalctl", "keys", "create", "--name",
                          "slow-bot", "--role", "user"], env=env, capture_output=True,
                         text=True, check=True).stdout.split()[-1]
    sock = server.connect()
    sock.settimeout(30)
    sock.sendall(b"POST /api/v1/approvals HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
    started = time.monotonic()
    answer = b""
    while time.monotonic() - started < 20 and not answer:
        try:
            sock.sendall(b" ")
            sock.settimeout(0.2)
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:120]
    sock.settimeout(30)
    answer += _read_all(sock)  # the problem body may follow in another packet; then close
    assert b"body_timeout" in answer and b"connection: close" in answer.lower()


def test_a_decision_link_form_trickled_is_timed_out_too(serve) -> None:
    """The decision-link route needs no key, and its form is read before the link is
    checked: the same body deadline applies, or anyone could hold connections with it."""
    server = serve("  body_timeout: 1s\n")
    sock = server.connect()
    sock.sendall(b"POST /d/v1.x.y HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\nt")
    started = time.monotonic()
    answer = b""
    while time.monotonic() - started < 20 and not answer:
        try:
            sock.sendall(b"x")
            sock.settimeout(0.2)
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:120]
    sock.settimeout(30)
    assert b"body_timeout" in answer + _read_all(sock)


def test_two_different_keys_in_one_request_are_refused(serve) -> None:
    server = serve("  max_headers: 100\n")
    for headers in ({"X-API-Key": "ak_x", "Authorization": "Bearer ak_y"},
                    [("X-API-Key", "ak_x"), ("X-API-Key", "ak_y")]):
        r = httpx.get(server.url + "/api/v1/approvals", headers=headers)
        assert r.status_code == 401 and "two different API keys" in r.json()["detail"]
    # the same key in both headers is one key: it is judged as that key (here: unknown)
    r = httpx.get(server.url + "/api/v1/approvals",
                  headers={"X-API-Key": "ak_x", "Authorization": "Bearer ak_x"})
    assert r.status_code == 401
