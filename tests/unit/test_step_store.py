"""The StepStore checks every state change against the tables before it sends a statement."""

from __future__ import annotations

import pytest

from tiering.catalog.states import ReplicaState, StepState
from tiering.catalog.steps import replica_moves, step_moves
from tiering.errors import IllegalTransition


def test_a_step_cannot_be_committed_before_it_was_verified() -> None:
    with pytest.raises(IllegalTransition):
        step_moves([StepState.VERIFIED, StepState.PLANNED], StepState.COMMITTED)
    assert step_moves([StepState.VERIFIED], StepState.COMMITTED) == ["verified"]


def test_a_replica_being_deleted_never_becomes_live_again() -> None:
    with pytest.raises(IllegalTransition):
        replica_moves([ReplicaState.DELETING], ReplicaState.LIVE)
    assert replica_moves([ReplicaState.VERIFIED], ReplicaState.LIVE) == ["verified"]
