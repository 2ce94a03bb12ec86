"""What running a job did: the one result every part of a job (copy, shards, commit, delete) adds to."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class JobOutcome:
    job_id: int
    dataset: str
    src_tier: str
    dst_tier: str
    state: str
    members: int = 0
    bytes: int = 0
    copied: int = 0
    failed: int = 0
    error: str | None = None
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
