"""nas.analysis against hand-computed fronts, hypervolumes and EDFs."""

from __future__ import annotations

import math

import pytest

from nas.analysis import (
    dominates,
    edf,
    error_edf_by,
    filter_records,
    front_records,
    hypervolume,
    hypervolume_history,
    knob_value,
    objective_value,
    pareto_front_indices,
    reference_point,
    width_multiplier,
)
from nas.records import TrialRecord
from shufflenet_core import ShuffleNetConfig

MAX_MIN = ["maximize", "minimize"]


def record(
    number: int,
    accuracy: float | None,
    mflops: float | None,
    *,
    feasible: bool = True,
    state: str = "COMPLETE",
    groups: int = 3,
    width: float = 1.0,
    preset: str | None = None,
    latency_ms: float | None = None,
    params: int | None = 1_000_000,
) -> TrialRecord:
    config = ShuffleNetConfig.from_width(groups=groups, width=width)
    return TrialRecord(
        study="s", number=number, state=state, config=config,
        macs=None if mflops is None else int(round(mflops * 1e6)), params=params,
        accuracy=accuracy, accuracy_std=None, latency_ms=latency_ms, feasible=feasible,
        learning_curve=(), preset=preset, attrs={},
    )


# --- geometry --------------------------------------------------------------------------------


def test_dominates_mixed_directions():
    assert dominates([0.9, 100], [0.8, 120], MAX_MIN)
    assert dominates([0.9, 100], [0.9, 120], MAX_MIN)  # equal accuracy, fewer FLOPs
    assert not dominates([0.9, 100], [0.9, 100], MAX_MIN)  # identical: no domination
    assert not dominates([0.9, 130], [0.8, 120], MAX_MIN)  # a trade-off
    assert not dominates([0.8, 120], [0.9, 100], MAX_MIN)


def test_front_indices_hand_computed_mixed_directions():
    # accuracy (max), mflops (min):
    points = [
        [0.50, 40],   # 0 front: cheapest
        [0.60, 80],   # 1 front
        [0.55, 90],   # 2 dominated by 1
        [0.70, 140],  # 3 front
        [0.70, 150],  # 4 dominated by 3 (same accuracy, more FLOPs)
        [0.40, 40],   # 5 dominated by 0 (same FLOPs, less accurate)
        [0.72, 500],  # 6 front: most accurate
    ]
    assert pareto_front_indices(points, MAX_MIN) == [0, 1, 3, 6]
    # Flip both directions: the front becomes the "worst" corner.
    assert pareto_front_indices(points, ["minimize", "maximize"]) == [2, 4, 5, 6]


def test_front_keeps_ties_and_handles_empty_and_bad_directions():
    assert pareto_front_indices([[0.5, 10], [0.5, 10], [0.4, 20]], MAX_MIN) == [0, 1]
    assert pareto_front_indices([], MAX_MIN) == []
    with pytest.raises(ValueError, match="maximize"):
        pareto_front_indices([[1, 2]], ["max", "min"])
    with pytest.raises(ValueError, match="directions"):
        pareto_front_indices([[1, 2, 3]], MAX_MIN)


def test_hypervolume_2d_hand_computed():
    # Reference (accuracy 0, 200 MFLOPs). Front (0.5, 40), (0.6, 80), (0.7, 140):
    # strips along accuracy: (200-40)*0.5 + (200-80)*0.1 + (200-140)*0.1 = 80 + 12 + 6 = 98
    front = [[0.5, 40], [0.6, 80], [0.7, 140]]
    assert hypervolume(front, [0.0, 200.0], MAX_MIN) == pytest.approx(98.0)
    # Dominated and duplicate points change nothing.
    assert hypervolume(front + [[0.55, 90], [0.6, 80]], [0.0, 200.0], MAX_MIN) == pytest.approx(98.0)
    # Points beyond the reference (over 200 MFLOPs) contribute nothing; nothing at all -> 0.
    assert hypervolume(front + [[0.99, 250]], [0.0, 200.0], MAX_MIN) == pytest.approx(98.0)
    assert hypervolume([[0.99, 250]], [0.0, 200.0], MAX_MIN) == 0.0
    assert hypervolume([], [0.0, 200.0], MAX_MIN) == 0.0


def test_hypervolume_both_minimized_and_single_point():
    assert hypervolume([[1, 1]], [3, 4], ["minimize", "minimize"]) == pytest.approx(6.0)
    # Two boxes 2x3 and 3x1 overlapping in 2x1: union 6 + 3 - 2 = 7.
    assert hypervolume([[1, 1], [0, 3]], [3, 4], ["minimize", "minimize"]) == pytest.approx(7.0)


