"""`tiering serve`: events need a bearer token, bad requests get 400 (not a dropped connection), stalled
clients are dropped, and a burst of connections waits in a real backlog."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import open_app, workspace_config, write_config

import tiering.access.webhook
from tiering.access.webhook import make_server
from tiering.app import App
from tiering.errors import ConfigError

BODY = (Path(__file__).resolve().parents[1] / "data" / "access" / "s3-event-webhook.json").read_bytes()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = open_app(workspace_config(tmp_path))
    yield a
    a.close()


@pytest.fixture
def port(app: App, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(tiering.access.webhook, "CONNECTION_TIMEOUT_SECONDS", 1.0)
    server = make_server(app, host="127.0.0.1", port=0, token="t0ken")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def raw_request(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send ``head`` and ``body`` as they are; the whole answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def post(port: int, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/events/s3", body=BODY, headers={"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_only_an_exact_bearer_token_is_accepted(port: int) -> None:
    assert post(port, {}) == 401
    assert post(port, {"Authorization": "t0ken"}) == 401
    assert post(port, {"Authorization": "Token t0ken"}) == 401
    assert post(port, {"Authorization": "Bearer t0ken-and-more"}) == 401
    assert post(port, {"Authorization": "Bearer t0ken"}) == 200


def test_a_non_ascii_header_or_a_non_numeric_length_gets_400_and_the_server_keeps_serving(port: int) -> None:
    for head in (
        b"POST /v1/events/s3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\xf6ken\r\nContent-Length: 2\r\n\r\n",
        b"POST /v1/events/s3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\nContent-Length: lots\r\n\r\n",
        b"POST /v1/events/s3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\nContent-Length: -5\r\n\r\n",
    ):
        answer = raw_request(port, head, b"{}")
        assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert post(port, {"Authorization": "Bearer t0ken"}) == 200


def test_a_client_that_sends_nothing_is_dropped_after_the_connection_timeout(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""  # the server closed the idle connection
        assert time.monotonic() - started < 5
    assert post(port, {"Authorization": "Bearer t0ken"}) == 200


def test_the_listen_backlog_holds_a_burst_of_connections(app: App) -> None:
    server = make_server(app, host="127.0.0.1", port=0, token="t0ken")
    try:
        assert server.request_queue_size >= 128
    finally:
        server.server_close()


def test_serving_without_a_token_is_refused_unless_insecure_is_asked_for(app: App) -> None:
    with pytest.raises(ConfigError, match="TIERING_WEBHOOK_TOKEN.*--insecure-no-auth"):
        make_server(app, host="127.0.0.1", port=0)
    server = make_server(app, host="127.0.0.1", port=0, insecure_no_auth=True)
    server.server_close()


def test_tiering_serve_without_a_token_exits_2_with_one_line_saying_how_to_set_one(tmp_path: Path) -> None:
    config = write_config(tmp_path, workspace_config(tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "TIERING_WEBHOOK_TOKEN"}
    subprocess.run([sys.executable, "-m", "tiering", "--config", str(config), "init"], env=env, check=True,
                   capture_output=True, timeout=60)
    proc = subprocess.run([sys.executable, "-m", "tiering", "--config", str(config), "serve", "--port", "0"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "TIERING_WEBHOOK_TOKEN" in lines[0] and "--insecure-no-auth" in lines[0]


def test_tiering_serve_takes_its_token_from_the_file_the_config_names(tmp_path: Path) -> None:
    data = workspace_config(tmp_path)
    data["webhook"] = {"token_file": "webhook.token"}
    (tmp_path / "webhook.token").write_text("s3cret-from-file\n")
    config = write_config(tmp_path, data)
    subprocess.run([sys.executable, "-m", "tiering", "--config", str(config), "init"], check=True,
                   capture_output=True, timeout=60)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tiering", "--config", str(config), "serve", "--port", str(free)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert b"listening" in proc.stdout.readline()
        assert post(free, {"Authorization": "Bearer s3cret-from-file"}) == 200
        assert post(free, {"Authorization": "Bearer wrong"}) == 401
    finally:
        proc.kill()
        proc.wait()
