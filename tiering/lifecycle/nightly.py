"""Use cases of the lifecycle: plan, why, policy runs and the nightly cycle (pins are in :mod:`.pins`, the
report in :mod:`.report`, access ingestion in :mod:`tiering.access.ingest`).

The CLI (``tiering plan/why/apply/runs``) and the scheduler call these functions; none of them parse arguments or print.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tiering.app import App
from tiering.catalog.leader import LeaderFence, check_fence
from tiering.catalog.models import AuditEntry, PolicyRun
from tiering.catalog.queries import find_dataset
from tiering.catalog.usage import fold_tier_usage
from tiering.errors import ConflictError, NotLeader, TieringError, UsageError
from tiering.lifecycle.criteria import check_policy_against_tiers
from tiering.lifecycle.explain import Plan, explain
from tiering.lifecycle.facts import gather_dataset_facts, gather_tier_facts
from tiering.lifecycle.model import Policy, load_policy
from tiering.lifecycle.planner import plan_moves
from tiering.moves.executor import Executor, JobOutcome

#: events rolled up per catalog transaction during an import (a batch is applied whole or not at all)


# ------------------------------------------------------------------------------------------ policy


def default_policy_path() -> Path:
    return Path(str(resources.files("tiering.policies").joinpath("default.yaml")))


def load_active_policy(app: App, path: str | None = None) -> Policy:
    """The policy named by ``path``, else the config's ``policy:``, else the shipped default."""
    if path is not None:
        chosen = Path(path)
    elif app.config.policy:
        chosen = app.config.resolve_path(app.config.policy)
    else:
        chosen = default_policy_path()
    policy = load_policy(chosen)
    with app.catalog.session() as s:
        check_policy_against_tiers(policy, _tier_facts(app, s))
    return policy


def _tier_facts(app: App, session: Any) -> list[Any]:
    cfg = app.config
    return gather_tier_facts(
        session,
        [(n, t.rank, t.capacity, bool(t.archive)) for n, t in cfg.tiers.items()],
    )


def make_plan(app: App, *, policy: Policy, now: dt.datetime | None = None) -> Plan:
    """Gather facts at ``now`` (default: the app clock) and plan. Reads the catalog, changes nothing."""
    at = now or app.now()
    with _cyclic_gc_paused():
        with app.catalog.session() as s:
            facts = gather_dataset_facts(
                s, now=at, half_life_days=policy.heat_half_life_days, windows=policy.read_windows()
            )
            tiers = _tier_facts(app, s)
        return plan_moves(facts, tiers, policy=policy, now=at, window_timezone=schedule_timezone(app))


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block; reference counting still frees everything else.

    Planning a large catalog builds millions of objects that live until the plan is dropped. The collector
    would rescan all of them every time the young generations overflow: a third of the planning time, and
    nothing to collect, since facts and candidates form no cycles.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def schedule_timezone(app: App) -> dt.tzinfo:
    """The zone the nightly cron and the policy window are read in (``schedule.timezone``, default local)."""
    name = app.config.schedule.timezone
    if name == "local":
        return dt.datetime.now().astimezone().tzinfo or dt.UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        from tiering.errors import ConfigError

        raise ConfigError(f"schedule.timezone: unknown time zone {name!r} (e.g. UTC, Europe/Paris)") from None


def why(app: App, label: str, *, policy: Policy, now: dt.datetime | None = None) -> tuple[str, dict[str, Any]]:
    """The explanation ``tiering why`` prints, and the decision as JSON."""
    with app.catalog.session() as s:
        ds_id = find_dataset(s, label).id
    plan = make_plan(app, policy=policy, now=now)
    decision = plan.decisions[ds_id]
    return explain(plan, ds_id), decision.to_json()


# ------------------------------------------------------------------------------------------ nightly cycle


@dataclass
class CycleResult:
    run_id: int | None
    state: str  # done | failed | skipped | interrupted
    planned: int = 0
    done: int = 0
    failed: int = 0
    bytes_moved: int = 0
    skipped_for_budget: int = 0
    resumed: int = 0
    note: str = ""
    moves: list[dict[str, Any]] = field(default_factory=list)