def test_hypervolume_3d_hand_computed():
    directions = ["minimize"] * 3
    assert hypervolume([[0, 0, 0]], [1, 2, 3], directions) == pytest.approx(6.0)
    # Boxes [1,2]^3 -> 1x1x1 from (1,1,1) and [0,2]x[0,2]x[1.5,2] from (0,0,1.5):
    # 1 + 4*0.5 - overlap (1x1x0.5) = 2.5
    assert hypervolume([[1, 1, 1], [0, 0, 1.5]], [2, 2, 2], directions) == pytest.approx(2.5)
    # Mixed: accuracy (max), mflops (min), latency (min).
    value = hypervolume([[0.5, 10, 1], [0.8, 20, 2]], [0.0, 30, 3], ["maximize", "minimize", "minimize"])
    # box A: 0.5 x 20 x 2 = 20; box B: 0.8 x 10 x 1 = 8; overlap 0.5 x 10 x 1 = 5 -> 23
    assert value == pytest.approx(23.0)


# --- records ---------------------------------------------------------------------------------


def test_front_records_skips_infeasible_failed_and_sorts_by_flops():
    records = [
        record(0, 0.60, 80),
        record(1, 0.50, 40),
        record(2, 0.95, 100, feasible=False),  # over budget: would dominate 0 and 3
        record(3, 0.70, 140),
        record(4, None, 30, state="FAIL"),
        record(5, 0.55, 90),
    ]
    assert [r.number for r in front_records(records)] == [1, 0, 3]
    # Without the feasibility rule the infeasible trial takes over.
    assert [r.number for r in front_records(records, feasible_only=False)] == [1, 0, 2]


def test_front_records_other_axes_and_missing_latency():
    records = [
        record(0, 0.6, 80, latency_ms=5.0),
        record(1, 0.7, 140, latency_ms=4.0),  # faster and more accurate: dominates 0
        record(2, 0.9, 300),  # no latency: left out of a latency front
    ]
    assert [r.number for r in front_records(records, ("accuracy", "latency_ms"))] == [1]
    assert [r.number for r in front_records(records, ("accuracy", "mflops"))] == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown objective"):
        front_records(records, ("accuracy", "joules"))


def test_objective_values():
    r = record(0, 0.75, 137.5, params=1_864_728, latency_ms=12.5)
    assert objective_value(r, "error") == pytest.approx(0.25)
    assert objective_value(r, "mflops") == pytest.approx(137.5)
    assert objective_value(r, "mparams") == pytest.approx(1.864728)
    assert objective_value(r, "latency_ms") == 12.5


def test_score_objective_for_zero_cost_studies():
    # A zero-cost trial stores no accuracy, only a score; an over-budget one stores neither.
    scored = [
        TrialRecord("s", 0, "COMPLETE", None, 30_000_000, 1, None, None, None, True, (), None, {"score": 19.5}),
        TrialRecord("s", 1, "COMPLETE", None, 20_000_000, 1, None, None, None, True, (), None, {"score": 12.0}),
        TrialRecord("s", 2, "COMPLETE", None, 35_000_000, 1, None, None, None, True, (), None, {"score": 18.0}),
        TrialRecord("s", 3, "COMPLETE", None, 90_000_000, 1, None, None, None, False, (), None, {"skipped": "over"}),
    ]
    assert objective_value(scored[0], "score") == 19.5
    assert objective_value(record(9, 0.7, 10), "score") == 0.7  # trained trials score their accuracy
    assert [r.number for r in front_records(scored, ("score", "mflops"))] == [1, 0]
    assert front_records(scored) == []  # no accuracy anywhere
    # Reference below the lowest score by 10% of the spread (7.5): 12 - 0.75 = 11.25.
    assert reference_point(scored, ("score", "mflops"), limits={"mflops": 40}) == pytest.approx([11.25, 40])
    history = hypervolume_history(scored, [11.25, 40.0], ("score", "mflops"))
    # trial 0: (19.5-11.25)*(40-30) = 82.5; trial 1 adds (12-11.25)*(30-20) = 7.5 -> 90
    assert [v for _, v in history] == pytest.approx([82.5, 90.0, 90.0, 90.0])


def test_reference_point_uses_limits_or_worst_seen():
    records = [record(0, 0.6, 80), record(1, 0.7, 100)]
    assert reference_point(records) == pytest.approx([0.0, 110.0])
    assert reference_point(records, limits={"mflops": 140.0}) == [0.0, 140.0]
    assert reference_point([]) == [0.0, 1.0]


def test_hypervolume_history_is_monotone_and_hand_computed():
    reference = [0.0, 200.0]
    records = [
        record(0, 0.5, 40),  # hv = 160 * 0.5 = 80
        record(1, 0.4, 100),  # dominated: 80
        record(2, None, None, state="FAIL"),  # 80
        record(3, 0.9, 150, feasible=False),  # infeasible: 80
        record(4, 0.6, 80),  # 80 + (200-80)*0.1 = 92
        record(5, 0.7, 140),  # 92 + 60*0.1 = 98
    ]
    history = hypervolume_history(list(reversed(records)), reference)
    assert [n for n, _ in history] == [0, 1, 2, 3, 4, 5]
    assert [v for _, v in history] == pytest.approx([80, 80, 80, 80, 92, 98])
    assert hypervolume_history([], reference) == []


