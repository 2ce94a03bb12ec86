"""Moving bytes: tier to tier (``copy``), local to the hot tier (``register``), tier to local (``read``).

Ours is the real product path, run as the ``tiering`` command with a SQLite catalog:

* register: ``tiering register DIR --name ... --tier hot`` (hash, upload, verify, catalog);
* copy: ``tiering move NAME@VERSION --to TIER`` hot -> warm (copy, verify, commit, delete the source);
* read: ``tiering restore NAME@VERSION --to local-N --wait`` to a directory tier (copy, verify, stage),
  from the plain hot tier and, as a second row, from packed shards on an archive tier.

Peers work on the very same objects: the hot tier's copy of a registered dataset. Each repetition writes
into a fresh bucket or directory, removed afterwards (untimed), so no run sees another's data.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from bench.core import Row, Sample, ServerCPU, Shape, make_files, rotated, run_timed
from bench.peers import Peer, S3Loc, all_peers, write_rclone_config
from bench.servers import ACCESS_KEY, SECRET_KEY, Seaweed, find_tool, start_seaweed

OURS = "tiering"
HOT_BUCKET = "hot"
COLD_BUCKET = "cold"
CRED_PREFIX = "BENCH_S3"
#: tier ranks: hot 0, then per-repetition destination tiers from 10, local tiers from 500, cold last
_WARM_RANK, _LOCAL_RANK, _COLD_RANK = 10, 500, 999


@dataclass
class Env:
    """Two SeaweedFS servers (hot = A, warm = B), the tiering config and catalog, and the peers' config."""

    workdir: Path
    hot: Seaweed
    warm: Seaweed
    transfer: dict[str, Any]
    seed: int = 42
    config_path: Path = field(init=False)
    servers: ServerCPU = field(init=False)
    env: dict[str, str] = field(init=False)
    tiers: dict[str, dict[str, Any]] = field(init=False)
    #: datasets registered on hot and free to be moved away, per shape name
    on_hot: dict[str, list[str]] = field(default_factory=dict)
    data_dirs: dict[str, Path] = field(default_factory=dict)
    peers: list[Peer] = field(init=False)
    _serial: int = 0

    def __post_init__(self) -> None:
        self.config_path = self.workdir / "tiering.yaml"
        self.servers = ServerCPU([self.hot.cpu_seconds, self.warm.cpu_seconds])
        self.env = dict(os.environ)
        self.env.update({
            f"{CRED_PREFIX}_ACCESS_KEY_ID": ACCESS_KEY, f"{CRED_PREFIX}_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1", "AWS_CONFIG_FILE": str(self.workdir / "aws.ini"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "aws-credentials-none"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                        os.environ.get("PYTHONPATH", "")])),
        })
        self.env.pop("TIERING_CONFIG", None)
        # rclone refuses to start with a CA bundle set for its plain-http transport; every endpoint here is http
        self.env.pop("AWS_CA_BUNDLE", None)
        (self.workdir / "aws.ini").write_text(
            "[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = 16\n  multipart_chunksize = 16MB\n"
        )
        rclone_conf = write_rclone_config(self.workdir / "rclone.conf", {"hot": self.hot.endpoint,
                                                                          "warm": self.warm.endpoint})
        self.peers = all_peers(rclone_conf)
        self.tiers = {
            "hot": self._s3_tier(0, self.hot, HOT_BUCKET),
            "cold": {**self._s3_tier(_COLD_RANK, self.warm, COLD_BUCKET), "archive": "packed"},
        }
        self.hot.make_bucket(HOT_BUCKET)
        self.warm.make_bucket(COLD_BUCKET)
        self.write_config()
        from tiering.app import App
        from tiering.config import load_config

        with App.open(load_config(self.config_path), create=True):
            pass

    def _s3_tier(self, rank: int, server: Seaweed, bucket: str) -> dict[str, Any]:
        return {"rank": rank, "backend": f"s3://{bucket}/tiering", "endpoint": server.endpoint,
                "credentials": {"env": CRED_PREFIX}}

    def write_config(self) -> None:
        data = {"catalog": f"sqlite:///{self.workdir / 'catalog.db'}", "tiers": self.tiers,
                "transfer": self.transfer}
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))

    def next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def add_warm_tier(self) -> tuple[str, str]:
        """A fresh destination tier on the warm server (its own bucket); returns (tier, bucket)."""
        n = self.next_serial()
        name, bucket = f"w{n}", f"bench-w{n}"
        self.warm.make_bucket(bucket)
        self.tiers[name] = self._s3_tier(_WARM_RANK + n, self.warm, bucket)
        self.write_config()
        return name, bucket

    def add_local_tier(self) -> tuple[str, Path]:
        n = self.next_serial()
        path = self.workdir / f"local{n}"
        self.tiers[f"local{n}"] = {"rank": _LOCAL_RANK + n, "backend": path.as_uri()}
        self.write_config()
        return f"local{n}", path

    def drop_tier(self, name: str) -> None:
        """Forget a per-repetition tier and free its storage (the catalog keeps its rows; nobody reads them)."""
        tier = self.tiers.pop(name)
        self.write_config()
        if tier["backend"].startswith("s3://"):
            self.warm.remove_bucket(tier["backend"][5:].split("/")[0])
        else:
            shutil.rmtree(tier["backend"][len("file://"):], ignore_errors=True)

    def tiering(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tiering", "--config", str(self.config_path), *args]

    def data(self, shape: Shape) -> Path:
        if shape.name not in self.data_dirs:
            self.data_dirs[shape.name] = self.workdir / "data" / shape.name
            make_files(self.data_dirs[shape.name], shape, seed=self.seed)
        return self.data_dirs[shape.name]

    def dataset(self, shape: Shape) -> str:
        return "bench-" + shape.name.lower()

    def register_untimed(self, shape: Shape, version: str) -> None:
        sample, _out, _err = run_timed(self.tiering("register", str(self.data(shape)), "--name", self.dataset(shape),
                                                    "--version", version, "--tier", "hot", "--json"), env=self.env)
        if not sample.ok:
            raise RuntimeError(f"setting up {self.dataset(shape)}@{version} failed: {sample.detail}")

    def source_on_hot(self, shape: Shape) -> S3Loc:
        """The registered copy the peers read (registered once, never moved)."""
        version = "src"
        marker = self.workdir / f"registered-{shape.name}-src"
        if not marker.exists():
            self.register_untimed(shape, version)
            marker.touch()
        return S3Loc(self.hot.endpoint, "hot", HOT_BUCKET, f"tiering/dataset/{self.dataset(shape)}/{version}/")

    def take_on_hot(self, shape: Shape) -> str:
        """A version of the shape's dataset on hot that may be moved away (registered now if none is left)."""
        free = self.on_hot.setdefault(shape.name, [])
        if free:
            return free.pop(0)
        version = f"c{self.next_serial()}"
        self.register_untimed(shape, version)
        return version

    def list_keys(self, server: Seaweed, bucket: str, prefix: str) -> list[str]:
        client = server.client()
        return [str(o["Key"]) for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for o in page.get("Contents") or ()]

    def count_objects(self, server: Seaweed, bucket: str, prefix: str = "") -> tuple[int, int]:
        client = server.client()
        n = total = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents") or ():
                if "_tiering" in o["Key"].split("/") or o["Key"].endswith("/"):
                    continue  # the dataset's manifest, which the peers copy along with the members
                n += 1
                total += int(o["Size"])
        return n, total


def count_files(root: Path) -> tuple[int, int]:
    n = total = 0
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".tiering-meta", "_tiering")]
        for name in files:
            n += 1
            total += (Path(dirpath) / name).stat().st_size
    return n, total


