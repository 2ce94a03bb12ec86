"""Bytes in flight: streaming xxh3-128 hashing, parallel verified copies, tar shards."""
