"""Benchmarks of ``tiering`` against the tools a user would otherwise run (DESIGN section 10).

``python -m bench all --out results.json`` starts two SeaweedFS servers on 127.0.0.1 (two tiers),
generates data with a fixed seed, and runs our commands and the peers' on the same data in the same run,
interleaved (A B C, B C A, ...), reporting the median of the repetitions with client and server CPU
seconds. Subcommands run one benchmark: ``copy``, ``register``, ``read``, ``plan``, ``ingest``,
``hashing``. ``--quick`` uses small sizes; ``--sizes tiny`` is what the smoke test runs.

Timings live here, never in tests: ``tests/unit/test_bench_smoke.py`` only checks that every benchmark
still runs.
"""