def compile_bytecode() -> None:
    """Byte-compile our package and the bench's, as installing a package does: every command then loads
    them as an installed tool would, instead of compiling every module from source each time (a checkout
    run with ``PYTHONDONTWRITEBYTECODE`` does that; ~0.1-0.2 s per command here)."""
    import compileall

    import tiering

    for package in (Path(tiering.__file__).parent, Path(__file__).resolve().parent):
        compileall.compile_dir(str(package), quiet=1)


@contextlib.contextmanager
def environment(workdir: Path | None, transfer: dict[str, Any]) -> Iterator[Env]:
    compile_bytecode()
    root = Path(tempfile.mkdtemp(prefix="tiering-bench-", dir=workdir))
    hot = warm = None
    try:
        hot = start_seaweed("hot", workdir=root)
        warm = start_seaweed("warm", workdir=root)
        yield Env(root, hot, warm, transfer)
    finally:
        for server in (hot, warm):
            if server is not None:
                server.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- one timed run -----------------------------------------------------------------------------------


def _check(sample: Sample, got: tuple[int, int], shape: Shape) -> Sample:
    if sample.ok and got != (shape.count, shape.total):
        sample.ok = False
        sample.detail = f"expected {shape.count} objects / {shape.total} bytes, found {got[0]} / {got[1]}"
    return sample


def _inner_seconds(stdout: str) -> float | None:
    with contextlib.suppress(ValueError, TypeError, KeyError):
        doc = json.loads(stdout)
        if isinstance(doc, dict) and doc.get("seconds") is not None:
            return float(doc["seconds"])
    return None


