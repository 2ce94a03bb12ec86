"""The cost of verification: xxh3-128 alone (the ceiling), and one large object copied tier to tier with
our Copier four ways, interleaved: no hashing at all (``put(open_read())``, the floor), ``verify=stream``
(hash while streaming, check the size at the destination), ``verify=auto`` (the default: the destination
checks every part's CRC32 and the xxh3-128 of what it sent), ``verify=readback`` (re-read and hash
the destination). The cost of a mode is how much longer it takes than the floor.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import xxhash

from bench.core import GiB, MiB, _block, rotated
from bench.servers import ACCESS_KEY, SECRET_KEY
from bench.transfer import Env

HASH_BYTES = {"full": GiB, "quick": 128 * MiB, "tiny": 8 * MiB}


def _hash_ceiling(data: bytes, reps: int) -> dict[str, float]:
    from tiering.transfer.hashing import CHUNK_SIZE, Digests

    view = memoryview(data)
    one_shot, chunked = [], []
    for _ in range(max(3, reps)):
        t0 = time.perf_counter()
        xxhash.xxh3_128(data).hexdigest()
        one_shot.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        d = Digests()
        for off in range(0, len(data), CHUNK_SIZE):
            d.update(view[off:off + CHUNK_SIZE])
        _ = d.xxh3
        chunked.append(time.perf_counter() - t0)
    return {"xxh3_one_call_gb_s": len(data) / statistics.median(one_shot) / 1e9,
            "xxh3_digests_1mib_chunks_gb_s": len(data) / statistics.median(chunked) / 1e9}


def run_hashing(env: Env, size_name: str, nbytes: int | None, reps: int) -> dict[str, Any]:
    from tiering.config import Credentials, Secret, TransferConfig
    from tiering.storage.s3.backend import S3Backend
    from tiering.transfer.copier import Copier, CopyItem

    size = nbytes or HASH_BYTES[size_name]
    # incompressible: SeaweedFS may compress what looks compressible, which would flatter every copy
    block = _block(env.seed)
    data = b"".join(block for _ in range(size // len(block))) + block[:size % len(block)]
    ceiling = _hash_ceiling(data, reps)
    expected = xxhash.xxh3_128_hexdigest(data)

    transfer = TransferConfig(**{k: v for k, v in env.transfer.items()})
    creds = Credentials(ACCESS_KEY, Secret(SECRET_KEY))

    def backend(server: Any, bucket: str) -> S3Backend:
        return S3Backend(bucket, endpoint_url=server.endpoint, credentials=creds,
                         multipart_threshold=transfer.multipart_threshold, part_size=transfer.part_size,
                         part_workers=transfer.part_workers, lean_requests=transfer.lean_requests,
                         max_pool_connections=max(32, transfer.workers * (transfer.part_workers + 1)))

    env.hot.make_bucket("hashsrc")
    src = backend(env.hot, "hashsrc")
    import io

    src.put("blob", io.BytesIO(data), size=size)
    del data

    def run(mode: str) -> tuple[float, float, float]:
        bucket = f"hash{env.next_serial()}"
        env.warm.make_bucket(bucket)
        dst = backend(env.warm, bucket)
        try:
            server0, cpu0, t0 = env.servers.now(), time.process_time(), time.monotonic()
            if mode == "none":
                stream = src.open_read("blob")
                try:
                    dst.put("blob", stream, size=size)
                finally:
                    stream.close()
            else:
                result = Copier(src, dst, workers=1, verify=mode).copy_one(  # type: ignore[arg-type]
                    CopyItem("blob", "blob", size, expected))
                if not result.ok:
                    raise RuntimeError(f"copy with verify={mode} failed: {result.error}")
            return time.monotonic() - t0, time.process_time() - cpu0, env.servers.now() - server0
        finally:
            dst.close()
            env.warm.remove_bucket(bucket)

    modes = ["none", "stream", "auto", "readback"]
    samples: dict[str, list[tuple[float, float, float]]] = {m: [] for m in modes}
    for rep in range(reps):
        for mode in rotated(modes, rep):
            samples[mode].append(run(mode))
    src.close()
    env.hot.remove_bucket("hashsrc")

    out: dict[str, Any] = {"bytes": size, **ceiling}
    floor = statistics.median(s[0] for s in samples["none"])
    lines = [f"xxh3-128 over {size / MiB:.0f} MiB in memory: {ceiling['xxh3_one_call_gb_s']:.2f} GB/s in one call, "
             f"{ceiling['xxh3_digests_1mib_chunks_gb_s']:.2f} GB/s through "
             "tiering.transfer.hashing.Digests (1 MiB chunks)"]
    for mode in modes:
        sec = statistics.median(s[0] for s in samples[mode])
        cpu = statistics.median(s[1] for s in samples[mode])
        srv = statistics.median(s[2] for s in samples[mode])
        cost = (sec - floor) / floor * 100
        out[mode] = {"seconds": sec, "mb_s": size / sec / 1e6, "client_cpu": cpu, "server_cpu": srv,
                     "cost_percent": cost}
        label = {"none": "copy, no hashing (floor)", "stream": "copy, verify=stream",
                 "auto": "copy, verify=auto (default)", "readback": "copy, verify=readback"}[mode]
        lines.append(f"{label:<26} {size / sec / 1e6:7.1f} MB/s  {sec:6.2f} s  client CPU {cpu:5.2f} s  "
                     f"server CPU {srv:5.2f} s  cost vs floor {cost:+5.1f}%")
    out["lines"] = lines
    return out
