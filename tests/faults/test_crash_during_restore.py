"""A real `tiering restore --wait` process is SIGKILLed at named steps, and so is a `tiering move` into a
packed archive tier; dispatching (or resuming) again then finishes the work.

Afterwards: every member's bytes are read back from wherever the catalog says they are (shard offsets
included) and hash to the catalog digest; nothing already verified before the crash was copied again; no
object is left that the catalog does not know; the archive copy is untouched by the restore.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from helpers import check_invariant, make_tree, open_app, run_cli, workspace_config, write_config
from sqlalchemy import select

from tiering import datasets, registration
from tiering.catalog.models import AuditEntry, Member, MoveJob, MoveStep
from tiering.restore.dispatch import dispatch_restores
from tiering.restore.requests import list_restores

PACKED_COLD = {"archive": "packed", "pack_threshold": "20KB", "shard_size": "100KB"}


def packed_config(tmp_path: Path) -> dict[str, Any]:
    data = workspace_config(tmp_path)
    data["tiers"]["cold"].update(PACKED_COLD)
    return data


def sample(tmp_path: Path) -> dict[str, bytes]:
    # small members (packed) and a few large ones (single objects); enough of both for several shards
    return make_tree(tmp_path / "src", 16, seed=7, min_size=1_000, max_size=40_000)


def restore_steps(app: Any) -> dict[str, tuple[str, int]]:
    """member path -> (state, attempts) of the restore job's steps."""
    with app.catalog.session() as s:
        rows = s.execute(
            select(Member.path, MoveStep.state, MoveStep.attempts)
            .join(MoveStep, MoveStep.member_id == Member.id).join(MoveJob, MoveJob.id == MoveStep.job_id)
            .where(MoveJob.purpose == "restore")
        ).all()
    return {p: (st, n) for p, st, n in rows}


@pytest.mark.parametrize("point", ["after_plan", "during_copy", "after_verify", "restore_after_copy"])
def test_kill_9_during_a_restore_then_dispatching_again_loses_nothing_and_copies_nothing_twice(
    tmp_path: Path, point: str
) -> None:
    data = packed_config(tmp_path)
    config = write_config(tmp_path, data)
    files = sample(tmp_path)
    app = open_app(data)
    try:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        assert datasets.move(app, "d@1", to="cold").state == "done"
    finally:
        app.close()
    cold_before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "tiers/cold").rglob("*") if p.is_file()}

    crashed = run_cli(config, "restore", "d@1", "--to", "hot", "--days", "7", "--wait", "--no-progress",
                      crash_at=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    app = open_app(data)
    try:
        mid = check_invariant(app, allow_stray=True)
        assert mid.problems == [], mid.problems
        verified_before = {p: n for p, (st, n) in restore_steps(app).items() if st == "verified"}
        if point == "restore_after_copy":
            assert len(verified_before) == len(files)  # all copied, the request not yet ready
        assert [r.state for r in list_restores(app)] in (["queued"], ["running"])

        report = dispatch_restores(app)
        assert [g.state for g in report.groups] == ["ready"]
        assert [r.state for r in list_restores(app)] == ["ready"]
        after = restore_steps(app)
        assert {st for st, _ in after.values()} == {"committed"}
        # a member verified before the crash was not copied again
        assert {p: after[p][1] for p in verified_before} == verified_before
        for rel, payload in files.items():
            assert (tmp_path / "tiers/hot/dataset/d/1" / rel).read_bytes() == payload
        report_after = check_invariant(app)
        assert report_after.problems == [], report_after.problems
        assert report_after.members == len(files)
        assert datasets.resolve(app, "d@1", record=False).tier == "hot"
        with app.catalog.session() as s:
            assert [a.result for a in s.scalars(select(AuditEntry).where(AuditEntry.action == "restore"))] == ["ok"]
        cold_after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "tiers/cold").rglob("*")
                      if p.is_file()}
        assert cold_after == cold_before
        assert dispatch_restores(app).groups == []
    finally:
        app.close()


@pytest.mark.parametrize("point", ["during_copy", "after_verify", "before_commit", "during_delete"])
def test_kill_9_during_a_move_into_a_packed_tier_then_resume_loses_nothing(tmp_path: Path, point: str) -> None:
    data = packed_config(tmp_path)
    config = write_config(tmp_path, data)
    files = sample(tmp_path)
    app = open_app(data)
    try:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    finally:
        app.close()

    crashed = run_cli(config, "move", "d@1", "--to", "cold", "--no-progress", crash_at=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    app = open_app(data)
    try:
        mid = check_invariant(app, allow_stray=True)
        assert mid.problems == [], mid.problems
        assert [o.state for o in datasets.resume(app)] == ["done"]
        cold_keys = sorted(i.key for i in app.backend("cold").list("dataset/") if "/_tiering/" not in i.key)
        assert any("/_shards/" in k for k in cold_keys)
        assert [i.key for i in app.backend("hot").list("dataset/")] == []
        for rel, payload in files.items():
            out = _Sink()
            datasets.read_member(app, "d@1", rel, out)
            assert out.data == payload
        report = check_invariant(app)
        assert report.problems == [], report.problems
        assert report.members == len(files)
    finally:
        app.close()


class _Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)
