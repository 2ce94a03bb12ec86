"""The Python peers, run as their own process like every other tool: boto3's transfer manager and minio-py.

``python -m bench.peer_py TOOL ACTION SRC DST`` where ACTION is ``copy`` (s3 -> s3 across endpoints),
``upload`` (directory -> s3) or ``download`` (s3 -> directory). An S3 location is
``ENDPOINT|BUCKET|PREFIX``. Credentials come from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``.
Each tool gets what its documentation suggests for throughput: a pool of ``--jobs`` objects at once and
its own multipart concurrency inside each.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MiB = 2**20


def _loc(text: str) -> tuple[str, str, str]:
    endpoint, bucket, prefix = text.split("|")
    return endpoint, bucket, prefix


def _local_files(root: Path) -> Iterator[tuple[Path, str]]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            yield path, path.relative_to(root).as_posix()


def _run_all(jobs: int, fn: Callable[[Any], None], items: list[Any]) -> None:
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for _ in pool.map(fn, items):
            pass


# -- boto3 (s3transfer) -------------------------------------------------------------------------------


def _boto3_client(endpoint: str, pool: int) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=pool,
                      request_checksum_calculation="when_required", response_checksum_validation="when_required"),
    )


def _boto3_list(client: Any, bucket: str, prefix: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.extend((o["Key"], int(o["Size"])) for o in page.get("Contents") or ())
    return out


def boto3_main(action: str, src: str, dst: str, jobs: int) -> None:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=16 * MiB, max_concurrency=8)
    pool = jobs * 8 + 8
    if action == "upload":
        endpoint, bucket, prefix = _loc(dst)
        client = _boto3_client(endpoint, pool)
        _run_all(jobs, lambda item: client.upload_file(str(item[0]), bucket, prefix + item[1], Config=config),
                 list(_local_files(Path(src))))
    elif action == "download":
        endpoint, bucket, prefix = _loc(src)
        client = _boto3_client(endpoint, pool)
        root = Path(dst)

        def download(item: tuple[str, int]) -> None:
            target = root / item[0][len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, item[0], str(target), Config=config)

        _run_all(jobs, download, _boto3_list(client, bucket, prefix))
    else:
        s_endpoint, s_bucket, s_prefix = _loc(src)
        d_endpoint, d_bucket, d_prefix = _loc(dst)
        source, dest = _boto3_client(s_endpoint, pool), _boto3_client(d_endpoint, pool)

        def copy(item: tuple[str, int]) -> None:
            body = source.get_object(Bucket=s_bucket, Key=item[0])["Body"]
            dest.upload_fileobj(body, d_bucket, d_prefix + item[0][len(s_prefix):], Config=config)

        _run_all(jobs, copy, _boto3_list(source, s_bucket, s_prefix))


# -- minio-py --------------------------------------------------------------------------------------------


def _minio_client(endpoint: str, pool: int) -> Any:
    import urllib3
    from minio import Minio

    parts = urlsplit(endpoint)
    http = urllib3.PoolManager(maxsize=pool, retries=urllib3.Retry(total=3, backoff_factor=0.2))
    return Minio(parts.netloc, access_key=os.environ["AWS_ACCESS_KEY_ID"],
                 secret_key=os.environ["AWS_SECRET_ACCESS_KEY"], secure=parts.scheme == "https",
                 region="us-east-1", http_client=http)


def minio_main(action: str, src: str, dst: str, jobs: int) -> None:
    pool = jobs * 4 + 8
    part = 16 * MiB
    if action == "upload":
        endpoint, bucket, prefix = _loc(dst)
        client = _minio_client(endpoint, pool)
        _run_all(jobs, lambda item: client.fput_object(bucket, prefix + item[1], str(item[0]), part_size=part,
                                                       num_parallel_uploads=4),
                 list(_local_files(Path(src))))
    elif action == "download":
        endpoint, bucket, prefix = _loc(src)
        client = _minio_client(endpoint, pool)
        root = Path(dst)
        objects = [(o.object_name, o.size) for o in client.list_objects(bucket, prefix=prefix, recursive=True)]
        _run_all(jobs, lambda item: client.fget_object(bucket, item[0], str(root / item[0][len(prefix):])), objects)
    else:
        s_endpoint, s_bucket, s_prefix = _loc(src)
        d_endpoint, d_bucket, d_prefix = _loc(dst)
        source, dest = _minio_client(s_endpoint, pool), _minio_client(d_endpoint, pool)
        objects = [(o.object_name, o.size) for o in source.list_objects(s_bucket, prefix=s_prefix, recursive=True)]

        def copy(item: tuple[str, int]) -> None:
            resp = source.get_object(s_bucket, item[0])
            try:
                dest.put_object(d_bucket, d_prefix + item[0][len(s_prefix):], resp, item[1], part_size=part,
                                num_parallel_uploads=4)
            finally:
                resp.close()
                resp.release_conn()

        _run_all(jobs, copy, objects)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_py")
    parser.add_argument("tool", choices=["boto3", "minio"])
    parser.add_argument("action", choices=["copy", "upload", "download"])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--jobs", type=int, default=16)
    args = parser.parse_args(argv)
    (boto3_main if args.tool == "boto3" else minio_main)(args.action, args.src, args.dst, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