def nightly_cycle(
    app: App,
    *,
    policy: Policy,
    now: dt.datetime | None = None,
    run_key: str | None = None,
    ignore_window: bool = False,
    stop: threading.Event | None = None,
    fence: LeaderFence | None = None,
) -> CycleResult:
    """Resume unfinished moves, plan, and execute the plan within its budget and time window.

    ``run_key`` (e.g. ``nightly:2026-11-30``) makes the run unique: a second scheduler firing for the same
    night finds the key taken and does nothing. A run skipped because it is outside the policy's window gives
    its key back, so the night's run inside the window still happens. Records a ``policy_runs`` row and audit
    entries. ``fence``: the run is a scheduler leader's; its row and every job it creates are written only
    while that leader's epoch is current (else :class:`~tiering.errors.NotLeader`).
    """
    at = now or app.now()
    executor = Executor(app)
    try:
        with app.catalog.session() as s:
            check_fence(s, fence)
            run = PolicyRun(policy_path=policy.source, started_at=at, state="running", run_key=run_key)
            s.add(run)
            s.flush()
            run_id = run.id
    except IntegrityError:
        return CycleResult(None, "skipped", note=f"run {run_key} already happened or is under way elsewhere")
    except TieringError as exc:
        if isinstance(exc.__cause__, IntegrityError):
            return CycleResult(None, "skipped", note=f"run {run_key} already happened or is under way elsewhere")
        raise

    result = CycleResult(run_id, "running")
    # work left by a crash is finished first: it holds datasets the plan would otherwise skip as busy
    resumed = executor.resume_all()
    result.resumed = len(resumed)
    with app.catalog.session() as s:
        fold_tier_usage(s)  # PostgreSQL's usage counters gain a row per writing backend: fold them nightly
    plan = make_plan(app, policy=policy, now=at)
    result.planned = len(plan.moves)
    result.skipped_for_budget = len(plan.skipped_for_budget)
    if not plan.window_open and not ignore_window:
        result.state = "skipped"
        result.note = f"outside the window {plan.window}"
    else:
        for move in plan.moves:
            if stop is not None and stop.is_set():
                result.state = "interrupted"
                result.note = "stopped before all moves ran; unfinished jobs resume next run"
                break
            try:
                outcome = _run_move(app, executor, move, run_id, stop, fence)
            except NotLeader as exc:
                result.state = "interrupted"
                result.note = f"stopped: {exc}"
                break
            result.moves.append({
                "dataset": move.label, "from": move.from_tier, "to": move.to_tier, "bytes": move.size_bytes,
                "rule": move.rule, "reason": move.reason, "state": outcome.state if outcome else "skipped",
                "error": outcome.error if outcome else None,
            })
            if outcome is None:
                continue
            if outcome.state == "done":
                result.done += 1
                result.bytes_moved += outcome.bytes
            elif outcome.state == "failed":
                result.failed += 1
        if result.state == "running":
            result.state = "done" if result.failed == 0 else "failed"
    scrubbed = _scrub_summary(app)
    finished = app.now()
    with app.catalog.session() as s:
        run = s.get_one(PolicyRun, run_id)
        run.state = result.state
        if result.state == "skipped":
            run.run_key = None  # nothing ran: the key stays free for the run inside the window
        run.finished_at = finished
        run.planned, run.done, run.failed, run.bytes_moved = result.planned, result.done, result.failed, \
            result.bytes_moved
        run.summary = {"run_key": run_key,
                       "note": result.note, "resumed": result.resumed, "skipped_for_budget": result.skipped_for_budget,
                       "moves": result.moves[:500], "totals": plan.to_json().get("tiers", []),
                       "scrub": scrubbed}
        s.add(AuditEntry(at=finished, actor=app.actor, action="policy_run", result=result.state,
                         bytes=result.bytes_moved,
                         detail={"run_id": run_id, "planned": result.planned, "done": result.done,
                                 "failed": result.failed, "policy": policy.source, "note": result.note}))
    return result


def _scrub_summary(app: App) -> dict[str, Any]:
    """The night's scrub in report mode (no --deep, nothing removed): counts of findings by kind.

    A scrub that cannot run (the catalog or a tier unreachable) is noted, never fails the night.
    """
    from tiering.scrub import scrub

    try:
        report = scrub(app)
    except TieringError as exc:
        return {"error": str(exc)}
    return {"counts": report.counts, "unfixed": report.unfixed}


def _run_move(app: App, executor: Executor, move: Any, run_id: int, stop: threading.Event | None,
              fence: LeaderFence | None) -> JobOutcome | None:
    reason = f"rule {move.rule}: {move.reason}"
    try:
        job_id = executor.create_job(move.dataset_id, move.to_tier, reason=reason, policy_run_id=run_id,
                                     fence=fence)
    except ConflictError:
        return None  # someone moved or restored it since the plan was made
    except UsageError:
        return None  # already on the target tier
    return executor.run_job(job_id, stop=stop)


def policy_runs(app: App, *, limit: int = 20) -> list[dict[str, Any]]:
    with app.catalog.session() as s:
        return [
            {"id": r.id, "state": r.state, "run_key": r.run_key, "started_at": r.started_at.isoformat(),
             "finished_at": r.finished_at.isoformat() if r.finished_at else None, "planned": r.planned,
             "done": r.done, "failed": r.failed, "bytes_moved": r.bytes_moved, "policy": r.policy_path}
            for r in s.scalars(select(PolicyRun).order_by(PolicyRun.id.desc()).limit(limit))
        ]
