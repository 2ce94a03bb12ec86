"""An S3 endpoint that accepts connections and never answers costs a request's deadline, not minutes, and a
Ctrl-C / SIGTERM stops a move blocked on it within seconds, leaving it for `tiering resume`."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import check_invariant, make_tree, open_app, run_cli, workspace_config, write_config
from servers import SeaweedServer

from tiering import datasets, registration


class StallingProxy:
    """A TCP endpoint on 127.0.0.1. While ``stalling`` it accepts connections and never answers (a black hole);
    otherwise it forwards each new connection to ``target`` (host, port) both ways."""

    def __init__(self, target: tuple[str, int] | None = None) -> None:
        self.target = target
        self.stalling = target is None
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)
            if not self.stalling and self.target is not None:
                upstream = socket.create_connection(self.target)
                self._held.append(upstream)
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for s in self._held:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def black_hole() -> Iterator[StallingProxy]:
    proxy = StallingProxy()
    yield proxy
    proxy.close()


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("lean", [True, False], ids=["lean-path", "botocore"])
def test_registering_onto_an_endpoint_that_never_answers_fails_within_the_deadline_in_one_line(
    tmp_path: Path, black_hole: StallingProxy, lean: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOID_ACCESS_KEY_ID", "any")
    monkeypatch.setenv("VOID_SECRET_ACCESS_KEY", "any")
    tiers = {"hot": {"rank": 0, "backend": "s3://void/hot", "endpoint": black_hole.endpoint,
                     "credentials": {"env": "VOID"}},
             "warm": {"rank": 1, "backend": (tmp_path / "warm").as_uri()}}
    data = workspace_config(
        tmp_path, tiers=tiers,
        transfer={"request_timeout_seconds": 2, "read_timeout_seconds": 1, "lean_requests": lean, "workers": 4},
    )
    config = write_config(tmp_path, data)
    make_tree(tmp_path / "src", 3)
    open_app(data).close()  # the catalog (`tiering init` would make the bucket, on the silent endpoint)
    started = time.monotonic()
    proc = run_cli(config, "register", str(tmp_path / "src"), "--name", "d", "--version", "1", "--tier", "hot")
    elapsed = time.monotonic() - started
    assert proc.returncode == 6, proc.stderr
    assert "hot" in one_line(proc.stderr) or "void" in one_line(proc.stderr)
    assert black_hole.accepted > 0  # it was reached, and never answered
    # each request and operation stops at its 2 s limit (plus one read timeout on botocore's path); a few of
    # them one after another (the copy, removing what it may have left) and the process start fit in 20 s
    assert elapsed < 20, f"{elapsed:.1f} s"


def test_sigterm_stops_a_move_blocked_on_a_silent_endpoint_in_seconds_and_resume_finishes_it(
    tmp_path: Path, seaweed: SeaweedServer, seaweed2: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = f"{time.time_ns() % 10**10}"
    hot_bucket = seaweed.make_bucket(f"hot-{run}")
    warm_bucket = seaweed2.make_bucket(f"warm-{run}")
    host, port = seaweed2.endpoint.removeprefix("http://").split(":")
    proxy = StallingProxy((host, int(port)))
    for prefix, server in (("HOT", seaweed), ("WARM", seaweed2)):
        monkeypatch.setenv(f"{prefix}_ACCESS_KEY_ID", server.access_key)
        monkeypatch.setenv(f"{prefix}_SECRET_ACCESS_KEY", server.secret_key)
    tiers: dict[str, Any] = {
        "hot": {"rank": 0, "backend": f"s3://{hot_bucket}/nvme", "endpoint": seaweed.endpoint,
                "credentials": {"env": "HOT"}},
        "warm": {"rank": 1, "backend": f"s3://{warm_bucket}/nas", "endpoint": proxy.endpoint,
                 "credentials": {"env": "WARM"}},
    }
    data = workspace_config(tmp_path, tiers=tiers)  # default timeouts: 30 s per request
    config = write_config(tmp_path, data)
    files = make_tree(tmp_path / "src", 12, seed=5, max_size=100_000)
    app = open_app(data)
    try:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        proxy.stalling = True
        move = subprocess.Popen([sys.executable, "-m", "tiering", "--config", str(config), "move", "d", "--to", "warm"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while proxy.accepted == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proxy.accepted > 0, "the move never reached the warm endpoint"
        time.sleep(1.0)  # the copies are blocked on the silent endpoint
        move.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, err = move.communicate(timeout=60)
        stopped_in = time.monotonic() - signalled
        assert stopped_in <= 5, f"the move took {stopped_in:.1f} s to stop: {err}"
        assert move.returncode == 75, err
        assert "tiering resume" in err
        assert datasets.resolve(app, "d", record=False).tier == "hot"

        proxy.stalling = False
        resumed = run_cli(config, "resume")
        assert resumed.returncode == 0, resumed.stderr
        assert datasets.resolve(app, "d", record=False).tier == "warm"
        warm = seaweed2.client()  # straight from SeaweedFS, not through the proxy
        for rel, payload in files.items():
            body = warm.get_object(Bucket=warm_bucket, Key=f"nas/dataset/d/1/{rel}")["Body"].read()
            assert body == payload, rel
        assert check_invariant(app).problems == []
    finally:
        app.close()
        proxy.close()
        seaweed.remove_bucket(hot_bucket)
        seaweed2.remove_bucket(warm_bucket)