# --- EDF -------------------------------------------------------------------------------------


def test_edf_hand_computed():
    result = edf([30.0, 10.0, 20.0, 20.0])
    assert result.errors == (10.0, 20.0, 20.0, 30.0)
    assert result.fractions == (0.25, 0.5, 0.75, 1.0)
    assert result.at(20.0) == 0.75
    assert result.at(5.0) == 0.0
    assert edf([]).at(1.0) == 0.0


def test_error_edf_per_group_excludes_presets_and_failures():
    records = [
        record(0, 0.70, 100, groups=3),
        record(1, 0.60, 100, groups=3),
        record(2, 0.80, 100, groups=8),
        record(3, 0.90, 140, groups=8, preset="shufflenet_v1_1.0x_g8"),
        record(4, None, None, groups=8, state="FAIL"),
    ]
    curves = error_edf_by(records, "groups")
    assert set(curves) == {3, 8}
    assert curves[3].errors == pytest.approx((30.0, 40.0))
    assert curves[3].fractions == (0.5, 1.0)
    assert curves[8].errors == pytest.approx((20.0,))
    with_presets = error_edf_by(records, "groups", include_presets=True)
    assert with_presets[8].errors == pytest.approx((10.0, 20.0))


# --- knobs and filters -----------------------------------------------------------------------


def test_width_multiplier_against_paper_table():
    assert width_multiplier(record(0, 0.5, 1, groups=3, width=1.0)) == pytest.approx(1.0)
    assert width_multiplier(record(0, 0.5, 1, groups=8, width=0.5)) == pytest.approx(0.5)
    # 1.5x g3 rounds to multiples of 3 (360/720/1440): exactly 1.5.
    assert width_multiplier(record(0, 0.5, 1, groups=3, width=1.5)) == pytest.approx(1.5)
    custom = ShuffleNetConfig(groups=2, stage_out_channels=(200, 600, 800), stage_depths=(2, 6, 3))
    r = TrialRecord("s", 0, "COMPLETE", custom, 1, 1, 0.5, None, None, True, (), None, {})
    # (200/200 + 600/400 + 800/800) / 3 = 3.5 / 3
    assert width_multiplier(r) == pytest.approx(3.5 / 3)
    assert knob_value(r, "depth") == 11
    assert knob_value(r, "depth_stage3") == 6
    assert knob_value(r, "depth_stage9") is None
    assert knob_value(r, "groups") == 2
    assert knob_value(r, "bottleneck_ratio") == 0.25
    with pytest.raises(ValueError, match="unknown knob"):
        knob_value(r, "kernel")


def test_filter_records():
    records = [
        record(0, 0.6, 40, groups=3),
        record(1, 0.7, 140, groups=8, feasible=False),
        record(2, None, None, state="RUNNING"),
        record(3, 0.8, 138, groups=8, preset="p"),
    ]
    assert [r.number for r in filter_records(records)] == [0, 1, 3]
    assert [r.number for r in filter_records(records, complete_only=False)] == [0, 1, 2, 3]
    assert [r.number for r in filter_records(records, feasible=False)] == [1]
    assert [r.number for r in filter_records(records, include_presets=False)] == [0, 1]
    assert [r.number for r in filter_records(records, groups=[8])] == [1, 3]
    assert [r.number for r in filter_records(records, mflops_range=(40, 138))] == [0, 3]
    assert not math.isnan(sum(r.accuracy for r in filter_records(records)))


def test_permutation_p_value_exact_and_sampled() -> None:
    from nas.analysis import permutation_p_value

    # Completely separated groups of 3 + 3: only the observed split is as extreme, 1 of 20.
    assert permutation_p_value([0.9, 0.91, 0.92], [0.8, 0.81, 0.82]) == pytest.approx(1 / 20)
    # Reversed, every split is at least as large as the (most negative) observed one.
    assert permutation_p_value([0.8, 0.81, 0.82], [0.9, 0.91, 0.92]) == pytest.approx(1.0)
    # Identical scores: no evidence at all.
    assert permutation_p_value([0.5, 0.5], [0.5, 0.5]) == pytest.approx(1.0)
    # Overlapping noisy groups give a middling p; the sampled path agrees with the exact one.
    a, b = [0.85, 0.84, 0.86, 0.83, 0.85, 0.84], [0.84, 0.83, 0.85, 0.82, 0.84, 0.86]
    exact = permutation_p_value(a, b)
    assert 0.1 < exact < 0.6
    assert permutation_p_value(a, b, max_exact=10, samples=20_000) == pytest.approx(exact, abs=0.02)
    with pytest.raises(ValueError):
        permutation_p_value([], [0.1])
