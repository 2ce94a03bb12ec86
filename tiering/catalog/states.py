"""State machines as tables. An illegal move raises :class:`IllegalTransition`."""

from __future__ import annotations

from enum import StrEnum

from tiering.errors import IllegalTransition


class JobPurpose(StrEnum):
    """Why a job copies: a move changes the dataset's home; a restore stages copies that expire."""

    MOVE = "move"
    RESTORE = "restore"


class DatasetState(StrEnum):
    """``datasets.state``; the values are the strings the catalog stores."""

    REGISTERING = "registering"  # a registration owns the row and is uploading; never read or moved
    ACTIVE = "active"
    MOVING = "moving"  # a move job is copying it; still read from its home tier
    DELETED = "deleted"


#: datasets the planner sees (a moving one is planned as busy)
PLANNED_DATASET_STATES = (DatasetState.ACTIVE, DatasetState.MOVING)


class StepState(StrEnum):
    PLANNED = "planned"
    COPYING = "copying"
    VERIFIED = "verified"
    COMMITTED = "committed"
    SOURCE_DELETED = "source_deleted"
    FAILED = "failed"


STEP_TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    # PLANNED -> VERIFIED: a restore's member already staged on the target needs no copy
    StepState.PLANNED: frozenset({StepState.COPYING, StepState.VERIFIED, StepState.FAILED}),
    # COPYING -> COPYING is a re-claim after a lost lease: the copy starts again and overwrites
    StepState.COPYING: frozenset({StepState.COPYING, StepState.VERIFIED, StepState.FAILED, StepState.PLANNED}),
    StepState.VERIFIED: frozenset({StepState.COMMITTED, StepState.FAILED}),
    StepState.COMMITTED: frozenset({StepState.SOURCE_DELETED}),
    StepState.SOURCE_DELETED: frozenset(),
    StepState.FAILED: frozenset({StepState.PLANNED}),
}


class JobState(StrEnum):
    PLANNED = "planned"
    RUNNING = "running"
    COMMITTED = "committed"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PLANNED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.COMMITTED, JobState.FAILED, JobState.CANCELLED}),
    JobState.COMMITTED: frozenset({JobState.DONE}),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}

UNFINISHED_JOB_STATES = (JobState.PLANNED, JobState.RUNNING, JobState.COMMITTED)


class ReplicaState(StrEnum):
    COPYING = "copying"  # bytes may be partial: never read, deleted on abandon
    VERIFIED = "verified"  # bytes hash to the catalog digest, not yet the served copy
    LIVE = "live"  # a served copy
    DELETING = "deleting"  # superseded; the object is being removed


# A claim takes over the destination row of its member whatever copy it held, LIVE excepted (the row is
# the place of the new attempt: its object is written again); a staged (LIVE, expiring) copy that a move
# writes again is verified like a new one, and becomes the home copy (LIVE -> LIVE, no longer expiring).
REPLICA_TRANSITIONS: dict[ReplicaState, frozenset[ReplicaState]] = {
    ReplicaState.COPYING: frozenset({ReplicaState.COPYING, ReplicaState.VERIFIED, ReplicaState.DELETING}),
    ReplicaState.VERIFIED: frozenset({ReplicaState.COPYING, ReplicaState.LIVE, ReplicaState.DELETING}),
    ReplicaState.LIVE: frozenset({ReplicaState.VERIFIED, ReplicaState.LIVE, ReplicaState.DELETING}),
    ReplicaState.DELETING: frozenset({ReplicaState.COPYING}),
}

TRUSTED_REPLICA_STATES = (ReplicaState.VERIFIED, ReplicaState.LIVE)


def check_step(current: str, wanted: str) -> None:
    if StepState(wanted) not in STEP_TRANSITIONS[StepState(current)]:
        raise IllegalTransition("step", current, wanted)


def check_job(current: str, wanted: str) -> None:
    if JobState(wanted) not in JOB_TRANSITIONS[JobState(current)]:
        raise IllegalTransition("move job", current, wanted)


def check_replica(current: str, wanted: str) -> None:
    if ReplicaState(wanted) not in REPLICA_TRANSITIONS[ReplicaState(current)]:
        raise IllegalTransition("replica", current, wanted)
