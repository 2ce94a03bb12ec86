"""Claiming a job's steps: every step once, however far the claims run ahead of recording, and a lease
that ran out passes to another worker whose epoch then fences the first one off."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FixedClock, check_invariant, open_app, workspace_config
from sqlalchemy import select

from tiering import registration
from tiering.app import App
from tiering.catalog.models import Dataset, MoveJob, MoveStep, Replica
from tiering.errors import LeaseLost
from tiering.moves.executor import CLAIM_BATCH, Executor, JobOutcome
from tiering.transfer.copier import CopyItem, CopyResult

#: more steps than a claim looks at, several times over: the claims must see past their own steps in flight
MEMBERS = 5 * CLAIM_BATCH + 5


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request: pytest.FixtureRequest, tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    catalog = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    a = open_app(workspace_config(tmp_path, catalog=catalog), clock=clock)
    src = tmp_path / "src"
    for i in range(MEMBERS):
        (src / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 7}" / f"f{i}.bin").write_bytes(i.to_bytes(4, "big"))
    registration.register(a, str(src), name="d", version="1", tier="hot")
    yield a
    a.close()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


def start_job(app: App) -> tuple[Executor, int, int, int]:
    ex = Executor(app)
    with app.catalog.session() as s:
        ds_id = s.scalars(select(Dataset.id)).one()
    job_id = ex.create_job(ds_id, "warm")
    with app.catalog.session() as s:
        job = s.get_one(MoveJob, job_id)
        return ex, job_id, job.src_tier_id, job.dst_tier_id


def claim_all(ex: Executor, job_id: int, src: int, dst: int) -> list[int]:
    return [item.ref for item in ex._claimed_items(job_id, src, dst, threading.Event(), None)]


def test_every_step_is_claimed_once_while_the_earlier_claims_are_still_in_flight(app: App) -> None:
    ex, job_id, src, dst = start_job(app)
    claimed = claim_all(ex, job_id, src, dst)  # nothing recorded meanwhile: every claimed step stays in flight
    with app.catalog.session() as s:
        steps = s.execute(select(MoveStep.id, MoveStep.state, MoveStep.lease_owner)
                          .where(MoveStep.job_id == job_id)).all()
        copying = s.scalars(select(Replica.member_id).where(Replica.tier_id == dst, Replica.state == "copying")).all()
    assert len(claimed) == len(set(claimed)) == MEMBERS
    assert sorted(claimed) == sorted(sid for sid, _, _ in steps)
    assert {(state, owner) for _, state, owner in steps} == {("copying", ex.worker_id)}
    # the destination replica rows exist before any byte is written
    assert len(copying) == MEMBERS
    assert claim_all(ex, job_id, src, dst) == []  # nothing left to claim


def test_a_lease_that_ran_out_passes_to_another_worker_and_fences_off_the_first(
    app: App, clock: FixedClock
) -> None:
    first, job_id, src, dst = start_job(app)
    taken = claim_all(first, job_id, src, dst)
    second = Executor(app)
    assert claim_all(second, job_id, src, dst) == []  # live leases of a running process are left alone
    clock.advance(seconds=app.config.transfer.lease_seconds + 1)
    assert sorted(claim_all(second, job_id, src, dst)) == sorted(taken)
    # the first worker's copies finished late: its epochs are stale, so nothing of it is recorded (only the
    # step id, ``ref``, of a finished copy is looked at)
    outcome = JobOutcome(job_id, "d@1", "hot", "warm", "running", MEMBERS, 0)
    batch = [CopyResult(CopyItem("", "", 0, None, ref=sid), ok=True) for sid in taken]
    with pytest.raises(LeaseLost):
        first._record_verified(batch, dst, outcome)
    assert outcome.copied == 0
    with app.catalog.session() as s:
        owners = set(s.scalars(select(MoveStep.lease_owner).where(MoveStep.job_id == job_id)))
        verified = s.scalar(select(Replica.id).where(Replica.tier_id == dst, Replica.state == "verified").limit(1))
    assert owners == {second.worker_id}
    assert verified is None
    assert check_invariant(app).problems == []