@dataclass
class Workload:
    name: str
    rows: list[Row]

    def row(self, shape: Shape, tool: str, *, ours: bool = False, note: str = "") -> Row:
        for r in self.rows:
            if r.workload == self.name and r.shape == shape.name and r.tool == tool:
                return r
        r = Row(self.name, shape.name, tool, shape.total, shape.count, is_ours=ours, note=note)
        self.rows.append(r)
        return r


def _peers(env: Env, wanted: Sequence[str] | None, rows: Workload, shape: Shape) -> list[Peer]:
    out = []
    for peer in env.peers:
        if wanted is not None and peer.name not in wanted:
            continue
        reason = peer.missing()
        if reason:
            rows.row(shape, peer.name, note=peer.note).skipped = reason
            continue
        out.append(peer)
    return out


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_copy(env: Env, shapes: Sequence[Shape], reps: int, tools: Sequence[str] | None, rows: list[Row]) -> None:
    """Tier to tier: ``tiering move`` hot -> warm (full protocol) against peers' plain copies."""
    wl = Workload("copy", rows)
    for shape in shapes:
        src = env.source_on_hot(shape)
        single = None
        if shape.count == 1:
            keys = [k for k in env.list_keys(env.hot, src.bucket, src.prefix) if "_tiering" not in k.split("/")]
            single = keys[0][len(src.prefix):]
        peers = _peers(env, tools, wl, shape)
        runners: list[tuple[str, Callable[[], Sample]]] = []
        if tools is None or OURS in tools:
            runners.append((OURS, partial(_ours_move, env, shape)))
        for peer in peers:
            runners.append((peer.name, partial(_peer_copy, env, peer, shape, src, single)))
        for rep in range(reps):
            for name, run in rotated(runners, rep):
                sample = run()
                row = wl.row(shape, name, ours=name == OURS,
                             note=next((p.note for p in peers if p.name == name), "tiering move (verified)"))
                row.samples.append(sample)
                _say(f"copy {shape.name} {name} rep {rep + 1}: {sample.seconds:.2f}s"
                     + ("" if sample.ok else f" FAILED {sample.detail}"))


def _ours_move(env: Env, shape: Shape) -> Sample:
    version = env.take_on_hot(shape)
    tier, bucket = env.add_warm_tier()
    try:
        sample, out, _err = run_timed(env.tiering("move", f"{env.dataset(shape)}@{version}", "--to", tier, "--json"),
                                      env=env.env, servers=env.servers)
        sample.inner_seconds = _inner_seconds(out)
        return _check(sample, env.count_objects(env.warm, bucket), shape)
    finally:
        env.drop_tier(tier)


def _peer_copy(env: Env, peer: Peer, shape: Shape, src: S3Loc, single: str | None) -> Sample:
    bucket = f"p{env.next_serial()}-{peer.name}"
    env.warm.make_bucket(bucket)
    scratch = env.workdir / f"scratch-{bucket}"
    try:
        dst = S3Loc(env.warm.endpoint, "warm", bucket, "")
        sample, _out, _err = run_timed(peer.copy(src, dst, single=single, scratch=scratch), env=env.env,
                                       servers=env.servers)
        return _check(sample, env.count_objects(env.warm, bucket), shape)
    finally:
        env.warm.remove_bucket(bucket)
        shutil.rmtree(scratch, ignore_errors=True)


def run_register(env: Env, shapes: Sequence[Shape], reps: int, tools: Sequence[str] | None, rows: list[Row]) -> None:
    """Local directory -> hot tier: ``tiering register`` (hash, upload, verify, catalog) against uploads."""
    wl = Workload("register", rows)
    for shape in shapes:
        data = env.data(shape)
        peers = _peers(env, tools, wl, shape)
        runners: list[tuple[str, Callable[[], Sample]]] = []
        if tools is None or OURS in tools:
            runners.append((OURS, partial(_ours_register, env, shape)))
        for peer in peers:
            runners.append((peer.name, partial(_peer_upload, env, peer, shape, data)))
        for rep in range(reps):
            for name, run in rotated(runners, rep):
                sample = run()
                wl.row(shape, name, ours=name == OURS,
                       note=next((p.note for p in peers if p.name == name), "tiering register")).samples.append(sample)
                _say(f"register {shape.name} {name} rep {rep + 1}: {sample.seconds:.2f}s"
                     + ("" if sample.ok else f" FAILED {sample.detail}"))


def _ours_register(env: Env, shape: Shape) -> Sample:
    version = f"r{env.next_serial()}"
    sample, out, _err = run_timed(env.tiering("register", str(env.data(shape)), "--name", env.dataset(shape),
                                              "--version", version, "--tier", "hot", "--json"),
                                  env=env.env, servers=env.servers)
    sample.inner_seconds = _inner_seconds(out)
    prefix = f"tiering/dataset/{env.dataset(shape)}/{version}/"
    sample = _check(sample, env.count_objects(env.hot, HOT_BUCKET, prefix), shape)
    if sample.ok:
        env.on_hot.setdefault(shape.name, []).append(version)  # the copy benchmark moves it away later
    return sample


