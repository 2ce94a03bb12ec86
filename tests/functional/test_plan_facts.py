"""Planning facts read from the catalog, on SQLite and PostgreSQL.

``gather_dataset_facts`` reads raw column values and ``gather_tier_facts`` reads the usage counters that
triggers keep; the reference implementations below are the straightforward ones (ORM rows with their type
processing; usage summed over every replica and its member). On a catalog with pins (active, expired, with
no reason), busy datasets (unfinished moves, queued and running restores, a dataset being moved), tags, reads
(old, recent, dated after today), staged restore copies, copies being written and copies being deleted, both
give the same facts, the same plan, and the same explanation of every dataset.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest
from helpers import open_app, workspace_config
from sqlalchemy import Float, case, cast, func, literal, select
from sqlalchemy.orm import Session

from tiering.app import App
from tiering.catalog.models import (
    AccessDaily,
    Dataset,
    Member,
    MoveJob,
    Pin,
    Replica,
    RestoreRequest,
    Tier,
    TierUsageCounter,
)
from tiering.catalog.states import TRUSTED_REPLICA_STATES, UNFINISHED_JOB_STATES, ReplicaState
from tiering.catalog.usage import count_tier_usage, fold_tier_usage, tier_usage
from tiering.lifecycle.explain import Plan, explain
from tiering.lifecycle.facts import gather_dataset_facts, gather_tier_facts, heat_weights
from tiering.lifecycle.inputs import DatasetFacts, TierFacts
from tiering.lifecycle.inputs import Pin as PinFact
from tiering.lifecycle.model import parse_policy
from tiering.lifecycle.nightly import make_plan
from tiering.lifecycle.planner import plan_moves

NOW = dt.datetime(2026, 6, 1, 3, 0, 17, 123456, tzinfo=dt.UTC)
GiB = 2**30
TIERS = {
    "hot": {"rank": 0, "capacity": "700GiB"},
    "warm": {"rank": 1, "capacity": "700GiB"},
    "cold": {"rank": 2, "archive": "packed"},
}
POLICY = parse_policy({
    "heat_half_life_days": 5,
    "tiers": {"hot": {"high_watermark": 0.5, "low_watermark": 0.3, "min_residency_days": 3},
              "warm": {"min_residency_days": 10}},
    "rules": [
        {"name": "models-stay", "move": {"from": "hot", "to": "warm"},
         "when": {"kind": "model", "owner": ["nobody"]}},
        {"name": "demote-idle", "move": {"from": "hot", "to": "warm"},
         "when": {"idle_days": ">= 20", "reads_30d": "< 3"}, "unless": [{"tags": {"retention": ["keep-online"]}}]},
        {"name": "promote-busy", "move": {"from": "warm", "to": "hot"}, "when": {"reads_7d": ">= 4"}},
        {"name": "archive-stale", "move": {"from": "warm", "to": "cold"},
         "when": {"idle_days": ">= 60", "name": ["ds*"], "heat": "< 1"},
         "unless": [{"tags": {"retention": ["keep-online"]}}, {"size": "> 9GiB", "age_days": "< 100"}]},
    ],
    "budget": {"max_datasets": 12, "max_bytes": "80GiB"},
}, source="test-policy.yaml")


# --- the straightforward implementations --------------------------------------------------------------------


def reference_dataset_facts(session: Session, *, now: dt.datetime, half_life_days: float,
                            windows: Iterable[int]) -> list[DatasetFacts]:
    """Facts through ORM rows and the columns' own type processing, one query per kind of fact."""
    today = now.astimezone(dt.UTC).date()
    windows = sorted(set(windows) | {1, 7, 30, 90})
    weights = heat_weights(today, half_life_days)
    oldest = min(today - dt.timedelta(days=max(windows) - 1), weights[-1][0])
    window_cols = [
        func.sum(case((AccessDaily.day > today - dt.timedelta(days=n), AccessDaily.reads), else_=0)) for n in windows
    ]
    weight_expr = case(*[(AccessDaily.day == day, literal(w, Float)) for day, w in weights],
                       else_=literal(0.0, Float))
    weight_expr = case((AccessDaily.day > today, literal(1.0, Float)), else_=weight_expr)
    reads: dict[int, tuple[dict[int, int], float]] = {}
    for row in session.execute(
        select(AccessDaily.dataset_id, *window_cols, func.sum(cast(AccessDaily.reads, Float) * weight_expr))
        .where(AccessDaily.day >= oldest).group_by(AccessDaily.dataset_id)
    ):
        reads[row[0]] = ({n: int(row[i + 1] or 0) for i, n in enumerate(windows)}, float(row[-1] or 0.0))
    pins: dict[int, list[PinFact]] = {}
    for ds_id, tier, until, reason in session.execute(
        select(Pin.dataset_id, Tier.name, Pin.until, Pin.reason).join(Tier, Tier.id == Pin.tier_id)
        .where(Pin.until > now)
    ):
        pins.setdefault(ds_id, []).append(PinFact(tier=tier, until=until, reason=reason))
    busy = set(session.scalars(
        select(MoveJob.dataset_id).where(MoveJob.state.in_([str(s) for s in UNFINISHED_JOB_STATES]))))
    busy |= set(session.scalars(
        select(RestoreRequest.dataset_id).where(RestoreRequest.state.in_(["queued", "running"]))))
    out = []
    for ds in session.scalars(select(Dataset).where(Dataset.state.in_(["active", "moving"])).order_by(Dataset.id)):
        counts, heat = reads.get(ds.id, ({n: 0 for n in windows}, 0.0))
        out.append(DatasetFacts(
            id=ds.id, name=ds.name, version=ds.version, kind=ds.kind, owner=ds.owner, home_tier=ds.home_tier.name,
            size_bytes=ds.size_bytes, created_at=ds.created_at, home_since=ds.home_since, tags=ds.tags or {},
            last_access_at=ds.last_access_at, reads=counts, heat=heat, pins=tuple(pins.get(ds.id, ())),
            busy=ds.id in busy or ds.state == "moving",
        ))
    return out


