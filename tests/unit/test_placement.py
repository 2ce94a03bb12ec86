"""The placement engine: capacity, floors, hysteresis, determinism and its explanations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiering.lifecycle.placement import (
    DAY,
    NO_FLOOR,
    NO_TIER,
    DatasetTable,
    DecayedUses,
    Knobs,
    PlacementError,
    TierSpec,
    plan_admission,
    plan_placement,
    plan_promotions,
)

GB = 10**9
NOW = 100 * DAY


def tiers(hot: int, warm: int | None = None) -> tuple[TierSpec, ...]:
    return (
        TierSpec("hot", 0, hot, 100.0),
        TierSpec("warm", 1, warm, 20.0),
        TierSpec("cold", 2, None, 2.0, archive=True, restore_usd_per_tib=20.0),
    )


def table(sizes: list[int], current: list[int], uses: list[list[float]], **extra: object) -> DatasetTable:
    counter = DecayedUses(len(sizes), half_life_days=Knobs().half_life_days, epoch=0.0)
    for i, times in enumerate(uses):
        counter.record([i] * len(times), times)
    return DatasetTable(size=np.asarray(sizes, dtype=np.int64), tier=np.asarray(current, dtype=np.int8),
                        uses=counter, **extra)  # type: ignore[arg-type]


def bytes_on(t: DatasetTable, target: np.ndarray, rank: int) -> int:
    return int(t.size[target == rank].sum())


facts = st.lists(
    st.tuples(
        st.integers(1, 50) .map(lambda g: g * GB // 10),  # size
        st.integers(0, 2),  # current tier
        st.lists(st.floats(0, NOW), max_size=6),  # use times
        st.sampled_from([0, 1, NO_FLOOR]),  # floor
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(rows=facts, hot_share=st.floats(0.0, 0.6), warm_share=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_no_pass_ever_fills_a_bounded_tier_past_its_capacity(
    rows: list[tuple[int, int, list[float], int]], hot_share: float, warm_share: float | None
) -> None:
    sizes = [r[0] for r in rows]
    total = sum(sizes)
    hot = int(total * hot_share)
    warm = None if warm_share is None else int(total * warm_share)
    # start from a state that fits: fill hot, then warm, in row order
    current, used = [], [0, 0]
    for size, want, _, _ in rows:
        rank = want
        for r, cap in ((0, hot), (1, warm)):
            if rank == r and cap is not None and used[r] + size > cap:
                rank += 1
        if rank == 1 and warm is not None and used[1] + size > warm:
            rank = 2
        if rank < 2:
            used[rank] += size
        current.append(rank)
    t = table(sizes, current, [r[2] for r in rows], floor=np.asarray([r[3] for r in rows], dtype=np.int8))
    spec = tiers(hot, warm)
    nightly = plan_placement(t, spec, Knobs(), now=NOW)
    assert bytes_on(t, nightly.target, 0) <= hot
    if warm is not None:
        assert bytes_on(t, nightly.target, 1) <= warm
    short = plan_promotions(t, spec, Knobs(), now=NOW, candidates=np.arange(len(sizes)))
    assert bytes_on(t, short.target, 0) <= hot
    if warm is not None:
        assert bytes_on(t, short.target, 1) <= warm


def test_a_pinned_dataset_stays_hot_even_when_others_score_higher() -> None:
    busy = [NOW - h * 3600 for h in range(1, 40)]
    t = table([10 * GB, 10 * GB], [0, 1], [[1.0], busy], floor=np.asarray([0, NO_FLOOR], dtype=np.int8))
    plan = plan_placement(t, tiers(10 * GB), Knobs(), now=NOW)
    assert plan.target.tolist()[0] == 0
    assert plan.target.tolist()[1] == 1


def test_a_floor_that_does_not_fit_is_reported_and_capacity_still_holds() -> None:
    t = table([10 * GB, 10 * GB], [1, 1], [[1.0], [2.0]], floor=np.asarray([0, 0], dtype=np.int8))
    plan = plan_placement(t, tiers(15 * GB), Knobs(), now=NOW)
    assert sorted(plan.target.tolist()) == [0, 1]
    assert len(plan.conflicts) == 1 and "no room" in plan.conflicts[0]


def test_minimum_residency_keeps_a_dataset_from_going_colder_until_it_ends() -> None:
    t = table([10 * GB, 10 * GB], [0, 1], [[NOW - 2 * DAY], [NOW - 3600] * 5],
              resident_until=np.asarray([NOW + DAY, 0.0]))
    assert plan_placement(t, tiers(10 * GB), Knobs(), now=NOW).target.tolist() == [0, 1]
    t.resident_until = np.asarray([NOW - 1.0, 0.0])
    assert plan_placement(t, tiers(10 * GB), Knobs(), now=NOW).target.tolist() == [1, 0]


def test_a_newcomer_that_scores_only_a_little_higher_does_not_displace_a_resident() -> None:
    resident = [NOW - d * DAY for d in range(1, 11)]
    newcomer = [NOW - d * DAY for d in range(1, 11)] + [NOW - 11 * DAY]
    t = table([10 * GB, 10 * GB], [0, 1], [resident, newcomer])
    knobs = Knobs(score="lrfu", hysteresis=0.25)
    assert plan_placement(t, tiers(10 * GB), knobs, now=NOW).target.tolist() == [0, 1]
    assert plan_placement(t, tiers(10 * GB), Knobs(score="lrfu", hysteresis=0.0, move_cost_uses_per_gib=0.0),
                          now=NOW).target.tolist() == [1, 0]


def test_a_swap_explains_its_score_the_tiers_lowest_and_its_payback() -> None:
    t = table([10 * GB, 1 * GB], [0, 1], [[NOW - 2 * DAY], [NOW - 3600 * h for h in range(1, 30)]])
    plan = plan_placement(t, tiers(10 * GB), Knobs(), now=NOW)
    up = next(m for m in plan.moves if m.dst == "hot")
    assert up.src == "warm" and "scores" in up.reason and "pays after" in up.reason
    down = next(m for m in plan.moves if m.src == "hot")
    assert "below hot's lowest kept" in down.reason


def test_the_same_facts_give_the_same_plan() -> None:
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 100, 300).tolist()
    uses = [sorted(rng.uniform(0, NOW, rng.integers(0, 5)).tolist()) for _ in sizes]
    current = rng.integers(0, 3, 300).tolist()
    a = plan_placement(table(sizes, current, uses), tiers(2000), Knobs(), now=NOW)
    b = plan_placement(table(sizes, current, uses), tiers(2000), Knobs(), now=NOW)
    assert a.target.tolist() == b.target.tolist()
    assert [(m.index, m.dst, m.reason) for m in a.moves] == [(m.index, m.dst, m.reason) for m in b.moves]


def test_an_idle_dataset_goes_to_the_archive_unless_its_floor_forbids_it() -> None:
    t = table([GB, GB], [1, 1], [[1.0], [1.0]], floor=np.asarray([NO_FLOOR, 1], dtype=np.int8))
    plan = plan_placement(t, tiers(0), Knobs(), now=NOW)
    assert plan.target.tolist() == [2, 1]
    assert "idle" in plan.moves[0].reason


def test_a_busy_archived_dataset_is_recalled_by_the_nightly_pass() -> None:
    t = table([GB], [2], [[NOW - 3600 * h for h in range(1, 60)]])
    assert plan_placement(t, tiers(0), Knobs(), now=NOW).target.tolist() == [1]


def test_admission_lands_a_new_dataset_on_hot_after_moving_out_the_lowest_resident() -> None:
    t = table([6 * GB, 4 * GB, 5 * GB], [0, 0, NO_TIER], [[1.0], [NOW - 3600], [NOW]])
    plan = plan_admission(t, tiers(10 * GB), Knobs(), now=NOW, index=2)
    assert plan.target.tolist() == [1, 0, 0]
    assert plan.moves[-1].reason.startswith("new;")


def test_the_short_pass_respects_its_move_budget() -> None:
    n = 10
    t = table([GB] * n, [1] * n, [[NOW - 120.0, NOW - 60.0] for _ in range(n)])
    plan = plan_promotions(t, tiers(100 * GB), Knobs(promotion_max_moves=3), now=NOW, candidates=np.arange(n))
    assert int((plan.target == 0).sum()) == 3


def test_an_unknown_score_is_refused() -> None:
    with pytest.raises(PlacementError, match="unknown placement score"):
        Knobs(score="magic")


def test_decayed_uses_halve_every_half_life_and_survive_a_rebase() -> None:
    uses = DecayedUses(1, half_life_days=1.0, epoch=0.0)
    uses.record([0], [0.0])
    assert uses.at(DAY)[0] == pytest.approx(0.5)
    uses.record([0], [500 * DAY])  # far enough to rebase the forward-decay exponent
    assert uses.at(500 * DAY)[0] == pytest.approx(1.0)
    assert uses.count[0] == 2


def test_the_short_pass_never_moves_a_pinned_resident_out() -> None:
    busy = [NOW - 60.0 * m for m in range(1, 30)]
    t = table([10 * GB, 10 * GB], [0, 1], [[NOW - 2 * DAY], busy], floor=np.asarray([0, NO_FLOOR], dtype=np.int8))
    plan = plan_promotions(t, tiers(10 * GB), Knobs(), now=NOW, candidates=[1])
    assert plan.target.tolist() == [0, 1] and plan.moves == []
    t.floor = np.asarray([NO_FLOOR, NO_FLOOR], dtype=np.int8)
    assert plan_promotions(t, tiers(10 * GB), Knobs(), now=NOW, candidates=[1]).target.tolist() == [1, 0]