def _peer_upload(env: Env, peer: Peer, shape: Shape, data: Path) -> Sample:
    bucket = f"u{env.next_serial()}-{peer.name}"
    env.hot.make_bucket(bucket)
    try:
        dst = S3Loc(env.hot.endpoint, "hot", bucket, "")
        sample, _out, _err = run_timed(peer.upload(data, dst), env=env.env, servers=env.servers)
        return _check(sample, env.count_objects(env.hot, bucket), shape)
    finally:
        env.hot.remove_bucket(bucket)


def run_read(env: Env, shapes: Sequence[Shape], reps: int, tools: Sequence[str] | None, rows: list[Row],
             *, packed: bool = True) -> None:
    """Tier -> local directory: ``tiering restore --wait`` to a directory tier against downloads.

    With ``packed``, shapes whose members are below the archive tier's pack threshold are also read by us
    from packed shards on the cold tier (row ``tiering (packed)``; the peers read the plain objects).
    """
    wl = Workload("read", rows)
    for shape in shapes:
        src = env.source_on_hot(shape)
        peers = _peers(env, tools, wl, shape)
        runners: list[tuple[str, Callable[[], Sample]]] = []
        ours = tools is None or OURS in tools
        if ours:
            runners.append((OURS, partial(_ours_restore, env, shape, "src")))
        if ours and packed and shape.size < 64 * 2**20:
            cold_version = _packed_copy(env, shape)
            runners.append((OURS + " (packed)", partial(_ours_restore, env, shape, cold_version)))
        for peer in peers:
            runners.append((peer.name, partial(_peer_download, env, peer, shape, src)))
        for rep in range(reps):
            for name, run in rotated(runners, rep):
                sample = run()
                note = next((p.note for p in peers if p.name == name), "tiering restore --wait to a directory tier")
                wl.row(shape, name, ours=name.startswith(OURS), note=note).samples.append(sample)
                _say(f"read {shape.name} {name} rep {rep + 1}: {sample.seconds:.2f}s"
                     + ("" if sample.ok else f" FAILED {sample.detail}"))


def _packed_copy(env: Env, shape: Shape) -> str:
    """A version of the dataset living on the packed archive tier (moved there once, untimed)."""
    version = env.take_on_hot(shape)
    sample, _out, _err = run_timed(env.tiering("move", f"{env.dataset(shape)}@{version}", "--to", "cold", "--json"),
                                   env=env.env)
    if not sample.ok:
        raise RuntimeError(f"moving {env.dataset(shape)}@{version} to the packed tier failed: {sample.detail}")
    return version


def _ours_restore(env: Env, shape: Shape, version: str) -> Sample:
    tier, path = env.add_local_tier()
    try:
        sample, out, _err = run_timed(
            env.tiering("restore", f"{env.dataset(shape)}@{version}", "--to", tier, "--wait", "--json"),
            env=env.env, servers=env.servers,
        )
        if sample.ok:
            with contextlib.suppress(ValueError):
                state = json.loads(out).get("state")
                if state != "ready":
                    sample.ok, sample.detail = False, f"restore state {state}"
        root = path / "dataset" / env.dataset(shape) / version
        return _check(sample, count_files(root) if root.exists() else (0, 0), shape)
    finally:
        env.drop_tier(tier)


def _peer_download(env: Env, peer: Peer, shape: Shape, src: S3Loc) -> Sample:
    target = env.workdir / f"dl{env.next_serial()}-{peer.name}"
    target.mkdir()
    try:
        sample, _out, _err = run_timed(peer.download(src, target), env=env.env, servers=env.servers)
        return _check(sample, count_files(target), shape)
    finally:
        shutil.rmtree(target, ignore_errors=True)


def tool_versions() -> dict[str, str]:
    import subprocess

    out: dict[str, str] = {}
    for tool, args in (("rclone", ["version"]), ("s5cmd", ["version"]), ("aws", ["--version"]),
                       ("weed", ["version"])):
        path = find_tool(tool)
        if not path:
            out[tool] = "missing"
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            res = subprocess.run([path, *args], capture_output=True, text=True, timeout=30)
            out[tool] = (res.stdout or res.stderr).strip().splitlines()[0] if (res.stdout or res.stderr) else "?"
    for module in ("boto3", "minio", "xxhash"):
        with contextlib.suppress(Exception):
            out[module] = str(__import__(module).__version__)
    return out