def reference_tier_facts(session: Session, tiers: Sequence[tuple[str, int, int | None, bool]]) -> list[TierFacts]:
    """Usage summed over every copying, verified and live replica and its member's size."""
    used = dict(session.execute(
        select(Tier.name, func.sum(Member.size)).join(Replica, Replica.tier_id == Tier.id)
        .join(Member, Member.id == Replica.member_id)
        .where(Replica.state.in_([str(s) for s in (*TRUSTED_REPLICA_STATES, ReplicaState.COPYING)]))
        .group_by(Tier.name)
    ).all())
    return [TierFacts(name, rank, capacity, int(used.get(name) or 0), archive)
            for name, rank, capacity, archive in tiers]


# --- the catalog --------------------------------------------------------------------------------------------


def _moment(rng: random.Random, *, after: dt.datetime, before: dt.datetime = NOW) -> dt.datetime:
    return after + (before - after) * rng.random()


def fill(app: App, *, datasets: int = 240, seed: int = 3) -> None:
    """Datasets on every tier with every kind of fact the planner reads (see the module docstring)."""
    rng = random.Random(seed)
    with app.catalog.session() as s:
        tier_ids = {t.name: t.id for t in s.scalars(select(Tier))}
        names = list(tier_ids)
        for i in range(1, datasets + 1):
            created = _moment(rng, after=NOW - dt.timedelta(days=500))
            home = rng.choice(["hot", "hot", "warm", "warm", "cold"])
            last = None if rng.random() < 0.3 else _moment(rng, after=created)
            if i % 17 == 0:
                last = NOW + dt.timedelta(hours=5)  # a log with clock skew
            ds = Dataset(
                name=f"ds{i:04d}" if i % 11 else f"scratch{i}", version=str(1 + i % 3),
                kind="model" if i % 9 == 0 else "dataset", owner=rng.choice(["alice", "bob", "nobody", ""]),
                tags=rng.choice([{}, {}, {"retention": "keep-online"}, {"team": "vision"},
                                 {"team": "ml", "retention": "keep-online"}]),
                home_tier_id=tier_ids[home], state="moving" if i % 29 == 0 else "deleted" if i % 31 == 0 else "active",
                size_bytes=0, created_at=created, home_since=_moment(rng, after=created), last_access_at=last,
            )
            s.add(ds)
            s.flush()
            members = [Member(dataset_id=ds.id, path=f"part-{j}", size=rng.randrange(1, 4 * GiB), xxh3="0" * 32)
                       for j in range(rng.randrange(1, 4))]
            s.add_all(members)
            s.flush()
            ds.member_count, ds.size_bytes = len(members), sum(m.size for m in members)
            for m in members:
                # half the writers give the size, the others leave it to the trigger
                s.add(Replica(member_id=m.id, tier_id=tier_ids[home], key=f"k/{ds.id}/{m.path}", state="live",
                              size=m.size if m.id % 2 else None))
            other = rng.choice([n for n in names if n != home])
            extra = rng.random()
            if extra < 0.08:  # a staged restore copy
                for m in members:
                    s.add(Replica(member_id=m.id, tier_id=tier_ids[other], key=f"s/{m.id}", state="live",
                                  expires_at=NOW + dt.timedelta(days=3)))
            elif extra < 0.14:  # a move under way: copies being written and verified
                for j, m in enumerate(members):
                    s.add(Replica(member_id=m.id, tier_id=tier_ids[other], key=f"c/{m.id}",
                                  state="copying" if j % 2 else "verified"))
            elif extra < 0.18:  # copies being deleted: they no longer count
                for m in members:
                    s.add(Replica(member_id=m.id, tier_id=tier_ids[other], key=f"d/{m.id}", state="deleting"))
            if rng.random() < 0.6:
                for day in rng.sample(range(-2, 120), rng.randrange(1, 8)):
                    s.add(AccessDaily(dataset_id=ds.id, day=NOW.date() - dt.timedelta(days=day),
                                      reads=rng.randrange(1, 9)))
            if i % 7 == 0:
                s.add(Pin(dataset_id=ds.id, tier_id=tier_ids[rng.choice(names)], created_at=created, actor="t",
                          until=NOW + dt.timedelta(days=rng.choice([-3, 2, 40]), microseconds=7),
                          reason=rng.choice(["", "model fraud@v3 is live"])))
            if i % 13 == 0:
                s.add(MoveJob(dataset_id=ds.id, src_tier_id=tier_ids[home], dst_tier_id=tier_ids[other],
                              state=rng.choice(["planned", "running", "committed", "done", "failed"]),
                              created_at=created, updated_at=created))
            if i % 19 == 0:
                s.add(RestoreRequest(dataset_id=ds.id, tier_id=tier_ids[other], days=3, priority=1,
                                     state=rng.choice(["queued", "running", "ready", "expired"]),
                                     created_at=created, updated_at=created))
        # every replica write the triggers must follow: a state change, a move of tier, a delete
        s.flush()
        some = list(s.scalars(select(Replica).order_by(Replica.id).limit(40)))
        for r in some[:10]:
            r.state = "deleting"
        for r in some[10:15]:
            s.delete(r)
        s.flush()
        s.execute(Member.__table__.delete().where(Member.id.in_(
            select(Member.id).where(Member.dataset_id == some[20].member.dataset_id).scalar_subquery())))


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    catalog = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    tiers = {name: {**knobs, "backend": (tmp_path / name).as_uri()} for name, knobs in TIERS.items()}
    a = open_app(workspace_config(tmp_path, tiers=tiers, catalog=catalog))
    fill(a)
    yield a
    a.close()


def tier_rows(app: App) -> list[tuple[str, int, int | None, bool]]:
    return [(n, t.rank, t.capacity, bool(t.archive)) for n, t in app.config.tiers.items()]


def same_plans(a: Plan, b: Plan) -> None:
    assert a.to_json() == b.to_json()
    assert a.moves == b.moves and a.skipped_for_budget == b.skipped_for_budget
    assert list(a.decisions) == list(b.decisions)
    for ds_id in a.decisions:
        assert a.decisions[ds_id] == b.decisions[ds_id]
        assert explain(a, ds_id) == explain(b, ds_id)


# --- the tests ----------------------------------------------------------------------------------------------


def test_the_fast_facts_equal_the_orm_facts_field_for_field(app: App) -> None:
    with app.catalog.session() as s:
        fast = gather_dataset_facts(s, now=NOW, half_life_days=5, windows=POLICY.read_windows())
        slow = reference_dataset_facts(s, now=NOW, half_life_days=5, windows=POLICY.read_windows())
    assert fast == slow
    # equal and alike: the same UTC zone object, the same types
    assert [repr(f) for f in fast] == [repr(f) for f in slow]
    assert sum(f.busy for f in fast) > 5 and sum(bool(f.pins) for f in fast) > 5
    assert sum(bool(f.tags) for f in fast) > 20 and sum(f.heat > 0 for f in fast) > 20


def test_tier_usage_from_the_counters_equals_the_sum_over_replicas(app: App) -> None:
    with app.catalog.session() as s:
        assert gather_tier_facts(s, tier_rows(app)) == reference_tier_facts(s, tier_rows(app))
        assert tier_usage(s) == count_tier_usage(s) and len(tier_usage(s)) == 3
    with app.catalog.session() as s:
        fold_tier_usage(s)
    with app.catalog.session() as s:
        assert tier_usage(s) == count_tier_usage(s)
        # PostgreSQL's per-backend rows are folded into slot 0; SQLite only ever has slot 0
        assert set(s.scalars(select(TierUsageCounter.slot))) == {0}


def test_the_plan_and_every_explanation_are_those_of_the_straightforward_facts(app: App) -> None:
    with app.catalog.session() as s:
        slow = plan_moves(reference_dataset_facts(s, now=NOW, half_life_days=5, windows=POLICY.read_windows()),
                          reference_tier_facts(s, tier_rows(app)), policy=POLICY, now=NOW)
    fast = make_plan(app, policy=POLICY, now=NOW)
    same_plans(fast, slow)
    # the catalog exercises what the plan can say: relief, rule moves, budget, pins, residency, busy, archive
    outcomes = {str(k) for k, v in fast.outcome_counts.items() if v}
    assert {"move", "budget", "watermark", "pinned", "residency", "busy", "archived", "no_rule"} <= outcomes
    assert {str(m.cause) for m in (*fast.moves, *fast.skipped_for_budget)} >= {"watermark", "demotion"}


def test_a_plan_is_pure_data_equal_to_itself_when_made_twice(app: App) -> None:
    first, second = make_plan(app, policy=POLICY, now=NOW), make_plan(app, policy=POLICY, now=NOW)
    same_plans(first, second)
    assert len(first.skipped_for_budget) > 0
    assert first.skipped_for_budget[:2] == tuple(first.skipped_for_budget)[:2]
